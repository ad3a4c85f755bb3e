"""Unix domain stream sockets: loop.create_unix_server() and
loop.create_unix_connection(), plus the asyncio streams built on them.

Reference behaviour is the stdlib loop's; every test runs on both flavors.
"""

import asyncio
import errno
import gc
import os
import pathlib
import shutil
import socket
import sys
import tempfile
import uuid

import pytest

from _util import (
    EchoProtocol,
    ProtocolFactory,
    RecordingProtocol,
    arun,
    catch_loop_errors,
    open_fd_count,
    payload,
    recv_all,
    sha256,
)

if sys.platform == "win32":
    # Before anything below touches names Windows lacks (signal.SIGCHLD,
    # socket.AF_UNIX...): a skip mark would come too late, at collection.
    pytest.skip("asyncio has no Unix socket support on Windows", allow_module_level=True)

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(sys.platform == "win32",
                       reason="asyncio has no Unix socket support on Windows"),
]

needs_linux = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                 reason="abstract namespace is Linux only")
needs_313 = pytest.mark.skipif(sys.version_info < (3, 13),
                               reason="cleanup_socket is new in 3.13")
HAS_ACCEPTCONN = hasattr(socket, "SO_ACCEPTCONN")


@pytest.fixture
def sock_dir(tmp_path):
    """A directory short enough for AF_UNIX paths (sun_path is ~100 bytes)."""
    if len(str(tmp_path)) < 80:
        yield tmp_path
        return
    short = tempfile.mkdtemp(dir="/tmp")
    yield pathlib.Path(short)
    shutil.rmtree(short, ignore_errors=True)


@pytest.fixture
def path(sock_dir):
    """A fresh socket path (str) inside `sock_dir`."""
    return str(sock_dir / "s.sock")


def abstract_name():
    return "\0uvrs-test-%d-%s" % (os.getpid(), uuid.uuid4().hex[:12])


def echo_factory(loop):
    return ProtocolFactory(loop, EchoProtocol)


def connect_blocking(addr):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(5)
        sock.connect(addr)
    except BaseException:
        sock.close()
        raise
    return sock


async def echo_roundtrip(loop, addr, data=b"ping"):
    """Send `data` from a plain socket, half-close, return the reply."""
    sock = connect_blocking(addr)
    try:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        return await loop.run_in_executor(None, recv_all, sock)
    finally:
        sock.close()


async def client_echo(loop, addr, data, **kwargs):
    """create_unix_connection() to an echo server; returns the client
    protocol after the whole exchange ended."""
    transport, proto = await loop.create_unix_connection(
        lambda: RecordingProtocol(loop), addr, **kwargs)
    transport.write(data)
    transport.write_eof()
    assert await proto.lost is None
    return proto


async def settle(n=5):
    for _ in range(n):
        await asyncio.sleep(0.005)


# ------------------------------------------------------------ basics


def test_echo_round_trip_by_path(loop, path):
    async def main():
        factory = echo_factory(loop)
        server = await loop.create_unix_server(factory, path)
        try:
            assert isinstance(server, asyncio.AbstractServer)
            assert server.is_serving()
            proto = await client_echo(loop, path, b"hello unix")
            assert bytes(proto.data) == b"hello unix"
            assert proto.lifecycle() == ["made", "eof", "lost"]
            peer = await factory.nth(0)
            assert await peer.lost is None
            assert bytes(peer.data) == b"hello unix"
            assert peer.lifecycle() == ["made", "eof", "lost"]
        finally:
            server.close()
        await server.wait_closed()
    arun(loop, main())


def test_path_like_object(loop, sock_dir):
    async def main():
        p = sock_dir / "pl.sock"
        server = await loop.create_unix_server(echo_factory(loop), p)
        assert server.sockets[0].getsockname() == str(p)
        proto = await client_echo(loop, p, b"pathlib")
        assert bytes(proto.data) == b"pathlib"
        server.close()
        await server.wait_closed()
    arun(loop, main())


def test_server_sockets(loop, path):
    async def main():
        server = await loop.create_unix_server(echo_factory(loop), path)
        socks = server.sockets
        assert isinstance(socks, tuple)
        assert len(socks) == 1
        s = socks[0]
        assert s.family == socket.AF_UNIX
        assert s.type == socket.SOCK_STREAM
        assert s.fileno() >= 0
        assert s.getsockname() == path
        if HAS_ACCEPTCONN:
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        server.close()
        assert server.sockets == ()
        await server.wait_closed()
    arun(loop, main())


