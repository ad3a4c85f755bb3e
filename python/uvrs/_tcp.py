"""TCP: servers, connections and the transport wrapper.

Per-connection work lives here (address resolution, socket set-up, protocol
factory, connection_made); the per-read and per-write work is native
(``_uvrs.TcpTransportCore``, ``_uvrs.TcpListener``).

Sockets and ownership: a socket created or passed in Python keeps its file
descriptor for ``get_extra_info('socket')``; libuv works on a duplicate of it.
Both are closed when the connection is lost (or the server is closed).
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import errno
import functools
import io
import itertools
import os
import socket
import sys
import warnings
import weakref
from asyncio import constants, exceptions, futures, sslproto, staggered, trsock
from asyncio.log import logger

from . import _uvrs

_PY311 = sys.version_info >= (3, 11)
_PY312 = sys.version_info >= (3, 12)
_PY313 = sys.version_info >= (3, 13)
_HAS_IPV6 = socket.has_ipv6
_AF_UNIX = getattr(socket, "AF_UNIX", None)



def _is_buffered(protocol):
    """Whether to feed *protocol* through get_buffer()/buffer_updated().

    A BufferedProtocol, or (as uvloop accepts) any protocol with get_buffer()
    and no data_received(), on which asyncio would fail.
    """
    if isinstance(protocol, asyncio.BufferedProtocol):
        return True
    return not hasattr(protocol, "data_received") and hasattr(protocol, "get_buffer")


async def _transport_ready(loop, protocol_factory, make_transport):
    """Make the protocol and its transport, wait for the transport's waiter
    (set once connection_made has run), close it if that wait fails."""
    protocol = protocol_factory()
    waiter = loop.create_future()
    transport = make_transport(protocol, waiter)
    try:
        await waiter
    except BaseException:
        transport.close()
        raise
    return transport, protocol


class TLS:
    """What a TLS connection needs besides its socket: the arguments of
    asyncio's ``SSLProtocol``, which drives the TLS state machine over a uvrs
    transport exactly as it does over asyncio's own."""

    __slots__ = ("context", "server_side", "server_hostname", "handshake_timeout",
                 "shutdown_timeout")  # fmt: skip

    def __init__(self, ssl, server_side, server_hostname, handshake_timeout, shutdown_timeout):
        # ssl=True: SSLProtocol makes a default context (None here).
        self.context = None if isinstance(ssl, bool) else ssl
        self.server_side = server_side
        self.server_hostname = server_hostname
        self.handshake_timeout = handshake_timeout
        self.shutdown_timeout = shutdown_timeout

    def protocol(self, loop, app_protocol, waiter, call_connection_made=True):
        kwargs = {}
        cls = sslproto.SSLProtocol  # 3.10: asyncio's own, unchanged
        if _PY311:
            # Imported when TLS is first used: it needs the ssl module.
            from ._sslproto import SSLProtocol as cls

            kwargs["ssl_shutdown_timeout"] = self.shutdown_timeout
        return cls(
            loop,
            app_protocol,
            self.context,
            waiter,
            self.server_side,
            self.server_hostname,
            call_connection_made=call_connection_made,
            ssl_handshake_timeout=self.handshake_timeout,
            **kwargs,
        )


def _tls_accept_done(loop, protocol, app_transport, waiter):
    """A server-side handshake ended: on failure close, and report it in
    debug mode only, as asyncio's server does."""
    if waiter.cancelled():
        return
    exc = waiter.exception()
    if exc is None:
        return
    app_transport.close()
    if loop.get_debug():
        loop.call_exception_handler(
            {
                "message": "Error on transport creation for incoming connection",
                "exception": exc,
                "protocol": protocol,
                "transport": app_transport,
            }
        )


_MAX_LIMIT = 2**63


def _write_limits(high, low):
    """asyncio's defaults, rules and message for write buffer limits, for any
    number it takes (floats, inf, ints of any size): (high, low)."""
    if high is None:
        high = 64 * 1024 if low is None else 4 * low
    if low is None:
        low = high // 4
    if not high >= low >= 0:
        raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
    return high, low


def _byte_limit(value):
    """A write buffer limit as a whole number of bytes, at most 2**63."""
    if value >= _MAX_LIMIT:
        return _MAX_LIMIT
    return int(value)


class _CoreTransport:
    """Methods every transport on a native stream core delegates to it."""

    def is_closing(self):
        return self._core.is_closing()

    def close(self):
        self._core.close()


class _CoreReading:
    """The read side's flow control, delegated to the native core."""

    def pause_reading(self):
        self._core.pause_reading()

    def resume_reading(self):
        self._core.resume_reading()

    def is_reading(self):
        return self._core.is_reading()


