"""Entry points: run(), asyncio.run(loop_factory=), Runner, policies, install,
subclassing.  For the stdlib flavor `run` is asyncio.run and the policy is
asyncio.DefaultEventLoopPolicy."""

import asyncio
import contextlib
import sys
import threading
import time
import warnings

import pytest

from _util import run_briefly


async def _running_loop():
    return asyncio.get_running_loop()


# -------------------------------------------------------------------- run()


def test_run_returns_result_on_flavor_loop(run, flavor):
    async def main(x):
        await asyncio.sleep(0)
        lp = asyncio.get_running_loop()
        return x + 1, isinstance(lp, flavor.Loop), type(lp)

    value, is_flavor, loop_type = run(main(41))
    assert value == 42
    assert is_flavor, loop_type


def test_run_closes_its_loop(run):
    lp = run(_running_loop())
    assert lp.is_closed()
    assert not lp.is_running()


def test_run_uses_a_fresh_loop_each_time(run):
    a = run(_running_loop())
    b = run(_running_loop())
    assert a is not b


@pytest.mark.parametrize("debug", [True, False])
def test_run_debug_flag(run, debug):
    async def main():
        return asyncio.get_running_loop().get_debug()

    assert run(main(), debug=debug) is debug


def test_run_propagates_exception(run):
    async def main():
        await asyncio.sleep(0)
        raise LookupError("from main")

    with pytest.raises(LookupError, match="from main"):
        run(main())


def test_run_rejects_non_coroutine(run):
    with pytest.raises(ValueError, match="a coroutine was expected"):
        run(1)


def test_run_nested_raises(run):
    async def inner():
        return 1

    async def main():
        coro = inner()
        try:
            run(coro)
        except RuntimeError as exc:
            return str(exc)
        finally:
            coro.close()

    msg = run(main())
    assert "cannot be called from a running event loop" in msg


def test_run_cancels_leftover_tasks(run):
    events = []

    async def background():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise

    async def main():
        asyncio.ensure_future(background())
        await asyncio.sleep(0)
        return "main"

    start = time.monotonic()
    assert run(main()) == "main"
    assert events == ["cancelled"]
    assert time.monotonic() - start < 5


def test_run_waits_for_default_executor(run):
    done = []

    def job():
        time.sleep(0.05)
        done.append("job")

    async def main():
        asyncio.get_running_loop().run_in_executor(None, job)

    run(main())
    assert done == ["job"]


@pytest.mark.timeout(10)
def test_run_in_non_main_thread(run):
    result = {}

    async def main():
        await asyncio.sleep(0.01)
        return threading.get_ident()

    def worker():
        try:
            result["ident"] = run(main())
        except BaseException as exc:  # pragma: no cover
            result["error"] = exc

    t = threading.Thread(target=worker)
    t.start()
    t.join(5)
    assert "error" not in result, result.get("error")
    assert result["ident"] == t.ident


def test_run_main_sees_running_loop_everywhere(run):
    async def main():
        lp = asyncio.get_running_loop()
        return asyncio.get_event_loop() is lp

    assert run(main()) is True


# --------------------------------------------- stdlib entry points + factory


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="asyncio.run(loop_factory=) is new in 3.12")
def test_stdlib_run_with_loop_factory(flavor):
    async def main():
        return type(asyncio.get_running_loop()), "ok"

    loop_type, res = asyncio.run(main(), loop_factory=flavor.new_event_loop)
    assert res == "ok"
    assert issubclass(loop_type, flavor.Loop)


@pytest.mark.skipif(sys.version_info < (3, 11),
                    reason="asyncio.Runner is new in 3.11")
def test_runner_with_loop_factory(flavor):
    async def step(i):
        await asyncio.sleep(0)
        return i, asyncio.get_running_loop()

    with asyncio.Runner(loop_factory=flavor.new_event_loop) as runner:
        lp = runner.get_loop()
        assert isinstance(lp, flavor.Loop)
        r1 = runner.run(step(1))
        r2 = runner.run(step(2))
    assert r1 == (1, lp)
    assert r2 == (2, lp)
    assert lp.is_closed()


@pytest.mark.skipif(sys.version_info < (3, 11),
                    reason="asyncio.Runner is new in 3.11")
def test_runner_debug_and_context(flavor):
    import contextvars

    var = contextvars.ContextVar("runner_var", default=0)

    async def bump():
        var.set(var.get() + 1)
        return var.get(), asyncio.get_running_loop().get_debug()

    with asyncio.Runner(debug=True,
                        loop_factory=flavor.new_event_loop) as runner:
        assert runner.run(bump()) == (1, True)
        # the Runner keeps one context across run() calls
        assert runner.run(bump()) == (2, True)


# ------------------------------------------------------------------ policy


def test_policy_classes(flavor):
    assert flavor.EventLoopPolicy is flavor.Policy
    assert issubclass(flavor.Policy, asyncio.AbstractEventLoopPolicy)


def test_policy_new_event_loop(flavor, clean_policy):
    asyncio.set_event_loop_policy(flavor.Policy())
    lp = asyncio.new_event_loop()
    try:
        assert isinstance(lp, flavor.Loop)
    finally:
        lp.close()


