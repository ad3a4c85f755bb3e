"""Datagram sock_* operations, cancellation of sock_* calls, and the error
behaviour of the fd watchers (add_reader/add_writer/remove_*).

Basic watcher behaviour and sock_recv cancellation are in test_sock_ops.py.
"""

import asyncio
import os
import shutil
import socket
import sys
import tempfile

import pytest

from _util import (
    LOCALHOST,
    LOCALHOST6,
    UNBOUND_UNIX_ADDR,
    arun,
    catch_loop_errors,
    ipv6_loopback_available,
    run_briefly,
)

pytestmark = pytest.mark.timeout(30)

needs_dgram_ops = pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="sock_recvfrom/sock_recvfrom_into/sock_sendto are 3.11+")
needs_unix = pytest.mark.skipif(
    sys.platform == "win32" or not hasattr(socket, "AF_UNIX"),
    reason="AF_UNIX datagram sockets are Unix-only")


def _udp(family=socket.AF_INET, host=LOCALHOST):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.setblocking(False)
    return s


@pytest.fixture
def udp_pair():
    a, b = _udp(), _udp()
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def sockdir():
    path = tempfile.mkdtemp(dir="/tmp", prefix="uvrs-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------
# sock_sendto / sock_recvfrom / sock_recvfrom_into


@needs_dgram_ops
def test_sendto_recvfrom_roundtrip(loop, udp_pair):
    a, b = udp_pair

    async def main():
        # The receive is pending before the datagram exists.
        receiving = loop.create_task(loop.sock_recvfrom(a, 100))
        await asyncio.sleep(0)
        assert not receiving.done()
        assert await loop.sock_sendto(b, b"hello", a.getsockname()) == 5
        assert await receiving == (b"hello", b.getsockname())
        # And when the datagram is already queued.
        assert await loop.sock_sendto(a, b"back" * 100, b.getsockname()) == 400
        assert await loop.sock_recvfrom(b, 1000) == (b"back" * 100,
                                                     a.getsockname())
        # sock_sendto accepts any bytes-like object.
        assert await loop.sock_sendto(b, bytearray(b"ba"), a.getsockname()) == 2
        assert await loop.sock_sendto(b, memoryview(b"mv"), a.getsockname()) == 2
        assert await loop.sock_recvfrom(a, 10) == (b"ba", b.getsockname())
        assert await loop.sock_recvfrom(a, 10) == (b"mv", b.getsockname())

    arun(loop, main())


@needs_dgram_ops
def test_recvfrom_truncates_and_keeps_boundaries(loop, udp_pair):
    a, b = udp_pair

    async def main():
        for data in (b"abcdef", b"", b"xyz"):
            await loop.sock_sendto(b, data, a.getsockname())
        # Each call returns exactly one datagram; the excess is discarded.
        assert await loop.sock_recvfrom(a, 2) == (b"ab", b.getsockname())
        assert await loop.sock_recvfrom(a, 2) == (b"", b.getsockname())
        assert await loop.sock_recvfrom(a, 100) == (b"xyz", b.getsockname())

    arun(loop, main())


@needs_dgram_ops
def test_recvfrom_into(loop, udp_pair):
    a, b = udp_pair

    async def main():
        buf = bytearray(10)
        receiving = loop.create_task(loop.sock_recvfrom_into(a, buf))
        await asyncio.sleep(0)
        assert not receiving.done()
        await loop.sock_sendto(b, b"0123456789abc", a.getsockname())
        # Without nbytes the whole buffer is used.
        assert await receiving == (10, b.getsockname())
        assert buf == bytearray(b"0123456789")

        buf = bytearray(10)
        await loop.sock_sendto(b, b"abcdef", a.getsockname())
        assert await loop.sock_recvfrom_into(a, buf, 3) == (3, b.getsockname())
        assert buf == bytearray(b"abc" + bytes(7))

        view = memoryview(bytearray(8))
        receiving = loop.create_task(loop.sock_recvfrom_into(a, view[2:], 4))
        await asyncio.sleep(0)
        await loop.sock_sendto(b, b"XY", a.getsockname())
        assert await receiving == (2, b.getsockname())
        assert view.tobytes() == b"\x00\x00XY\x00\x00\x00\x00"

    arun(loop, main())


@needs_dgram_ops
def test_recvfrom_into_nbytes_larger_than_buffer(loop, udp_pair):
    a, b = udp_pair

    async def main():
        with pytest.raises(ValueError, match="nbytes is greater than"):
            await loop.sock_recvfrom_into(a, bytearray(2), 5)
        # Still raised when a datagram is waiting; it is not consumed.
        await loop.sock_sendto(b, b"abcdef", a.getsockname())
        with pytest.raises(ValueError, match="nbytes is greater than"):
            await loop.sock_recvfrom_into(a, bytearray(2), 5)
        assert await loop.sock_recvfrom(a, 100) == (b"abcdef", b.getsockname())

    arun(loop, main())


@needs_dgram_ops
@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback")
def test_recvfrom_ipv6_addresses(loop):
    a = _udp(socket.AF_INET6, LOCALHOST6)
    b = _udp(socket.AF_INET6, LOCALHOST6)

    async def main():
        assert await loop.sock_sendto(b, b"six", (LOCALHOST6, a.getsockname()[1])) == 3
        data, addr = await loop.sock_recvfrom(a, 10)
        assert data == b"six"
        assert addr == b.getsockname()
        assert addr == (LOCALHOST6, b.getsockname()[1], 0, 0)
        buf = bytearray(5)
        await loop.sock_sendto(a, b"back", addr)
        assert await loop.sock_recvfrom_into(b, buf) == (4, a.getsockname())

    try:
        arun(loop, main())
    finally:
        a.close()
        b.close()


@needs_dgram_ops
@needs_unix
def test_unix_datagram_addresses(loop, sockdir):
    path_a = os.path.join(sockdir, "a")
    path_b = os.path.join(sockdir, "b")
    a = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    anon = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    for s in (a, b, anon):
        s.setblocking(False)
    a.bind(path_a)
    b.bind(path_b)

    async def main():
        receiving = loop.create_task(loop.sock_recvfrom(a, 100))
        await asyncio.sleep(0)
        assert await loop.sock_sendto(b, b"named", path_a) == 5
        assert await receiving == (b"named", path_b)
        # An unbound sender's address is None.
        await loop.sock_sendto(anon, b"anon", path_a)
        assert await loop.sock_recvfrom(a, 100) == (b"anon", UNBOUND_UNIX_ADDR)
        buf = bytearray(16)
        await loop.sock_sendto(anon, b"anon2", path_a)
        assert await loop.sock_recvfrom_into(a, buf) == (5, UNBOUND_UNIX_ADDR)

    try:
        arun(loop, main())
    finally:
        for s in (a, b, anon):
            s.close()


@needs_dgram_ops
@pytest.mark.parametrize("op", ["sock_recvfrom", "sock_recvfrom_into",
                                "sock_sendto"])
def test_blocking_socket_rejected_in_debug_mode(loop, op, flavor):
    if not flavor.is_uvrs and sys.platform == "win32":
        pytest.skip("asyncio's ProactorEventLoop does not check for blocking sockets")
    loop.set_debug(True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOCALHOST, 0))
    calls = {
        "sock_recvfrom": lambda: loop.sock_recvfrom(sock, 10),
        "sock_recvfrom_into": lambda: loop.sock_recvfrom_into(
            sock, bytearray(10)),
        "sock_sendto": lambda: loop.sock_sendto(sock, b"x",
                                                sock.getsockname()),
    }
    try:
        assert sock.gettimeout() is None
        with pytest.raises(ValueError, match="the socket must be non-blocking"):
            arun(loop, calls[op]())
    finally:
        sock.close()


