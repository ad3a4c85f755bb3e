"""Debug mode: flags, environment, slow callbacks, thread checks, reprs."""

import asyncio
import logging
import os
import re
import sys
import threading
import time

import pytest

from _util import run_briefly, run_child

NOT_THREADSAFE = ("Non-thread-safe operation invoked on an event loop other "
                  "than the current one")
DEBUG_STACK_DEPTH = 10  # asyncio.constants.DEBUG_STACK_DEPTH


def _env_debug_expected():
    return bool(sys.flags.dev_mode or (
        not sys.flags.ignore_environment
        and os.environ.get("PYTHONASYNCIODEBUG")))


def test_default_debug_follows_interpreter_flags(loop):
    assert loop.get_debug() is _env_debug_expected()


def test_set_get_debug(loop):
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False


def test_set_debug_accepts_truthy_values(loop):
    # asyncio stores the value as given; only its truthiness matters.
    loop.set_debug(1)
    assert loop.get_debug()
    loop.set_debug(0)
    assert not loop.get_debug()


def test_get_debug_inside_running_loop(loop):
    loop.set_debug(True)

    async def main():
        return asyncio.get_running_loop().get_debug()

    assert loop.run_until_complete(main()) is True


# --------------------------------------------------- environment (subprocess)

CHILD_DEBUG = """
loop = new_event_loop()
print("DEBUG=%s" % loop.get_debug())
loop.close()
"""


@pytest.mark.parametrize("env,args,expected", [
    ({"PYTHONASYNCIODEBUG": "1"}, (), True),
    ({}, ("-X", "dev"), True),
    ({}, (), False),
    ({"PYTHONASYNCIODEBUG": ""}, (), False),
], ids=["env-var", "dev-mode", "plain", "empty-env-var"])
def test_debug_from_interpreter_environment(flavor, env, args, expected):
    proc = run_child(flavor, CHILD_DEBUG, env=env, args=args)
    assert proc.returncode == 0, proc.stderr
    assert f"DEBUG={expected}" in proc.stdout.splitlines()


def test_debug_env_var_ignored_with_dash_E(flavor):
    proc = run_child(flavor, CHILD_DEBUG, env={"PYTHONASYNCIODEBUG": "1"},
                     args=("-E",))
    if proc.returncode != 0 and "No module named 'uvrs'" in proc.stderr:
        pytest.skip("uvrs is only importable through the environment")
    assert proc.returncode == 0, proc.stderr
    assert "DEBUG=False" in proc.stdout.splitlines()


# --------------------------------------------------------- slow callbacks

SLOW_RE = re.compile(
    r"^Executing <(Handle|TimerHandle) .*slow_callback.*> "
    r"took \d+\.\d{3} seconds$", re.S)


def slow_callback(seconds):
    time.sleep(seconds)


def _asyncio_records(caplog, level=logging.WARNING):
    return [r for r in caplog.records
            if r.name == "asyncio" and r.levelno >= level]


def test_slow_callback_duration_default_and_set(loop):
    assert loop.slow_callback_duration == 0.1
    loop.slow_callback_duration = 0.25
    assert loop.slow_callback_duration == 0.25


