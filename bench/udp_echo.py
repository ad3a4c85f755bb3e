"""UDP echo, side by side: each loop serves an echo DatagramProtocol in its own
process; one client process (on the stdlib loop, the same for every server)
keeps N datagrams in flight from N sockets and counts round trips.

    python bench/udp_echo.py [--loops asyncio,uvloop,uvrs] [--size 1024]
                             [--clients 10] [--duration 3]

Loops that are not installed are skipped. Prints req/s and the ratio to
uvloop (or to asyncio when uvloop is missing).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time

SERVER = r"""
import asyncio, sys
name = sys.argv[1]
if name == "uvloop":
    import uvloop
    new_loop = uvloop.new_event_loop
elif name == "uvrs":
    import uvrs
    new_loop = uvrs.new_event_loop
else:
    new_loop = asyncio.new_event_loop

class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport
    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)

async def main():
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    print(transport.get_extra_info("sockname")[1], flush=True)
    await asyncio.Event().wait()

loop = new_loop()
loop.run_until_complete(main())
"""


def available(name: str) -> bool:
    if name == "asyncio":
        return True
    try:
        __import__(name)
    except ImportError:
        return False
    return True


async def client(port: int, clients: int, size: int, duration: float) -> float:
    loop = asyncio.get_running_loop()
    payload = b"x" * size
    count = 0
    deadline = 0.0

    async def one() -> None:
        nonlocal count
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.connect(("127.0.0.1", port))
        try:
            while time.monotonic() < deadline:
                await loop.sock_sendall(sock, payload)
                try:
                    data = await asyncio.wait_for(loop.sock_recv(sock, size + 1), 1.0)
                except asyncio.TimeoutError:
                    continue  # a lost datagram: send again
                if data == payload:
                    count += 1
        finally:
            sock.close()

    deadline = time.monotonic() + 0.5  # warm-up
    await asyncio.gather(*(one() for _ in range(clients)))
    count = 0
    start = time.monotonic()
    deadline = start + duration
    await asyncio.gather(*(one() for _ in range(clients)))
    return count / (time.monotonic() - start)


def measure(name: str, args: argparse.Namespace) -> float:
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, name], stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(server.stdout.readline())
        return asyncio.run(client(port, args.clients, args.size, args.duration))
    finally:
        server.kill()
        server.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loops", default="asyncio,uvloop,uvrs")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--duration", type=float, default=3.0)
    args = ap.parse_args()
    results = {}
    for name in args.loops.split(","):
        if not available(name):
            print(f"{name:8} skipped (not installed)")
            continue
        results[name] = measure(name, args)
    base = results.get("uvloop") or results.get("asyncio")
    print(f"UDP echo, {args.clients} clients, {args.size} B, {args.duration:g} s")
    for name, rate in results.items():
        print(f"{name:8} {rate:12,.0f} req/s  {rate / base:5.2f}x")


if __name__ == "__main__":
    main()
