"""Async-generator hooks and shutdown_asyncgens."""

import asyncio
import gc
import sys

import pytest

KEEP = []  # keeps unfinished generators alive until the loop finalizes them


@pytest.fixture(autouse=True)
def _clear_keep():
    yield
    KEEP.clear()


def make_agen(log, name="agen"):
    async def agen():
        try:
            log.append(f"{name} start")
            yield 1
            yield 2
            log.append(f"{name} exhausted")  # never reached when abandoned
        finally:
            # finalizers may await: this must run on a live loop
            await asyncio.sleep(0)
            log.append(f"{name} finally")

    return agen()


def test_shutdown_asyncgens_finalizes_unfinished(loop):
    log = []

    async def main():
        g = make_agen(log)
        KEEP.append(g)
        assert await g.__anext__() == 1

    loop.run_until_complete(main())
    assert log == ["agen start"]
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert log == ["agen start", "agen finally"]


def test_shutdown_asyncgens_finalizes_several(loop):
    log = []

    async def main():
        for name in ("a", "b", "c"):
            g = make_agen(log, name)
            KEEP.append(g)
            await g.__anext__()

    loop.run_until_complete(main())
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert sorted(x for x in log if x.endswith("finally")) == [
        "a finally", "b finally", "c finally"]


def test_shutdown_asyncgens_ignores_finished_generators(loop):
    log = []

    async def main():
        g = make_agen(log)
        KEEP.append(g)
        assert [x async for x in g] == [1, 2]

    loop.run_until_complete(main())
    assert log == ["agen start", "agen exhausted", "agen finally"]
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert log == ["agen start", "agen exhausted", "agen finally"]


def test_shutdown_asyncgens_with_nothing_to_do(loop):
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(loop.shutdown_asyncgens())


def test_shutdown_asyncgens_error_goes_to_handler(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    async def bad_agen():
        try:
            yield 1
        finally:
            raise ValueError("in finally")

    async def main():
        g = bad_agen()
        KEEP.append(g)
        await g.__anext__()

    loop.run_until_complete(main())
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert len(contexts) == 1
    ctx = contexts[0]
    assert ctx["message"].startswith(
        "an error occurred during closing of asynchronous generator")
    assert isinstance(ctx["exception"], ValueError)
    assert ctx["asyncgen"] is KEEP[0]


def test_agen_first_iterated_after_shutdown_warns(loop):
    async def late():
        yield 1

    async def main():
        g = late()
        KEEP.append(g)
        await g.__anext__()

    loop.run_until_complete(loop.shutdown_asyncgens())
    with pytest.warns(ResourceWarning,
                      match="was scheduled after loop.shutdown_asyncgens"):
        loop.run_until_complete(main())
    loop.run_until_complete(KEEP[0].aclose())


def test_dropped_agen_is_finalized_by_the_loop(loop):
    log = []
    finally_loop = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            finally_loop.append(asyncio.get_running_loop())
            log.append("finally")

    async def main():
        g = agen()
        await g.__anext__()
        del g
        gc.collect()
        for _ in range(5):
            await asyncio.sleep(0)
        return list(log)

    assert loop.run_until_complete(main()) == ["finally"]
    assert finally_loop == [loop]


def test_asyncgen_hooks_installed_while_running_and_restored(loop):
    before = sys.get_asyncgen_hooks()

    async def main():
        return sys.get_asyncgen_hooks()

    inside = loop.run_until_complete(main())
    assert inside.firstiter is not None
    assert inside.finalizer is not None
    assert sys.get_asyncgen_hooks() == before


def test_asyncgen_hooks_restored_after_keyboard_interrupt(loop):
    before = sys.get_asyncgen_hooks()

    def interrupt():
        raise KeyboardInterrupt

    loop.call_soon(interrupt)
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert sys.get_asyncgen_hooks() == before


def test_user_hooks_restored_after_run(loop):
    seen = []

    def my_firstiter(agen):
        seen.append(agen)

    old = sys.get_asyncgen_hooks()
    sys.set_asyncgen_hooks(firstiter=my_firstiter, finalizer=None)
    try:
        loop.run_until_complete(asyncio.sleep(0))
        assert sys.get_asyncgen_hooks().firstiter is my_firstiter
    finally:
        sys.set_asyncgen_hooks(*old)
    assert seen == []


def test_run_finalizes_unfinished_agen(run):
    log = []

    async def main():
        g = make_agen(log)
        KEEP.append(g)
        await g.__anext__()
        return "main done"

    assert run(main()) == "main done"
    assert log == ["agen start", "agen finally"]


def test_async_for_break_then_aclose(loop):
    log = []

    async def main():
        g = make_agen(log)
        first = None
        async for item in g:
            first = item
            break
        await g.aclose()
        return first

    assert loop.run_until_complete(main()) == 1
    assert log == ["agen start", "agen finally"]
