"""call_later / call_at: deadlines, ordering, cancellation, odd delays."""

import asyncio
import contextvars
import decimal
import fractions
import gc
import math
import random
import sys
import time
import weakref

import pytest

from _util import run_briefly

# asyncio runs a timer whose deadline is within one clock tick of "now", so a
# callback may observe loop.time() up to one resolution step before when().
RES = time.get_clock_info("monotonic").resolution
var = contextvars.ContextVar("timer_var", default="unset")


def run_for(loop, seconds):
    loop.call_later(seconds, loop.stop)
    loop.run_forever()


# ---------------------------------------------------------------- handles


def test_call_later_returns_timer_handle(loop, flavor):
    h = loop.call_later(10, print)
    assert isinstance(h, asyncio.TimerHandle)
    assert isinstance(h, asyncio.Handle)
    assert type(h) is flavor.TimerHandle
    h.cancel()


def test_call_later_zero_returns_timer_handle(loop, flavor):
    h = loop.call_later(0, print)
    assert isinstance(h, asyncio.TimerHandle)
    assert type(h) is flavor.TimerHandle
    h.cancel()


def test_call_at_returns_timer_handle(loop, flavor):
    h = loop.call_at(loop.time() + 10, print)
    assert isinstance(h, asyncio.TimerHandle)
    assert type(h) is flavor.TimerHandle
    h.cancel()


def test_call_later_when_is_now_plus_delay(loop):
    before = loop.time()
    h = loop.call_later(1.5, print)
    after = loop.time()
    assert isinstance(h.when(), float)
    assert before + 1.5 <= h.when() <= after + 1.5
    h.cancel()


def test_call_at_when_is_exact(loop):
    when = loop.time() + 12.345678
    h = loop.call_at(when, print)
    assert h.when() == when
    h.cancel()


def test_call_at_accepts_int(loop):
    when = int(loop.time()) + 100
    h = loop.call_at(when, print)
    assert h.when() == when
    h.cancel()


# ---------------------------------------------------------------- firing


def test_call_later_fires_with_args(loop):
    out = []
    loop.call_later(0.01, lambda *a: out.append(a), 1, "x")
    run_for(loop, 0.05)
    assert out == [(1, "x")]


def test_timers_fire_in_deadline_order(loop):
    out = []
    loop.call_later(0.03, out.append, 3)
    loop.call_later(0.01, out.append, 1)
    loop.call_later(0.02, out.append, 2)
    run_for(loop, 0.06)
    assert out == [1, 2, 3]


def test_random_distinct_deadlines_fire_sorted(loop):
    rnd = random.Random(1234)
    base = loop.time() + 0.01
    whens = sorted({base + rnd.uniform(0, 0.05) for _ in range(300)})
    shuffled = whens[:]
    rnd.shuffle(shuffled)
    out = []
    for w in shuffled:
        loop.call_at(w, out.append, w)
    loop.call_at(whens[-1] + 0.01, loop.stop)
    loop.run_forever()
    assert out == whens


def test_submillisecond_deadlines_keep_their_order(loop):
    # Deadlines 100 us apart, scheduled in reverse: must fire by deadline.
    base = loop.time() + 0.02
    out = []
    for i in reversed(range(10)):
        loop.call_at(base + i * 0.0001, out.append, i)
    loop.call_at(base + 0.01, loop.stop)
    loop.run_forever()
    assert out == list(range(10))


def test_equal_deadlines_all_fire_exactly_once(loop):
    # Note: asyncio's heap does not keep FIFO order among many equal
    # deadlines, so only the set (and multiplicity) is asserted here.
    when = loop.time() + 0.01
    out = []
    for i in range(500):
        loop.call_at(when, out.append, i)
    loop.call_at(when + 0.01, loop.stop)
    loop.run_forever()
    assert sorted(out) == list(range(500))


def test_timer_never_fires_before_its_deadline(loop):
    rnd = random.Random(99)
    records = []

    def cb(holder):
        records.append((loop.time(), time.monotonic(), holder[0].when()))

    for _ in range(60):
        holder = []
        holder.append(loop.call_later(rnd.uniform(0, 0.04), cb, holder))
    run_for(loop, 0.06)
    assert len(records) == 60
    for now, mono, when in records:
        assert now >= when - RES
        assert mono >= when - RES


