"""call_soon: ordering, arguments, contexts, cancellation, argument checks."""

import asyncio
import contextvars
import functools
import gc
import sys

import pytest

from _util import run_briefly

var = contextvars.ContextVar("var", default="unset")


def test_call_soon_returns_handle(loop, flavor):
    h = loop.call_soon(lambda: None)
    assert isinstance(h, asyncio.Handle)
    assert not isinstance(h, asyncio.TimerHandle)
    assert type(h) is flavor.Handle
    assert h.cancelled() is False


def test_call_soon_does_not_run_before_the_loop(loop):
    called = []
    loop.call_soon(called.append, 1)
    assert called == []
    run_briefly(loop)
    assert called == [1]


def test_fifo_order(loop):
    out = []
    for i in range(1000):
        loop.call_soon(out.append, i)
    run_briefly(loop)
    assert out == list(range(1000))


def test_positional_args_passed(loop):
    out = []
    loop.call_soon(lambda *a: out.append(a), 1, "two", None, (3,))
    run_briefly(loop)
    assert out == [(1, "two", None, (3,))]


def test_many_args(loop):
    out = []
    args = tuple(range(200))
    loop.call_soon(lambda *a: out.append(a), *args)
    run_briefly(loop)
    assert out == [args]


def test_unknown_keyword_rejected(loop):
    with pytest.raises(TypeError):
        loop.call_soon(print, x=1)


@pytest.mark.parametrize("kind", ["function", "lambda", "partial", "bound",
                                  "builtin", "callable_obj", "class"])
def test_callable_kinds(loop, kind):
    out = []

    def func(x):
        out.append(x)

    class Obj:
        def method(self, x):
            out.append(x)

        def __call__(self, x):
            out.append(x)

    class Klass:
        def __init__(self, x):
            out.append(x)

    cb = {
        "function": func,
        "lambda": lambda x: out.append(x),
        "partial": functools.partial(func),
        "bound": Obj().method,
        "builtin": out.append,
        "callable_obj": Obj(),
        "class": Klass,
    }[kind]
    loop.call_soon(cb, kind)
    run_briefly(loop)
    assert out == [kind]


def test_callbacks_added_during_batch_run_next_iteration(loop):
    out = []

    def first():
        out.append("first")
        loop.call_soon(out.append, "added")

    loop.call_soon(first)
    loop.call_soon(out.append, "second")
    loop.call_soon(out.append, "third")
    run_briefly(loop, 2)
    assert out == ["first", "second", "third", "added"]


def test_long_chain_of_rescheduling_callbacks(loop):
    count = [0]

    def step():
        count[0] += 1
        if count[0] < 20000:
            loop.call_soon(step)
        else:
            loop.stop()

    loop.call_soon(step)
    loop.run_forever()
    assert count[0] == 20000


def test_cancelled_handle_does_not_run(loop):
    out = []
    h = loop.call_soon(out.append, "cancelled")
    loop.call_soon(out.append, "kept")
    h.cancel()
    run_briefly(loop)
    assert out == ["kept"]


def test_cancel_from_earlier_callback_in_same_batch(loop):
    out = []
    handles = {}

    def canceller():
        out.append("canceller")
        handles["victim"].cancel()

    loop.call_soon(canceller)
    handles["victim"] = loop.call_soon(out.append, "victim")
    loop.call_soon(out.append, "after")
    run_briefly(loop)
    assert out == ["canceller", "after"]


def test_cancel_after_run_is_harmless(loop):
    out = []
    h = loop.call_soon(out.append, 1)
    run_briefly(loop)
    h.cancel()
    assert h.cancelled() is True
    run_briefly(loop)
    assert out == [1]


def test_interleaves_with_tasks_fifo(loop):
    out = []

    async def coro():
        out.append("task")

    loop.call_soon(out.append, "cb1")
    loop.create_task(coro())  # its first step is a call_soon, queued here
    loop.call_soon(out.append, "cb2")
    run_briefly(loop)
    assert out == ["cb1", "task", "cb2"]


# ------------------------------------------------------------------ context


def test_default_context_is_a_copy_taken_at_scheduling(loop):
    seen = []
    token = var.set("at-schedule")
    try:
        loop.call_soon(lambda: seen.append(var.get()))
        var.set("changed-later")
    finally:
        var.reset(token)
    run_briefly(loop)
    assert seen == ["at-schedule"]


