"""loop.create_datagram_endpoint() and the datagram transport.

Everything stays on loopback (127.0.0.1, ::1 when available, AF_UNIX
datagram sockets in a short temporary directory).  The expected behaviour
is whatever the stdlib selector loop does on the running Python version;
where that differs between versions the test says so.
"""

import asyncio
import errno
import os
import shutil
import socket
import struct
import sys
import tempfile

import pytest

from _util import (
    LOCALHOST,
    LOCALHOST6,
    UNBOUND_UNIX_ADDR,
    arun,
    catch_loop_errors,
    ipv6_loopback_available,
    open_fd_count,
    payload,
    run_briefly,
)

pytestmark = pytest.mark.timeout(30)

needs_unix = pytest.mark.skipif(
    sys.platform == "win32" or not hasattr(socket, "AF_UNIX"),
    reason="AF_UNIX datagram sockets are Unix-only")
needs_ipv6 = pytest.mark.skipif(not ipv6_loopback_available(),
                                reason="no IPv6 loopback")


class DgramProto(asyncio.DatagramProtocol):
    """Records every callback.

    `datagrams` is a list of (data, addr), `errors` the exceptions passed to
    error_received(), `events` the callback names in order.  `made` and
    `lost` are futures resolved by connection_made / connection_lost (`lost`
    with the exception given), `lost_calls` counts connection_lost calls.
    """

    def __init__(self, loop):
        self.loop = loop
        self.transport = None
        self.events = []
        self.datagrams = []
        self.errors = []
        self.lost_calls = 0
        self.made = loop.create_future()
        self.lost = loop.create_future()
        self._waiters = []

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport
        if not self.made.done():
            self.made.set_result(transport)

    def datagram_received(self, data, addr):
        self.events.append("dg")
        self.datagrams.append((data, addr))
        self._wake()

    def error_received(self, exc):
        self.events.append("err")
        self.errors.append(exc)
        self._wake()

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost_calls += 1
        if not self.lost.done():
            self.lost.set_result(exc)
        self._wake()

    def _wake(self):
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def until(self, predicate):
        """Wait until predicate() is true (re-checked on every callback)."""
        while not predicate():
            fut = self.loop.create_future()
            self._waiters.append(fut)
            await fut

    async def wait_datagrams(self, n):
        await self.until(lambda: len(self.datagrams) >= n)
        return self.datagrams[:n]


class EchoDgramProto(DgramProto):
    """Sends every datagram back to where it came from."""

    def datagram_received(self, data, addr):
        super().datagram_received(data, addr)
        self.transport.sendto(data, addr)


async def endpoint(loop, cls=DgramProto, **kwargs):
    """create_datagram_endpoint() with a fresh `cls` protocol; returns
    (transport, protocol) after checking the protocol is the factory's."""
    made = []

    def factory():
        proto = cls(loop)
        made.append(proto)
        return proto

    transport, proto = await loop.create_datagram_endpoint(factory, **kwargs)
    assert made == [proto]
    assert proto.transport is transport
    return transport, proto


async def close_all(*protos):
    """Close every protocol's transport and wait for connection_lost."""
    for proto in protos:
        if proto is not None and proto.transport is not None:
            proto.transport.close()
    for proto in protos:
        if proto is not None and proto.transport is not None:
            await proto.lost


