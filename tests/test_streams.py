"""asyncio streams (open_connection / start_server) on top of the loop's
TCP transports."""

import asyncio
import socket

import pytest

from _util import LOCALHOST, arun, catch_loop_errors, payload, rst_close, sha256

pytestmark = pytest.mark.timeout(10)

MiB = 1024 * 1024


async def start(handler, **kwargs):
    server = await asyncio.start_server(handler, LOCALHOST, 0, **kwargs)
    return server, server.sockets[0].getsockname()[1]


async def upper_lines(reader, writer):
    while True:
        line = await reader.readline()
        if not line:
            break
        writer.write(line.upper())
        await writer.drain()
    writer.close()
    await writer.wait_closed()


def test_readline_echo(loop):
    async def main():
        errors = catch_loop_errors(loop)
        server, port = await start(upper_lines)
        reader, writer = await asyncio.open_connection(LOCALHOST, port)
        assert isinstance(reader, asyncio.StreamReader)
        assert isinstance(writer, asyncio.StreamWriter)
        assert writer.get_extra_info("peername") == (LOCALHOST, port)
        assert isinstance(writer.transport, asyncio.Transport)
        for i in range(20):
            writer.write(b"line %d\n" % i)
            await writer.drain()
            assert await reader.readline() == b"LINE %d\n" % i
        writer.write(b"last line without newline")
        assert writer.can_write_eof()
        writer.write_eof()
        assert await reader.readline() == b"LAST LINE WITHOUT NEWLINE"
        assert await reader.readline() == b""
        assert reader.at_eof()
        writer.close()
        assert writer.is_closing()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        assert errors == []
    arun(loop, main())


def test_readexactly_and_incomplete_read(loop):
    async def handler(reader, writer):
        writer.write(b"0123456789")
        await writer.drain()
        writer.close()

    async def main():
        server, port = await start(handler)
        reader, writer = await asyncio.open_connection(LOCALHOST, port)
        assert await reader.readexactly(4) == b"0123"
        assert await reader.readexactly(3) == b"456"
        with pytest.raises(asyncio.IncompleteReadError) as info:
            await reader.readexactly(5)
        assert info.value.partial == b"789"
        assert info.value.expected == 5
        assert isinstance(info.value, EOFError)
        with pytest.raises(asyncio.IncompleteReadError) as info:
            await reader.readexactly(1)
        assert info.value.partial == b""
        writer.close()
        await writer.wait_closed()
        server.close()
    arun(loop, main())


def test_read_until_eof_and_readuntil(loop):
    async def handler(reader, writer):
        writer.write(b"alpha::beta::gamma")
        writer.write_eof()
        await reader.read()
        writer.close()

    async def main():
        server, port = await start(handler)
        reader, writer = await asyncio.open_connection(LOCALHOST, port)
        assert await reader.readuntil(b"::") == b"alpha::"
        assert await reader.read(2) == b"be"
        assert await reader.readuntil(b"::") == b"ta::"
        assert await reader.read() == b"gamma"
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        server.close()
    arun(loop, main())


def test_limit_overrun(loop):
    async def handler(reader, writer):
        writer.write(b"x" * 100 + b"\n" + b"y" * 100 + b"\n")
        await writer.drain()
        await reader.read()
        writer.close()

    async def main():
        server, port = await start(handler)
        reader, writer = await asyncio.open_connection(LOCALHOST, port,
                                                       limit=16)
        with pytest.raises(ValueError):
            await reader.readline()
        with pytest.raises(asyncio.LimitOverrunError):
            await reader.readuntil(b"\n")
        writer.close()
        await writer.wait_closed()
        server.close()
    arun(loop, main())


def test_drain_big_transfer(loop):
    data = payload(20 * MiB, seed=31)

    async def handler(reader, writer):
        got = bytearray()
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            got += chunk
        writer.write(sha256(bytes(got)).encode())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server, port = await start(handler)
        reader, writer = await asyncio.open_connection(LOCALHOST, port)
        view = memoryview(data)
        for off in range(0, len(data), MiB):
            writer.write(view[off:off + MiB])
            await writer.drain()
        writer.write_eof()
        digest = await reader.read()
        assert digest == sha256(data).encode()
        writer.close()
        await writer.wait_closed()
        server.close()
    arun(loop, main())


def test_drain_waits_for_slow_reader(loop):
    async def main():
        gate = loop.create_future()
        done = loop.create_future()

        async def handler(reader, writer):
            await gate
            total = 0
            while True:
                chunk = await reader.read(1 << 20)
                if not chunk:
                    break
                total += len(chunk)
            done.set_result(total)
            writer.close()

        server, port = await start(handler)
        reader, writer = await asyncio.open_connection(LOCALHOST, port)
        size = 64 * MiB
        writer.write(payload(size, seed=32))
        drain = loop.create_task(writer.drain())
        await asyncio.sleep(0.05)
        assert not drain.done()
        gate.set_result(None)
        await drain
        writer.write_eof()
        assert await done == size
        writer.close()
        await writer.wait_closed()
        server.close()
    arun(loop, main())


def test_client_connected_cb_plain_function(loop):
    async def main():
        seen = []

        def handler(reader, writer):
            seen.append(writer.get_extra_info("peername"))
            writer.write(b"hi from a plain callback")
            writer.close()

        server, port = await start(handler)
        reader, writer = await asyncio.open_connection(LOCALHOST, port)
        assert await reader.read() == b"hi from a plain callback"
        assert seen == [writer.get_extra_info("sockname")]
        writer.close()
        await writer.wait_closed()
        server.close()
    arun(loop, main())


def test_many_stream_clients(loop):
    async def handler(reader, writer):
        data = await reader.read()
        writer.write(data[::-1])
        await writer.drain()
        writer.close()

    async def client(port, i):
        reader, writer = await asyncio.open_connection(LOCALHOST, port)
        msg = payload(1000 + i, seed=i)
        writer.write(msg)
        writer.write_eof()
        assert await reader.read() == msg[::-1]
        writer.close()
        await writer.wait_closed()

    async def main():
        server, port = await start(handler)
        await asyncio.gather(*[client(port, i) for i in range(50)])
        server.close()
        await server.wait_closed()
    arun(loop, main())


def test_wait_closed_and_drain_after_close(loop):
    async def handler(reader, writer):
        await reader.read()
        writer.close()

    async def main():
        server, port = await start(handler)
        reader, writer = await asyncio.open_connection(LOCALHOST, port)
        writer.write(b"x")
        writer.close()
        assert writer.is_closing()
        await writer.wait_closed()
        await writer.wait_closed()  # again: returns at once
        with pytest.raises(ConnectionResetError):
            await writer.drain()
        server.close()
    arun(loop, main())


def test_stream_read_raises_after_reset(loop):
    async def main():
        listener = socket.socket()
        listener.bind((LOCALHOST, 0))
        listener.listen(1)
        reader, writer = await asyncio.open_connection(
            *listener.getsockname())
        peer, _ = listener.accept()
        listener.close()
        peer.sendall(b"some bytes")
        assert await reader.readexactly(10) == b"some bytes"
        rst_close(peer)
        with pytest.raises(ConnectionResetError):
            await reader.read(100)
        writer.close()
        with pytest.raises(ConnectionResetError):
            await writer.wait_closed()
    arun(loop, main())
