"""run_in_executor, set_default_executor, shutdown_default_executor."""

import asyncio
import concurrent.futures
import sys
import threading
import time
import warnings

import pytest

pytestmark = pytest.mark.timeout(20)

SHUTDOWN = "Executor shutdown has been called"


def test_run_in_executor_default_result(loop):
    async def main():
        fut = loop.run_in_executor(None, pow, 2, 10)
        assert isinstance(fut, asyncio.Future)
        assert fut.get_loop() is loop
        return await fut

    assert loop.run_until_complete(main()) == 1024


def test_run_in_executor_runs_in_other_thread(loop):
    async def main():
        return await loop.run_in_executor(None, threading.get_ident)

    assert loop.run_until_complete(main()) != threading.get_ident()


def test_run_in_executor_exception_propagates(loop):
    def fail(msg):
        raise ValueError(msg)

    async def main():
        with pytest.raises(ValueError, match="from executor"):
            await loop.run_in_executor(None, fail, "from executor")
        return "checked"

    assert loop.run_until_complete(main()) == "checked"


def test_run_in_executor_base_exception_type_kept(loop):
    class Custom(Exception):
        pass

    def fail():
        raise Custom("custom")

    async def main():
        try:
            await loop.run_in_executor(None, fail)
        except Custom as exc:
            return type(exc), str(exc)

    assert loop.run_until_complete(main()) == (Custom, "custom")


def test_run_in_executor_custom_executor(loop):
    with concurrent.futures.ThreadPoolExecutor(
            max_workers=2, thread_name_prefix="custom-pool") as ex:
        async def main():
            return await loop.run_in_executor(
                ex, lambda: threading.current_thread().name)

        assert loop.run_until_complete(main()).startswith("custom-pool")


def test_run_in_executor_many_concurrent_jobs(loop):
    def square(x):
        time.sleep(0.001)
        return x * x

    async def main():
        futs = [loop.run_in_executor(None, square, i) for i in range(100)]
        return await asyncio.gather(*futs)

    assert loop.run_until_complete(main()) == [i * i for i in range(100)]


def test_run_in_executor_does_not_block_loop(loop):
    events = []
    gate = threading.Event()

    def blocking():
        gate.wait(5)
        events.append("job done")
        return "job"

    async def main():
        fut = loop.run_in_executor(None, blocking)
        await asyncio.sleep(0.01)
        events.append("loop still running")
        gate.set()
        return await fut

    assert loop.run_until_complete(main()) == "job"
    assert events == ["loop still running", "job done"]


def test_run_in_executor_cancel_outer_future(loop):
    gate = threading.Event()

    async def main():
        fut = loop.run_in_executor(None, gate.wait, 5)
        await asyncio.sleep(0)
        fut.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fut
        gate.set()
        return "cancelled"

    assert loop.run_until_complete(main()) == "cancelled"


def test_set_default_executor_is_used(loop):
    ex = concurrent.futures.ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="my-default")
    loop.set_default_executor(ex)

    async def main():
        return await loop.run_in_executor(
            None, lambda: threading.current_thread().name)

    try:
        assert loop.run_until_complete(main()).startswith("my-default")
    finally:
        ex.shutdown(wait=True)


@pytest.mark.skipif(sys.version_info < (3, 11),
                    reason="3.10 only warns for a non-ThreadPoolExecutor")
def test_set_default_executor_rejects_non_thread_pool(loop):
    class NotAPool(concurrent.futures.Executor):
        pass

    with pytest.raises(TypeError,
                       match="executor must be ThreadPoolExecutor instance"):
        loop.set_default_executor(NotAPool())


@pytest.mark.skipif(sys.version_info >= (3, 11),
                    reason="3.11+ raises TypeError instead")
def test_set_default_executor_non_thread_pool_warns(loop):
    class NotAPool(concurrent.futures.Executor):
        pass

    with pytest.warns(DeprecationWarning):
        loop.set_default_executor(NotAPool())


def test_shutdown_default_executor_then_run_in_executor(loop):
    async def main():
        assert await loop.run_in_executor(None, abs, -3) == 3
        await loop.shutdown_default_executor()
        with pytest.raises(RuntimeError, match=SHUTDOWN):
            loop.run_in_executor(None, abs, -4)
        return "ok"

    assert loop.run_until_complete(main()) == "ok"


def test_shutdown_default_executor_without_executor(loop):
    loop.run_until_complete(loop.shutdown_default_executor())
    with pytest.raises(RuntimeError, match=SHUTDOWN):
        loop.run_in_executor(None, abs, -4)


def test_shutdown_default_executor_twice(loop):
    async def main():
        await loop.run_in_executor(None, abs, 1)
        await loop.shutdown_default_executor()
        await loop.shutdown_default_executor()

    loop.run_until_complete(main())


def test_shutdown_default_executor_waits_for_jobs(loop):
    done = []

    def job():
        time.sleep(0.05)
        done.append("job")

    async def main():
        loop.run_in_executor(None, job)
        await loop.shutdown_default_executor()
        return list(done)

    assert loop.run_until_complete(main()) == ["job"]


def test_custom_executor_still_usable_after_default_shutdown(loop):
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as ex:
        async def main():
            await loop.shutdown_default_executor()
            return await loop.run_in_executor(ex, abs, -9)

        assert loop.run_until_complete(main()) == 9


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="shutdown_default_executor(timeout=) is new in 3.12")
def test_shutdown_default_executor_timeout_ok(loop):
    async def main():
        await loop.run_in_executor(None, abs, -1)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "did not finish" warning
            await loop.shutdown_default_executor(timeout=5)

    loop.run_until_complete(main())


@pytest.mark.skipif(sys.version_info < (3, 13),
                    reason="the timeout is only honoured from Python 3.13")
def test_shutdown_default_executor_timeout_expires(loop):
    gate = threading.Event()

    async def main():
        loop.run_in_executor(None, gate.wait, 5)
        try:
            with pytest.warns(RuntimeWarning,
                              match="The executor did not finishing joining "
                                    "its threads within 0.05 seconds."):
                await loop.shutdown_default_executor(timeout=0.05)
        finally:
            gate.set()

    loop.run_until_complete(main())


def test_run_in_executor_closed_loop(loop):
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.run_in_executor(None, abs, 1)


def test_close_does_not_wait_for_default_executor_jobs(loop):
    gate = threading.Event()
    loop.run_until_complete(asyncio.sleep(0))
    loop.run_in_executor(None, gate.wait, 5)
    start = time.monotonic()
    loop.close()
    elapsed = time.monotonic() - start
    gate.set()
    assert elapsed < 4  # close() shuts the executor down with wait=False