def closed_udp_port(family=socket.AF_INET, host=LOCALHOST):
    """A UDP port nothing was bound to a moment ago."""
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.fixture
def sockdir():
    """A short temporary directory for AF_UNIX socket paths."""
    path = tempfile.mkdtemp(dir="/tmp", prefix="uvrs-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------
# Basic round trips


def test_ipv4_echo(loop):
    async def main():
        server = client = None
        try:
            _, server = await endpoint(loop, EchoDgramProto,
                                       local_addr=(LOCALHOST, 0))
            server_addr = server.transport.get_extra_info("sockname")
            assert server_addr[0] == LOCALHOST and server_addr[1] != 0
            _, client = await endpoint(loop, remote_addr=server_addr)
            client_addr = client.transport.get_extra_info("sockname")
            assert client_addr[0] == LOCALHOST and client_addr[1] != 0
            sent = []
            for i in range(20):
                data = b"%d:" % i + payload(1 + i * 37, seed=i)
                sent.append(data)
                client.transport.sendto(data)
                await client.wait_datagrams(i + 1)
            assert client.datagrams == [(d, server_addr) for d in sent]
            assert server.datagrams == [(d, client_addr) for d in sent]
            assert client.events[0] == "made"
            assert server.events[0] == "made"
            assert client.errors == [] and server.errors == []
        finally:
            await close_all(server, client)

    arun(loop, main())


@needs_ipv6
def test_ipv6_echo_uses_4_tuples(loop):
    async def main():
        server = client = None
        try:
            _, server = await endpoint(loop, EchoDgramProto,
                                       local_addr=(LOCALHOST6, 0))
            server_addr = server.transport.get_extra_info("sockname")
            port = server_addr[1]
            assert server_addr == (LOCALHOST6, port, 0, 0)
            # remote_addr is given as a 2-tuple; asyncio reports 4-tuples.
            _, client = await endpoint(loop, remote_addr=(LOCALHOST6, port))
            assert client.transport.get_extra_info("peername") == server_addr
            client_addr = client.transport.get_extra_info("sockname")
            assert len(client_addr) == 4 and client_addr[0] == LOCALHOST6
            for i in range(5):
                client.transport.sendto(b"six-%d" % i)
                await client.wait_datagrams(i + 1)
            assert client.datagrams == [(b"six-%d" % i, server_addr)
                                        for i in range(5)]
            assert server.datagrams == [(b"six-%d" % i, client_addr)
                                        for i in range(5)]
        finally:
            await close_all(server, client)

    arun(loop, main())


def test_local_and_remote_addr_together(loop):
    async def main():
        server = client = None
        try:
            _, server = await endpoint(loop, EchoDgramProto,
                                       local_addr=(LOCALHOST, 0))
            server_addr = server.transport.get_extra_info("sockname")
            _, client = await endpoint(loop, local_addr=(LOCALHOST, 0),
                                       remote_addr=server_addr)
            client_addr = client.transport.get_extra_info("sockname")
            assert client_addr[0] == LOCALHOST and client_addr[1] != 0
            assert client.transport.get_extra_info("peername") == server_addr
            client.transport.sendto(b"both")
            assert await client.wait_datagrams(1) == [(b"both", server_addr)]
            assert server.datagrams == [(b"both", client_addr)]
        finally:
            await close_all(server, client)

    arun(loop, main())


def test_sock_argument(loop):
    async def main():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((LOCALHOST, 0))
        addr = sock.getsockname()
        # asyncio makes the socket non-blocking itself.
        assert sock.gettimeout() is None
        server = None
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            transport, server = await endpoint(loop, EchoDgramProto,
                                               sock=sock)
            assert sock.gettimeout() == 0
            assert transport.get_extra_info("sockname") == addr
            assert transport.get_extra_info("peername") is None
            tsock = transport.get_extra_info("socket")
            assert tsock.fileno() == sock.fileno()
            assert tsock.family == socket.AF_INET
            assert tsock.type == socket.SOCK_DGRAM
            peer.bind((LOCALHOST, 0))
            peer.sendto(b"via sock=", addr)
            await server.wait_datagrams(1)
            assert server.datagrams == [(b"via sock=", peer.getsockname())]
            await close_all(server)
            server = None
            # Closing the transport closes the socket it was given.
            assert sock.fileno() == -1
        finally:
            await close_all(server)
            peer.close()
            sock.close()

    arun(loop, main())


@pytest.mark.parametrize("kwargs", [
    {"local_addr": (LOCALHOST, 0)},
    {"remote_addr": (LOCALHOST, 9)},
    {"family": socket.AF_INET},
    {"allow_broadcast": True},
], ids=["local_addr", "remote_addr", "family", "allow_broadcast"])
def test_sock_with_address_options_raises_value_error(loop, kwargs):
    async def main():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((LOCALHOST, 0))
        made = []
        try:
            with pytest.raises(ValueError, match="when sock is specified"):
                await loop.create_datagram_endpoint(
                    lambda: made.append(1) or DgramProto(loop), sock=sock,
                    **kwargs)
            assert made == []
            assert sock.fileno() != -1  # not closed by the failed call
        finally:
            sock.close()

    arun(loop, main())


def test_stream_socket_rejected(loop):
    async def main():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            with pytest.raises(ValueError):
                await loop.create_datagram_endpoint(
                    lambda: DgramProto(loop), sock=sock)
        finally:
            sock.close()

    arun(loop, main())


def test_family_only_endpoint_is_unbound_but_can_sendto(loop):
    async def main():
        server = client = None
        try:
            _, server = await endpoint(loop, EchoDgramProto,
                                       local_addr=(LOCALHOST, 0))
            server_addr = server.transport.get_extra_info("sockname")
            _, client = await endpoint(loop, family=socket.AF_INET)
            # asyncio records sockname when the transport is created.
            assert client.transport.get_extra_info("sockname") == ("0.0.0.0", 0)
            assert client.transport.get_extra_info("peername") is None
            client.transport.sendto(b"unbound", server_addr)
            assert await client.wait_datagrams(1) == [(b"unbound", server_addr)]
            (data, addr), = server.datagrams
            assert data == b"unbound"
            assert addr[0] == LOCALHOST and addr[1] != 0
            # The implicit bind is visible on the socket itself.
            tsock = client.transport.get_extra_info("socket")
            assert tsock.getsockname()[1] == addr[1]
        finally:
            await close_all(server, client)

    arun(loop, main())


def test_bad_endpoint_arguments(loop):
    async def main():
        with pytest.raises(ValueError, match="unexpected address family"):
            await loop.create_datagram_endpoint(lambda: DgramProto(loop))
        if hasattr(socket, "AF_UNIX"):
            with pytest.raises(TypeError, match="string is expected"):
                await loop.create_datagram_endpoint(
                    lambda: DgramProto(loop), family=socket.AF_UNIX,
                    local_addr=("x", 1))
        if sys.version_info >= (3, 11):
            # 3.10 raises AssertionError here instead.
            with pytest.raises(TypeError, match="2-tuple is expected"):
                await loop.create_datagram_endpoint(
                    lambda: DgramProto(loop), local_addr=LOCALHOST)
            with pytest.raises(TypeError, match="2-tuple is expected"):
                await loop.create_datagram_endpoint(
                    lambda: DgramProto(loop), remote_addr=(LOCALHOST, 1, 2))

    arun(loop, main())


# ---------------------------------------------------------------------------
# Socket options


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"),
                    reason="no SO_REUSEPORT")
