#!/usr/bin/env python3
"""uvrs demo: the same asyncio programs on asyncio's loop, uvrs and uvloop, side by side.

    python3 tools/dev.py demo          # builds everything, then runs this script

1. TCP echo: for each loop, an echo server (`loop.create_server` with an
   `asyncio.Protocol` whose data_received calls transport.write) runs in its own
   process on 127.0.0.1; the native load generator (bench/loadgen, Rust) drives
   it with 10 connections, each sending a 1 KiB message, reading it back in
   full, checking it, and repeating, for a few seconds.
2. Scheduling micro-benchmarks (call_soon chains, call_later timers,
   create_task + await, future + call_soon(set_result), sleep(0) ping-pong),
   run when uvrs has no TCP support yet, or always with --micro.

Every loop runs in a child process, so a crash in one cannot take down the
others. Results: requests (or operations) per second and the ratio to asyncio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import queue
import shutil
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LOADGEN_DIR = os.path.join(HERE, "loadgen")
EXE = ".exe" if os.name == "nt" else ""
ALL_LOOPS = ("asyncio", "uvrs", "uvloop")
UNSUPPORTED_EXIT = 3  # child: the loop raised NotImplementedError


# ============================================================ child side


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "asyncio":
        return asyncio.new_event_loop()
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    if name == "uvrs":
        import uvrs

        return uvrs.new_event_loop()
    raise ValueError(f"unknown loop {name!r}")


def run_on(name: str, coro_fn, *args):
    """Run `coro_fn(loop, *args)` to completion on a fresh loop of kind `name`."""
    loop = new_loop(name)
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coro_fn(loop, *args))
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def child_probe(name: str) -> int:
    """Print what this loop is (module version) or why it cannot be used."""
    try:
        loop = new_loop(name)
        loop.close()
    except ImportError as e:
        print(json.dumps({"ok": False, "why": f"not importable ({e})"}))
        return 1
    except Exception as e:  # noqa: BLE001 - reported to the user, not hidden
        print(json.dumps({"ok": False, "why": f"{type(e).__name__}: {e}"}))
        return 1
    version = platform.python_version() if name == "asyncio" else "?"
    if name != "asyncio":
        mod = sys.modules.get(name)
        version = getattr(mod, "__version__", None) or _dist_version(name)
    print(json.dumps({"ok": True, "version": version, "type": type(loop).__name__}))
    return 0


def _dist_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001
        return "?"


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def _serve(loop, host: str, port: int):
    server = await loop.create_server(EchoProtocol, host, port)
    actual = server.sockets[0].getsockname()[1]
    stop = loop.create_future()

    def wait_for_stdin_eof():
        # The parent closes our stdin to stop us (portable, unlike signals).
        try:
            sys.stdin.buffer.read()
        finally:
            loop.call_soon_threadsafe(lambda: stop.done() or stop.set_result(None))

    threading.Thread(target=wait_for_stdin_eof, daemon=True).start()
    print(f"READY {actual}", flush=True)
    await stop
    server.close()
    await server.wait_closed()


def child_serve(name: str, host: str, port: int) -> int:
    try:
        run_on(name, _serve, host, port)
    except NotImplementedError as e:
        print(f"UNSUPPORTED create_server raised NotImplementedError {e}".rstrip(), flush=True)
        return UNSUPPORTED_EXIT
    except Exception as e:  # noqa: BLE001
        print(f"FAILED {type(e).__name__}: {e}", flush=True)
        return 1
    return 0


# ---- micro-benchmarks: each returns after doing `n` operations


async def bench_call_soon(loop, n):
    """100 callback chains; each callback schedules the next with call_soon."""
    done = loop.create_future()
    left = [n]

    def step():
        left[0] -= 1
        if left[0] > 0:
            loop.call_soon(step)
        elif not done.done():
            done.set_result(None)

    for _ in range(min(100, n)):
        loop.call_soon(step)
    await done


async def bench_call_later(loop, n):
    """n timers 0-9.9 ms out; wait until all have fired."""
    done = loop.create_future()
    fired = [0]

    def tick():
        fired[0] += 1
        if fired[0] == n:
            done.set_result(None)

    for i in range(n):
        loop.call_later((i % 100) * 1e-4, tick)
    await done


async def _leaf():
    return None


async def bench_tasks(loop, n):
    """create_task + await, one at a time."""
    for _ in range(n):
        await loop.create_task(_leaf())


async def bench_future(loop, n):
    """create_future + call_soon(set_result) + await."""
    for _ in range(n):
        fut = loop.create_future()
        loop.call_soon(fut.set_result, None)
        await fut


async def bench_sleep0(loop, n):
    """Two tasks taking turns with asyncio.sleep(0); n sleeps in all."""

    async def player(k):
        for _ in range(k):
            await asyncio.sleep(0)

    a = loop.create_task(player(n // 2))
    b = loop.create_task(player(n - n // 2))
    await a
    await b


MICRO = {
    "call_soon": (bench_call_soon, "call_soon chains (100 in parallel)"),
    "call_later": (bench_call_later, "call_later timers, 0-10 ms"),
    "tasks": (bench_tasks, "create_task + await"),
    "future": (bench_future, "future + call_soon(set_result)"),
    "sleep0": (bench_sleep0, "asyncio.sleep(0) ping-pong, 2 tasks"),
}


def _timed(name, fn, n):
    t0 = time.perf_counter()
    run_on(name, fn, n)
    return time.perf_counter() - t0


def child_micro(name: str, seconds: float, benches: list[str], reps: int = 3) -> int:
    """Each bench: warm up, size n to take seconds/reps, keep the best of `reps` runs."""
    for bench in benches:
        fn = MICRO[bench][0]
        try:
            n, target = 1000, seconds / reps
            while True:
                dt = _timed(name, fn, n)
                if dt >= min(0.05, target / 2) or n >= 10**8:
                    break
                n *= 4
            n = max(n, int(n * target / max(dt, 1e-6)))
            best = min(_timed(name, fn, n) for _ in range(reps))
            out = {"bench": bench, "ops": n, "seconds": best, "ops_per_s": n / best}
        except NotImplementedError as e:
            out = {"bench": bench, "error": f"NotImplementedError {e}".strip()}
        except Exception as e:  # noqa: BLE001
            out = {"bench": bench, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(out), flush=True)
    return 0


# ============================================================ parent side


def child_cmd(*args: str) -> list[str]:
    return [sys.executable, os.path.abspath(__file__), *args]


def probe_loops(names):
    """name -> (usable, version or reason)."""
    found = {}
    for name in names:
        proc = None
        try:
            proc = subprocess.run(
                child_cmd("--child-probe", name),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
                timeout=60,
            )
            info = json.loads(proc.stdout.strip().splitlines()[-1])
        except (subprocess.TimeoutExpired, ValueError, IndexError):
            tail = (proc.stderr or "").strip().splitlines()[-1:] if proc else []
            info = {"ok": False, "why": " ".join(["probe crashed:", *tail])}
        found[name] = (info["ok"], info.get("version") if info["ok"] else info["why"])
    return found


def busy_cores(interval: float = 0.5) -> float | None:
    """CPU cores in use by anything on the machine right now (Linux only)."""

    def sample():
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(interval)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (1 - (idle1 - idle0) / (total1 - total0)) * (os.cpu_count() or 1)


def find_loadgen(path: str | None) -> str | None:
    if path:
        return path if os.path.isfile(path) else None
    binary = os.path.join(LOADGEN_DIR, "target", "release", "loadgen" + EXE)
    cargo = shutil.which("cargo")
    if cargo:  # cheap when already built
        manifest = os.path.join(LOADGEN_DIR, "Cargo.toml")
        cmd = [cargo, "build", "--release", "--quiet", "--manifest-path", manifest]
        subprocess.run(cmd, stdin=subprocess.DEVNULL)
    return binary if os.path.isfile(binary) else None


def _read_first_line(proc, timeout):
    q: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: q.put(proc.stdout.readline()), daemon=True).start()
    try:
        return q.get(timeout=timeout).strip()
    except queue.Empty:
        return ""


def _stop(proc):
    try:
        proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_echo(name: str, loadgen: str, args) -> dict:
    """Start an echo server on loop `name`, load it, stop it. Returns a result dict."""
    proc = subprocess.Popen(
        child_cmd("--child-serve", name),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = _read_first_line(proc, timeout=30)
        if not line.startswith("READY "):
            rc = proc.poll()
            if line.startswith("UNSUPPORTED") or rc == UNSUPPORTED_EXIT:
                return {"unsupported": line or "create_server is not implemented"}
            return {"error": line or f"server exited with {rc} before it was ready"}
        port = int(line.split()[1])
        cmd = [
            loadgen,
            "--addr",
            f"127.0.0.1:{port}",
            "--conns",
            str(args.conns),
            "--size",
            str(args.size),
            "--duration",
            str(args.duration),
            "--warmup",
            str(args.warmup),
        ]
        out = subprocess.run(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        try:
            result = json.loads(out.stdout)
        except ValueError:
            return {"error": f"loadgen failed (exit {out.returncode})"}
        if proc.poll() is not None:
            result["error"] = f"server died (exit {proc.returncode})"
        return result
    finally:
        _stop(proc)


def run_micro(name: str, args) -> dict:
    benches = list(MICRO)
    cmd = child_cmd("--child-micro", name, "--micro-seconds", str(args.micro_seconds))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    results = {}
    for line in proc.stdout.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        results[item["bench"]] = item
    for bench in benches:
        results.setdefault(bench, {"error": f"child exited with {proc.returncode}"})
    return results


def fmt_rate(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """First column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(cells):
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    line = fmt(header).rstrip()
    print(line)
    print("-" * len(line))
    for r in rows:
        print(fmt(r).rstrip())


