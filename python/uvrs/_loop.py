"""The uvrs event loop: native core + per-loop Python logic.

``Loop`` combines the native ``_uvrs.LoopCore`` (ready queue, timers, libuv,
``call_soon`` & co.) with ``_LoopMixin``, which implements everything that runs
once per loop or per ``run_*`` call: the run_forever / run_until_complete /
close wrappers, the default executor, async generator hooks, the exception
handler and debug mode.  Behaviour follows CPython's ``asyncio`` for the
running Python version (see docs/architecture.md for the native contract).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import signal
import socket
import sys
import threading
import time
import traceback
import warnings
import weakref
from typing import Any, NamedTuple

try:
    import ssl as _ssl
except ImportError:  # pragma: no cover - CPython built without OpenSSL
    _ssl = None  # type: ignore[assignment]
from asyncio import constants, coroutines, events, futures, tasks
from asyncio.log import logger

from . import _uvrs
from ._process import ProcessMixin
from ._signals import SignalMixin
from ._tcp import TLS, TcpMixin
from ._udp import DatagramMixin
from ._unix import UnixMixin

__all__ = ("Loop", "LoopMetrics")

_PY311 = sys.version_info >= (3, 11)
_PY312 = sys.version_info >= (3, 12)

# Number of stack entries captured by coroutine origin tracking in debug mode.
_DEBUG_STACK_DEPTH = getattr(constants, "DEBUG_STACK_DEPTH", 10)

# 3.14 deprecates asyncio.iscoroutinefunction; asyncio itself uses the private one.
_iscoroutinefunction = getattr(coroutines, "_iscoroutinefunction", None)
if _iscoroutinefunction is None:  # Python < 3.14
    _iscoroutinefunction = coroutines.iscoroutinefunction

# asyncio.timeout() is new in 3.11; 3.10 falls back to wait_for().
_timeout_cm = getattr(asyncio, "timeout", None)

_TRACK_TCP = "TCP"

# File descriptors are C ints.
_FD_MAX = 2**31 - 1


def _fileobj_to_fd(fileobj):
    """An fd number from an int or an object with fileno(), as selectors do."""
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return fd


def _format_handle(handle):
    """Same text as asyncio's slow-callback warning uses for a handle."""
    callback = handle._callback
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        return repr(owner)
    return str(handle)


class LoopMetrics(NamedTuple):
    """libuv's counters for one loop, as ``Loop.metrics()`` returns them."""

    #: Seconds the loop spent blocked in the kernel's poll, waiting for I/O or
    #: a timer: the rest of its running time was spent working. None unless
    #: the loop was created with UVRS_LOOP_METRICS=1 in the environment
    #: (measuring it costs libuv an extra poll per iteration).
    idle_time: float | None
    #: Loop iterations so far (each runs the ready callbacks once).
    loop_count: int
    #: I/O events the poll has reported and handed to callbacks.
    events: int
    #: Events already waiting when a poll returned: a measure of backlog.
    events_waiting: int


# Loops whose pending timers the gc hook looks at (see _gc_hook).
_live_loops: weakref.WeakSet[Any] = weakref.WeakSet()
_gc_starts = 0


def _gc_hook(phase, info):
    """Before a full collection (and every 16th of the others), let each loop
    that is not running put back under the GC the pending timers that someone
    else holds. The native core keeps pending timers out of the GC's lists,
    which saves walking them on every collection; without this, a loop
    dropped without close() while, say, a forgotten task's sleep still holds
    its timer, would never be collected."""
    global _gc_starts
    if phase != "start" or not _live_loops:
        return
    _gc_starts += 1
    if info.get("generation") == 2 or not _gc_starts % 16:
        for lp in list(_live_loops):
            lp._gc_track_shared()


gc.callbacks.append(_gc_hook)


def _run_until_complete_cb(fut):
    if not fut.cancelled():
        exc = fut.exception()
        if isinstance(exc, (SystemExit, KeyboardInterrupt)):
            # run_forever() is already unwinding with this exception.
            return
    futures._get_loop(fut).stop()


def _set_result_unless_cancelled(fut, result):
    if not fut.cancelled():
        fut.set_result(result)


def _set_exception_unless_cancelled(fut, exc):
    if not fut.cancelled():
        fut.set_exception(exc)


