"""loop.create_connection() and loop.connect_accepted_socket()."""

import asyncio
import builtins
import errno
import gc
import socket
import sys

import pytest

from _util import (
    LOCALHOST,
    LOCALHOST6,
    EchoProtocol,
    ProtocolFactory,
    RecordingProtocol,
    arun,
    catch_loop_errors,
    ipv6_loopback_available,
    open_fd_count,
    recv_all,
    tcp_server,
)

pytestmark = pytest.mark.timeout(10)

needs_ipv6 = pytest.mark.skipif(not ipv6_loopback_available(),
                                reason="::1 is not available")


class RefusingAddress:
    """A bound but never listening TCP socket: connecting to it is refused
    deterministically and nobody else can grab the port meanwhile."""

    def __init__(self, family=socket.AF_INET, host=LOCALHOST):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()


async def echo_server(loop, **kwargs):
    return await tcp_server(loop, ProtocolFactory(loop, EchoProtocol),
                            **kwargs)


async def roundtrip(proto, data):
    proto.transport.write(data)
    got = await proto.wait_bytes(len(data))
    assert got == data


# ------------------------------------------------------------ basics


def test_returns_transport_and_the_factorys_protocol(loop):
    async def main():
        server, port = await echo_server(loop)
        factory = ProtocolFactory(loop)
        transport, proto = await loop.create_connection(factory, LOCALHOST,
                                                        port)
        assert factory.protocols == [proto]
        assert isinstance(transport, asyncio.Transport)
        # connection_made already ran when create_connection() returns
        assert proto.events == ["made"]
        assert proto.transport is transport
        assert transport.get_extra_info("peername") == (LOCALHOST, port)
        sockname = transport.get_extra_info("sockname")
        assert sockname[0] == LOCALHOST and sockname[1] != 0
        await roundtrip(proto, b"hello")
        transport.close()
        assert await proto.lost is None
        server.close()
    arun(loop, main())


def test_port_given_as_string(loop):
    async def main():
        server, port = await echo_server(loop)
        transport, proto = await loop.create_connection(
            lambda: RecordingProtocol(loop), LOCALHOST, str(port))
        assert transport.get_extra_info("peername") == (LOCALHOST, port)
        await roundtrip(proto, b"str port")
        transport.close()
        await proto.lost
        server.close()
    arun(loop, main())


def test_host_name_is_resolved(loop):
    async def main():
        server, port = await echo_server(loop, host="localhost")
        families = {s.family for s in server.sockets}
        transport, proto = await loop.create_connection(
            lambda: RecordingProtocol(loop), "localhost", port)
        sock = transport.get_extra_info("socket")
        assert sock.family in families
        peer = transport.get_extra_info("peername")
        assert peer[0] in (LOCALHOST, LOCALHOST6)
        assert peer[1] == port
        await roundtrip(proto, b"by name")
        transport.close()
        await proto.lost
        server.close()
    arun(loop, main())


def test_family_inet(loop):
    async def main():
        server, port = await echo_server(loop)
        transport, proto = await loop.create_connection(
            lambda: RecordingProtocol(loop), "localhost", port,
            family=socket.AF_INET)
        assert transport.get_extra_info("socket").family == socket.AF_INET
        transport.close()
        await proto.lost
        server.close()
    arun(loop, main())


@needs_ipv6
def test_family_inet6(loop):
    async def main():
        server, port = await echo_server(loop, host=LOCALHOST6)
        transport, proto = await loop.create_connection(
            lambda: RecordingProtocol(loop), LOCALHOST6, port,
            family=socket.AF_INET6)
        assert transport.get_extra_info("socket").family == socket.AF_INET6
        peer = transport.get_extra_info("peername")
        assert peer[:2] == (LOCALHOST6, port)
        await roundtrip(proto, b"six")
        transport.close()
        await proto.lost
        server.close()
    arun(loop, main())


def test_family_mismatch_with_numeric_host_is_gaierror(loop):
    async def main():
        with pytest.raises(socket.gaierror):
            await loop.create_connection(asyncio.Protocol, LOCALHOST, 1,
                                         family=socket.AF_INET6)
    arun(loop, main())


