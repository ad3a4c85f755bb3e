"""The TCP stream transport: write paths, half-close, buffers, reading
control, close/abort, protocol swapping, extra info, BufferedProtocol."""

import asyncio
import socket

import pytest

from _util import (
    LOCALHOST,
    EchoProtocol,
    ProtocolFactory,
    RecordingProtocol,
    arun,
    catch_loop_errors,
    payload,
    recv_all,
    rst_close,
    sha256,
    tcp_pair,
    tcp_server,
)

pytestmark = pytest.mark.timeout(10)


async def echo_pair(loop, **kwargs):
    return await tcp_pair(
        loop, server_factory=ProtocolFactory(loop, EchoProtocol), **kwargs)


async def finish(client, peer, server):
    """Close everything a test opened and wait for both ends to go away."""
    if not client.lost.done():
        client.transport.close()
    if not peer.lost.done():
        peer.transport.close()
    await client.lost
    await peer.lost
    server.close()


async def settle(n=5):
    """Give the loop a few iterations (and a little wall time) to deliver
    anything that is in flight."""
    for _ in range(n):
        await asyncio.sleep(0.005)


# ------------------------------------------------------------ type / state


def test_transport_types_and_initial_state(loop):
    async def main():
        client, peer, server = await echo_pair(loop)
        for t in (client.transport, peer.transport):
            assert isinstance(t, asyncio.Transport)
            assert isinstance(t, asyncio.ReadTransport)
            assert isinstance(t, asyncio.WriteTransport)
            assert isinstance(t, asyncio.BaseTransport)
            assert t.can_write_eof() is True
            assert t.is_closing() is False
            assert t.is_reading() is True
            assert t.get_write_buffer_size() == 0
            assert t.get_protocol() in (client, peer)
        assert client.transport.get_protocol() is client
        assert peer.transport.get_protocol() is peer
        await finish(client, peer, server)
    arun(loop, main())


def test_data_received_gets_bytes(loop):
    async def main():
        client, peer, server = await echo_pair(loop)
        client.transport.write(bytearray(b"abc"))
        client.transport.write(memoryview(b"def"))
        assert await client.wait_bytes(6) == b"abcdef"
        assert client.chunk_types == {bytes}
        assert peer.chunk_types == {bytes}
        await finish(client, peer, server)
    arun(loop, main())


# ------------------------------------------------------------ write


def test_write_bytes_like_objects(loop):
    async def main():
        client, peer, server = await echo_pair(loop)
        t = client.transport
        t.write(b"bytes|")
        t.write(bytearray(b"bytearray|"))
        t.write(memoryview(b"memoryview|"))
        t.write(memoryview(b"xxsliceyy")[2:7])
        expected = b"bytes|bytearray|memoryview|slice"
        assert await client.wait_bytes(len(expected)) == expected
        assert bytes(peer.data) == expected
        await finish(client, peer, server)
    arun(loop, main())


@pytest.mark.parametrize("bad", ["text", 42, None, [b"a"]],
                         ids=["str", "int", "None", "list"])
def test_write_non_bytes_is_type_error(loop, bad):
    async def main():
        client, peer, server = await echo_pair(loop)
        with pytest.raises(TypeError):
            client.transport.write(bad)
        assert not client.transport.is_closing()
        # the transport still works
        client.transport.write(b"ok")
        assert await client.wait_bytes(2) == b"ok"
        await finish(client, peer, server)
    arun(loop, main())


def test_write_argument_forms(loop):
    """write(data) takes its one argument positionally or as data=, and
    every other form is a TypeError that leaves the transport working."""
    async def main():
        client, peer, server = await echo_pair(loop)
        t = client.transport
        t.write(b"pos|")
        t.write(data=b"kw|")
        bad_calls = [
            lambda: t.write(),
            lambda: t.write(b"a", b"b"),
            lambda: t.write(b"a", data=b"b"),
            lambda: t.write(buf=b"a"),
            lambda: t.write(data=b"a", extra=1),
        ]
        for call in bad_calls:
            with pytest.raises(TypeError):
                call()
        assert not t.is_closing()
        t.write(b"end")
        expected = b"pos|kw|end"
        assert await client.wait_bytes(len(expected)) == expected
        await settle()
        assert bytes(peer.data) == expected
        await finish(client, peer, server)
    arun(loop, main())


