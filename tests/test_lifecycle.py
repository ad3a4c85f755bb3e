"""Loop lifecycle: run_forever / run_until_complete / stop / close / time."""

import asyncio
import gc
import socket
import sys
import threading
import time
import warnings
import weakref

import pytest

from _util import open_fd_count, run_briefly

CLOSED = "Event loop is closed"
ALREADY_RUNNING = "This event loop is already running"
OTHER_RUNNING = "Cannot run the event loop while another loop is running"


# ------------------------------------------------------------------ states


def test_new_loop_state(loop, flavor):
    assert isinstance(loop, asyncio.AbstractEventLoop)
    assert isinstance(loop, flavor.Loop)
    assert loop.is_running() is False
    assert loop.is_closed() is False


def test_is_running_inside_callback(loop):
    seen = []
    loop.call_soon(lambda: seen.append(loop.is_running()))
    run_briefly(loop)
    assert seen == [True]
    assert loop.is_running() is False


def test_get_running_loop_inside_and_outside(loop):
    seen = []

    def cb():
        seen.append(asyncio.get_running_loop())
        seen.append(asyncio.get_event_loop())

    loop.call_soon(cb)
    run_briefly(loop)
    assert seen[0] is loop
    assert seen[1] is loop
    with pytest.raises(RuntimeError, match="no running event loop"):
        asyncio.get_running_loop()


def test_running_loop_inside_coroutine(loop):
    async def main():
        return asyncio.get_running_loop()

    assert loop.run_until_complete(main()) is loop


def test_time_is_monotonic_clock(loop):
    before = time.monotonic()
    t = loop.time()
    after = time.monotonic()
    assert isinstance(t, float)
    assert before <= t <= after


def test_time_never_goes_back(loop):
    values = [loop.time() for _ in range(2000)]
    assert values == sorted(values)


def test_time_advances_inside_callbacks(loop):
    seen = []

    def cb():
        seen.append(loop.time())
        time.sleep(0.01)
        seen.append(loop.time())

    loop.call_soon(cb)
    run_briefly(loop)
    assert seen[1] - seen[0] >= 0.01 - 1e-6


def test_loop_is_weakrefable(loop):
    ref = weakref.ref(loop)
    assert ref() is loop


def test_closed_loop_is_garbage_collected(flavor):
    lp = flavor.new_event_loop()

    async def main():
        await asyncio.sleep(0)

    lp.run_until_complete(main())
    lp.close()
    ref = weakref.ref(lp)
    del lp
    gc.collect()
    assert ref() is None


def _collect_quietly():
    # An unclosed loop warns when collected, and its pending tasks log.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def test_unclosed_loop_with_pending_timer_is_collected(flavor):
    lp = flavor.new_event_loop()
    lp.call_later(3600, print)
    ref = weakref.ref(lp)
    del lp
    _collect_quietly()
    assert ref() is None


def test_unclosed_loop_with_sleeping_task_is_collected(flavor, caplog):
    # The sleeping task's frame holds its timer handle, the handle holds the
    # loop: only the garbage collector can free them.
    lp = flavor.new_event_loop()
    slept = []

    async def sleeper():
        slept.append(1)
        await asyncio.sleep(3600)

    task = lp.create_task(sleeper())
    run_briefly(lp)
    assert slept == [1]
    ref = weakref.ref(lp)
    del lp, task
    _collect_quietly()
    assert ref() is None


def test_unclosed_loop_referenced_by_a_held_timer_stays_usable(flavor):
    lp = flavor.new_event_loop()
    fired = []
    held = lp.call_later(3600, fired.append, 1)
    ref = weakref.ref(lp)
    del lp
    _collect_quietly()
    # The handle still refers to the loop, which must be intact.
    assert ref() is not None
    lp = ref()
    assert not lp.is_closed()
    lp.call_soon(fired.append, 2)
    run_briefly(lp)
    assert fired == [2]
    held.cancel()
    lp.close()


# --------------------------------------------------------- run_until_complete