def echo_part(loops, loadgen, args) -> str | None:
    """Run the TCP echo benchmark. Returns why uvrs could not serve TCP, if it could not."""
    print(
        f"\nTCP echo: {args.conns} connections, {args.size} B messages, closed loop, "
        f"{args.warmup:g} s warm-up + {args.duration:g} s per loop"
    )
    results = {}
    for name in loops:
        print(f"  {name} ...", end="", flush=True)
        results[name] = r = run_echo(name, loadgen, args)
        if "rps" in r:
            print(f" {fmt_rate(r['rps'])} req/s", flush=True)
        else:
            print(" " + (r.get("unsupported") or r.get("error")), flush=True)
    base = results.get("asyncio", {}).get("rps")
    rows = []
    for name in loops:
        r = results[name]
        if "rps" not in r:
            note = "no TCP support yet" if "unsupported" in r else f"failed: {r['error'][:60]}"
            rows.append([name, "-", "-", "-", "-", note])
            continue
        ratio = f"{r['rps'] / base:.2f}x" if base else "-"
        errs = r.get("errors", 0)
        note = r.get("error", "") or (f"{errs} errors {r.get('error_kinds')}" if errs else "")
        lat = r.get("latency_ms", {})
        rows.append(
            [
                name,
                f"{r['rps']:,.0f}",
                ratio,
                f"{lat.get('p50', 0):.3f}",
                f"{lat.get('p99', 0):.3f}",
                note,
            ]
        )
    print()
    print_table(["loop", "req/s", "vs asyncio", "p50 ms", "p99 ms", ""], rows)
    uvrs_result = results.get("uvrs", {"rps": None})
    if "unsupported" in uvrs_result:
        return "unsupported"
    if "rps" not in uvrs_result:
        return "failed"
    return None