def test_write_empty_is_a_no_op(loop):
    async def main():
        client, peer, server = await echo_pair(loop)
        client.transport.write(b"")
        client.transport.write(bytearray())
        client.transport.writelines([])
        assert client.transport.get_write_buffer_size() == 0
        client.transport.write(b"x")
        assert await client.wait_bytes(1) == b"x"
        await settle()
        assert bytes(peer.data) == b"x"
        await finish(client, peer, server)
    arun(loop, main())


def test_writelines(loop):
    async def main():
        client, peer, server = await echo_pair(loop)
        client.transport.writelines(
            [b"one ", bytearray(b"two "), memoryview(b"three ")])
        client.transport.writelines(b"%d," % i for i in range(5))
        expected = b"one two three 0,1,2,3,4,"
        assert await client.wait_bytes(len(expected)) == expected
        with pytest.raises(TypeError):
            client.transport.writelines(["text"])
        await finish(client, peer, server)
    arun(loop, main())


def test_write_from_connection_made(loop):
    class Greeter(RecordingProtocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.write(b"220 hello\r\n")

    async def main():
        client, peer, server = await tcp_pair(
            loop, server_factory=ProtocolFactory(loop, Greeter))
        assert await client.wait_bytes(11) == b"220 hello\r\n"
        await finish(client, peer, server)
    arun(loop, main())


# ------------------------------------------------------------ half close


def test_write_eof_half_close(loop):
    async def main():
        server_factory = ProtocolFactory(loop, eof_result=True)
        client, peer, server = await tcp_pair(loop,
                                              server_factory=server_factory)
        t = client.transport
        assert t.can_write_eof()
        t.write(b"request")
        t.write_eof()
        t.write_eof()  # a second call is a no-op
        with pytest.raises(RuntimeError):
            t.write(b"more")
        with pytest.raises(RuntimeError):
            t.writelines([b"more"])
        await peer.eof
        assert bytes(peer.data) == b"request"
        assert peer.lifecycle() == ["made", "eof"]
        # eof_received() returned True: the peer can still answer
        assert not peer.transport.is_closing()
        peer.transport.write(b"response")
        assert await client.wait_bytes(8) == b"response"
        assert not client.eof.done()
        peer.transport.close()
        assert await client.lost is None
        assert await peer.lost is None
        assert client.lifecycle() == ["made", "eof", "lost"]
        assert peer.lifecycle() == ["made", "eof", "lost"]
        server.close()
    arun(loop, main())


def test_eof_received_true_keeps_transport_open_for_writing(loop):
    async def main():
        server_factory = ProtocolFactory(loop, eof_result=True)
        client, peer, server = await tcp_pair(loop,
                                              server_factory=server_factory)
        client.transport.write_eof()
        await peer.eof
        await settle()
        assert not peer.transport.is_closing()
        assert not peer.lost.done()
        for i in range(3):
            peer.transport.write(b"late-%d;" % i)
            await asyncio.sleep(0.01)
        expected = b"late-0;late-1;late-2;"
        assert await client.wait_bytes(len(expected)) == expected
        peer.transport.write_eof()
        await client.eof
        # both directions are shut: the client's default eof_received()
        # closes it, and the peer gets connection_lost.
        assert await client.lost is None
        peer.transport.close()
        assert await peer.lost is None
        server.close()
    arun(loop, main())


@pytest.mark.parametrize("eof_result", [None, False])
def test_eof_received_falsy_closes_transport(loop, eof_result):
    async def main():
        server_factory = ProtocolFactory(loop, eof_result=eof_result)
        client, peer, server = await tcp_pair(loop,
                                              server_factory=server_factory)
        client.transport.write(b"bye")
        client.transport.write_eof()
        assert await peer.lost is None
        assert peer.lifecycle() == ["made", "eof", "lost"]
        assert bytes(peer.data) == b"bye"
        await client.eof
        assert await client.lost is None
        server.close()
    arun(loop, main())


def test_peer_half_close_from_plain_socket(loop):
    async def main():
        factory = ProtocolFactory(loop, eof_result=True)
        server, port = await tcp_server(loop, factory)
        sock = socket.create_connection((LOCALHOST, port), timeout=5)
        proto = await factory.nth(0)
        sock.sendall(b"question")
        sock.shutdown(socket.SHUT_WR)
        await proto.eof
        assert bytes(proto.data) == b"question"
        proto.transport.write(b"answer")
        proto.transport.close()
        got = await loop.run_in_executor(None, recv_all, sock)
        assert got == b"answer"
        assert await proto.lost is None
        sock.close()
        server.close()
    arun(loop, main())


# ------------------------------------------------------------ buffers


def test_write_buffer_limits(loop):
    async def main():
        client, peer, server = await echo_pair(loop)
        t = client.transport
        assert t.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        t.set_write_buffer_limits(high=100)
        assert t.get_write_buffer_limits() == (25, 100)
        t.set_write_buffer_limits(low=10)
        assert t.get_write_buffer_limits() == (10, 40)
        t.set_write_buffer_limits(high=50, low=50)
        assert t.get_write_buffer_limits() == (50, 50)
        t.set_write_buffer_limits(high=0)
        assert t.get_write_buffer_limits() == (0, 0)
        t.set_write_buffer_limits()
        assert t.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        with pytest.raises(ValueError):
            t.set_write_buffer_limits(high=10, low=20)
        with pytest.raises(ValueError):
            t.set_write_buffer_limits(high=-1)
        with pytest.raises(ValueError):
            t.set_write_buffer_limits(low=-4)
        # a failed call leaves the limits alone
        assert t.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        await finish(client, peer, server)
    arun(loop, main())


def test_get_write_buffer_size_tracks_unsent_data(loop):
    async def main():
        client, peer, server = await tcp_pair(loop)
        peer.transport.pause_reading()
        data = payload(32 * 1024 * 1024, seed=1)
        t = client.transport
        t.write(data)
        size = t.get_write_buffer_size()
        assert 0 < size <= len(data)
        peer.transport.resume_reading()
        got = await peer.wait_bytes(len(data))
        assert len(got) == len(data)
        assert sha256(got) == sha256(data)
        assert t.get_write_buffer_size() == 0
        await finish(client, peer, server)
    arun(loop, main())


# ------------------------------------------------------------ reading


def test_pause_and_resume_reading(loop):
    async def main():
        client, peer, server = await tcp_pair(loop)
        pt = peer.transport
        pt.pause_reading()
        assert pt.is_reading() is False
        pt.pause_reading()  # idempotent
        assert pt.is_reading() is False
        client.transport.write(b"held back")
        await settle(10)
        assert peer.data == b""
        assert "data" not in peer.events
        pt.resume_reading()
        assert pt.is_reading() is True
        pt.resume_reading()  # idempotent
        assert await peer.wait_bytes(9) == b"held back"
        await finish(client, peer, server)
        assert pt.is_reading() is False
        pt.pause_reading()  # no-ops once closed
        pt.resume_reading()
        assert pt.is_reading() is False
    arun(loop, main())


def test_pause_reading_from_data_received(loop):
    class Pauser(RecordingProtocol):
        def data_received(self, data):
            super().data_received(data)
            self.transport.pause_reading()

    async def main():
        client, peer, server = await tcp_pair(
            loop, server_factory=ProtocolFactory(loop, Pauser))
        client.transport.write(b"first")
        await peer.wait_bytes(5)
        n_events = peer.events.count("data")
        assert n_events == 1
        client.transport.write(b"second")
        await settle(10)
        assert peer.events.count("data") == 1
        assert bytes(peer.data) == b"first"
        peer.transport.resume_reading()
        assert await peer.wait_bytes(11) == b"firstsecond"
        await finish(client, peer, server)
    arun(loop, main())


def test_eof_is_held_back_while_paused(loop):
    async def main():
        client, peer, server = await tcp_pair(loop)
        peer.transport.pause_reading()
        client.transport.write(b"tail")
        client.transport.write_eof()
        await settle(10)
        assert peer.lifecycle() == ["made"]
        peer.transport.resume_reading()
        await peer.eof
        assert bytes(peer.data) == b"tail"
        assert await peer.lost is None
        await finish(client, peer, server)
    arun(loop, main())


# ------------------------------------------------------------ close / abort


def test_close(loop):
    async def main():
        errors = catch_loop_errors(loop)
        client, peer, server = await tcp_pair(loop)
        t = client.transport
        t.close()
        assert t.is_closing()
        assert t.is_reading() is False
        # connection_lost is never called synchronously from close()
        assert client.lifecycle() == ["made"]
        t.close()  # idempotent
        assert await client.lost is None
        await peer.eof
        assert await peer.lost is None
        await settle()
        assert client.lifecycle() == ["made", "lost"]
        assert peer.lifecycle() == ["made", "eof", "lost"]
        server.close()
        assert errors == []
    arun(loop, main())


def test_close_flushes_pending_writes(loop):
    async def main():
        client, peer, server = await tcp_pair(loop)
        data = payload(8 * 1024 * 1024, seed=2)
        client.transport.write(data)
        client.transport.close()
        assert client.transport.is_closing()
        await peer.eof
        assert sha256(bytes(peer.data)) == sha256(data)
        assert await client.lost is None
        assert await peer.lost is None
        server.close()
    arun(loop, main())


def test_abort(loop):
    async def main():
        errors = catch_loop_errors(loop)
        client, peer, server = await tcp_pair(loop)
        peer.transport.pause_reading()
        client.transport.write(payload(32 * 1024 * 1024, seed=3))
        client.transport.abort()
        assert client.transport.is_closing()
        assert client.lifecycle() == ["made"]
        assert client.transport.get_write_buffer_size() == 0
        client.transport.abort()  # idempotent
        client.transport.close()
        assert await client.lost is None
        await settle()
        assert client.lifecycle() == ["made", "lost"]
        peer.transport.resume_reading()
        exc = await peer.lost
        assert exc is None or isinstance(exc, ConnectionResetError)
        # the pending data was discarded, never fully delivered
        assert len(peer.data) < 32 * 1024 * 1024
        server.close()
        assert errors == []
    arun(loop, main())


def test_abort_after_close_discards_buffer(loop):
    async def main():
        client, peer, server = await tcp_pair(loop)
        peer.transport.pause_reading()
        client.transport.write(payload(32 * 1024 * 1024, seed=4))
        client.transport.close()
        assert client.transport.get_write_buffer_size() > 0
        client.transport.abort()
        assert client.transport.get_write_buffer_size() == 0
        assert await client.lost is None
        assert client.lifecycle() == ["made", "lost"]
        peer.transport.close()
        await peer.lost
        server.close()
    arun(loop, main())


def test_connection_lost_once_after_peer_reset(loop):
    async def main():
        errors = catch_loop_errors(loop)
        factory = ProtocolFactory(loop)
        server, port = await tcp_server(loop, factory)
        sock = socket.create_connection((LOCALHOST, port), timeout=5)
        proto = await factory.nth(0)
        sock.sendall(b"before reset")
        await proto.wait_bytes(12)
        rst_close(sock)
        exc = await proto.lost
        assert type(exc) is ConnectionResetError
        await settle()
        assert proto.lifecycle() == ["made", "lost"]
        assert proto.transport.is_closing()
        server.close()
        assert errors == []
    arun(loop, main())


@pytest.mark.parametrize("callback",
                         ["connection_made", "data_received", "eof_received"])
@pytest.mark.parametrize("method", ["close", "abort"])
def test_close_from_inside_callback(loop, callback, method):
    class Closer(RecordingProtocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            if callback == "connection_made":
                getattr(transport, method)()

        def data_received(self, data):
            super().data_received(data)
            if callback == "data_received":
                getattr(self.transport, method)()

        def eof_received(self):
            super().eof_received()
            if callback == "eof_received":
                getattr(self.transport, method)()

    async def main():
        errors = catch_loop_errors(loop)
        factory = ProtocolFactory(loop, Closer)
        server, port = await tcp_server(loop, factory)
        sock = socket.create_connection((LOCALHOST, port), timeout=5)
        sock.sendall(b"some data")
        if callback == "eof_received":
            sock.shutdown(socket.SHUT_WR)
        proto = await factory.nth(0)
        assert await proto.lost is None
        await settle()
        expected = {
            "connection_made": ["made", "lost"],
            "data_received": ["made", "data", "lost"],
            "eof_received": ["made", "data", "eof", "lost"],
        }[callback]
        assert proto.events == expected
        if callback == "connection_made":
            assert proto.data == b""
        else:
            assert bytes(proto.data) == b"some data"
        try:
            rest = await loop.run_in_executor(None, recv_all, sock)
        except ConnectionResetError:
            rest = b""
        assert rest == b""
        sock.close()
        server.close()
        assert errors == []
    arun(loop, main())


def test_close_from_client_connection_made(loop):
    class Closer(RecordingProtocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.close()

    async def main():
        factory = ProtocolFactory(loop)
        server, port = await tcp_server(loop, factory)
        transport, proto = await loop.create_connection(
            lambda: Closer(loop), LOCALHOST, port)
        assert transport.is_closing()
        assert await proto.lost is None
        assert proto.lifecycle() == ["made", "lost"]
        peer = await factory.nth(0)
        await peer.lost
        assert peer.lifecycle() == ["made", "eof", "lost"]
        server.close()
    arun(loop, main())


# ------------------------------------------------------------ protocol swap


def test_set_protocol_mid_connection(loop):
    async def main():
        client, peer, server = await echo_pair(loop)
        client.transport.write(b"one")
        await client.wait_bytes(3)
        new = RecordingProtocol(loop)
        client.transport.set_protocol(new)
        assert client.transport.get_protocol() is new
        client.transport.write(b"two")
        assert await new.wait_bytes(3) == b"two"
        # the new protocol does not get connection_made; the old one gets
        # nothing more
        assert new.events == ["data"] * new.events.count("data")
        assert bytes(client.data) == b"one"
        peer.transport.close()
        await new.lost
        assert new.events[-2:] == ["eof", "lost"]
        assert client.lifecycle() == ["made"]
        await peer.lost
        server.close()
    arun(loop, main())


def test_set_protocol_to_buffered_protocol(loop):
    async def main():
        client, peer, server = await echo_pair(loop)
        new = SmallBufferProtocol(loop, size=5)
        client.transport.set_protocol(new)
        data = payload(100_000, seed=5)
        client.transport.write(data)
        got = await new.wait_bytes(len(data))
        assert sha256(got) == sha256(data)
        assert bytes(client.data) == b""
        client.transport.close()
        assert await new.lost is None
        await peer.lost
        server.close()
    arun(loop, main())


# ------------------------------------------------------------ extra info


def test_get_extra_info(loop):
    async def main():
        client, peer, server = await echo_pair(loop)
        ct, pt = client.transport, peer.transport
        csock, psock = ct.get_extra_info("socket"), pt.get_extra_info("socket")
        for s in (csock, psock):
            assert s.fileno() >= 0
            assert s.family == socket.AF_INET
            assert s.type == socket.SOCK_STREAM
        assert ct.get_extra_info("sockname") == csock.getsockname()
        assert ct.get_extra_info("peername") == csock.getpeername()
        assert pt.get_extra_info("sockname") == psock.getsockname()
        assert pt.get_extra_info("peername") == psock.getpeername()
        assert ct.get_extra_info("peername") == pt.get_extra_info("sockname")
        assert pt.get_extra_info("peername") == ct.get_extra_info("sockname")
        assert ct.get_extra_info("no-such-key") is None
        sentinel = object()
        assert ct.get_extra_info("no-such-key", sentinel) is sentinel
        assert ct.get_extra_info("peername", sentinel) != sentinel
        names = (ct.get_extra_info("sockname"), ct.get_extra_info("peername"))
        await finish(client, peer, server)
        # cached values survive the connection
        assert (ct.get_extra_info("sockname"),
                ct.get_extra_info("peername")) == names
    arun(loop, main())


def test_tcp_nodelay_on_every_stream_socket(loop):
    def nodelay(transport):
        return transport.get_extra_info("socket").getsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY)

    async def main():
        client, peer, server = await echo_pair(loop)
        assert nodelay(client.transport) != 0  # create_connection
        assert nodelay(peer.transport) != 0  # accepted by create_server
        port = server.sockets[0].getsockname()[1]
        raw = socket.create_connection((LOCALHOST, port), timeout=5)
        assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        t2, p2 = await loop.create_connection(
            lambda: RecordingProtocol(loop), sock=raw)
        assert nodelay(t2) != 0  # create_connection(sock=)
        # (asyncio only sets TCP_NODELAY when sock.proto == IPPROTO_TCP, so
        # the listener is created with an explicit proto.)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM,
                                 socket.IPPROTO_TCP)
        listener.bind((LOCALHOST, 0))
        listener.listen(1)
        other = socket.create_connection(listener.getsockname(), timeout=5)
        accepted, _ = listener.accept()
        listener.close()
        t3, p3 = await loop.connect_accepted_socket(
            lambda: RecordingProtocol(loop), accepted)
        assert nodelay(t3) != 0  # connect_accepted_socket
        t2.close()
        t3.close()
        other.close()
        await p2.lost
        await p3.lost
        await finish(client, peer, server)
    arun(loop, main())


# ------------------------------------------------------------ BufferedProtocol


class SmallBufferProtocol(asyncio.BufferedProtocol):
    """Hands out a tiny buffer so data arrives in many pieces."""

    def __init__(self, loop, size=7):
        self.loop = loop
        self.buf = bytearray(size)
        self.data = bytearray()
        self.events = []
        self.hints = []
        self.updates = []
        self.transport = None
        self.made = loop.create_future()
        self.eof = loop.create_future()
        self.lost = loop.create_future()
        self._want = None

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport
        self.made.set_result(transport)

    def get_buffer(self, sizehint):
        self.hints.append(sizehint)
        return memoryview(self.buf)

    def buffer_updated(self, nbytes):
        self.updates.append(nbytes)
        self.data += self.buf[:nbytes]
        self._check()

    def eof_received(self):
        self.events.append("eof")
        self.eof.set_result(None)
        self._check()

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)
        self._check()

    def _check(self):
        if self._want and not self._want[1].done():
            n, fut = self._want
            if len(self.data) >= n or self.eof.done() or self.lost.done():
                fut.set_result(None)

    async def wait_bytes(self, n):
        if len(self.data) < n and not (self.eof.done() or self.lost.done()):
            self._want = (n, self.loop.create_future())
            await self._want[1]
        return bytes(self.data)