@needs_dgram_ops
def test_blocking_socket_not_checked_outside_debug_mode(loop):
    # Without debug mode there is no check; with a datagram already queued
    # nothing can block, so the calls simply succeed.
    loop.set_debug(False)
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind((LOCALHOST, 0))
    b.bind((LOCALHOST, 0))

    async def main():
        assert await loop.sock_sendto(b, b"one", a.getsockname()) == 3
        assert await loop.sock_sendto(b, b"two", a.getsockname()) == 3
        assert await loop.sock_recvfrom(a, 10) == (b"one", b.getsockname())
        buf = bytearray(10)
        assert await loop.sock_recvfrom_into(a, buf) == (3, b.getsockname())
        assert buf[:3] == b"two"

    try:
        arun(loop, main())
        # The calls do not change the socket's blocking mode.
        assert a.gettimeout() is None and b.gettimeout() is None
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------------------
# Cancellation: the fd watcher goes away and the socket stays usable.


def _recv_into_setup():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    buf = bytearray(100)

    def start(loop):
        return loop.sock_recv_into(a, buf)

    async def check(loop):
        await loop.sock_sendall(b, b"after")
        n = await loop.sock_recv_into(a, buf)
        assert bytes(buf[:n]) == b"after"

    return a, [a, b], start, check


