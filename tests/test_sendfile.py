"""loop.sendfile() on TCP transports and loop.sock_sendfile() on raw
sockets."""

import asyncio
import io
import socket
import sys

import pytest

from _util import (
    LOCALHOST,
    ProtocolFactory,
    arun,
    catch_loop_errors,
    payload,
    recv_all,
    set_linger_zero,
    sha256,
    tcp_pair,
)

pytestmark = pytest.mark.timeout(10)

MiB = 1024 * 1024


@pytest.fixture
def data_file(tmp_path):
    """A 3 MiB regular file opened for binary reading, and its content."""
    content = payload(3 * MiB + 123, seed=51)
    path = tmp_path / "blob.bin"
    path.write_bytes(content)
    with open(path, "rb") as f:
        yield f, content


async def sendfile_pair(loop):
    """(client, peer, server): the client transport is the one sending."""
    return await tcp_pair(loop)


async def done(client, peer, server):
    client.transport.close()
    await client.lost
    await peer.lost
    server.close()


def test_sendfile_whole_file(loop, data_file):
    f, content = data_file

    async def main():
        errors = catch_loop_errors(loop)
        client, peer, server = await sendfile_pair(loop)
        sent = await loop.sendfile(client.transport, f)
        assert sent == len(content)
        assert f.tell() == len(content)
        got = await peer.wait_bytes(len(content))
        assert sha256(got) == sha256(content)
        await done(client, peer, server)
        assert bytes(peer.data) == content
        assert errors == []
    arun(loop, main())


@pytest.mark.parametrize("offset,count", [
    (0, 1), (1000, 5000), (4096, None), (0, 2 * MiB), (3 * MiB, 10 * MiB),
])
def test_sendfile_offset_and_count(loop, data_file, offset, count):
    f, content = data_file
    end = len(content) if count is None else min(len(content), offset + count)
    expected = content[offset:end]

    async def main():
        client, peer, server = await sendfile_pair(loop)
        sent = await loop.sendfile(client.transport, f, offset, count)
        assert sent == len(expected)
        assert f.tell() == offset + sent
        got = await peer.wait_bytes(len(expected))
        assert got == expected
        await done(client, peer, server)
        assert bytes(peer.data) == expected
    arun(loop, main())


def test_sendfile_keyword_arguments(loop, data_file):
    f, content = data_file

    async def main():
        client, peer, server = await sendfile_pair(loop)
        sent = await loop.sendfile(client.transport, f, offset=10, count=20,
                                   fallback=True)
        assert sent == 20
        assert await peer.wait_bytes(20) == content[10:30]
        await done(client, peer, server)
    arun(loop, main())


def test_sendfile_keeps_order_with_writes(loop, data_file):
    f, content = data_file

    async def main():
        client, peer, server = await sendfile_pair(loop)
        t = client.transport
        t.write(b"HEADER\r\n")
        sent = await loop.sendfile(t, f, 0, 1 * MiB)
        t.write(b"\r\nTRAILER")
        expected = b"HEADER\r\n" + content[:MiB] + b"\r\nTRAILER"
        assert sent == MiB
        got = await peer.wait_bytes(len(expected))
        assert got == expected
        await done(client, peer, server)
    arun(loop, main())


def test_sendfile_twice_continues_from_position(loop, data_file):
    f, content = data_file

    async def main():
        client, peer, server = await sendfile_pair(loop)
        a = await loop.sendfile(client.transport, f, 0, 1000)
        b = await loop.sendfile(client.transport, f, f.tell(), 1000)
        assert (a, b) == (1000, 1000)
        assert await peer.wait_bytes(2000) == content[:2000]
        await done(client, peer, server)
    arun(loop, main())


def test_sendfile_from_server_side_transport(loop, data_file):
    f, content = data_file

    async def main():
        client, peer, server = await sendfile_pair(loop)
        sent = await loop.sendfile(peer.transport, f)
        assert sent == len(content)
        peer.transport.close()
        await client.eof
        assert sha256(bytes(client.data)) == sha256(content)
        await client.lost
        await peer.lost
        server.close()
    arun(loop, main())