# ------------------------------------------------------------ sock=


def test_sock_argument(loop):
    async def main():
        server, port = await echo_server(loop)
        sock = socket.create_connection((LOCALHOST, port), timeout=5)
        fd = sock.fileno()
        transport, proto = await loop.create_connection(
            lambda: RecordingProtocol(loop), sock=sock)
        assert transport.get_extra_info("socket").fileno() == fd
        assert transport.get_extra_info("peername") == (LOCALHOST, port)
        assert sock.gettimeout() == 0  # switched to non-blocking
        await roundtrip(proto, b"over sock=")
        transport.close()
        assert await proto.lost is None
        # the transport owned the socket and closed it
        assert sock.fileno() == -1
        server.close()
    arun(loop, main())


def test_sock_argument_errors(loop):
    async def main():
        with socket.socket() as sock:
            with pytest.raises(ValueError):
                await loop.create_connection(asyncio.Protocol, LOCALHOST, 80,
                                             sock=sock)
        with pytest.raises(ValueError):
            await loop.create_connection(asyncio.Protocol)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            with pytest.raises(ValueError):
                await loop.create_connection(asyncio.Protocol, sock=sock)
    arun(loop, main())


def test_ssl_only_arguments_without_ssl(loop):
    # TLS itself is a separate capability; only argument checking here.
    async def main():
        with pytest.raises(ValueError):
            await loop.create_connection(asyncio.Protocol, LOCALHOST, 80,
                                         server_hostname="example.invalid")
        with pytest.raises(ValueError):
            await loop.create_connection(asyncio.Protocol, LOCALHOST, 80,
                                         ssl_handshake_timeout=1.0)
    arun(loop, main())


# ------------------------------------------------------------ local_addr


def test_local_addr_any_port(loop):
    async def main():
        factory = ProtocolFactory(loop, EchoProtocol)
        server, port = await tcp_server(loop, factory)
        transport, proto = await loop.create_connection(
            lambda: RecordingProtocol(loop), LOCALHOST, port,
            local_addr=(LOCALHOST, 0))
        sockname = transport.get_extra_info("sockname")
        assert sockname[0] == LOCALHOST
        peer_side = await factory.nth(0)
        assert peer_side.transport.get_extra_info("peername") == sockname
        transport.close()
        await proto.lost
        server.close()
    arun(loop, main())


def test_local_addr_fixed_port(loop):
    async def main():
        factory = ProtocolFactory(loop, EchoProtocol)
        server, port = await tcp_server(loop, factory)
        with socket.socket() as probe:
            probe.bind((LOCALHOST, 0))
            local_port = probe.getsockname()[1]
        transport, proto = await loop.create_connection(
            lambda: RecordingProtocol(loop), LOCALHOST, port,
            local_addr=(LOCALHOST, local_port))
        assert transport.get_extra_info("sockname") == (LOCALHOST, local_port)
        peer_side = await factory.nth(0)
        assert peer_side.transport.get_extra_info("peername") == (
            LOCALHOST, local_port)
        transport.close()
        await proto.lost
        server.close()
    arun(loop, main())


def test_local_addr_in_use_is_oserror(loop):
    async def main():
        server, port = await echo_server(loop)
        busy = socket.socket()
        busy.bind((LOCALHOST, 0))
        busy.listen(1)
        try:
            with pytest.raises(OSError) as info:
                await loop.create_connection(
                    asyncio.Protocol, LOCALHOST, port,
                    local_addr=busy.getsockname())
            assert info.value.errno == errno.EADDRINUSE
        finally:
            busy.close()
            server.close()
    arun(loop, main())


# ------------------------------------------------------------ failures


def test_connection_refused(loop):
    async def main():
        with RefusingAddress() as addr:
            with pytest.raises(ConnectionRefusedError) as info:
                await loop.create_connection(asyncio.Protocol, LOCALHOST,
                                             addr.port)
        assert isinstance(info.value, OSError)
        assert info.value.errno == errno.ECONNREFUSED
    arun(loop, main())


