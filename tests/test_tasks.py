"""Futures and tasks on the loop: create_future, create_task, task factories."""

import asyncio
import contextvars
import re
import sys

import pytest

from _util import run_briefly

var = contextvars.ContextVar("task_var", default="unset")


async def _noop():
    pass


# ------------------------------------------------------------------ futures


def test_create_future(loop):
    fut = loop.create_future()
    assert isinstance(fut, asyncio.Future)
    assert fut.get_loop() is loop
    assert not fut.done()


def test_future_done_callbacks_run_in_order_via_loop(loop):
    fut = loop.create_future()
    out = []
    for i in range(5):
        fut.add_done_callback(lambda f, i=i: out.append((i, f.result())))
    fut.set_result("r")
    assert out == []  # scheduled with call_soon, not run synchronously
    run_briefly(loop)
    assert out == [(i, "r") for i in range(5)]


def test_future_done_callback_context(loop):
    fut = loop.create_future()
    ctx = contextvars.Context()
    ctx.run(var.set, "cb-ctx")
    seen = []
    fut.add_done_callback(lambda f: seen.append(var.get()), context=ctx)
    fut.set_result(None)
    run_briefly(loop)
    assert seen == ["cb-ctx"]


def test_future_cancel_propagates(loop):
    fut = loop.create_future()
    loop.call_soon(fut.cancel)
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(fut)
    assert fut.cancelled()


# -------------------------------------------------------------------- tasks


def test_create_task_returns_task(loop):
    task = loop.create_task(_noop())
    assert isinstance(task, asyncio.Task)
    assert task.get_loop() is loop
    assert not task.done()
    loop.run_until_complete(task)
    assert task.done() and task.result() is None


def test_create_task_default_name(loop):
    task = loop.create_task(_noop())
    assert re.fullmatch(r"Task-\d+", task.get_name())
    loop.run_until_complete(task)


def test_create_task_name(loop):
    task = loop.create_task(_noop(), name="my-task")
    assert task.get_name() == "my-task"
    assert "my-task" in repr(task)
    loop.run_until_complete(task)


def test_create_task_name_is_stringified(loop):
    task = loop.create_task(_noop(), name=123)
    assert task.get_name() == "123"
    loop.run_until_complete(task)


def test_create_task_copies_current_context(loop):
    async def read():
        return var.get()

    token = var.set("creator")
    try:
        task = loop.create_task(read())
    finally:
        var.reset(token)
    assert loop.run_until_complete(task) == "creator"


@pytest.mark.skipif(sys.version_info < (3, 11),
                    reason="create_task(context=) is new in Python 3.11")
def test_create_task_with_context(loop):
    ctx = contextvars.Context()
    ctx.run(var.set, "given")

    async def read_and_write():
        value = var.get()
        var.set("written-by-task")
        return value

    task = loop.create_task(read_and_write(), context=ctx)
    assert loop.run_until_complete(task) == "given"
    assert ctx[var] == "written-by-task"
    assert var.get() == "unset"


@pytest.mark.parametrize("bad", [1, None, "coroutine_function"])
def test_create_task_rejects_non_coroutine(loop, bad):
    # (plain generators are still accepted by asyncio on 3.10/3.11)
    if bad == "coroutine_function":
        bad = _noop
    with pytest.raises(TypeError, match="a coroutine was expected, got"):
        loop.create_task(bad)


def test_current_task_and_all_tasks(loop):
    async def main():
        me = asyncio.current_task()
        return me, asyncio.all_tasks()

    task = loop.create_task(main())
    me, all_tasks = loop.run_until_complete(task)
    assert me is task
    assert task in all_tasks
    assert asyncio.all_tasks(loop) == set()


def test_tasks_interleave_on_sleep_zero(loop):
    out = []

    async def worker(name):
        for i in range(3):
            out.append(f"{name}{i}")
            await asyncio.sleep(0)

    async def main():
        await asyncio.gather(worker("a"), worker("b"))

    loop.run_until_complete(main())
    assert out == ["a0", "b0", "a1", "b1", "a2", "b2"]


def test_sleep_ordering(loop):
    out = []

    async def sleeper(delay, tag):
        await asyncio.sleep(delay)
        out.append(tag)

    async def main():
        await asyncio.gather(
            sleeper(0.03, "c"), sleeper(0.01, "a"), sleeper(0.02, "b"))

    loop.run_until_complete(main())
    assert out == ["a", "b", "c"]


def test_gather_results_in_argument_order(loop):
    async def value(delay, v):
        await asyncio.sleep(delay)
        return v

    async def main():
        return await asyncio.gather(
            value(0.02, 1), value(0.0, 2), value(0.01, 3))

    res = loop.run_until_complete(main())
    assert res == [1, 2, 3]


def test_sleep_result_value(loop):
    assert loop.run_until_complete(asyncio.sleep(0, "zero")) == "zero"
    assert loop.run_until_complete(asyncio.sleep(0.001, "small")) == "small"


def test_task_cancel(loop):
    events = []

    async def victim():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise

    task = loop.create_task(victim())
    loop.call_later(0.01, task.cancel)
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(task)
    assert events == ["cancelled"]
    assert task.cancelled()


def test_task_exception_propagates(loop):
    async def fail():
        await asyncio.sleep(0)
        raise LookupError("bad lookup")

    task = loop.create_task(fail())
    with pytest.raises(LookupError, match="bad lookup"):
        loop.run_until_complete(task)
    assert isinstance(task.exception(), LookupError)


def test_wait_for_timeout(loop):
    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.sleep(10), 0.01)
        return "ok"

    assert loop.run_until_complete(main()) == "ok"