def test_reuse_port(loop):
    async def main():
        first = second = None
        try:
            _, first = await endpoint(loop, local_addr=(LOCALHOST, 0),
                                      reuse_port=True)
            port = first.transport.get_extra_info("sockname")[1]
            # A second endpoint may bind the very same port.
            _, second = await endpoint(loop, local_addr=(LOCALHOST, port),
                                       reuse_port=True)
            for proto in (first, second):
                tsock = proto.transport.get_extra_info("socket")
                assert tsock.getsockopt(socket.SOL_SOCKET,
                                        socket.SO_REUSEPORT) != 0
                assert proto.transport.get_extra_info("sockname") == (
                    LOCALHOST, port)
        finally:
            await close_all(first, second)

    arun(loop, main())


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"),
                    reason="no SO_REUSEPORT")
def test_reuse_port_not_set_by_default(loop):
    async def main():
        first = None
        try:
            _, first = await endpoint(loop, local_addr=(LOCALHOST, 0))
            tsock = first.transport.get_extra_info("socket")
            assert tsock.getsockopt(socket.SOL_SOCKET,
                                    socket.SO_REUSEPORT) == 0
            port = first.transport.get_extra_info("sockname")[1]
            with pytest.raises(OSError) as info:
                await loop.create_datagram_endpoint(
                    lambda: DgramProto(loop), local_addr=(LOCALHOST, port))
            assert info.value.errno == errno.EADDRINUSE
        finally:
            await close_all(first)

    arun(loop, main())


def test_allow_broadcast(loop):
    async def main():
        plain = bcast = server = None
        try:
            _, plain = await endpoint(loop, local_addr=(LOCALHOST, 0))
            tsock = plain.transport.get_extra_info("socket")
            assert tsock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 0

            _, server = await endpoint(loop, EchoDgramProto,
                                       local_addr=(LOCALHOST, 0))
            server_addr = server.transport.get_extra_info("sockname")
            # With allow_broadcast, remote_addr is remembered but the socket
            # is not connected (so there is no peername).
            _, bcast = await endpoint(loop, local_addr=(LOCALHOST, 0),
                                      remote_addr=server_addr,
                                      allow_broadcast=True)
            tsock = bcast.transport.get_extra_info("socket")
            assert tsock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) != 0
            assert bcast.transport.get_extra_info("peername") is None
            bcast.transport.sendto(b"to remote_addr")
            assert await bcast.wait_datagrams(1) == [(b"to remote_addr",
                                                      server_addr)]
            with pytest.raises(ValueError, match="Invalid address"):
                bcast.transport.sendto(b"x", (LOCALHOST, closed_udp_port()))
        finally:
            await close_all(plain, bcast, server)

    arun(loop, main())


