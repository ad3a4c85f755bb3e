"""Datagrams: ``create_datagram_endpoint``, its transport, and the datagram
``sock_*`` operations.

The datagram transport works the socket directly (``recvfrom``/``sendto``)
from the loop's fd watchers (libuv poll handles), as asyncio's selector
transport does. That keeps asyncio's exact behaviour for every family,
AF_UNIX datagram sockets included (libuv's ``uv_udp_t`` is IP only), and for
``error_received``.
"""

from __future__ import annotations

import collections
import contextvars
import socket
import sys
import warnings
from asyncio import constants, futures, transports, trsock
from asyncio.log import logger

from ._tcp import _check_ssl_socket, _set_reuseport, _transport_ready, _write_limits
from ._unix import remove_stale_unix_socket

_PY311 = sys.version_info >= (3, 11)
_PY312 = sys.version_info >= (3, 12)
_PY313 = sys.version_info >= (3, 13)
_AF_UNIX = getattr(socket, "AF_UNIX", None)
# Per-datagram overhead counted in the write buffer size (asyncio 3.12+).
_HEADER_SIZE = 8 if _PY312 else 0
_unset = object()


class DatagramTransport(transports.DatagramTransport):
    """An ``asyncio.DatagramTransport`` on a non-blocking datagram socket."""

    def __init__(self, loop, sock, protocol, address=None, waiter=None):
        super().__init__({"socket": trsock.TransportSocket(sock)})
        try:
            self._extra["sockname"] = sock.getsockname()
        except OSError:
            self._extra["sockname"] = None
        if "peername" not in self._extra:
            try:
                self._extra["peername"] = sock.getpeername()
            except OSError:
                self._extra["peername"] = None
        self._loop = loop
        self._sock = sock
        self._sock_fd = sock.fileno()
        self._protocol = protocol
        self._protocol_connected = True
        self._address = address
        self._buffer = collections.deque()
        self._buffer_size = 0
        self._conn_lost = 0
        self._closing = False
        self._high = 64 * 1024
        self._low = 16 * 1024
        self._protocol_paused = False
        self._family = sock.family
        self._checked_addr = None
        # Protocol callbacks run in a copy of the creator's context (asyncio's
        # reader handle captures it the same way).
        self._context = contextvars.copy_context()
        loop._transports[self._sock_fd] = self
        loop.call_soon(protocol.connection_made, self)
        # Reading starts once connection_made() has run.
        loop.call_soon(self._start_reading)
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)

    def __repr__(self):
        info = [self.__class__.__name__]
        if self._sock is None:
            info.append("closed")
        elif self._closing:
            info.append("closing")
        info.append(f"fd={self._sock_fd}")
        return "<{}>".format(" ".join(info))

    def _start_reading(self):
        if not self._closing:
            # Native: recvfrom and datagram_received from the poll callback,
            # with _read_ready's semantics.
            self._loop._add_datagram_reader(self._sock_fd, self._sock, self, self._context)

    # ---- writing ---------------------------------------------------------

    def sendto(self, data, addr=None):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}"
            )
        if not data and not _PY313:
            return
        if self._address:
            if addr not in (None, self._address):
                raise ValueError(f"Invalid address: must be None or {self._address}")
            addr = self._address
        elif addr is not None and addr != self._checked_addr:
            self._check_address(addr)
        if self._conn_lost:
            # (asyncio fails with AttributeError here on an unconnected
            # transport; uvrs drops the datagram as on a connected one.)
            if self._conn_lost >= constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                logger.warning("socket.send() raised exception.")
            self._conn_lost += 1
            return
        if not self._buffer:
            try:
                self._send(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                self._loop._add_writer(self._sock_fd, self._sendto_ready)
            except OSError as exc:
                self._protocol.error_received(exc)
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal write error on datagram transport")
                return
        # Buffer an immutable copy.
        self._buffer.append((bytes(data), addr))
        self._buffer_size += len(data) + _HEADER_SIZE
        self._maybe_pause_protocol()

    def _send(self, data, addr):
        """One datagram: to the connected peer (or the socket's implicit one
        when no address is given), else to addr."""
        if self._extra["peername"] or addr is None:
            self._sock.send(data)
        else:
            self._sock.sendto(data, addr)

    def _check_address(self, addr):
        """An IP destination must be numeric and of the socket's family: uvrs
        never resolves a name on the loop thread (asyncio would block in
        getaddrinfo); resolve it first with ``loop.getaddrinfo()``."""
        if self._family not in (socket.AF_INET, socket.AF_INET6):
            return
        if not isinstance(addr, tuple) or len(addr) < 2 or not isinstance(addr[0], str):
            return  # the socket's own sendto() reports the error
        host = addr[0]
        if host in ("", "<broadcast>") and self._family == socket.AF_INET:
            # INADDR_ANY / INADDR_BROADCAST: Python's spellings, no lookup.
            self._checked_addr = addr
            return
        for fam in (socket.AF_INET, socket.AF_INET6):
            try:
                socket.inet_pton(fam, host.partition("%")[0])
            except OSError:
                continue
            if fam != self._family:
                raise ValueError(f"UDP.sendto(): socket family mismatch for {addr!r}")
            self._checked_addr = addr
            return
        raise ValueError(f"UDP.sendto(): address {addr!r} requires a DNS lookup")

    def _sendto_ready(self):
        while self._buffer:
            data, addr = self._buffer.popleft()
            self._buffer_size -= len(data) + _HEADER_SIZE
            try:
                self._send(data, addr)
            except (BlockingIOError, InterruptedError):
                self._buffer.appendleft((data, addr))
                self._buffer_size += len(data) + _HEADER_SIZE
                break
            except OSError as exc:
                self._protocol.error_received(exc)
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal write error on datagram transport")
                return
        self._maybe_resume_protocol()
        if not self._buffer:
            self._loop._remove_writer(self._sock_fd)
            if self._closing:
                self._call_connection_lost(None)

    def get_write_buffer_size(self):
        return self._buffer_size

    def get_write_buffer_limits(self):
        return (self._low, self._high)

    def set_write_buffer_limits(self, high=None, low=None):
        high, low = _write_limits(high, low)
        self._high = high
        self._low = low
        self._maybe_pause_protocol()

    def _maybe_pause_protocol(self):
        if self._buffer_size <= self._high or self._protocol_paused:
            return
        self._protocol_paused = True
        self._flow_call("pause_writing")

    def _maybe_resume_protocol(self):
        if self._protocol_paused and self._buffer_size <= self._low:
            self._protocol_paused = False
            self._flow_call("resume_writing")

    def _flow_call(self, name):
        try:
            getattr(self._protocol, name)()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler(
                {
                    "message": f"protocol.{name}() failed",
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )

    # ---- lifecycle -------------------------------------------------------

    def set_protocol(self, protocol):
        self._protocol = protocol
        self._protocol_connected = True

    def get_protocol(self):
        return self._protocol

    def is_closing(self):
        return self._closing

    def close(self):
        if self._closing:
            return
        self._closing = True
        self._loop._remove_reader(self._sock_fd)
        if not self._buffer:
            self._conn_lost += 1
            self._loop._remove_writer(self._sock_fd)
            self._loop.call_soon(self._call_connection_lost, None, context=self._context)

    def abort(self):
        self._force_close(None)

    def _fatal_error(self, exc, message):
        if isinstance(exc, OSError):
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler(
                {
                    "message": message,
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )
        self._force_close(exc)

    def _force_close(self, exc):
        if self._conn_lost:
            return
        if self._buffer:
            self._buffer.clear()
            self._buffer_size = 0
            self._loop._remove_writer(self._sock_fd)
        if not self._closing:
            self._closing = True
            self._loop._remove_reader(self._sock_fd)
        self._conn_lost += 1
        self._loop.call_soon(self._call_connection_lost, exc, context=self._context)

    def _call_connection_lost(self, exc):
        try:
            if self._protocol_connected:
                self._protocol.connection_lost(exc)
        finally:
            self._sock.close()
            self._sock = None
            self._protocol = None
            self._loop = None

    def __del__(self, _warn=warnings.warn):
        sock = getattr(self, "_sock", None)
        if sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            sock.close()


def _check_datagram_sock(sock):
    if _PY313:
        if sock.type == socket.SOCK_STREAM:
            raise ValueError(f"A datagram socket was expected, got {sock!r}")
    elif sock.type != socket.SOCK_DGRAM:
        raise ValueError(f"A UDP Socket was expected, got {sock!r}")


class DatagramMixin:
    """The datagram methods of ``uvrs.Loop``."""

    async def create_datagram_endpoint(
        self,
        protocol_factory,
        local_addr=None,
        remote_addr=None,
        *,
        family=0,
        proto=0,
        flags=0,
        reuse_address=_unset,
        reuse_port=None,
        allow_broadcast=None,
        sock=None,
    ):
        # reuse_address: asyncio 3.11+ no longer takes it; uvrs (like uvloop)
        # still does, and rejects True / warns on False as 3.10 did.
        self._check_closed()
        if sock is not None:
            _check_datagram_sock(sock)
            _check_ssl_socket(sock)
            if local_addr or remote_addr or family or proto or flags or reuse_port or (
                allow_broadcast
            ):
                opts = {
                    "local_addr": local_addr,
                    "remote_addr": remote_addr,
                    "family": family,
                    "proto": proto,
                    "flags": flags,
                    "reuse_address": None if reuse_address is _unset else reuse_address,
                    "reuse_port": reuse_port,
                    "allow_broadcast": allow_broadcast,
                }
                problems = ", ".join(f"{k}={v}" for k, v in opts.items() if v)
                raise ValueError(
                    "socket modifier keyword arguments can not be used "
                    f"when sock is specified. ({problems})"
                )
            sock.setblocking(False)
            r_addr = None
        else:
            sock, r_addr = await self._open_datagram_socket(
                local_addr, remote_addr, family, proto, flags, reuse_address, reuse_port,
                allow_broadcast,
            )
        return await _transport_ready(
            self,
            protocol_factory,
            lambda proto, waiter: DatagramTransport(self, sock, proto, r_addr, waiter),
        )

    async def _open_datagram_socket(
        self, local_addr, remote_addr, family, proto, flags, reuse_address, reuse_port,
        allow_broadcast,
    ):
        if not (local_addr or remote_addr):
            if family == 0:
                raise ValueError("unexpected address family")
            pairs = [((family, proto), (None, None))]
        elif _AF_UNIX is not None and family == _AF_UNIX:
            for addr in (local_addr, remote_addr):
                if addr is not None and not isinstance(addr, str):
                    raise TypeError("string is expected")
            if local_addr:
                remove_stale_unix_socket(local_addr)
            pairs = [((family, proto), (local_addr, remote_addr))]
        else:
            # Local and remote addresses joined by (family, proto), in order.
            by_key = {}
            for idx, addr in ((0, local_addr), (1, remote_addr)):
                if addr is None:
                    continue
                if not (isinstance(addr, tuple) and len(addr) == 2):
                    if not _PY311:
                        raise AssertionError("2-tuple is expected")
                    raise TypeError("2-tuple is expected")
                infos = await self._resolve(
                    addr[0], addr[1], family, socket.SOCK_DGRAM, proto, flags
                )
                if not infos:
                    raise OSError("getaddrinfo() returned empty list")
                for fam, _, pro, _, address in infos:
                    by_key.setdefault((fam, pro), [None, None])[idx] = address
            pairs = [
                (key, pair)
                for key, pair in by_key.items()
                if not ((local_addr and pair[0] is None) or (remote_addr and pair[1] is None))
            ]
            if not pairs:
                raise ValueError("can not get address information")
        if reuse_address is not _unset:
            if reuse_address:
                raise ValueError(
                    "Passing `reuse_address=True` is no longer supported, as the usage of "
                    "SO_REUSEPORT in UDP poses a significant security concern."
                )
            warnings.warn(
                "The *reuse_address* parameter has been deprecated as of 3.5.10 and "
                "is scheduled for removal in 3.11.",
                DeprecationWarning,
                stacklevel=3,
            )
        errors = []
        for (fam, pro), (local, remote) in pairs:
            sock = None
            try:
                sock = socket.socket(family=fam, type=socket.SOCK_DGRAM, proto=pro)
                if reuse_port:
                    _set_reuseport(sock)
                if allow_broadcast:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                sock.setblocking(False)
                if local_addr:
                    sock.bind(local)
                r_addr = None
                if remote_addr:
                    if not allow_broadcast:
                        await self.sock_connect(sock, remote)
                    r_addr = remote
            except OSError as exc:
                if sock is not None:
                    sock.close()
                errors.append(exc)
            except BaseException:
                if sock is not None:
                    sock.close()
                raise
            else:
                return sock, r_addr
        raise errors[0]

    # ---- datagram sock_* -------------------------------------------------

    async def sock_recvfrom(self, sock, bufsize):
        """Receive a datagram of at most *bufsize* bytes: ``(data, address)``."""
        self._check_sock(sock)
        try:
            return _recvfrom(sock, bufsize)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._sock_io(sock, False, _recvfrom, sock, bufsize)

    async def sock_recvfrom_into(self, sock, buf, nbytes=0):
        """Receive a datagram into *buf*: ``(nbytes, address)``."""
        self._check_sock(sock)
        if not nbytes:
            nbytes = len(buf)
        elif nbytes > len(buf):
            raise ValueError("nbytes is greater than the length of the buffer")
        try:
            return _recvfrom_into(sock, buf, nbytes)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._sock_io(sock, False, _recvfrom_into, sock, buf, nbytes)

    async def sock_sendto(self, sock, data, address):
        """Send a datagram to *address*; return the number of bytes sent."""
        self._check_sock(sock)
        try:
            return sock.sendto(data, address)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._sock_io(sock, True, sock.sendto, data, address)


if sys.platform == "win32":
    # Winsock fails a datagram larger than the buffer with WSAEMSGSIZE and
    # drops it; Unix (and asyncio's Proactor loop) return it truncated.
    # Reading into a buffer of the largest datagram size gives the latter.
    _MAX_DATAGRAM = 65536

    def _recvfrom(sock, bufsize):
        if bufsize >= _MAX_DATAGRAM:
            return sock.recvfrom(bufsize)
        data, addr = sock.recvfrom(_MAX_DATAGRAM)
        return data[:bufsize], addr

    def _recvfrom_into(sock, buf, nbytes):
        scratch = bytearray(_MAX_DATAGRAM)
        n, addr = sock.recvfrom_into(scratch)
        n = min(n, nbytes)
        memoryview(buf).cast("B")[:n] = scratch[:n]
        return n, addr

else:

    def _recvfrom(sock, bufsize):
        return sock.recvfrom(bufsize)

    def _recvfrom_into(sock, buf, nbytes):
        return sock.recvfrom_into(buf, nbytes)
