#!/usr/bin/env python3
"""User-space instructions per request of an echo server, under callgrind.

Throughput on this machine moves by 20-50 % between runs; the number of
instructions a server executes per request does not (repeats agree within
about 1 %). This runs the kit's echo server under
``valgrind --tool=callgrind --instr-atstart=no``, warms it up, counts only
while the load generator runs, and prints total instructions / requests,
with the functions that cost the most.

    python3 bench/instructions.py uvrs --mode proto --net unix --size 1k
    python3 bench/instructions.py uvloop --mode buffered --net tcp --size 100k
    python3 bench/instructions.py uvrs --mode http

User space only: the kernel's share (about 80-87 % of a 1 KiB echo server's
CPU here) is not in the count. Needs valgrind and the kit's ``.bench-venv``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from _kit import KIT, LOADGEN, VENV_PYTHON, wait_ready


def run_load(client_addr: list[str], args: argparse.Namespace, seconds: int) -> int:
    kind = "http" if args.mode == "http" else "echo"
    out = subprocess.run([LOADGEN, kind, *client_addr, "-c", str(args.conns), "-s", args.size,
                          "-d", str(seconds), "-w", "0", "--json"],
                         check=True, capture_output=True, text=True).stdout
    return int(json.loads(out.strip().splitlines()[-1])["requests"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("loop", help="asyncio, uvloop, rloop or uvrs")
    p.add_argument("--mode", default="proto",
                   choices=["proto", "buffered", "streams", "sockets", "http"],
                   help="an echo server mode, or http (the kit's httptools server)")
    p.add_argument("--net", default="tcp", choices=["unix", "tcp"])
    p.add_argument("--size", default="1k")
    p.add_argument("--conns", type=int, help="connections (default: 10, http 16, as the kit)")
    p.add_argument("--warmup", type=int, default=3, help="seconds of load before counting")
    p.add_argument("--duration", type=int, default=8, help="seconds of load counted")
    p.add_argument("--port", type=int, default=25290)
    p.add_argument("--top", type=int, default=15, help="functions listed (0: none)")
    p.add_argument("--python", default=VENV_PYTHON)
    args = p.parse_args(argv)
    if args.conns is None:
        args.conns = 16 if args.mode == "http" else 10
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate"):
        if shutil.which(tool) is None:
            p.error(f"{tool} not found (install valgrind)")
    if not os.path.exists(LOADGEN):
        p.error(f"{LOADGEN} is missing: run python3 ../shared/bench/run setup")

    work = tempfile.mkdtemp(prefix="uvrs-instr-")
    if args.net == "unix":
        path = os.path.join(work, "echo.sock")
        server_addr, client_addr = "unix:" + path, ["--unix", path]
    else:
        server_addr = f"127.0.0.1:{args.port}"
        client_addr = ["--addr", server_addr]
    if args.mode == "http":
        server_cmd = [os.path.join(KIT, "servers", "http.py")]
    else:
        server_cmd = [os.path.join(KIT, "servers", "echo.py"), f"--{args.mode}"]
    out_file = os.path.join(work, "callgrind.out")
    log = open(os.path.join(work, "server.log"), "w+")
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out_file}",
         args.python, *server_cmd, "--loop", args.loop, "--addr", server_addr],
        stdout=log, stderr=subprocess.STDOUT, cwd=work)
    try:
        failed = wait_ready(server, log, timeout=120, poll=0.5)
        if failed is not None:
            raise SystemExit(f"instructions.py: the server did not start:\n{failed}")
        run_load(client_addr, args, args.warmup)
        ctl = ["callgrind_control"]
        subprocess.run([*ctl, "-i", "on", str(server.pid)], check=True, capture_output=True)
        requests = run_load(client_addr, args, args.duration)
        subprocess.run([*ctl, "-i", "off", str(server.pid)], check=True, capture_output=True)
        subprocess.run([*ctl, "-d", str(server.pid)], check=True, capture_output=True)
        time.sleep(1)
    finally:
        server.kill()
        server.wait()
    dumps = sorted(f for f in glob.glob(out_file + ".*") if not f.endswith(".out"))
    report = subprocess.run(["callgrind_annotate", (dumps or [out_file])[0]],
                            capture_output=True, text=True).stdout
    total = re.search(r"^\s*([\d,]+) \(100\.0+%\)\s+PROGRAM TOTALS", report, re.M)
    if total is None:
        raise SystemExit("instructions.py: no PROGRAM TOTALS in callgrind's report")
    instr = int(total.group(1).replace(",", ""))
    print(f"{args.loop} {args.mode} {args.net} {args.size}: {requests:,} requests, "
          f"{instr:,} instructions, {instr / requests:,.0f} per request")
    if args.top:
        rows = re.findall(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(\S.*)$",
                          report.split("file:function", 1)[-1], re.M)
        for count, name in rows[:args.top]:
            name = re.sub(r"\s*\[.*\]$", "", name).split(":", 1)[-1]
            print(f"  {int(count.replace(',', '')) / requests:8,.0f}  {name[:110]}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