# ---------------------------------------------------------------------------
# Connected endpoints


def test_connected_endpoint(loop):
    async def main():
        server = client = None
        intruder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            _, server = await endpoint(loop, EchoDgramProto,
                                       local_addr=(LOCALHOST, 0))
            server_addr = server.transport.get_extra_info("sockname")
            transport, client = await endpoint(loop, remote_addr=server_addr)
            client_addr = transport.get_extra_info("sockname")
            assert transport.get_extra_info("peername") == server_addr
            tsock = transport.get_extra_info("socket")
            assert tsock.fileno() >= 0
            assert tsock.family == socket.AF_INET
            assert tsock.type == socket.SOCK_DGRAM
            assert tsock.getsockname() == client_addr
            assert tsock.getpeername() == server_addr
            assert transport.get_extra_info("nonexistent", "dflt") == "dflt"

            transport.sendto(b"no addr")
            await client.wait_datagrams(1)
            # Passing the remote address explicitly is allowed too.
            transport.sendto(b"same addr", server_addr)
            await client.wait_datagrams(2)
            other = (LOCALHOST, closed_udp_port())
            with pytest.raises(ValueError, match="Invalid address"):
                transport.sendto(b"elsewhere", other)
            # A connected socket only hears from its peer.
            intruder.sendto(b"intruder", client_addr)
            transport.sendto(b"last")
            await client.wait_datagrams(3)
            assert client.datagrams == [(b"no addr", server_addr),
                                        (b"same addr", server_addr),
                                        (b"last", server_addr)]
            assert [d for d, _ in server.datagrams] == [
                b"no addr", b"same addr", b"last"]
            assert not transport.is_closing()
        finally:
            intruder.close()
            await close_all(server, client)

    arun(loop, main())


def test_empty_datagram(loop):
    async def main():
        server = client = None
        try:
            _, server = await endpoint(loop, local_addr=(LOCALHOST, 0))
            server_addr = server.transport.get_extra_info("sockname")
            _, client = await endpoint(loop, remote_addr=server_addr)
            client_addr = client.transport.get_extra_info("sockname")
            client.transport.sendto(b"")
            client.transport.sendto(b"marker")
            if sys.version_info >= (3, 13):
                # 3.13+ sends zero-length datagrams.
                await server.wait_datagrams(2)
                assert server.datagrams == [(b"", client_addr),
                                            (b"marker", client_addr)]
            else:
                # Before 3.13, sendto(b"") is a silent no-op.
                await server.wait_datagrams(1)
                assert server.datagrams == [(b"marker", client_addr)]
            # A zero-length datagram from elsewhere is always delivered.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
                raw.bind((LOCALHOST, 0))
                before = len(server.datagrams)
                raw.sendto(b"", server_addr)
                await server.wait_datagrams(before + 1)
                assert server.datagrams[before] == (b"", raw.getsockname())
        finally:
            await close_all(server, client)

    arun(loop, main())


def test_sendto_accepts_bytes_like(loop):
    async def main():
        server = client = None
        try:
            _, server = await endpoint(loop, local_addr=(LOCALHOST, 0))
            server_addr = server.transport.get_extra_info("sockname")
            _, client = await endpoint(loop, remote_addr=server_addr)
            buf = bytearray(b"bytearray")
            client.transport.sendto(buf)
            buf[:] = b"XXXXXXXXX"  # mutating afterwards must not matter
            client.transport.sendto(memoryview(b"..memoryview..")[2:-2])
            client.transport.sendto(b"bytes")
            await server.wait_datagrams(3)
            assert [d for d, _ in server.datagrams] == [
                b"bytearray", b"memoryview", b"bytes"]
            assert all(type(d) is bytes for d, _ in server.datagrams)
        finally:
            await close_all(server, client)

    arun(loop, main())


