"""Cross-thread entry points under load: call_soon_threadsafe from many
threads (loop running, stopping and restarting, closing underneath),
run_in_executor with cancellations and a racing executor shutdown, and
asyncio.run_coroutine_threadsafe from many threads.

Every test counts what happened (each callback exactly once, per-thread
FIFO order, exact exceptions) and is bounded: threads are joined with a
timeout and a leftover thread is a failure (a deadlock), never a hang.
"""

import asyncio
import collections
import concurrent.futures
import logging
import random
import threading
import time

import pytest

pytestmark = pytest.mark.timeout(60)

N_THREADS = 8
PER_THREAD = 2000
CLOSED = "Event loop is closed"
SHUTDOWN = "Executor shutdown has been called"


def start_threads(target, n, *args):
    threads = [threading.Thread(target=target, args=(tid, *args), daemon=True)
               for tid in range(n)]
    for t in threads:
        t.start()
    return threads


def join_all(threads, timeout=20.0):
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in threads if t.is_alive()]
    assert stuck == [], f"threads still running (deadlock?): {stuck}"


class Ledger:
    """Which (thread, seq) callbacks ran, in what order.  Touched only by
    the loop thread (callbacks), read by the test after the loop stopped."""

    def __init__(self, total, loop=None):
        self.total = total
        self.loop = loop
        self.counts = collections.Counter()
        self.order = collections.defaultdict(list)
        self.done = 0

    def cb(self, tid, seq):
        self.counts[(tid, seq)] += 1
        self.order[tid].append(seq)
        self.done += 1
        if self.loop is not None and self.done == self.total:
            self.loop.stop()

    def assert_all_once_in_order(self, n_threads, per_thread):
        assert self.done == n_threads * per_thread
        assert len(self.counts) == n_threads * per_thread
        assert set(self.counts.values()) == {1}
        for tid in range(n_threads):
            assert self.order[tid] == list(range(per_thread)), f"thread {tid} out of order"


# ---------------------------------------------------------------------------
# call_soon_threadsafe


def test_hammer_while_running(loop):
    total = N_THREADS * PER_THREAD
    n_local = 500
    ledger = Ledger(total)
    go = threading.Event()
    local = []

    def maybe_stop():
        if ledger.done == total and len(local) == n_local:
            loop.stop()

    def cb(tid, seq):
        ledger.cb(tid, seq)
        maybe_stop()

    def producer(tid):
        go.wait(10)
        for seq in range(PER_THREAD):
            loop.call_soon_threadsafe(cb, tid, seq)

    def local_producer(i=0):
        # The loop thread schedules its own callbacks meanwhile.
        if i < n_local:
            local.append(i)
            loop.call_soon(local_producer, i + 1)
        maybe_stop()

    threads = start_threads(producer, N_THREADS)
    loop.call_soon(go.set)
    loop.call_soon(local_producer)
    guard = loop.call_later(30, loop.stop)  # safety net only
    loop.run_forever()
    guard.cancel()
    join_all(threads)
    ledger.assert_all_once_in_order(N_THREADS, PER_THREAD)
    assert local == list(range(n_local))


def test_hammer_from_thread_started_before_loop_runs(loop):
    # Calls that pile up before run_forever() are all run, in order.
    ledger = Ledger(N_THREADS * PER_THREAD)

    def producer(tid):
        for seq in range(PER_THREAD):
            loop.call_soon_threadsafe(ledger.cb, tid, seq)

    join_all(start_threads(producer, N_THREADS))
    assert ledger.done == 0
    loop.call_soon(loop.stop)
    loop.run_forever()
    ledger.assert_all_once_in_order(N_THREADS, PER_THREAD)


@pytest.mark.parametrize("stopper", ["loop_thread", "producers"])
def test_hammer_across_stop_and_restart(loop, stopper):
    total = N_THREADS * PER_THREAD
    ledger = Ledger(total)
    finished = []

    def producer(tid):
        for seq in range(PER_THREAD):
            loop.call_soon_threadsafe(ledger.cb, tid, seq)
            if stopper == "producers" and seq % 97 == 0:
                loop.call_soon_threadsafe(loop.stop)

    def run_producers():
        join_all(start_threads(producer, N_THREADS))
        finished.append(True)

    driver = threading.Thread(target=run_producers, daemon=True)
    driver.start()
    runs = 0
    deadline = time.monotonic() + 40
    while ledger.done < total and time.monotonic() < deadline:
        if stopper == "loop_thread":
            guard = loop.call_soon(loop.stop)  # one iteration per run
        else:
            # Stopped by the producers; the timer only ends a run that no
            # producer stops (once they are done).
            guard = loop.call_later(0.05, loop.stop)
        loop.run_forever()
        guard.cancel()
        runs += 1
    driver.join(20)
    assert finished == [True]
    ledger.assert_all_once_in_order(N_THREADS, PER_THREAD)
    assert runs > 1


