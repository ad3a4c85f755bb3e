"""Raw socket operations (sock_*) and fd watchers (add_reader/add_writer)."""

import asyncio
import hashlib
import os
import socket
import sys

import pytest

from _util import arun, run_briefly, run_child

pytestmark = pytest.mark.timeout(30)


def _pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def test_accept_connect_send_recv_roundtrip(loop):
    async def main():
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        srv.setblocking(False)
        client = socket.socket()
        client.setblocking(False)
        try:
            accepting = loop.create_task(loop.sock_accept(srv))
            await loop.sock_connect(client, ("127.0.0.1", srv.getsockname()[1]))
            conn, addr = await accepting
            assert conn.gettimeout() == 0
            assert addr == client.getsockname()
            data = os.urandom(3 * 1024 * 1024)
            sending = loop.create_task(loop.sock_sendall(client, data))
            got = bytearray()
            while len(got) < len(data):
                chunk = await loop.sock_recv(conn, 65536)
                assert chunk
                got += chunk
            await sending
            assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
            conn.close()
        finally:
            client.close()
            srv.close()

    arun(loop, main())


def test_recv_into(loop):
    async def main():
        a, b = _pair()
        try:
            buf = bytearray(16)
            reading = loop.create_task(loop.sock_recv_into(a, buf))
            await asyncio.sleep(0)
            await loop.sock_sendall(b, b"abcdef")
            n = await reading
            assert bytes(buf[:n]) == b"abcdef"
        finally:
            a.close()
            b.close()

    arun(loop, main())


def test_recv_returns_empty_on_eof(loop):
    async def main():
        a, b = _pair()
        try:
            reading = loop.create_task(loop.sock_recv(a, 100))
            await asyncio.sleep(0)
            b.close()
            assert await reading == b""
        finally:
            a.close()

    arun(loop, main())


def test_connect_refused(loop):
    async def main():
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()  # nothing listens there now
        s = socket.socket()
        s.setblocking(False)
        try:
            with pytest.raises(ConnectionRefusedError):
                await loop.sock_connect(s, ("127.0.0.1", port))
        finally:
            s.close()

    arun(loop, main())


@pytest.mark.fd_watchers
def test_cancelled_recv_unregisters_reader(loop):
    async def main():
        a, b = _pair()
        try:
            reading = loop.create_task(loop.sock_recv(a, 100))
            await asyncio.sleep(0)
            reading.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reading
            # The fd is free again: a new recv works and gets the data.
            await loop.sock_sendall(b, b"after")
            assert await loop.sock_recv(a, 100) == b"after"
            assert loop.remove_reader(a) is False
        finally:
            a.close()
            b.close()

    arun(loop, main())


@pytest.mark.fd_watchers
def test_add_reader_calls_back_until_removed(loop):
    a, b = _pair()
    try:
        got = []

        def on_readable(tag):
            got.append((tag, a.recv(100)))

        loop.add_reader(a, on_readable, "r")
        b.send(b"one")
        run_briefly(loop)
        assert got == [("r", b"one")]
        assert loop.remove_reader(a.fileno()) is True
        assert loop.remove_reader(a.fileno()) is False
        b.send(b"two")
        run_briefly(loop)
        assert got == [("r", b"one")]
    finally:
        a.close()
        b.close()


@pytest.mark.fd_watchers
def test_add_writer_and_replacing_a_reader(loop):
    a, b = _pair()
    try:
        calls = []
        loop.add_writer(a, calls.append, "w")
        run_briefly(loop)
        assert calls and set(calls) == {"w"}
        assert loop.remove_writer(a) is True
        calls.clear()
        # A second add_reader replaces the first callback.
        loop.add_reader(a, calls.append, "first")
        loop.add_reader(a, calls.append, "second")
        b.send(b"x")
        run_briefly(loop)
        assert calls and set(calls) == {"second"}
        loop.remove_reader(a)
    finally:
        a.close()
        b.close()


@pytest.mark.fd_watchers
def test_add_reader_bad_fd_object(loop):
    with pytest.raises(ValueError):
        loop.add_reader(object(), print)
    with pytest.raises(ValueError):
        loop.add_reader(-1, print)


@pytest.mark.fd_watchers
def test_fd_watchers_on_closed_loop(loop):
    a, b = _pair()
    try:
        loop.close()
        with pytest.raises(RuntimeError):
            loop.add_reader(a, print)
        assert loop.remove_reader(a) is False
        assert loop.remove_writer(a) is False
    finally:
        a.close()
        b.close()


def test_sock_recv_sizes_and_bad_sizes(loop):
    """recv(0) gives b'', a negative size is a ValueError, and data already
    waiting is returned without the call suspending."""

    async def main():
        a, b = _pair()
        with a, b:
            assert await loop.sock_recv(a, 0) == b""
            with pytest.raises(ValueError):
                await loop.sock_recv(a, -1)
            with pytest.raises(TypeError):
                await loop.sock_recv(a, "10")
            b.send(b"ready")
            await asyncio.sleep(0.01)
            assert await loop.sock_recv(a, 100) == b"ready"
            b.close()
            assert await loop.sock_recv(a, 100) == b""

    arun(loop, main())


