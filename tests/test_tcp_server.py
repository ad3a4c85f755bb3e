"""loop.create_server() and the Server object it returns.

Reference behaviour is the stdlib loop's; every test runs on both flavors.
"""

import asyncio
import errno
import gc
import socket
import sys
import weakref

import pytest

from _util import (
    LOCALHOST,
    LOCALHOST6,
    EchoProtocol,
    ProtocolFactory,
    arun,
    catch_loop_errors,
    ipv6_loopback_available,
    recv_all,
    tcp_server,
)

pytestmark = pytest.mark.timeout(10)

needs_ipv6 = pytest.mark.skipif(not ipv6_loopback_available(),
                                reason="::1 is not available")
HAS_ACCEPTCONN = hasattr(socket, "SO_ACCEPTCONN")


def connect_blocking(addr, family=socket.AF_INET):
    """A plain blocking client; loopback connect completes in the kernel
    without the event loop having to run."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(addr)
    return sock


def refused(addr, family=socket.AF_INET):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        return s.connect_ex(addr) == errno.ECONNREFUSED


async def echo_roundtrip(loop, addr, data=b"ping", family=socket.AF_INET):
    """Connect a plain socket to `addr`, send `data`, half-close and return
    everything the server sent back until EOF."""
    sock = connect_blocking(addr, family)
    try:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        return await loop.run_in_executor(None, recv_all, sock)
    finally:
        sock.close()


def echo_factory(loop):
    return ProtocolFactory(loop, EchoProtocol)


# ------------------------------------------------------------ basic shape


def test_create_server_returns_serving_abstract_server(loop):
    async def main():
        server, port = await tcp_server(loop, echo_factory(loop))
        try:
            assert isinstance(server, asyncio.AbstractServer)
            assert server.get_loop() is loop
            assert server.is_serving()
            socks = server.sockets
            assert isinstance(socks, tuple)
            assert len(socks) == 1
            s = socks[0]
            assert s.family == socket.AF_INET
            assert s.type == socket.SOCK_STREAM
            assert s.getsockname() == (LOCALHOST, port)
            assert port != 0
            assert s.fileno() >= 0
            assert await echo_roundtrip(loop, (LOCALHOST, port)) == b"ping"
        finally:
            server.close()
    arun(loop, main())


def test_sockets_property_is_a_fresh_tuple_each_time(loop):
    async def main():
        server, port = await tcp_server(loop, echo_factory(loop))
        a, b = server.sockets, server.sockets
        assert isinstance(a, tuple) and isinstance(b, tuple)
        assert [s.getsockname() for s in a] == [s.getsockname() for s in b]
        server.close()
        assert server.sockets == ()
    arun(loop, main())


def test_each_connection_gets_its_own_protocol(loop):
    async def main():
        factory = ProtocolFactory(loop)
        server, port = await tcp_server(loop, factory)
        clients = [connect_blocking((LOCALHOST, port)) for _ in range(5)]
        try:
            protos = [await factory.nth(i) for i in range(5)]
            assert len(factory.protocols) == 5
            assert len({id(p.transport) for p in protos}) == 5
            peers = {p.transport.get_extra_info("peername") for p in protos}
            assert peers == {c.getsockname() for c in clients}
            for p in protos:
                assert p.events == ["made"]
                assert p.transport.get_extra_info("sockname") == (
                    LOCALHOST, port)
        finally:
            for c in clients:
                c.close()
        for p in protos:
            await p.lost
            assert p.lifecycle() == ["made", "eof", "lost"]
        server.close()
    arun(loop, main())


# ------------------------------------------------------------ host forms


def _passive_families(host):
    infos = socket.getaddrinfo(host, 0, socket.AF_UNSPEC, socket.SOCK_STREAM,
                               0, socket.AI_PASSIVE)
    fams = {info[0] for info in infos}
    if not ipv6_loopback_available():
        fams.discard(socket.AF_INET6)
    return fams


@pytest.mark.parametrize("host", [None, ""], ids=["None", "empty"])
def test_host_none_binds_wildcard_of_each_family(loop, host):
    async def main():
        server = await loop.create_server(echo_factory(loop), host, 0)
        try:
            socks = server.sockets
            fams = {s.family for s in socks}
            assert fams == _passive_families(None)
            assert len(socks) == len(fams)
            for s in socks:
                name = s.getsockname()
                if s.family == socket.AF_INET:
                    assert name[0] == "0.0.0.0"
                    assert await echo_roundtrip(
                        loop, (LOCALHOST, name[1])) == b"ping"
                else:
                    assert name[0] == "::"
                    # asyncio disables dual-stack on its IPv6 sockets
                    assert s.getsockopt(socket.IPPROTO_IPV6,
                                        socket.IPV6_V6ONLY) == 1
                    assert await echo_roundtrip(
                        loop, (LOCALHOST6, name[1]),
                        family=socket.AF_INET6) == b"ping"
        finally:
            server.close()
    arun(loop, main())


def test_host_name_binds_each_resolved_family(loop):
    async def main():
        server = await loop.create_server(echo_factory(loop), "localhost", 0)
        try:
            assert {s.family for s in server.sockets} == _passive_families(
                "localhost")
            for s in server.sockets:
                if s.family == socket.AF_INET:
                    assert s.getsockname()[0] == LOCALHOST
        finally:
            server.close()
    arun(loop, main())


def test_host_list_duplicates_are_bound_once(loop):
    async def main():
        server = await loop.create_server(
            echo_factory(loop), [LOCALHOST, LOCALHOST], 0)
        try:
            assert len(server.sockets) == 1
            assert server.sockets[0].getsockname()[0] == LOCALHOST
        finally:
            server.close()
    arun(loop, main())


@needs_ipv6
def test_host_list_binds_every_host(loop):
    async def main():
        server = await loop.create_server(
            echo_factory(loop), [LOCALHOST, LOCALHOST6], 0)
        try:
            by_family = {s.family: s.getsockname() for s in server.sockets}
            assert set(by_family) == {socket.AF_INET, socket.AF_INET6}
            assert by_family[socket.AF_INET][0] == LOCALHOST
            assert by_family[socket.AF_INET6][0] == LOCALHOST6
            assert await echo_roundtrip(
                loop, by_family[socket.AF_INET][:2], b"v4") == b"v4"
            assert await echo_roundtrip(
                loop, by_family[socket.AF_INET6][:2], b"v6",
                family=socket.AF_INET6) == b"v6"
        finally:
            server.close()
    arun(loop, main())


def test_family_inet_restricts_wildcard(loop):
    async def main():
        server = await loop.create_server(echo_factory(loop), None, 0,
                                          family=socket.AF_INET)
        try:
            assert [s.family for s in server.sockets] == [socket.AF_INET]
            assert server.sockets[0].getsockname()[0] == "0.0.0.0"
        finally:
            server.close()
    arun(loop, main())


@needs_ipv6
def test_family_inet6_restricts_wildcard(loop):
    async def main():
        server = await loop.create_server(echo_factory(loop), None, 0,
                                          family=socket.AF_INET6)
        try:
            assert [s.family for s in server.sockets] == [socket.AF_INET6]
            port = server.sockets[0].getsockname()[1]
            assert await echo_roundtrip(loop, (LOCALHOST6, port), b"x",
                                        family=socket.AF_INET6) == b"x"
        finally:
            server.close()
    arun(loop, main())


@needs_ipv6
def test_ipv6_server_and_peername(loop):
    async def main():
        factory = ProtocolFactory(loop)
        server, port = await tcp_server(loop, factory, host=LOCALHOST6)
        assert server.sockets[0].getsockname()[:2] == (LOCALHOST6, port)
        client = connect_blocking((LOCALHOST6, port), socket.AF_INET6)
        proto = await factory.nth(0)
        peer = proto.transport.get_extra_info("peername")
        assert peer[:2] == client.getsockname()[:2]
        assert len(peer) == 4
        client.close()
        await proto.lost
        server.close()
    arun(loop, main())


# ------------------------------------------------------------ sock=


def test_sock_argument_is_used_and_owned(loop):
    async def main():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((LOCALHOST, 0))
        addr = sock.getsockname()
        server = await loop.create_server(echo_factory(loop), sock=sock)
        assert server.is_serving()
        assert len(server.sockets) == 1
        assert server.sockets[0].getsockname() == addr
        assert server.sockets[0].fileno() == sock.fileno()
        assert sock.gettimeout() == 0  # made non-blocking
        assert await echo_roundtrip(loop, addr, b"via sock") == b"via sock"
        server.close()
        # the server owns the socket: closing the server closes it
        assert sock.fileno() == -1
    arun(loop, main())


def test_sock_already_listening(loop):
    async def main():
        sock = socket.socket()
        sock.bind((LOCALHOST, 0))
        sock.listen(5)
        server = await loop.create_server(echo_factory(loop), sock=sock)
        assert await echo_roundtrip(loop, sock.getsockname()) == b"ping"
        server.close()
    arun(loop, main())


def test_sock_with_host_or_port_is_value_error(loop):
    async def main():
        with socket.socket() as sock:
            with pytest.raises(ValueError):
                await loop.create_server(asyncio.Protocol, LOCALHOST, 0,
                                         sock=sock)
            with pytest.raises(ValueError):
                await loop.create_server(asyncio.Protocol, port=0, sock=sock)
    arun(loop, main())


def test_no_host_port_or_sock_is_value_error(loop):
    async def main():
        with pytest.raises(ValueError):
            await loop.create_server(asyncio.Protocol)
    arun(loop, main())


def test_datagram_sock_is_value_error(loop):
    async def main():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            with pytest.raises(ValueError):
                await loop.create_server(asyncio.Protocol, sock=sock)
    arun(loop, main())


def test_ssl_only_arguments_without_ssl_are_rejected(loop):
    async def main():
        with pytest.raises(ValueError):
            await loop.create_server(asyncio.Protocol, LOCALHOST, 0,
                                     ssl_handshake_timeout=1.0)
        with pytest.raises(TypeError):
            await loop.create_server(asyncio.Protocol, LOCALHOST, 0,
                                     ssl=True)
    arun(loop, main())


# ------------------------------------------------------------ socket options


def test_backlog_is_accepted_and_server_listens(loop):
    async def main():
        server, port = await tcp_server(loop, echo_factory(loop), backlog=3)
        if HAS_ACCEPTCONN:
            assert server.sockets[0].getsockopt(
                socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        for i in range(4):
            got = await echo_roundtrip(loop, (LOCALHOST, port), b"%d" % i)
            assert got == b"%d" % i
        server.close()
    arun(loop, main())


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX default")
def test_reuse_address_default_on_posix(loop):
    async def main():
        server, _ = await tcp_server(loop, asyncio.Protocol)
        assert server.sockets[0].getsockopt(
            socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
        server.close()
        server, _ = await tcp_server(loop, asyncio.Protocol,
                                     reuse_address=False)
        assert server.sockets[0].getsockopt(
            socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
        server.close()
    arun(loop, main())


def test_address_in_use_is_oserror(loop):
    async def main():
        server, port = await tcp_server(loop, asyncio.Protocol)
        with pytest.raises(OSError) as info:
            await loop.create_server(asyncio.Protocol, LOCALHOST, port)
        assert type(info.value) is OSError
        assert info.value.errno == errno.EADDRINUSE
        assert server.is_serving()
        server.close()
    arun(loop, main())


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"),
                    reason="no SO_REUSEPORT")
def test_reuse_port(loop):
    async def main():
        f1, f2 = echo_factory(loop), echo_factory(loop)
        s1, port = await tcp_server(loop, f1, reuse_port=True)
        assert s1.sockets[0].getsockopt(
            socket.SOL_SOCKET, socket.SO_REUSEPORT) != 0
        s2, port2 = await tcp_server(loop, f2, port=port, reuse_port=True)
        assert port2 == port
        for _ in range(4):
            assert await echo_roundtrip(loop, (LOCALHOST, port)) == b"ping"
        assert len(f1.protocols) + len(f2.protocols) == 4
        s1.close()
        s2.close()
        s3, _ = await tcp_server(loop, asyncio.Protocol)
        assert s3.sockets[0].getsockopt(
            socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0
        s3.close()
    arun(loop, main())


@pytest.mark.skipif(sys.version_info < (3, 13), reason="keep_alive is 3.13+")
def test_keep_alive(loop):
    async def main():
        factory = ProtocolFactory(loop)
        server, port = await tcp_server(loop, factory, keep_alive=True)
        assert server.sockets[0].getsockopt(
            socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
        client = connect_blocking((LOCALHOST, port))
        proto = await factory.nth(0)
        accepted = proto.transport.get_extra_info("socket")
        assert accepted.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
        client.close()
        await proto.lost
        server.close()
        server, _ = await tcp_server(loop, factory)
        assert server.sockets[0].getsockopt(
            socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
        server.close()
    arun(loop, main())


# ------------------------------------------------------------ start / serve


def test_start_serving_false(loop):
    async def main():
        factory = echo_factory(loop)
        server, port = await tcp_server(loop, factory, start_serving=False)
        assert not server.is_serving()
        assert server.sockets[0].getsockname() == (LOCALHOST, port)
        if HAS_ACCEPTCONN:
            assert server.sockets[0].getsockopt(
                socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0
        # bound but not listening yet: connections are refused
        assert refused((LOCALHOST, port))
        await server.start_serving()
        assert server.is_serving()
        await server.start_serving()  # idempotent
        assert server.is_serving()
        assert await echo_roundtrip(loop, (LOCALHOST, port)) == b"ping"
        server.close()
        assert not server.is_serving()
    arun(loop, main())


def test_serve_forever_until_cancelled(loop):
    async def main():
        server, port = await tcp_server(loop, echo_factory(loop),
                                        start_serving=False)
        task = loop.create_task(server.serve_forever())
        await asyncio.sleep(0.01)
        assert server.is_serving()
        assert not task.done()
        assert await echo_roundtrip(loop, (LOCALHOST, port)) == b"ping"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()
        assert not server.is_serving()
        assert server.sockets == ()
        assert refused((LOCALHOST, port))
    arun(loop, main())


def test_serve_forever_twice_is_runtime_error(loop):
    async def main():
        server, _ = await tcp_server(loop, asyncio.Protocol)
        task = loop.create_task(server.serve_forever())
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError):
            await server.serve_forever()
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    arun(loop, main())


def test_serve_forever_on_closed_server_is_runtime_error(loop):
    async def main():
        server, _ = await tcp_server(loop, asyncio.Protocol)
        server.close()
        with pytest.raises(RuntimeError):
            await server.serve_forever()
    arun(loop, main())


def test_close_cancels_serve_forever(loop):
    async def main():
        server, _ = await tcp_server(loop, asyncio.Protocol)
        task = loop.create_task(server.serve_forever())
        await asyncio.sleep(0)
        server.close()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()
    arun(loop, main())


# ------------------------------------------------------------ close / wait


def test_close_stops_listening_but_keeps_connections(loop):
    async def main():
        factory = echo_factory(loop)
        server, port = await tcp_server(loop, factory)
        client = connect_blocking((LOCALHOST, port))
        proto = await factory.nth(0)
        server.close()
        assert not server.is_serving()
        assert server.sockets == ()
        server.close()  # idempotent
        await asyncio.sleep(0)
        assert refused((LOCALHOST, port))
        # the accepted connection is untouched by Server.close()
        assert not proto.transport.is_closing()
        client.sendall(b"still here")
        client.shutdown(socket.SHUT_WR)
        got = await loop.run_in_executor(None, recv_all, client)
        assert got == b"still here"
        client.close()
        await proto.lost
        await server.wait_closed()
    arun(loop, main())


def test_wait_closed_blocks_while_open(loop):
    async def main():
        server, _ = await tcp_server(loop, asyncio.Protocol)
        waiter = loop.create_task(server.wait_closed())
        await asyncio.sleep(0.05)
        assert not waiter.done()
        server.close()
        await asyncio.wait_for(waiter, 2)
        # and again once closed: returns at once
        await asyncio.wait_for(server.wait_closed(), 2)
    arun(loop, main())


def test_wait_closed_and_active_connections(loop):
    """3.12+: wait_closed() also waits for accepted connections to go away;
    3.10/3.11 return as soon as the server itself is closed."""
    async def main():
        factory = ProtocolFactory(loop)
        server, port = await tcp_server(loop, factory)
        client = connect_blocking((LOCALHOST, port))
        proto = await factory.nth(0)
        server.close()
        waiter = loop.create_task(server.wait_closed())
        await asyncio.sleep(0.05)
        if sys.version_info >= (3, 12):
            assert not waiter.done()
            proto.transport.close()
            await asyncio.wait_for(waiter, 2)
        else:
            assert waiter.done()
            proto.transport.close()
        await proto.lost
        client.close()
    arun(loop, main())


def test_async_context_manager(loop):
    async def main():
        server, port = await tcp_server(loop, echo_factory(loop))
        async with server as entered:
            assert entered is server
            assert server.is_serving()
            assert await echo_roundtrip(loop, (LOCALHOST, port)) == b"ping"
        assert not server.is_serving()
        assert server.sockets == ()
        assert refused((LOCALHOST, port))
    arun(loop, main())


@pytest.mark.skipif(sys.version_info < (3, 13), reason="3.13+ API")
@pytest.mark.parametrize("method", ["close_clients", "abort_clients"])
def test_close_and_abort_clients(loop, method):
    async def main():
        factory = ProtocolFactory(loop)
        server, port = await tcp_server(loop, factory)
        clients = [connect_blocking((LOCALHOST, port)) for _ in range(3)]
        protos = [await factory.nth(i) for i in range(3)]
        getattr(server, method)()
        for p in protos:
            assert p.transport.is_closing()
        excs = [await p.lost for p in protos]
        assert excs == [None, None, None]
        for p in protos:
            assert p.lifecycle() == ["made", "lost"]
        for c in clients:
            try:
                rest = await loop.run_in_executor(None, recv_all, c)
            except ConnectionResetError:
                rest = b""
            assert rest == b""
            c.close()
        # the listening socket is untouched
        assert server.is_serving()
        assert await echo_roundtrip(loop, (LOCALHOST, port), b"") == b""
        assert len(factory.protocols) == 4
        server.close()
        await server.wait_closed()
    arun(loop, main())


# ------------------------------------------------------------ factory errors


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_failing_protocol_factory_keeps_server_alive(loop):
    """asyncio drops the incoming connection; in non-debug mode it does not
    even call the exception handler."""
    async def main():
        errors = catch_loop_errors(loop)
        calls = []

        def factory():
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("factory boom")
            return EchoProtocol(loop)

        server, port = await tcp_server(loop, factory)
        bad = connect_blocking((LOCALHOST, port))
        try:
            rest = await loop.run_in_executor(None, recv_all, bad)
        except ConnectionResetError:
            rest = b""
        assert rest == b""
        bad.close()
        assert await echo_roundtrip(loop, (LOCALHOST, port)) == b"ping"
        assert len(calls) == 2
        assert errors == []
        server.close()
    arun(loop, main())


def test_unreferenced_server_and_connections_survive_gc(loop):
    """Nobody keeps the server or the accepted transports; the loop must
    (asyncio's selector holds them): they keep serving across collections."""

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    async def main():
        server = await loop.create_server(Echo, LOCALHOST, 0)
        port = server.sockets[0].getsockname()[1]
        ref = weakref.ref(server)
        del server
        gc.collect()
        clients = []
        for _ in range(5):
            s = socket.socket()
            s.setblocking(False)
            await loop.sock_connect(s, (LOCALHOST, port))
            clients.append(s)
        for _ in range(3):
            gc.collect()
            for i, s in enumerate(clients):
                msg = b"ping %d" % i
                await loop.sock_sendall(s, msg)
                got = b""
                while len(got) < len(msg):
                    chunk = await loop.sock_recv(s, 100)
                    assert chunk, "connection closed"
                    got += chunk
                assert got == msg
        for s in clients:
            s.close()
        server = ref()
        assert server is not None
        server.close()
        await server.wait_closed()

    arun(loop, main())
