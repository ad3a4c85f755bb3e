"""Pipe transports driven by one thread per pipe (Windows).

Windows pipes from ``subprocess.Popen`` are anonymous pipes opened for
synchronous I/O: they can be neither polled nor used with overlapped I/O, so
uvrs reads and writes them with blocking calls in a thread per pipe, and the
thread hands results to the loop with ``call_soon_threadsafe``. The
transports have asyncio's read/write pipe semantics (flow control, EOF,
``connection_lost`` once, the pipe closed once); on Unix the same classes
run when ``UVRS_THREADED_PIPES=1`` is set, which is how the test suite
covers them.

The one thing a thread cannot do is notice that the other end of a write
pipe went away without writing to it; the subprocess transport tells a
stdin transport when its child exits instead.
"""

from __future__ import annotations

import collections
import errno
import os
import stat
import sys
import threading
import warnings
from asyncio import constants, futures, transports
from asyncio.log import logger

__all__ = ("ThreadedReadPipeTransport", "ThreadedWritePipeTransport", "threaded_pipes")

_READ_SIZE = 256 * 1024


def threaded_pipes():
    """Whether pipe transports are the threaded ones here."""
    return sys.platform == "win32" or os.environ.get("UVRS_THREADED_PIPES") == "1"


def accept_pipe_write(transport, data, closing):
    """asyncio's checks on a write pipe's ``write()``; True if *data* is to
    be written. Writes to a closing pipe are dropped, with a warning once a
    few have been (``transport._lost_writes`` counts them)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data argument must be a bytes-like object, not {type(data).__name__!r}")
    if not data:
        return False
    if closing:
        if transport._lost_writes >= constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES:
            logger.warning("pipe closed by peer or os.write(pipe, data) raised exception.")
        transport._lost_writes += 1
        return False
    return True


def post_to_loop(loop, callback, *args):
    """call_soon_threadsafe, False once the loop is closed."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        return False
    return True


class _ThreadedPipe:
    """The lifecycle both directions share. The pipe is closed exactly once:
    by the loop when the connection is lost while the thread is not inside a
    read or write, else by the thread as soon as that call returns, so the
    fd is never closed under a blocked call (nor reused while one runs)."""

    def _setup(self, loop, pipe, protocol):
        self._extra["pipe"] = pipe
        self._loop = loop
        self._pipe = pipe
        self._fileno = pipe.fileno()
        self._protocol = protocol
        self._closing = False
        self._lock = threading.Lock()
        self._in_io = False  # the thread is inside os.read()/os.write()
        self._lost = False
        if sys.platform != "win32":
            os.set_blocking(self._fileno, True)

    def _start_thread(self, target, kind):
        self._thread_started = True
        threading.Thread(target=target, name=f"uvrs-{kind}-pipe-{self._fileno}",
                         daemon=True).start()  # fmt: skip

    def _enter_io(self):
        """Thread side, before a blocking call: False if the pipe is done."""
        with self._lock:
            if self._lost:
                return False
            self._in_io = True
            return True

    def _leave_io(self):
        """Thread side, after the call: False (and the pipe closed) if the
        connection was lost meanwhile."""
        with self._lock:
            self._in_io = False
            lost = self._lost
        if lost:
            self._close_pipe()
        return not lost

    def _close_pipe(self):
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            pipe.close()

    def is_closing(self):
        return self._closing

    def set_protocol(self, protocol):
        self._protocol = protocol

    def get_protocol(self):
        return self._protocol

    def _call_connection_lost(self, exc):
        if self._lost:
            return
        try:
            self._protocol.connection_lost(exc)
        finally:
            with self._lock:
                self._lost = True
                close = not self._in_io
            if close:
                self._close_pipe()
            self._protocol = None
            self._loop = None

    def _fatal_error(self, exc, message):
        if isinstance(exc, OSError):
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler(
                {"message": message, "exception": exc, "transport": self,
                 "protocol": self._protocol}
            )  # fmt: skip
        self._force_close(exc)

    def __repr__(self):
        info = [self.__class__.__name__]
        if self._lost:
            info.append("closed")
        elif self._closing:
            info.append("closing")
        info.append(f"fd={self._fileno}")
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn=warnings.warn):
        if getattr(self, "_pipe", None) is not None and not self._closing:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)


def _check_mode(fileno, message):
    mode = os.fstat(fileno).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
        raise ValueError(message)