class _CoreWriting:
    """The write side's end and buffer, delegated to the native core."""

    def write_eof(self):
        self._core.write_eof()

    def can_write_eof(self):
        return True

    def abort(self):
        self._core.abort()

    def get_write_buffer_size(self):
        return self._core.get_write_buffer_size()

    def get_write_buffer_limits(self):
        limits = getattr(self, "_limits", None)
        return limits if limits is not None else self._core.get_write_buffer_limits()

    def set_write_buffer_limits(self, high=None, low=None):
        # get_write_buffer_limits() returns them as given.
        high, low = _write_limits(high, low)
        # Buffer sizes are whole bytes: size > high is size > floor(high),
        # size <= low is size <= floor(low).
        self._core._set_write_buffer_limits(_byte_limit(high), _byte_limit(low))
        self._limits = (low, high)


class TCPTransport(_CoreTransport, _CoreReading, _CoreWriting, asyncio.Transport):
    """An ``asyncio.Transport`` over a libuv TCP handle."""

    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE
    _start_tls_compatible = True

    def __init__(self, loop, core, protocol, sock=None, extra=None, server=None):
        super().__init__(extra)
        self._loop = loop
        self._core = core
        self._sock = sock  # the Python socket object, if any
        self._tsock = None
        self._server = server
        self._protocol = protocol
        self._protocol_connected = False
        # Every protocol callback runs in this copy of the creator's context
        # (asyncio's selector transports do the same); TLS adopts it too.
        self._context = contextvars.copy_context()
        core._attach(protocol, self, _is_buffered(protocol), self._context)
        if sock is not None:
            loop._transports[sock.fileno()] = self
        # The native methods of the hottest paths (Protocol and
        # StreamWriter writes), bound to each instance so that calling them
        # costs no Python frame; write() is a builtin method with its own
        # argument check. Only these two: each costs ~90 bytes per transport
        # (binding all eleven delegating methods cost 1 KiB per transport).
        self.write = core._fast_write()
        self.is_closing = core.is_closing
        if server is not None:
            server._attach(self)

    # The class-level methods are used when a subclass or introspection looks
    # them up on the type; instances carry the native bound methods.
    def write(self, data):
        self._core.write(data)

    def writelines(self, list_of_data):
        if _PY312 and not list_of_data:
            # 3.12+ take any false argument (None included) as nothing to write.
            list_of_data = ()
        self._core.writelines(list_of_data)

    def set_protocol(self, protocol):
        self._protocol = protocol
        self._protocol_connected = True
        self._core.set_protocol(protocol, _is_buffered(protocol))

    def get_protocol(self):
        return self._protocol

    def _force_close(self, exc):
        """Abort, with ``exc`` for connection_lost (asyncio's SSLProtocol
        calls this on a fatal TLS error, and with None for abort())."""
        if exc is None:
            self._core.abort()
        else:
            self._core._force_close(exc)

    @property
    def _paused(self):
        # 3.10's SSL transport asks its raw transport for this in is_reading().
        return not self._core.is_reading()

    def get_extra_info(self, name, default=None):
        if name in self._extra:
            return self._extra[name]
        if name in ("socket", "sockname", "peername"):
            tsock = self._transport_socket()
            if tsock is None:
                return default
            if name == "socket":
                return tsock
            try:
                value = tsock.getsockname() if name == "sockname" else tsock.getpeername()
            except OSError:
                value = None
            self._extra[name] = value
            return value
        return default

    def _transport_socket(self):
        if self._tsock is None:
            sock = self._sock
            if sock is None:
                fd = self._core.fileno()
                if fd < 0:
                    return None
                sock = self._sock = socket.socket(fileno=socket.dup(fd))
                if self._loop is not None:
                    self._loop._transports[sock.fileno()] = self
            self._tsock = trsock.TransportSocket(sock)
        return self._tsock

    def _start(self, waiter=None):
        """connection_made, then reading, then the waiter: asyncio's order."""
        self._protocol_connected = True
        self._loop.call_soon(self._protocol.connection_made, self)
        self._loop.call_soon(self._core._start_reading)
        if waiter is not None:
            self._loop.call_soon(futures._set_result_unless_cancelled, waiter, None)

    def _call_connection_lost(self, exc):
        try:
            if self._protocol_connected:
                self._protocol.connection_lost(exc)
        finally:
            self._core._release()
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            self._protocol = None
            self._loop = None
            server = self._server
            if server is not None:
                server._detach(self)
                self._server = None

    def __repr__(self):
        info = [self.__class__.__name__]
        if self._loop is None:
            info.append("closed")
        elif self._core.is_closing():
            info.append("closing")
        fd = self._core.fileno()
        info.append(f"fd={fd}")
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn=warnings.warn):
        core = getattr(self, "_core", None)
        if core is not None and self._loop is not None and not core.is_closing():
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            try:
                core.abort()
            except RuntimeError:
                pass  # the loop is closed: the socket is closed all the same