def test_run_until_complete_coroutine_result(loop):
    async def main(x):
        await asyncio.sleep(0)
        return x * 2

    assert loop.run_until_complete(main(21)) == 42


def test_run_until_complete_future_set_by_timer(loop):
    fut = loop.create_future()
    loop.call_later(0.01, fut.set_result, "done")
    assert loop.run_until_complete(fut) == "done"


def test_run_until_complete_task(loop):
    async def main():
        return "task"

    task = loop.create_task(main())
    assert loop.run_until_complete(task) == "task"
    assert task.done()


def test_run_until_complete_on_done_future_returns_result(loop):
    fut = loop.create_future()
    fut.set_result(5)
    assert loop.run_until_complete(fut) == 5


def test_run_until_complete_on_failed_future_raises(loop):
    fut = loop.create_future()
    err = ValueError("nope")
    fut.set_exception(err)
    with pytest.raises(ValueError) as info:
        loop.run_until_complete(fut)
    assert info.value is err


def test_run_until_complete_propagates_exception_identity(loop):
    err = KeyError("k")

    async def main():
        await asyncio.sleep(0)
        raise err

    with pytest.raises(KeyError) as info:
        loop.run_until_complete(main())
    assert info.value is err


def test_run_until_complete_custom_awaitable(loop):
    class Awaitable:
        def __await__(self):
            yield from asyncio.sleep(0).__await__()
            return "awaited"

    assert loop.run_until_complete(Awaitable()) == "awaited"


def test_run_until_complete_non_awaitable_type_error(loop):
    with pytest.raises(TypeError,
                       match="An asyncio.Future, a coroutine or an awaitable "
                             "is required"):
        loop.run_until_complete(1)


def test_run_until_complete_future_of_other_loop(loop_factory):
    a = loop_factory()
    b = loop_factory()
    fut = b.create_future()
    with pytest.raises(ValueError,
                       match="The future belongs to a different loop than the "
                             "one specified as the loop argument"):
        a.run_until_complete(fut)


def test_run_until_complete_stopped_before_done(loop):
    fut = loop.create_future()
    loop.call_soon(loop.stop)
    with pytest.raises(RuntimeError,
                       match="Event loop stopped before Future completed."):
        loop.run_until_complete(fut)
    assert not fut.done()


def test_run_until_complete_can_be_repeated(loop):
    async def main(i):
        await asyncio.sleep(0)
        return i

    assert [loop.run_until_complete(main(i)) for i in range(20)] == list(
        range(20))


def test_run_until_complete_leaves_unrelated_callbacks_for_later(loop):
    order = []

    async def main():
        order.append("main")

    loop.call_later(0.5, order.append, "late")
    loop.run_until_complete(main())
    assert order == ["main"]


def test_run_until_complete_inside_running_loop(loop):
    errors = []

    async def inner():
        pass

    def cb():
        coro = inner()
        try:
            loop.run_until_complete(coro)
        except RuntimeError as exc:
            errors.append(str(exc))
        finally:
            coro.close()

    loop.call_soon(cb)
    run_briefly(loop)
    assert errors == [ALREADY_RUNNING]


# -------------------------------------------------------------- run_forever


def test_run_forever_while_running(loop):
    errors = []

    def cb():
        try:
            loop.run_forever()
        except RuntimeError as exc:
            errors.append(str(exc))

    loop.call_soon(cb)
    run_briefly(loop)
    assert errors == [ALREADY_RUNNING]
    assert loop.is_running() is False


def test_run_forever_returns_after_stop_from_timer(loop):
    order = []
    loop.call_later(0.01, order.append, "timer")
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert order == ["timer"]


def test_run_forever_can_be_called_repeatedly(loop):
    count = []
    for i in range(50):
        loop.call_soon(count.append, i)
        loop.call_soon(loop.stop)
        loop.run_forever()
    assert count == list(range(50))


