"""Handle and TimerHandle objects: repr, cancel, comparisons, context."""

import asyncio
import contextvars
import sys
import weakref

import pytest

from _util import run_briefly


def some_callback(*args):
    pass


def test_handle_types(loop, flavor):
    h = loop.call_soon(some_callback)
    th = loop.call_later(10, some_callback)
    assert issubclass(flavor.Handle, asyncio.Handle)
    assert issubclass(flavor.TimerHandle, asyncio.TimerHandle)
    assert issubclass(flavor.TimerHandle, asyncio.Handle)
    assert type(h) is flavor.Handle
    assert type(th) is flavor.TimerHandle
    assert type(h).__name__ == "Handle"
    assert type(th).__name__ == "TimerHandle"
    h.cancel()
    th.cancel()


def test_handle_repr_contains_callback(loop):
    loop.set_debug(False)
    h = loop.call_soon(some_callback, 1, "two")
    r = repr(h)
    # arguments are shown up to 3.12 and only in debug mode from 3.13 on
    assert r.startswith("<Handle some_callback(")
    assert r.endswith(">")
    assert __file__ in r
    h.cancel()


def test_timer_handle_repr(loop):
    loop.set_debug(False)
    th = loop.call_at(123456.5, some_callback)
    r = repr(th)
    assert r.startswith("<TimerHandle when=123456.5 some_callback() at ")
    th.cancel()


def test_handle_repr_method_and_lambda(loop):
    loop.set_debug(False)

    class K:
        def meth(self):
            pass

    h1 = loop.call_soon(K().meth)
    h2 = loop.call_soon(lambda: None)
    assert "K.meth()" in repr(h1)
    assert "<lambda>()" in repr(h2)
    h1.cancel()
    h2.cancel()


def test_handle_repr_shows_args_in_debug(loop):
    loop.set_debug(True)
    h = loop.call_soon(some_callback, 1, "two")
    assert repr(h).startswith("<Handle some_callback(1, 'two') at ")
    h.cancel()


def test_cancelled_handle_repr(loop):
    loop.set_debug(False)
    h = loop.call_soon(some_callback)
    h.cancel()
    assert repr(h) == "<Handle cancelled>"


def test_cancelled_timer_handle_repr(loop):
    loop.set_debug(False)
    th = loop.call_at(4242.0, some_callback)
    th.cancel()
    assert repr(th) == "<TimerHandle cancelled when=4242.0>"


def test_cancel_is_idempotent(loop):
    out = []
    h = loop.call_soon(out.append, 1)
    h.cancel()
    h.cancel()
    assert h.cancelled() is True
    th = loop.call_later(0, out.append, 2)
    th.cancel()
    th.cancel()
    assert th.cancelled() is True
    run_briefly(loop)
    assert out == []


def test_cancelled_flag_lifecycle(loop):
    h = loop.call_soon(some_callback)
    assert h.cancelled() is False
    run_briefly(loop)
    assert h.cancelled() is False  # running does not mark it cancelled
    h.cancel()
    assert h.cancelled() is True


def test_cancel_releases_callback_and_args(loop):
    # asyncio drops the references on cancel (not in debug mode).
    loop.set_debug(False)

    class Big:
        pass

    big = Big()
    ref = weakref.ref(big)
    h = loop.call_soon(some_callback, big)
    del big
    assert ref() is not None
    h.cancel()
    assert ref() is None


def test_timer_handle_when(loop):
    when = loop.time() + 50
    th = loop.call_at(when, some_callback)
    assert th.when() == when
    th.cancel()
    assert th.when() == when  # still available after cancel


def test_timer_handle_ordering(loop):
    now = loop.time()
    a = loop.call_at(now + 10, some_callback)
    b = loop.call_at(now + 20, some_callback)
    assert a < b
    assert a <= b
    assert b > a
    assert b >= a
    assert not (a > b)
    assert a != b
    assert sorted([b, a]) == [a, b]
    a.cancel()
    b.cancel()


def test_timer_handle_equality_and_hash(loop):
    when = loop.time() + 10
    a = loop.call_at(when, some_callback, 1)
    b = loop.call_at(when, some_callback, 1)
    c = loop.call_at(when, some_callback, 2)
    assert a == b  # same deadline, callback and args
    assert a != c
    assert hash(a) == hash(b) == hash(when)
    assert a <= b and a >= b
    a.cancel()
    assert a != b  # cancelled state participates in equality
    b.cancel()
    c.cancel()


def test_timer_handle_not_equal_to_other_types(loop):
    th = loop.call_later(10, some_callback)
    assert (th == 1) is False
    assert (th != "x") is True
    with pytest.raises(TypeError):
        th < 1  # noqa: B015
    th.cancel()


def test_plain_handle_equality_is_identity(loop):
    h1 = loop.call_soon(some_callback)
    h2 = loop.call_soon(some_callback)
    assert h1 == h1
    assert h1 != h2
    h1.cancel()
    h2.cancel()


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="Handle.get_context() is new in Python 3.12")
@pytest.mark.parametrize("method", ["call_soon", "call_later", "call_at",
                                    "call_soon_threadsafe"])
def test_get_context(loop, method):
    ctx = contextvars.Context()
    args = {"call_soon": (), "call_soon_threadsafe": (),
            "call_later": (10,), "call_at": (loop.time() + 10,)}[method]
    h = getattr(loop, method)(*args, some_callback, context=ctx)
    assert h.get_context() is ctx
    h.cancel()
    assert h.get_context() is ctx  # kept after cancel


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="Handle.get_context() is new in Python 3.12")
def test_get_context_default_is_fresh_copy(loop):
    var = contextvars.ContextVar("handle_var")
    token = var.set("value")
    try:
        h1 = loop.call_soon(some_callback)
        h2 = loop.call_soon(some_callback)
    finally:
        var.reset(token)
    c1, c2 = h1.get_context(), h2.get_context()
    assert isinstance(c1, contextvars.Context)
    assert c1 is not c2
    assert c1[var] == "value"
    h1.cancel()
    h2.cancel()


def test_handle_is_not_timer(loop):
    h = loop.call_soon(some_callback)
    assert not hasattr(h, "when")
    h.cancel()
