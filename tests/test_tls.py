"""TLS (``ssl=``) on the loop's stream transports.

create_connection / create_server / create_unix_* / connect_accepted_socket
with ssl=, loop.start_tls() and StreamWriter.start_tls(), asyncio streams
over TLS, the argument errors asyncio raises, handshake failures and
timeouts, flow control through the TLS layer and the shutdown paths
(close_notify, abort).

Reference behaviour is the stdlib loop's.  Its TLS layer (asyncio.sslproto)
was rewritten in 3.11: 3.10 has the old implementation, and where the two
differ observably the tests branch on sys.version_info.

Certificates come from trustme: one CA the clients trust, with a server
certificate for localhost / 127.0.0.1 / ::1, and a second CA nobody trusts.
"""

import asyncio
import gc
import pathlib
import re
import shutil
import socket
import ssl
import sys
import tempfile
import types

import pytest
import trustme

from _util import (
    LOCALHOST,
    ProtocolFactory,
    RecordingProtocol,
    arun,
    catch_loop_errors,
    open_fd_count,
    payload,
    sha256,
    tcp_server,
)

pytestmark = pytest.mark.timeout(60)

PY311 = sys.version_info >= (3, 11)
MiB = 1024 * 1024
HOSTNAME = "localhost"

needs_unix = pytest.mark.skipif(sys.platform == "win32",
                                reason="asyncio has no Unix sockets on Windows")
needs_311 = pytest.mark.skipif(not PY311, reason="new in Python 3.11")

# What the peer of a TLS close() sees.  3.11+: eof_received() (the
# close_notify) then connection_lost(None).  3.10's sslproto answers a
# close_notify by closing without calling eof_received(); whether a side
# sees eof_received() there depends on whether the raw EOF is read before
# the raw transport is closed, so both shapes are accepted on 3.10.
if PY311:
    CLEAN_CLOSE_LIFECYCLES = (["made", "eof", "lost"],)
else:
    CLEAN_CLOSE_LIFECYCLES = (["made", "lost"], ["made", "eof", "lost"])


# ------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def tls():
    """ca / cert; server, client (trusts ca) and untrusted (trusts another
    CA) SSLContexts."""
    ca = trustme.CA()
    cert = ca.issue_cert(HOSTNAME, "127.0.0.1", "::1")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(server)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client)
    rogue_ca = trustme.CA()
    untrusted = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    rogue_ca.configure_trust(untrusted)
    return types.SimpleNamespace(ca=ca, cert=cert, server=server,
                                 client=client, untrusted=untrusted)


@pytest.fixture
def sock_dir(tmp_path):
    """A directory short enough for AF_UNIX paths (sun_path is ~100 bytes)."""
    if len(str(tmp_path)) < 80:
        yield tmp_path
        return
    short = tempfile.mkdtemp(dir="/tmp")
    yield pathlib.Path(short)
    shutil.rmtree(short, ignore_errors=True)


# ------------------------------------------------------------ helpers


async def tls_server(loop, tls, factory=None, **kwargs):
    """create_server(ssl=tls.server) on loopback: (server, port, factory)."""
    if factory is None:
        factory = ProtocolFactory(loop)
    server, port = await tcp_server(loop, factory, ssl=tls.server, **kwargs)
    return server, port, factory


async def tls_server_plain(loop):
    """A plain (no TLS) create_server: (server, port, factory)."""
    factory = ProtocolFactory(loop)
    server, port = await tcp_server(loop, factory)
    return server, port, factory


async def tls_connect(loop, tls, port, cls=RecordingProtocol, **kwargs):
    """create_connection(ssl=tls.client) to 127.0.0.1:port: (transport,
    protocol)."""
    kwargs.setdefault("ssl", tls.client)
    kwargs.setdefault("server_hostname", HOSTNAME)
    return await loop.create_connection(lambda: cls(loop), LOCALHOST, port,
                                        **kwargs)


async def tls_pair(loop, tls, client_cls=RecordingProtocol,
                   server_factory=None):
    """A connected TLS (client_proto, server_proto, server) triple."""
    server, port, factory = await tls_server(loop, tls, server_factory)
    _, client = await tls_connect(loop, tls, port, client_cls)
    peer = await factory.nth(0)
    await client.made
    return client, peer, server


async def roundtrip(writer_proto, reader_proto, data):
    """writer_proto writes `data`; reader_proto receives exactly it."""
    start = len(reader_proto.data)
    writer_proto.transport.write(data)
    got = await reader_proto.wait_bytes(start + len(data))
    assert got[start:] == data


async def settle(loop, rounds=10):
    """Let pending close/connection_lost callbacks run."""
    for _ in range(rounds):
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    gc.collect()


async def close_pair(client, peer, server):
    client.transport.close()
    assert await client.lost is None
    assert await peer.lost is None
    server.close()
    await server.wait_closed()