@pytest.mark.fd_watchers
def test_sock_recv_after_peer_reset(loop):
    async def main():
        a, b = _pair()
        with a:
            pending = loop.create_task(loop.sock_recv(a, 100))
            await asyncio.sleep(0.01)
            b.close()
            assert await asyncio.wait_for(pending, 5) == b""
            # The reader was unregistered when the call ended.
            assert loop.remove_reader(a.fileno()) is False

    arun(loop, main())


def test_sock_recv_then_close_frees_the_fd_at_once(loop):
    """After a sock_recv, close() closes the fd immediately (the loop keeps
    no reference), and the fd number can serve a new socket at once."""

    async def main():
        a, b = _pair()
        with b:
            pending = loop.create_task(loop.sock_recv(a, 10))
            await asyncio.sleep(0.01)
            b.send(b"one")
            assert await pending == b"one"
            fd = a.fileno()
            a.close()
            assert a.fileno() == -1
            with pytest.raises(OSError):
                os.fstat(fd)

    arun(loop, main())


class _FirstData(asyncio.Protocol):
    data = None

    def data_received(self, data):
        if self.data is None:
            self.data = data


def test_fd_number_reused_right_after_close(loop):
    """A socket closed right after a sock_recv, its fd number reused at once
    by a TCP connection and by another sock_recv: both work."""

    async def main():
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        srv.setblocking(False)
        port = srv.getsockname()[1]
        with srv:
            for _ in range(3):
                a, b = _pair()
                with b:
                    pending = loop.create_task(loop.sock_recv(a, 10))
                    await asyncio.sleep(0)
                    b.send(b"x")
                    assert await pending == b"x"
                    a.close()
                # Same batch: a new socket probably gets the freed number.
                c, d = _pair()
                with c, d:
                    waiting = loop.create_task(loop.sock_recv(c, 10))
                    await asyncio.sleep(0.01)
                    d.send(b"again")
                    assert await asyncio.wait_for(waiting, 5) == b"again"
                a, b = _pair()
                with b:
                    pending = loop.create_task(loop.sock_recv(a, 10))
                    await asyncio.sleep(0)
                    b.send(b"y")
                    assert await pending == b"y"
                    a.close()
                # Same batch: a TCP transport opens on a reused number.
                tr, proto = await asyncio.wait_for(
                    loop.create_connection(_FirstData, "127.0.0.1", port), 5
                )
                conn, _ = await asyncio.wait_for(loop.sock_accept(srv), 5)
                with conn:
                    conn.send(b"to transport")
                    while proto.data is None:
                        await asyncio.sleep(0.01)
                    assert proto.data == b"to transport"
                tr.close()
                # And a connection adopted from a socket: its duplicate is
                # likely to get the number just freed.
                a, b = _pair()
                with b:
                    pending = loop.create_task(loop.sock_recv(a, 10))
                    await asyncio.sleep(0)
                    b.send(b"z")
                    assert await pending == b"z"
                    a.close()
                    e, f = socket.socketpair()
                    with e, f:
                        tr, proto = await loop.connect_accepted_socket(_FirstData, e)
                        f.send(b"adopted")
                        while proto.data is None:
                            await asyncio.sleep(0.01)
                        assert proto.data == b"adopted"
                        tr.close()

    arun(loop, main(), timeout=15)


@pytest.mark.fd_watchers
def test_many_sock_recv_rounds_on_one_socket(loop):
    async def main():
        a, b = _pair()
        with a, b:
            for i in range(200):
                pending = loop.create_task(loop.sock_recv(a, 100))
                await asyncio.sleep(0)
                b.send(str(i).encode())
                assert await asyncio.wait_for(pending, 5) == str(i).encode()
            # Nothing left registered once the calls are over.
            await asyncio.sleep(0.01)
            assert loop.remove_reader(a.fileno()) is False

    arun(loop, main())


@pytest.mark.fd_watchers
@pytest.mark.skipif(sys.platform == "win32", reason="socketpair fds: POSIX")
@pytest.mark.parametrize("then", ["nothing", "reuse"])
def test_fd_closed_with_a_registration_change_pending(flavor, then):
    """A watch changes (reader, then writer added) and user code closes the
    fd before the loop polls again. libuv applies epoll changes at its next
    poll, and aborts the process if one fails; uvrs must drop the change.
    (Found by the benchmark kit: sock_sendall waited for writability, then
    the client closed its socket.) With "reuse", a new socket takes the same
    fd number before the poll, and the old watch must not wake for it."""
    out = run_child(flavor, f"""
        import socket
        loop = new_event_loop()
        def run_once():
            loop.call_soon(loop.stop)
            loop.run_forever()
        a, b = socket.socketpair()
        fd = a.fileno()
        calls = []
        loop.add_reader(fd, calls.append, "r")
        run_once()
        loop.add_writer(fd, calls.append, "w")
        a.close()
        if {then!r} == "reuse":
            c, d = socket.socketpair()
            assert fd in (c.fileno(), d.fileno())
        for _ in range(3):
            run_once()
        for remove in (loop.remove_writer, loop.remove_reader):
            try:
                remove(fd)
            except OSError:
                pass  # asyncio's selector modifies the registration of a closed fd
        loop.close()
        print("alive", calls)
    """)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "alive []"