def _recvfrom_setup():
    a, b = _udp(), _udp()

    def start(loop):
        return loop.sock_recvfrom(a, 100)

    async def check(loop):
        await loop.sock_sendto(b, b"after", a.getsockname())
        assert await loop.sock_recvfrom(a, 100) == (b"after", b.getsockname())

    return a, [a, b], start, check


def _recvfrom_into_setup():
    a, b = _udp(), _udp()
    buf = bytearray(100)

    def start(loop):
        return loop.sock_recvfrom_into(a, buf)

    async def check(loop):
        await loop.sock_sendto(b, b"after", a.getsockname())
        n, addr = await loop.sock_recvfrom_into(a, buf)
        assert (bytes(buf[:n]), addr) == (b"after", b.getsockname())

    return a, [a, b], start, check


def _accept_setup():
    srv = socket.socket()
    srv.bind((LOCALHOST, 0))
    srv.listen()
    srv.setblocking(False)
    extra = []

    def start(loop):
        return loop.sock_accept(srv)

    async def check(loop):
        client = socket.socket()
        client.setblocking(False)
        extra.append(client)
        accepting = loop.create_task(loop.sock_accept(srv))
        await loop.sock_connect(client, srv.getsockname())
        conn, addr = await accepting
        extra.append(conn)
        assert addr == client.getsockname()
        await loop.sock_sendall(client, b"after")
        assert await loop.sock_recv(conn, 100) == b"after"

    return srv, [srv], start, check, extra


_CANCEL_CASES = {
    "sock_recv_into": (_recv_into_setup, False),
    "sock_recvfrom": (_recvfrom_setup, True),
    "sock_recvfrom_into": (_recvfrom_into_setup, True),
    "sock_accept": (_accept_setup, False),
}


@pytest.mark.parametrize("op", list(_CANCEL_CASES))
@pytest.mark.fd_watchers
def test_cancelled_read_op_unregisters_reader(loop, op):
    setup, dgram_only = _CANCEL_CASES[op]
    if dgram_only and sys.version_info < (3, 11):
        pytest.skip(f"loop.{op} is 3.11+")
    sock, to_close, start, check, *extra = setup()
    errors = catch_loop_errors(loop)

    async def main():
        task = loop.create_task(start(loop))
        await asyncio.sleep(0)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert loop.remove_reader(sock.fileno()) is False
        assert loop.remove_writer(sock.fileno()) is False
        # The same socket works with a fresh call afterwards.
        await check(loop)
        assert loop.remove_reader(sock) is False

    try:
        arun(loop, main())
        run_briefly(loop)
        assert errors == []
    finally:
        for s in to_close + (extra[0] if extra else []):
            s.close()