def test_buffered_protocol_small_buffer(loop):
    async def main():
        errors = catch_loop_errors(loop)
        factory = ProtocolFactory(loop, EchoProtocol)
        server, port = await tcp_server(loop, factory)
        transport, proto = await loop.create_connection(
            lambda: SmallBufferProtocol(loop, size=7), LOCALHOST, port)
        assert isinstance(proto, asyncio.BufferedProtocol)
        data = payload(256 * 1024, seed=6)
        transport.write(data)
        transport.write_eof()
        got = await proto.wait_bytes(len(data))
        assert len(got) == len(data)
        assert sha256(got) == sha256(data)
        assert all(1 <= n <= 7 for n in proto.updates)
        assert sum(proto.updates) == len(data)
        assert all(isinstance(h, int) for h in proto.hints)
        await proto.eof
        assert await proto.lost is None
        assert proto.events == ["made", "eof", "lost"]
        server.close()
        assert errors == []
    arun(loop, main())


def test_buffered_protocol_server_side(loop):
    async def main():
        protos = []

        def factory():
            p = SmallBufferProtocol(loop, size=3)
            protos.append(p)
            return p

        server, port = await tcp_server(loop, factory)
        sock = socket.create_connection((LOCALHOST, port), timeout=5)
        data = payload(60_000, seed=7)
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        while not protos:
            await asyncio.sleep(0.001)
        got = await protos[0].wait_bytes(len(data))
        assert got == data
        await protos[0].eof
        assert await protos[0].lost is None
        sock.close()
        server.close()
    arun(loop, main())


