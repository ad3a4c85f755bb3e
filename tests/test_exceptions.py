"""Exception handling: handlers, default logging, BaseException propagation."""

import asyncio
import gc
import logging
import sys
import threading

import pytest

from _util import run_briefly


class CustomBase(BaseException):
    """A BaseException that is neither KeyboardInterrupt nor SystemExit."""


def collect_handler(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append((lp, ctx)))
    return contexts


# --------------------------------------------------------- handler plumbing


def test_exception_handler_default_is_none(loop):
    assert loop.get_exception_handler() is None


def test_set_and_get_exception_handler(loop):
    def handler(lp, ctx):
        pass

    loop.set_exception_handler(handler)
    assert loop.get_exception_handler() is handler
    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None


@pytest.mark.parametrize("bad", [1, "handler", object()])
def test_set_exception_handler_non_callable(loop, bad):
    with pytest.raises(TypeError,
                       match="A callable object or None is expected, got"):
        loop.set_exception_handler(bad)
    assert loop.get_exception_handler() is None


def test_callback_exception_reaches_handler(loop):
    contexts = collect_handler(loop)
    err = ValueError("boom")

    def boom():
        raise err

    h = loop.call_soon(boom)
    run_briefly(loop)
    assert len(contexts) == 1
    lp, ctx = contexts[0]
    assert lp is loop
    assert {"message", "exception", "handle"} <= set(ctx)
    assert ctx["exception"] is err
    assert ctx["handle"] is h
    assert ctx["message"].startswith("Exception in callback ")
    assert "boom" in ctx["message"]


def test_timer_exception_reaches_handler(loop, flavor):
    contexts = collect_handler(loop)

    def timer_boom():
        raise KeyError("timer")

    h = loop.call_later(0.001, timer_boom)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert len(contexts) == 1
    ctx = contexts[0][1]
    assert isinstance(ctx["exception"], KeyError)
    assert ctx["handle"] is h
    assert type(ctx["handle"]) is flavor.TimerHandle


def test_threadsafe_callback_exception_reaches_handler(loop):
    contexts = collect_handler(loop)

    def boom():
        raise OSError("threadsafe")

    def worker():
        loop.call_soon_threadsafe(boom)
        loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=worker)
    loop.call_soon(t.start)
    loop.run_forever()
    t.join(5)
    assert [type(c["exception"]) for _, c in contexts] == [OSError]


def test_loop_keeps_going_after_callback_exceptions(loop):
    contexts = collect_handler(loop)
    out = []

    def boom(i):
        out.append(f"boom{i}")
        raise RuntimeError(i)

    for i in range(3):
        loop.call_soon(boom, i)
        loop.call_soon(out.append, i)
    run_briefly(loop)
    assert out == ["boom0", 0, "boom1", 1, "boom2", 2]
    assert [c["exception"].args for _, c in contexts] == [(0,), (1,), (2,)]


def test_custom_base_exception_goes_to_handler(loop):
    # Handle._run re-raises only SystemExit and KeyboardInterrupt.
    contexts = collect_handler(loop)
    out = []

    def raise_custom():
        raise CustomBase("custom")

    loop.call_soon(raise_custom)
    loop.call_soon(out.append, "after")
    run_briefly(loop)
    assert out == ["after"]
    assert len(contexts) == 1
    assert type(contexts[0][1]["exception"]) is CustomBase


def test_handler_is_called_in_loop_thread(loop):
    idents = []
    loop.set_exception_handler(
        lambda lp, ctx: idents.append(threading.get_ident()))

    def boom():
        raise ValueError

    loop.call_soon(boom)
    run_briefly(loop)
    assert idents == [threading.get_ident()]


def test_call_exception_handler_passes_context_through(loop):
    contexts = collect_handler(loop)
    ctx = {"message": "custom message", "extra": 123}
    loop.call_exception_handler(ctx)
    assert len(contexts) == 1
    assert contexts[0][0] is loop
    assert contexts[0][1] == ctx


