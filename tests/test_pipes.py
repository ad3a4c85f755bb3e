"""Pipe transports: loop.connect_read_pipe() and loop.connect_write_pipe().

Reference behaviour is the stdlib loop's; every test runs on both flavors.
"""

import asyncio
import errno
import gc
import os
import re
import socket
import sys

import pytest

from _util import (
    RecordingProtocol,
    arun,
    catch_loop_errors,
    open_fd_count,
    payload,
    sha256,
)

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(sys.platform == "win32",
                       reason="asyncio has no Unix pipe transports on Windows"),
]

MiB = 1024 * 1024


class FlowProtocol(RecordingProtocol):
    """RecordingProtocol with futures for pause_writing / resume_writing."""

    def __init__(self, loop):
        super().__init__(loop)
        self.paused = loop.create_future()
        self.resumed = loop.create_future()

    def pause_writing(self):
        super().pause_writing()
        if not self.paused.done():
            self.paused.set_result(None)

    def resume_writing(self):
        super().resume_writing()
        if not self.resumed.done():
            self.resumed.set_result(None)


async def read_pipe(loop, pipeobj):
    return await loop.connect_read_pipe(lambda: RecordingProtocol(loop),
                                        pipeobj)


async def write_pipe(loop, pipeobj):
    return await loop.connect_write_pipe(lambda: FlowProtocol(loop), pipeobj)