@pytest.mark.parametrize("method", ["run_forever", "run_until_complete"])
def test_other_loop_running_in_same_thread(loop_factory, method):
    outer = loop_factory()
    inner = loop_factory()
    errors = []

    async def noop():
        pass

    def cb():
        coro = noop()
        try:
            if method == "run_forever":
                inner.run_forever()
            else:
                inner.run_until_complete(coro)
        except RuntimeError as exc:
            errors.append(str(exc))
        finally:
            coro.close()

    outer.call_soon(cb)
    run_briefly(outer)
    assert errors == [OTHER_RUNNING]
    # the inner loop is still usable once the outer one stopped
    run_briefly(inner)


def test_stdlib_loop_refuses_to_run_inside_ours(loop):
    errors = []

    def cb():
        other = asyncio.new_event_loop()
        try:
            other.run_forever()
        except RuntimeError as exc:
            errors.append(str(exc))
        finally:
            other.close()

    loop.call_soon(cb)
    run_briefly(loop)
    assert errors == [OTHER_RUNNING]


def test_our_loop_refuses_to_run_inside_stdlib(flavor):
    outer = asyncio.new_event_loop()
    inner = flavor.new_event_loop()
    errors = []

    def cb():
        try:
            inner.run_forever()
        except RuntimeError as exc:
            errors.append(str(exc))

    try:
        outer.call_soon(cb)
        run_briefly(outer)
    finally:
        outer.close()
        inner.close()
    assert errors == [OTHER_RUNNING]


def test_two_loops_alternate_in_one_thread(loop_factory):
    a = loop_factory()
    b = loop_factory()
    out = []

    async def tag(name):
        await asyncio.sleep(0)
        out.append(name)

    for _ in range(3):
        a.run_until_complete(tag("a"))
        b.run_until_complete(tag("b"))
    assert out == ["a", "b"] * 3


@pytest.mark.timeout(10)
def test_loop_runs_in_non_main_thread(loop):
    result = {}

    async def main():
        await asyncio.sleep(0.01)
        return threading.get_ident()

    def worker():
        try:
            result["ident"] = loop.run_until_complete(main())
        except BaseException as exc:  # pragma: no cover - reported below
            result["error"] = exc

    t = threading.Thread(target=worker)
    t.start()
    t.join(5)
    assert not t.is_alive()
    assert "error" not in result, result.get("error")
    assert result["ident"] == t.ident


@pytest.mark.timeout(10)
def test_loops_in_several_threads_at_once(loop_factory):
    loops = [loop_factory() for _ in range(4)]
    results = [None] * 4

    async def main(i):
        total = 0
        for _ in range(20):
            await asyncio.sleep(0.001)
            total += i
        return total

    def worker(i):
        results[i] = loops[i].run_until_complete(main(i))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert results == [0, 20, 40, 60]


# --------------------------------------------------------------------- stop


def test_stop_runs_current_batch_then_returns(loop):
    order = []

    def a():
        order.append("a")
        loop.call_soon(order.append, "a2")  # scheduled during the batch

    loop.call_soon(a)
    loop.call_soon(loop.stop)
    loop.call_soon(order.append, "b")  # already scheduled: runs this time
    loop.run_forever()
    assert order == ["a", "b"]

    loop.call_soon(loop.stop)
    loop.run_forever()
    assert order == ["a", "b", "a2"]


def test_stop_before_run_forever_does_one_iteration(loop):
    order = []
    loop.stop()
    loop.call_soon(order.append, 1)
    loop.call_later(0, order.append, "t0")  # already expired: same iteration
    loop.call_later(10, order.append, "far")
    loop.run_forever()
    assert order == [1, "t0"]
    assert loop.is_running() is False
    # the stop request was consumed: the next run needs its own stop
    loop.call_soon(order.append, 2)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert order == [1, "t0", 2]


def test_stop_before_run_forever_with_nothing_scheduled(loop):
    loop.stop()
    loop.run_forever()  # must return without anything scheduled
    assert loop.is_running() is False


def test_stop_twice_is_one_stop(loop):
    order = []
    loop.call_soon(loop.stop)
    loop.call_soon(loop.stop)
    loop.call_soon(order.append, 1)
    loop.run_forever()
    assert order == [1]
    loop.call_soon(order.append, 2)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert order == [1, 2]