@pytest.mark.parametrize("op", list(_CANCEL_CASES))
@pytest.mark.fd_watchers
def test_cancel_before_first_step(loop, op):
    # Cancelled before the coroutine ever ran: nothing gets registered.
    setup, dgram_only = _CANCEL_CASES[op]
    if dgram_only and sys.version_info < (3, 11):
        pytest.skip(f"loop.{op} is 3.11+")
    sock, to_close, start, check, *extra = setup()
    errors = catch_loop_errors(loop)

    async def main():
        task = loop.create_task(start(loop))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert loop.remove_reader(sock.fileno()) is False
        await check(loop)

    try:
        arun(loop, main())
        run_briefly(loop)
        assert errors == []
    finally:
        for s in to_close + (extra[0] if extra else []):
            s.close()


@pytest.mark.fd_watchers
def test_cancelled_sock_connect(loop):
    srv = socket.socket()
    srv.bind((LOCALHOST, 0))
    srv.listen()
    client = socket.socket()
    client.setblocking(False)
    errors = catch_loop_errors(loop)

    async def main():
        task = loop.create_task(loop.sock_connect(client, srv.getsockname()))
        await asyncio.sleep(0)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        assert task.done()
        assert loop.remove_writer(client.fileno()) is False
        assert loop.remove_reader(client.fileno()) is False

    try:
        arun(loop, main())
        run_briefly(loop, 3)
        assert errors == []
    finally:
        client.close()
        srv.close()


# ---------------------------------------------------------------------------
# add_reader / add_writer / remove_reader / remove_writer


class _FilenoWrapper:
    def __init__(self, sock):
        self._sock = sock

    def fileno(self):
        return self._sock.fileno()


def _stream_pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


@pytest.mark.fd_watchers
def test_watchers_accept_objects_with_fileno(loop):
    a, b = _stream_pair()
    try:
        got = []
        loop.add_reader(_FilenoWrapper(a), lambda: got.append(a.recv(100)))
        b.send(b"via wrapper")
        run_briefly(loop)
        assert got == [b"via wrapper"]
        # Registration is per fd: any spelling of the fd removes it.
        assert loop.remove_reader(a.fileno()) is True
        assert loop.remove_reader(_FilenoWrapper(a)) is False

        writable = []
        loop.add_writer(_FilenoWrapper(a), writable.append, "w")
        run_briefly(loop)
        assert writable and set(writable) == {"w"}
        assert loop.remove_writer(_FilenoWrapper(a)) is True
        assert loop.remove_writer(a) is False
        assert loop.remove_writer(a.fileno()) is False
    finally:
        a.close()
        b.close()


@pytest.mark.fd_watchers
def test_remove_returns_whether_something_was_registered(loop):
    a, b = _stream_pair()
    try:
        assert loop.remove_reader(a) is False
        assert loop.remove_writer(a) is False

        # Only a writer: removing the reader reports False and keeps it.
        writes = []
        loop.add_writer(a, writes.append, "w")
        assert loop.remove_reader(a) is False
        run_briefly(loop)
        assert writes and set(writes) == {"w"}
        assert loop.remove_writer(a) is True
        assert loop.remove_writer(a) is False

        # Both: removing one leaves the other working.
        reads, writes = [], []
        loop.add_reader(a, lambda: reads.append(a.recv(100)))
        loop.add_writer(a, writes.append, "w")
        assert loop.remove_writer(a) is True
        writes.clear()
        b.send(b"r")
        run_briefly(loop)
        assert reads == [b"r"]
        assert writes == []
        assert loop.remove_reader(a) is True
        assert loop.remove_reader(a) is False
    finally:
        a.close()
        b.close()


@pytest.mark.fd_watchers
def test_add_writer_on_closed_loop(loop):
    a, b = _stream_pair()
    try:
        loop.close()
        with pytest.raises(RuntimeError):
            loop.add_writer(a, print)
        with pytest.raises(RuntimeError):
            loop.add_writer(a.fileno(), print)
    finally:
        a.close()
        b.close()


class _BadFileno:
    def fileno(self):
        return "not an int"


class _RaisingFileno:
    def fileno(self):
        raise ValueError("no fd")