def test_transport_type_and_extra_info(loop, path):
    async def main():
        factory = ProtocolFactory(loop)
        server = await loop.create_unix_server(factory, path)
        ct, client = await loop.create_unix_connection(
            lambda: RecordingProtocol(loop), path)
        peer = await factory.nth(0)
        pt = peer.transport
        for t in (ct, pt):
            assert isinstance(t, asyncio.Transport)
            assert t.can_write_eof() is True
            assert t.is_closing() is False
            s = t.get_extra_info("socket")
            assert s.family == socket.AF_UNIX
            assert s.type == socket.SOCK_STREAM
            assert s.fileno() >= 0
        # An unnamed client socket has the empty string as its address.
        assert ct.get_extra_info("sockname") == ""
        assert ct.get_extra_info("peername") == path
        assert pt.get_extra_info("sockname") == path
        assert pt.get_extra_info("peername") == ""
        assert ct.get_extra_info("socket").getpeername() == path
        assert pt.get_extra_info("socket").getsockname() == path
        ct.close()
        assert await client.lost is None
        assert await peer.lost is None
        server.close()
        await server.wait_closed()
    arun(loop, main())


# ------------------------------------------------------------ sock=


@pytest.mark.parametrize("listening", [True, False],
                         ids=["listening", "bound"])
def test_server_from_sock(loop, path, listening):
    async def main():
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        if listening:
            sock.listen(10)
        server = await loop.create_unix_server(echo_factory(loop), sock=sock)
        assert server.sockets[0].getsockname() == path
        assert server.sockets[0].fileno() == sock.fileno()
        assert await echo_roundtrip(loop, path, b"from sock") == b"from sock"
        server.close()
        await server.wait_closed()
        # the server owned the socket and closed it
        assert sock.fileno() == -1
    arun(loop, main())


def test_connection_from_connected_sock(loop, path):
    async def main():
        factory = echo_factory(loop)
        server = await loop.create_unix_server(factory, path)
        sock = connect_blocking(path)
        ct, proto = await loop.create_unix_connection(
            lambda: RecordingProtocol(loop), sock=sock)
        assert ct.get_extra_info("peername") == path
        assert ct.get_extra_info("socket").fileno() == sock.fileno()
        ct.write(b"over a given sock")
        ct.write_eof()
        assert await proto.lost is None
        assert bytes(proto.data) == b"over a given sock"
        # the transport owned the socket and closed it
        assert sock.fileno() == -1
        server.close()
        await server.wait_closed()
    arun(loop, main())


def test_connection_from_socketpair(loop):
    async def main():
        a, b = socket.socketpair()
        with b:
            t, proto = await loop.create_unix_connection(
                lambda: RecordingProtocol(loop), sock=a)
            assert isinstance(t, asyncio.Transport)
            assert t.get_extra_info("sockname") == ""
            assert t.get_extra_info("peername") == ""
            t.write(b"to b")
            b.settimeout(5)
            assert await loop.run_in_executor(None, b.recv, 100) == b"to b"
            b.sendall(b"to a")
            assert await proto.wait_bytes(4) == b"to a"
            b.shutdown(socket.SHUT_WR)
            await proto.eof
            assert await proto.lost is None
            assert proto.lifecycle() == ["made", "eof", "lost"]
            assert a.fileno() == -1
            assert b.recv(100) == b""
    arun(loop, main())


# ------------------------------------------------------------ abstract


@needs_linux
def test_abstract_namespace(loop):
    async def main():
        name = abstract_name()
        bname = name.encode()
        factory = echo_factory(loop)
        server = await loop.create_unix_server(factory, name)
        assert server.sockets[0].getsockname() == bname
        ct, client = await loop.create_unix_connection(
            lambda: RecordingProtocol(loop), name)
        peer = await factory.nth(0)
        # abstract addresses come back as bytes with the leading NUL
        assert ct.get_extra_info("peername") == bname
        assert ct.get_extra_info("sockname") == ""
        assert peer.transport.get_extra_info("sockname") == bname
        assert peer.transport.get_extra_info("peername") == ""
        ct.write(b"abstract")
        ct.write_eof()
        assert await client.lost is None
        assert bytes(client.data) == b"abstract"
        server.close()
        await server.wait_closed()
        with pytest.raises(ConnectionRefusedError):
            connect_blocking(name)
    arun(loop, main())


