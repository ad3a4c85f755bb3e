"""Failure paths: resets, broken pipes, refused connections and exceptions
raised by protocol callbacks."""

import asyncio
import errno
import os
import socket
import sys
import time

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
    payload,
    recv_all,
    rst_close,
    set_linger_zero,
    tcp_pair,
    tcp_server,
)

pytestmark = pytest.mark.timeout(10)

LINUX = sys.platform.startswith("linux")


async def raw_pair(loop, protocol_factory):
    """(transport, protocol, peer) where peer is a plain blocking socket
    accepted from a throwaway listener."""
    listener = socket.socket()
    listener.bind((LOCALHOST, 0))
    listener.listen(1)
    try:
        transport, proto = await loop.create_connection(
            protocol_factory, *listener.getsockname())
        peer, _ = listener.accept()
    finally:
        listener.close()
    peer.settimeout(5)
    return transport, proto, peer


# ------------------------------------------------------------ resets / pipes


def test_peer_reset_mid_write(loop):
    async def main():
        errors = catch_loop_errors(loop)
        transport, proto, peer = await raw_pair(
            loop, lambda: RecordingProtocol(loop))
        transport.write(payload(16 * 1024 * 1024, seed=41))
        assert transport.get_write_buffer_size() > 0
        peer.recv(1000)
        rst_close(peer)
        exc = await proto.lost
        assert type(exc) is ConnectionResetError
        assert exc.errno == errno.ECONNRESET
        assert proto.lifecycle() == ["made", "lost"]
        assert transport.is_closing()
        assert transport.get_write_buffer_size() == 0
        # writes after the reset are dropped silently
        transport.write(b"more")
        # the loop keeps running normally
        fut = loop.create_future()
        loop.call_soon(fut.set_result, "alive")
        assert await fut == "alive"
        assert errors == []
    arun(loop, main())


def test_peer_reset_mid_write_server_side(loop):
    """A server pushing data to many clients that reset does not disturb
    the other connections or the listening socket."""
    big = payload(4 * 1024 * 1024, seed=42)

    class Pusher(RecordingProtocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.write(big)

    async def main():
        errors = catch_loop_errors(loop)
        factory = ProtocolFactory(loop, Pusher)
        server, port = await tcp_server(loop, factory)
        socks = [socket.create_connection((LOCALHOST, port), timeout=5)
                 for _ in range(10)]
        protos = [await factory.nth(i) for i in range(10)]
        for s in socks[:5]:
            s.recv(100)
            rst_close(s)
        for p in protos[:5]:
            assert type(await p.lost) is ConnectionResetError
        # the remaining five still get their full payload
        for s, p in zip(socks[5:], protos[5:]):
            p.transport.close()
            got = await loop.run_in_executor(None, recv_all, s)
            assert got == big
            s.close()
            assert await p.lost is None
        assert server.is_serving()
        server.close()
        assert errors == []
    arun(loop, main())


def test_write_after_peer_closed_is_broken_pipe(loop):
    async def main():
        errors = catch_loop_errors(loop)
        transport, proto, peer = await raw_pair(
            loop, lambda: RecordingProtocol(loop))
        transport.pause_reading()  # do not notice the EOF
        peer.close()
        await asyncio.sleep(0.05)
        for _ in range(100):
            if proto.lost.done():
                break
            transport.write(b"x" * 1000)
            await asyncio.sleep(0.01)
        exc = await proto.lost
        if LINUX:
            assert type(exc) is BrokenPipeError
        else:
            # Windows reports WSAECONNABORTED when the peer has gone.
            assert isinstance(exc, (BrokenPipeError, ConnectionResetError,
                                    ConnectionAbortedError))
        assert proto.lifecycle() == ["made", "lost"]
        assert errors == []
    arun(loop, main())


def test_write_after_peer_closed_while_reading(loop):
    async def main():
        errors = catch_loop_errors(loop)
        transport, proto, peer = await raw_pair(
            loop, lambda: RecordingProtocol(loop, eof_result=True))
        peer.close()
        await proto.eof
        assert not transport.is_closing()
        for _ in range(100):
            if proto.lost.done():
                break
            transport.write(b"x" * 1000)
            await asyncio.sleep(0.01)
        exc = await proto.lost
        assert isinstance(exc, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError))
        if LINUX:
            assert type(exc) is BrokenPipeError
        assert proto.lifecycle() == ["made", "eof", "lost"]
        assert errors == []
    arun(loop, main())


def test_reset_before_accept_does_not_hurt_server(loop):
    async def main():
        errors = catch_loop_errors(loop)
        factory = ProtocolFactory(loop, EchoProtocol)
        server, port = await tcp_server(loop, factory)
        for _ in range(20):
            s = socket.create_connection((LOCALHOST, port), timeout=5)
            rst_close(s)
        await asyncio.sleep(0.05)
        for p in list(factory.protocols):
            exc = await p.lost
            assert exc is None or type(exc) is ConnectionResetError
        transport, proto = await loop.create_connection(
            lambda: RecordingProtocol(loop), LOCALHOST, port)
        transport.write(b"still serving")
        assert await proto.wait_bytes(13) == b"still serving"
        transport.close()
        await proto.lost
        server.close()
        assert errors == []
    arun(loop, main())