def test_wait_first_completed(loop):
    async def value(delay, v):
        await asyncio.sleep(delay)
        return v

    async def main():
        fast = asyncio.ensure_future(value(0.005, "fast"))
        slow = asyncio.ensure_future(value(5, "slow"))
        done, pending = await asyncio.wait(
            {fast, slow}, return_when=asyncio.FIRST_COMPLETED)
        slow.cancel()
        return done == {fast}, pending == {slow}, fast.result()

    assert loop.run_until_complete(main()) == (True, True, "fast")


def test_task_done_callbacks_order(loop):
    out = []
    task = loop.create_task(_noop())
    task.add_done_callback(lambda t: out.append(1))
    task.add_done_callback(lambda t: out.append(2))
    loop.run_until_complete(task)
    run_briefly(loop)
    assert out == [1, 2]


def test_nested_tasks(loop):
    async def leaf(i):
        await asyncio.sleep(0)
        return i

    async def branch(n):
        return sum(await asyncio.gather(*(leaf(i) for i in range(n))))

    async def root():
        return await asyncio.gather(*(branch(n) for n in range(1, 6)))

    assert loop.run_until_complete(root()) == [0, 1, 3, 6, 10]


def test_many_tasks(loop):
    async def one(i):
        await asyncio.sleep(0)
        return i

    async def main():
        tasks = [loop.create_task(one(i)) for i in range(3000)]
        return await asyncio.gather(*tasks)

    assert loop.run_until_complete(main()) == list(range(3000))


# ------------------------------------------------------------ task factory


def test_task_factory_default_none(loop):
    assert loop.get_task_factory() is None


def test_task_factory_receives_loop_and_coro(loop):
    calls = []

    def factory(lp, coro, **kwargs):
        calls.append((lp, coro, kwargs))
        return asyncio.Task(coro, loop=lp, **kwargs)

    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory
    coro = _noop()
    task = loop.create_task(coro)
    assert len(calls) == 1
    lp, got_coro, kwargs = calls[0]
    assert lp is loop
    assert got_coro is coro
    assert kwargs == {}
    loop.run_until_complete(task)


def test_task_factory_name_is_applied(loop):
    loop.set_task_factory(lambda lp, coro, **kw: asyncio.Task(coro, loop=lp))
    task = loop.create_task(_noop(), name="via-factory")
    assert task.get_name() == "via-factory"
    loop.run_until_complete(task)


@pytest.mark.skipif(sys.version_info < (3, 11),
                    reason="create_task(context=) is new in Python 3.11")
def test_task_factory_receives_context_only_when_given(loop):
    calls = []

    def factory(lp, coro, **kwargs):
        calls.append(kwargs)
        return asyncio.Task(coro, loop=lp, **kwargs)

    loop.set_task_factory(factory)
    ctx = contextvars.Context()
    ctx.run(var.set, "factory-ctx")

    async def read():
        return var.get()

    t1 = loop.create_task(read())
    t2 = loop.create_task(read(), context=ctx)
    assert calls[0] == {}
    assert set(calls[1]) == {"context"} and calls[1]["context"] is ctx
    assert loop.run_until_complete(t1) == "unset"
    assert loop.run_until_complete(t2) == "factory-ctx"


def test_task_factory_custom_task_class(loop):
    class MyTask(asyncio.Task):
        pass

    loop.set_task_factory(lambda lp, coro: MyTask(coro, loop=lp))

    async def main():
        inner = asyncio.ensure_future(_noop())  # goes through the factory too
        await inner
        return type(inner)

    task = loop.create_task(main())
    assert type(task) is MyTask
    assert loop.run_until_complete(task) is MyTask


def test_task_factory_used_by_run_until_complete(loop):
    made = []

    def factory(lp, coro):
        t = asyncio.Task(coro, loop=lp)
        made.append(t)
        return t

    loop.set_task_factory(factory)

    async def main():
        return 7

    assert loop.run_until_complete(main()) == 7
    assert len(made) == 1


def test_task_factory_reset_to_none(loop):
    loop.set_task_factory(lambda lp, coro: asyncio.Task(coro, loop=lp))
    loop.set_task_factory(None)
    assert loop.get_task_factory() is None
    loop.run_until_complete(loop.create_task(_noop()))


def test_task_factory_non_callable(loop):
    with pytest.raises(TypeError,
                       match="task factory must be a callable or None"):
        loop.set_task_factory(1)
    assert loop.get_task_factory() is None


def test_task_factory_exception_propagates(loop):
    def factory(lp, coro):
        coro.close()
        raise ArithmeticError("factory failed")

    loop.set_task_factory(factory)
    with pytest.raises(ArithmeticError, match="factory failed"):
        loop.create_task(_noop())


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="eager tasks are new in Python 3.12")
def test_eager_task_factory(loop):
    loop.set_task_factory(asyncio.eager_task_factory)
    out = []

    async def quick():
        out.append("quick ran")
        return 7

    async def slow():
        out.append("slow started")
        await asyncio.sleep(0)
        out.append("slow resumed")
        return 8

    async def main():
        t1 = loop.create_task(quick(), name="eager")
        # ran to completion synchronously inside create_task
        assert t1.done() and t1.result() == 7
        assert t1.get_name() == "eager"
        t2 = loop.create_task(slow())
        assert out == ["quick ran", "slow started"]
        assert not t2.done()
        return await t2

    assert loop.run_until_complete(main()) == 8
    assert out == ["quick ran", "slow started", "slow resumed"]


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="eager tasks are new in Python 3.12")
def test_eager_task_outside_running_loop_is_lazy(loop):
    loop.set_task_factory(asyncio.eager_task_factory)
    out = []

    async def quick():
        out.append("ran")
        return 1

    task = loop.create_task(quick())
    assert out == []  # the loop is not running: no eager start
    assert loop.run_until_complete(task) == 1
    assert out == ["ran"]