def _tcp_pair(loop):
    """A connected non-blocking TCP pair on loopback (client, server side)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    with srv:
        client = socket.create_connection(srv.getsockname())
        conn, _ = srv.accept()
    client.setblocking(False)
    conn.setblocking(False)
    return client, conn


async def _recv_exactly(loop, sock, n, chunk=65536, pause=0.0):
    got = bytearray()
    while len(got) < n:
        data = await loop.sock_recv(sock, chunk)
        assert data, "EOF before all data"
        got += data
        if pause:
            await asyncio.sleep(pause)
    return bytes(got)


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview"])
def test_sock_sendall_large_to_a_slow_reader(loop, kind):
    # The first send() takes only part; the rest waits for writability
    # several times. Every byte arrives in order, whatever the buffer type.
    raw = os.urandom(4 * 1024 * 1024)
    if kind == "bytes":
        data = raw
    elif kind == "bytearray":
        data = bytearray(raw)
    else:
        data = memoryview(b"xx" + raw)[2:]

    async def main():
        a, b = _tcp_pair(loop)
        with a, b:
            sending = loop.create_task(loop.sock_sendall(a, data))
            got = await _recv_exactly(loop, b, len(raw), chunk=32768, pause=0.001)
            assert await sending is None
            assert hashlib.sha256(got).digest() == hashlib.sha256(raw).digest()
            assert loop.remove_writer(a.fileno()) is False

    arun(loop, main())


def test_sock_sendall_and_recv_on_one_socket_at_once(loop):
    # Full duplex on both sockets: each side sends 4 MiB while receiving the
    # other's; the reader and the writer of one fd are watched together.
    n = 4 * 1024 * 1024
    out_a, out_b = os.urandom(n), os.urandom(n)

    async def main():
        a, b = _tcp_pair(loop)
        with a, b:
            results = await asyncio.gather(
                loop.sock_sendall(a, out_a),
                loop.sock_sendall(b, out_b),
                _recv_exactly(loop, a, n),
                _recv_exactly(loop, b, n),
            )
            assert results[0] is None and results[1] is None
            assert results[2] == out_b
            assert results[3] == out_a
            # The sockets stay usable for small exchanges afterwards.
            await loop.sock_sendall(a, b"ping")
            assert await _recv_exactly(loop, b, 4) == b"ping"

    arun(loop, main())


def test_sock_sendall_cancelled_mid_send(loop):
    # Cancelling a sock_sendall that waits for writability raises
    # CancelledError, unregisters the writer and sends nothing more: the
    # peer reads a prefix of the data, and a later sock_sendall works.
    data = os.urandom(16 * 1024 * 1024)

    async def main():
        a, b = _tcp_pair(loop)
        with a, b:
            sending = loop.create_task(loop.sock_sendall(a, data))
            for _ in range(5):
                await asyncio.sleep(0)
            assert not sending.done()
            sending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await sending
            assert loop.remove_writer(a.fileno()) is False
            got = bytearray()
            while True:
                try:
                    chunk = b.recv(1 << 20)
                except BlockingIOError:
                    await asyncio.sleep(0.05)
                    try:
                        chunk = b.recv(1 << 20)
                    except BlockingIOError:
                        break
                got += chunk
            assert 0 < len(got) < len(data)
            assert bytes(got) == data[: len(got)]
            await loop.sock_sendall(a, b"tail")
            assert await _recv_exactly(loop, b, 4) == b"tail"

    arun(loop, main())


@pytest.mark.parametrize("then", ["eof", "small"])
def test_sock_recv_large_reads_then_small_ones(loop, then):
    # 100 KiB sock_recv()s that get tens of KiB each, then short answers
    # (or EOF) to the same large request: every read is exactly the bytes
    # sent, whatever buffer it was made in.
    async def main():
        a, b = _pair()
        try:
            data = os.urandom(2 * 1024 * 1024)
            sending = loop.create_task(loop.sock_sendall(b, data))
            got = bytearray()
            while len(got) < len(data):
                chunk = await loop.sock_recv(a, 102400)
                assert type(chunk) is bytes
                assert 0 < len(chunk) <= 102400
                got += chunk
            await sending
            assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
            if then == "eof":
                b.shutdown(socket.SHUT_WR)
                assert await loop.sock_recv(a, 102400) == b""
                return
            for msg in (b"x", b"hello", os.urandom(40000), b"end"):
                await loop.sock_sendall(b, msg)
                got = b""
                while len(got) < len(msg):
                    got += await loop.sock_recv(a, 102400)
                assert got == msg
        finally:
            a.close()
            b.close()

    arun(loop, main())