def test_sendfile_empty_file(loop, tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")

    async def main():
        client, peer, server = await sendfile_pair(loop)
        with open(path, "rb") as f:
            assert await loop.sendfile(client.transport, f) == 0
        client.transport.write(b"end")
        assert await peer.wait_bytes(3) == b"end"
        await done(client, peer, server)
    arun(loop, main())


def test_sendfile_transport_still_reads_afterwards(loop, data_file):
    f, content = data_file

    async def main():
        client, peer, server = await sendfile_pair(loop)
        assert client.transport.is_reading()
        await loop.sendfile(client.transport, f, 0, 100_000)
        assert client.transport.is_reading()
        peer.transport.write(b"reply")
        assert await client.wait_bytes(5) == b"reply"
        await peer.wait_bytes(100_000)
        await done(client, peer, server)
    arun(loop, main())


def test_sendfile_fallback_for_non_regular_file(loop):
    content = payload(MiB + 7, seed=52)

    async def main():
        client, peer, server = await sendfile_pair(loop)
        buf = io.BytesIO(content)
        sent = await loop.sendfile(client.transport, buf, 5, None,
                                   fallback=True)
        assert sent == len(content) - 5
        assert buf.tell() == len(content)
        got = await peer.wait_bytes(len(content) - 5)
        assert got == content[5:]
        await done(client, peer, server)
    arun(loop, main())


def test_sendfile_no_fallback_for_non_regular_file(loop):
    async def main():
        client, peer, server = await sendfile_pair(loop)
        with pytest.raises(asyncio.SendfileNotAvailableError):
            await loop.sendfile(client.transport, io.BytesIO(b"abc"),
                                fallback=False)
        assert issubclass(asyncio.SendfileNotAvailableError, RuntimeError)
        # the transport is still usable
        assert not client.transport.is_closing()
        client.transport.write(b"ok")
        assert await peer.wait_bytes(2) == b"ok"
        await done(client, peer, server)
    arun(loop, main())


def test_sendfile_argument_errors(loop, data_file, tmp_path):
    f, _ = data_file
    text_path = tmp_path / "text.txt"
    text_path.write_text("hello")

    async def main():
        client, peer, server = await sendfile_pair(loop)
        t = client.transport
        with pytest.raises(ValueError):
            await loop.sendfile(t, f, 0, 0)
        with pytest.raises(ValueError):
            await loop.sendfile(t, f, -1)
        with pytest.raises(TypeError):
            await loop.sendfile(t, f, 0, "10")
        with pytest.raises(TypeError):
            await loop.sendfile(t, f, 1.5)
        with open(text_path) as tf:
            with pytest.raises(ValueError):
                await loop.sendfile(t, tf)
        assert not t.is_closing()
        t.write(b"fine")
        assert await peer.wait_bytes(4) == b"fine"
        t.close()
        with pytest.raises(RuntimeError):
            await loop.sendfile(t, f)
        await client.lost
        await peer.lost
        server.close()
    arun(loop, main())


def test_write_during_sendfile_is_runtime_error(loop, tmp_path):
    content = payload(32 * MiB, seed=53)
    path = tmp_path / "big.bin"
    path.write_bytes(content)

    async def main():
        client, peer, server = await sendfile_pair(loop)
        peer.transport.pause_reading()
        with open(path, "rb") as f:
            task = loop.create_task(loop.sendfile(client.transport, f))
            for _ in range(3):
                await asyncio.sleep(0)
            assert not task.done()
            with pytest.raises(RuntimeError):
                client.transport.write(b"interleaved")
            with pytest.raises(RuntimeError):
                client.transport.writelines([b"interleaved"])
            peer.transport.resume_reading()
            assert await task == len(content)
        got = await peer.wait_bytes(len(content))
        assert sha256(got) == sha256(content)
        # writing works again once sendfile is over
        client.transport.write(b"after")
        got = await peer.wait_bytes(len(content) + 5)
        assert got[-5:] == b"after"
        await done(client, peer, server)
    arun(loop, main())


@pytest.mark.skipif(sys.platform == "win32",
                    reason="Windows has no os.sendfile: asyncio's Proactor sends the whole "
                           "file in one TransmitFile call, uvrs falls back to reads and writes")
def test_sendfile_peer_reset(loop, tmp_path):
    content = payload(32 * MiB, seed=54)
    path = tmp_path / "big.bin"
    path.write_bytes(content)

    async def main():
        errors = catch_loop_errors(loop)
        factory = ProtocolFactory(loop)
        client, peer, server = await tcp_pair(loop, server_factory=factory)
        peer.transport.pause_reading()
        with open(path, "rb") as f:
            task = loop.create_task(loop.sendfile(client.transport, f))
            await asyncio.sleep(0.01)
            set_linger_zero(peer.transport.get_extra_info("socket"))
            peer.transport.abort()
            # The BSDs' send path reports the shut connection (EPIPE) before
            # the reset.
            expected = (ConnectionResetError if sys.platform.startswith("linux")
                        else (ConnectionResetError, BrokenPipeError))
            with pytest.raises(expected):
                await task
            # the file position reflects what was handed to the kernel
            assert 0 < f.tell() < len(content)
        # asyncio leaves the transport open after a failed sendfile; it then
        # notices the dead connection by itself (EOF -> close, lost(None)).
        exc = await client.lost
        assert exc is None or isinstance(exc, ConnectionError)
        assert client.lifecycle()[0] == "made"
        assert client.lifecycle()[-1] == "lost"
        server.close()
        assert errors == []
    arun(loop, main())


# ------------------------------------------------------------ sock_sendfile


async def raw_socket_pair(loop):
    """(sender, receiver): sender is a non-blocking client socket, receiver
    a blocking accepted socket for use in an executor."""
    listener = socket.socket()
    listener.bind((LOCALHOST, 0))
    listener.listen(1)
    sender = socket.create_connection(listener.getsockname(), timeout=5)
    receiver, _ = listener.accept()
    listener.close()
    sender.setblocking(False)
    return sender, receiver


@pytest.mark.parametrize("offset,count", [(0, None), (100, 1000),
                                          (MiB, None)])
def test_sock_sendfile(loop, data_file, offset, count):
    f, content = data_file
    end = len(content) if count is None else offset + count
    expected = content[offset:end]

    async def main():
        sender, receiver = await raw_socket_pair(loop)
        reading = loop.run_in_executor(None, recv_all, receiver)
        try:
            sent = await loop.sock_sendfile(sender, f, offset, count)
            assert sent == len(expected)
            assert f.tell() == offset + sent
            sender.shutdown(socket.SHUT_WR)
            got = await reading
            assert sha256(got) == sha256(expected)
        finally:
            sender.close()
            receiver.close()
    arun(loop, main())


def test_sock_sendfile_fallback(loop):
    content = payload(300_000, seed=55)

    async def main():
        sender, receiver = await raw_socket_pair(loop)
        reading = loop.run_in_executor(None, recv_all, receiver)
        try:
            sent = await loop.sock_sendfile(sender, io.BytesIO(content),
                                            fallback=True)
            assert sent == len(content)
            with pytest.raises(asyncio.SendfileNotAvailableError):
                await loop.sock_sendfile(sender, io.BytesIO(b"x"),
                                         fallback=False)
            sender.shutdown(socket.SHUT_WR)
            assert await reading == content
        finally:
            sender.close()
            receiver.close()
    arun(loop, main())


def test_sock_sendfile_argument_errors(loop, data_file):
    f, _ = data_file

    async def main():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.setblocking(False)
            with pytest.raises(ValueError):
                await loop.sock_sendfile(udp, f)
        sender, receiver = await raw_socket_pair(loop)
        try:
            with pytest.raises(ValueError):
                await loop.sock_sendfile(sender, f, 0, 0)
            with pytest.raises(ValueError):
                await loop.sock_sendfile(sender, f, -5)
            with pytest.raises(TypeError):
                await loop.sock_sendfile(sender, f, 0, 1.0)
        finally:
            sender.close()
            receiver.close()
    arun(loop, main())
