"""Protocol callbacks run in a copy of the context current when the
transport (or the server) was created, as asyncio's selector transports do."""

import asyncio
import contextvars
import socket

import pytest

from _util import LOCALHOST, arun

pytestmark = pytest.mark.timeout(20)

cvar = contextvars.ContextVar("cvar", default="outer")


class Seen(asyncio.Protocol):
    def __init__(self, loop):
        self.seen = {}
        self.lost = loop.create_future()
        self.got_data = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.seen["made"] = cvar.get()

    def data_received(self, data):
        self.seen["data"] = cvar.get()
        if not self.got_data.done():
            self.got_data.set_result(data)

    def eof_received(self):
        self.seen["eof"] = cvar.get()

    def connection_lost(self, exc):
        self.seen["lost"] = cvar.get()
        self.lost.set_result(exc)


def _set_and_run(loop, coro_fn):
    async def main():
        cvar.set("inner")
        return await coro_fn()

    # A fresh context per run so "outer" is the default everywhere else.
    return contextvars.Context().run(arun, loop, main())


def test_client_protocol_callbacks_see_the_creators_context(loop):
    async def body():
        listener = socket.create_server((LOCALHOST, 0))
        port = listener.getsockname()[1]
        transport, proto = await loop.create_connection(
            lambda: Seen(loop), LOCALHOST, port
        )
        peer, _ = await loop.run_in_executor(None, listener.accept)
        with listener, peer:
            peer.sendall(b"hello")
            assert await asyncio.wait_for(proto.got_data, 5) == b"hello"
            peer.shutdown(socket.SHUT_WR)
            await asyncio.wait_for(proto.lost, 5)
        return proto

    proto = _set_and_run(loop, body)
    assert proto.seen["made"] == "inner"
    assert proto.seen["data"] == "inner"
    assert proto.seen["eof"] == "inner"


def test_server_protocol_callbacks_see_the_servers_context(loop):
    made = []

    def factory():
        made.append(cvar.get())
        proto = Seen(loop)
        protos.append(proto)
        return proto

    protos = []

    async def body():
        server = await loop.create_server(factory, LOCALHOST, 0)
        port = server.sockets[0].getsockname()[1]

        async def client():
            # The client runs in a context of its own.
            cvar.set("client")
            r, w = await asyncio.open_connection(LOCALHOST, port)
            w.write(b"ping")
            await w.drain()
            w.close()
            await w.wait_closed()

        await contextvars.Context().run(asyncio.ensure_future, client())
        for _ in range(100):
            if protos and protos[0].lost.done():
                break
            await asyncio.sleep(0.01)
        server.close()
        await server.wait_closed()

    _set_and_run(loop, body)
    assert made == ["inner"]
    assert protos[0].seen["made"] == "inner"
    assert protos[0].seen["data"] == "inner"


def test_datagram_callbacks_see_the_creators_context(loop):
    class D(asyncio.DatagramProtocol):
        def __init__(self):
            self.got = loop.create_future()

        def datagram_received(self, data, addr):
            if not self.got.done():
                self.got.set_result(cvar.get())

    async def body():
        transport, proto = await loop.create_datagram_endpoint(
            D, local_addr=(LOCALHOST, 0)
        )
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sender.sendto(b"x", transport.get_extra_info("sockname"))
            return await asyncio.wait_for(proto.got, 5)
        finally:
            sender.close()
            transport.close()

    assert _set_and_run(loop, body) == "inner"
