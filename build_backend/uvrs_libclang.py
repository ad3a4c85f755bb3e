"""Find a libclang for bindgen (used by libuv-sys2's build script). Stdlib only.

bindgen loads libclang at build time. A fresh machine usually has none, so the
build uses the one shipped by the `libclang` wheel from PyPI
(`<site-packages>/clang/native/libclang.{so,dylib,dll}`). That wheel lacks
clang's builtin headers (stddef.h, stdarg.h, ...), so we point bindgen at the
builtin headers of whatever C compiler the machine has, and on macOS at the SDK.

Used by the PEP 517 backend (`uvrs_build.py`) and by `tools/dev.py`.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys

LIBCLANG_NAMES = ("libclang.so", "libclang.dylib", "libclang.dll", "clang.dll")


def native_dir_of_clang_package() -> str | None:
    """`clang/native` of the `clang` package importable by this interpreter."""
    try:
        spec = importlib.util.find_spec("clang")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        native = os.path.join(location, "native")
        if has_libclang(native):
            return native
    return None


def native_dir_in_venv(venv: str) -> str | None:
    """`clang/native` inside a virtual environment (POSIX or Windows layout)."""
    patterns = (
        os.path.join(venv, "lib", "python*", "site-packages", "clang", "native"),
        os.path.join(venv, "Lib", "site-packages", "clang", "native"),
    )
    for pattern in patterns:
        for native in sorted(glob.glob(pattern)):
            if has_libclang(native):
                return native
    return None


def has_libclang(directory: str) -> bool:
    return any(os.path.isfile(os.path.join(directory, n)) for n in LIBCLANG_NAMES)


def _run(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def _compilers() -> list[str]:
    names = []
    cc = os.environ.get("CC")
    if cc:
        names.append(cc if os.name == "nt" else shlex.split(cc)[0])
    # On Windows bindgen targets MSVC: only clang's own headers fit there, not MinGW gcc's.
    names += ["clang"] if os.name == "nt" else ["clang", "cc", "gcc"]
    found = []
    for name in names:
        path = shutil.which(name)
        if path and path not in found:
            found.append(path)
    return found


def _has_builtin_headers(directory: str | None) -> bool:
    return bool(directory) and os.path.isfile(os.path.join(directory, "stddef.h"))


def builtin_include_dir() -> str | None:
    """A directory with compiler builtin headers (stddef.h, stdarg.h, ...), or None."""
    for compiler in _compilers():
        # clang (and Apple clang): <resource-dir>/include
        resource = _run([compiler, "-print-resource-dir"])
        if resource:
            include = os.path.join(resource, "include")
            if _has_builtin_headers(include):
                return include
        # gcc (and clang): -print-file-name=include gives the builtin include dir
        include = _run([compiler, "-print-file-name=include"])
        if include and os.path.isabs(include) and _has_builtin_headers(include):
            return include
    if os.name == "nt":
        # An LLVM installation (e.g. GitHub's Windows runners have one).
        roots = [
            os.environ.get("LLVM_PATH"),
            os.path.join(os.environ.get("ProgramFiles", r"C:\Program Files"), "LLVM"),
        ]
        for root in filter(None, roots):
            for include in sorted(glob.glob(os.path.join(root, "lib", "clang", "*", "include"))):
                if _has_builtin_headers(include):
                    return include
    return None


def macos_sdk() -> str | None:
    if sys.platform != "darwin":
        return None
    sdk = os.environ.get("SDKROOT") or _run(["xcrun", "--show-sdk-path"])
    return sdk if sdk and os.path.isdir(sdk) else None


def _quote(path: str) -> str:
    # bindgen splits BINDGEN_EXTRA_CLANG_ARGS with shell rules; clang takes '/' on Windows.
    if os.name == "nt":
        path = path.replace("\\", "/")
    return shlex.quote(path)


def extra_clang_args() -> str:
    args = []
    include = builtin_include_dir()
    if include:
        args.append("-isystem " + _quote(include))
    sdk = macos_sdk()
    if sdk:
        args.append("-isysroot " + _quote(sdk))
    return " ".join(args)


def libclang_env(native_dir: str | None, environ: dict | None = None) -> dict[str, str]:
    """Variables to add to the build environment (none that the user already set).

    `native_dir` is the wheel's `clang/native` directory, or None when the wheel
    is unavailable: then clang-sys searches the system as usual.
    """
    environ = os.environ if environ is None else environ
    if environ.get("LIBCLANG_PATH") or not native_dir:
        return {}
    env = {"LIBCLANG_PATH": native_dir}
    if not environ.get("BINDGEN_EXTRA_CLANG_ARGS"):
        extra = extra_clang_args()
        if extra:
            env["BINDGEN_EXTRA_CLANG_ARGS"] = extra
    return env