def write_all(fd, data, chunk=64 * 1024):
    """Blocking: write `data` to `fd` in chunks, then close it."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view[:chunk])
        view = view[n:]
    os.close(fd)


def read_exactly(fd, n):
    """Blocking: read `n` bytes from `fd` (fewer only at EOF)."""
    chunks = []
    while n > 0:
        chunk = os.read(fd, min(n, 1 << 16))
        if not chunk:
            break
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_to_eof(fd):
    """Blocking: read `fd` until EOF."""
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


async def settle(n=5):
    for _ in range(n):
        await asyncio.sleep(0.005)


def open_pty():
    try:
        return os.openpty()
    except (AttributeError, OSError) as exc:
        pytest.skip(f"no pty available: {exc!r}")


# ------------------------------------------------------------ read pipe


def test_read_pipe_data_then_eof(loop):
    async def main():
        errors = catch_loop_errors(loop)
        r, w = os.pipe()
        pipeobj = open(r, "rb", buffering=0)
        t, proto = await read_pipe(loop, pipeobj)
        assert proto.events == ["made"]
        assert proto.transport is t
        assert isinstance(t, asyncio.ReadTransport)
        assert t.get_protocol() is proto
        assert t.get_extra_info("pipe") is pipeobj
        assert t.is_closing() is False
        os.write(w, b"hello ")
        assert await proto.wait_bytes(6) == b"hello "
        os.write(w, b"pipe")
        assert await proto.wait_bytes(10) == b"hello pipe"
        os.close(w)
        assert await proto.lost is None
        assert bytes(proto.data) == b"hello pipe"
        assert proto.chunk_types == {bytes}
        assert proto.lifecycle() == ["made", "eof", "lost"]
        assert t.is_closing() is True
        assert pipeobj.closed
        assert errors == []
    arun(loop, main())


def test_read_pipe_1mib(loop):
    async def main():
        r, w = os.pipe()
        pipeobj = open(r, "rb", buffering=0)
        t, proto = await read_pipe(loop, pipeobj)
        data = payload(MiB, seed=11)
        await loop.run_in_executor(None, write_all, w, data)
        assert await proto.lost is None
        assert proto.lifecycle() == ["made", "eof", "lost"]
        assert len(proto.data) == len(data)
        assert sha256(proto.data) == sha256(data)
    arun(loop, main())


def test_read_pipe_close(loop):
    async def main():
        errors = catch_loop_errors(loop)
        r, w = os.pipe()
        pipeobj = open(r, "rb", buffering=0)
        t, proto = await read_pipe(loop, pipeobj)
        t.close()
        assert t.is_closing() is True
        assert await proto.lost is None
        assert proto.lifecycle() == ["made", "lost"]
        assert pipeobj.closed
        # the read end is really gone
        with pytest.raises(BrokenPipeError):
            os.write(w, b"x")
        os.close(w)
        assert errors == []
    arun(loop, main())


def test_read_pipe_pause_and_resume(loop):
    async def main():
        r, w = os.pipe()
        pipeobj = open(r, "rb", buffering=0)
        t, proto = await read_pipe(loop, pipeobj)
        os.write(w, b"first")
        assert await proto.wait_bytes(5) == b"first"
        t.pause_reading()
        t.pause_reading()  # idempotent
        os.write(w, b"second")
        await settle(10)
        assert bytes(proto.data) == b"first"
        t.resume_reading()
        t.resume_reading()  # idempotent
        assert await proto.wait_bytes(11) == b"firstsecond"
        # EOF is not noticed while paused either
        t.pause_reading()
        os.close(w)
        await settle(10)
        assert proto.lifecycle() == ["made"]
        t.resume_reading()
        assert await proto.lost is None
        assert proto.lifecycle() == ["made", "eof", "lost"]
        assert bytes(proto.data) == b"firstsecond"
    arun(loop, main())


@pytest.mark.skipif(sys.version_info < (3, 11),
                    reason="pipe transports have is_reading() since 3.11")
def test_read_pipe_is_reading(loop):
    async def main():
        r, w = os.pipe()
        t, proto = await read_pipe(loop, open(r, "rb", buffering=0))
        assert t.is_reading() is True
        t.pause_reading()
        assert t.is_reading() is False
        t.resume_reading()
        assert t.is_reading() is True
        t.close()
        assert t.is_reading() is False
        assert await proto.lost is None
        t.resume_reading()  # no-op once closed
        assert t.is_reading() is False
        os.close(w)
    arun(loop, main())


# ------------------------------------------------------------ write pipe


def test_write_pipe_write_arrives(loop):
    async def main():
        errors = catch_loop_errors(loop)
        r, w = os.pipe()
        pipeobj = open(w, "wb", buffering=0)
        t, proto = await write_pipe(loop, pipeobj)
        assert proto.events == ["made"]
        assert isinstance(t, asyncio.WriteTransport)
        assert t.get_protocol() is proto
        assert t.get_extra_info("pipe") is pipeobj
        assert t.can_write_eof() is True
        assert t.is_closing() is False
        assert t.get_write_buffer_size() == 0
        t.write(b"bytes|")
        t.write(bytearray(b"bytearray|"))
        t.write(memoryview(b"memoryview|"))
        t.write(b"")
        t.writelines([b"one,", b"two"])
        expected = b"bytes|bytearray|memoryview|one,two"
        got = await loop.run_in_executor(None, read_exactly, r, len(expected))
        assert got == expected
        assert t.get_write_buffer_size() == 0
        t.close()
        assert t.is_closing() is True
        assert await proto.lost is None
        assert proto.lifecycle() == ["made", "lost"]
        assert pipeobj.closed
        assert os.read(r, 10) == b""
        os.close(r)
        assert errors == []
    arun(loop, main())


def test_write_pipe_buffer_limits(loop):
    async def main():
        r, w = os.pipe()
        t, proto = await write_pipe(loop, open(w, "wb", buffering=0))
        assert t.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        t.set_write_buffer_limits(high=100)
        assert t.get_write_buffer_limits() == (25, 100)
        t.set_write_buffer_limits(high=100, low=10)
        assert t.get_write_buffer_limits() == (10, 100)
        t.set_write_buffer_limits(low=10)
        assert t.get_write_buffer_limits() == (10, 40)
        t.set_write_buffer_limits()
        assert t.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        with pytest.raises(ValueError):
            t.set_write_buffer_limits(high=10, low=100)
        with pytest.raises(ValueError):
            t.set_write_buffer_limits(high=-1)
        assert t.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        t.close()
        assert await proto.lost is None
        os.close(r)
    arun(loop, main())


def test_write_pipe_flow_control(loop):
    async def main():
        r, w = os.pipe()
        t, proto = await write_pipe(loop, open(w, "wb", buffering=0))
        data = payload(MiB, seed=5)
        t.write(data)
        await proto.paused
        assert 0 < t.get_write_buffer_size() <= len(data)
        await settle()
        assert proto.events == ["made", "pause"]
        got = await loop.run_in_executor(None, read_exactly, r, len(data))
        await proto.resumed
        assert len(got) == len(data)
        assert sha256(got) == sha256(data)
        assert t.get_write_buffer_size() == 0
        t.write_eof()
        assert await proto.lost is None
        assert proto.events == ["made", "pause", "resume", "lost"]
        assert os.read(r, 10) == b""
        os.close(r)
    arun(loop, main())


def test_write_pipe_write_eof_closes(loop):
    async def main():
        r, w = os.pipe()
        pipeobj = open(w, "wb", buffering=0)
        t, proto = await write_pipe(loop, pipeobj)
        t.write(b"last words")
        t.write_eof()
        assert t.is_closing() is True
        t.write_eof()  # a second call is a no-op
        # unlike socket transports, writing after write_eof() is silently
        # dropped, not a RuntimeError
        t.write(b"dropped")
        assert await proto.lost is None
        assert proto.lifecycle() == ["made", "lost"]
        assert pipeobj.closed
        assert await loop.run_in_executor(None, read_to_eof, r) == b"last words"
        os.close(r)
    arun(loop, main())


def test_write_pipe_close_flushes_buffer(loop):
    async def main():
        r, w = os.pipe()
        t, proto = await write_pipe(loop, open(w, "wb", buffering=0))
        data = payload(MiB, seed=6)
        t.write(data)
        t.close()
        assert t.is_closing() is True
        await settle()
        # nobody reads yet: the transport waits for its buffer to drain
        assert not proto.lost.done()
        got = await loop.run_in_executor(None, read_to_eof, r)
        assert len(got) == len(data)
        assert sha256(got) == sha256(data)
        assert await proto.lost is None
        assert proto.lifecycle() == ["made", "lost"]
        os.close(r)
    arun(loop, main())


def test_write_pipe_abort_discards_buffer(loop):
    async def main():
        r, w = os.pipe()
        pipeobj = open(w, "wb", buffering=0)
        t, proto = await write_pipe(loop, pipeobj)
        data = payload(MiB, seed=8)
        t.write(data)
        await proto.paused
        t.abort()
        assert t.is_closing() is True
        assert await proto.lost is None
        assert t.get_write_buffer_size() == 0
        assert pipeobj.closed
        got = await loop.run_in_executor(None, read_to_eof, r)
        assert len(got) < len(data)
        assert got == data[:len(got)]
        os.close(r)
    arun(loop, main())


def test_write_pipe_reader_closes_while_idle(loop):
    async def main():
        errors = catch_loop_errors(loop)
        r, w = os.pipe()
        pipeobj = open(w, "wb", buffering=0)
        t, proto = await write_pipe(loop, pipeobj)
        t.write(b"delivered")
        assert await loop.run_in_executor(None, read_exactly, r, 9) == (
            b"delivered")
        os.close(r)
        assert await proto.lost is None
        assert proto.lifecycle() == ["made", "lost"]
        assert t.is_closing() is True
        assert pipeobj.closed
        assert errors == []
    arun(loop, main())


def test_write_pipe_reader_closes_with_buffered_data(loop):
    async def main():
        errors = catch_loop_errors(loop)
        r, w = os.pipe()
        pipeobj = open(w, "wb", buffering=0)
        t, proto = await write_pipe(loop, pipeobj)
        t.write(payload(MiB, seed=9))
        await proto.paused
        assert t.get_write_buffer_size() > 0
        os.close(r)
        exc = await proto.lost
        assert isinstance(exc, BrokenPipeError)
        assert proto.lifecycle() == ["made", "lost"]
        assert t.is_closing() is True
        assert t.get_write_buffer_size() == 0
        assert pipeobj.closed
        t.write(b"after the end")  # silently dropped
        await settle()
        # asyncio does not report a peer-closed pipe to the handler
        assert errors == []
    arun(loop, main())


# ------------------------------------------------------------ fd ownership


@pytest.mark.parametrize("case", [
    "read-close", "read-eof", "write-close", "write-abort", "write-peer-gone",
])
def test_pipe_fd_closed_exactly_once(loop, case):
    """The transport closes the pipe object once, and never touches the fd
    number again after connection_lost()."""
    async def main():
        errors = catch_loop_errors(loop)
        r, w = os.pipe()
        if case.startswith("read"):
            pipeobj, other = open(r, "rb", buffering=0), w
            t, proto = await read_pipe(loop, pipeobj)
        else:
            pipeobj, other = open(w, "wb", buffering=0), r
            t, proto = await write_pipe(loop, pipeobj)
        fd = pipeobj.fileno()
        # made now, so that it cannot take the number `fd` frees
        sentinel_r, sentinel_w = os.pipe()
        if case == "read-eof":
            os.close(other)
        elif case == "write-abort":
            t.write(payload(MiB))
            t.abort()
        elif case == "write-peer-gone":
            os.close(other)
        else:
            t.close()
        assert await proto.lost is None
        assert pipeobj.closed
        with pytest.raises(OSError) as info:
            os.fstat(fd)
        assert info.value.errno == errno.EBADF
        lost_calls = proto.events.count("lost")
        # Reuse the number at once: a late second close() would hit it.
        os.dup2(sentinel_w, fd)
        try:
            del t, proto, pipeobj
            gc.collect()
            await settle(10)
            os.fstat(fd)
            os.write(fd, b"still mine")
            assert os.read(sentinel_r, 100) == b"still mine"
        finally:
            for f in (fd, sentinel_r, sentinel_w):
                os.close(f)
            if case in ("read-close", "write-close", "write-abort"):
                os.close(other)
        assert lost_calls == 1
        assert errors == []
    arun(loop, main())


def test_no_fd_leak(loop):
    if open_fd_count() is None:
        pytest.skip("needs /proc/self/fd")

    async def cycle():
        r, w = os.pipe()
        rt, reader = await read_pipe(loop, open(r, "rb", buffering=0))
        wt, writer = await write_pipe(loop, open(w, "wb", buffering=0))
        wt.write(b"round trip")
        assert await reader.wait_bytes(10) == b"round trip"
        wt.close()
        assert await writer.lost is None
        assert await reader.lost is None
        assert bytes(reader.data) == b"round trip"

    async def main():
        errors = catch_loop_errors(loop)
        # warm up lazily created per-loop resources
        await cycle()
        gc.collect()
        before = open_fd_count()
        for _ in range(3):
            await cycle()
        await settle()
        gc.collect()
        assert open_fd_count() == before
        assert errors == []
    arun(loop, main())


@pytest.mark.parametrize("direction", ["read", "write"])
def test_connection_lost_called_once(loop, direction):
    async def main():
        r, w = os.pipe()
        if direction == "read":
            t, proto = await read_pipe(loop, open(r, "rb", buffering=0))
            other = w
            t.close()
            t.close()
            t.pause_reading()
            t.resume_reading()
        else:
            t, proto = await write_pipe(loop, open(w, "wb", buffering=0))
            other = r
            t.close()
            t.close()
            t.write_eof()
        assert await proto.lost is None
        t.close()
        await settle(10)
        assert proto.events.count("lost") == 1
        assert proto.events.count("made") == 1
        os.close(other)
    arun(loop, main())


# ------------------------------------------------------------ what is accepted


@pytest.mark.parametrize("direction, message", [
    ("read", "Pipe transport is for pipes/sockets only."),
    ("write", "Pipe transport is only for pipes, sockets and character devices"),
], ids=["read", "write"])
def test_regular_file_is_refused(loop, tmp_path, direction, message):
    async def main():
        with open(tmp_path / "regular", "w+b", buffering=0) as f:
            connect = (loop.connect_read_pipe if direction == "read"
                       else loop.connect_write_pipe)
            with pytest.raises(ValueError, match=re.escape(message)):
                await connect(lambda: RecordingProtocol(loop), f)
            # the file is left open and usable
            assert not f.closed
            f.write(b"still usable")
            f.seek(0)
            assert f.read() == b"still usable"
    arun(loop, main())


def test_read_pipe_accepts_socket(loop):
    async def main():
        a, b = socket.socketpair()
        with b:
            t, proto = await read_pipe(loop, a)
            assert t.get_extra_info("pipe") is a
            b.sendall(b"via a socket")
            assert await proto.wait_bytes(12) == b"via a socket"
            b.shutdown(socket.SHUT_WR)
            assert await proto.lost is None
            assert proto.lifecycle() == ["made", "eof", "lost"]
            assert a.fileno() == -1
    arun(loop, main())


def test_write_pipe_accepts_socket(loop):
    async def main():
        a, b = socket.socketpair()
        with b:
            b.settimeout(5)
            t, proto = await write_pipe(loop, a)
            assert t.get_extra_info("pipe") is a
            t.write(b"via a socket")
            got = await loop.run_in_executor(None, b.recv, 100)
            assert got == b"via a socket"
            t.close()
            assert await proto.lost is None
            assert a.fileno() == -1
            assert b.recv(100) == b""
    arun(loop, main())


def test_read_pipe_pty(loop):
    tty = pytest.importorskip("tty")
    master, slave = open_pty()

    async def main():
        tty.setraw(slave)  # no newline translation
        pipeobj = open(master, "rb", buffering=0)
        t, proto = await read_pipe(loop, pipeobj)
        os.write(slave, b"through the pty\n")
        assert await proto.wait_bytes(16) == b"through the pty\n"
        t.close()
        assert await proto.lost is None
        assert proto.lifecycle() == ["made", "lost"]
        assert pipeobj.closed

    try:
        arun(loop, main())
    finally:
        os.close(slave)


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="EIO on a hung-up pty master is Linux behaviour")
def test_read_pipe_pty_hangup_is_eio(loop):
    """Closing the slave makes reads on the master fail with EIO: asyncio
    passes that OSError to connection_lost without eof_received() and
    without calling the exception handler."""
    master, slave = open_pty()

    async def main():
        errors = catch_loop_errors(loop)
        pipeobj = open(master, "rb", buffering=0)
        t, proto = await read_pipe(loop, pipeobj)
        os.write(slave, b"x")
        assert await proto.wait_bytes(1) == b"x"
        os.close(slave)
        exc = await proto.lost
        assert type(exc) is OSError
        assert exc.errno == errno.EIO
        assert proto.lifecycle() == ["made", "lost"]
        assert pipeobj.closed
        assert errors == []
    arun(loop, main())
