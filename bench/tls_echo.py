"""TLS echo, side by side: both ends on the loop under test.

Each loop runs in its own interpreter: a TLS echo server (asyncio.Protocol,
``ssl=``) and N client connections (asyncio.Protocol over ``ssl=``) that keep
one message of SIZE bytes in flight each and count round trips for DURATION
seconds. Both ends run on the loop being measured, so the figure is the
loop's whole TLS cost (record encryption is the same OpenSSL for all).

    python bench/tls_echo.py [--loops asyncio,uvloop,uvrs] [--sizes 1024,10240,102400]
                             [--conns 10] [--duration 3] [--reps 3]

Certificates come from ``trustme`` (a dev dependency). Loops that are not
installed are skipped. The best of ``--reps`` runs is reported with the
ratio to uvloop (or to asyncio when uvloop is missing).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import asyncio, json, ssl, sys, time
import trustme
name, size, conns, duration = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
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

ca = trustme.CA()
cert = ca.issue_cert("localhost")
server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
cert.configure_cert(server_ctx)
client_ctx = ssl.create_default_context()
ca.configure_trust(client_ctx)


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class Client(asyncio.Protocol):
    def __init__(self, msg, counter):
        self.msg = msg
        self.counter = counter
        self.got = 0

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.msg)

    def data_received(self, data):
        self.got += len(data)
        if self.got >= len(self.msg):
            self.got -= len(self.msg)
            self.counter[0] += 1
            self.transport.write(self.msg)


async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    msg = b"x" * size
    counter = [0]
    transports = []
    for _ in range(conns):
        tr, _ = await loop.create_connection(
            lambda: Client(msg, counter), "127.0.0.1", port,
            ssl=client_ctx, server_hostname="localhost")
        transports.append(tr)
    await asyncio.sleep(0.5)  # warm-up
    start, t0 = counter[0], time.perf_counter()
    await asyncio.sleep(duration)
    n, dt = counter[0] - start, time.perf_counter() - t0
    for tr in transports:
        tr.close()
    server.close()
    return n / dt

loop = new_loop()
try:
    rate = loop.run_until_complete(main())
finally:
    loop.close()
print(json.dumps({"rps": rate}))
"""


def available(name: str) -> bool:
    if name == "asyncio":
        return True
    probe = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True)
    return probe.returncode == 0


def measure(name: str, size: int, conns: int, duration: float) -> float:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, name, str(size), str(conns), str(duration)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0:
        raise SystemExit(f"{name} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])["rps"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loops", default="asyncio,uvloop,uvrs")
    ap.add_argument("--sizes", default="1024,10240,102400")
    ap.add_argument("--conns", type=int, default=10)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    loops = [n for n in args.loops.split(",") if available(n)]
    sizes = [int(s) for s in args.sizes.split(",")]
    best = {(n, s): 0.0 for n in loops for s in sizes}
    for _ in range(args.reps):
        for size in sizes:
            for name in loops:  # interleaved, so drift hits every loop alike
                rps = measure(name, size, args.conns, args.duration)
                best[name, size] = max(best[name, size], rps)

    ref = "uvloop" if "uvloop" in loops else loops[0]
    print(f"TLS echo, {args.conns} connections, round trips/s (best of {args.reps})\n")
    print("| size | " + " | ".join(loops) + " |")
    print("|---|" + "---:|" * len(loops))
    for size in sizes:
        cells = [
            f"{best[n, size]:,.0f} ({best[n, size] / best[ref, size]:.2f}x)" for n in loops
        ]
        print(f"| {size // 1024} KiB | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