def test_stop_from_coroutine(loop):
    order = []

    async def main():
        order.append("main")
        loop.stop()

    loop.create_task(main())
    loop.run_forever()
    assert order == ["main"]


def test_stop_wakes_loop_blocked_on_far_timer(loop):
    loop.call_later(30, lambda: None)
    loop.call_later(0.02, loop.stop)
    start = time.monotonic()
    loop.run_forever()
    assert time.monotonic() - start < 10


# -------------------------------------------------------------------- close


def test_close_while_running(loop):
    errors = []

    def cb():
        try:
            loop.close()
        except RuntimeError as exc:
            errors.append(str(exc))

    loop.call_soon(cb)
    run_briefly(loop)
    assert errors == ["Cannot close a running event loop"]
    assert loop.is_closed() is False


def test_close_twice_is_fine(loop):
    loop.close()
    loop.close()
    assert loop.is_closed() is True


def test_close_discards_pending_callbacks(loop):
    called = []
    loop.call_soon(called.append, 1)
    loop.call_later(0.001, called.append, 2)
    loop.close()
    time.sleep(0.01)
    assert called == []


def test_close_after_runs(loop):
    async def main():
        await asyncio.sleep(0.001)
        return 1

    loop.run_until_complete(main())
    loop.close()
    assert loop.is_closed()


def test_many_loops_created_and_closed(loop_factory):
    for _ in range(30):
        lp = loop_factory()
        lp.call_soon(lp.stop)
        lp.run_forever()
        lp.close()
        assert lp.is_closed()


def test_close_unused_loop(loop_factory):
    lp = loop_factory()
    lp.close()
    assert lp.is_closed()


def _closed_ops(lp):
    return {
        "call_soon": lambda: lp.call_soon(print),
        "call_later": lambda: lp.call_later(1, print),
        "call_at": lambda: lp.call_at(lp.time() + 1, print),
        "call_soon_threadsafe": lambda: lp.call_soon_threadsafe(print),
        "run_forever": lp.run_forever,
        "run_in_executor": lambda: lp.run_in_executor(None, print),
    }


@pytest.mark.parametrize("op", ["call_soon", "call_later", "call_at",
                                "call_soon_threadsafe", "run_forever",
                                "run_in_executor"])
def test_closed_loop_raises(loop, op):
    loop.close()
    with pytest.raises(RuntimeError, match=CLOSED):
        _closed_ops(loop)[op]()


def test_closed_loop_run_until_complete(loop):
    async def main():
        pass

    loop.close()
    coro = main()
    try:
        with pytest.raises(RuntimeError, match=CLOSED):
            loop.run_until_complete(coro)
    finally:
        coro.close()


def test_closed_loop_create_task(loop):
    # asyncio raises before touching the coroutine (it is left unclosed);
    # we close it ourselves either way.
    async def main():
        pass

    loop.close()
    coro = main()
    try:
        with pytest.raises(RuntimeError, match=CLOSED):
            loop.create_task(coro)
    finally:
        coro.close()


def test_closed_loop_harmless_methods(loop):
    loop.close()
    assert loop.is_running() is False
    assert isinstance(loop.time(), float)
    loop.stop()  # no error
    loop.set_debug(True)
    assert loop.get_debug() is True
    # asyncio lets a future be created on a closed loop
    fut = loop.create_future()
    assert isinstance(fut, asyncio.Future)
    assert fut.get_loop() is loop


def test_unclosed_loop_warns_on_collection(flavor):
    lp = flavor.new_event_loop()
    with pytest.warns(ResourceWarning, match="unclosed event loop"):
        del lp
        gc.collect()


