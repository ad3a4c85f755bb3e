"""Callback handles returned by ``call_soon`` / ``call_later`` / ``call_at``.

The native core allocates these directly and fills asyncio's own slots
(``_callback``, ``_args``, ``_context``, ``_loop``, ``_cancelled``, ``_repr``,
``_source_traceback`` and, for timers, ``_when`` / ``_scheduled``), so
``repr()``, ``cancelled()``, ``when()`` and ``get_context()`` are exactly
asyncio's and ``isinstance(h, asyncio.Handle)`` holds. ``cancel()`` performs
asyncio's steps natively (one Python frame instead of two, and no attribute
lookups on the loop), which matters for timer-heavy code.
"""

from __future__ import annotations

import asyncio

from ._uvrs import _cancel_handle, _retrack_context

# The slot behind asyncio's Handle._context.
_CONTEXT_SLOT = vars(asyncio.Handle)["_context"]

__all__ = ("Handle", "TimerHandle")


class Handle(asyncio.Handle):
    """Handle of a callback scheduled with ``call_soon``/``call_soon_threadsafe``."""

    __slots__ = ()

    def cancel(self):
        _cancel_handle(self)


class TimerHandle(asyncio.TimerHandle):
    """Handle of a callback scheduled with ``call_later``/``call_at``."""

    __slots__ = ()

    def cancel(self):
        _cancel_handle(self)

    # asyncio's own slot, read and written as asyncio does. Replacing or
    # deleting it first hands the old context back to the GC: while a timer
    # is pending, the loop keeps the context it copied for it out of the
    # GC's lists (the native core reports what it refers to instead).
    @property
    def _context(self):
        return _CONTEXT_SLOT.__get__(self, TimerHandle)

    @_context.setter
    def _context(self, value):
        _retrack_context(self)
        _CONTEXT_SLOT.__set__(self, value)

    @_context.deleter
    def _context(self):
        _retrack_context(self)
        _CONTEXT_SLOT.__delete__(self)
