"""call_soon_threadsafe and other cross-thread entry points."""

import asyncio
import collections
import contextvars
import threading
import time

import pytest

from _util import run_briefly

pytestmark = pytest.mark.timeout(30)

var = contextvars.ContextVar("ts_var", default="unset")


def start_thread(target, *args):
    t = threading.Thread(target=target, args=args, daemon=True)
    t.start()
    return t


def test_returns_handle(loop, flavor):
    h = loop.call_soon_threadsafe(print)
    assert isinstance(h, asyncio.Handle)
    assert not isinstance(h, asyncio.TimerHandle)
    assert type(h) is flavor.Handle
    h.cancel()


def test_same_thread_fifo_with_call_soon(loop):
    out = []
    loop.call_soon(out.append, 1)
    loop.call_soon_threadsafe(out.append, 2)
    loop.call_soon(out.append, 3)
    loop.call_soon_threadsafe(out.append, 4)
    run_briefly(loop)
    assert out == [1, 2, 3, 4]


def test_many_threads_every_callback_runs_exactly_once(loop):
    n_threads = 8
    per_thread = 12500
    total = n_threads * per_thread
    counts = collections.Counter()
    per_thread_seen = collections.defaultdict(list)
    done = [0]
    go = threading.Event()

    def cb(tid, i):
        counts[(tid, i)] += 1
        per_thread_seen[tid].append(i)
        done[0] += 1
        if done[0] == total:
            loop.stop()

    def producer(tid):
        go.wait()
        for i in range(per_thread):
            loop.call_soon_threadsafe(cb, tid, i)

    threads = [start_thread(producer, t) for t in range(n_threads)]
    loop.call_soon(go.set)
    guard = loop.call_later(20, loop.stop)  # safety net only
    loop.run_forever()
    guard.cancel()
    for t in threads:
        t.join(5)
    assert done[0] == total
    assert len(counts) == total
    assert set(counts.values()) == {1}
    # callbacks from one thread keep that thread's submission order
    for tid in range(n_threads):
        assert per_thread_seen[tid] == list(range(per_thread))


def test_wakes_loop_blocked_in_run_forever(loop):
    out = []
    loop.call_later(60, out.append, "far")  # the loop would sleep 60 s

    def waker():
        time.sleep(0.05)
        loop.call_soon_threadsafe(out.append, "woken")
        loop.call_soon_threadsafe(loop.stop)

    start = time.monotonic()
    t = start_thread(waker)
    loop.run_forever()
    elapsed = time.monotonic() - start
    t.join(5)
    assert out == ["woken"]
    assert elapsed < 10  # bound: it did not wait for the 60 s timer


def test_wakes_loop_with_nothing_scheduled(loop):
    def waker():
        time.sleep(0.05)
        loop.call_soon_threadsafe(loop.stop)

    t = start_thread(waker)
    start = time.monotonic()
    loop.run_forever()
    assert time.monotonic() - start < 10
    t.join(5)


def test_wakes_long_sleep_via_future(loop):
    async def main():
        fut = loop.create_future()

        def worker():
            time.sleep(0.05)
            loop.call_soon_threadsafe(fut.set_result, 42)

        t = start_thread(worker)
        sleeper = asyncio.ensure_future(asyncio.sleep(10))
        try:
            return await fut
        finally:
            sleeper.cancel()
            t.join(5)

    start = time.monotonic()
    assert loop.run_until_complete(main()) == 42
    assert time.monotonic() - start < 10


def test_from_thread_while_loop_idle_runs_on_next_run(loop):
    out = []
    t = start_thread(loop.call_soon_threadsafe, out.append, "queued")
    t.join(5)
    assert out == []
    run_briefly(loop)
    assert out == ["queued"]


def test_cancel_from_thread_before_run(loop):
    out = []
    handles = []

    def worker():
        h = loop.call_soon_threadsafe(out.append, "x")
        h.cancel()
        handles.append(h)

    t = start_thread(worker)
    t.join(5)
    run_briefly(loop)
    assert out == []
    assert handles[0].cancelled()


def test_default_context_is_calling_threads(loop):
    seen = []

    def worker():
        var.set("thread-value")
        loop.call_soon_threadsafe(lambda: seen.append(var.get()))
        loop.call_soon_threadsafe(loop.stop)

    var.set("main-value")
    try:
        loop.call_soon(start_thread, worker)
        loop.run_forever()
    finally:
        var.set("unset")
    assert seen == ["thread-value"]