class Server(asyncio.AbstractServer):
    """The result of ``loop.create_server()`` and ``create_unix_server()``."""

    # (path, inode) of a Unix socket file to remove on close (3.13+).
    _unix_cleanup = None
    _transport_cls = TCPTransport

    def __init__(self, loop, sockets, protocol_factory, backlog):
        self._loop = loop
        self._sockets = sockets
        self._listeners = []
        self._active_count = 0
        self._waiters = []
        self._protocol_factory = protocol_factory
        self._backlog = backlog
        self._serving = False
        self._serving_forever_fut = None
        self._clients = weakref.WeakSet()
        self._context = None  # captured by _start_serving
        self._tls = None  # a TLS for ssl= servers

    def __repr__(self):
        return f"<{self.__class__.__name__} sockets={self.sockets!r}>"

    def _attach(self, transport):
        assert self._sockets is not None
        self._active_count += 1
        self._clients.add(transport)

    def _detach(self, transport=None):
        self._active_count -= 1
        if transport is not None:
            self._clients.discard(transport)
        if self._active_count == 0 and self._sockets is None:
            self._wakeup()

    def _wakeup(self):
        waiters = self._waiters
        self._waiters = None
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _start_serving(self):
        if self._serving:
            return
        self._serving = True
        self._context = contextvars.copy_context()
        for sock in self._sockets:
            sock.listen(self._backlog)
            listener = _uvrs.TcpListener(
                self._loop,
                socket.dup(sock.fileno()),
                self._on_connection,
                self._on_error,
                sock.family != _AF_UNIX,
            )
            self._listeners.append(listener)
            listener.listen(self._backlog)

    def _on_connection(self, core):
        # asyncio accepts in the context captured when serving started and
        # sets each connection up in a copy of it.
        self._context.copy().run(self._accept, core)

    def _accept(self, core):
        loop = self._loop
        try:
            protocol = self._protocol_factory()
            if self._tls is None:
                transport = self._transport_cls(loop, core, protocol, server=self)
            else:
                waiter = loop.create_future()
                ssl_protocol = self._tls.protocol(loop, protocol, waiter)
                transport = self._transport_cls(loop, core, ssl_protocol, server=self)
                waiter.add_done_callback(
                    functools.partial(
                        _tls_accept_done, loop, protocol, ssl_protocol._app_transport
                    )
                )
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            core._release()
            # asyncio reports this only in debug mode.
            if loop.get_debug():
                loop.call_exception_handler(
                    {
                        "message": "Error on transport creation for incoming connection",
                        "exception": exc,
                    }
                )
            return
        transport._start()

    def _on_error(self, exc):
        if isinstance(exc, OSError) and exc.errno in (
            errno.EMFILE,
            errno.ENFILE,
            errno.ENOBUFS,
            errno.ENOMEM,
        ):
            self._loop.call_exception_handler(
                {
                    "message": "socket.accept() out of system resource",
                    "exception": exc,
                    "socket": trsock.TransportSocket(self._sockets[0])
                    if self._sockets
                    else None,
                }
            )
            # The listener stopped accepting; pending clients wait in the
            # backlog until fds are free again (asyncio retries after 1 s).
            self._loop.call_later(constants.ACCEPT_RETRY_DELAY, self._resume_accepting)
        elif self._loop.get_debug():
            logger.debug("error on accept: %r", exc)

    def _resume_accepting(self):
        if self._serving and self._sockets is not None:
            for listener in self._listeners:
                listener.resume()

    def get_loop(self):
        return self._loop

    def is_serving(self):
        return self._serving

    @property
    def sockets(self):
        if self._sockets is None:
            return ()
        return tuple(trsock.TransportSocket(s) for s in self._sockets)

    def close(self):
        sockets = self._sockets
        if sockets is None:
            return
        self._sockets = None
        for listener in self._listeners:
            listener.close()
        self._listeners = []
        for sock in sockets:
            sock.close()
        if self._unix_cleanup is not None:
            _unlink_if_same(*self._unix_cleanup)
            self._unix_cleanup = None
        self._serving = False
        if self._serving_forever_fut is not None and not self._serving_forever_fut.done():
            self._serving_forever_fut.cancel()
            self._serving_forever_fut = None
        if self._active_count == 0:
            self._wakeup()

    def close_clients(self):
        for transport in list(self._clients):
            transport.close()

    def abort_clients(self):
        for transport in list(self._clients):
            transport.abort()

    async def start_serving(self):
        self._start_serving()
        # Let the listeners start, as asyncio does.
        await asyncio.sleep(0)

    async def _serve_from_create(self):
        """create_server()'s last step: serve, and yield once as asyncio
        does. Cancelled there, the caller never gets the server: close it
        (asyncio leaves it listening for good)."""
        self._start_serving()
        try:
            await asyncio.sleep(0)
        except BaseException:
            self.close()
            raise

    async def serve_forever(self):
        if self._serving_forever_fut is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._sockets is None:
            raise RuntimeError(f"server {self!r} is closed")
        self._start_serving()
        self._serving_forever_fut = self._loop.create_future()
        try:
            await self._serving_forever_fut
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever_fut = None

    async def wait_closed(self):
        if _PY312:
            if self._waiters is None:
                return
        elif self._sockets is None or self._waiters is None:
            # Before 3.12, asyncio returns at once once the server is closed.
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter


