"""The loop must release the GIL while it sleeps in the poll."""

import asyncio
import threading
import time

import pytest

pytestmark = pytest.mark.timeout(20)

# A pure-Python counting loop does millions of iterations per second; a
# thread that is starved of the GIL for the whole sleep does (almost) none.
MIN_PROGRESS = 10_000


class Spinner(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.count = 0
        self.started_evt = threading.Event()
        self.stop_evt = threading.Event()

    def run(self):
        self.started_evt.set()
        stop = self.stop_evt
        while not stop.is_set():
            for _ in range(100):
                self.count += 1

    def __enter__(self):
        self.start()
        assert self.started_evt.wait(5)
        return self

    def __exit__(self, *exc):
        self.stop_evt.set()
        self.join(5)


def test_cpu_thread_progresses_while_loop_sleeps(loop):
    with Spinner() as spinner:
        async def main():
            before = spinner.count
            await asyncio.sleep(0.3)
            return spinner.count - before

        progress = loop.run_until_complete(main())
    assert progress > MIN_PROGRESS


def test_cpu_thread_progresses_during_run_forever_idle(loop):
    with Spinner() as spinner:
        marks = []
        loop.call_soon(lambda: marks.append(spinner.count))
        loop.call_later(0.3, lambda: marks.append(spinner.count))
        loop.call_later(0.31, loop.stop)
        loop.run_forever()
    assert marks[1] - marks[0] > MIN_PROGRESS


def test_timers_fire_while_cpu_thread_runs(loop):
    out = []
    with Spinner():
        async def main():
            loop.call_later(0.03, out.append, "t3")
            loop.call_later(0.01, out.append, "t1")
            loop.call_later(0.02, out.append, "t2")
            await asyncio.sleep(0.1)
            out.append("slept")

        loop.run_until_complete(main())
    assert out == ["t1", "t2", "t3", "slept"]


def test_timer_not_early_with_cpu_thread(loop):
    res = time.get_clock_info("monotonic").resolution
    with Spinner():
        async def main():
            start = loop.time()
            await asyncio.sleep(0.05)
            return loop.time() - start

        assert loop.run_until_complete(main()) >= 0.05 - res


def test_two_threads_with_own_loops_and_a_spinner(loop_factory):
    loops = [loop_factory(), loop_factory()]
    results = {}

    def worker(i):
        async def main():
            n = 0
            for _ in range(10):
                await asyncio.sleep(0.005)
                n += 1
            return n

        results[i] = loops[i].run_until_complete(main())

    with Spinner() as spinner:
        before = spinner.count
        threads = [threading.Thread(target=worker, args=(i,))
                   for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        progress = spinner.count - before
    assert results == {0: 10, 1: 10}
    assert progress > 0


def test_executor_job_runs_while_loop_waits(loop):
    def cpu_job(n):
        total = 0
        for i in range(n):
            total += i
        return total

    async def main():
        return await loop.run_in_executor(None, cpu_job, 200_000)

    assert loop.run_until_complete(main()) == sum(range(200_000))


def test_thread_blocked_on_lock_released_by_callback(loop):
    lock = threading.Lock()
    lock.acquire()
    got = []

    def waiter():
        with lock:
            got.append("got lock")
        loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    loop.call_later(0.02, lock.release)
    loop.call_later(10, loop.stop)  # safety net only
    loop.run_forever()
    t.join(5)
    assert got == ["got lock"]
