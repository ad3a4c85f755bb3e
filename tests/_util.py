"""Helpers shared by the test modules (import as ``from _util import ...``)."""

import os
import subprocess
import sys
import textwrap


def run_briefly(loop, times=1):
    """Let the loop run `times` iterations' worth of ready callbacks."""
    for _ in range(times):
        loop.call_soon(loop.stop)
        loop.run_forever()


def run_child(flavor, code, *, env=None, args=(), timeout=15, stdin=None,
              popen=False):
    """Run `code` in a fresh interpreter (sys.executable).

    The code sees `new_event_loop`, `run` and `IMPL` already defined for the
    flavor under test. Ctrl-C raises KeyboardInterrupt in it even when the
    test run itself was started as a background job (which ignores SIGINT,
    and a child interpreter inherits that).
    """
    prelude = textwrap.dedent(f"""\
        import asyncio, signal, sys
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        IMPL = {flavor.name!r}
        if IMPL == "uvrs":
            import uvrs
            new_event_loop = uvrs.new_event_loop
            run = uvrs.run
        else:
            new_event_loop = asyncio.new_event_loop
            run = asyncio.run
        """)
    full = prelude + textwrap.dedent(code)
    child_env = dict(os.environ)
    child_env.pop("PYTHONASYNCIODEBUG", None)
    child_env["PYTHONUNBUFFERED"] = "1"
    if env:
        child_env.update(env)
    cmd = [sys.executable, *args, "-c", full]
    if popen:
        return subprocess.Popen(cmd, env=child_env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=stdin,
                                text=True)
    return subprocess.run(cmd, env=child_env, capture_output=True, text=True,
                          timeout=timeout)


# ---------------------------------------------------------------------------
# TCP helpers, shared by test_tcp_*.py, test_streams.py, test_dns.py and
# test_sendfile.py.  Everything here stays on loopback.

import asyncio  # noqa: E402
import hashlib  # noqa: E402
import random  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402

# What recvfrom() gives as the address of a datagram from an unbound AF_UNIX
# socket: None on Linux; the BSDs' kernels attach an empty name, so "".
UNBOUND_UNIX_ADDR = None if sys.platform.startswith("linux") else ""

LOCALHOST = "127.0.0.1"
LOCALHOST6 = "::1"

_ipv6_loopback = None


def ipv6_loopback_available():
    """True when a TCP socket can be bound to ::1."""
    global _ipv6_loopback
    if _ipv6_loopback is None:
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
                s.bind((LOCALHOST6, 0))
            _ipv6_loopback = True
        except OSError:
            _ipv6_loopback = False
    return _ipv6_loopback


def arun(loop, coro, timeout=5.0):
    """Run `coro` to completion on `loop`, bounded by `timeout` seconds."""
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def open_fd_count():
    """Number of open fds of this process (Linux only, else None)."""
    if not sys.platform.startswith("linux"):
        return None
    return len(os.listdir("/proc/self/fd"))


def catch_loop_errors(loop):
    """Route loop.call_exception_handler() contexts into the returned list."""
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    return errors


def payload(nbytes, seed=0):
    """Deterministic pseudo-random bytes."""
    return random.Random(seed).randbytes(nbytes)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def set_linger_zero(sock):
    """Make close() of `sock` send a RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                    struct.pack("ii", 1, 0))


def rst_close(sock):
    set_linger_zero(sock)
    sock.close()


def recv_all(sock, timeout=5.0):
    """Blocking: read `sock` until EOF (run it in an executor)."""
    sock.settimeout(timeout)
    chunks = []
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


class RecordingProtocol(asyncio.Protocol):
    """Records every callback in `events` and received bytes in `data`.

    `made`, `eof` and `lost` are futures resolved by the matching callback
    (`lost` with the exception passed to connection_lost).  `eof_result` is
    what eof_received() returns.
    """

    def __init__(self, loop, *, eof_result=None):
        self.loop = loop
        self.transport = None
        self.events = []
        self.data = bytearray()
        self.chunk_types = set()
        self.eof_result = eof_result
        self.made = loop.create_future()
        self.eof = loop.create_future()
        self.lost = loop.create_future()
        self._byte_waiters = []

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport
        if not self.made.done():
            self.made.set_result(transport)

    def data_received(self, data):
        self.events.append("data")
        self.chunk_types.add(type(data))
        self.data += data
        self._wake()

    def eof_received(self):
        self.events.append("eof")
        if not self.eof.done():
            self.eof.set_result(None)
        self._wake()
        return self.eof_result

    def connection_lost(self, exc):
        self.events.append("lost")
        if not self.lost.done():
            self.lost.set_result(exc)
        self._wake()

    def pause_writing(self):
        self.events.append("pause")

    def resume_writing(self):
        self.events.append("resume")

    def _wake(self):
        ended = self.eof.done() or self.lost.done()
        keep = []
        for n, fut in self._byte_waiters:
            if fut.done():
                continue
            if len(self.data) >= n or ended:
                fut.set_result(None)
            else:
                keep.append((n, fut))
        self._byte_waiters = keep

    async def wait_bytes(self, n):
        """Wait until `n` bytes arrived (or EOF / connection lost)."""
        if len(self.data) < n and not (self.eof.done() or self.lost.done()):
            fut = self.loop.create_future()
            self._byte_waiters.append((n, fut))
            await fut
        return bytes(self.data)

    def lifecycle(self):
        """Events without data / flow-control entries."""
        return [e for e in self.events if e in ("made", "eof", "lost")]


class EchoProtocol(RecordingProtocol):
    """Echoes everything back; closes on EOF (after flushing)."""

    def data_received(self, data):
        super().data_received(data)
        self.transport.write(data)


class ProtocolFactory:
    """A protocol factory that remembers every protocol it created."""

    def __init__(self, loop, cls=RecordingProtocol, **kwargs):
        self.loop = loop
        self.cls = cls
        self.kwargs = kwargs
        self.protocols = []
        self._waiters = []

    def __call__(self):
        proto = self.cls(self.loop, **self.kwargs)
        self.protocols.append(proto)
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        return proto

    async def nth(self, i=0):
        """The i-th created protocol, once its connection_made() ran."""
        while len(self.protocols) <= i:
            fut = self.loop.create_future()
            self._waiters.append(fut)
            await fut
        proto = self.protocols[i]
        await proto.made
        return proto


async def tcp_server(loop, factory, host=LOCALHOST, port=0, **kwargs):
    """create_server() on loopback; returns (server, port)."""
    server = await loop.create_server(factory, host, port, **kwargs)
    return server, server.sockets[0].getsockname()[1]


async def tcp_pair(loop, client_factory=None, server_factory=None, **kwargs):
    """A connected (client_proto, server_proto, server) triple over
    loopback made with create_server + create_connection."""
    if server_factory is None:
        server_factory = ProtocolFactory(loop)
    if client_factory is None:
        client_factory = ProtocolFactory(loop)
    server, port = await tcp_server(loop, server_factory)
    _, client = await loop.create_connection(client_factory, LOCALHOST, port,
                                             **kwargs)
    peer = await server_factory.nth(0)
    await client.made
    return client, peer, server


def free_port(family=socket.AF_INET, host=LOCALHOST):
    """A TCP port that was free a moment ago (nothing listens on it)."""
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