def _unlink_if_same(path, ino):
    """Remove the socket file of a closed Unix server unless it was replaced."""
    try:
        if os.stat(path).st_ino == ino:
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        logger.error("Unable to clean up listening UNIX socket %r: %r", path, err)


def _ip_literal_info(host, port, family, type_, proto, flowinfo=0, scopeid=0):
    """getaddrinfo's answer for a numeric host, without a thread hop (or None).

    Follows asyncio's fast path rule for rule (what it normalises, what it
    lets through to the resolver, what it raises), so both loops give the
    same answer for the same odd input."""
    if host is None or proto not in (0, socket.IPPROTO_TCP, socket.IPPROTO_UDP):
        return None
    if type_ == socket.SOCK_STREAM:
        proto = socket.IPPROTO_TCP
    elif type_ == socket.SOCK_DGRAM:
        proto = socket.IPPROTO_UDP
    else:
        return None
    if port is None or (isinstance(port, (str, bytes)) and not port):
        port = 0
    else:
        try:
            port = int(port)  # OverflowError (a port of inf) goes to the caller
        except (TypeError, ValueError):
            return None  # a service name: the resolver's job
    if family == socket.AF_UNSPEC:
        families = [socket.AF_INET, socket.AF_INET6] if _HAS_IPV6 else [socket.AF_INET]
    else:
        families = [family]
    if isinstance(host, bytes):
        host = host.decode("idna")
    if "%" in host:
        return None  # scope ids need the resolver
    for af in families:
        try:
            socket.inet_pton(af, host)
        except OSError:
            continue
        if _HAS_IPV6 and af == socket.AF_INET6:
            return af, type_, proto, "", (host, port, flowinfo, scopeid)
        return af, type_, proto, "", (host, port)
    return None


def _check_sendfile_params(file, offset, count):
    if "b" not in getattr(file, "mode", "b"):
        raise ValueError("file should be opened in binary mode")
    if count is not None:
        if not isinstance(count, int):
            raise TypeError(f"count must be a positive integer (got {count!r})")
        if count <= 0:
            raise ValueError(f"count must be a positive integer (got {count!r})")
    if not isinstance(offset, int):
        raise TypeError(f"offset must be a non-negative integer (got {offset!r})")
    if offset < 0:
        raise ValueError(f"offset must be a non-negative integer (got {offset!r})")