_BAD_OBJECTS = [("str", "abc"), ("float", 1.5), ("none", None),
                ("bad_fileno", _BadFileno()),
                ("raising_fileno", _RaisingFileno()),
                ("negative", -1)]


@pytest.mark.parametrize("method", ["add_reader", "add_writer",
                                    "remove_reader", "remove_writer"])
@pytest.mark.parametrize("bad", [b for _, b in _BAD_OBJECTS],
                         ids=[name for name, _ in _BAD_OBJECTS])
@pytest.mark.fd_watchers
def test_watchers_reject_bad_fd_objects(loop, method, bad):
    fn = getattr(loop, method)
    args = (print,) if method.startswith("add_") else ()
    with pytest.raises(ValueError, match="Invalid file"):
        fn(bad, *args)


async def _tcp_transport(loop):
    server = await loop.create_server(asyncio.Protocol, LOCALHOST, 0)
    port = server.sockets[0].getsockname()[1]
    transport, _ = await loop.create_connection(asyncio.Protocol, LOCALHOST,
                                                port)
    return transport, server


async def _udp_transport(loop):
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=(LOCALHOST, 0))
    return transport, None


@pytest.mark.parametrize("kind", ["tcp", "udp"])
@pytest.mark.fd_watchers
def test_watchers_refuse_fd_owned_by_transport(loop, kind):
    async def main():
        make = _tcp_transport if kind == "tcp" else _udp_transport
        transport, server = await make(loop)
        try:
            fd = transport.get_extra_info("socket").fileno()
            for method, args in (("add_reader", (print,)),
                                 ("add_writer", (print,)),
                                 ("remove_reader", ()),
                                 ("remove_writer", ())):
                fn = getattr(loop, method)
                with pytest.raises(RuntimeError,
                                   match=f"File descriptor {fd} is used by transport"):
                    fn(fd, *args)
                with pytest.raises(RuntimeError, match="is used by transport"):
                    fn(_FilenoWrapper(transport.get_extra_info("socket")), *args)
            assert not transport.is_closing()
        finally:
            transport.close()
            await asyncio.sleep(0)
            if server is not None:
                server.close()
                await server.wait_closed()

    arun(loop, main())


@pytest.mark.parametrize("kind", ["tcp", "udp"])
@pytest.mark.fd_watchers
def test_transport_still_works_after_refused_watcher(loop, kind):
    # The failed add_reader must not have disturbed the transport's own
    # reading.
    async def main():
        if kind == "udp":
            received = loop.create_future()

            class Proto(asyncio.DatagramProtocol):
                def datagram_received(self, data, addr):
                    if not received.done():
                        received.set_result((data, addr))

            transport, _ = await loop.create_datagram_endpoint(
                Proto, local_addr=(LOCALHOST, 0))
            fd = transport.get_extra_info("socket").fileno()
            with pytest.raises(RuntimeError):
                loop.add_reader(fd, print)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
                raw.bind((LOCALHOST, 0))
                raw.sendto(b"still", transport.get_extra_info("sockname"))
                assert await received == (b"still", raw.getsockname())
            transport.close()
            await asyncio.sleep(0)
        else:
            client_got = loop.create_future()

            class Greeter(asyncio.Protocol):
                def connection_made(self, transport):
                    transport.write(b"still")

            class Proto(asyncio.Protocol):
                def data_received(self, data):
                    if not client_got.done():
                        client_got.set_result(data)

            server = await loop.create_server(Greeter, LOCALHOST, 0)
            port = server.sockets[0].getsockname()[1]
            transport, _ = await loop.create_connection(Proto, LOCALHOST, port)
            fd = transport.get_extra_info("socket").fileno()
            with pytest.raises(RuntimeError):
                loop.add_reader(fd, print)
            with pytest.raises(RuntimeError):
                loop.remove_reader(fd)
            assert await client_got == b"still"
            transport.close()
            server.close()
            await server.wait_closed()

    arun(loop, main())