def test_slow_callback_logged_in_debug(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01
    loop.call_soon(slow_callback, 0.05)
    run_briefly(loop)
    records = _asyncio_records(caplog)
    assert len(records) == 1
    rec = records[0]
    assert rec.levelno == logging.WARNING
    msg = rec.getMessage()
    assert SLOW_RE.match(msg), msg
    assert msg.startswith("Executing <Handle ")
    took = float(re.search(r"took (\d+\.\d{3}) seconds", msg).group(1))
    # Less one tick of the clock (15.6 ms on Windows before 3.13).
    assert took >= 0.05 - max(0.001, time.get_clock_info("monotonic").resolution)


def test_slow_timer_callback_logged_in_debug(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01
    loop.call_later(0.001, slow_callback, 0.05)
    loop.call_later(0.1, loop.stop)
    loop.run_forever()
    records = _asyncio_records(caplog)
    assert len(records) == 1
    msg = records[0].getMessage()
    assert SLOW_RE.match(msg), msg
    assert msg.startswith("Executing <TimerHandle ")


def test_slow_task_step_logged_in_debug(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01

    async def slow_step():
        time.sleep(0.05)

    loop.run_until_complete(slow_step())
    msgs = [r.getMessage() for r in _asyncio_records(caplog)]
    assert len(msgs) == 1
    assert msgs[0].startswith("Executing <Task ")
    assert "slow_step" in msgs[0]
    assert re.search(r" took \d+\.\d{3} seconds$", msgs[0])


def test_fast_callbacks_not_logged(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    loop.set_debug(True)
    loop.slow_callback_duration = 10
    for _ in range(100):
        loop.call_soon(lambda: None)
    run_briefly(loop)
    assert _asyncio_records(caplog) == []


def test_slow_callback_not_logged_without_debug(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    loop.set_debug(False)
    loop.slow_callback_duration = 0.01
    loop.call_soon(slow_callback, 0.03)
    run_briefly(loop)
    assert _asyncio_records(caplog) == []


# ----------------------------------------------------------- thread checks


@pytest.mark.timeout(10)
@pytest.mark.parametrize("method", ["call_soon", "call_later", "call_at"])
def test_non_threadsafe_call_from_other_thread_in_debug(loop, method):
    loop.set_debug(True)
    errors = []

    def worker():
        try:
            if method == "call_soon":
                loop.call_soon(print)
            elif method == "call_later":
                loop.call_later(1, print)
            else:
                loop.call_at(loop.time() + 1, print)
        except RuntimeError as exc:
            errors.append(str(exc))
        finally:
            loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=worker)
    loop.call_soon(t.start)
    loop.run_forever()
    t.join(5)
    assert errors == [NOT_THREADSAFE]


@pytest.mark.timeout(10)
def test_threadsafe_variant_allowed_in_debug(loop):
    loop.set_debug(True)
    out = []

    def worker():
        loop.call_soon_threadsafe(out.append, "ok")
        loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=worker)
    loop.call_soon(t.start)
    loop.run_forever()
    t.join(5)
    assert out == ["ok"]


@pytest.mark.timeout(10)
def test_call_soon_from_other_thread_while_not_running(loop):
    # The check only applies while the loop is running.
    loop.set_debug(True)
    errors = []
    out = []

    def worker():
        try:
            loop.call_soon(out.append, "queued")
        except RuntimeError as exc:  # pragma: no cover
            errors.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    t.join(5)
    assert errors == []
    run_briefly(loop)
    assert out == ["queued"]


# ------------------------------------------------------------------ reprs


def named_callback():
    pass


def test_handle_repr_has_creation_site_in_debug(loop):
    loop.set_debug(True)
    h = loop.call_soon(named_callback); line = sys._getframe().f_lineno  # noqa: E702
    r = repr(h)
    assert "named_callback" in r
    assert f"created at {__file__}:{line}" in r
    h.cancel()


def test_timer_handle_repr_has_creation_site_in_debug(loop):
    loop.set_debug(True)
    h = loop.call_later(10, named_callback); line = sys._getframe().f_lineno  # noqa: E702
    r = repr(h)
    assert r.startswith("<TimerHandle when=")
    assert f"created at {__file__}:{line}" in r
    h.cancel()


def test_handle_repr_without_debug_has_no_creation_site(loop):
    loop.set_debug(False)
    h = loop.call_soon(named_callback)
    assert "created at" not in repr(h)
    assert "named_callback" in repr(h)
    h.cancel()


def test_cancelled_handle_repr_keeps_details_in_debug(loop):
    loop.set_debug(True)
    h = loop.call_soon(named_callback)
    h.cancel()
    r = repr(h)
    assert r.startswith("<Handle cancelled named_callback()")
    assert "created at" in r


def test_source_traceback_only_in_debug(loop):
    h1 = loop.call_soon(named_callback)
    loop.set_debug(True)
    h2 = loop.call_soon(named_callback)
    assert not h1._source_traceback
    assert h2._source_traceback
    assert h2._source_traceback[-1][2] == (
        "test_source_traceback_only_in_debug")
    h1.cancel()
    h2.cancel()


def test_task_repr_created_at_in_debug(loop):
    loop.set_debug(True)

    async def coro_in_debug():
        pass

    task = loop.create_task(coro_in_debug())
    assert "created at" in repr(task)
    loop.run_until_complete(task)


# ----------------------------------------------- coroutine origin tracking


def test_coroutine_origin_tracking_while_running_in_debug(loop):
    before = sys.get_coroutine_origin_tracking_depth()
    loop.set_debug(True)

    async def main():
        return sys.get_coroutine_origin_tracking_depth()

    assert loop.run_until_complete(main()) == DEBUG_STACK_DEPTH
    assert sys.get_coroutine_origin_tracking_depth() == before


def test_no_origin_tracking_without_debug(loop):
    loop.set_debug(False)
    before = sys.get_coroutine_origin_tracking_depth()

    async def main():
        return sys.get_coroutine_origin_tracking_depth()

    assert loop.run_until_complete(main()) == before


def test_set_debug_while_running_toggles_tracking(loop):
    loop.set_debug(False)
    before = sys.get_coroutine_origin_tracking_depth()
    seen = []

    async def main():
        loop.set_debug(True)
        await asyncio.sleep(0)
        seen.append(sys.get_coroutine_origin_tracking_depth())
        loop.set_debug(False)
        await asyncio.sleep(0)
        seen.append(sys.get_coroutine_origin_tracking_depth())

    loop.run_until_complete(main())
    assert seen == [DEBUG_STACK_DEPTH, before]


def test_run_in_executor_rejects_coroutine_function_in_debug(loop):
    loop.set_debug(True)

    async def coro_func():
        pass

    with pytest.raises(TypeError,
                       match=r"coroutines cannot be used with "
                             r"run_in_executor\(\)"):
        loop.run_in_executor(None, coro_func)