def test_callback_changes_do_not_leak_into_caller(loop):
    def cb():
        var.set("inside")

    loop.call_soon(cb)
    run_briefly(loop)
    assert var.get() == "unset"


def test_each_default_handle_gets_its_own_copy(loop):
    seen = []

    def setter():
        var.set("from-setter")

    loop.call_soon(setter)
    loop.call_soon(lambda: seen.append(var.get()))
    run_briefly(loop)
    assert seen == ["unset"]


def test_explicit_context_used_and_mutated(loop):
    ctx = contextvars.Context()
    ctx.run(var.set, "ctx-value")
    seen = []

    def cb():
        seen.append(var.get())
        var.set("mutated")

    loop.call_soon(cb, context=ctx)
    run_briefly(loop)
    assert seen == ["ctx-value"]
    assert ctx[var] == "mutated"
    assert var.get() == "unset"


def test_explicit_context_shared_between_callbacks(loop):
    ctx = contextvars.copy_context()
    seen = []
    loop.call_soon(var.set, "first", context=ctx)
    loop.call_soon(lambda: seen.append(var.get()), context=ctx)
    run_briefly(loop)
    assert seen == ["first"]


def test_explicit_context_none_means_copy(loop):
    seen = []
    token = var.set("caller")
    try:
        h = loop.call_soon(lambda: seen.append(var.get()), context=None)
    finally:
        var.reset(token)
    assert not h.cancelled()
    run_briefly(loop)
    assert seen == ["caller"]


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="Handle.get_context() is new in Python 3.12")
def test_get_context_returns_given_context(loop):
    ctx = contextvars.Context()
    h = loop.call_soon(print, context=ctx)
    assert h.get_context() is ctx
    h.cancel()


# ------------------------------------------------------- argument checking
# asyncio only validates callbacks in debug mode, so these run in debug mode.


async def _coro_func():
    pass


def _bad_callbacks():
    return {
        "int": (1, "a callable object was expected by {}(), got 1"),
        "none": (None, "a callable object was expected by {}(), got None"),
        "coroutine_function": (_coro_func,
                               "coroutines cannot be used with {}()"),
    }


@pytest.mark.parametrize("bad", ["int", "none", "coroutine_function",
                                 "coroutine_object"])
def test_call_soon_rejects_bad_callback_in_debug(loop, bad):
    loop.set_debug(True)
    if bad == "coroutine_object":
        cb = _coro_func()
        msg = "coroutines cannot be used with call_soon()"
    else:
        cb, msg = _bad_callbacks()[bad]
        msg = msg.format("call_soon")
    try:
        with pytest.raises(TypeError) as info:
            loop.call_soon(cb)
        assert str(info.value) == msg
    finally:
        if bad == "coroutine_object":
            cb.close()


def test_rejected_callback_is_not_scheduled(loop):
    loop.set_debug(True)
    with pytest.raises(TypeError):
        loop.call_soon(_coro_func)
    out = []
    loop.call_soon(out.append, "ok")
    run_briefly(loop)
    assert out == ["ok"]


def test_nested_schedule_copies_running_callbacks_context(loop):
    ctx = contextvars.Context()
    ctx.run(var.set, "outer-ctx")
    seen = []

    def outer():
        loop.call_soon(lambda: seen.append(var.get()))

    loop.call_soon(outer, context=ctx)
    run_briefly(loop, 2)
    assert seen == ["outer-ctx"]


class _Payload:
    pass


@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe",
                                    "call_later", "call_at"])
def test_args_released_after_run(loop, method):
    import weakref

    obj = _Payload()
    ref = weakref.ref(obj)
    if method in ("call_soon", "call_soon_threadsafe"):
        getattr(loop, method)(lambda o: None, obj)
    elif method == "call_later":
        loop.call_later(0, lambda o: None, obj)
    else:
        loop.call_at(loop.time(), lambda o: None, obj)
    del obj
    assert ref() is not None
    run_briefly(loop)
    gc.collect()
    assert ref() is None


def test_refcounts_balanced_over_many_callbacks(loop):
    obj = _Payload()
    cb = _noop_cb
    before_obj = sys.getrefcount(obj)
    before_cb = sys.getrefcount(cb)
    for _ in range(1000):
        loop.call_soon(cb, obj)
        loop.call_later(0, cb, obj)
    run_briefly(loop)
    gc.collect()
    assert sys.getrefcount(obj) == before_obj
    assert sys.getrefcount(cb) == before_cb