def test_sendto_rejects_non_bytes(loop):
    async def main():
        server = client = None
        try:
            _, server = await endpoint(loop, local_addr=(LOCALHOST, 0))
            server_addr = server.transport.get_extra_info("sockname")
            _, client = await endpoint(loop, family=socket.AF_INET)
            for bad in ("text", None, 42, [1, 2]):
                with pytest.raises(TypeError,
                                   match="data argument must be a bytes-like"):
                    client.transport.sendto(bad, server_addr)
            assert not client.transport.is_closing()
            client.transport.sendto(b"still fine", server_addr)
            await server.wait_datagrams(1)
            assert server.datagrams[0][0] == b"still fine"
        finally:
            await close_all(server, client)

    arun(loop, main())


# ---------------------------------------------------------------------------
# Many datagrams


def test_burst_loss_accounting(loop):
    count, size, window = 500, 1024, 50

    def dgram(seq):
        return struct.pack("!I", seq) + payload(size - 4, seed=seq)

    expected = [dgram(seq) for seq in range(count)]

    async def main():
        server = client = None
        try:
            _, server = await endpoint(loop, local_addr=(LOCALHOST, 0))
            server_addr = server.transport.get_extra_info("sockname")
            _, client = await endpoint(loop, remote_addr=server_addr)
            client_addr = client.transport.get_extra_info("sockname")
            for start in range(0, count, window):
                for seq in range(start, start + window):
                    client.transport.sendto(expected[seq])
                last = struct.pack("!I", start + window - 1)

                def window_done(last=last):
                    return bool(server.datagrams) and (
                        server.datagrams[-1][0][:4] == last)

                try:
                    # Pace the sender a little; UDP may drop, so a missing
                    # tail only ends the wait.
                    await asyncio.wait_for(server.until(window_done), 2.0)
                except asyncio.TimeoutError:
                    pass
            received = server.datagrams
            seqs = []
            for data, addr in received:
                assert addr == client_addr
                assert len(data) == size
                seq = struct.unpack("!I", data[:4])[0]
                assert 0 <= seq < count
                assert data == expected[seq]
                seqs.append(seq)
            assert len(set(seqs)) == len(seqs), "duplicated datagrams"
            assert len(received) <= count
            assert len(received) >= count // 2
            assert server.errors == [] and client.errors == []
        finally:
            await close_all(server, client)

    arun(loop, main(), timeout=25)


# ---------------------------------------------------------------------------
# Errors


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="ICMP error reporting is Linux behaviour")
def test_error_received_connection_refused(loop):
    async def main():
        client = server = None
        errors = catch_loop_errors(loop)
        try:
            port = closed_udp_port()
            transport, client = await endpoint(loop,
                                               remote_addr=(LOCALHOST, port))
            transport.sendto(b"anyone there?")
            await client.until(lambda: client.errors)
            exc = client.errors[0]
            assert isinstance(exc, ConnectionRefusedError)
            assert exc.errno == errno.ECONNREFUSED
            assert all(isinstance(e, ConnectionRefusedError)
                       for e in client.errors)
            # The transport survives the error.
            assert not transport.is_closing()
            assert "lost" not in client.events
            assert client.datagrams == []
            # Once something listens on the port the same transport works.
            _, server = await endpoint(loop, EchoDgramProto,
                                       local_addr=(LOCALHOST, port))
            transport.sendto(b"now?")
            await client.wait_datagrams(1)
            assert client.datagrams == [(b"now?", (LOCALHOST, port))]
            assert errors == []
        finally:
            await close_all(client, server)
        assert client.lost.result() is None

    arun(loop, main())


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="ICMP error reporting is Linux behaviour")
def test_unconnected_endpoint_gets_no_error_received(loop):
    async def main():
        client = server = None
        try:
            _, server = await endpoint(loop, EchoDgramProto,
                                       local_addr=(LOCALHOST, 0))
            server_addr = server.transport.get_extra_info("sockname")
            _, client = await endpoint(loop, local_addr=(LOCALHOST, 0))
            client.transport.sendto(b"void", (LOCALHOST, closed_udp_port()))
            client.transport.sendto(b"echo", server_addr)
            await client.wait_datagrams(1)
            assert client.datagrams == [(b"echo", server_addr)]
            assert client.errors == []
            assert not client.transport.is_closing()
        finally:
            await close_all(client, server)

    arun(loop, main())


# ---------------------------------------------------------------------------
# Write buffer, close, abort