@needs_linux
def test_abstract_namespace_sock(loop):
    async def main():
        name = abstract_name()
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(name)
        server = await loop.create_unix_server(echo_factory(loop), sock=lsock)
        csock = connect_blocking(name)
        ct, client = await loop.create_unix_connection(
            lambda: RecordingProtocol(loop), sock=csock)
        assert ct.get_extra_info("peername") == name.encode()
        ct.write(b"abstract sock")
        ct.write_eof()
        assert await client.lost is None
        assert bytes(client.data) == b"abstract sock"
        server.close()
        await server.wait_closed()
    arun(loop, main())


# ------------------------------------------------------------ server options


def test_start_serving_false_and_backlog(loop, path):
    async def main():
        server = await loop.create_unix_server(
            echo_factory(loop), path, backlog=5, start_serving=False)
        assert not server.is_serving()
        assert server.sockets[0].getsockname() == path
        if HAS_ACCEPTCONN:
            assert server.sockets[0].getsockopt(
                socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0
        # bound but not listening yet
        with pytest.raises(ConnectionRefusedError):
            connect_blocking(path)
        await server.start_serving()
        assert server.is_serving()
        await server.start_serving()  # idempotent
        assert await echo_roundtrip(loop, path) == b"ping"
        server.close()
        assert not server.is_serving()
        await server.wait_closed()
    arun(loop, main())


def test_stale_socket_file_is_replaced(loop, path):
    async def main():
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(path)
        stale.close()
        assert os.path.exists(path)
        server = await loop.create_unix_server(echo_factory(loop), path)
        assert await echo_roundtrip(loop, path) == b"ping"
        server.close()
        await server.wait_closed()
    arun(loop, main())


def test_regular_file_at_path_is_not_replaced(loop, path):
    async def main():
        with open(path, "wb") as f:
            f.write(b"keep me")
        with pytest.raises(OSError) as info:
            await loop.create_unix_server(echo_factory(loop), path)
        assert type(info.value) is OSError
        assert info.value.errno == errno.EADDRINUSE
        assert str(info.value) == (
            f"[Errno {errno.EADDRINUSE}] Address {path!r} is already in use")
        with open(path, "rb") as f:
            assert f.read() == b"keep me"
    arun(loop, main())


@needs_313
def test_cleanup_socket_default_removes_file(loop, path):
    async def main():
        server = await loop.create_unix_server(echo_factory(loop), path)
        assert os.path.exists(path)
        server.close()
        assert not os.path.exists(path)
        await server.wait_closed()
    arun(loop, main())


@needs_313
def test_cleanup_socket_false_keeps_file(loop, path):
    async def main():
        server = await loop.create_unix_server(
            echo_factory(loop), path, cleanup_socket=False)
        server.close()
        await server.wait_closed()
        assert os.path.exists(path)
        with pytest.raises(ConnectionRefusedError):
            connect_blocking(path)
    arun(loop, main())


@needs_313
def test_cleanup_socket_applies_to_sock_servers(loop, path):
    async def main():
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        server = await loop.create_unix_server(echo_factory(loop), sock=sock)
        server.close()
        assert not os.path.exists(path)
        await server.wait_closed()
    arun(loop, main())


@needs_313
def test_cleanup_socket_spares_a_replaced_file(loop, path):
    """Only the file the server bound is removed, not a newer one."""
    async def main():
        server = await loop.create_unix_server(echo_factory(loop), path)
        os.unlink(path)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
            other.bind(path)
            server.close()
            await server.wait_closed()
            assert os.path.exists(path)
    arun(loop, main())


def test_server_close_stops_accepting(loop, path):
    async def main():
        server = await loop.create_unix_server(echo_factory(loop), path)
        assert await echo_roundtrip(loop, path) == b"ping"
        server.close()
        await server.wait_closed()
        assert not server.is_serving()
        assert server.sockets == ()
        # 3.13 removes the socket file (cleanup_socket), older versions
        # leave it behind with nobody listening.
        expected = (FileNotFoundError if sys.version_info >= (3, 13)
                    else ConnectionRefusedError)
        with pytest.raises(expected):
            connect_blocking(path)
        with pytest.raises(expected):
            await loop.create_unix_connection(asyncio.Protocol, path)
    arun(loop, main())


# ------------------------------------------------------------ big transfers


def test_4mib_both_ways(loop, path):
    async def main():
        factory = echo_factory(loop)
        server = await loop.create_unix_server(factory, path)
        data = payload(4 * 1024 * 1024, seed=7)
        proto = await client_echo(loop, path, data)
        peer = await factory.nth(0)
        assert await peer.lost is None
        assert len(peer.data) == len(data)
        assert sha256(peer.data) == sha256(data)
        assert len(proto.data) == len(data)
        assert sha256(proto.data) == sha256(data)
        server.close()
        await server.wait_closed()
    arun(loop, main(), timeout=20)


def test_100_concurrent_connections(loop, path):
    async def main():
        factory = echo_factory(loop)
        server = await loop.create_unix_server(factory, path, backlog=256)
        datas = [payload(1000 + 37 * i, seed=i) for i in range(100)]
        protos = await asyncio.gather(
            *(client_echo(loop, path, d) for d in datas))
        for proto, data in zip(protos, datas):
            assert bytes(proto.data) == data
        assert len(factory.protocols) == 100
        for peer in factory.protocols:
            assert await peer.lost is None
        assert sorted(bytes(p.data) for p in factory.protocols) == sorted(
            datas)
        server.close()
        await server.wait_closed()
    arun(loop, main(), timeout=20)


# ------------------------------------------------------------ half close


def test_half_close(loop, path):
    async def main():
        factory = ProtocolFactory(loop, eof_result=True)
        server = await loop.create_unix_server(factory, path)
        ct, client = await loop.create_unix_connection(
            lambda: RecordingProtocol(loop), path)
        ct.write(b"request")
        ct.write_eof()
        with pytest.raises(RuntimeError):
            ct.write(b"more")
        peer = await factory.nth(0)
        await peer.eof
        assert bytes(peer.data) == b"request"
        assert peer.lifecycle() == ["made", "eof"]
        assert not peer.transport.is_closing()
        peer.transport.write(b"response")
        assert await client.wait_bytes(8) == b"response"
        assert not client.eof.done()
        peer.transport.close()
        assert await client.lost is None
        assert await peer.lost is None
        assert bytes(client.data) == b"response"
        assert client.lifecycle() == ["made", "eof", "lost"]
        assert peer.lifecycle() == ["made", "eof", "lost"]
        server.close()
        await server.wait_closed()
    arun(loop, main())


# ------------------------------------------------------------ errors


def test_connect_missing_path(loop, sock_dir):
    async def main():
        with pytest.raises(FileNotFoundError):
            await loop.create_unix_connection(
                asyncio.Protocol, str(sock_dir / "missing.sock"))
    arun(loop, main())


def test_connect_without_listener_is_refused(loop, path):
    async def main():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.bind(path)  # no listen()
            with pytest.raises(ConnectionRefusedError):
                await loop.create_unix_connection(asyncio.Protocol, path)
        # the socket file outlives the socket: still refused
        with pytest.raises(ConnectionRefusedError):
            await loop.create_unix_connection(asyncio.Protocol, path)
    arun(loop, main())


@pytest.mark.parametrize("method",
                         ["create_unix_connection", "create_unix_server"])
def test_path_and_sock_is_value_error(loop, path, method):
    async def main():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            with pytest.raises(ValueError, match="path and sock can not be"):
                await getattr(loop, method)(asyncio.Protocol, path, sock=s)
            assert s.fileno() >= 0
    arun(loop, main())


@pytest.mark.parametrize("method, message", [
    ("create_unix_connection", "no path and sock were specified"),
    ("create_unix_server", "path was not specified, and no sock specified"),
], ids=["connection", "server"])
def test_no_path_no_sock_is_value_error(loop, method, message):
    async def main():
        with pytest.raises(ValueError, match=message):
            await getattr(loop, method)(asyncio.Protocol)
    arun(loop, main())


@pytest.mark.parametrize("method",
                         ["create_unix_connection", "create_unix_server"])
@pytest.mark.parametrize("family, type_", [
    (socket.AF_INET, socket.SOCK_STREAM),
    (socket.AF_UNIX, socket.SOCK_DGRAM),
], ids=["inet", "dgram"])
def test_sock_of_wrong_kind_is_value_error(loop, method, family, type_):
    async def main():
        with socket.socket(family, type_) as s:
            with pytest.raises(ValueError,
                               match="A UNIX Domain Stream Socket was expected"):
                await getattr(loop, method)(asyncio.Protocol, sock=s)
    arun(loop, main())


@pytest.mark.parametrize("method",
                         ["create_unix_connection", "create_unix_server"])
def test_ssl_handshake_timeout_without_ssl(loop, path, method):
    """Checked before anything touches the path."""
    async def main():
        with pytest.raises(ValueError,
                           match="ssl_handshake_timeout is only meaningful"):
            await getattr(loop, method)(asyncio.Protocol, path,
                                        ssl_handshake_timeout=1.0)
        assert not os.path.exists(path)
    arun(loop, main())


@pytest.mark.skipif(sys.version_info < (3, 11),
                    reason="ssl_shutdown_timeout is new in 3.11")
@pytest.mark.parametrize("method",
                         ["create_unix_connection", "create_unix_server"])
def test_ssl_shutdown_timeout_without_ssl(loop, path, method):
    async def main():
        with pytest.raises(ValueError,
                           match="ssl_shutdown_timeout is only meaningful"):
            await getattr(loop, method)(asyncio.Protocol, path,
                                        ssl_shutdown_timeout=1.0)
        assert not os.path.exists(path)
    arun(loop, main())


def test_server_hostname_without_ssl(loop, path):
    async def main():
        with pytest.raises(ValueError,
                           match="server_hostname is only meaningful"):
            await loop.create_unix_connection(asyncio.Protocol, path,
                                              server_hostname="example")
    arun(loop, main())


# ------------------------------------------------------------ streams


def test_streams_end_to_end(loop, path):
    async def handle(reader, writer):
        while line := await reader.readline():
            writer.write(line.upper())
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_unix_server(handle, path)
        reader, writer = await asyncio.open_unix_connection(path)
        assert writer.get_extra_info("peername") == path
        for line in (b"first line\n", b"second\n", b"x" * 10000 + b"\n"):
            writer.write(line)
            await writer.drain()
            assert await reader.readline() == line.upper()
        writer.write_eof()
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
    arun(loop, main())


# ------------------------------------------------------------ BufferedProtocol


class ChunkedBufferProtocol(asyncio.BufferedProtocol):
    """Hands out a small buffer and records every fill."""

    def __init__(self, loop):
        self.buf = bytearray(4096)
        self.data = bytearray()
        self.events = []
        self.hints = []
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.events.append("made")

    def get_buffer(self, sizehint):
        self.hints.append(sizehint)
        return memoryview(self.buf)

    def buffer_updated(self, nbytes):
        assert 0 < nbytes <= len(self.buf)
        self.data += self.buf[:nbytes]
        if self.events[-1] != "data":
            self.events.append("data")

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)


