"""Subprocess pipe throughput and spawn rate, side by side.

Each loop runs in its own interpreter:

* pipe: ``cat`` started with ``asyncio.create_subprocess_exec``; the parent
  writes SIZE MiB to its stdin (``write`` + ``drain``) while reading the same
  bytes back from its stdout; MiB/s over the whole round trip.
* spawn: ``create_subprocess_exec('true')`` + ``wait()``, sequentially;
  spawns per second.

    python bench/subprocess_pipe.py [--loops asyncio,uvloop,rloop,uvrs]
                                    [--size 50] [--spawns 300] [--reps 3]

Loops that are not installed are skipped.  The best of ``--reps`` runs is
reported with the ratio to uvloop (or to asyncio when uvloop is missing).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import asyncio, json, sys, time
name, size_mib, spawns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if name == "uvloop":
    import uvloop
    new_loop = uvloop.new_event_loop
elif name == "uvrs":
    import uvrs
    new_loop = uvrs.new_event_loop
elif name == "rloop":
    import rloop
    new_loop = rloop.new_event_loop
else:
    new_loop = asyncio.new_event_loop

CHUNK = 256 * 1024

async def pipe():
    total = size_mib * 1024 * 1024
    block = b"x" * CHUNK
    proc = await asyncio.create_subprocess_exec(
        "cat", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)

    async def feed():
        sent = 0
        while sent < total:
            proc.stdin.write(block)
            await proc.stdin.drain()
            sent += CHUNK
        proc.stdin.close()

    async def drain_out():
        got = 0
        while True:
            data = await proc.stdout.read(1 << 20)
            if not data:
                return got
            got += len(data)

    t0 = time.perf_counter()
    _, got = await asyncio.gather(feed(), drain_out())
    await proc.wait()
    dt = time.perf_counter() - t0
    assert got == total, (got, total)
    return size_mib / dt

async def spawn():
    t0 = time.perf_counter()
    for _ in range(spawns):
        proc = await asyncio.create_subprocess_exec("true")
        await proc.wait()
    return spawns / (time.perf_counter() - t0)

loop = new_loop()
try:
    mib_s = loop.run_until_complete(pipe())
    rate = loop.run_until_complete(spawn())
finally:
    loop.close()
print(json.dumps({"pipe_mib_s": mib_s, "spawn_per_s": rate}))
"""


def available(name: str) -> bool:
    if name == "asyncio":
        return True
    probe = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True)
    return probe.returncode == 0


def measure(name: str, size: int, spawns: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, name, str(size), str(spawns)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loops", default="asyncio,uvloop,rloop,uvrs")
    ap.add_argument("--size", type=int, default=50, help="MiB through cat")
    ap.add_argument("--spawns", type=int, default=300)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    loops = [n for n in args.loops.split(",") if available(n)]
    best: dict[str, dict[str, float]] = {n: {} for n in loops}
    for _ in range(args.reps):
        for name in loops:  # interleaved, so drift hits every loop alike
            res = measure(name, args.size, args.spawns)
            for key, value in res.items():
                best[name][key] = max(best[name].get(key, 0.0), value)

    ref = "uvloop" if "uvloop" in loops else loops[0]
    print(f"| loop | pipe MiB/s ({args.size} MiB via cat) | ratio | spawns/s | ratio |")
    print("|---|---:|---:|---:|---:|")
    for name in loops:
        p, s = best[name]["pipe_mib_s"], best[name]["spawn_per_s"]
        rp, rs = p / best[ref]["pipe_mib_s"], s / best[ref]["spawn_per_s"]
        print(f"| {name} | {p:,.0f} | {rp:.2f}x | {s:,.0f} | {rs:.2f}x |")


if __name__ == "__main__":
    main()