@pytest.mark.parametrize("closer", ["main_thread", "other_thread"])
def test_racing_close(flavor, closer):
    # Producers call call_soon_threadsafe() as fast as they can while the
    # loop runs a little and is then closed.  Each call must return a
    # handle or raise RuntimeError('Event loop is closed'): nothing else,
    # and once a thread saw the error every later call of it sees it too.
    # Accepted callbacks run at most once, in per-thread order; those still
    # queued when the loop closes are dropped (asyncio's close() does so).
    n_threads = 4
    rounds = 20
    for rnd in range(rounds):
        loop = flavor.new_event_loop()
        ran = collections.defaultdict(list)
        results = collections.defaultdict(list)  # tid -> "ok" / "closed"
        unexpected = []
        go = threading.Event()

        def producer(tid, loop=loop, ran=ran, results=results, unexpected=unexpected, go=go):
            go.wait(10)
            seq = n_closed = 0
            give_up = time.monotonic() + 20
            while True:
                try:
                    loop.call_soon_threadsafe(ran[tid].append, seq)
                except RuntimeError as exc:
                    if str(exc) != CLOSED:
                        unexpected.append(repr(exc))
                    results[tid].append("closed")
                    n_closed += 1
                    if n_closed == 20:
                        return
                except BaseException as exc:  # a panic is a BaseException
                    unexpected.append(repr(exc))
                    return
                else:
                    results[tid].append("ok")
                seq += 1
                if time.monotonic() > give_up:
                    unexpected.append("loop never closed")
                    return

        threads = start_threads(producer, n_threads)
        go.set()
        # Run the loop while the producers hammer it, until each of them got
        # some calls in, then a few more iterations, then close.
        deadline = time.monotonic() + 10
        while (min(len(results[tid]) for tid in range(n_threads)) < 100
               and time.monotonic() < deadline):
            loop.call_soon(loop.stop)
            loop.run_forever()
        for _ in range(rnd % 3):
            loop.call_soon(loop.stop)
            loop.run_forever()
        if closer == "main_thread":
            loop.close()
        else:
            t = threading.Thread(target=loop.close, daemon=True)
            t.start()
            t.join(10)
            assert not t.is_alive()
        join_all(threads)
        assert loop.is_closed()
        assert unexpected == []
        for tid in range(n_threads):
            res = results[tid]
            first_closed = res.index("closed")
            assert set(res[first_closed:]) == {"closed"}, "a call succeeded after the close"
            n_ok = first_closed
            assert n_ok >= 100
            # What ran is a prefix of what was accepted, each call once.
            assert ran[tid] == list(range(len(ran[tid])))
            assert len(ran[tid]) <= n_ok


def test_handles_cancelled_from_other_threads_while_running(loop):
    # Producers schedule callbacks; other threads cancel every other handle
    # a little later, racing the loop thread that runs them.  cancel() never
    # raises, a cancelled callback runs at most once (if it ran before its
    # cancel()), every other callback runs exactly once, in per-thread order.
    n_producers, per_thread = 4, 2000
    counts = collections.Counter()
    order = collections.defaultdict(list)
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    to_cancel = collections.deque()
    producers_left = [n_producers]
    lock = threading.Lock()
    kept_total = n_producers * per_thread // 2
    kept_seen = [0]

    def cb(tid, seq):
        counts[(tid, seq)] += 1
        order[tid].append(seq)
        if seq % 2 == 0:
            kept_seen[0] += 1
            if kept_seen[0] == kept_total:
                loop.stop()

    def producer(tid):
        for seq in range(per_thread):
            h = loop.call_soon_threadsafe(cb, tid, seq)
            if seq % 2:
                to_cancel.append(h)
            if seq % 50 == 0:
                time.sleep(0)  # let the loop and the cancellers in
        with lock:
            producers_left[0] -= 1

    def canceller(_):
        while True:
            # Lag behind, so that the loop thread runs some of the handles
            # before they are cancelled and races others.
            time.sleep(0.0002)
            with lock:
                finished = producers_left[0] == 0
            while True:
                try:
                    h = to_cancel.popleft()
                except IndexError:
                    break
                try:
                    h.cancel()
                except BaseException as exc:  # a panic is a BaseException
                    errors.append(exc)
            if finished and not to_cancel:
                return

    threads = start_threads(producer, n_producers) + start_threads(canceller, 2)
    guard = loop.call_later(30, loop.stop)
    loop.run_forever()
    guard.cancel()
    join_all(threads)
    # Flush what the cancellers did not get to in time, then check.
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert errors == []
    for tid in range(n_producers):
        for seq in range(per_thread):
            assert counts[(tid, seq)] == (1 if seq % 2 == 0 else counts[(tid, seq)])
            assert counts[(tid, seq)] in (0, 1)
        assert order[tid] == sorted(order[tid])
        assert [s for s in order[tid] if s % 2 == 0] == list(range(0, per_thread, 2))