@pytest.mark.parametrize("mode", ["empty", "raises"])
def test_buffered_protocol_bad_get_buffer(loop, mode):
    boom = ValueError("no buffer for you")

    class Bad(SmallBufferProtocol):
        def get_buffer(self, sizehint):
            if mode == "empty":
                return bytearray()
            raise boom

    async def main():
        errors = catch_loop_errors(loop)
        factory = ProtocolFactory(loop)
        server, port = await tcp_server(loop, factory)
        transport, proto = await loop.create_connection(
            lambda: Bad(loop), LOCALHOST, port)
        peer = await factory.nth(0)
        peer.transport.write(b"data")
        exc = await proto.lost
        if mode == "empty":
            assert type(exc) is RuntimeError
        else:
            assert exc is boom
        assert len(errors) == 1
        assert errors[0]["exception"] is exc
        assert errors[0]["protocol"] is proto
        assert errors[0]["transport"] is transport
        assert "get_buffer" in errors[0]["message"]
        assert proto.events == ["made", "lost"]
        await peer.lost
        server.close()
    arun(loop, main())


def test_reads_alternating_large_and_tiny_keep_every_byte(loop):
    # uvrs reads straight into a new bytes object after a large read, and
    # through its shared buffer after a small one: switch back and forth.
    sizes = [200_000, 1, 70_000, 3, 131_072, 2, 300_000, 65_536, 65_537, 5, 1_000_000, 7]
    blobs = [payload(n, seed=i) for i, n in enumerate(sizes)]
    expected = b"".join(blobs)
    got = bytearray()
    done = loop.create_future()

    class Collect(asyncio.Protocol):
        def data_received(self, data):
            assert type(data) is bytes
            got.extend(data)
            if len(got) >= len(expected) and not done.done():
                done.set_result(None)

    async def main():
        server = await loop.create_server(Collect, LOCALHOST, 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(LOCALHOST, port)
        for blob in blobs:
            writer.write(blob)
            await writer.drain()
            await asyncio.sleep(0.01)  # let each size arrive on its own
        await asyncio.wait_for(done, 10)
        writer.close()
        server.close()
        await server.wait_closed()

    arun(loop, main(), 30)
    assert sha256(bytes(got)) == sha256(expected)