def test_exception_objects_released_after_handler(loop):
    import weakref

    refs = []
    loop.set_exception_handler(lambda lp, ctx: None)

    class Err(Exception):
        pass

    def boom():
        exc = Err()
        refs.append(weakref.ref(exc))
        raise exc

    loop.call_soon(boom)
    run_briefly(loop)
    gc.collect()
    assert len(refs) == 1 and refs[0]() is None


def _noop_cb(*args):
    pass


# Argument forms of the four scheduling methods, checked as CPython checks
# asyncio's Python signatures: the messages differ only in the qualified name
# before "()" (BaseEventLoop.call_soon() / LoopCore.call_soon()).
_SCHEDULERS = {
    "call_soon": ("callback",),
    "call_soon_threadsafe": ("callback",),
    "call_later": ("delay", "callback"),
    "call_at": ("when", "callback"),
}


def _lead_values(loop, names, cb):
    return [loop.time() if n == "when" else 0 if n == "delay" else cb for n in names]


@pytest.mark.parametrize("meth", sorted(_SCHEDULERS))
def test_scheduling_methods_take_keywords_as_python_would(loop, meth):
    names = _SCHEDULERS[meth]
    out = []
    cb = out.append
    ctx = contextvars.copy_context()
    f = getattr(loop, meth)
    vals = _lead_values(loop, names, cb)
    # positional, all by keyword, mixed, with extra *args and context=
    f(*_lead_values(loop, names, lambda: out.append("pos")))
    f(**dict(zip(names, _lead_values(loop, names, lambda: out.append("kw")))))
    f(*vals, "args")
    f(*vals, "ctx", context=ctx)
    f(*vals, "none-ctx", context=None)
    run_briefly(loop)
    run_briefly(loop)
    assert sorted(map(str, out)) == sorted(["pos", "kw", "args", "ctx", "none-ctx"])


@pytest.mark.parametrize("meth", sorted(_SCHEDULERS))
def test_scheduling_methods_reject_bad_forms_with_cpythons_messages(loop, meth):
    names = _SCHEDULERS[meth]
    f = getattr(loop, meth)
    vals = _lead_values(loop, names, lambda: None)
    missing_all = (f"missing 1 required positional argument: '{names[0]}'" if len(names) == 1
                   else f"missing 2 required positional arguments: '{names[0]}' and '{names[1]}'")
    cases = [
        ((), {}, missing_all),
        ((), {"x": 1}, "got an unexpected keyword argument 'x'"),
        ((*vals, 1), {"callback": print}, "got multiple values for argument 'callback'"),
        ((), {"callback": print, "nope": 1}, "got an unexpected keyword argument 'nope'"),
    ]
    if len(names) == 2:
        cases.append(((), {"callback": print},
                      f"missing 1 required positional argument: '{names[0]}'"))
    for args, kwargs, tail in cases:
        with pytest.raises(TypeError) as ei:
            f(*args, **kwargs)
        msg = str(ei.value)
        assert msg.endswith(f"{meth}() {tail}"), msg
    # The loop schedules as before after the failed calls.
    out = []
    f(*_lead_values(loop, names, lambda: out.append(1)))
    run_briefly(loop)
    run_briefly(loop)
    assert out == [1]


@pytest.mark.parametrize("meth", sorted(_SCHEDULERS))
def test_scheduling_methods_take_context_under_an_equal_name(loop, meth):
    # asyncio's C Task passes context= under a "context" string of its own;
    # any str equal to "context" names the parameter.
    names = _SCHEDULERS[meth]
    var = contextvars.ContextVar("scheduling_var")
    ctx = contextvars.Context()
    ctx.run(var.set, "in-ctx")
    out = []
    f = getattr(loop, meth)
    vals = _lead_values(loop, names, lambda: out.append(var.get("unset")))
    for _ in range(3):
        name = "".join(["con", "text"])
        assert name == "context"
        f(*vals, **{name: ctx})
        f(*vals, **{name: None})
    f(*vals, context=ctx)
    run_briefly(loop)
    run_briefly(loop)
    assert sorted(out) == ["in-ctx"] * 4 + ["unset"] * 3
    missing = (f"missing 1 required positional argument: '{names[0]}'" if len(names) == 1
               else f"missing 2 required positional arguments: '{names[0]}' and '{names[1]}'")
    with pytest.raises(TypeError) as ei:
        f(**{"".join(["con", "text"]): ctx})
    assert str(ei.value).endswith(f"{meth}() {missing}"), str(ei.value)