def test_explicit_context_from_thread(loop):
    ctx = contextvars.Context()
    ctx.run(var.set, "explicit")
    seen = []

    def cb():
        seen.append(var.get())
        var.set("modified")

    def worker():
        loop.call_soon_threadsafe(cb, context=ctx)
        loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(start_thread, worker)
    loop.run_forever()
    assert seen == ["explicit"]
    assert ctx[var] == "modified"


def test_closed_loop_from_thread_raises(loop):
    loop.close()
    errors = []

    def worker():
        try:
            loop.call_soon_threadsafe(print)
        except RuntimeError as exc:
            errors.append(str(exc))

    start_thread(worker).join(5)
    assert errors == ["Event loop is closed"]


def test_run_coroutine_threadsafe_result(loop):
    results = []

    async def add(a, b):
        await asyncio.sleep(0.001)
        return a + b

    def worker():
        fut = asyncio.run_coroutine_threadsafe(add(2, 3), loop)
        results.append(fut.result(timeout=5))
        loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(start_thread, worker)
    loop.run_forever()
    assert results == [5]


def test_run_coroutine_threadsafe_exception(loop):
    errors = []

    async def fail():
        raise ZeroDivisionError("from coro")

    def worker():
        fut = asyncio.run_coroutine_threadsafe(fail(), loop)
        try:
            fut.result(timeout=5)
        except ZeroDivisionError as exc:
            errors.append(str(exc))
        loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(start_thread, worker)
    loop.run_forever()
    assert errors == ["from coro"]


def test_threads_and_loop_schedule_concurrently(loop):
    out = collections.Counter()
    n = 2000
    remaining = [2 * n + n]

    def cb(tag):
        out[tag] += 1
        remaining[0] -= 1
        if remaining[0] == 0:
            loop.stop()

    def worker(tag):
        for _ in range(n):
            loop.call_soon_threadsafe(cb, tag)

    def local_producer(i=0):
        # the loop itself keeps scheduling from its own thread meanwhile
        if i < n:
            loop.call_soon(cb, "local")
            loop.call_soon(local_producer, i + 1)

    loop.call_soon(start_thread, worker, "t1")
    loop.call_soon(start_thread, worker, "t2")
    loop.call_soon(local_producer)
    guard = loop.call_later(20, loop.stop)
    loop.run_forever()
    guard.cancel()
    assert out == {"t1": n, "t2": n, "local": n}


def test_wakeups_many_times(loop):
    # Repeated sleep/wake cycles: each wake-up must be noticed.
    out = []

    def worker():
        for i in range(30):
            time.sleep(0.002)
            loop.call_soon_threadsafe(out.append, i)
        loop.call_soon_threadsafe(loop.stop)

    loop.call_later(60, print)
    loop.call_soon(start_thread, worker)
    loop.run_forever()
    assert out == list(range(30))


def test_stop_from_thread_via_threadsafe(loop):
    ran = []

    def worker():
        time.sleep(0.02)
        loop.call_soon_threadsafe(loop.stop)

    async def forever():
        try:
            await asyncio.sleep(30)
        finally:
            ran.append("cleanup")

    task = loop.create_task(forever())
    start_thread(worker)
    loop.run_forever()
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(task)
    assert ran == ["cleanup"]


async def _coro_func():
    pass


@pytest.mark.parametrize("bad", ["int", "coroutine_function",
                                 "coroutine_object"])
def test_rejects_bad_callback_in_debug(loop, bad):
    # asyncio validates callbacks only in debug mode
    loop.set_debug(True)
    cb = {"int": lambda: 1, "coroutine_function": lambda: _coro_func,
          "coroutine_object": _coro_func}[bad]()
    try:
        with pytest.raises(TypeError) as info:
            loop.call_soon_threadsafe(cb)
    finally:
        if bad == "coroutine_object":
            cb.close()
    if bad == "int":
        assert str(info.value) == (
            "a callable object was expected by call_soon_threadsafe(), got 1")
    else:
        assert str(info.value) == (
            "coroutines cannot be used with call_soon_threadsafe()")
