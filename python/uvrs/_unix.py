"""Unix sockets and pipes: servers, connections and pipe transports.

Sockets are created, bound and connected with Python's ``socket`` module, as
asyncio does (so abstract ``"\\0name"`` paths and every check behave the same);
their traffic then runs on a libuv pipe handle with the same native core as
TCP (``_uvrs.TcpTransportCore`` with ``tcp=False``).

Ownership: libuv works on a duplicate of each fd and closes it with its
handle; the socket or pipe object the user handed in is closed exactly once,
by the transport, when the connection is lost.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import os
import socket
import stat
import sys
import warnings
from asyncio import futures
from asyncio.log import logger

from . import _uvrs
from ._tcp import (
    TLS,
    Server,
    TCPTransport,
    _check_ssl_socket,
    _CoreReading,
    _CoreTransport,
    _CoreWriting,
    _transport_ready,
)
from ._threadpipe import (
    ThreadedReadPipeTransport,
    ThreadedWritePipeTransport,
    accept_pipe_write,
    threaded_pipes,
)

_PY313 = sys.version_info >= (3, 13)
_AF_UNIX = getattr(socket, "AF_UNIX", None)


def _no_unix_sockets():
    return NotImplementedError("Unix sockets are not available on this platform")


def _is_abstract(path):
    return path[0] in (0, "\x00")


class UnixTransport(TCPTransport):
    """An ``asyncio.Transport`` over a Unix stream socket (libuv pipe)."""


class _PipeTransport(_CoreTransport):
    """What read and write pipe transports share: the native core, the pipe
    object (closed once, when the connection is lost) and the lifecycle."""

    def _setup(self, loop, core, pipe, protocol):
        self._extra["pipe"] = pipe
        self._loop = loop
        self._core = core
        self._pipe = pipe
        self._protocol = protocol
        core._attach(protocol, self, False, contextvars.copy_context())

    def set_protocol(self, protocol):
        self._protocol = protocol
        self._core.set_protocol(protocol, False)

    def get_protocol(self):
        return self._protocol

    def _call_connection_lost(self, exc):
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._core._release()
            self._pipe.close()
            self._pipe = None
            self._protocol = None
            self._loop = None

    def __repr__(self):
        info = [self.__class__.__name__]
        if self._pipe is None:
            info.append("closed")
        elif self._core.is_closing():
            info.append("closing")
        info.append(f"fd={self._fileno}")
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn=warnings.warn):
        pipe = getattr(self, "_pipe", None)
        if pipe is not None and not self._core.is_closing():
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            try:
                self._core.abort()
            except RuntimeError:
                pass  # the loop is closed: the pipe is closed all the same
            pipe.close()
            self._pipe = None


class ReadPipeTransport(_PipeTransport, _CoreReading, asyncio.ReadTransport):
    """``connect_read_pipe``: reads a pipe, socket or character device."""

    def __init__(self, loop, pipe, protocol, waiter):
        super().__init__({"pipe": pipe})
        self._pipe = None
        fileno = pipe.fileno()
        mode = os.fstat(fileno).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
            raise ValueError("Pipe transport is for pipes/sockets only.")
        os.set_blocking(fileno, False)
        self._fileno = fileno
        self._is_tty = stat.S_ISCHR(mode)
        core = _uvrs.TcpTransportCore.from_fd(loop, os.dup(fileno), False, "read_pipe")
        self._setup(loop, core, pipe, protocol)
        loop.call_soon(protocol.connection_made, self)
        # Reading starts once connection_made() has run.
        loop.call_soon(core._start_reading)
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)

    def _probe_eof(self):
        """At libuv's EOF: the OSError a read gives now (a pty whose other
        side closed fails with EIO), or None."""
        if not self._is_tty:
            return None
        try:
            os.read(self._fileno, 1)
        except BlockingIOError:
            return None
        except OSError as exc:
            return exc
        return None


# asyncio.Transport, not WriteTransport: asyncio's write pipe transport is one
# too (through _FlowControlMixin), so pause_reading() raises NotImplementedError.
class WritePipeTransport(_PipeTransport, _CoreWriting, asyncio.Transport):
    """``connect_write_pipe``: writes to a pipe, socket or character device.

    The read end closing is seen as asyncio sees it: by watching a duplicate
    of the fd for readability (libuv's handle owns the other duplicate and
    cannot read a write-only pipe).
    """

    def __init__(self, loop, pipe, protocol, waiter):
        super().__init__({"pipe": pipe})
        self._pipe = None
        self._watch_fd = None
        fileno = pipe.fileno()
        mode = os.fstat(fileno).st_mode
        is_fifo = stat.S_ISFIFO(mode)
        is_socket = stat.S_ISSOCK(mode)
        if not (stat.S_ISCHR(mode) or is_fifo or is_socket):
            raise ValueError("Pipe transport is only for pipes, sockets and character devices")
        os.set_blocking(fileno, False)
        self._fileno = fileno
        self._lost_writes = 0
        core = _uvrs.TcpTransportCore.from_fd(loop, os.dup(fileno), False, "write_pipe")
        self._setup(loop, core, pipe, protocol)
        loop.call_soon(protocol.connection_made, self)
        if is_socket or (is_fifo and not sys.platform.startswith("aix")):
            self._watch_fd = os.dup(fileno)
            loop.call_soon(self._watch_peer)
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)

    def _watch_peer(self):
        if self._watch_fd is not None and not self._core.is_closing():
            self._loop._add_reader(self._watch_fd, self._read_ready)

    def _read_ready(self):
        # The read end was closed.
        if self._loop.get_debug():
            logger.info("%r was closed by peer", self)
        if self._core.get_write_buffer_size():
            self._core._force_close(BrokenPipeError())
        else:
            self._core.close()
        self._unwatch()

    def _unwatch(self):
        fd = self._watch_fd
        if fd is not None:
            self._watch_fd = None
            if self._loop is not None and not self._loop.is_closed():
                self._loop._remove_reader(fd)
            os.close(fd)

    def write(self, data):
        if accept_pipe_write(self, data, self._core.is_closing()):
            self._core.write(data)

    def writelines(self, list_of_data):
        for data in list_of_data:
            self.write(data)

    def _call_connection_lost(self, exc):
        self._unwatch()
        super()._call_connection_lost(exc)

    def __del__(self, _warn=warnings.warn):
        super().__del__(_warn)
        # Still registered, the reader would have kept the transport alive:
        # the duplicate is only left to close.
        fd = getattr(self, "_watch_fd", None)
        if fd is not None:
            self._watch_fd = None
            os.close(fd)


_THREADED = {
    ReadPipeTransport: ThreadedReadPipeTransport,
    WritePipeTransport: ThreadedWritePipeTransport,
}


def remove_stale_unix_socket(path):
    """A socket file left by an earlier server at *path* is replaced, as
    asyncio does (abstract names have no file)."""
    if _is_abstract(path):
        return
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        logger.error("Unable to check or remove stale UNIX socket %r: %r", path, err)


def _check_unix_stream_socket(sock):
    if sock.family != _AF_UNIX or sock.type != socket.SOCK_STREAM:
        raise ValueError(f"A UNIX Domain Stream Socket was expected, got {sock!r}")


class UnixMixin:
    """The Unix-socket and pipe methods of ``uvrs.Loop``."""

    async def create_unix_connection(
        self,
        protocol_factory,
        path=None,
        *,
        ssl=None,
        sock=None,
        server_hostname=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        self._check_closed()
        if _AF_UNIX is None:
            raise _no_unix_sockets()
        assert server_hostname is None or isinstance(server_hostname, str)
        tls = None
        if ssl:
            if server_hostname is None:
                raise ValueError("you have to pass server_hostname when using ssl")
            tls = TLS(ssl, False, server_hostname, ssl_handshake_timeout, ssl_shutdown_timeout)
        else:
            if server_hostname is not None:
                raise ValueError("server_hostname is only meaningful with ssl")
            if ssl_handshake_timeout is not None:
                raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
            if ssl_shutdown_timeout is not None:
                raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
        if path is not None:
            if sock is not None:
                raise ValueError("path and sock can not be specified at the same time")
            path = os.fspath(path)
            sock = socket.socket(_AF_UNIX, socket.SOCK_STREAM, 0)
            try:
                sock.setblocking(False)
                await self.sock_connect(sock, path)
            except BaseException:
                sock.close()
                raise
        else:
            if sock is None:
                raise ValueError("no path and sock were specified")
            _check_unix_stream_socket(sock)
            _check_ssl_socket(sock)
            sock.setblocking(False)
        try:
            core = _uvrs.TcpTransportCore.from_fd(self, os.dup(sock.fileno()), False)
        except BaseException:
            sock.close()
            raise
        return await self._make_connection(core, sock, protocol_factory, UnixTransport, tls)

    async def create_unix_server(
        self,
        protocol_factory,
        path=None,
        *,
        sock=None,
        backlog=100,
        ssl=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
        start_serving=True,
        cleanup_socket=None,
    ):
        # 3.13 added cleanup_socket (default True); uvrs accepts it on every
        # version (as uvloop does) and defaults to what the running asyncio
        # does: clean up from 3.13 on.
        if cleanup_socket is None:
            cleanup_socket = _PY313
        if isinstance(ssl, bool):
            raise TypeError("ssl argument must be an SSLContext or None")
        if ssl_handshake_timeout is not None and not ssl:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        if ssl_shutdown_timeout is not None and not ssl:
            raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
        self._check_closed()
        if _AF_UNIX is None:
            raise _no_unix_sockets()
        if path is not None:
            if sock is not None:
                raise ValueError("path and sock can not be specified at the same time")
            path = os.fspath(path)
            sock = socket.socket(_AF_UNIX, socket.SOCK_STREAM)
            remove_stale_unix_socket(path)
            try:
                sock.bind(path)
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EADDRINUSE:
                    raise OSError(errno.EADDRINUSE, f"Address {path!r} is already in use") from None
                raise
            except BaseException:
                sock.close()
                raise
        else:
            if sock is None:
                raise ValueError("path was not specified, and no sock specified")
            _check_unix_stream_socket(sock)
            _check_ssl_socket(sock)
        cleanup = None
        if cleanup_socket:
            name = sock.getsockname()
            if name and not _is_abstract(name):
                try:
                    cleanup = (name, os.stat(name).st_ino)
                except FileNotFoundError:
                    pass
        sock.setblocking(False)
        server = Server(self, [sock], protocol_factory, backlog)
        server._unix_cleanup = cleanup
        server._transport_cls = UnixTransport
        if ssl:
            server._tls = TLS(ssl, True, None, ssl_handshake_timeout, ssl_shutdown_timeout)
        if start_serving:
            await server._serve_from_create()
        return server

    async def connect_read_pipe(self, protocol_factory, pipe):
        return await self._connect_pipe(ReadPipeTransport, protocol_factory, pipe)

    async def connect_write_pipe(self, protocol_factory, pipe):
        return await self._connect_pipe(WritePipeTransport, protocol_factory, pipe)

    async def _connect_pipe(self, transport_cls, protocol_factory, pipe):
        self._check_closed()
        if threaded_pipes():  # Windows, or UVRS_THREADED_PIPES=1
            transport_cls = _THREADED[transport_cls]
        return await _transport_ready(
            self, protocol_factory, lambda proto, waiter: transport_cls(self, pipe, proto, waiter)
        )