def test_write_buffer_size_and_limits(loop):
    async def main():
        proto = None
        try:
            transport, proto = await endpoint(loop, local_addr=(LOCALHOST, 0))
            assert transport.get_write_buffer_size() == 0
            assert transport.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
            transport.set_write_buffer_limits(high=100)
            assert transport.get_write_buffer_limits() == (25, 100)
            transport.set_write_buffer_limits(low=100)
            assert transport.get_write_buffer_limits() == (100, 400)
            transport.set_write_buffer_limits(high=300, low=10)
            assert transport.get_write_buffer_limits() == (10, 300)
            transport.set_write_buffer_limits()
            assert transport.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
            with pytest.raises(ValueError):
                transport.set_write_buffer_limits(high=1, low=2)
            with pytest.raises(ValueError):
                transport.set_write_buffer_limits(high=-1, low=-2)
            transport.sendto(b"x" * 100, (LOCALHOST, closed_udp_port()))
            assert transport.get_write_buffer_size() == 0
        finally:
            await close_all(proto)

    arun(loop, main())


def test_close(loop):
    async def main():
        server = client = None
        errors = catch_loop_errors(loop)
        try:
            _, server = await endpoint(loop, local_addr=(LOCALHOST, 0))
            server_addr = server.transport.get_extra_info("sockname")
            transport, client = await endpoint(loop, remote_addr=server_addr)
            assert not transport.is_closing()
            transport.close()
            assert transport.is_closing()
            transport.close()  # idempotent
            # Sending on a closed connected transport is silently ignored.
            transport.sendto(b"after close")
            assert await client.lost is None
            transport.sendto(b"after connection_lost")
            transport.close()
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert client.lost_calls == 1
            assert client.events == ["made", "lost"]
            assert transport.is_closing()
            # Nothing reached the server.
            server.transport.close()
            await server.lost
            assert server.datagrams == []
            assert errors == []
        finally:
            await close_all(server, client)

    arun(loop, main())


def test_close_stops_delivery(loop):
    async def main():
        proto = None
        raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            raw.bind((LOCALHOST, 0))
            transport, proto = await endpoint(loop, local_addr=(LOCALHOST, 0))
            addr = transport.get_extra_info("sockname")
            raw.sendto(b"first", addr)
            await proto.wait_datagrams(1)
            transport.close()
            raw.sendto(b"second", addr)
            assert await proto.lost is None
            await asyncio.sleep(0)
            assert proto.datagrams == [(b"first", raw.getsockname())]
            assert proto.events == ["made", "dg", "lost"]
        finally:
            raw.close()
            await close_all(proto)

    arun(loop, main())


def test_abort(loop):
    async def main():
        proto = None
        errors = catch_loop_errors(loop)
        try:
            transport, proto = await endpoint(loop, local_addr=(LOCALHOST, 0))
            transport.abort()
            assert transport.is_closing()
            transport.abort()
            transport.close()
            assert await proto.lost is None
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert proto.lost_calls == 1
            assert proto.events == ["made", "lost"]
            assert errors == []
        finally:
            await close_all(proto)

    arun(loop, main())


def test_connection_lost_only_after_connection_made(loop):
    # close() right after the endpoint is created: made, then lost.
    async def main():
        transport, proto = await endpoint(loop, local_addr=(LOCALHOST, 0))
        transport.close()
        assert await proto.lost is None
        assert proto.events == ["made", "lost"]

    arun(loop, main())


# ---------------------------------------------------------------------------
# AF_UNIX datagram sockets


@needs_unix
def test_unix_datagram_roundtrip(loop, sockdir):
    server_path = os.path.join(sockdir, "srv")
    client_path = os.path.join(sockdir, "cli")

    async def main():
        server = client = None
        try:
            _, server = await endpoint(loop, EchoDgramProto,
                                       family=socket.AF_UNIX,
                                       local_addr=server_path)
            assert server.transport.get_extra_info("sockname") == server_path
            assert server.transport.get_extra_info("peername") is None
            _, client = await endpoint(loop, family=socket.AF_UNIX,
                                       local_addr=client_path,
                                       remote_addr=server_path)
            assert client.transport.get_extra_info("sockname") == client_path
            assert client.transport.get_extra_info("peername") == server_path
            tsock = client.transport.get_extra_info("socket")
            assert tsock.family == socket.AF_UNIX
            assert tsock.type == socket.SOCK_DGRAM
            sent = [payload(1 + 500 * i, seed=i) for i in range(5)]
            for i, data in enumerate(sent):
                client.transport.sendto(data)
                await client.wait_datagrams(i + 1)
            assert client.datagrams == [(d, server_path) for d in sent]
            assert server.datagrams == [(d, client_path) for d in sent]
        finally:
            await close_all(server, client)

    arun(loop, main())


