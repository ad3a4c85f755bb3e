"""Bulk transfers, many connections, and write flow control."""

import asyncio
import logging

try:
    import resource
except ImportError:  # Windows
    resource = None

import pytest

from _util import (
    LOCALHOST,
    EchoProtocol,
    ProtocolFactory,
    RecordingProtocol,
    arun,
    catch_loop_errors,
    payload,
    set_linger_zero,
    sha256,
    tcp_pair,
    tcp_server,
)

pytestmark = pytest.mark.timeout(20)

MiB = 1024 * 1024


# ------------------------------------------------------------ big transfers


def test_50_mib_each_way(loop):
    size = 50 * MiB
    up = payload(size, seed=11)
    down = payload(size, seed=12)

    class Server(RecordingProtocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.write(down)
            transport.write_eof()

    async def main():
        errors = catch_loop_errors(loop)
        factory = ProtocolFactory(loop, Server, eof_result=True)
        server, port = await tcp_server(loop, factory)
        transport, client = await loop.create_connection(
            lambda: RecordingProtocol(loop, eof_result=True), LOCALHOST, port)
        transport.write(up)
        transport.write_eof()
        peer = await factory.nth(0)
        got_down = await client.wait_bytes(size)
        got_up = await peer.wait_bytes(size)
        await client.eof
        await peer.eof
        assert len(got_up) == size and len(got_down) == size
        assert sha256(got_up) == sha256(up)
        assert sha256(got_down) == sha256(down)
        # both halves shut: closing either end finishes cleanly
        transport.close()
        peer.transport.close()
        assert await client.lost is None
        assert await peer.lost is None
        assert client.lifecycle() == ["made", "eof", "lost"]
        assert peer.lifecycle() == ["made", "eof", "lost"]
        server.close()
        assert errors == []
    arun(loop, main(), timeout=15)


def test_big_transfer_with_small_writes(loop):
    """Many small writes coalesce correctly (order and content)."""
    chunks = [payload(1 + (i * 37) % 3000, seed=i) for i in range(2000)]
    blob = b"".join(chunks)

    async def main():
        client, peer, server = await tcp_pair(loop)
        for c in chunks:
            client.transport.write(c)
        client.transport.write_eof()
        got = await peer.wait_bytes(len(blob))
        assert sha256(got) == sha256(blob)
        await peer.eof
        client.transport.close()
        await client.lost
        await peer.lost
        server.close()
    arun(loop, main())


def _connection_budget(wanted):
    if resource is None:
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * wanted + 200
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(0, min(wanted, (soft - 200) // 2))


def test_1000_concurrent_connections(loop):
    n = _connection_budget(1000)
    if n < 100:
        pytest.skip(f"fd limit too low for a useful run ({n} connections)")

    async def one(port, i):
        data = payload(2048 + i % 2048, seed=i)
        transport, proto = await loop.create_connection(
            lambda: RecordingProtocol(loop), LOCALHOST, port)
        transport.write(data)
        transport.write_eof()
        await proto.eof
        assert sha256(bytes(proto.data)) == sha256(data)
        assert await proto.lost is None
        return proto

    async def main():
        errors = catch_loop_errors(loop)
        factory = ProtocolFactory(loop, EchoProtocol)
        server, port = await tcp_server(loop, factory, backlog=1024)
        protos = await asyncio.gather(*[one(port, i) for i in range(n)])
        assert len(protos) == n
        assert len(factory.protocols) == n
        for p in factory.protocols:
            await p.lost
            assert p.lifecycle() == ["made", "eof", "lost"]
        server.close()
        await server.wait_closed()
        assert errors == []
    arun(loop, main(), timeout=15)


# ------------------------------------------------------------ flow control


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


def test_slow_reader_pauses_then_resumes_writer(loop):
    async def main():
        errors = catch_loop_errors(loop)
        client, peer, server = await tcp_pair(
            loop, client_factory=ProtocolFactory(loop, FlowProtocol))
        t = client.transport
        low, high = t.get_write_buffer_limits()
        peer.transport.pause_reading()
        chunk = payload(256 * 1024, seed=21)
        sent = 0
        while not client.flow:
            t.write(chunk)
            sent += len(chunk)
            assert sent <= 256 * MiB, "pause_writing() never came"
        # pause_writing() ran synchronously inside the write() that crossed
        # the high-water mark
        kind, size = client.flow[0]
        assert kind == "pause"
        assert size > high
        assert t.get_write_buffer_size() > high
        # the reader drains: the writer is resumed
        peer.transport.resume_reading()
        await client.resumed
        got = await peer.wait_bytes(sent)
        assert len(got) == sent
        assert sha256(got) == sha256(chunk * (sent // len(chunk)))
        kinds = [k for k, _ in client.flow]
        assert kinds == ["pause", "resume"] * (len(kinds) // 2)
        for k, size in client.flow:
            if k == "pause":
                assert size > high
            else:
                assert size <= low
        assert t.get_write_buffer_size() == 0
        client.transport.close()
        await client.lost
        await peer.lost
        server.close()
        assert errors == []
    arun(loop, main())


def test_no_pause_when_buffer_stays_below_high_water(loop):
    async def main():
        client, peer, server = await tcp_pair(
            loop, client_factory=ProtocolFactory(loop, FlowProtocol))
        for _ in range(50):
            client.transport.write(b"x" * 100)
        await peer.wait_bytes(5000)
        assert client.flow == []
        client.transport.close()
        await client.lost
        await peer.lost
        server.close()
    arun(loop, main())


def test_lowering_high_water_pauses_immediately(loop):
    async def main():
        client, peer, server = await tcp_pair(
            loop, client_factory=ProtocolFactory(loop, FlowProtocol))
        t = client.transport
        t.set_write_buffer_limits(high=1024 * MiB)
        peer.transport.pause_reading()
        data = payload(32 * MiB, seed=22)
        t.write(data)
        assert t.get_write_buffer_size() > 0
        assert client.flow == []
        t.set_write_buffer_limits(high=0)
        assert [k for k, _ in client.flow] == ["pause"]
        peer.transport.resume_reading()
        await client.resumed
        assert client.flow[-1] == ("resume", 0)
        got = await peer.wait_bytes(len(data))
        assert sha256(got) == sha256(data)
        t.close()
        await client.lost
        await peer.lost
        server.close()
    arun(loop, main())


def test_resume_writing_can_write_more(loop):
    """A writer driven purely by pause/resume callbacks pushes a large
    amount of data without unbounded buffering."""
    total = 16 * MiB
    chunk = payload(64 * 1024, seed=23)

    class Pump(FlowProtocol):
        def __init__(self, loop):
            super().__init__(loop)
            self.sent = 0
            self.max_buffer = 0
            self.paused = False

        def connection_made(self, transport):
            super().connection_made(transport)
            self.pump()

        def pause_writing(self):
            super().pause_writing()
            self.paused = True

        def resume_writing(self):
            super().resume_writing()
            self.paused = False
            self.pump()

        def pump(self):
            while not self.paused and self.sent < total:
                self.transport.write(chunk)
                self.sent += len(chunk)
                self.max_buffer = max(self.max_buffer,
                                      self.transport.get_write_buffer_size())
            if self.sent >= total and not self.paused:
                self.transport.write_eof()

    async def main():
        server_factory = ProtocolFactory(loop, RecordingProtocol)
        server, port = await tcp_server(loop, server_factory)
        transport, pump = await loop.create_connection(
            lambda: Pump(loop), LOCALHOST, port)
        peer = await server_factory.nth(0)
        got = await peer.wait_bytes(total)
        assert len(got) == total
        assert sha256(got) == sha256(chunk * (total // len(chunk)))
        # never more than one chunk above the high-water mark
        assert pump.max_buffer <= 64 * 1024 + len(chunk)
        transport.close()
        await pump.lost
        await peer.lost
        server.close()
    arun(loop, main())


# ------------------------------------------------------------ writes after close


def test_write_after_close_is_silently_ignored(loop, caplog):
    """asyncio drops writes once connection_lost is scheduled; from the 5th
    dropped write on it logs 'socket.send() raised exception.' (one warning
    per write) on the asyncio logger."""
    async def main():
        errors = catch_loop_errors(loop)
        client, peer, server = await tcp_pair(loop)
        t = client.transport
        t.close()
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            for _ in range(3):
                t.write(b"dropped")
            assert [r for r in caplog.records if r.name == "asyncio"] == []
            for _ in range(7):
                t.write(b"dropped")
            warnings = [r for r in caplog.records
                        if r.name == "asyncio"
                        and r.getMessage() == "socket.send() raised exception."]
            assert len(warnings) == 6
            assert all(r.levelno == logging.WARNING for r in warnings)
        assert await client.lost is None
        await peer.eof
        assert await peer.lost is None
        assert peer.data == b""
        # still ignored after connection_lost
        t.write(b"dropped")
        server.close()
        assert errors == []
    arun(loop, main())


def test_write_after_peer_reset_is_ignored(loop, caplog):
    async def main():
        errors = catch_loop_errors(loop)
        client, peer, server = await tcp_pair(loop)
        sock = peer.transport.get_extra_info("socket")
        set_linger_zero(sock)
        peer.transport.abort()
        exc = await client.lost
        assert type(exc) is ConnectionResetError
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            for _ in range(3):
                client.transport.write(b"into the void")
        assert [r for r in caplog.records if r.name == "asyncio"] == []
        server.close()
        assert errors == []
    arun(loop, main())