def test_call_at_deadline_not_early(loop):
    seen = []
    when = loop.time() + 0.02
    loop.call_at(when, lambda: seen.append(loop.time()))
    run_for(loop, 0.05)
    assert len(seen) == 1
    assert seen[0] >= when - RES


def test_sleep_not_shorter_than_requested(loop):
    async def main():
        start = loop.time()
        await asyncio.sleep(0.03)
        return loop.time() - start

    assert loop.run_until_complete(main()) >= 0.03 - RES


def test_expired_timers_run_after_ready_callbacks(loop):
    # Ready callbacks first (FIFO), then expired timers in deadline order.
    out = []
    loop.call_soon(out.append, "soon1")
    loop.call_later(-1, out.append, "later-1")
    loop.call_soon(out.append, "soon2")
    loop.call_at(loop.time() - 5, out.append, "at-5")
    loop.call_later(0, out.append, "later0")
    run_briefly(loop)
    assert out == ["soon1", "soon2", "at-5", "later-1", "later0"]


@pytest.mark.parametrize("delay", [-1, -0.001, -1e9])
def test_negative_delay_runs(loop, delay):
    out = []
    h = loop.call_later(delay, out.append, delay)
    assert h.when() < loop.time()
    run_briefly(loop)
    assert out == [delay]


def test_call_at_in_the_past_runs(loop):
    out = []
    loop.call_at(0, out.append, "epoch")
    run_briefly(loop)
    assert out == ["epoch"]


def test_timer_scheduled_in_timer_callback(loop):
    out = []

    def first():
        out.append("first")
        loop.call_later(0, out.append, "later0")
        loop.call_soon(out.append, "soon")

    loop.call_later(0.005, first)
    run_for(loop, 0.05)
    assert out == ["first", "soon", "later0"]


def test_periodic_rescheduling(loop):
    ticks = []

    def tick():
        ticks.append(loop.time())
        if len(ticks) < 5:
            loop.call_later(0.002, tick)
        else:
            loop.stop()

    loop.call_later(0.002, tick)
    loop.run_forever()
    assert len(ticks) == 5
    assert ticks == sorted(ticks)


def test_timer_expired_while_loop_idle_fires_on_next_run(loop):
    out = []
    loop.call_later(0.01, out.append, "t")
    time.sleep(0.03)
    assert out == []
    run_for(loop, 0.001)
    assert out == ["t"]


def test_timer_context_default_copy(loop):
    seen = []
    token = var.set("scheduled")
    try:
        loop.call_later(0.001, lambda: seen.append(var.get()))
        loop.call_at(loop.time() + 0.001, lambda: seen.append(var.get()))
    finally:
        var.reset(token)
    run_for(loop, 0.02)
    assert seen == ["scheduled", "scheduled"]


@pytest.mark.parametrize("method", ["call_later", "call_at"])
def test_timer_explicit_context(loop, method):
    ctx = contextvars.Context()
    ctx.run(var.set, "ctx")
    seen = []

    def cb():
        seen.append(var.get())
        var.set("changed")

    if method == "call_later":
        loop.call_later(0.001, cb, context=ctx)
    else:
        loop.call_at(loop.time() + 0.001, cb, context=ctx)
    run_for(loop, 0.02)
    assert seen == ["ctx"]
    assert ctx[var] == "changed"
    assert var.get() == "unset"


# ------------------------------------------------------------ cancellation


def test_cancelled_timer_does_not_fire(loop):
    out = []
    h = loop.call_later(0.005, out.append, "cancelled")
    loop.call_later(0.006, out.append, "kept")
    h.cancel()
    assert h.cancelled() is True
    run_for(loop, 0.03)
    assert out == ["kept"]


def test_cancel_timer_from_earlier_timer_same_tick(loop):
    out = []
    handles = {}
    when = loop.time() + 0.005

    def first():
        out.append("first")
        handles["second"].cancel()

    loop.call_at(when, first)
    handles["second"] = loop.call_at(when + 1e-6, out.append, "second")
    loop.call_at(when + 2e-6, out.append, "third")
    time.sleep(0.01)  # all three are due when the loop looks at them
    run_briefly(loop)
    assert out == ["first", "third"]