class TcpMixin:
    """create_server / create_connection / connect_accepted_socket / sendfile."""

    async def sendfile(self, transport, file, offset=0, count=None, *, fallback=True):
        """Send a file over a transport; return the number of bytes sent.

        Uses os.sendfile() where the platform has it, else (or for files that
        are not regular) reads and writes the file when *fallback* is true.
        """
        if transport.is_closing():
            raise RuntimeError("Transport is closing")
        if not isinstance(transport, TCPTransport):
            raise RuntimeError(f"sendfile is not supported for transport {transport!r}")
        _check_sendfile_params(file, offset, count)
        try:
            return await self._sendfile_native(transport, file, offset, count)
        except exceptions.SendfileNotAvailableError:
            if not fallback:
                raise
        return await self._sendfile_fallback(transport, file, offset, count)

    # -- raw socket operations on fd watchers (asyncio's selector semantics) --

    def _check_sock(self, sock):
        _check_ssl_socket(sock)
        if self.get_debug() and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")

    async def _sock_io(self, sock, writer, method, *args):
        """Retry ``method(*args)`` each time the socket is ready.

        While the operation waits, the loop holds an I/O reference on the
        socket (as ``makefile()`` does): ``sock.close()`` then only marks it
        closed, and the fd is released when the operation ends or the loop
        closes, never while libuv still watches it.
        """
        fut = self.create_future()
        fd = sock.fileno()
        if writer:
            handle = self._add_writer(fd, _sock_io_ready, fut, method, *args)
        else:
            handle = self._add_reader(fd, _sock_io_ready, fut, method, *args)
        if hasattr(sock, "_decref_socketios"):
            sock._io_refs += 1
            self._sock_io_pending[fut] = sock
        fut.add_done_callback(functools.partial(self._sock_io_done, fd, writer, handle))
        return await fut

    def _sock_io_done(self, fd, writer, handle, fut):
        # Unregister unless a later call already replaced (cancelled) it.
        if not handle.cancelled() and not self.is_closed():
            if writer:
                self._remove_writer(fd)
            else:
                self._remove_reader(fd)
        sock = self._sock_io_pending.pop(fut, None)
        if sock is not None:
            sock._decref_socketios()

    def _release_sock_io(self):
        """Loop close: give back the I/O references of waiting operations."""
        pending = self._sock_io_pending
        self._sock_io_pending = {}
        for sock in pending.values():
            sock._decref_socketios()

    async def sock_recv(self, sock, n):
        """Receive up to *n* bytes from the non-blocking socket *sock*."""
        self._check_sock(sock)
        # asyncio calls sock.recv(n): an object without recv() fails here,
        # before n is looked at.
        sock.recv  # noqa: B018
        fut = self.create_future()
        # Native: read now, or complete fut from the poll callback.
        data = self._sock_recv(sock, n, fut)
        if data is None:
            return await fut
        return data

    async def sock_recv_into(self, sock, buf):
        """Receive into *buf* from the non-blocking socket *sock*."""
        self._check_sock(sock)
        try:
            return sock.recv_into(buf)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._sock_io(sock, False, sock.recv_into, buf)

    async def sock_accept(self, sock):
        """Accept a connection: ``(conn, address)``, conn non-blocking."""
        self._check_sock(sock)
        try:
            conn, address = sock.accept()
        except (BlockingIOError, InterruptedError):
            conn, address = await self._sock_io(sock, False, sock.accept)
        conn.setblocking(False)
        return conn, address

    async def sock_connect(self, sock, address):
        """Connect the non-blocking socket *sock* to *address*."""
        self._check_sock(sock)
        if sock.family == socket.AF_INET or (_HAS_IPV6 and sock.family == socket.AF_INET6):
            host, port = address[:2]
            infos = await self._resolve(
                host, port, sock.family, sock.type, sock.proto, extra=address[2:]
            )
            if not infos:
                raise OSError("getaddrinfo() returned empty list")
            address = infos[0][4]
        try:
            sock.connect(address)
            return
        except (BlockingIOError, InterruptedError):
            pass
        await self._sock_io(sock, True, _connect_result, sock, address)

    async def sock_sendall(self, sock, data):
        """Send all of *data* on the non-blocking socket *sock*."""
        _check_ssl_socket(sock)
        if self.get_debug() and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")
        try:
            n = sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        if n == len(data):
            return
        view = memoryview(data).cast("B")
        fd = sock.fileno()
        while n < len(view):
            await self._writable(fd)
            try:
                n += sock.send(view[n:])
            except (BlockingIOError, InterruptedError):
                continue

    async def sock_sendfile(self, sock, file, offset=0, count=None, *, fallback=True):
        """Send a file over the non-blocking socket *sock*."""
        if self.get_debug() and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")
        _check_ssl_socket(sock)
        if sock.type != socket.SOCK_STREAM:
            raise ValueError("only SOCK_STREAM type sockets are supported")
        _check_sendfile_params(file, offset, count)
        try:
            return await self._sock_sendfile_native(sock.fileno(), file, offset, count)
        except exceptions.SendfileNotAvailableError:
            if not fallback:
                raise
        return await self._sock_sendfile_fallback(sock, file, offset, count)

    async def _sock_sendfile_fallback(self, sock, file, offset, count):
        async def send(chunk):
            await self.sock_sendall(sock, chunk)

        return await self._copy_file(
            file, offset, count, constants.SENDFILE_FALLBACK_READBUFFER_SIZE, send
        )

    async def _copy_file(self, file, offset, count, blocksize, send):
        """asyncio's sendfile fallback: read *file* from *offset* in chunks of
        at most *blocksize* (in the executor) and ``await send(chunk)`` each,
        up to *count* bytes or EOF; the file position ends after what was sent."""
        if offset:
            file.seek(offset)
        blocksize = min(count, blocksize) if count else blocksize
        buf = bytearray(blocksize)
        total_sent = 0
        try:
            while True:
                if count:
                    blocksize = min(count - total_sent, blocksize)
                    if blocksize <= 0:
                        break
                view = memoryview(buf)[:blocksize]
                read = await self.run_in_executor(None, file.readinto, view)
                if not read:
                    break  # EOF
                await send(view[:read])
                total_sent += read
            return total_sent
        finally:
            if total_sent > 0 and hasattr(file, "seek"):
                file.seek(offset + total_sent)

    async def _drained(self, transport):
        fut = self.create_future()
        transport._core._wait_drained(fut)
        await fut

    async def _sendfile_native(self, transport, file, offset, count):
        if not _sendfile_source(file, count)[1]:
            return 0  # empty file
        tsock = transport._transport_socket()
        if tsock is None:
            raise RuntimeError("Transport is closing")
        core = transport._core
        resume_reading = core.is_reading()
        core.pause_reading()
        await self._drained(transport)
        core._set_sendfile_active(True)
        try:
            return await self._sock_sendfile_native(tsock.fileno(), file, offset, count)
        finally:
            core._set_sendfile_active(False)
            if resume_reading:
                core.resume_reading()

    async def _sock_sendfile_native(self, fd, file, offset, count):
        """os.sendfile() from *file* to socket *fd*, waiting for writability."""
        fileno, blocksize = _sendfile_source(file, count)
        if not blocksize:
            return 0  # empty file
        total_sent = 0
        try:
            while True:
                if count:
                    blocksize = min(count - total_sent, blocksize)
                    if blocksize <= 0:
                        break
                try:
                    sent = os.sendfile(fd, fileno, offset + total_sent, blocksize)
                except (BlockingIOError, InterruptedError):
                    await self._writable(fd)
                    continue
                except OSError as exc:
                    if exc.errno == errno.ENOTCONN and type(exc) is not ConnectionError:
                        new_exc = ConnectionError("socket is not connected", errno.ENOTCONN)
                        new_exc.__cause__ = exc
                        exc = new_exc
                    if total_sent == 0:
                        # Not a file sendfile(2) can read: the fallback can.
                        raise exceptions.SendfileNotAvailableError(
                            "os.sendfile call failed"
                        ) from None
                    raise exc from None
                if sent == 0:
                    break  # EOF
                total_sent += sent
            return total_sent
        finally:
            if total_sent > 0:
                os.lseek(fileno, offset + total_sent, os.SEEK_SET)

    async def _writable(self, fd):
        fut = self.create_future()
        self._add_writer(fd, _set_done, fut)
        try:
            await fut
        finally:
            self._remove_writer(fd)

    async def _sendfile_fallback(self, transport, file, offset, count):
        core = transport._core

        async def send(chunk):
            await self._drained(transport)
            core._write_internal(bytes(chunk))

        core._set_sendfile_active(True)
        try:
            return await self._copy_file(file, offset, count, 16384, send)
        finally:
            core._set_sendfile_active(False)

    async def _resolve(
        self, host, port, family=0, type_=socket.SOCK_STREAM, proto=0, flags=0, extra=()
    ):
        info = _ip_literal_info(host, port, family, type_, proto, *extra)
        if info is not None:
            return [info]
        return await self.getaddrinfo(
            host, port, family=family, type=type_, proto=proto, flags=flags
        )

    async def _connect_one(self, exceptions, addr_info, local_addr_infos=None, opened=None):
        my_exceptions = []
        exceptions.append(my_exceptions)
        family, type_, proto, _, address = addr_info
        sock = None
        try:
            sock = socket.socket(family=family, type=type_, proto=proto)
            if opened is not None:
                opened.append(sock)
            sock.setblocking(False)
            if local_addr_infos is not None:
                for lfamily, _, _, _, laddr in local_addr_infos:
                    if lfamily != family:
                        continue
                    try:
                        sock.bind(laddr)
                        break
                    except OSError as exc:
                        msg = (
                            f"error while attempting to bind on address {laddr!r}: "
                            f"{exc.strerror.lower()}"
                        )
                        exc = OSError(exc.errno, msg)
                        my_exceptions.append(exc)
                else:
                    if my_exceptions:
                        raise my_exceptions.pop()
                    raise OSError(f"no matching local address with family={family} found")
            core = await self._uv_connect(sock, address)
            if opened is not None:
                opened.append(core)
            return sock, core
        except OSError as exc:
            my_exceptions.append(exc)
            if sock is not None:
                sock.close()
            raise
        except BaseException:
            if sock is not None:
                sock.close()
            raise
        finally:
            exceptions = my_exceptions = None

    async def _uv_connect(self, sock, address):
        fut = self.create_future()

        def done(exc):
            if fut.done():
                return
            if exc is None:
                fut.set_result(None)
            else:
                fut.set_exception(exc)

        fd = socket.dup(sock.fileno())
        try:
            core = _uvrs.TcpTransportCore.connect(self, fd, address, done)
        except BaseException:
            socket.close(fd)
            raise
        try:
            await fut
        except BaseException as exc:
            core.abort()
            core._release()
            if isinstance(exc, OSError):
                # asyncio's message for a failed connect.
                raise OSError(exc.errno, f"Connect call failed {address}") from None
            raise
        return core

    async def create_connection(
        self,
        protocol_factory,
        host=None,
        port=None,
        *,
        ssl=None,
        family=0,
        proto=0,
        flags=0,
        sock=None,
        local_addr=None,
        server_hostname=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
        happy_eyeballs_delay=None,
        interleave=None,
        all_errors=False,
    ):
        self._check_closed()
        if server_hostname is not None and not ssl:
            raise ValueError("server_hostname is only meaningful with ssl")
        if server_hostname is None and ssl:
            # The host name is the default server_hostname (asyncio's rule).
            if not host:
                raise ValueError("You must set server_hostname when using ssl without a host")
            server_hostname = host
        if ssl_handshake_timeout is not None and not ssl:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        if ssl_shutdown_timeout is not None and not ssl:
            raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
        tls = None
        if ssl:
            tls = TLS(ssl, False, server_hostname, ssl_handshake_timeout, ssl_shutdown_timeout)
        if sock is not None:
            _check_ssl_socket(sock)
        if happy_eyeballs_delay is not None and interleave is None:
            interleave = 1

        if host is not None or port is not None:
            if sock is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            infos = await self._resolve(host, port, family, socket.SOCK_STREAM, proto, flags)
            if not infos:
                raise OSError("getaddrinfo() returned empty list")
            laddr_infos = None
            if local_addr is not None:
                lhost, lport = local_addr[:2]
                laddr_infos = await self._resolve(
                    lhost, lport, family, socket.SOCK_STREAM, proto, flags, extra=local_addr[2:]
                )
                if not laddr_infos:
                    raise OSError("getaddrinfo() returned empty list")
            if interleave:
                infos = _interleave_addrinfos(infos, interleave)

            exceptions = []
            result = None
            # Every socket and core opened by an attempt: whatever is not the
            # winner is closed here, even when the race itself is cancelled
            # after an attempt succeeded.
            opened = []
            try:
                if happy_eyeballs_delay is None:
                    for addrinfo in infos:
                        try:
                            result = await self._connect_one(exceptions, addrinfo, laddr_infos)
                            break
                        except OSError:
                            continue
                else:
                    result, _, _ = await staggered.staggered_race(
                        (
                            lambda addrinfo=addrinfo: self._connect_one(
                                exceptions, addrinfo, laddr_infos, opened
                            )
                            for addrinfo in infos
                        ),
                        happy_eyeballs_delay,
                    )
            finally:
                keep = result if result is not None else ()
                for obj in opened:
                    if any(obj is k for k in keep):
                        continue
                    if isinstance(obj, socket.socket):
                        obj.close()
                    else:
                        obj.abort()
                        obj._release()
            if result is None:
                exceptions = [exc for sub in exceptions for exc in sub]
                try:
                    if all_errors:
                        raise ExceptionGroup("create_connection failed", exceptions)  # noqa: F821
                    if len(exceptions) == 1:
                        raise exceptions[0]
                    model = str(exceptions[0])
                    if all(str(exc) == model for exc in exceptions):
                        raise exceptions[0]
                    raise OSError(
                        "Multiple exceptions: {}".format(", ".join(str(exc) for exc in exceptions))
                    )
                finally:
                    exceptions = None
            sock, core = result
            # Only libuv's copy of the fd is needed from now on: the socket
            # object get_extra_info('socket') gives is made if it is asked
            # for, so an idle connection costs one fd, as on asyncio.
            return await self._make_connection(
                core, sock, protocol_factory, tls=tls, own_sock=True
            )
        else:
            if sock is None:
                raise ValueError("host and port was not specified and no sock specified")
            if sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A Stream Socket was expected, got {sock!r}")
            sock.setblocking(False)
            core = _uvrs.TcpTransportCore.from_fd(self, socket.dup(sock.fileno()))

        return await self._make_connection(core, sock, protocol_factory, tls=tls)

    async def _make_connection(
        self, core, sock, protocol_factory, cls=TCPTransport, tls=None, own_sock=False
    ):
        waiter = self.create_future()
        try:
            protocol = protocol_factory()
            # TLS: the raw transport carries asyncio's SSLProtocol; the user
            # gets its app transport once the handshake is done.
            ssl_protocol = None if tls is None else tls.protocol(self, protocol, waiter)
        except BaseException:
            core.abort()
            core._release()
            sock.close()
            raise
        extra = {}
        try:
            extra["sockname"] = sock.getsockname()
        except OSError:
            pass
        try:
            extra["peername"] = sock.getpeername()
        except OSError:
            extra["peername"] = None
        if own_sock:
            # A socket of our own making: libuv has its own copy of the fd.
            sock.close()
            sock = None
        if ssl_protocol is None:
            transport = cls(self, core, protocol, sock=sock, extra=extra)
            transport._start(waiter)
        else:
            cls(self, core, ssl_protocol, sock=sock, extra=extra)._start()
            transport = ssl_protocol._app_transport
        try:
            await waiter
        except BaseException:
            transport.close()
            # gh-109534: the exception in the waiter must not keep the
            # protocol alive through a reference cycle.
            waiter = None
            raise
        return transport, protocol

    async def connect_accepted_socket(
        self,
        protocol_factory,
        sock,
        *,
        ssl=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        self._check_closed()
        if sock.type != socket.SOCK_STREAM:
            raise ValueError(f"A Stream Socket was expected, got {sock!r}")
        if ssl_handshake_timeout is not None and not ssl:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        if ssl_shutdown_timeout is not None and not ssl:
            raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
        _check_ssl_socket(sock)
        tls = None
        if ssl:
            tls = TLS(ssl, True, "", ssl_handshake_timeout, ssl_shutdown_timeout)
        sock.setblocking(False)
        core = _uvrs.TcpTransportCore.from_fd(self, socket.dup(sock.fileno()))
        return await self._make_connection(core, sock, protocol_factory, tls=tls)

    async def create_server(
        self,
        protocol_factory,
        host=None,
        port=None,
        *,
        family=socket.AF_UNSPEC,
        flags=socket.AI_PASSIVE,
        sock=None,
        backlog=100,
        ssl=None,
        reuse_address=None,
        reuse_port=None,
        keep_alive=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
        start_serving=True,
    ):
        if isinstance(ssl, bool):
            raise TypeError("ssl argument must be an SSLContext or None")
        if ssl_handshake_timeout is not None and ssl is None:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        if ssl_shutdown_timeout is not None and ssl is None:
            raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
        if sock is not None:
            _check_ssl_socket(sock)
        self._check_closed()

        if host is not None or port is not None:
            if sock is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            if reuse_address is None:
                reuse_address = os_name_posix()
            sockets = []
            if host == "":
                hosts = [None]
            elif isinstance(host, str) or not isinstance(host, collections.abc.Iterable):
                hosts = [host]
            else:
                hosts = host
            fs = [
                self._resolve(h, port, family, socket.SOCK_STREAM, 0, flags) for h in hosts
            ]
            infos = await asyncio.gather(*fs)
            infos = set(itertools.chain.from_iterable(infos))
            completed = False
            try:
                for res in infos:
                    af, socktype, proto, _, sa = res
                    try:
                        sock = socket.socket(af, socktype, proto)
                    except OSError:
                        if self.get_debug():
                            logger.warning(
                                "create_server() failed to create socket.socket(%r, %r, %r)",
                                af,
                                socktype,
                                proto,
                                exc_info=True,
                            )
                        continue
                    sockets.append(sock)
                    if reuse_address:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, True)
                    if reuse_port:
                        _set_reuseport(sock)
                    if keep_alive:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, True)
                    if _HAS_IPV6 and af == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, True)
                    try:
                        sock.bind(sa)
                    except OSError as err:
                        msg = (
                            f"error while attempting to bind on address {sa!r}: "
                            f"{str(err.strerror).lower()}"
                        )
                        if err.errno == errno.EADDRNOTAVAIL:
                            sockets.pop()
                            sock.close()
                            if self.get_debug():
                                logger.warning(msg)
                            continue
                        raise OSError(err.errno, msg) from None
                if not sockets:
                    raise OSError(
                        f"could not bind on any address out of {[info[4] for info in infos]!r}"
                    )
                completed = True
            finally:
                if not completed:
                    for s in sockets:
                        s.close()
        else:
            if sock is None:
                raise ValueError("Neither host/port nor sock were specified")
            if sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A Stream Socket was expected, got {sock!r}")
            sockets = [sock]

        for s in sockets:
            s.setblocking(False)
        server = Server(self, sockets, protocol_factory, backlog)
        if ssl is not None:
            server._tls = TLS(ssl, True, None, ssl_handshake_timeout, ssl_shutdown_timeout)
        if start_serving:
            await server._serve_from_create()
        if self.get_debug():
            logger.info("%r is serving", server)
        return server