def test_abort_with_linger_zero_resets_peer(loop):
    async def main():
        client, peer, server = await tcp_pair(loop)
        set_linger_zero(client.transport.get_extra_info("socket"))
        client.transport.abort()
        assert await client.lost is None
        exc = await peer.lost
        assert type(exc) is ConnectionResetError
        assert peer.lifecycle() == ["made", "lost"]
        server.close()
    arun(loop, main())


# ------------------------------------------------------------ refused


def test_refused_ipv4_and_streams(loop):
    async def main():
        with socket.socket() as bound:
            bound.bind((LOCALHOST, 0))
            port = bound.getsockname()[1]
            with pytest.raises(ConnectionRefusedError):
                await loop.create_connection(asyncio.Protocol, LOCALHOST, port)
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection(LOCALHOST, port)
    arun(loop, main())


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no ::1")
def test_refused_ipv6(loop):
    async def main():
        with socket.socket(socket.AF_INET6) as bound:
            bound.bind((LOCALHOST6, 0))
            port = bound.getsockname()[1]
            with pytest.raises(ConnectionRefusedError) as info:
                await loop.create_connection(asyncio.Protocol, LOCALHOST6,
                                             port)
            assert info.value.errno == errno.ECONNREFUSED
    arun(loop, main())


def test_refused_does_not_break_the_loop(loop):
    async def main():
        server, port = await tcp_server(loop, ProtocolFactory(loop,
                                                              EchoProtocol))
        with socket.socket() as bound:
            bound.bind((LOCALHOST, 0))
            bad = bound.getsockname()[1]
            results = await asyncio.gather(
                *[loop.create_connection(asyncio.Protocol, LOCALHOST, bad)
                  for _ in range(20)], return_exceptions=True)
        assert all(type(r) is ConnectionRefusedError for r in results)
        transport, proto = await loop.create_connection(
            lambda: RecordingProtocol(loop), LOCALHOST, port)
        transport.write(b"ok")
        assert await proto.wait_bytes(2) == b"ok"
        transport.close()
        await proto.lost
        server.close()
    arun(loop, main())


# ------------------------------------------------------------ callback errors


class Boom(Exception):
    pass


@pytest.mark.parametrize("where,message", [
    ("data_received", "Fatal error: protocol.data_received() call failed."),
    ("eof_received", "Fatal error: protocol.eof_received() call failed."),
])
def test_exception_in_read_callback_is_fatal(loop, where, message):
    boom = Boom(where)

    class Faulty(RecordingProtocol):
        def data_received(self, data):
            super().data_received(data)
            if where == "data_received":
                raise boom

        def eof_received(self):
            super().eof_received()
            if where == "eof_received":
                raise boom

    async def main():
        errors = catch_loop_errors(loop)
        transport, proto, peer = await raw_pair(loop, lambda: Faulty(loop))
        peer.sendall(b"trigger")
        if where == "eof_received":
            peer.shutdown(socket.SHUT_WR)
        exc = await proto.lost
        assert exc is boom
        assert len(errors) == 1
        ctx = errors[0]
        assert ctx["message"] == message
        assert ctx["exception"] is boom
        assert ctx["transport"] is transport
        assert ctx["protocol"] is proto
        assert transport.is_closing()
        assert proto.events.count("lost") == 1
        try:
            rest = await loop.run_in_executor(None, recv_all, peer)
        except ConnectionResetError:
            rest = b""
        assert rest == b""
        peer.close()
    arun(loop, main())