def test_connection_refused_protocol_factory_not_called(loop):
    async def main():
        calls = []
        with RefusingAddress() as addr:
            with pytest.raises(ConnectionRefusedError):
                await loop.create_connection(lambda: calls.append(1),
                                             LOCALHOST, addr.port)
        assert calls == []
    arun(loop, main())


@pytest.mark.skipif(sys.version_info < (3, 12), reason="all_errors is 3.12+")
def test_all_errors_raises_exception_group(loop):
    exception_group = getattr(builtins, "ExceptionGroup", None)

    async def main():
        with RefusingAddress() as addr:
            with pytest.raises(exception_group) as info:
                await loop.create_connection(asyncio.Protocol, LOCALHOST,
                                             addr.port, all_errors=True)
        group = info.value
        assert len(group.exceptions) >= 1
        for exc in group.exceptions:
            assert type(exc) is ConnectionRefusedError
        # all_errors=False keeps the plain exception
        with RefusingAddress() as addr:
            with pytest.raises(ConnectionRefusedError):
                await loop.create_connection(asyncio.Protocol, LOCALHOST,
                                             addr.port, all_errors=False)
    arun(loop, main())


def test_cancel_mid_connect_leaks_no_fd(loop):
    """Cancel create_connection() after 0, 1, 2, ... loop iterations; every
    socket it created must be closed again."""
    if open_fd_count() is None:
        pytest.skip("needs /proc/self/fd")

    async def attempt(host, port, steps):
        task = loop.create_task(loop.create_connection(
            lambda: RecordingProtocol(loop), host, port))
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()
        try:
            transport, proto = await task
        except asyncio.CancelledError:
            return "cancelled"
        transport.close()
        await proto.lost
        return "completed"

    async def main():
        # A plain listener that never accepts: completed handshakes wait in
        # the kernel backlog and own no fd of this process.
        listener = socket.socket()
        listener.bind((LOCALHOST, 0))
        listener.listen(128)
        port = listener.getsockname()[1]
        try:
            # warm up lazily created loop resources (resolver, executor...)
            await attempt(LOCALHOST, port, 50)
            await attempt("localhost", port, 50)
            await asyncio.sleep(0.01)
            gc.collect()  # asyncio leaves earlier sockets to the collector
            before = open_fd_count()
            outcomes = []
            for host in (LOCALHOST, "localhost"):
                for steps in range(8):
                    outcomes.append(await attempt(host, port, steps))
            for _ in range(5):
                await asyncio.sleep(0.01)
            after = open_fd_count()
            assert "cancelled" in outcomes
            assert after == before, outcomes
        finally:
            listener.close()
    arun(loop, main())


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_cancel_during_happy_eyeballs_leaks_no_fd(loop, flavor):
    """asyncio 3.11-3.13 leaves the winning socket of a cancelled staggered
    race to the garbage collector; after a collection no fd may remain
    open.  (3.10's asyncio keeps one alive for good.)"""
    if open_fd_count() is None:
        pytest.skip("needs /proc/self/fd")
    if not flavor.is_uvrs and sys.version_info < (3, 11):
        pytest.skip("asyncio 3.10 leaks a socket here (stdlib bug)")

    async def main():
        listener = socket.socket()
        listener.bind((LOCALHOST, 0))
        listener.listen(128)
        port = listener.getsockname()[1]
        try:
            # One full connection first: a loop may open per-loop resources
            # lazily (libuv reserves one fd per loop for its EMFILE handling
            # at the first stream); only per-connection leaks are counted.
            transport, proto = await loop.create_connection(
                lambda: RecordingProtocol(loop), LOCALHOST, port)
            transport.close()
            await proto.lost
            await asyncio.sleep(0)
            gc.collect()  # asyncio leaves earlier sockets to the collector
            before = open_fd_count()
            for steps in range(6):
                task = loop.create_task(loop.create_connection(
                    lambda: RecordingProtocol(loop), LOCALHOST, port,
                    happy_eyeballs_delay=0.05))
                for _ in range(steps):
                    await asyncio.sleep(0)
                task.cancel()
                try:
                    transport, proto = await task
                except asyncio.CancelledError:
                    continue
                transport.close()
                await proto.lost
            for _ in range(5):
                await asyncio.sleep(0.01)
            gc.collect()
            assert open_fd_count() == before
        finally:
            listener.close()
    arun(loop, main())