def test_buffered_protocol(loop, path):
    class Sender(RecordingProtocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.write(data)
            transport.close()

    data = payload(256 * 1024, seed=3)

    async def main():
        server = await loop.create_unix_server(ProtocolFactory(loop, Sender),
                                               path)
        _, proto = await loop.create_unix_connection(
            lambda: ChunkedBufferProtocol(loop), path)
        assert await proto.lost is None
        assert proto.events == ["made", "data", "eof", "lost"]
        assert len(proto.data) == len(data)
        assert sha256(proto.data) == sha256(data)
        assert all(isinstance(h, int) for h in proto.hints)
        server.close()
        await server.wait_closed()
    arun(loop, main())


# ------------------------------------------------------------ fd hygiene


def test_no_fd_leak(loop, path):
    if open_fd_count() is None:
        pytest.skip("needs /proc/self/fd")

    async def cycle():
        server = await loop.create_unix_server(echo_factory(loop), path)
        proto = await client_echo(loop, path, b"fd check")
        assert bytes(proto.data) == b"fd check"
        assert await echo_roundtrip(loop, path) == b"ping"
        server.close()
        await server.wait_closed()
        await settle()

    async def main():
        errors = catch_loop_errors(loop)
        # warm up lazily created per-loop resources (executor, libuv...)
        await cycle()
        gc.collect()
        before = open_fd_count()
        for _ in range(3):
            await cycle()
        gc.collect()
        assert open_fd_count() == before
        assert errors == []
    arun(loop, main())