def micro_part(loops, args) -> None:
    print(
        f"\nScheduling micro-benchmarks (~{args.micro_seconds:g} s each, best of 3; "
        "ops/s and ratio to asyncio)"
    )
    results = {}
    for name in loops:
        print(f"  {name} ...", end="", flush=True)
        results[name] = run_micro(name, args)
        print(" done", flush=True)
    rows = []
    for bench, (_, desc) in MICRO.items():
        base = results.get("asyncio", {}).get(bench, {}).get("ops_per_s")
        row = [desc]
        for name in loops:
            r = results[name][bench]
            if "ops_per_s" in r:
                ratio = f" ({r['ops_per_s'] / base:.2f}x)" if base else ""
                row.append(f"{fmt_rate(r['ops_per_s'])}/s{ratio}")
            else:
                row.append("n/a")
        rows.append(row)
    print()
    print_table(["benchmark", *loops], rows)
    errors = [(n, b, r[b]["error"]) for n, r in results.items() for b in r if "error" in r[b]]
    for name, bench, err in errors:
        print(f"  note: {name} {bench}: {err}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--loops", default=",".join(ALL_LOOPS), help="comma-separated: asyncio,uvrs,uvloop"
    )
    p.add_argument("--loadgen", help="path to the loadgen binary (default: build bench/loadgen)")
    p.add_argument("--duration", type=float, default=3.0, help="measured seconds per loop")
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--conns", type=int, default=10)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--micro", action="store_true", help="always run the micro-benchmarks")
    p.add_argument("--no-tcp", action="store_true", help="skip the TCP echo benchmark")
    p.add_argument("--micro-seconds", type=float, default=0.3, help="time per micro-benchmark")
    # child modes (internal)
    p.add_argument("--child-probe", metavar="LOOP", help=argparse.SUPPRESS)
    p.add_argument("--child-serve", metavar="LOOP", help=argparse.SUPPRESS)
    p.add_argument("--child-micro", metavar="LOOP", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child_probe:
        return child_probe(args.child_probe)
    if args.child_serve:
        return child_serve(args.child_serve, "127.0.0.1", 0)
    if args.child_micro:
        return child_micro(args.child_micro, args.micro_seconds, list(MICRO))

    t0 = time.monotonic()
    wanted = [n.strip() for n in args.loops.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in ALL_LOOPS]
    if unknown:
        p.error(f"unknown loops: {', '.join(unknown)} (choose from {', '.join(ALL_LOOPS)})")

    print(
        f"uvrs demo: Python {platform.python_version()} on {platform.system()} {platform.machine()}"
    )
    busy = busy_cores()
    if busy is not None and busy > 0.3:
        print(f"  note: other processes are using {busy:.1f} CPU cores: expect noisy numbers")
    loops = []
    for name, (ok, info) in probe_loops(wanted).items():
        if ok:
            loops.append(name)
            print(f"  {name:8} {info}")
        else:
            print(f"  {name:8} skipped: {info}")
            if name == "uvrs":
                print("           build it into this environment with: python3 tools/dev.py demo")
    if not loops:
        print("no event loop could be created", file=sys.stderr)
        return 1

    micro = args.micro
    if not args.no_tcp:
        loadgen = find_loadgen(args.loadgen)
        if loadgen is None:
            print(
                "\nTCP echo skipped: no loadgen binary (needs cargo; tools/dev.py demo builds it)"
            )
            micro = True
        else:
            why = echo_part(loops, loadgen, args)
            if why == "unsupported":
                print(
                    "\nThe TCP echo comparison needs uvrs's TCP support (loop.create_server), "
                    "which is not there yet:\nshowing scheduling micro-benchmarks instead."
                )
                micro = True
            elif why == "failed":
                print("\nuvrs could not run the TCP echo server: showing micro-benchmarks too.")
                micro = True
    else:
        micro = True
    if micro:
        micro_part(loops, args)
    print(f"\n(demo took {time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