class SilentServer:
    """A listening TCP socket nobody accepts on: the kernel completes the
    TCP handshake, but a TLS handshake against it never progresses."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((LOCALHOST, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()


async def read_raw_until_closed(loop, sock):
    """Read a non-blocking socket until EOF or reset; return what came."""
    chunks = []
    while True:
        try:
            chunk = await loop.sock_recv(sock, 65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


class FlowProtocol(RecordingProtocol):
    """Records the write buffer size seen at each pause/resume."""

    def __init__(self, loop, **kwargs):
        super().__init__(loop, **kwargs)
        self.flow = []
        self.resumed = loop.create_future()

    def pause_writing(self):
        super().pause_writing()
        self.flow.append(("pause", self.transport.get_write_buffer_size()))

    def resume_writing(self):
        super().resume_writing()
        self.flow.append(("resume", self.transport.get_write_buffer_size()))
        if not self.resumed.done():
            self.resumed.set_result(None)


class BufferedRecorder(asyncio.BufferedProtocol):
    """A BufferedProtocol with a deliberately small buffer; records the
    callbacks and the bytes it was given."""

    def __init__(self, loop, bufsize=1000):
        self.loop = loop
        self.transport = None
        self.buf = bytearray(bufsize)
        self.data = bytearray()
        self.events = []
        self.made = loop.create_future()
        self.lost = loop.create_future()
        self._want = None

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport
        self.made.set_result(transport)

    def get_buffer(self, sizehint):
        self.events.append("get_buffer")
        # A memoryview, not the bytearray itself: 3.11+'s sslproto fills
        # the buffer in several reads through buf[offset:], which for a
        # bytearray is a copy (the bytes after the first read would be lost).
        return memoryview(self.buf)

    def buffer_updated(self, nbytes):
        self.events.append("buffer_updated")
        assert 0 < nbytes <= len(self.buf)
        self.data += self.buf[:nbytes]
        self._check()

    def data_received(self, data):  # pragma: no cover - must not be used
        self.events.append("data_received")

    def eof_received(self):
        self.events.append("eof")
        self._check()

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)
        self._check()

    def _check(self):
        if self._want is None or self._want[1].done():
            return
        if len(self.data) >= self._want[0] or self.lost.done():
            self._want[1].set_result(None)

    async def wait_bytes(self, n):
        if len(self.data) < n and not self.lost.done():
            self._want = (n, self.loop.create_future())
            await self._want[1]
        return bytes(self.data)

    def lifecycle(self):
        return [e for e in self.events if e in ("made", "eof", "lost")]


# ------------------------------------------------------------ create_connection / create_server


def test_create_connection_and_server_roundtrip(loop, tls):
    async def main():
        errors = catch_loop_errors(loop)
        server, port, factory = await tls_server(loop, tls)
        transport, client = await tls_connect(loop, tls, port)
        # connection_made already ran when create_connection() returns,
        # i.e. after the handshake
        assert client.events == ["made"]
        assert client.transport is transport
        peer = await factory.nth(0)
        assert factory.protocols == [peer]
        await roundtrip(client, peer, b"hello over tls")
        await roundtrip(peer, client, b"and back")
        await roundtrip(client, peer, payload(100_000, seed=1))
        await close_pair(client, peer, server)
        assert errors == []
    arun(loop, main())


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_host_is_the_implied_server_hostname(loop, tls, host):
    """Without server_hostname the host is what the certificate is checked
    against: an IP SAN for 127.0.0.1, a DNS SAN for localhost."""
    async def main():
        factory = ProtocolFactory(loop)
        server = await loop.create_server(factory, host, 0, ssl=tls.server)
        port = server.sockets[0].getsockname()[1]
        transport, client = await loop.create_connection(
            lambda: RecordingProtocol(loop), host, port, ssl=tls.client)
        sslobj = transport.get_extra_info("ssl_object")
        assert sslobj.server_hostname == host
        peer = await factory.nth(0)
        await roundtrip(client, peer, b"implied")
        await close_pair(client, peer, server)
    arun(loop, main())


def test_ssl_true_uses_a_default_context_that_rejects_the_test_ca(loop, tls):
    async def main():
        errors = catch_loop_errors(loop)
        server, port, factory = await tls_server(loop, tls)
        client_factory = ProtocolFactory(loop)
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            await loop.create_connection(client_factory, LOCALHOST, port,
                                         ssl=True)
        assert "certificate verify failed" in str(info.value)
        assert all(p.events == [] for p in client_factory.protocols)
        await settle(loop)
        assert all(p.events == [] for p in factory.protocols)
        # the server is unaffected
        n = len(factory.protocols)
        _, client = await tls_connect(loop, tls, port)
        peer = await factory.nth(n)
        await roundtrip(client, peer, b"still serving")
        await close_pair(client, peer, server)
        assert errors == []
    arun(loop, main())


def test_mutual_tls_peercert_on_the_server_side(loop, tls):
    async def main():
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.cert.configure_cert(server_ctx)
        tls.ca.configure_trust(server_ctx)
        server_ctx.verify_mode = ssl.CERT_REQUIRED
        client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        tls.ca.configure_trust(client_ctx)
        tls.ca.issue_cert("client@example.org").configure_cert(client_ctx)

        factory = ProtocolFactory(loop)
        server, port = await tcp_server(loop, factory, ssl=server_ctx)
        _, client = await tls_connect(loop, tls, port, ssl=client_ctx)
        peer = await factory.nth(0)
        cert = peer.transport.get_extra_info("peercert")
        assert isinstance(cert, dict)
        assert ("email", "client@example.org") in cert["subjectAltName"]
        await roundtrip(client, peer, b"mutual")
        await close_pair(client, peer, server)
    arun(loop, main())


# ------------------------------------------------------------ unix sockets


@needs_unix
def test_unix_connection_and_server(loop, tls, sock_dir):
    path = str(sock_dir / "tls.sock")

    async def main():
        errors = catch_loop_errors(loop)
        factory = ProtocolFactory(loop)
        server = await loop.create_unix_server(factory, path, ssl=tls.server)
        transport, client = await loop.create_unix_connection(
            lambda: RecordingProtocol(loop), path, ssl=tls.client,
            server_hostname=HOSTNAME)
        assert isinstance(transport.get_extra_info("ssl_object"),
                          ssl.SSLObject)
        assert transport.get_extra_info("sslcontext") is tls.client
        assert transport.get_extra_info("socket").family == socket.AF_UNIX
        peer = await factory.nth(0)
        assert peer.transport.get_extra_info("ssl_object").server_side
        await roundtrip(client, peer, b"unix tls")
        await roundtrip(peer, client, payload(300_000, seed=2))
        await close_pair(client, peer, server)
        assert errors == []
    arun(loop, main())


@needs_unix
def test_unix_streams(loop, tls, sock_dir):
    path = str(sock_dir / "tls.sock")

    async def handler(reader, writer):
        line = await reader.readline()
        writer.write(line.upper())
        await writer.drain()
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_unix_server(handler, path, ssl=tls.server)
        reader, writer = await asyncio.open_unix_connection(
            path, ssl=tls.client, server_hostname=HOSTNAME)
        writer.write(b"unix stream\n")
        assert await reader.readline() == b"UNIX STREAM\n"
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
    arun(loop, main())


@needs_unix
def test_unix_untrusted_certificate(loop, tls, sock_dir):
    path = str(sock_dir / "tls.sock")

    async def main():
        factory = ProtocolFactory(loop)
        server = await loop.create_unix_server(factory, path, ssl=tls.server)
        with pytest.raises(ssl.SSLCertVerificationError):
            await loop.create_unix_connection(
                lambda: RecordingProtocol(loop), path, ssl=tls.untrusted,
                server_hostname=HOSTNAME)
        server.close()
        await server.wait_closed()
    arun(loop, main())


# ------------------------------------------------------------ connect_accepted_socket


def test_connect_accepted_socket_is_the_server_side(loop, tls):
    async def main():
        errors = catch_loop_errors(loop)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as lsock:
            lsock.bind((LOCALHOST, 0))
            lsock.listen(8)
            lsock.setblocking(False)
            port = lsock.getsockname()[1]

            async def accept_side():
                conn, _ = await loop.sock_accept(lsock)
                return await loop.connect_accepted_socket(
                    lambda: RecordingProtocol(loop), conn, ssl=tls.server)

            (stransport, peer), (ctransport, client) = await asyncio.gather(
                accept_side(), tls_connect(loop, tls, port))
        assert peer.events == ["made"]
        sslobj = stransport.get_extra_info("ssl_object")
        assert isinstance(sslobj, ssl.SSLObject)
        assert sslobj.server_side is True
        assert stransport.get_extra_info("sslcontext") is tls.server
        assert ctransport.get_extra_info("ssl_object").server_side is False
        await roundtrip(client, peer, b"accepted")
        await roundtrip(peer, client, b"answered")
        client.transport.close()
        assert await client.lost is None
        assert await peer.lost is None
        assert errors == []
    arun(loop, main())


# ------------------------------------------------------------ streams


async def start_tls_streams_server(handler, tls, **kwargs):
    server = await asyncio.start_server(handler, LOCALHOST, 0, ssl=tls.server,
                                        **kwargs)
    return server, server.sockets[0].getsockname()[1]


def test_streams_readline_echo(loop, tls):
    async def upper_lines(reader, writer):
        while True:
            line = await reader.readline()
            if not line:
                break
            writer.write(line.upper())
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        errors = catch_loop_errors(loop)
        server, port = await start_tls_streams_server(upper_lines, tls)
        reader, writer = await asyncio.open_connection(
            LOCALHOST, port, ssl=tls.client, server_hostname=HOSTNAME)
        assert isinstance(writer.get_extra_info("ssl_object"), ssl.SSLObject)
        assert writer.get_extra_info("peername") == (LOCALHOST, port)
        assert not writer.can_write_eof()
        for i in range(20):
            writer.write(b"line %d\n" % i)
            await writer.drain()
            assert await reader.readline() == b"LINE %d\n" % i
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        assert errors == []
    arun(loop, main())


def test_streams_close_sends_close_notify_peer_reads_clean_eof(loop, tls):
    async def main():
        got = loop.create_future()

        async def handler(reader, writer):
            try:
                data = await reader.read()
            except BaseException as exc:  # pragma: no cover - failure path
                got.set_exception(exc)
            else:
                got.set_result((data, reader.at_eof()))
            writer.close()
            await writer.wait_closed()

        server, port = await start_tls_streams_server(handler, tls)
        reader, writer = await asyncio.open_connection(
            LOCALHOST, port, ssl=tls.client, server_hostname=HOSTNAME)
        writer.write(b"last words")
        writer.close()
        await writer.wait_closed()
        assert await got == (b"last words", True)
        assert await reader.read() == b""
        server.close()
        await server.wait_closed()
    arun(loop, main())


def test_streams_8_mib_each_way_concurrently(loop, tls):
    size = 8 * MiB
    up = payload(size, seed=31)
    down = payload(size, seed=32)

    async def main():
        errors = catch_loop_errors(loop)
        server_got = loop.create_future()

        async def handler(reader, writer):
            async def send():
                writer.write(down)  # one big write
                await writer.drain()

            _, got = await asyncio.gather(send(), reader.readexactly(size))
            server_got.set_result(sha256(got))
            assert await reader.read() == b""
            writer.close()
            await writer.wait_closed()

        server, port = await start_tls_streams_server(handler, tls)
        reader, writer = await asyncio.open_connection(
            LOCALHOST, port, ssl=tls.client, server_hostname=HOSTNAME)

        async def send():
            view = memoryview(up)
            for i in range(0, size, 256 * 1024):  # many drained writes
                writer.write(view[i:i + 256 * 1024])
                await writer.drain()

        _, got = await asyncio.gather(send(), reader.readexactly(size))
        assert sha256(got) == sha256(down)
        assert await server_got == sha256(up)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        assert errors == []
    arun(loop, main(), timeout=50)


def test_streams_20_concurrent_echo_connections(loop, tls):
    n = 20
    size = 256 * 1024

    async def echo(reader, writer):
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def one(port, i):
        data = payload(size, seed=100 + i)
        reader, writer = await asyncio.open_connection(
            LOCALHOST, port, ssl=tls.client, server_hostname=HOSTNAME)

        async def send():
            writer.write(data)
            await writer.drain()

        _, got = await asyncio.gather(send(), reader.readexactly(size))
        assert sha256(got) == sha256(data)
        writer.close()
        await writer.wait_closed()
        return i

    async def main():
        errors = catch_loop_errors(loop)
        server, port = await start_tls_streams_server(echo, tls)
        done = await asyncio.gather(*[one(port, i) for i in range(n)])
        assert sorted(done) == list(range(n))
        server.close()
        await server.wait_closed()
        assert errors == []
    arun(loop, main(), timeout=50)


# ------------------------------------------------------------ argument errors


def test_server_hostname_without_ssl(loop):
    async def main():
        with pytest.raises(ValueError,
                           match="^server_hostname is only meaningful with ssl$"):
            await loop.create_connection(asyncio.Protocol, LOCALHOST, 1,
                                         server_hostname=HOSTNAME)
    arun(loop, main())


def test_ssl_with_sock_and_no_server_hostname(loop, tls):
    async def main():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            with pytest.raises(
                    ValueError,
                    match="^You must set server_hostname when using ssl "
                          "without a host$"):
                await loop.create_connection(asyncio.Protocol, sock=sock,
                                             ssl=tls.client)
    arun(loop, main())


@pytest.mark.parametrize("name", ["ssl_handshake_timeout",
                                  "ssl_shutdown_timeout"])
def test_ssl_timeouts_without_ssl(loop, name):
    if name == "ssl_shutdown_timeout" and not PY311:
        pytest.skip("ssl_shutdown_timeout is new in 3.11")
    msg = f"^{name} is only meaningful with ssl$"

    async def main():
        kw = {name: 1.0}
        with pytest.raises(ValueError, match=msg):
            await loop.create_connection(asyncio.Protocol, LOCALHOST, 1, **kw)
        with pytest.raises(ValueError, match=msg):
            await loop.create_server(asyncio.Protocol, LOCALHOST, 0, **kw)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            with pytest.raises(ValueError, match=msg):
                await loop.connect_accepted_socket(asyncio.Protocol, sock,
                                                   **kw)
    arun(loop, main())


def test_create_server_ssl_true_is_rejected(loop):
    async def main():
        with pytest.raises(TypeError,
                           match="^ssl argument must be an SSLContext or None$"):
            await loop.create_server(asyncio.Protocol, LOCALHOST, 0, ssl=True)
    arun(loop, main())


@needs_unix
def test_unix_argument_errors(loop, tls, sock_dir):
    path = str(sock_dir / "never.sock")

    async def main():
        with pytest.raises(TypeError,
                           match="^ssl argument must be an SSLContext or None$"):
            await loop.create_unix_server(asyncio.Protocol, path, ssl=True)
        # the unix flavour of the message differs from create_connection's
        with pytest.raises(ValueError,
                           match="^you have to pass server_hostname when "
                                 "using ssl$"):
            await loop.create_unix_connection(asyncio.Protocol, path,
                                              ssl=tls.client)
        with pytest.raises(ValueError,
                           match="^server_hostname is only meaningful with ssl$"):
            await loop.create_unix_connection(asyncio.Protocol, path,
                                              server_hostname=HOSTNAME)
        with pytest.raises(ValueError,
                           match="^ssl_handshake_timeout is only meaningful "
                                 "with ssl$"):
            await loop.create_unix_server(asyncio.Protocol, path,
                                          ssl_handshake_timeout=1.0)
    arun(loop, main())


@pytest.mark.parametrize("name", ["ssl_handshake_timeout",
                                  "ssl_shutdown_timeout"])
@pytest.mark.parametrize("value", [0, -1])
def test_non_positive_ssl_timeouts(loop, tls, name, value):
    """asyncio validates these in the TLS layer itself: the message is
    sslproto's.  (It only checks them once a connection exists, so this
    uses sock= and start_tls(), where the socket stays ours.)"""
    if name == "ssl_shutdown_timeout" and not PY311:
        pytest.skip("ssl_shutdown_timeout is new in 3.11")
    msg = f"^{name} should be a positive number, got {value}$"

    async def main():
        kw = {name: value}
        with SilentServer() as silent:
            sock = socket.create_connection((LOCALHOST, silent.port))
            try:
                with pytest.raises(ValueError, match=msg):
                    await loop.create_connection(
                        asyncio.Protocol, sock=sock, ssl=tls.client,
                        server_hostname=HOSTNAME, **kw)
            finally:
                sock.close()

        # start_tls(): rejected before the transport is touched
        server, port, factory = await tls_server_plain(loop)
        _, client = await loop.create_connection(
            lambda: RecordingProtocol(loop), LOCALHOST, port)
        peer = await factory.nth(0)
        with pytest.raises(ValueError, match=msg):
            await loop.start_tls(client.transport, client, tls.client,
                                 server_hostname=HOSTNAME, **kw)
        assert not client.transport.is_closing()
        await roundtrip(client, peer, b"still plain")
        await close_pair(client, peer, server)
    arun(loop, main())


# ------------------------------------------------------------ the TLS transport


def test_transport_extra_info(loop, tls):
    async def main():
        client, peer, server = await tls_pair(loop, tls)
        t = client.transport
        port = server.sockets[0].getsockname()[1]
        assert isinstance(t, asyncio.Transport)
        assert t.get_extra_info("sslcontext") is tls.client
        sslobj = t.get_extra_info("ssl_object")
        assert isinstance(sslobj, ssl.SSLObject)
        assert sslobj.server_side is False
        assert sslobj.server_hostname == HOSTNAME
        cert = t.get_extra_info("peercert")
        assert isinstance(cert, dict)
        assert ("DNS", HOSTNAME) in cert["subjectAltName"]
        assert ("IP Address", "127.0.0.1") in cert["subjectAltName"]
        assert cert == sslobj.getpeercert()
        cipher = t.get_extra_info("cipher")
        assert isinstance(cipher, tuple) and len(cipher) == 3
        assert cipher == sslobj.cipher()
        assert t.get_extra_info("compression") == sslobj.compression()
        assert t.get_extra_info("peername") == (LOCALHOST, port)
        sockname = t.get_extra_info("sockname")
        assert sockname[0] == LOCALHOST and sockname[1] != 0
        sock = t.get_extra_info("socket")
        assert sock.family == socket.AF_INET
        assert sock.type == socket.SOCK_STREAM
        assert sock.getpeername() == (LOCALHOST, port)
        assert sock.getsockname() == sockname
        assert t.get_extra_info("no such key") is None
        assert t.get_extra_info("no such key", "dflt") == "dflt"

        s = peer.transport
        assert isinstance(s, asyncio.Transport)
        assert s.get_extra_info("sslcontext") is tls.server
        assert s.get_extra_info("ssl_object").server_side is True
        assert s.get_extra_info("peercert") is None  # no client certificate
        assert s.get_extra_info("cipher") == cipher
        assert s.get_extra_info("peername") == sockname
        assert s.get_extra_info("sockname") == (LOCALHOST, port)
        await close_pair(client, peer, server)
    arun(loop, main())


def test_write_writelines_and_write_eof(loop, tls):
    async def main():
        errors = catch_loop_errors(loop)
        client, peer, server = await tls_pair(loop, tls)
        t = client.transport
        t.write(b"a")
        t.write(bytearray(b"b"))
        t.write(memoryview(b"xcx")[1:2])
        t.writelines([b"d", bytearray(b"e"), memoryview(b"f")])
        t.write(b"")
        assert await peer.wait_bytes(6) == b"abcdef"
        with pytest.raises(TypeError,
                           match="^data: expecting a bytes-like instance, "
                                 "got str$"):
            t.write("text")
        assert t.can_write_eof() is False
        with pytest.raises(NotImplementedError):
            t.write_eof()
        assert not t.is_closing()
        # the failed calls did not break the connection
        await roundtrip(client, peer, b"after")
        await roundtrip(peer, client, b"reply")
        await close_pair(client, peer, server)
        assert errors == []
    arun(loop, main())


class _RaisesOnData(RecordingProtocol):
    def data_received(self, data):
        super().data_received(data)
        raise ValueError("app bug")


def test_data_received_error_is_fatal_and_reported(loop, tls):
    # An exception from the app's data_received() is the TLS protocol's
    # fatal error: reported once to the exception handler, the connection
    # is closed with it and the peer sees the connection end.
    async def main():
        errors = catch_loop_errors(loop)
        client, peer, server = await tls_pair(
            loop, tls, server_factory=ProtocolFactory(loop, _RaisesOnData))
        client.transport.write(b"boom")
        exc = await peer.lost
        assert isinstance(exc, ValueError) and str(exc) == "app bug"
        assert bytes(peer.data) == b"boom"
        await client.lost
        assert len(errors) == 1
        err = errors[0]
        if PY311:
            assert err["message"] == "Fatal error on SSL protocol"
        assert err["exception"] is exc
        server.close()
        await server.wait_closed()
    arun(loop, main())


def test_writes_after_close_are_dropped(loop, tls):
    # As asyncio: a write() after close() raises nothing and is not sent;
    # what was written before close() is delivered, then a clean end.
    async def main():
        errors = catch_loop_errors(loop)
        client, peer, server = await tls_pair(loop, tls)
        t = client.transport
        t.write(b"before")
        t.close()
        for _ in range(3):
            t.write(b"after")
        assert await client.lost is None
        assert await peer.lost is None
        assert bytes(peer.data) == b"before"
        server.close()
        await server.wait_closed()
        assert errors == []
    arun(loop, main())


def test_large_writes_interleaved_with_reads(loop, tls):
    # Writes queued from data_received() while the peer writes back: the
    # backlog, partial records and pause/resume_writing of the TLS layer,
    # checked by hash in both directions.
    size = 3 * MiB
    out_c, out_p = payload(size, 1), payload(size, 2)

    async def main():
        errors = catch_loop_errors(loop)
        client, peer, server = await tls_pair(loop, tls)
        client.transport.set_write_buffer_limits(high=64 * 1024)
        for i in range(0, size, 256 * 1024):
            client.transport.write(out_c[i:i + 256 * 1024])
            peer.transport.write(memoryview(out_p)[i:i + 256 * 1024])
        got_p = await peer.wait_bytes(size)
        got_c = await client.wait_bytes(size)
        assert sha256(got_p) == sha256(out_c)
        assert sha256(got_c) == sha256(out_p)
        await close_pair(client, peer, server)
        assert errors == []
    arun(loop, main())


def test_close_is_closing_and_callbacks(loop, tls):
    async def main():
        client, peer, server = await tls_pair(loop, tls)
        t = client.transport
        assert not t.is_closing()
        t.close()
        assert t.is_closing()
        t.close()  # idempotent
        assert await client.lost is None
        assert await peer.lost is None
        assert client.lifecycle() in CLEAN_CLOSE_LIFECYCLES
        assert peer.lifecycle() in CLEAN_CLOSE_LIFECYCLES
        server.close()
        await server.wait_closed()
    arun(loop, main())


def test_set_protocol_and_get_protocol(loop, tls):
    async def main():
        client, peer, server = await tls_pair(loop, tls)
        t = client.transport
        assert t.get_protocol() is client
        await roundtrip(peer, client, b"first")
        other = RecordingProtocol(loop)
        other.transport = t
        t.set_protocol(other)
        assert t.get_protocol() is other
        await roundtrip(peer, other, b"second")
        assert bytes(client.data) == b"first"
        t.close()
        assert await other.lost is None
        assert await peer.lost is None
        assert not client.lost.done()
        server.close()
        await server.wait_closed()
    arun(loop, main())


def test_pause_and_resume_reading(loop, tls):
    async def main():
        client, peer, server = await tls_pair(loop, tls)
        s = peer.transport
        assert s.is_reading()
        s.pause_reading()
        assert not s.is_reading()
        data = payload(64 * 1024, seed=3)
        client.transport.write(data)
        await asyncio.sleep(0.2)
        assert peer.data == b""  # nothing is delivered while paused
        s.resume_reading()
        assert s.is_reading()
        assert await peer.wait_bytes(len(data)) == data
        await roundtrip(client, peer, b"more")
        await close_pair(client, peer, server)
    arun(loop, main())


def test_write_flow_control_with_a_slow_reader(loop, tls):
    async def main():
        errors = catch_loop_errors(loop)
        client, peer, server = await tls_pair(
            loop, tls, client_cls=FlowProtocol)
        t = client.transport
        t.set_write_buffer_limits(high=64 * 1024, low=16 * 1024)
        assert t.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        assert t.get_write_buffer_size() == 0
        peer.transport.pause_reading()
        chunk = payload(256 * 1024, seed=4)
        sent = 0
        while not client.flow:
            t.write(chunk)
            sent += len(chunk)
            assert sent <= 256 * MiB, "pause_writing() never came"
        # pause_writing() ran synchronously inside the write() that crossed
        # the high-water mark
        kind, size = client.flow[0]
        assert kind == "pause"
        assert size >= 64 * 1024
        assert t.get_write_buffer_size() >= 64 * 1024
        # the reader drains: the writer is resumed
        peer.transport.resume_reading()
        await client.resumed
        got = await peer.wait_bytes(sent)
        assert len(got) == sent
        assert sha256(got) == sha256(chunk * (sent // len(chunk)))
        kinds = [k for k, _ in client.flow]
        assert kinds == ["pause", "resume"] * (len(kinds) // 2)
        for k, size in client.flow:
            if k == "resume":
                assert size <= 16 * 1024
        assert t.get_write_buffer_size() == 0
        await close_pair(client, peer, server)
        assert errors == []
    arun(loop, main(), timeout=30)


# ------------------------------------------------------------ BufferedProtocol


def test_buffered_protocol_on_both_sides(loop, tls):
    up = payload(MiB, seed=5)
    down = payload(MiB + 123, seed=6)

    class Server(BufferedRecorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.write(down)

    async def main():
        errors = catch_loop_errors(loop)
        factory = ProtocolFactory(loop, Server)
        server, port, _ = await tls_server(loop, tls, factory)
        transport, client = await tls_connect(loop, tls, port,
                                              cls=BufferedRecorder)
        transport.write(up)
        peer = await factory.nth(0)
        assert sha256(await client.wait_bytes(len(down))) == sha256(down)
        assert sha256(await peer.wait_bytes(len(up))) == sha256(up)
        for proto in (client, peer):
            assert "data_received" not in proto.events
            # every buffer_updated() follows a get_buffer()
            calls = [e for e in proto.events
                     if e in ("get_buffer", "buffer_updated")]
            for i, e in enumerate(calls):
                if e == "buffer_updated":
                    assert calls[i - 1] == "get_buffer"
        transport.close()
        assert await client.lost is None
        assert await peer.lost is None
        assert client.lifecycle() in CLEAN_CLOSE_LIFECYCLES
        assert peer.lifecycle() in CLEAN_CLOSE_LIFECYCLES
        server.close()
        await server.wait_closed()
        assert errors == []
    arun(loop, main())


# ------------------------------------------------------------ handshake failures


def test_untrusted_ca_then_server_keeps_serving(loop, tls):
    async def main():
        errors = catch_loop_errors(loop)
        server, port, factory = await tls_server(loop, tls)
        client_factory = ProtocolFactory(loop)
        for _ in range(3):
            with pytest.raises(ssl.SSLCertVerificationError) as info:
                await loop.create_connection(
                    client_factory, LOCALHOST, port, ssl=tls.untrusted,
                    server_hostname=HOSTNAME)
            assert "certificate verify failed" in str(info.value)
        # no connection_made() for a failed handshake, on either side
        assert all(p.events == [] for p in client_factory.protocols)
        await settle(loop)
        assert all(p.events == [] for p in factory.protocols)
        n = len(factory.protocols)
        _, client = await tls_connect(loop, tls, port)
        peer = await factory.nth(n)
        await roundtrip(client, peer, b"good client")
        await close_pair(client, peer, server)
        assert errors == []
    arun(loop, main())


def test_wrong_server_hostname(loop, tls):
    async def main():
        server, port, factory = await tls_server(loop, tls)
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            await tls_connect(loop, tls, port, server_hostname="example.com")
        assert "Hostname mismatch" in info.value.verify_message
        await settle(loop)
        assert all(p.events == [] for p in factory.protocols)
        n = len(factory.protocols)
        _, client = await tls_connect(loop, tls, port)
        peer = await factory.nth(n)
        await roundtrip(client, peer, b"right name")
        await close_pair(client, peer, server)
    arun(loop, main())


HANDSHAKE_TIMEOUT_MSG = ("^SSL handshake is taking longer than 0.2 seconds: "
                         "aborting the connection$")


def test_client_handshake_timeout_raises_and_leaks_nothing(loop, tls):
    """asyncio reports a handshake timeout as ConnectionAbortedError (not
    TimeoutError), on every version from 3.10 to 3.13."""
    async def attempt(port, factory):
        with pytest.raises(ConnectionAbortedError, match=HANDSHAKE_TIMEOUT_MSG):
            await loop.create_connection(
                factory, LOCALHOST, port, ssl=tls.client,
                server_hostname=HOSTNAME, ssl_handshake_timeout=0.2)

    async def main():
        errors = catch_loop_errors(loop)
        factory = ProtocolFactory(loop)
        with SilentServer() as silent:
            await attempt(silent.port, factory)  # warm-up
            await settle(loop)
            before = open_fd_count()
            for _ in range(3):
                await attempt(silent.port, factory)
            await settle(loop)
            if before is not None:
                assert open_fd_count() == before
        assert all(p.events == [] for p in factory.protocols)
        # the loop still does TLS
        client, peer, server = await tls_pair(loop, tls)
        await roundtrip(client, peer, b"after timeouts")
        await close_pair(client, peer, server)
        assert errors == []
    arun(loop, main(), timeout=20)


def test_cancelled_during_handshake_leaks_nothing(loop, tls):
    async def attempt(port, factory):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(
                loop.create_connection(factory, LOCALHOST, port,
                                       ssl=tls.client,
                                       server_hostname=HOSTNAME),
                0.2)

    async def main():
        errors = catch_loop_errors(loop)
        factory = ProtocolFactory(loop)
        with SilentServer() as silent:
            await attempt(silent.port, factory)  # warm-up
            await settle(loop)
            before = open_fd_count()
            for _ in range(3):
                await attempt(silent.port, factory)
            await settle(loop)
            if before is not None:
                assert open_fd_count() == before
        assert all(p.events == [] for p in factory.protocols)
        client, peer, server = await tls_pair(loop, tls)
        await roundtrip(client, peer, b"after cancellations")
        await close_pair(client, peer, server)
        assert errors == []
    arun(loop, main(), timeout=20)


def test_server_rejects_a_non_tls_client_and_keeps_serving(loop, tls):
    async def main():
        errors = catch_loop_errors(loop)
        server, port, factory = await tls_server(loop, tls)
        for garbage in (b"GET / HTTP/1.0\r\n\r\n", b"\x00" * 64,
                        payload(5000, seed=7)):
            raw = socket.create_connection((LOCALHOST, port))
            raw.setblocking(False)
            try:
                await loop.sock_sendall(raw, garbage)
                # the server ends the connection
                await read_raw_until_closed(loop, raw)
            finally:
                raw.close()
        await settle(loop)
        # the protocol factory's products never saw connection_made()
        assert all(p.events == [] for p in factory.protocols)
        n = len(factory.protocols)
        _, client = await tls_connect(loop, tls, port)
        peer = await factory.nth(n)
        await roundtrip(client, peer, b"real tls")
        await roundtrip(peer, client, b"real reply")
        await close_pair(client, peer, server)
        assert errors == []
    arun(loop, main())


def test_server_side_handshake_timeout(loop, tls):
    """A client that connects and says nothing is dropped by the server
    after ssl_handshake_timeout; its protocol never gets connection_made."""
    async def main():
        errors = catch_loop_errors(loop)
        server, port, factory = await tls_server(
            loop, tls, ssl_handshake_timeout=0.2)
        raw = socket.create_connection((LOCALHOST, port))
        raw.setblocking(False)
        try:
            assert await read_raw_until_closed(loop, raw) == b""
        finally:
            raw.close()
        await settle(loop)
        assert all(p.events == [] for p in factory.protocols)
        n = len(factory.protocols)
        _, client = await tls_connect(loop, tls, port)
        peer = await factory.nth(n)
        await roundtrip(client, peer, b"in time")
        await close_pair(client, peer, server)
        assert errors == []
    arun(loop, main(), timeout=20)


# ------------------------------------------------------------ shutdown


def test_client_close_server_sees_clean_end(loop, tls):
    async def main():
        errors = catch_loop_errors(loop)
        client, peer, server = await tls_pair(loop, tls)
        await roundtrip(client, peer, b"x")
        client.transport.close()
        assert await peer.lost is None
        assert await client.lost is None
        assert peer.lifecycle() in CLEAN_CLOSE_LIFECYCLES
        assert client.lifecycle() in CLEAN_CLOSE_LIFECYCLES
        assert bytes(peer.data) == b"x"
        server.close()
        await server.wait_closed()
        assert errors == []
    arun(loop, main())


def test_server_close_client_sees_clean_end(loop, tls):
    async def main():
        errors = catch_loop_errors(loop)
        client, peer, server = await tls_pair(loop, tls)
        peer.transport.write(b"goodbye")
        peer.transport.close()  # buffered data is flushed first
        assert await client.lost is None
        assert await peer.lost is None
        assert bytes(client.data) == b"goodbye"
        assert client.lifecycle() in CLEAN_CLOSE_LIFECYCLES
        assert peer.lifecycle() in CLEAN_CLOSE_LIFECYCLES
        server.close()
        await server.wait_closed()
        assert errors == []
    arun(loop, main())


def test_both_close_at_once(loop, tls):
    async def main():
        errors = catch_loop_errors(loop)
        client, peer, server = await tls_pair(loop, tls)
        client.transport.close()
        peer.transport.close()
        assert await client.lost is None
        assert await peer.lost is None
        assert client.lifecycle() in CLEAN_CLOSE_LIFECYCLES
        assert peer.lifecycle() in CLEAN_CLOSE_LIFECYCLES
        server.close()
        await server.wait_closed()
        assert errors == []
    arun(loop, main())


@pytest.mark.parametrize("aborter", ["client", "server"])
def test_abort_peer_sees_eof_then_lost(loop, tls, aborter):
    """abort() skips close_notify: the peer's TLS layer sees the raw EOF,
    which asyncio reports (on every version) as eof_received() followed by
    connection_lost(None).  A round trip first makes sure the aborting side
    has nothing unread (unread data would turn the close into a RST)."""
    async def main():
        errors = catch_loop_errors(loop)
        client, peer, server = await tls_pair(loop, tls)
        await roundtrip(client, peer, b"ping")
        await roundtrip(peer, client, b"pong")
        me, other = (client, peer) if aborter == "client" else (peer, client)
        me.transport.abort()
        assert me.transport.is_closing()
        assert await me.lost is None
        assert await other.lost is None
        assert me.lifecycle() == ["made", "lost"]
        assert other.lifecycle() == ["made", "eof", "lost"]
        server.close()
        await server.wait_closed()
        assert errors == []
    arun(loop, main())


def test_abort_with_unread_data_resets_the_peer(loop, tls):
    """The client stops reading, the server fills every buffer, the client
    aborts: its unread data makes the close a RST, and the server's
    connection_lost() gets a ConnectionResetError."""
    async def main():
        errors = catch_loop_errors(loop)
        client, peer, server = await tls_pair(
            loop, tls, server_factory=ProtocolFactory(loop, FlowProtocol))
        await roundtrip(client, peer, b"ping")
        await roundtrip(peer, client, b"pong")
        client.transport.pause_reading()
        chunk = payload(256 * 1024, seed=8)
        sent = 0
        while not peer.flow:
            peer.transport.write(chunk)
            sent += len(chunk)
            assert sent <= 256 * MiB, "pause_writing() never came"
        # let both ends run until neither can make progress
        await asyncio.sleep(0.2)
        client.transport.abort()
        assert await client.lost is None
        exc = await peer.lost
        assert isinstance(exc, ConnectionResetError), exc
        assert client.lifecycle() == ["made", "lost"]
        assert peer.lifecycle() == ["made", "lost"]
        server.close()
        await server.wait_closed()
        assert errors == []
    arun(loop, main(), timeout=30)


# ------------------------------------------------------------ loop.start_tls()


class StartTLSServer(RecordingProtocol):
    """Plain until it reads b"STARTTLS\\n"; then answers b"OK\\n" and
    upgrades with loop.start_tls(server_side=True)."""

    def __init__(self, loop, *, sslcontext):
        super().__init__(loop)
        self.sslcontext = sslcontext
        self.plain_transport = None
        self.upgraded = loop.create_future()

    def data_received(self, data):
        super().data_received(data)
        if self.plain_transport is None and self.data == b"STARTTLS\n":
            self.plain_transport = self.transport
            # nothing after the command may reach this protocol in clear
            self.transport.pause_reading()
            self.transport.write(b"OK\n")
            self.loop.create_task(self._upgrade())

    async def _upgrade(self):
        try:
            tr = await self.loop.start_tls(self.plain_transport, self,
                                           self.sslcontext, server_side=True)
        except Exception as exc:
            self.upgraded.set_exception(exc)
            return
        self.transport = tr
        self.upgraded.set_result(tr)


def test_loop_start_tls_upgrades_both_sides(loop, tls):
    async def main():
        errors = catch_loop_errors(loop)
        factory = ProtocolFactory(loop, StartTLSServer, sslcontext=tls.server)
        server, port = await tcp_server(loop, factory)
        plain, client = await loop.create_connection(
            lambda: RecordingProtocol(loop), LOCALHOST, port)
        assert plain.get_extra_info("ssl_object") is None
        plain.write(b"STARTTLS\n")
        assert await client.wait_bytes(3) == b"OK\n"
        tr = await loop.start_tls(plain, client, tls.client,
                                  server_hostname=HOSTNAME)
        client.transport = tr
        peer = await factory.nth(0)
        str_ = await peer.upgraded

        assert isinstance(tr, asyncio.Transport)
        assert tr is not plain
        sslobj = tr.get_extra_info("ssl_object")
        assert isinstance(sslobj, ssl.SSLObject)
        assert sslobj.server_side is False
        assert tr.get_extra_info("sslcontext") is tls.client
        assert ("DNS", HOSTNAME) in tr.get_extra_info("peercert")[
            "subjectAltName"]
        assert tr.get_extra_info("peername") == (LOCALHOST, port)
        assert tr.get_protocol() is client
        assert str_.get_extra_info("ssl_object").server_side is True
        assert str_.get_extra_info("sslcontext") is tls.server

        await roundtrip(client, peer, b"secret")
        await roundtrip(peer, client, b"answer")
        await roundtrip(client, peer, payload(200_000, seed=9))
        # start_tls() does not call connection_made() again
        assert client.events.count("made") == 1
        assert peer.events.count("made") == 1
        tr.close()
        assert await client.lost is None
        assert await peer.lost is None
        assert client.lifecycle() in CLEAN_CLOSE_LIFECYCLES
        assert peer.lifecycle() in CLEAN_CLOSE_LIFECYCLES
        server.close()
        await server.wait_closed()
        assert errors == []
    arun(loop, main())


def test_loop_start_tls_handshake_failure(loop, tls):
    async def main():
        factory = ProtocolFactory(loop, StartTLSServer, sslcontext=tls.server)
        server, port = await tcp_server(loop, factory)
        plain, client = await loop.create_connection(
            lambda: RecordingProtocol(loop), LOCALHOST, port)
        plain.write(b"STARTTLS\n")
        assert await client.wait_bytes(3) == b"OK\n"
        with pytest.raises(ssl.SSLCertVerificationError):
            await loop.start_tls(plain, client, tls.untrusted,
                                 server_hostname=HOSTNAME)
        peer = await factory.nth(0)
        # the server sees the client's alert (SSLError) or, when the client
        # is gone before it is read, the connection end (ConnectionResetError)
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            await peer.upgraded
        assert peer.events.count("made") == 1
        server.close()
        await server.wait_closed()
    arun(loop, main())


def test_start_tls_rejects_a_non_context(loop):
    async def main():
        server, port, factory = await tls_server_plain(loop)
        _, client = await loop.create_connection(
            lambda: RecordingProtocol(loop), LOCALHOST, port)
        peer = await factory.nth(0)
        for bad in ("nope", True, None):
            with pytest.raises(TypeError) as info:
                await loop.start_tls(client.transport, client, bad)
            assert str(info.value) == (
                "sslcontext is expected to be an instance of "
                f"ssl.SSLContext, got {bad!r}")
        # the transport is untouched
        assert not client.transport.is_closing()
        await roundtrip(client, peer, b"plain still")
        await close_pair(client, peer, server)
    arun(loop, main())


def test_start_tls_rejects_a_datagram_transport(loop, tls):
    async def main():
        transport, proto = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=(LOCALHOST, 0))
        try:
            with pytest.raises(TypeError) as info:
                await loop.start_tls(transport, proto, tls.client,
                                     server_hostname=HOSTNAME)
            assert re.fullmatch(r"transport .+ is not supported by "
                                r"start_tls\(\)", str(info.value))
            assert repr(transport) in str(info.value)
            assert not transport.is_closing()
        finally:
            transport.close()
        await asyncio.sleep(0)
    arun(loop, main())


# ------------------------------------------------------------ StreamWriter.start_tls()


@needs_311
def test_stream_writer_start_tls(loop, tls):
    """STARTTLS over streams.  The server sends b"OK\\n" and a plaintext
    banner in one write before upgrading: the banner is already buffered in
    the client's StreamReader when the client upgrades, and is still read,
    in order, before the first decrypted bytes."""
    async def main():
        errors = catch_loop_errors(loop)
        result = loop.create_future()

        async def handler(reader, writer):
            try:
                assert await reader.readline() == b"STARTTLS\n"
                writer.write(b"OK\nplain banner\n")
                await writer.start_tls(tls.server)
                sslobj = writer.get_extra_info("ssl_object")
                assert sslobj.server_side is True
                line = await reader.readline()
                writer.write(line.upper())
                await writer.drain()
                assert await reader.read() == b""
                writer.close()
                await writer.wait_closed()
            except BaseException as exc:  # pragma: no cover - failure path
                result.set_exception(exc)
                raise
            result.set_result(line)

        server = await asyncio.start_server(handler, LOCALHOST, 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(LOCALHOST, port)
        assert writer.get_extra_info("ssl_object") is None
        writer.write(b"STARTTLS\n")
        assert await reader.readline() == b"OK\n"
        await writer.start_tls(tls.client, server_hostname=HOSTNAME)
        sslobj = writer.get_extra_info("ssl_object")
        assert isinstance(sslobj, ssl.SSLObject)
        assert sslobj.server_side is False
        assert isinstance(writer.transport, asyncio.Transport)
        assert await reader.readline() == b"plain banner\n"
        writer.write(b"secret line\n")
        await writer.drain()
        assert await reader.readline() == b"SECRET LINE\n"
        writer.close()
        await writer.wait_closed()
        assert await result == b"secret line\n"
        server.close()
        await server.wait_closed()
        assert errors == []
    arun(loop, main())