# ---------------------------------------------------------------------------
# run_in_executor


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_run_in_executor_hammer_with_random_cancels(loop, seed):
    rng = random.Random(seed)
    n_jobs = 300
    executed = collections.Counter()
    lock = threading.Lock()
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    def work(i, pause):
        with lock:
            executed[i] += 1
        if pause:
            time.sleep(pause)
        return i * i

    async def one(i, cancel_when):
        fut = loop.run_in_executor(None, work, i, rng.choice([0, 0, 0.0005, 0.002]))
        if cancel_when == "now":
            fut.cancel()
        elif cancel_when == "soon":
            loop.call_later(rng.random() * 0.003, fut.cancel)
        try:
            return i, "result", await fut
        except asyncio.CancelledError:
            return i, "cancelled", None

    async def main():
        plan = [rng.choice(["now", "soon", None, None]) for _ in range(n_jobs)]
        coros = []
        for i, when in enumerate(plan):
            coros.append(one(i, when))
        out = await asyncio.gather(*coros)
        await loop.shutdown_default_executor()
        return plan, out

    plan, out = loop.run_until_complete(asyncio.wait_for(main(), 40))
    assert errors == []
    assert [o[0] for o in out] == list(range(n_jobs))
    for i, kind, value in out:
        if kind == "result":
            assert value == i * i
            assert executed[i] == 1
        else:
            assert plan[i] in ("now", "soon")
            assert executed[i] in (0, 1)  # cancelled before or after it started
        if plan[i] is None:
            assert kind == "result"
        if plan[i] == "now":
            assert kind == "cancelled"
    assert set(executed.values()) <= {1}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_run_in_executor_racing_shutdown_default_executor(loop, seed):
    # Submitters keep calling run_in_executor() while a shutdown of the
    # default executor is awaited: each call either gives its job's result
    # or raises RuntimeError('Executor shutdown has been called') at once,
    # and once one call raised, every later one raises.
    rng = random.Random(seed)
    executed = collections.Counter()
    lock = threading.Lock()
    timeline = []  # (submission order, outcome) as seen on the loop thread

    def work(i):
        with lock:
            executed[i] += 1
        time.sleep(rng.choice([0, 0.0002, 0.001]))
        return -i

    async def submitter(base):
        futs = []
        for k in range(100):
            i = base * 1000 + k
            try:
                fut = loop.run_in_executor(None, work, i)
            except RuntimeError as exc:
                assert str(exc) == SHUTDOWN
                timeline.append((i, "refused"))
            else:
                timeline.append((i, "accepted"))
                futs.append((i, fut))
            if rng.random() < 0.3:
                await asyncio.sleep(0)
        return [(i, await fut) for i, fut in futs]

    async def shutdown_later():
        for _ in range(rng.randint(0, 20)):
            await asyncio.sleep(0)
        await loop.shutdown_default_executor()
        return "shut"

    async def main():
        return await asyncio.gather(shutdown_later(), *(submitter(b) for b in range(6)))

    shut, *results = loop.run_until_complete(asyncio.wait_for(main(), 40))
    assert shut == "shut"
    accepted = [i for i, kind in timeline if kind == "accepted"]
    kinds = [kind for _, kind in timeline]
    if "refused" in kinds:
        first = kinds.index("refused")
        assert set(kinds[first:]) == {"refused"}
    got = dict(pair for res in results for pair in res)
    assert sorted(got) == sorted(accepted)
    assert all(got[i] == -i for i in got)
    assert sorted(executed) == sorted(accepted)
    assert set(executed.values()) <= {1}
    # After the shutdown nothing can be submitted any more.
    with pytest.raises(RuntimeError, match=SHUTDOWN):
        loop.run_in_executor(None, work, -1)