def test_exception_in_connection_made_is_reported(loop):
    """asyncio reports it like any failing callback and keeps the
    connection: reading still starts."""
    boom = Boom("made")

    class Faulty(RecordingProtocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            raise boom

    async def main():
        errors = catch_loop_errors(loop)
        transport, proto, peer = await raw_pair(loop, lambda: Faulty(loop))
        await asyncio.sleep(0.01)
        assert len(errors) == 1
        assert errors[0]["exception"] is boom
        assert not transport.is_closing()
        peer.sendall(b"after failure")
        assert await proto.wait_bytes(13) == b"after failure"
        transport.close()
        assert await proto.lost is None
        peer.close()
    arun(loop, main())


def test_exception_in_connection_lost_is_reported(loop):
    boom = Boom("lost")

    class Faulty(RecordingProtocol):
        def connection_lost(self, exc):
            super().connection_lost(exc)
            raise boom

    async def main():
        errors = catch_loop_errors(loop)
        transport, proto, peer = await raw_pair(loop, lambda: Faulty(loop))
        transport.write(b"bye")
        transport.close()
        assert await proto.lost is None
        await asyncio.sleep(0.01)
        assert len(errors) == 1
        assert errors[0]["exception"] is boom
        # the socket is closed regardless
        assert await loop.run_in_executor(None, recv_all, peer) == b"bye"
        peer.close()
    arun(loop, main())


@pytest.mark.parametrize("which", ["pause_writing", "resume_writing"])
def test_exception_in_flow_control_callback(loop, which):
    boom = Boom(which)

    class Faulty(RecordingProtocol):
        def pause_writing(self):
            super().pause_writing()
            if which == "pause_writing":
                raise boom

        def resume_writing(self):
            super().resume_writing()
            if which == "resume_writing":
                raise boom

    async def main():
        errors = catch_loop_errors(loop)
        client, peer, server = await tcp_pair(
            loop, client_factory=ProtocolFactory(loop, Faulty))
        t = client.transport
        t.set_write_buffer_limits(high=1024)
        peer.transport.pause_reading()
        data = payload(16 * 1024 * 1024, seed=43)
        t.write(data)
        assert "pause" in client.events
        peer.transport.resume_reading()
        got = await peer.wait_bytes(len(data))
        assert got == data
        await asyncio.sleep(0.01)
        assert client.events.count("resume") == 1
        assert len(errors) == 1
        ctx = errors[0]
        assert ctx["message"] == f"protocol.{which}() failed"
        assert ctx["exception"] is boom
        assert ctx["transport"] is t
        assert ctx["protocol"] is client
        # the connection is unaffected
        assert not t.is_closing()
        t.close()
        await client.lost
        await peer.lost
        server.close()
    arun(loop, main())


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_in_data_received_propagates(loop, exc_type):
    class Faulty(RecordingProtocol):
        def data_received(self, data):
            super().data_received(data)
            raise exc_type("out")

    async def setup():
        return await raw_pair(loop, lambda: Faulty(loop))

    transport, proto, peer = arun(loop, setup())
    peer.sendall(b"x")

    waiter = loop.create_task(asyncio.sleep(5))
    with pytest.raises(exc_type):
        loop.run_until_complete(waiter)
    assert "data" in proto.events
    waiter.cancel()
    transport.close()
    peer.close()
    # the loop is still usable afterwards
    assert arun(loop, asyncio.sleep(0, "fine")) == "fine"


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_NOFILE is POSIX")
def test_accept_out_of_fds_keeps_the_client_and_serves_later(loop):
    """accept() failing with EMFILE is reported, the pending client stays in
    the backlog, and it is served once fds are free again (asyncio retries
    after ACCEPT_RETRY_DELAY)."""
    import resource

    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    async def main():
        server, port = await tcp_server(loop, lambda: EchoProtocol(loop))
        client = socket.socket()
        client.setblocking(False)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        fillers = []
        try:
            probe = os.open(os.devnull, os.O_RDONLY)
            os.close(probe)
            resource.setrlimit(resource.RLIMIT_NOFILE, (probe + 16, hard))
            try:
                while True:
                    fillers.append(os.open(os.devnull, os.O_RDONLY))
            except OSError as exc:
                assert exc.errno == errno.EMFILE
            assert client.connect_ex((LOCALHOST, port)) in (0, errno.EINPROGRESS)
            for _ in range(100):
                if contexts:
                    break
                await asyncio.sleep(0.01)
        finally:
            for fd in fillers:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        try:
            # (asyncio reports each failed accept() of the round.)
            assert contexts
            assert {c["message"] for c in contexts} == {
                "socket.accept() out of system resource"
            }
            assert isinstance(contexts[0]["exception"], OSError)
            assert contexts[0]["exception"].errno == errno.EMFILE
            await asyncio.wait_for(loop.sock_sendall(client, b"still here"), 5)
            got = b""
            while len(got) < 10:
                chunk = await asyncio.wait_for(loop.sock_recv(client, 100), 5)
                assert chunk
                got += chunk
            assert got == b"still here"
        finally:
            client.close()
            server.close()
            await server.wait_closed()

    arun(loop, main(), timeout=15)


def test_no_protocol_callback_once_the_loop_is_closed(loop):
    # Data already in the kernel when close() runs is never delivered:
    # asyncio's closed selector reports nothing; uvrs drains libuv's closing
    # handles without calling into protocols.
    got = []

    class Proto(asyncio.Protocol):
        def connection_made(self, transport):
            got.append("made")

        def data_received(self, data):
            got.append(data)

    async def setup():
        srv = await loop.create_server(Proto, LOCALHOST, 0)
        client = socket.create_connection(srv.sockets[0].getsockname()[:2])
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.01)
        return srv, client

    srv, client = arun(loop, setup())
    try:
        client.sendall(b"late data")
        # Let it reach the server's socket buffer, then close without running.
        time.sleep(0.1)
        srv.close()
        loop.close()
        assert got == ["made"]
    finally:
        client.close()
