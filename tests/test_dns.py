"""loop.getaddrinfo() / loop.getnameinfo() must agree exactly with the socket
module.  Only names answered locally (numeric hosts, 'localhost', the
services database) are used: nothing here may touch the network."""

import asyncio
import os
import socket

import pytest

from _util import LOCALHOST, LOCALHOST6, arun, ipv6_loopback_available

pytestmark = pytest.mark.timeout(10)

needs_ipv6 = pytest.mark.skipif(not ipv6_loopback_available(),
                                reason="::1 is not available")


def _has_service(name):
    try:
        socket.getservbyname(name, "tcp")
        return True
    except OSError:
        return False


def sync_result(fn, *args, **kwargs):
    """('ok', value) or ('err', type, errno) for the blocking call."""
    try:
        return ("ok", fn(*args, **kwargs))
    except Exception as exc:
        return ("err", type(exc), getattr(exc, "errno", None))


async def async_result(coro):
    try:
        return ("ok", await coro)
    except Exception as exc:
        return ("err", type(exc), getattr(exc, "errno", None))


GAI_CASES = [
    pytest.param(("localhost", 80), {}, id="localhost"),
    pytest.param((LOCALHOST, 80), {}, id="v4-numeric"),
    pytest.param((LOCALHOST, "80"), {}, id="str-port"),
    pytest.param((LOCALHOST, b"80"), {}, id="bytes-port"),
    pytest.param((b"127.0.0.1", 443), {}, id="bytes-host"),
    pytest.param((LOCALHOST, None), {}, id="port-None"),
    pytest.param((LOCALHOST, 0), {}, id="port-0"),
    pytest.param((None, 8080), {"flags": socket.AI_PASSIVE}, id="passive"),
    pytest.param((None, 8080), {}, id="host-None"),
    pytest.param(("localhost", 80), {"family": socket.AF_INET},
                 id="family-inet"),
    pytest.param(("localhost", 80), {"type": socket.SOCK_STREAM},
                 id="type-stream"),
    pytest.param(("localhost", 53), {"type": socket.SOCK_DGRAM},
                 id="type-dgram"),
    pytest.param(("localhost", 80), {"proto": socket.IPPROTO_TCP},
                 id="proto-tcp"),
    pytest.param((LOCALHOST, 80), {"flags": socket.AI_NUMERICHOST},
                 id="numerichost"),
    pytest.param((LOCALHOST, 80), {"flags": socket.AI_CANONNAME},
                 id="canonname"),
    pytest.param((LOCALHOST, "80"), {"flags": socket.AI_NUMERICSERV},
                 id="numericserv"),
    pytest.param(("localhost", 80),
                 {"family": socket.AF_INET, "type": socket.SOCK_STREAM,
                  "proto": socket.IPPROTO_TCP,
                  "flags": socket.AI_ADDRCONFIG},
                 id="all-args"),
]


@pytest.mark.parametrize("args,kwargs", GAI_CASES)
def test_getaddrinfo_matches_socket_module(loop, args, kwargs):
    expected = socket.getaddrinfo(*args, **kwargs)
    got = arun(loop, loop.getaddrinfo(*args, **kwargs))
    assert got == expected
    assert isinstance(got, list)
    for entry in got:
        assert isinstance(entry, tuple) and len(entry) == 5
        assert isinstance(entry[0], socket.AddressFamily)
        assert isinstance(entry[1], socket.SocketKind)


@pytest.mark.skipif(not _has_service("http"), reason="no 'http' service")
def test_getaddrinfo_service_name(loop):
    expected = socket.getaddrinfo(LOCALHOST, "http", type=socket.SOCK_STREAM)
    got = arun(loop, loop.getaddrinfo(LOCALHOST, "http",
                                      type=socket.SOCK_STREAM))
    assert got == expected
    assert got[0][4] == (LOCALHOST, socket.getservbyname("http", "tcp"))


@needs_ipv6
@pytest.mark.parametrize("kwargs", [{}, {"family": socket.AF_INET6},
                                    {"flags": socket.AI_NUMERICHOST}])
def test_getaddrinfo_ipv6(loop, kwargs):
    expected = socket.getaddrinfo(LOCALHOST6, 443, **kwargs)
    got = arun(loop, loop.getaddrinfo(LOCALHOST6, 443, **kwargs))
    assert got == expected
    assert all(e[0] == socket.AF_INET6 for e in got)
    assert got[0][4][:2] == (LOCALHOST6, 443)


ERROR_CASES = [
    # never resolved over the network: AI_NUMERICHOST forbids lookups
    pytest.param(("nonexistent.invalid", 80),
                 {"flags": socket.AI_NUMERICHOST}, id="invalid-numerichost"),
    pytest.param(("localhost", 80), {"flags": socket.AI_NUMERICHOST},
                 id="name-with-numerichost"),
    pytest.param(("999.1.1.1", 80), {"flags": socket.AI_NUMERICHOST},
                 id="malformed-ipv4"),
    pytest.param((LOCALHOST, "no-such-service-xyz"), {},
                 id="unknown-service"),
    pytest.param((LOCALHOST, "http"), {"flags": socket.AI_NUMERICSERV},
                 id="service-with-numericserv"),
    pytest.param((LOCALHOST, 80), {"family": socket.AF_INET6,
                                   "flags": socket.AI_NUMERICHOST},
                 id="family-mismatch"),
    pytest.param((None, None), {}, id="nothing"),
    pytest.param((123, 80), {}, id="int-host"),
    pytest.param((LOCALHOST, 1.5), {}, id="float-port"),
]