class ThreadedReadPipeTransport(_ThreadedPipe, transports.ReadTransport):
    """``connect_read_pipe`` over a blocking pipe read by a thread."""

    _thread_started = False

    def __init__(self, loop, pipe, protocol, waiter=None):
        super().__init__({"pipe": pipe})
        _check_mode(pipe.fileno(), "Pipe transport is for pipes/sockets only.")
        self._setup(loop, pipe, protocol)
        self._paused = False
        self._pending = collections.deque()  # data read while paused
        self._resume = threading.Event()
        self._resume.set()
        loop.call_soon(protocol.connection_made, self)
        loop.call_soon(self._begin)
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)

    def _begin(self):
        if not self._closing:
            self._start_thread(self._read_loop, "read")

    def _read_loop(self):
        loop = self._loop
        while True:
            self._resume.wait()
            if self._closing or not self._enter_io():
                return
            try:
                data = os.read(self._fileno, _READ_SIZE)
            except OSError as exc:
                if self._leave_io():
                    post_to_loop(loop, self._on_error, exc)
                return
            if not self._leave_io():
                return
            if not post_to_loop(loop, self._on_data, data) or not data:
                return

    def _on_data(self, data):
        if self._closing:
            return
        if self._paused:
            self._pending.append(data)
            return
        self._deliver(data)

    def _deliver(self, data):
        if data:
            try:
                self._protocol.data_received(data)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")
            return
        if self._loop.get_debug():
            logger.info("%r was closed by peer", self)
        self._closing = True
        self._loop.call_soon(self._protocol.eof_received)
        self._loop.call_soon(self._call_connection_lost, None)

    def _on_error(self, exc):
        if not self._closing:
            self._fatal_error(exc, "Fatal read error on pipe transport")

    def pause_reading(self):
        if self._closing or self._paused:
            return
        self._paused = True
        self._resume.clear()

    def resume_reading(self):
        if self._closing or not self._paused:
            return
        self._paused = False
        while self._pending and not self._paused and not self._closing:
            self._deliver(self._pending.popleft())
        if not self._paused:
            self._resume.set()

    def is_reading(self):
        return not self._paused and not self._closing

    def close(self):
        if not self._closing:
            self._force_close(None)

    def _force_close(self, exc):
        self._closing = True
        self._pending.clear()
        self._resume.set()  # a paused thread wakes up and leaves
        self._loop.call_soon(self._call_connection_lost, exc)


class ThreadedWritePipeTransport(_ThreadedPipe, transports._FlowControlMixin, transports.Transport):
    """``connect_write_pipe`` over a blocking pipe written by a thread."""

    _thread_started = False

    def __init__(self, loop, pipe, protocol, waiter=None):
        super().__init__({"pipe": pipe}, loop)
        _check_mode(
            pipe.fileno(), "Pipe transport is only for pipes, sockets and character devices"
        )
        self._setup(loop, pipe, protocol)
        self._queue = collections.deque()
        self._buffer_size = 0  # bytes written to the transport, not yet to the pipe
        self._wakeup = threading.Condition(self._lock)
        self._lost_writes = 0
        self._drain_close = False  # close() with data still queued
        loop.call_soon(protocol.connection_made, self)
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)

    def get_write_buffer_size(self):
        return self._buffer_size

    def write(self, data):
        if not accept_pipe_write(self, data, self._closing or self._lost):
            return
        data = bytes(data)
        if not self._thread_started:
            self._start_thread(self._write_loop, "write")
        with self._wakeup:
            self._queue.append(data)
            self._wakeup.notify()
        self._buffer_size += len(data)
        self._maybe_pause_protocol()

    def writelines(self, list_of_data):
        for data in list_of_data:
            self.write(data)

    def _write_loop(self):
        loop = self._loop
        while True:
            with self._wakeup:
                while not self._queue and not self._closing:
                    self._wakeup.wait()
                if not self._queue or self._lost:
                    return  # closing, nothing left to write
                data = self._queue.popleft()
                self._in_io = True
            view = memoryview(data)
            try:
                while view:
                    n = os.write(self._fileno, view)
                    view = view[n:]
            except OSError as exc:
                if self._leave_io():
                    post_to_loop(loop, self._on_error, exc)
                return
            if not self._leave_io() or not post_to_loop(loop, self._on_written, len(data)):
                return

    def _on_written(self, n):
        self._buffer_size -= n
        if self._lost:
            return
        self._maybe_resume_protocol()
        if self._drain_close and not self._buffer_size:
            self._loop.call_soon(self._call_connection_lost, None)

    def _on_error(self, exc):
        if self._lost:
            return
        if isinstance(exc, ConnectionResetError) or (
            # Windows reports a vanished reader as EINVAL (ERROR_NO_DATA).
            sys.platform == "win32" and exc.errno in (errno.EPIPE, errno.EINVAL)
        ):
            exc = BrokenPipeError(*exc.args)  # the reader went away
        self._fatal_error(exc, "Fatal write error on pipe transport")

    def can_write_eof(self):
        return True

    def write_eof(self):
        self.close()

    def close(self):
        if self._closing:
            return
        with self._wakeup:
            self._closing = True
            self._wakeup.notify()
        if self._buffer_size:
            self._drain_close = True  # connection_lost once the thread wrote it all
        else:
            self._loop.call_soon(self._call_connection_lost, None)

    def abort(self):
        self._force_close(None)

    def _force_close(self, exc):
        if self._lost:
            return
        with self._wakeup:
            self._closing = True
            self._queue.clear()
            self._wakeup.notify()
        self._buffer_size = 0
        self._drain_close = False
        self._loop.call_soon(self._call_connection_lost, exc)

    def _peer_gone(self):
        """The reading side is known to be gone (its process exited)."""
        if self._lost:
            return
        if self._buffer_size:
            self._force_close(BrokenPipeError())
        elif not self._closing:
            self.close()