@needs_unix
def test_unix_datagram_unbound_sender(loop, sockdir):
    server_path = os.path.join(sockdir, "srv")

    async def main():
        server = client = None
        try:
            _, server = await endpoint(loop, family=socket.AF_UNIX,
                                       local_addr=server_path)
            _, client = await endpoint(loop, family=socket.AF_UNIX,
                                       remote_addr=server_path)
            # An unbound AF_UNIX socket has the empty name...
            assert client.transport.get_extra_info("sockname") == ""
            assert client.transport.get_extra_info("peername") == server_path
            client.transport.sendto(b"anonymous")
            await server.wait_datagrams(1)
            # ...and its datagrams arrive with addr None.
            assert server.datagrams == [(b"anonymous", UNBOUND_UNIX_ADDR)]
        finally:
            await close_all(server, client)

    arun(loop, main())


@needs_unix
def test_unix_datagram_stale_socket_file_is_replaced(loop, sockdir):
    path = os.path.join(sockdir, "srv")

    async def main():
        transport, proto = await endpoint(loop, family=socket.AF_UNIX,
                                          local_addr=path)
        await close_all(proto)
        # The socket file is left behind; binding there again removes it.
        assert os.path.exists(path)
        proto2 = None
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            _, proto2 = await endpoint(loop, family=socket.AF_UNIX,
                                       local_addr=path)
            sender.sendto(b"fresh", path)
            assert await proto2.wait_datagrams(1) == [(b"fresh", UNBOUND_UNIX_ADDR)]
        finally:
            sender.close()
            await close_all(proto2)

    arun(loop, main())


@needs_unix
def test_unix_datagram_sock_argument(loop, sockdir):
    path_a = os.path.join(sockdir, "a")
    path_b = os.path.join(sockdir, "b")

    async def main():
        a = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        a.bind(path_a)
        b.bind(path_b)
        pa = pb = None
        try:
            _, pa = await endpoint(loop, sock=a)
            _, pb = await endpoint(loop, EchoDgramProto, sock=b)
            pa.transport.sendto(b"over unix", path_b)
            assert await pa.wait_datagrams(1) == [(b"over unix", path_b)]
            assert pb.datagrams == [(b"over unix", path_a)]
        finally:
            await close_all(pa, pb)
            a.close()
            b.close()

    arun(loop, main())


# ---------------------------------------------------------------------------
# Resources


@pytest.mark.skipif(open_fd_count() is None, reason="needs /proc/self/fd")
def test_no_fd_leak(loop):
    async def make_and_close():
        protos = []
        try:
            for _ in range(10):
                _, server = await endpoint(loop, local_addr=(LOCALHOST, 0))
                protos.append(server)
                addr = server.transport.get_extra_info("sockname")
                _, client = await endpoint(loop, remote_addr=addr)
                protos.append(client)
                client.transport.sendto(b"ping")
                await server.wait_datagrams(1)
        finally:
            await close_all(*protos)
        assert len(protos) == 20
        assert all(p.lost_calls == 1 for p in protos)

    # Warm up once so lazily created loop resources are not counted.
    arun(loop, make_and_close())
    run_briefly(loop, 3)
    before = open_fd_count()
    arun(loop, make_and_close())
    run_briefly(loop, 3)
    assert open_fd_count() == before


def test_exception_in_datagram_received_is_reported_and_reading_goes_on(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    class Flaky(asyncio.DatagramProtocol):
        def __init__(self):
            self.got = []
            self.second = loop.create_future()

        def datagram_received(self, data, addr):
            self.got.append(data)
            if data == b"boom":
                raise ValueError("boom")
            if not self.second.done():
                self.second.set_result(None)

    async def main():
        transport, proto = await loop.create_datagram_endpoint(
            Flaky, local_addr=("127.0.0.1", 0)
        )
        addr = transport.get_extra_info("sockname")
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sender.sendto(b"boom", addr)
            await asyncio.sleep(0.05)
            sender.sendto(b"fine", addr)
            await asyncio.wait_for(proto.second, 5)
        finally:
            sender.close()
            transport.close()
        return proto

    proto = arun(loop, main())
    assert proto.got == [b"boom", b"fine"]
    assert len(contexts) == 1
    assert contexts[0]["message"].startswith("Exception in callback ")
    assert isinstance(contexts[0]["exception"], ValueError)
