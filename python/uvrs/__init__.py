"""uvrs: a fast drop-in asyncio event loop for CPython, in Rust on libuv.

Run a program on uvrs::

    import uvrs

    async def main():
        ...

    uvrs.run(main())

or, with the standard library entry point (Python 3.12+)::

    asyncio.run(main(), loop_factory=uvrs.new_event_loop)
"""

from __future__ import annotations

import asyncio
import sys
import warnings
from asyncio import events as _events

from . import _uvrs
from ._handles import Handle, TimerHandle
from ._loop import Loop, LoopMetrics

__version__: str = _uvrs.__version__

_PY311 = sys.version_info >= (3, 11)
_PY312 = sys.version_info >= (3, 12)
# 3.14 deprecates the asyncio policy system (removal slated for 3.16).
_POLICY_DEPRECATED = sys.version_info >= (3, 14)

__all__ = ["Handle", "Loop", "LoopMetrics", "TimerHandle", "install", "new_event_loop", "run"]
if not _POLICY_DEPRECATED:
    __all__ += ["EventLoopPolicy", "Policy"]

_uvrs._set_handle_types(Handle, TimerHandle)


def new_event_loop() -> Loop:
    """Return a new uvrs event loop."""
    return Loop()


def run(main, *, loop_factory=None, debug=None, **run_kwargs):
    """Run coroutine *main* on a new uvrs loop and return its result.

    Same semantics as ``asyncio.run()`` of the running Python version (the
    loop is created, *main* is run, remaining tasks are cancelled, async
    generators and the default executor are shut down and the loop is
    closed).  Extra keyword arguments are passed on to ``asyncio.run()``.

    *loop_factory* (default: ``new_event_loop``) may build a subclass of
    ``uvrs.Loop``; a factory that returns another kind of loop makes ``run``
    raise TypeError, as ``uvloop.run()`` does.
    """
    if _events._get_running_loop() is not None:
        # Fail fast with a short traceback.
        raise RuntimeError("uvrs.run() cannot be called from a running event loop")

    factory = new_event_loop if loop_factory is None else _checked_factory(loop_factory)

    if _PY312:
        return asyncio.run(main, debug=debug, loop_factory=factory, **run_kwargs)

    if run_kwargs:
        name = next(iter(run_kwargs))
        raise TypeError(f"uvrs.run() got an unexpected keyword argument {name!r}")

    if _PY311:
        with asyncio.Runner(debug=debug, loop_factory=factory) as runner:
            return runner.run(main)

    return _run_py310(main, debug, factory)


def _checked_factory(loop_factory):
    def factory():
        loop = loop_factory()
        if not isinstance(loop, Loop):
            loop.close()
            raise TypeError(f"uvrs.run() uses a non-uvrs event loop: {loop!r}")
        return loop

    return factory


def _run_py310(main, debug, factory):
    # asyncio.run() of Python 3.10, on a uvrs loop.
    if not asyncio.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")

    loop = factory()
    try:
        asyncio.set_event_loop(loop)
        if debug is not None:
            loop.set_debug(debug)
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _cancel_all_tasks(loop):
    to_cancel = asyncio.all_tasks(loop)
    if not to_cancel:
        return

    for task in to_cancel:
        task.cancel()

    loop.run_until_complete(asyncio.gather(*to_cancel, return_exceptions=True))

    for task in to_cancel:
        if task.cancelled():
            continue
        if task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during asyncio.run() shutdown",
                    "exception": task.exception(),
                    "task": task,
                }
            )


# ----------------------------------------------------------------------
# Event loop policy (deprecated by CPython 3.14, removal slated for 3.16)

_ADVICE = "use uvrs.run() or asyncio.run(..., loop_factory=uvrs.new_event_loop)"
_policy_class = None


def _asyncio_default_policy():
    """asyncio's default policy class, or None where asyncio no longer has one.

    On 3.14+ it is fetched without tripping asyncio's own deprecation warning.
    """
    if not _POLICY_DEPRECATED:
        return asyncio.DefaultEventLoopPolicy
    if sys.platform == "win32":
        names = ("asyncio.windows_events", "asyncio")
    else:
        names = ("asyncio.unix_events", "asyncio.wasm_events", "asyncio")
    for name in names:
        base = getattr(sys.modules.get(name), "_DefaultEventLoopPolicy", None)
        if base is not None:
            return base
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return getattr(asyncio, "DefaultEventLoopPolicy", None)


def _get_policy_class():
    """uvrs' policy class (created once), or None without asyncio policies."""
    global _policy_class
    if _policy_class is None:
        base = _asyncio_default_policy()
        if base is None:
            return None

        class Policy(base):
            """asyncio event loop policy whose new_event_loop() returns a uvrs.Loop."""

            _loop_factory = Loop

        Policy.__module__ = __name__
        Policy.__qualname__ = "Policy"
        _policy_class = Policy
    return _policy_class


if not _POLICY_DEPRECATED:
    Policy = _get_policy_class()
    EventLoopPolicy = Policy
else:

    def __getattr__(name):
        if name in ("Policy", "EventLoopPolicy"):
            cls = _get_policy_class()
            if cls is None:
                raise AttributeError(
                    f"module {__name__!r} has no attribute {name!r}: this Python's "
                    f"asyncio no longer has event loop policies; {_ADVICE}"
                )
            warnings.warn(
                f"'uvrs.{name}' is deprecated and slated for removal in Python 3.16; {_ADVICE}",
                DeprecationWarning,
                stacklevel=2,
            )
            return cls
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def install():
    """Make uvrs the default loop through asyncio's policy (deprecated).

    Use ``uvrs.run()`` or ``asyncio.run(..., loop_factory=uvrs.new_event_loop)``.
    """
    warnings.warn(
        "uvrs.install() is deprecated in favor of uvrs.run()",
        DeprecationWarning,
        stacklevel=2,
    )
    cls = _get_policy_class()
    if cls is None:
        raise RuntimeError(
            "uvrs.install() needs asyncio event loop policies, which this "
            f"Python no longer has; {_ADVICE}"
        )
    policy = cls()
    if _POLICY_DEPRECATED:
        # Our own warning above already covers asyncio's one.
        setter = getattr(_events, "_set_event_loop_policy", None)
        if setter is not None:
            setter(policy)
            return
    asyncio.set_event_loop_policy(policy)