def test_executor_jobs_finishing_while_loop_closes(flavor, caplog):
    # Jobs complete in worker threads while the loop is being closed: their
    # results go nowhere, nothing crashes, the workers all finish, and the
    # only error anyone may log is RuntimeError('Event loop is closed').
    caplog.set_level(logging.ERROR)
    for rnd in range(10):
        loop = flavor.new_event_loop()
        executor = concurrent.futures.ThreadPoolExecutor(max_workers=4)
        gate = threading.Event()
        finished = []
        lock = threading.Lock()

        def work(i, gate=gate, finished=finished, lock=lock):
            gate.wait(5)
            time.sleep(0.0001 * (i % 7))
            with lock:
                finished.append(i)
            return i

        async def submit(loop=loop, executor=executor):
            return [loop.run_in_executor(executor, work, i) for i in range(40)]

        futs = loop.run_until_complete(submit())
        gate.set()
        for _ in range(rnd % 3):
            loop.call_soon(loop.stop)
            loop.run_forever()
        loop.close()
        executor.shutdown(wait=True)
        assert sorted(finished) == list(range(40))
        assert all(f.get_loop() is loop for f in futs)
    bad = [r for r in caplog.records
           if r.exc_info and not (isinstance(r.exc_info[1], RuntimeError)
                                  and str(r.exc_info[1]) == CLOSED)]
    assert bad == []


# ---------------------------------------------------------------------------
# asyncio.run_coroutine_threadsafe


def test_run_coroutine_threadsafe_from_many_threads(loop):
    n_threads, per_thread = 8, 150
    started = collections.defaultdict(list)
    outcomes = collections.defaultdict(list)
    unexpected = []

    async def job(tid, seq):
        started[tid].append(seq)
        await asyncio.sleep(0)
        if seq % 10 == 3:
            raise ValueError(f"{tid}-{seq}")
        return tid, seq

    def producer(tid):
        rng = random.Random(tid)
        futs = []
        for seq in range(per_thread):
            fut = asyncio.run_coroutine_threadsafe(job(tid, seq), loop)
            cancelled = seq % 10 == 7 and rng.random() < 0.8 and fut.cancel()
            futs.append((seq, fut, cancelled))
        for seq, fut, cancelled in futs:
            try:
                value = fut.result(timeout=20)
            except concurrent.futures.CancelledError:
                outcomes[tid].append((seq, "cancelled"))
            except ValueError as exc:
                outcomes[tid].append((seq, "error", str(exc)))
            except BaseException as exc:
                unexpected.append((tid, seq, repr(exc)))
            else:
                outcomes[tid].append((seq, "ok", value))
            if cancelled and outcomes[tid] and outcomes[tid][-1][1] != "cancelled":
                unexpected.append((tid, seq, "cancel() returned True but the job completed"))

    def run_producers():
        try:
            join_all(start_threads(producer, n_threads), timeout=40)
        finally:
            loop.call_soon_threadsafe(loop.stop)

    driver = threading.Thread(target=run_producers, daemon=True)
    loop.call_soon(driver.start)
    guard = loop.call_later(45, loop.stop)
    loop.run_forever()
    guard.cancel()
    driver.join(10)
    assert not driver.is_alive()
    # Let the tasks of cancelled futures finish cancelling (a future
    # cancelled from its thread may not even have its task yet).
    for _ in range(200):
        if not asyncio.all_tasks(loop):
            break
        loop.run_until_complete(asyncio.sleep(0))
    assert unexpected == []
    for tid in range(n_threads):
        got = outcomes[tid]
        assert [o[0] for o in got] == list(range(per_thread))
        for o in got:
            seq = o[0]
            if o[1] == "ok":
                assert o[2] == (tid, seq)
                assert seq % 10 not in (3,)
            elif o[1] == "error":
                assert seq % 10 == 3
                assert o[2] == f"{tid}-{seq}"
            else:
                assert seq % 10 == 7
        # Tasks start in the order each thread submitted them (those
        # cancelled before their first step never start).
        assert started[tid] == sorted(started[tid])
        assert set(range(per_thread)) - set(started[tid]) <= {
            s for s in range(per_thread) if s % 10 == 7}
    assert asyncio.all_tasks(loop) == set()
