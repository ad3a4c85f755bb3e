"""Soak: many short connections, many idle ones, many spawns and timers on
one loop; open fds must come back to their baseline and RSS must stop
growing once warmed up.

    python bench/soak.py [--loop uvrs|asyncio|uvloop|rloop] [--scale 1.0] [--phases idle,...]

At --scale 1 (the reliability issue's figures): 1,000,000 connect / 1 KiB
echo / close cycles, 10,000 idle connections held at once (the server ends on
this loop, the client ends in a child process: 10,000 fds each; the soft fd
limit is raised to the hard one), 100,000
subprocess spawns and 1,000,000 timers created and cancelled. --scale 0.01
runs the same in a few seconds. Loopback only.

For each phase it prints the open fds and RSS before it, after its first
tenth (warm-up) and at its end; RSS growth is measured from the warm-up
point (the idle phase reports the loop's RSS per held connection instead:
the memory a server pays for an idle client). Exit status
1 if fds leaked or RSS grew by 5 % or more.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import sys
import time

MSG = b"x" * 1024


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"))


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class Echo(asyncio.Protocol):
    live = 0  # connections open on the server side

    def connection_made(self, transport):
        self.transport = transport
        Echo.live += 1

    def data_received(self, data):
        self.transport.write(data)

    def connection_lost(self, exc):
        Echo.live -= 1


# The idle phase's client: blocking sockets in a child process, so the loop
# under test holds only the server ends.
IDLE_CLIENT = """
import resource, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
port, n = int(sys.argv[1]), int(sys.argv[2])
socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
print("HELD", flush=True)
sys.stdin.readline()
for s in socks:
    s.close()
"""


class Phase:
    def __init__(self, name: str, total: int):
        self.name, self.total = name, total
        self.t0 = time.perf_counter()
        gc.collect()
        self.fds0, self.rss0 = open_fds(), rss_kib()
        self.warm = None

    def tick(self, done: int) -> None:
        if self.warm is None and done >= self.total // 10:
            gc.collect()
            self.warm = rss_kib()

    def end(self) -> bool:
        gc.collect()
        fds, rss = open_fds(), rss_kib()
        warm = self.warm if self.warm is not None else self.rss0
        growth = (rss - warm) / warm * 100
        dt = time.perf_counter() - self.t0
        ok = fds == self.fds0 and growth < 5
        print(
            f"{self.name:12} {self.total:>9,} in {dt:6.1f}s | fds {self.fds0} -> {fds} "
            f"(delta {fds - self.fds0:+d}) | RSS {self.rss0 / 1024:.1f} MiB, warm "
            f"{warm / 1024:.1f}, end {rss / 1024:.1f} (growth {growth:+.1f}%) "
            f"{'ok' if ok else 'FAIL'}",
            flush=True,
        )
        return ok


async def echo_once(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(MSG)
    await reader.readexactly(len(MSG))
    writer.close()
    await writer.wait_closed()


async def connections(loop, port: int, n: int) -> bool:
    # A few cycles first: libuv opens some fds once, lazily (a /dev/null
    # reserve for EMFILE, say); the baseline is taken after them.
    for _ in range(10):
        await echo_once(port)
    await asyncio.sleep(0.1)
    ph = Phase("connect", n)
    for i in range(n):
        await echo_once(port)
        ph.tick(i)
    await asyncio.sleep(0.1)  # let the server side see the last closes
    return ph.end()


async def idle(loop, port: int, n: int) -> bool:
    """n connections held open at once: the loop's RSS per connection while
    held (server ends, Protocol transports), and every fd back after the
    clients close (RSS is not expected to drop: Python keeps its arenas)."""
    # libuv opens its EMFILE reserve (/dev/null) at the first accept: once.
    await echo_once(port)
    await asyncio.sleep(0.1)
    gc.collect()
    fds0, rss0 = open_fds(), rss_kib()
    t0 = time.perf_counter()
    base = Echo.live
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-c", IDLE_CLIENT, str(port), str(n),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    held_line = await client.stdout.readline()
    while Echo.live - base < n and client.returncode is None:
        await asyncio.sleep(0.05)
    held = Echo.live - base
    await asyncio.sleep(0.2)
    gc.collect()
    per_conn = (rss_kib() - rss0) * 1024 / max(held, 1)
    client.stdin.write(b"close\n")
    await client.stdin.drain()
    await client.wait()
    while Echo.live > base:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    gc.collect()
    fds = open_fds()
    ok = fds == fds0 and held == n and held_line.strip() == b"HELD"
    print(
        f"{'idle':12} {held:>9,} in {time.perf_counter() - t0:6.1f}s | fds {fds0} -> {fds} "
        f"(delta {fds - fds0:+d}) | RSS while held: {per_conn:,.0f} bytes per connection "
        f"(server end) {'ok' if ok else 'FAIL'}",
        flush=True,
    )
    return ok


async def spawns(loop, n: int) -> bool:
    ph = Phase("subprocess", n)
    for i in range(n):
        proc = await asyncio.create_subprocess_exec("true")
        await proc.wait()
        ph.tick(i)
    return ph.end()


async def timers(loop, n: int) -> bool:
    ph = Phase("timers", n)
    batch = max(1, min(10_000, n // 100))  # enough batches for a warm-up point
    for i in range(0, n, batch):
        handles = [loop.call_later(60, print) for _ in range(min(batch, n - i))]
        for h in handles:
            h.cancel()
        await asyncio.sleep(0)
        ph.tick(i)
    return ph.end()


PHASES = ("connect", "idle", "spawn", "timers")


async def main(scale: float, phases=PHASES) -> bool:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    ok = True
    if "connect" in phases:
        ok &= await connections(loop, port, int(1_000_000 * scale))
    n_idle = int(10_000 * scale)
    # One fd per held connection in each process, plus headroom.
    fd_room = resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 200
    if n_idle > fd_room:
        print(f"idle: {n_idle:,} connections need {n_idle + 200:,} fds, the limit allows "
              f"{fd_room:,}: holding {fd_room:,}", flush=True)
        n_idle = fd_room
    if "idle" in phases:
        ok &= await idle(loop, port, n_idle)
    server.close()
    await server.wait_closed()
    if "spawn" in phases and sys.platform != "win32":
        ok &= await spawns(loop, int(100_000 * scale))
    if "timers" in phases:
        ok &= await timers(loop, int(1_000_000 * scale))
    return ok


def new_loop(name: str):
    if name == "uvrs":
        import uvrs

        return uvrs.new_event_loop()
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    if name == "rloop":
        import rloop

        return rloop.new_event_loop()
    return asyncio.new_event_loop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loop", default="uvrs")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--phases", default=",".join(PHASES),
                    help=f"comma-separated subset of {','.join(PHASES)}")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"soak on {args.loop}, scale {args.scale}", flush=True)
    loop = new_loop(args.loop)
    try:
        passed = loop.run_until_complete(main(args.scale, args.phases.split(",")))
    finally:
        loop.close()
    sys.exit(0 if passed else 1)