def test_run_until_complete_stops_after_current_batch(loop):
    out = []

    async def quick():
        out.append("quick")

    async def stepper():
        out.append("s1")
        await asyncio.sleep(0)
        out.append("s2")
        await asyncio.sleep(0)
        out.append("s3")

    bg = loop.create_task(stepper())
    loop.run_until_complete(quick())
    # 1st iteration: s1, quick (done -> schedules the stop callback)
    # 2nd iteration: s2, then the stop callback; the loop returns
    assert out == ["s1", "quick", "s2"]
    loop.run_until_complete(bg)
    assert out == ["s1", "quick", "s2", "s3"]


def test_repr_shows_state(loop):
    assert repr(loop).endswith("running=False closed=False debug=False>")
    seen = []
    loop.call_soon(lambda: seen.append(repr(loop)))
    run_briefly(loop)
    assert seen[0].endswith("running=True closed=False debug=False>")
    loop.set_debug(True)
    loop.close()
    assert repr(loop).endswith("running=False closed=True debug=True>")


def test_current_task_is_none_in_plain_callback(loop):
    seen = []
    loop.call_soon(lambda: seen.append(asyncio.current_task()))
    run_briefly(loop)
    assert seen == [None]


@pytest.mark.timeout(10)
def test_running_state_seen_from_other_thread(loop):
    seen = []

    def probe():
        try:
            asyncio.get_running_loop()
            seen.append("has running loop")
        except RuntimeError as exc:
            seen.append(str(exc))
        seen.append(loop.is_running())
        loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(lambda: threading.Thread(target=probe).start())
    loop.run_forever()
    assert seen == ["no running event loop", True]


def test_close_releases_pending_callback_arguments(loop):
    class Payload:
        pass

    obj = Payload()
    ref = weakref.ref(obj)
    loop.call_soon(print, obj)
    loop.call_later(100, print, obj)
    loop.call_soon_threadsafe(print, obj)
    del obj
    loop.close()
    gc.collect()
    assert ref() is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts /proc/self/fd")
def test_close_releases_the_loops_fds_at_once(flavor):
    # The loop object stays referenced: close() alone must give back the
    # poller's fds (epoll, eventfd...), as asyncio's selector does.
    before = open_fd_count()
    loops = []
    for _ in range(5):
        lp = flavor.new_event_loop()
        lp.run_until_complete(asyncio.sleep(0))
        lp.close()
        loops.append(lp)
    assert open_fd_count() == before
    # Still usable where asyncio allows it after close().
    assert all(lp.is_closed() for lp in loops)
    assert isinstance(loops[0].time(), float)


def test_connection_left_open_at_close_is_collected_and_its_socket_closed(loop_factory):
    """A transport nobody closed outlives its loop: once unreferenced, the
    collector takes it with a ResourceWarning, as asyncio's does, and its
    socket is closed (the peer reads EOF) with everything libuv held."""
    loop = loop_factory()
    made = []

    class Proto(asyncio.Protocol):
        def connection_made(self, transport):
            made.append(transport)

    async def setup():
        srv = await loop.create_server(Proto, "127.0.0.1", 0)
        client = socket.create_connection(srv.sockets[0].getsockname()[:2])
        for _ in range(200):
            if made:
                break
            await asyncio.sleep(0.01)
        srv.close()
        return client

    client = loop.run_until_complete(setup())
    try:
        assert len(made) == 1
        loop.close()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            made.clear()
            for _ in range(3):
                gc.collect()
        assert any(issubclass(w.category, ResourceWarning)
                   and "unclosed transport" in str(w.message) for w in caught)
        client.settimeout(5)
        assert client.recv(10) == b""
    finally:
        client.close()


def test_server_left_open_at_close_is_collected_and_its_socket_closed(loop_factory):
    """A server nobody closed outlives its loop: once unreferenced it is
    collected, its listening socket closed (ResourceWarning, as asyncio's)."""
    loop = loop_factory()

    async def setup():
        return await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)

    srv = loop.run_until_complete(setup())
    addr = srv.sockets[0].getsockname()[:2]
    loop.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del srv
        for _ in range(3):
            gc.collect()
    assert any(issubclass(w.category, ResourceWarning) for w in caught)
    # Nothing listens on the address any more.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(addr, timeout=5).close()
