"""``add_signal_handler`` / ``remove_signal_handler`` on the wakeup fd.

uvrs already owns ``signal.set_wakeup_fd`` while it runs in the main thread
(so Ctrl-C wakes the loop out of libuv).  Signal handlers reuse that socket
pair: Python's C-level handler writes each signal number into it, the native
core drains it and passes the bytes to ``_dispatch_signals``, which schedules
the registered handles.  A signal that arrives while the loop is stopped
stays in the socket and is delivered when the loop runs again.

Why not libuv's ``uv_signal``: it installs its own ``sigaction`` behind
Python's ``signal`` module, so ``signal.getsignal()``/``signal.signal()`` would
no longer tell the truth, and it delivers nothing while the loop is stopped.
"""

from __future__ import annotations

import errno
import signal
import sys
import types
import warnings
from asyncio import events
from asyncio.log import logger

__all__ = ("SignalMixin",)


def _sighandler_noop(signum, frame):
    """Python-level handler: the work happens in the loop, via the wakeup fd."""


def _check_signal(sig):
    if not isinstance(sig, int):
        raise TypeError(f"sig must be an int, not {sig!r}")
    if sig not in signal.valid_signals():
        raise ValueError(f"invalid signal number {sig}")


def _run_signal_handle(handle):
    # The handle may have been cancelled (or replaced) after it was queued.
    if not handle._cancelled:
        handle._run()


class SignalMixin:
    # Read-only default: close() stays safe if __init__ did not run.
    _signal_handlers: dict = types.MappingProxyType({})  # type: ignore[assignment]

    def _init_signals(self):
        self._signal_handlers = {}

    if sys.platform != "win32":

        def add_signal_handler(self, sig, callback, *args):
            """Add a handler for a Unix signal: callback(*args) runs in the loop."""
            # (asyncio accepts any non-coroutine object, callable or not.)
            self._refuse_coroutine(callback, "add_signal_handler")
            _check_signal(sig)
            self._check_closed()
            try:
                self._claim_wakeup_fd()
            except (ValueError, OSError) as exc:
                raise RuntimeError(str(exc)) from None
            handle = events.Handle(callback, args, self, None)
            self._signal_handlers[sig] = handle
            try:
                # The no-op Python handler makes the C handler write the
                # signal number to the wakeup fd; restart interrupted syscalls.
                signal.signal(sig, _sighandler_noop)
                signal.siginterrupt(sig, False)
            except OSError as exc:
                del self._signal_handlers[sig]
                if not self._signal_handlers:
                    self._release_wakeup_fd()
                if exc.errno == errno.EINVAL:
                    raise RuntimeError(f"sig {sig:d} cannot be caught") from None
                raise

        def remove_signal_handler(self, sig):
            """Remove the handler for sig; return whether one was set.

            The default disposition comes back (KeyboardInterrupt for SIGINT).
            """
            _check_signal(sig)
            try:
                del self._signal_handlers[sig]
            except KeyError:
                return False
            handler = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
            try:
                signal.signal(sig, handler)
            except OSError as exc:
                if exc.errno == errno.EINVAL:
                    raise RuntimeError(f"sig {sig:d} cannot be caught") from None
                raise
            if not self._signal_handlers:
                self._release_wakeup_fd()
            return True

    def _dispatch_signals(self, data):
        """Bytes read from the wakeup fd: schedule the handlers they name."""
        handlers = self._signal_handlers
        if not handlers:
            return
        for signum in data:
            handle = handlers.get(signum)
            if handle is None:
                continue
            if handle._cancelled:
                self.remove_signal_handler(signum)
            else:
                self.call_soon(_run_signal_handle, handle)

    def _close_signals(self):
        """At close(): give every signal back its default disposition."""
        if not self._signal_handlers:
            return
        if sys.is_finalizing():
            warnings.warn(
                f"Closing the loop {self!r} on interpreter shutdown stage, "
                "skipping signal handlers removal",
                ResourceWarning,
                stacklevel=2,
                source=self,
            )
            self._signal_handlers.clear()
            return
        for sig in list(self._signal_handlers):
            try:
                self.remove_signal_handler(sig)
            except (OSError, RuntimeError, ValueError) as exc:  # pragma: no cover
                logger.info("remove_signal_handler(%d) failed at close: %s", sig, exc)