def _sendfile_source(file, count):
    """(fileno, blocksize) of a file os.sendfile() can read, or
    SendfileNotAvailableError."""
    if not hasattr(os, "sendfile"):
        raise exceptions.SendfileNotAvailableError("os.sendfile() is not available")
    try:
        fileno = file.fileno()
    except (AttributeError, io.UnsupportedOperation):
        raise exceptions.SendfileNotAvailableError("not a regular file") from None
    try:
        fsize = os.fstat(fileno).st_size
    except OSError:
        raise exceptions.SendfileNotAvailableError("not a regular file") from None
    return fileno, (count if count else fsize)


def _sock_io_ready(fut, method, *args):
    if fut.done():
        return
    try:
        result = method(*args)
    except (BlockingIOError, InterruptedError):
        return
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


def _connect_result(sock, address):
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err != 0:
        raise OSError(err, f"Connect call failed {address}")


def _set_done(fut):
    if not fut.done():
        fut.set_result(None)


def os_name_posix():
    return sys.platform != "win32" and sys.platform != "cygwin"


def _set_reuseport(sock):
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError("reuse_port not supported by socket module")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        raise ValueError(
            "reuse_port not supported by socket module, SO_REUSEPORT defined but not implemented."
        ) from None


def _check_ssl_socket(sock):
    try:
        import ssl
    except ImportError:
        return
    if isinstance(sock, ssl.SSLSocket):
        raise TypeError("Socket cannot be of type SSLSocket")


def _interleave_addrinfos(addrinfos, first_address_family_count=1):
    """Alternate address families, as RFC 8305 (happy eyeballs) asks."""
    by_family = collections.OrderedDict()
    for addr in addrinfos:
        by_family.setdefault(addr[0], []).append(addr)
    lists = list(by_family.values())
    reordered = []
    if first_address_family_count > 1:
        reordered.extend(lists[0][: first_address_family_count - 1])
        del lists[0][: first_address_family_count - 1]
    reordered.extend(
        a for a in itertools.chain.from_iterable(itertools.zip_longest(*lists)) if a is not None
    )
    return reordered