def test_policy_used_by_stdlib_run(flavor, clean_policy):
    asyncio.set_event_loop_policy(flavor.Policy())

    async def main():
        return type(asyncio.get_running_loop())

    assert issubclass(asyncio.run(main()), flavor.Loop)


def test_policy_get_event_loop_in_main_thread(flavor, clean_policy):
    policy = flavor.Policy()
    asyncio.set_event_loop_policy(policy)
    lp = policy.new_event_loop()
    try:
        policy.set_event_loop(lp)
        assert policy.get_event_loop() is lp
    finally:
        policy.set_event_loop(None)
        lp.close()


def test_install(flavor, clean_policy):
    ctx = (pytest.warns(DeprecationWarning) if flavor.is_uvrs
           else contextlib.nullcontext())
    with ctx:
        flavor.install()
    assert isinstance(asyncio.get_event_loop_policy(), flavor.Policy)
    lp = asyncio.new_event_loop()
    try:
        assert isinstance(lp, flavor.Loop)
    finally:
        lp.close()


def test_new_event_loop_gives_distinct_loops(flavor):
    a = flavor.new_event_loop()
    b = flavor.new_event_loop()
    try:
        assert a is not b
        assert isinstance(a, flavor.Loop) and isinstance(b, flavor.Loop)
        assert isinstance(a, asyncio.AbstractEventLoop)
    finally:
        a.close()
        b.close()


# ------------------------------------------------------------ subclassing


def test_loop_subclass_with_attributes(flavor):
    class MyLoop(flavor.Loop):
        pass

    lp = MyLoop()
    try:
        lp.custom_attribute = "value"
        lp.__dict__["other"] = 2
        assert lp.custom_attribute == "value"
        assert lp.other == 2
        assert isinstance(lp, flavor.Loop)

        async def main():
            return asyncio.get_running_loop()

        assert lp.run_until_complete(main()) is lp
    finally:
        lp.close()


def test_loop_instance_accepts_new_attributes(loop):
    loop.some_new_attribute = 123
    assert loop.some_new_attribute == 123
    del loop.some_new_attribute
    assert not hasattr(loop, "some_new_attribute")


def test_loop_subclass_override_is_used_by_futures(flavor):
    scheduled = []

    class CountingLoop(flavor.Loop):
        def call_soon(self, callback, *args, context=None):
            scheduled.append(callback)
            return super().call_soon(callback, *args, context=context)

    lp = CountingLoop()
    try:
        async def main():
            fut = lp.create_future()
            lp.call_later(0.001, fut.set_result, 5)
            return await fut

        assert lp.run_until_complete(main()) == 5
        # Task steps and future callbacks are scheduled through call_soon
        assert len(scheduled) >= 2
    finally:
        lp.close()


def test_loop_subclass_init_override(flavor):
    class InitLoop(flavor.Loop):
        def __init__(self):
            super().__init__()
            self.created = True

    lp = InitLoop()
    try:
        assert lp.created is True
        run_briefly(lp)
    finally:
        lp.close()


def test_subclass_as_stdlib_run_loop_factory(flavor):
    if sys.version_info < (3, 12):
        pytest.skip("asyncio.run(loop_factory=) is new in 3.12")

    class Sub(flavor.Loop):
        pass

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = asyncio.run(_running_loop(), loop_factory=Sub)
    assert type(res) is Sub


# ------------------------------------------------------- python -m uvrs

_SCRIPT = """\
import asyncio, os, sys

async def main():
    loop = asyncio.get_running_loop()
    print(type(loop).__module__ + "." + type(loop).__qualname__)
    print(__name__, sys.argv[1:], os.path.basename(sys.path[0]))

asyncio.run(main())
"""


def _run_script(flavor, tmp_path, *extra):
    import subprocess

    script = tmp_path / "prog.py"
    script.write_text(_SCRIPT)
    # The stdlib way to run a program, and uvrs's way to run it unchanged.
    launcher = ["-m", "uvrs"] if flavor.is_uvrs else []
    return subprocess.run(
        [sys.executable, *launcher, str(script), *extra],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_script_runs_unchanged_on_the_flavor_loop(flavor, tmp_path):
    out = _run_script(flavor, tmp_path, "a", "--b")
    assert out.returncode == 0, out.stderr
    loop_name, rest = out.stdout.splitlines()
    assert loop_name == f"{flavor.Loop.__module__}.{flavor.Loop.__qualname__}"
    assert rest == f"__main__ ['a', '--b'] {tmp_path.name}"
    assert "Warning" not in out.stderr


def test_python_m_uvrs_prints_versions(flavor):
    import subprocess

    if not flavor.is_uvrs:
        pytest.skip("python -m asyncio is a REPL: nothing to compare")
    out = subprocess.run([sys.executable, "-m", "uvrs"], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"uvrs {flavor.module.__version__}"
    assert lines[1].startswith("libuv 1.")
    assert lines[2].startswith(f"Python {sys.version.split()[0]}")
    build = next(line for line in lines if line.startswith("build "))
    assert build.split()[1].rstrip(",") in ("debug", "release")