class _LoopMixin:
    """Per-loop Python logic of ``uvrs.Loop`` (no per-callback work here)."""

    # Class-level defaults keep close() / __del__ / __repr__ safe on objects
    # whose __init__ did not run (e.g. a subclass forgot to call it).
    slow_callback_duration = 0.1
    _exception_handler = None
    _default_executor = None
    _executor_shutdown_called = False
    _asyncgens_shutdown_called = False
    _old_agen_hooks = None
    _thread_id = None
    _current_handle = None
    _coroutine_origin_tracking_enabled = False
    _coroutine_origin_tracking_saved_depth = None
    _wakeup_pair = None
    _wakeup_installed = False

    def __init__(self):
        # In debug mode, a callback or task step slower than this (seconds)
        # is logged by the native core through _report_slow_callback().
        self.slow_callback_duration = 0.1
        self._exception_handler = None
        self._default_executor = None
        self._executor_shutdown_called = False
        # Weak set of the asynchronous generators iterated by this loop.
        self._asyncgens = weakref.WeakSet()
        # fd -> transport, for the fd watchers' "used by transport" check.
        self._transports = weakref.WeakValueDictionary()
        _live_loops.add(self)
        # Pending sock_* futures -> their socket (an I/O reference is held).
        self._sock_io_pending = {}
        self._asyncgens_shutdown_called = False
        self._old_agen_hooks = None
        # Identifier of the thread running the loop, None when not running.
        self._thread_id = None
        self._clock_resolution = time.get_clock_info("monotonic").resolution
        self._coroutine_origin_tracking_enabled = False
        self._coroutine_origin_tracking_saved_depth = None
        # Lazily created (rsock, wsock) socketpair for signal.set_wakeup_fd().
        self._wakeup_pair = None
        self._wakeup_installed = False
        self._init_signals()
        self.set_debug(coroutines._is_debug_mode())

    def __repr__(self):
        return (
            f"<{self.__class__.__name__} running={self.is_running()} "
            f"closed={self.is_closed()} debug={self.get_debug()}>"
        )

    def __del__(self, _warn=warnings.warn):
        try:
            closed = self.is_closed()
        except Exception:
            return  # native part not initialised: nothing to release
        if not closed:
            _warn(f"unclosed event loop {self!r}", ResourceWarning, source=self)
            if not self.is_running():
                self.close()

    # Mirror of the native debug flag for code that reaches for loop._debug
    # (asyncio's own attribute); assigning it skips origin tracking, like asyncio.
    @property
    def _debug(self):
        return self.get_debug()

    @_debug.setter
    def _debug(self, value):
        self._set_debug_flag(bool(value))

    # ------------------------------------------------------------------
    # Running and stopping

    def _check_running(self):
        if self.is_running():
            raise RuntimeError("This event loop is already running")
        if events._get_running_loop() is not None:
            raise RuntimeError("Cannot run the event loop while another loop is running")

    def _run_forever_setup(self):
        """Everything run_forever() does before entering the native loop."""
        self._check_closed()
        self._check_running()
        try:
            self._set_coroutine_origin_tracking(self.get_debug())
            self._old_agen_hooks = sys.get_asyncgen_hooks()
            self._thread_id = threading.get_ident()
            sys.set_asyncgen_hooks(
                firstiter=self._asyncgen_firstiter_hook,
                finalizer=self._asyncgen_finalizer_hook,
            )
            events._set_running_loop(self)
            self._install_wakeup_fd()
        except BaseException:
            self._run_forever_cleanup()
            raise

    def _run_forever_cleanup(self):
        """Undo _run_forever_setup(); safe after a partial setup."""
        try:
            self._uninstall_wakeup_fd()
        finally:
            self._thread_id = None
            events._set_running_loop(None)
            self._set_coroutine_origin_tracking(False)
            old_hooks = self._old_agen_hooks
            if old_hooks is not None:
                self._old_agen_hooks = None
                sys.set_asyncgen_hooks(*old_hooks)

    def run_forever(self):
        """Run until stop() is called."""
        self._run_forever_setup()
        try:
            self._run_native()
        finally:
            self._run_forever_cleanup()

    def run_until_complete(self, future):
        """Run until the Future is done.

        If the argument is a coroutine, it is wrapped in a Task.

        Return the Future's result, or raise its exception.
        """
        self._check_closed()
        self._check_running()

        new_task = not futures.isfuture(future)
        future = tasks.ensure_future(future, loop=self)
        if new_task:
            # An exception is raised if the future didn't complete, so there
            # is no need to log the "destroy pending task" message.
            future._log_destroy_pending = False

        future.add_done_callback(_run_until_complete_cb)
        try:
            self.run_forever()
        except BaseException:
            if new_task and future.done() and not future.cancelled():
                # The coroutine raised a BaseException.  Consume it so that it
                # is not logged: the caller has no access to the local task.
                future.exception()
            raise
        finally:
            future.remove_done_callback(_run_until_complete_cb)
        if not future.done():
            raise RuntimeError("Event loop stopped before Future completed.")

        return future.result()

    def close(self):
        """Close the event loop.

        Drops pending callbacks and timers, releases the libuv loop and shuts
        down the default executor without waiting for it.  The loop must not
        be running.
        """
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        if self.get_debug():
            logger.debug("Close %r", self)
        self._close_native()
        self._release_sock_io()
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)
        self._close_signals()
        self._close_child_watches()
        self._drop_wakeup_fd()
        self._close_wakeup_pair()

    # ------------------------------------------------------------------
    # Ctrl-C / Python signal handlers while the loop sleeps in libuv

    def _install_wakeup_fd(self):
        """At run start: own the wakeup fd unless someone else already does."""
        if self._wakeup_installed or threading.current_thread() is not threading.main_thread():
            return
        try:
            self._claim_wakeup_fd(polite=True)
        except (ValueError, OSError):
            # Not the main interpreter, or signals unsupported here.
            pass

    def _claim_wakeup_fd(self, polite=False):
        """Point signal.set_wakeup_fd() at our socket pair and watch it.

        Raises ValueError outside the main thread (as set_wakeup_fd does).
        With ``polite``, a wakeup fd set by somebody else is left alone.
        """
        pair = self._wakeup_pair
        if pair is None:
            rsock, wsock = socket.socketpair()
            rsock.setblocking(False)
            wsock.setblocking(False)
            pair = self._wakeup_pair = (rsock, wsock)
        wfd = pair[1].fileno()
        previous = signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
        if polite and previous not in (-1, wfd):
            # Someone else owns the wakeup fd: give it back untouched.
            signal.set_wakeup_fd(previous)
            return
        if self._wakeup_installed:
            return
        try:
            # The socket object itself: the core drains it with recv()
            # (Windows-safe) and passes the signal numbers to the dispatcher.
            self._watch_wakeup_fd(pair[0], self._dispatch_signals)
        except BaseException:
            signal.set_wakeup_fd(-1)
            raise
        self._wakeup_installed = True

    def _uninstall_wakeup_fd(self):
        """At run end: keep the wakeup fd only while signal handlers exist,
        so that a signal arriving while the loop is stopped is delivered on
        the next run."""
        if not self._signal_handlers:
            self._drop_wakeup_fd()

    def _release_wakeup_fd(self):
        """The last signal handler went away."""
        if not self.is_running():
            self._drop_wakeup_fd()
        # While running, Ctrl-C still needs it: the run's end drops it.

    def _drop_wakeup_fd(self):
        if not self._wakeup_installed:
            return
        self._wakeup_installed = False
        try:
            self._unwatch_wakeup_fd()
        finally:
            try:
                current = signal.set_wakeup_fd(-1)
            except (ValueError, OSError) as exc:
                logger.info("set_wakeup_fd(-1) failed: %s", exc)
            else:
                if current not in (-1, self._wakeup_pair[1].fileno()):
                    # Replaced by someone else while we had it: keep theirs.
                    signal.set_wakeup_fd(current)

    def _close_wakeup_pair(self):
        pair = self._wakeup_pair
        if pair is not None:
            self._wakeup_pair = None
            for sock in pair:
                sock.close()

    # ------------------------------------------------------------------
    # Debug mode

    def metrics(self):
        """libuv's counters for this loop, as a ``uvrs.LoopMetrics``.

        ``idle_time`` is the time spent waiting in the kernel's poll, so
        ``1 - idle_time / elapsed`` over an interval is the loop's
        utilisation; it is measured only when ``UVRS_LOOP_METRICS=1`` is set
        when the loop is created (else None), because libuv then polls once
        more per iteration. The counters keep their last values once the loop is
        closed. A uvrs extension: asyncio's loops have no such method.
        """
        idle_ns, loop_count, events, events_waiting = self._metrics()
        idle = None if idle_ns is None else idle_ns / 1e9
        return LoopMetrics(idle, loop_count, events, events_waiting)

    def set_debug(self, enabled):
        self._set_debug_flag(bool(enabled))
        if self.is_running():
            self.call_soon_threadsafe(self._set_coroutine_origin_tracking, enabled)

    def _set_coroutine_origin_tracking(self, enabled):
        if bool(enabled) == bool(self._coroutine_origin_tracking_enabled):
            return
        if enabled:
            self._coroutine_origin_tracking_saved_depth = sys.get_coroutine_origin_tracking_depth()
            sys.set_coroutine_origin_tracking_depth(_DEBUG_STACK_DEPTH)
        else:
            sys.set_coroutine_origin_tracking_depth(self._coroutine_origin_tracking_saved_depth)
        self._coroutine_origin_tracking_enabled = enabled

    @staticmethod
    def _refuse_coroutine(callback, method):
        if coroutines.iscoroutine(callback) or _iscoroutinefunction(callback):
            raise TypeError(f"coroutines cannot be used with {method}()")

    def _check_callback(self, callback, method):
        self._refuse_coroutine(callback, method)
        if not callable(callback):
            raise TypeError(f"a callable object was expected by {method}(), got {callback!r}")

    def _check_thread(self):
        """Raise if called from a thread other than the one running the loop."""
        thread_id = self._thread_id
        if thread_id is None:
            return
        if threading.get_ident() != thread_id:
            raise RuntimeError(
                "Non-thread-safe operation invoked on an event loop other than the current one"
            )

    def _report_slow_callback(self, handle, seconds):
        logger.warning("Executing %s took %.3f seconds", _format_handle(handle), seconds)

    # ------------------------------------------------------------------
    # Executor

    def _check_default_executor(self):
        if self._executor_shutdown_called:
            raise RuntimeError("Executor shutdown has been called")

    def run_in_executor(self, executor, func, *args):
        self._check_closed()
        if self.get_debug():
            self._check_callback(func, "run_in_executor")
        if executor is None:
            executor = self._default_executor
            # Only check when the default executor is being used.
            self._check_default_executor()
            if executor is None:
                executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="asyncio")
                self._default_executor = executor
        return futures.wrap_future(executor.submit(func, *args), loop=self)

    def set_default_executor(self, executor):
        if not isinstance(executor, concurrent.futures.ThreadPoolExecutor):
            if _PY311:
                raise TypeError("executor must be ThreadPoolExecutor instance")
            warnings.warn(
                "Using the default executor that is not an instance of "
                "ThreadPoolExecutor is deprecated and will be prohibited "
                "in Python 3.9",
                DeprecationWarning,
                2,
            )
        self._default_executor = executor

    async def shutdown_default_executor(self, timeout=None):
        """Schedule the shutdown of the default executor.

        *timeout* is how long the executor is given to join its threads;
        None (the default) means no limit.  On timeout a RuntimeWarning is
        emitted and the executor is shut down without waiting.
        """
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is None:
            return
        future = self.create_future()
        thread = threading.Thread(target=self._do_shutdown, args=(future, executor))
        thread.start()
        try:
            if timeout is None:
                await future
            elif _timeout_cm is not None:
                async with _timeout_cm(timeout):
                    await future
            else:
                await tasks.wait_for(future, timeout)
        except (TimeoutError, asyncio.TimeoutError):
            warnings.warn(
                f"The executor did not finishing joining its threads within {timeout} seconds.",
                RuntimeWarning,
                stacklevel=2,
            )
            executor.shutdown(wait=False)
        else:
            thread.join()

    def _do_shutdown(self, future, executor=None):
        if executor is None:
            executor = self._default_executor
        try:
            executor.shutdown(wait=True)
            if not self.is_closed():
                self.call_soon_threadsafe(_set_result_unless_cancelled, future, None)
        except Exception as ex:
            if not self.is_closed() and not future.cancelled():
                self.call_soon_threadsafe(_set_exception_unless_cancelled, future, ex)

    # ------------------------------------------------------------------
    # Asynchronous generators

    def _asyncgen_finalizer_hook(self, agen):
        self._asyncgens.discard(agen)
        if not self.is_closed():
            self.call_soon_threadsafe(self.create_task, agen.aclose())

    def _asyncgen_firstiter_hook(self, agen):
        if self._asyncgens_shutdown_called:
            warnings.warn(
                f"asynchronous generator {agen!r} was scheduled after "
                f"loop.shutdown_asyncgens() call",
                ResourceWarning,
                stacklevel=1,
                source=self,
            )
        self._asyncgens.add(agen)

    async def shutdown_asyncgens(self):
        """Shutdown all active asynchronous generators."""
        self._asyncgens_shutdown_called = True

        if not len(self._asyncgens):
            return

        closing_agens = list(self._asyncgens)
        self._asyncgens.clear()

        results = await tasks.gather(*[ag.aclose() for ag in closing_agens], return_exceptions=True)

        for result, agen in zip(results, closing_agens):
            if isinstance(result, Exception):
                self.call_exception_handler(
                    {
                        "message": f"an error occurred during closing of "
                        f"asynchronous generator {agen!r}",
                        "exception": result,
                        "asyncgen": agen,
                    }
                )

    # ------------------------------------------------------------------
    # Exception handling

    def get_exception_handler(self):
        """Return the exception handler, or None if the default one is in use."""
        return self._exception_handler

    def set_exception_handler(self, handler):
        """Set *handler* (``handler(loop, context)``) as the exception handler.

        None restores the default handler.
        """
        if handler is not None and not callable(handler):
            raise TypeError(f"A callable object or None is expected, got {handler!r}")
        self._exception_handler = handler

    def default_exception_handler(self, context):
        """Default exception handler: log *context* on the 'asyncio' logger.

        In debug mode the traceback of where the failing handle / future was
        created is appended, when known.
        """
        message = context.get("message")
        if not message:
            message = "Unhandled exception in event loop"

        exception = context.get("exception")
        if exception is not None:
            exc_info = (type(exception), exception, exception.__traceback__)
        else:
            exc_info = False

        current = self._current_handle
        if "source_traceback" not in context and current is not None and current._source_traceback:
            context["handle_traceback"] = current._source_traceback

        log_lines = [message]
        for key in sorted(context):
            if key in {"message", "exception"}:
                continue
            value = context[key]
            if key == "source_traceback":
                tb = "".join(traceback.format_list(value))
                value = "Object created at (most recent call last):\n"
                value += tb.rstrip()
            elif key == "handle_traceback":
                tb = "".join(traceback.format_list(value))
                value = "Handle created at (most recent call last):\n"
                value += tb.rstrip()
            else:
                value = repr(value)
            log_lines.append(f"{key}: {value}")

        logger.error("\n".join(log_lines), exc_info=exc_info)

    def call_exception_handler(self, context):
        """Call the loop's exception handler with *context* (a dict).

        Keys: 'message', and optionally 'exception', 'future', 'task',
        'handle', 'protocol', 'transport', 'socket', 'asyncgen',
        'source_traceback', 'handle_traceback'.
        """
        handler = self._exception_handler
        if handler is None:
            try:
                self.default_exception_handler(context)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                # Guard against bugs in (possibly overridden) default handler.
                logger.error("Exception in default exception handler", exc_info=True)
            return

        try:
            if _PY312:
                self._run_handler_in_context(handler, context)
            else:
                handler(self, context)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            # The custom handler failed: fall back to the default one.
            try:
                self.default_exception_handler(
                    {
                        "message": "Unhandled error in exception handler",
                        "exception": exc,
                        "context": context,
                    }
                )
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger.error(
                    "Exception in default exception handler "
                    "while handling an unexpected error "
                    "in custom exception handler",
                    exc_info=True,
                )

    def _run_handler_in_context(self, handler, context):
        # 3.12+: run the handler in the context of the task / future / handle
        # the error is about ('future' may hold a Task).
        thing = context.get("task")
        if thing is None:
            thing = context.get("future")
        if thing is None:
            thing = context.get("handle")
        ctx = None
        if thing is not None and hasattr(thing, "get_context"):
            ctx = thing.get_context()
        if ctx is not None and hasattr(ctx, "run"):
            ctx.run(handler, self, context)
        else:
            handler(self, context)

    # ------------------------------------------------------------------
    # DNS (thread pool, exactly like asyncio)

    def _getaddrinfo_debug(self, host, port, family, type, proto, flags):
        msg = [f"{host}:{port!r}"]
        if family:
            msg.append(f"family={family!r}")
        if type:
            msg.append(f"type={type!r}")
        if proto:
            msg.append(f"proto={proto!r}")
        if flags:
            msg.append(f"flags={flags!r}")
        msg = ", ".join(msg)
        logger.debug("Get address info %s", msg)

        t0 = self.time()
        addrinfo = socket.getaddrinfo(host, port, family, type, proto, flags)
        dt = self.time() - t0

        msg = f"Getting address info {msg} took {dt * 1e3:.3f}ms: {addrinfo!r}"
        if dt >= self.slow_callback_duration:
            logger.info(msg)
        else:
            logger.debug(msg)
        return addrinfo

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        if self.get_debug():
            getaddr_func = self._getaddrinfo_debug
        else:
            getaddr_func = socket.getaddrinfo
        return await self.run_in_executor(
            None, getaddr_func, host, port, family, type, proto, flags
        )

    async def getnameinfo(self, sockaddr, flags=0):
        return await self.run_in_executor(None, socket.getnameinfo, sockaddr, flags)

    # ------------------------------------------------------------------
    # TLS upgrade of an open connection

    async def start_tls(
        self,
        transport,
        protocol,
        sslcontext,
        *,
        server_side=False,
        server_hostname=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        """Upgrade *transport* to TLS; return the new (TLS) transport."""
        if _ssl is None:
            raise RuntimeError("Python ssl module is not available")
        if not isinstance(sslcontext, _ssl.SSLContext):
            raise TypeError(
                f"sslcontext is expected to be an instance of ssl.SSLContext, got {sslcontext!r}"
            )
        if not getattr(transport, "_start_tls_compatible", False):
            raise TypeError(f"transport {transport!r} is not supported by start_tls()")
        waiter = self.create_future()
        tls = TLS(sslcontext, server_side, server_hostname, ssl_handshake_timeout,
                  ssl_shutdown_timeout)  # fmt: skip
        ssl_protocol = tls.protocol(self, protocol, waiter, call_connection_made=False)
        # Pause first, so that the SSL protocol sees no data before
        # connection_made() has run.
        transport.pause_reading()
        transport.set_protocol(ssl_protocol)
        conmade_cb = self.call_soon(ssl_protocol.connection_made, transport)
        resume_cb = self.call_soon(transport.resume_reading)
        try:
            await waiter
        except BaseException:
            transport.close()
            conmade_cb.cancel()
            resume_cb.cancel()
            raise
        return ssl_protocol._app_transport

    def _ensure_fd_no_transport(self, fd):
        fileno = _fileobj_to_fd(fd)
        transport = self._transports.get(fileno)
        if transport is not None and not transport.is_closing():
            raise RuntimeError(f"File descriptor {fd!r} is used by transport {transport!r}")
        return fileno

    def _watchable_fd(self, fd):
        """The fd number to watch; OverflowError past a C int, as asyncio's
        selector raises (after its closed-loop check)."""
        fileno = self._ensure_fd_no_transport(fd)
        if fileno > _FD_MAX:
            self._check_closed()
            raise OverflowError("Python int too large to convert to C int")
        return fileno

    def add_reader(self, fd, callback, *args):
        """Call callback(*args) whenever fd is readable (an int or fileno())."""
        self._add_reader(self._watchable_fd(fd), callback, *args)

    def remove_reader(self, fd):
        """Stop watching fd for reading; return whether it was watched."""
        fileno = self._ensure_fd_no_transport(fd)
        if self.is_closed() or fileno > _FD_MAX:
            return False
        return self._remove_reader(fileno)

    def add_writer(self, fd, callback, *args):
        """Call callback(*args) whenever fd is writable (an int or fileno())."""
        self._add_writer(self._watchable_fd(fd), callback, *args)

    def remove_writer(self, fd):
        """Stop watching fd for writing; return whether it was watched."""
        fileno = self._ensure_fd_no_transport(fd)
        if self.is_closed() or fileno > _FD_MAX:
            return False
        return self._remove_writer(fileno)


# The public, typed signatures of Loop live in __init__.pyi.
class Loop(  # type: ignore[misc]
    _uvrs.LoopCore,
    TcpMixin,
    UnixMixin,
    DatagramMixin,
    SignalMixin,
    ProcessMixin,
    _LoopMixin,
    asyncio.AbstractEventLoop,
):
    """asyncio event loop on libuv, implemented in Rust."""