@pytest.mark.parametrize("args,kwargs", ERROR_CASES)
def test_getaddrinfo_errors_match_socket_module(loop, args, kwargs):
    expected = sync_result(socket.getaddrinfo, *args, **kwargs)
    assert expected[0] == "err"
    got = arun(loop, async_result(loop.getaddrinfo(*args, **kwargs)))
    assert got == expected


def test_getaddrinfo_gaierror_details(loop):
    async def main():
        with pytest.raises(socket.gaierror) as info:
            await loop.getaddrinfo("nonexistent.invalid", 80,
                                   flags=socket.AI_NUMERICHOST)
        assert isinstance(info.value, OSError)
        assert info.value.errno == socket.EAI_NONAME
        assert info.value.args[0] == socket.EAI_NONAME
        assert isinstance(info.value.strerror, str)
    arun(loop, main())


def test_getaddrinfo_concurrent(loop):
    queries = [("localhost", 80), (LOCALHOST, 443), (None, 1234),
               (LOCALHOST, "22")] * 25
    expected = [socket.getaddrinfo(h, p) for h, p in queries]

    async def main():
        return await asyncio.gather(*[loop.getaddrinfo(h, p)
                                      for h, p in queries])
    assert arun(loop, main()) == expected


def test_getaddrinfo_is_awaitable_coroutine(loop):
    async def main():
        coro = loop.getaddrinfo(LOCALHOST, 80)
        assert asyncio.iscoroutine(coro) or isinstance(coro, asyncio.Future)
        return await coro
    assert arun(loop, main()) == socket.getaddrinfo(LOCALHOST, 80)


def test_getaddrinfo_cancelled(loop):
    async def main():
        task = loop.create_task(loop.getaddrinfo("localhost", 80))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the loop is fine afterwards
        assert await loop.getaddrinfo(LOCALHOST, 80) == socket.getaddrinfo(
            LOCALHOST, 80)
    arun(loop, main())


NI_CASES = [
    pytest.param((LOCALHOST, 80), 0, id="plain"),
    pytest.param((LOCALHOST, 80),
                 socket.NI_NUMERICHOST | socket.NI_NUMERICSERV,
                 id="numeric"),
    pytest.param((LOCALHOST, 8), socket.NI_NUMERICSERV, id="numericserv"),
    pytest.param((LOCALHOST, 53), socket.NI_DGRAM, id="dgram"),
    pytest.param((LOCALHOST, 12345), 0, id="unnamed-port"),
]


@pytest.mark.parametrize("sockaddr,flags", NI_CASES)
def test_getnameinfo_matches_socket_module(loop, sockaddr, flags):
    expected = socket.getnameinfo(sockaddr, flags)
    got = arun(loop, loop.getnameinfo(sockaddr, flags))
    assert got == expected
    assert isinstance(got, tuple) and len(got) == 2


@needs_ipv6
def test_getnameinfo_ipv6(loop):
    for addr in [(LOCALHOST6, 80), (LOCALHOST6, 80, 0, 0)]:
        for flags in (0, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV):
            expected = socket.getnameinfo(addr, flags)
            assert arun(loop, loop.getnameinfo(addr, flags)) == expected


def test_getnameinfo_default_flags(loop):
    assert arun(loop, loop.getnameinfo((LOCALHOST, 80))) == \
        socket.getnameinfo((LOCALHOST, 80), 0)


@pytest.mark.parametrize("sockaddr", [
    pytest.param((LOCALHOST,), id="short-tuple"),
    pytest.param((LOCALHOST, 80, 0, 0), id="v4-4tuple"),
    pytest.param(("not an address", 80), id="bad-host"),
    pytest.param("127.0.0.1", id="not-a-tuple"),
])
def test_getnameinfo_errors_match_socket_module(loop, sockaddr):
    flags = socket.NI_NUMERICHOST
    expected = sync_result(socket.getnameinfo, sockaddr, flags)
    assert expected[0] == "err"
    got = arun(loop, async_result(loop.getnameinfo(sockaddr, flags)))
    assert got == expected


@pytest.mark.skipif(not os.path.exists("/etc/hosts"), reason="no /etc/hosts")
def test_localhost_result_is_loopback(loop):
    infos = arun(loop, loop.getaddrinfo("localhost", 80,
                                        type=socket.SOCK_STREAM))
    assert infos
    for family, _, _, _, addr in infos:
        assert addr[0] in (LOCALHOST, LOCALHOST6)
        assert family in (socket.AF_INET, socket.AF_INET6)