def test_handler_that_raises_is_logged(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    out = []

    def bad_handler(lp, ctx):
        raise ZeroDivisionError("handler broke")

    loop.set_exception_handler(bad_handler)

    def boom():
        raise ValueError("original")

    loop.call_soon(boom)
    loop.call_soon(out.append, "after")
    run_briefly(loop)
    assert out == ["after"]
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    rec = records[0]
    assert rec.levelno == logging.ERROR
    assert "Unhandled error in exception handler" in rec.getMessage()
    assert rec.exc_info and rec.exc_info[0] is ZeroDivisionError


def test_custom_handler_can_delegate_to_default(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    seen = []

    def handler(lp, ctx):
        seen.append(ctx["message"])
        lp.default_exception_handler(ctx)

    loop.set_exception_handler(handler)

    def boom():
        raise ValueError("delegated")

    loop.call_soon(boom)
    run_briefly(loop)
    assert len(seen) == 1
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    assert records[0].exc_info[1].args == ("delegated",)


# -------------------------------------------------------- default handler


def test_default_handler_logs_message_and_traceback(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    out = []

    def failing_callback():
        raise ValueError("logged boom")

    loop.call_soon(failing_callback)
    loop.call_soon(out.append, "after")
    run_briefly(loop)
    assert out == ["after"]
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    rec = records[0]
    assert rec.levelno == logging.ERROR
    msg = rec.getMessage()
    assert msg.startswith("Exception in callback ")
    assert "failing_callback" in msg
    assert "handle: <" in msg
    assert rec.exc_info[0] is ValueError
    assert rec.exc_info[1].args == ("logged boom",)
    text = caplog.text
    assert "Traceback (most recent call last)" in text
    assert "ValueError: logged boom" in text
    assert "failing_callback" in text


def test_call_exception_handler_default_logs_extra_keys(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    loop.call_exception_handler({"message": "hello there", "foo": 1})
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    assert records[0].getMessage() == "hello there\nfoo: 1"


def test_default_exception_handler_direct(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    try:
        raise KeyError("direct")
    except KeyError as exc:
        loop.default_exception_handler({"message": "direct call",
                                        "exception": exc})
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    assert records[0].getMessage() == "direct call"
    assert records[0].exc_info[0] is KeyError


def test_default_handler_without_message(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    loop.default_exception_handler({"exception": ValueError("x")})
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    assert records[0].getMessage() == "Unhandled exception in event loop"


# ------------------------------------------------- never-retrieved errors


def test_task_exception_never_retrieved(loop):
    contexts = collect_handler(loop)

    async def fail():
        raise ValueError("lost")

    task = loop.create_task(fail())
    run_briefly(loop, 2)
    assert task.done()
    del task
    gc.collect()
    assert len(contexts) == 1
    ctx = contexts[0][1]
    assert ctx["message"] == "Task exception was never retrieved"
    assert isinstance(ctx["exception"], ValueError)
    assert isinstance(ctx["future"], asyncio.Task)


def test_future_exception_never_retrieved(loop):
    contexts = collect_handler(loop)
    fut = loop.create_future()
    fut.set_exception(RuntimeError("lost future"))
    del fut
    gc.collect()
    assert len(contexts) == 1
    assert contexts[0][1]["message"] == "Future exception was never retrieved"


def test_retrieved_exception_not_reported(loop):
    contexts = collect_handler(loop)

    async def fail():
        raise ValueError("seen")

    task = loop.create_task(fail())
    with pytest.raises(ValueError):
        loop.run_until_complete(task)
    del task
    gc.collect()
    assert contexts == []


# --------------------------------------- KeyboardInterrupt / SystemExit


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_from_callback_leaves_run_forever(loop, exc_type):
    out = []
    contexts = collect_handler(loop)

    def interrupt():
        raise exc_type()

    loop.call_soon(out.append, 1)
    loop.call_soon(interrupt)
    loop.call_soon(out.append, 2)
    with pytest.raises(exc_type):
        loop.run_forever()
    assert out == [1]
    assert loop.is_running() is False
    assert contexts == []
    # the remaining callback is still scheduled and runs on the next run
    run_briefly(loop)
    assert out == [1, 2]


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_from_timer_leaves_run_forever(loop, exc_type):
    def interrupt():
        raise exc_type()

    loop.call_later(0.001, interrupt)
    out = []
    loop.call_later(0.05, out.append, "later")
    with pytest.raises(exc_type):
        loop.run_forever()
    assert loop.is_running() is False
    loop.call_later(0.1, loop.stop)
    loop.run_forever()
    assert out == ["later"]


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_from_task_leaves_run_until_complete(loop, exc_type):
    async def main():
        await asyncio.sleep(0)
        raise exc_type()

    with pytest.raises(exc_type):
        loop.run_until_complete(main())
    assert loop.is_running() is False

    async def again():
        await asyncio.sleep(0)
        return "again"

    assert loop.run_until_complete(again()) == "again"


def test_system_exit_code_preserved(loop):
    def leave():
        sys.exit(7)

    loop.call_soon(leave)
    with pytest.raises(SystemExit) as info:
        loop.run_forever()
    assert info.value.code == 7


def test_keyboard_interrupt_leaves_running_loop_reusable(loop):
    def interrupt():
        raise KeyboardInterrupt

    loop.call_soon(interrupt)
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    with pytest.raises(RuntimeError, match="no running event loop"):
        asyncio.get_running_loop()

    async def main():
        return asyncio.get_running_loop()

    assert loop.run_until_complete(main()) is loop


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_from_callback_leaves_run_until_complete(loop,
                                                                exc_type):
    def interrupt():
        raise exc_type()

    fut = loop.create_future()
    loop.call_soon(interrupt)
    loop.call_later(0.01, fut.set_result, "finished")
    with pytest.raises(exc_type):
        loop.run_until_complete(fut)
    assert not fut.done()
    # the future can still be awaited on a later run
    assert loop.run_until_complete(fut) == "finished"


def test_source_traceback_in_handler_context_in_debug(loop):
    loop.set_debug(True)
    contexts = collect_handler(loop)

    def boom():
        raise ValueError("debug boom")

    loop.call_soon(boom)
    run_briefly(loop)
    assert len(contexts) == 1
    ctx = contexts[0][1]
    assert ctx["source_traceback"]
    assert ctx["source_traceback"][-1][2] == (
        "test_source_traceback_in_handler_context_in_debug")


def test_default_handler_logs_creation_site_in_debug(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    loop.set_debug(True)

    def boom():
        raise ValueError("debug boom")

    loop.call_soon(boom)
    run_briefly(loop)
    assert "Object created at (most recent call last)" in caplog.text
    assert "ValueError: debug boom" in caplog.text


def test_keyboard_interrupt_from_exception_handler_propagates(loop):
    def handler(lp, ctx):
        raise KeyboardInterrupt

    loop.set_exception_handler(handler)

    def boom():
        raise ValueError

    loop.call_soon(boom)
    loop.call_soon(loop.stop)
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert loop.is_running() is False


def test_non_callable_without_debug_fails_at_run_time(loop):
    # Without debug mode asyncio accepts the object and the call fails when
    # the loop runs it; the error goes to the exception handler.
    loop.set_debug(False)
    contexts = collect_handler(loop)
    out = []
    try:
        loop.call_soon(1)
    except TypeError:  # pragma: no cover - stricter is acceptable
        pytest.skip("implementation validates eagerly")
    loop.call_soon(out.append, "after")
    run_briefly(loop)
    assert out == ["after"]
    assert len(contexts) == 1
    assert contexts[0][1]["message"] == "Exception in callback 1()"
    assert isinstance(contexts[0][1]["exception"], TypeError)