def test_many_cancelled_timers(loop):
    handles = [loop.call_later(100 + i * 1e-3, print) for i in range(5000)]
    for h in handles:
        h.cancel()
    out = []
    loop.call_later(0.001, out.append, "live")
    run_for(loop, 0.02)
    assert out == ["live"]


def test_cancel_half_of_many_timers(loop):
    out = []
    when = loop.time() + 0.005
    handles = [loop.call_at(when + i * 1e-6, out.append, i)
               for i in range(1000)]
    for h in handles[::2]:
        h.cancel()
    run_for(loop, 0.03)
    assert out == list(range(1, 1000, 2))


# ------------------------------------------------------------ odd deadlines


@pytest.mark.parametrize("delay", [1e9, 1e18, math.inf])
def test_huge_delay_does_not_fire_and_cancels(loop, delay):
    out = []
    h = loop.call_later(delay, out.append, "huge")
    assert h.when() >= loop.time() + min(delay, 1e9) - 1
    loop.call_later(0.01, out.append, "small")
    run_for(loop, 0.03)
    assert out == ["small"]
    h.cancel()
    assert h.cancelled()
    run_briefly(loop)
    assert out == ["small"]


def test_huge_timer_does_not_block_stop(loop):
    loop.call_later(1e9, print)
    loop.call_later(0.01, loop.stop)
    start = time.monotonic()
    loop.run_forever()
    assert time.monotonic() - start < 10


def test_nan_delay_is_accepted(loop, flavor):
    # asyncio does not validate NaN: the handle is created with when=nan.
    h = loop.call_later(math.nan, print)
    assert type(h) is flavor.TimerHandle
    assert math.isnan(h.when())
    h.cancel()
    assert h.cancelled()


@pytest.mark.parametrize("delay", ["1", b"1", object(), [1]])
def test_call_later_non_number_delay(loop, delay):
    with pytest.raises(TypeError):
        loop.call_later(delay, print)


def test_call_later_none_delay(loop):
    with pytest.raises(TypeError):
        loop.call_later(None, print)


@pytest.mark.skipif(sys.version_info < (3, 11),
                    reason="asyncio 3.10 asserts instead of raising TypeError")
def test_call_at_none_when(loop):
    with pytest.raises(TypeError, match="when cannot be None"):
        loop.call_at(None, print)


@pytest.mark.skipif(sys.version_info < (3, 11),
                    reason="asyncio 3.10 message differs")
def test_call_later_none_delay_message(loop):
    with pytest.raises(TypeError, match="delay must not be None"):
        loop.call_later(None, print)


# ------------------------------------------------------- argument checking


async def _coro_func():
    pass


@pytest.mark.parametrize("method", ["call_later", "call_at"])
@pytest.mark.parametrize("bad", ["int", "coroutine_function",
                                 "coroutine_object"])
def test_timer_rejects_bad_callback_in_debug(loop, method, bad):
    loop.set_debug(True)
    if bad == "coroutine_object":
        cb = _coro_func()
    else:
        cb = {"int": 1, "coroutine_function": _coro_func}[bad]
    first = 0 if method == "call_later" else loop.time()
    try:
        with pytest.raises(TypeError) as info:
            getattr(loop, method)(first, cb)
    finally:
        if bad == "coroutine_object":
            cb.close()
    # asyncio's call_later delegates to call_at, so its message names either.
    if bad == "int":
        assert str(info.value) in (
            "a callable object was expected by call_later(), got 1",
            "a callable object was expected by call_at(), got 1")
    else:
        assert str(info.value) in (
            "coroutines cannot be used with call_later()",
            "coroutines cannot be used with call_at()")


class _FloatSub(float):
    pass


@pytest.mark.parametrize("delay", [fractions.Fraction(1, 200), _FloatSub(0.005),
                                   False], ids=["fraction", "float-subclass",
                                                "bool"])
def test_call_later_number_like_delays(loop, delay):
    out = []
    h = loop.call_later(delay, out.append, "ran")
    assert isinstance(h.when(), float)
    run_for(loop, 0.02)
    assert out == ["ran"]


def test_call_later_decimal_rejected(loop):
    # float + Decimal is a TypeError, and asyncio computes time() + delay.
    with pytest.raises(TypeError):
        loop.call_later(decimal.Decimal("0.01"), print)


