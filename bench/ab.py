#!/usr/bin/env python3
"""Paired, simultaneous A/B of two echo servers: a ratio that survives noise.

On this 2-core VM, consecutive runs of one server vary by 20-50 %, so a
sequential comparison of two loops (the shared kit's method) needs many
repetitions to resolve a few per cent. Here both servers run *at the same
time*, pinned to CPU 0, each driven by its own load generator pinned to
CPU 1, for the same window. Whatever slows the machine in that window slows
both, and their ratio is what is left. The order in which the two are started
alternates between repetitions.

What it measures is a share of one core under contention, so ratios are
compressed toward 1 compared with the kit's: calibrated on 2026-12-05, A/A
(uvloop against uvloop) gave 0.994-1.002, and the native limit server against
uvloop 1.18 where the sequential kit gave 1.20-1.36.

    python3 bench/ab.py uvloop uvrs --mode proto --net unix --size 1k --reps 6

A or B may be a loop name the kit's echo server knows (asyncio, uvloop,
rloop, uvrs) or ``limit`` (the kit's native server). Needs the kit's
``.bench-venv`` (``python3 ../shared/bench/run setup``): its Python, the
load generator and the limit server.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from _kit import KIT, LOADGEN, TARGET, VENV_PYTHON, wait_ready

BASE_PORT = 25260


class Server:
    """One echo server, pinned to CPU 0, listening on its own address."""

    def __init__(self, loop: str, slot: int, args: argparse.Namespace) -> None:
        self.loop = loop
        if args.net == "unix":
            path = os.path.join(tempfile.gettempdir(), f"uvrs-ab-{os.getpid()}-{slot}.sock")
            if os.path.exists(path):
                os.unlink(path)
            self.path: str | None = path
            self.client_addr = ["--unix", path]
            server_addr = ["--unix", path] if loop == "limit" else ["--addr", "unix:" + path]
        else:
            self.path = None
            addr = f"127.0.0.1:{args.port + slot}"
            self.client_addr = ["--addr", addr]
            server_addr = ["--addr", addr]
        if loop == "limit":
            cmd = [os.path.join(TARGET, "limit-server"), "echo", *server_addr, "--quiet"]
        else:
            cmd = [args.python, os.path.join(KIT, "servers", "echo.py"),
                   f"--{args.mode}", "--loop", loop, *server_addr]
        self.log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(["taskset", "-c", args.server_cpu, *cmd],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        failed = wait_ready(self.proc, self.log, timeout=20, poll=0.05)
        if failed is not None:
            self.stop()
            raise SystemExit(f"ab.py: the {self.loop} server did not start:\n{failed}")
        time.sleep(0.2)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        if self.path and os.path.exists(self.path):
            os.unlink(self.path)


def loadgen(server: Server, args: argparse.Namespace) -> subprocess.Popen[str]:
    cmd = [LOADGEN, "echo", *server.client_addr,
           "-c", str(args.conns), "-s", args.size, "-d", str(args.duration),
           "-w", str(args.warmup), "--json"]
    return subprocess.Popen(["taskset", "-c", args.client_cpu, *cmd],
                            stdout=subprocess.PIPE, text=True)


def one_pair(args: argparse.Namespace, rep: int) -> tuple[float, float]:
    """Req/s of A and B, run side by side; the start order alternates."""
    order = [(args.a, 0), (args.b, 1)]
    if rep % 2:
        order.reverse()
    servers: dict[int, Server] = {}
    try:
        for loop, slot in order:
            servers[slot] = Server(loop, slot, args)
        gens = {slot: loadgen(servers[slot], args) for _, slot in order}
        rps = {}
        for slot, gen in gens.items():
            out, _ = gen.communicate(timeout=args.duration + args.warmup + 60)
            rps[slot] = float(json.loads(out.strip().splitlines()[-1])["rps"])
    finally:
        for server in servers.values():
            server.stop()
    return rps[0], rps[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", help="baseline: a loop name or 'limit'")
    p.add_argument("b", help="compared: a loop name or 'limit'")
    p.add_argument("--mode", default="proto", choices=["proto", "buffered", "streams", "sockets"])
    p.add_argument("--net", default="unix", choices=["unix", "tcp"])
    p.add_argument("--size", default="1k", help="message size, as the load generator takes it")
    p.add_argument("--conns", type=int, default=10)
    p.add_argument("--reps", type=int, default=6)
    p.add_argument("--duration", type=int, default=4, help="seconds measured per repetition")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--port", type=int, default=BASE_PORT, help="TCP: A listens here, B on the next")
    p.add_argument("--server-cpu", default="0")
    p.add_argument("--client-cpu", default="1")
    p.add_argument("--python", default=VENV_PYTHON)
    p.add_argument("--json", metavar="FILE", help="also write the repetitions and summary here")
    args = p.parse_args(argv)
    for tool in ("loadgen", "limit-server"):
        if not os.path.exists(os.path.join(TARGET, tool)):
            p.error(f"{TARGET}/{tool} is missing: run python3 ../shared/bench/run setup")

    ratios, reps = [], []
    for rep in range(args.reps):
        a, b = one_pair(args, rep)
        ratios.append(b / a)
        reps.append({"a": a, "b": b, "ratio": b / a})
        print(f"rep {rep + 1}: {args.a} {a:,.0f}  {args.b} {b:,.0f}  ratio {b / a:.3f}", flush=True)
    summary = {
        "median": statistics.median(ratios),
        "mean": statistics.mean(ratios),
        "min": min(ratios),
        "max": max(ratios),
    }
    print(f"{args.b}/{args.a} ({args.mode}, {args.net}, {args.size}, {args.reps} pairs): "
          + " ".join(f"{k} {v:.3f}" for k, v in summary.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items() if k != "json"},
                       "reps": reps, "summary": summary}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
