"""Where uvrs deliberately goes beyond asyncio (docs/compatibility.md lists
each): the asyncio half of every test pins what the stdlib does, the uvrs
half what uvrs does instead."""

import asyncio
import socket
import sys

import pytest

from _util import LOCALHOST, arun

pytestmark = pytest.mark.timeout(20)


class DuckBuffered(asyncio.BaseProtocol):
    """get_buffer()/buffer_updated() without subclassing BufferedProtocol."""

    def __init__(self, loop):
        self.buf = bytearray(8)
        self.got = bytearray()
        self.lost = loop.create_future()

    def get_buffer(self, sizehint):
        return self.buf

    def buffer_updated(self, nbytes):
        self.got += self.buf[:nbytes]

    def eof_received(self):
        return None

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


def test_duck_typed_buffered_protocol(loop, flavor):
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    async def main():
        proto = DuckBuffered(loop)
        server = await loop.create_server(lambda: proto, LOCALHOST, 0)
        port = server.sockets[0].getsockname()[1]
        client = socket.create_connection((LOCALHOST, port))
        client.sendall(b"0123456789abcdef!")
        client.close()
        exc = await asyncio.wait_for(proto.lost, 5)
        server.close()
        await server.wait_closed()
        return proto, exc

    proto, exc = arun(loop, main())
    if flavor.is_uvrs:
        # Fed through get_buffer() in 8-byte pieces, as uvloop does.
        assert bytes(proto.got) == b"0123456789abcdef!"
        assert exc is None
        assert errors == []
    else:
        # asyncio calls data_received(), which the protocol lacks.
        assert isinstance(exc, AttributeError)
        assert [e["message"] for e in errors] == [
            "Fatal error: protocol.data_received() call failed."
        ]


def test_udp_sendto_never_resolves_names(loop, flavor):
    if not flavor.is_uvrs and sys.platform == "win32":
        pytest.skip("asyncio's Proactor sendto() takes numeric addresses only")

    async def main():
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.bind((LOCALHOST, 0))
        port = receiver.getsockname()[1]
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=(LOCALHOST, 0)
        )
        try:
            if flavor.is_uvrs:
                with pytest.raises(ValueError, match="DNS lookup"):
                    transport.sendto(b"x", ("localhost", port))
                with pytest.raises(ValueError, match="family mismatch"):
                    transport.sendto(b"x", ("::1", port))
            else:
                # asyncio hands the name to sendto(), which resolves it
                # (blocking the loop).
                transport.sendto(b"x", ("localhost", port))
            transport.sendto(b"numeric", (LOCALHOST, port))
            receiver.settimeout(5)
            got = receiver.recv(100)
            if not flavor.is_uvrs:
                assert got == b"x"
                got = receiver.recv(100)
            assert got == b"numeric"
        finally:
            transport.close()
            receiver.close()

    arun(loop, main())


def test_socket_closed_during_sock_recv_is_released_after(loop, flavor):
    if not flavor.is_uvrs:
        pytest.skip("asyncio closes the fd under the pending operation")

    async def main():
        a, b = socket.socketpair()
        a.setblocking(False)
        with b:
            pending = loop.create_task(loop.sock_recv(a, 10))
            await asyncio.sleep(0.05)
            a.close()
            # The loop holds an I/O reference: the fd stays open ...
            assert a.fileno() != -1
            b.send(b"late")
            assert await asyncio.wait_for(pending, 5) == b"late"
        # ... and is closed once the operation is over.
        assert a.fileno() == -1

    arun(loop, main())


def test_loop_close_releases_sockets_of_pending_ops(loop_factory, flavor):
    if not flavor.is_uvrs:
        pytest.skip("asyncio holds no reference on sockets")
    lp = loop_factory()
    a, b = socket.socketpair()
    a.setblocking(False)
    with b:
        task = lp.create_task(lp.sock_recv(a, 10))
        lp.run_until_complete(asyncio.sleep(0.05))
        a.close()
        assert a.fileno() != -1
        task.cancel()
        lp.run_until_complete(asyncio.sleep(0))
        assert a.fileno() == -1

        c, d = socket.socketpair()
        c.setblocking(False)
        with d:
            left = lp.create_task(lp.sock_recv(c, 10))
            left._log_destroy_pending = False  # pending on purpose at close
            lp.run_until_complete(asyncio.sleep(0.05))
            c.close()
            assert c.fileno() != -1
            lp.close()
            assert c.fileno() == -1


def test_loop_metrics(loop_factory, flavor, monkeypatch):
    """uvrs.Loop.metrics(): libuv's idle time, iterations and events."""
    loop = loop_factory()
    if not flavor.is_uvrs:
        # asyncio's loops have no counters of their own.
        assert not hasattr(loop, "metrics")
        return
    # Idle time is measured only on request (it costs libuv a poll).
    assert loop.metrics().idle_time is None
    monkeypatch.setenv("UVRS_LOOP_METRICS", "1")
    loop = loop_factory()
    first = loop.metrics()
    assert isinstance(first, flavor.module.LoopMetrics)
    assert first._fields == ("idle_time", "loop_count", "events", "events_waiting")
    a, b = socket.socketpair()

    async def main():
        got = loop.create_future()
        loop.add_reader(a, lambda: got.set_result(a.recv(10)))
        # Nothing is ready for 0.2 s: the loop sits in the kernel's poll.
        loop.call_later(0.2, b.send, b"ping")
        data = await got
        loop.remove_reader(a)
        return data

    try:
        assert arun(loop, main()) == b"ping"
    finally:
        a.close()
        b.close()
    after = loop.metrics()
    # The 0.2 s wait was spent idle (a generous lower bound: no timing claim).
    assert after.idle_time - first.idle_time >= 0.1
    assert after.loop_count > first.loop_count
    assert after.events >= first.events + 1
    assert after.events_waiting >= first.events_waiting
    loop.close()
    # A closed loop answers with its last counters.
    assert loop.metrics() == loop.metrics()
    assert loop.metrics().loop_count >= after.loop_count