class _TimerOwner:
    """Holds its own timer handle: owner -> handle -> bound method -> owner."""

    def __init__(self):
        self.calls = 0
        self.handle = None

    def tick(self):
        self.calls += 1


def test_cycle_through_fired_timer_is_collected(loop):
    owner = _TimerOwner()
    owner.handle = loop.call_later(0, owner.tick)
    ref = weakref.ref(owner)
    run_briefly(loop)
    assert owner.calls == 1
    del owner
    gc.collect()
    assert ref() is None


def test_cycle_through_timer_pending_at_close_is_collected(loop):
    owner = _TimerOwner()
    owner.handle = loop.call_later(3600, owner.tick)
    ref = weakref.ref(owner)
    run_briefly(loop)
    loop.close()
    del owner
    gc.collect()
    assert ref() is None


def _context_of(handle):
    # Handle.get_context() is new in 3.12; _context is the slot behind it.
    return handle._context


def _schedule_in_context_holding(loop, owner, delay):
    """call_later from a context where `var` refers to `owner`, so the
    context copied for the timer is part of a cycle through `owner`."""

    def schedule():
        var.set(owner)
        return loop.call_later(delay, owner.tick)

    return contextvars.Context().run(schedule)


def test_cycle_through_cancelled_timer_context_is_collected(loop):
    # owner -> handle -> copied context -> var value -> owner. cancel()
    # clears the callback but not the context, so the cycle survives it.
    owner = _TimerOwner()
    owner.handle = _schedule_in_context_holding(loop, owner, 3600)
    assert _context_of(owner.handle)[var] is owner
    ref = weakref.ref(owner)
    owner.handle.cancel()
    run_briefly(loop)  # the cancelled head timer leaves the heap
    assert owner.calls == 0
    del owner
    gc.collect()
    assert ref() is None


def test_cycle_through_fired_timer_context_is_collected(loop):
    # Only the context outlives the handle: owner -> context -> owner.
    owner = _TimerOwner()
    h = _schedule_in_context_holding(loop, owner, 0)
    owner.ctx = _context_of(h)
    del h
    ref = weakref.ref(owner)
    run_briefly(loop)
    assert owner.calls == 1
    assert owner.ctx[var] is owner
    del owner
    gc.collect()
    assert ref() is None


def test_cycles_through_many_timer_contexts_are_collected(loop):
    owners = [_TimerOwner() for _ in range(300)]
    for i, o in enumerate(owners):
        h = _schedule_in_context_holding(loop, o, 0 if i % 2 else 3600)
        o.ctx = _context_of(h)
        if i % 3 == 0:
            o.handle = h
        if i % 6 == 0:
            h.cancel()
    refs = [weakref.ref(o) for o in owners]
    run_briefly(loop, 3)
    assert sum(o.calls for o in owners) == 150
    del owners, o, h
    loop.close()
    gc.collect()
    assert [r for r in refs if r() is not None] == []


def test_loop_dropped_unclosed_with_pending_timers(flavor):
    # A subclass whose __del__ skips close(): the loop's pending timers (and
    # the contexts copied for them) are released by dropping the loop alone.
    class Unclosed(flavor.Loop):
        def __del__(self):
            pass

    loop = Unclosed()
    owner = _TimerOwner()
    kept = _schedule_in_context_holding(loop, owner, 3600)
    ctx = _context_of(_schedule_in_context_holding(loop, owner, 3600))
    for i in range(50):
        _schedule_in_context_holding(loop, _TimerOwner(), i)
    loop.call_soon(owner.tick)
    del loop
    gc.collect()
    assert _context_of(kept)[var] is owner
    assert ctx[var] is owner
    kept.cancel()
    ref = weakref.ref(owner)
    del owner, kept, ctx
    gc.collect()
    assert ref() is None


def test_replacing_a_pending_timers_context(loop):
    seen = []
    h = loop.call_later(0, lambda: seen.append(var.get()))
    new = contextvars.Context()
    new.run(var.set, "replaced")
    h._context = new
    gc.collect()
    run_briefly(loop)
    assert seen == ["replaced"]
    assert _context_of(h) is new


def test_deleting_a_pending_timers_context_then_cancelling(loop):
    h = loop.call_later(3600, print)
    del h._context
    gc.collect()
    with pytest.raises(AttributeError):
        _context_of(h)
    h.cancel()
    run_briefly(loop)
    assert h.cancelled()
