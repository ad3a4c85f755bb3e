"""Shared fixtures for the uvrs loop-core test suite.

Every test runs twice: once on the stdlib asyncio loop (the reference) and
once on uvrs.  The single parametrised fixture is ``flavor`` (ids
``[asyncio]`` / ``[uvrs]``); ``loop``, ``loop_factory`` and ``run`` are
derived from it, so a test that uses several of them still runs exactly
twice.

``import uvrs`` may legitimately fail while the native core is being built:
in that case the ``[uvrs]`` half is skipped, unless ``UVRS_REQUIRE=1`` is set
in the environment (CI should set it), in which case it errors.
"""

import asyncio
import gc
import os
import sys
import time
import types

import pytest

IMPLS = ["asyncio", "uvrs"]

_uvrs_import_error = None
try:
    import uvrs  # noqa: F401
except Exception as exc:  # pragma: no cover - depends on the build
    uvrs = None
    _uvrs_import_error = exc


def _uvrs_missing():
    """True when uvrs simply is not built/installed (skip rather than fail)."""
    exc = _uvrs_import_error
    return isinstance(exc, ModuleNotFoundError) and exc.name in (
        "uvrs", "uvrs._uvrs")


def _asyncio_install():
    # The stdlib has no install(); its closest equivalent is setting the
    # default policy explicitly.
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())


_STDLIB_LOOP_CLS = None


def _stdlib_loop_class():
    global _STDLIB_LOOP_CLS
    if _STDLIB_LOOP_CLS is None:
        probe = asyncio.new_event_loop()
        _STDLIB_LOOP_CLS = type(probe)
        probe.close()
    return _STDLIB_LOOP_CLS


def _make_flavor(name):
    if name == "asyncio":
        loop_cls = _stdlib_loop_class()
        return types.SimpleNamespace(
            name="asyncio",
            is_uvrs=False,
            module=asyncio,
            new_event_loop=asyncio.new_event_loop,
            run=asyncio.run,
            Loop=loop_cls,
            Policy=asyncio.DefaultEventLoopPolicy,
            EventLoopPolicy=asyncio.DefaultEventLoopPolicy,
            install=_asyncio_install,
            Handle=asyncio.Handle,
            TimerHandle=asyncio.TimerHandle,
        )
    if uvrs is None:
        if _uvrs_missing() and os.environ.get("UVRS_REQUIRE") != "1":
            pytest.skip(f"uvrs is not importable: {_uvrs_import_error!r}")
        pytest.fail(f"uvrs failed to import: {_uvrs_import_error!r}")
    return types.SimpleNamespace(
        name="uvrs",
        is_uvrs=True,
        module=uvrs,
        new_event_loop=uvrs.new_event_loop,
        run=uvrs.run,
        Loop=uvrs.Loop,
        Policy=uvrs.Policy,
        EventLoopPolicy=uvrs.EventLoopPolicy,
        install=uvrs.install,
        Handle=uvrs.Handle,
        TimerHandle=uvrs.TimerHandle,
    )


def _live_counts():
    return uvrs._uvrs._live_counts() if uvrs is not None else {}


@pytest.fixture(autouse=True)
def _nothing_leaked(request):
    """Debug accounting: after each test (and after its loops are closed,
    since autouse fixtures are torn down last), every libuv handle, request
    and loop it opened must be gone. The counters are process-wide, kept by
    the native core (``_uvrs._live_counts()``)."""
    before = _live_counts()
    yield
    after = _live_counts()
    if after != before:
        # Objects waiting for the garbage collector, and handles whose close
        # callback a loop's last iteration runs, may take a moment.
        deadline = time.monotonic() + 2.0
        while after != before and time.monotonic() < deadline:
            gc.collect()
            time.sleep(0.01)
            after = _live_counts()
    assert after == before, f"libuv objects leaked by {request.node.nodeid}: " \
        f"before {before}, after {after}"


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "fd_watchers: uses add_reader/add_writer, which asyncio's Windows loop "
        "(ProactorEventLoop) lacks: its asyncio half is skipped there")


@pytest.fixture(params=IMPLS, ids=IMPLS)
def flavor(request):
    """The implementation under test: a namespace with new_event_loop, run,
    Loop, Policy, EventLoopPolicy, install, Handle, TimerHandle."""
    if (request.param == "asyncio" and sys.platform == "win32"
            and request.node.get_closest_marker("fd_watchers") is not None):
        pytest.skip("asyncio's ProactorEventLoop has no add_reader/add_writer")
    return _make_flavor(request.param)


@pytest.fixture
def loop_factory(flavor):
    """A callable creating fresh loops of the flavor under test; every loop
    it made is closed at teardown."""
    made = []

    def factory():
        lp = flavor.new_event_loop()
        made.append(lp)
        return lp

    factory.flavor = flavor
    yield factory
    for lp in made:
        _close_loop(lp)
    asyncio.set_event_loop(None)


@pytest.fixture
def loop(loop_factory):
    """A fresh event loop of the flavor under test, closed afterwards."""
    return loop_factory()


@pytest.fixture
def run(flavor):
    """asyncio.run for the stdlib flavor, uvrs.run for uvrs."""
    yield flavor.run
    asyncio.set_event_loop(None)


@pytest.fixture
def clean_policy():
    """Restore the default event loop policy after a test that changes it."""
    yield
    asyncio.set_event_loop_policy(None)
    asyncio.set_event_loop(None)


def _close_loop(lp):
    if lp.is_closed():
        return
    if lp.is_running():  # pragma: no cover - a broken test left it running
        lp.stop()
        return
    try:
        lp.close()
    except Exception:  # pragma: no cover
        pass


def pytest_collection_modifyitems(config, items):
    # Bound every test even when run without the project's pytest config.
    if config.pluginmanager.hasplugin("timeout") and not config.getini(
            "timeout"):
        for item in items:
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(60))