# ------------------------------------------------------------ happy eyeballs


def test_happy_eyeballs_delay_and_interleave(loop):
    async def main():
        server, port = await echo_server(loop, host="localhost")
        for kwargs in ({"happy_eyeballs_delay": 0.25},
                       {"happy_eyeballs_delay": 0.0},
                       {"interleave": 1},
                       {"happy_eyeballs_delay": 0.1, "interleave": 2}):
            transport, proto = await loop.create_connection(
                lambda: RecordingProtocol(loop), "localhost", port, **kwargs)
            await roundtrip(proto, repr(kwargs).encode())
            transport.close()
            await proto.lost
        server.close()
    arun(loop, main())


def test_happy_eyeballs_refused(loop):
    async def main():
        with RefusingAddress() as addr:
            with pytest.raises(ConnectionRefusedError):
                await loop.create_connection(
                    asyncio.Protocol, LOCALHOST, addr.port,
                    happy_eyeballs_delay=0.1)
    arun(loop, main())


def _localhost_families():
    infos = socket.getaddrinfo("localhost", 0, type=socket.SOCK_STREAM)
    fams = {i[0] for i in infos}
    if not ipv6_loopback_available():
        fams.discard(socket.AF_INET6)
    return fams


@pytest.mark.skipif(len(_localhost_families()) < 2,
                    reason="'localhost' does not resolve to both families")
def test_happy_eyeballs_falls_back_to_other_family(loop):
    async def main():
        infos = socket.getaddrinfo("localhost", 0, type=socket.SOCK_STREAM)
        first = infos[0][0]
        other = socket.AF_INET if first == socket.AF_INET6 else socket.AF_INET6
        host = LOCALHOST if other == socket.AF_INET else LOCALHOST6
        # listen only on the family that is tried second
        server, port = await echo_server(loop, host=host)
        transport, proto = await loop.create_connection(
            lambda: RecordingProtocol(loop), "localhost", port,
            happy_eyeballs_delay=0.05)
        assert transport.get_extra_info("socket").family == other
        await roundtrip(proto, b"fallback")
        transport.close()
        await proto.lost
        server.close()
    arun(loop, main())


# ------------------------------------------------------------ accepted socket


def test_connect_accepted_socket(loop):
    async def main():
        errors = catch_loop_errors(loop)
        listener = socket.socket()
        listener.bind((LOCALHOST, 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname(), timeout=5)
        accepted, _ = listener.accept()
        listener.close()
        fd = accepted.fileno()
        transport, proto = await loop.connect_accepted_socket(
            lambda: RecordingProtocol(loop), accepted)
        assert isinstance(proto, RecordingProtocol)
        assert proto.events == ["made"]
        assert transport.get_extra_info("socket").fileno() == fd
        assert transport.get_extra_info("peername") == client.getsockname()
        client.sendall(b"from peer")
        assert await proto.wait_bytes(9) == b"from peer"
        transport.write(b"to peer")
        transport.close()
        got = await loop.run_in_executor(None, recv_all, client)
        assert got == b"to peer"
        assert await proto.lost is None
        client.close()
        assert errors == []
    arun(loop, main())


def test_connect_accepted_socket_rejects_datagram(loop):
    async def main():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            with pytest.raises(ValueError):
                await loop.connect_accepted_socket(asyncio.Protocol, sock)
    arun(loop, main())


def test_many_sequential_connections(loop):
    async def main():
        factory = ProtocolFactory(loop, EchoProtocol)
        server, port = await tcp_server(loop, factory)
        for i in range(100):
            transport, proto = await loop.create_connection(
                lambda: RecordingProtocol(loop), LOCALHOST, port)
            data = b"msg-%d" % i
            await roundtrip(proto, data)
            transport.close()
            assert await proto.lost is None
            assert proto.lifecycle() == ["made", "lost"]
        assert len(factory.protocols) == 100
        server.close()
    arun(loop, main(), timeout=8)
