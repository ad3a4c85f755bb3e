"""loop.add_signal_handler() / loop.remove_signal_handler() (Unix signals).

Each scenario is a plain function of this module that returns plain data
(lists, dicts, ints, strings).  Tests run it either in-process (SIGUSR1,
SIGUSR2, SIGHUP: harmless while a handler is installed) or in a fresh child
interpreter that imports this module (SIGINT, SIGTERM, SIGCHLD, fork), and
then assert on the returned data, so failures show what was observed.

Waits are bounded ("well within the child's timeout"); no test asserts on
how fast anything was.  The short SETTLE sleeps only give a duplicate or
stray delivery the chance to show up.
"""

import asyncio
import functools
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import traceback

import pytest

from _util import run_child

if sys.platform == "win32":
    # Before anything below touches names Windows lacks (signal.SIGCHLD,
    # socket.AF_UNIX...): a skip mark would come too late, at collection.
    pytest.skip("POSIX signals", allow_module_level=True)

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
    pytest.mark.timeout(60),
]

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
WAIT = 5.0  # upper bound for one awaited delivery
SETTLE = 0.05  # lets a duplicate (or stray) delivery show up
COUNT = 3  # signals sent one after another in the "while running" cases

IN_PROCESS = ("SIGUSR1", "SIGHUP")  # the rest of the matrix runs in a child
MATRIX_SIGNALS = ("SIGINT", "SIGTERM", "SIGUSR1", "SIGHUP")

# Signals whose default action is harmless (ignore), so sending them without
# a handler installed cannot kill the process.
_HARMLESS_DEFAULT = {int(signal.SIGCHLD)}
_GUARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2,
            signal.SIGHUP, signal.SIGCHLD)

TYPE_ERROR_CORO = "coroutines cannot be used with add_signal_handler()"
CLOSED = "Event loop is closed"


# ------------------------------------------------------------------ helpers


def default_handler(sig):
    """What remove_signal_handler() puts back (asyncio's choice)."""
    return signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL


def disposition(sig):
    """'default' when sig has its default disposition back, else a repr."""
    current = signal.getsignal(sig)
    return "default" if current is default_handler(sig) else repr(current)


def current_wakeup_fd():
    """signal.set_wakeup_fd()'s current value (main thread only)."""
    fd = signal.set_wakeup_fd(-1)
    if fd != -1:
        try:
            signal.set_wakeup_fd(fd)
        except OSError as exc:  # left pointing at a closed fd
            return f"{fd} ({exc.strerror})"
    return fd


def _check_can_send(sig):
    # Never send a signal whose default action would kill this process (the
    # pytest runner when in-process): that means the handler is missing.
    if int(sig) not in _HARMLESS_DEFAULT and signal.getsignal(sig) is signal.SIG_DFL:
        raise AssertionError(
            f"refusing to send {signal.Signals(sig).name}: its disposition is SIG_DFL, "
            "no handler is installed")


def kill_self(sig):
    """Send sig to this process from the calling thread."""
    _check_can_send(sig)
    os.kill(os.getpid(), sig)


def kill_from_thread(sig):
    """Send sig to this process from a new thread (so it arrives while the
    loop waits); returns the started thread."""
    _check_can_send(sig)
    t = threading.Thread(target=os.kill, args=(os.getpid(), sig), daemon=True)
    t.start()
    return t


def run_main(loop, coro, timeout=4 * WAIT):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


async def until(pred, timeout=WAIT):
    """Poll pred() (bounded); True when it became true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.005)
    return True


def _set_done(fut, value=None):
    if not fut.done():
        fut.set_result(value)


class Recorder:
    """A signal callback.  Each call records [args, ran in the loop's thread,
    asyncio.get_running_loop() is the loop]; wait(n) waits (bounded, without
    polling: the loop sleeps until something wakes it) for n calls."""

    def __init__(self, loop):
        self.loop = loop
        self.thread = threading.get_ident()  # the loop runs in this thread
        self.calls = []
        self._waiter = None

    def __call__(self, *args):
        try:
            in_loop = asyncio.get_running_loop() is self.loop
        except RuntimeError:
            in_loop = False
        self.calls.append([list(args), threading.get_ident() == self.thread, in_loop])
        if self._waiter is not None:
            _set_done(self._waiter)

    async def wait(self, n, timeout=WAIT):
        deadline = self.loop.time() + timeout
        while len(self.calls) < n:
            left = deadline - self.loop.time()
            if left <= 0:
                return False
            self._waiter = self.loop.create_future()
            try:
                await asyncio.wait_for(self._waiter, left)
            except asyncio.TimeoutError:
                return False
        return True


def expected_call(*args):
    return [list(args), True, True]


def _jsonable(value):
    return json.loads(json.dumps(value))


# ---------------------------------------------------------------- scenarios
#
# A scenario is f(loop, new_loop, *args) -> plain data.  `loop` is a fresh
# loop of the flavor under test (closed by the caller unless the scenario
# closes it), `new_loop` makes more loops of that flavor.

SCENARIOS = {}


def scenario(fn):
    SCENARIOS[fn.__name__] = fn
    return fn


@scenario
def handler_while_running(loop, new_loop, sig):
    """Handler added while the loop runs; sig sent COUNT times from another
    thread, each once the previous one was handled."""
    rec = Recorder(loop)

    async def main():
        loop.add_signal_handler(sig, rec, "arg", sig)
        installed = disposition(sig)
        for i in range(1, COUNT + 1):
            t = kill_from_thread(sig)
            await rec.wait(i)
            t.join(WAIT)
        await asyncio.sleep(SETTLE)
        return installed, loop.remove_signal_handler(sig)

    installed, removed = run_main(loop, main())
    return {"calls": rec.calls, "installed": installed, "removed": removed,
            "disposition": disposition(sig)}


@scenario
def handler_set_while_stopped(loop, new_loop, sig):
    """Handler added before run_until_complete(); sig sent once it runs."""
    rec = Recorder(loop)
    loop.add_signal_handler(sig, rec, "arg", sig)

    async def main():
        for i in range(1, COUNT + 1):
            t = kill_from_thread(sig)
            await rec.wait(i)
            t.join(WAIT)
        await asyncio.sleep(SETTLE)

    run_main(loop, main())
    removed = loop.remove_signal_handler(sig)
    return {"calls": rec.calls, "removed": removed, "disposition": disposition(sig)}


@scenario
def delivered_while_stopped(loop, new_loop, sig):
    """sig arrives while the loop is not running (first on a loop that never
    ran, then on one that ran and stopped): the handler runs, in the loop,
    once the loop runs again."""
    rec = Recorder(loop)
    loop.add_signal_handler(sig, rec, "arg", sig)
    kill_self(sig)
    before = len(rec.calls)

    async def settle(n):
        await rec.wait(n)
        await asyncio.sleep(SETTLE)

    run_main(loop, settle(1))
    kill_self(sig)
    between = len(rec.calls)
    run_main(loop, settle(2))
    removed = loop.remove_signal_handler(sig)
    return {"before": before, "between": between, "calls": rec.calls,
            "removed": removed, "disposition": disposition(sig)}


@scenario
def removed_handler(loop, new_loop, sig):
    """After remove_signal_handler() the default disposition is back, a second
    remove returns False, and the signal no longer reaches the loop."""
    rec = Recorder(loop)
    wakeup_before = current_wakeup_fd()
    plain = []

    async def main():
        loop.add_signal_handler(sig, rec, "arg", sig)
        first = loop.remove_signal_handler(sig)
        disp = disposition(sig)
        second = loop.remove_signal_handler(sig)
        # The signal is nobody's now: a plain signal.signal() handler gets it
        # and the removed loop callback does not.
        got = loop.create_future()

        def plain_handler(signum, frame):
            plain.append(signum)
            loop.call_soon_threadsafe(_set_done, got)

        previous = signal.signal(sig, plain_handler)
        try:
            t = kill_from_thread(sig)
            try:
                await asyncio.wait_for(got, WAIT)
            except asyncio.TimeoutError:
                pass
            t.join(WAIT)
            await asyncio.sleep(SETTLE)
        finally:
            signal.signal(sig, previous)
        return first, disp, second

    first, disp, second = run_main(loop, main())
    return {"first": first, "disposition": disp, "second": second,
            "plain": plain, "loop_calls": rec.calls, "final": disposition(sig),
            "wakeup_fd_restored": current_wakeup_fd() == wakeup_before}


@scenario
def close_removes_handler(loop, new_loop, sig):
    """close() gives the signal its default disposition back."""
    rec = Recorder(loop)
    wakeup_before = current_wakeup_fd()

    async def main():
        loop.add_signal_handler(sig, rec, "arg", sig)
        t = kill_from_thread(sig)
        await rec.wait(1)
        t.join(WAIT)

    run_main(loop, main())
    installed = disposition(sig)
    loop.close()
    return {"calls": rec.calls, "installed": installed,
            "after_close": disposition(sig),
            "remove_after_close": loop.remove_signal_handler(sig),
            "wakeup_fd_restored": current_wakeup_fd() == wakeup_before}


@scenario
def add_from_other_thread(loop, new_loop, sig):
    """add_signal_handler() outside the main thread raises RuntimeError: on the
    main thread's loop called from another thread, and on a loop running in
    another thread.  Nothing is installed."""
    before = signal.getsignal(sig)
    out = {}

    def attempt(lp, key):
        try:
            lp.add_signal_handler(sig, print)
        except Exception as exc:
            out[key] = [type(exc).__name__, str(exc)]
        else:
            out[key] = None

    def thread_main():
        attempt(loop, "main_loop")
        other = new_loop()
        try:
            async def inner():
                attempt(other, "thread_loop")

            other.run_until_complete(inner())
        finally:
            other.close()

    t = threading.Thread(target=thread_main)
    t.start()
    t.join(4 * WAIT)
    unchanged = signal.getsignal(sig) is before
    # Clean up (from the main thread) should the add have wrongly succeeded.
    removed = loop.remove_signal_handler(sig)
    return {"main_loop": out.get("main_loop", "missing"),
            "thread_loop": out.get("thread_loop", "missing"),
            "unchanged": unchanged, "removed": removed}


@scenario
def ctrl_c_after_remove(loop, new_loop, where):
    """A SIGINT handler added then removed: Ctrl-C raises KeyboardInterrupt
    out of run_until_complete() again."""
    out = {"handler_calls": 0}

    def handler():
        out["handler_calls"] += 1

    def add_remove():
        loop.add_signal_handler(signal.SIGINT, handler)
        out["removed"] = loop.remove_signal_handler(signal.SIGINT)
        out["disposition"] = disposition(signal.SIGINT)

    if where == "stopped":
        add_remove()

    async def main():
        if where == "running":
            add_remove()
        kill_from_thread(signal.SIGINT)
        await asyncio.sleep(10)

    try:
        loop.run_until_complete(main())
    except KeyboardInterrupt:
        out["outcome"] = "KI"
    else:
        out["outcome"] = "slept"
    return out


def _spawn_some():
    """subprocess.run() from a plain thread; 7s tell a stolen child (whose
    returncode would read 0 after ECHILD) from a real one."""
    codes = []
    for _ in range(3):
        codes.append(subprocess.run(["true"]).returncode)
        codes.append(subprocess.run(["sh", "-c", "exit 7"]).returncode)
    return codes


async def _loop_still_works(loop):
    order = []
    fut = loop.create_future()
    loop.call_later(0.01, lambda: (order.append("timer"), _set_done(fut)))
    loop.call_soon(order.append, "soon")
    await asyncio.wait_for(fut, WAIT)
    await asyncio.sleep(0)
    return order


@scenario
def sigchld_without_handler(loop, new_loop):
    async def main():
        codes = await loop.run_in_executor(None, _spawn_some)
        return codes, await _loop_still_works(loop)

    codes, order = run_main(loop, main())
    return {"codes": codes, "order": order}


@scenario
def sigchld_with_handler(loop, new_loop):
    rec = Recorder(loop)

    async def main():
        loop.add_signal_handler(signal.SIGCHLD, rec, "chld")
        codes = await loop.run_in_executor(None, _spawn_some)
        await rec.wait(1)
        await asyncio.sleep(SETTLE)
        removed = loop.remove_signal_handler(signal.SIGCHLD)
        return codes, removed, await _loop_still_works(loop)

    codes, removed, order = run_main(loop, main())
    return {"codes": codes, "calls": rec.calls, "removed": removed, "order": order,
            "disposition": disposition(signal.SIGCHLD)}


# ------------------------------------------------------------------- fork


def _forked_child(w, fn, *args):
    """Body of a forked child: write fn's result (or the traceback) to the
    pipe w, then os._exit() — never return into the parent's code."""
    code = 3
    try:
        try:
            msg = "OK " + fn(*args)
            code = 0
        except BaseException:
            msg = "EXC " + traceback.format_exc()
            code = 2
        os.write(w, msg.encode()[:32000])
    finally:
        os._exit(code)


def _reap(pid, timeout=4 * WAIT):
    """waitpid() the forked child (bounded: SIGKILL after timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout"
        time.sleep(0.005)


def _read_all(r):
    chunks = []
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            return b"".join(chunks).decode()
        chunks.append(chunk)


def _fork_in_callback(loop, child_fn, *args):
    """From a callback of the running `loop`: fork; the child runs
    child_fn(*args); the parent reaps it.  Returns (exit status, child text)."""
    r, w = os.pipe()
    result = {}

    def in_callback():
        pid = os.fork()
        if pid == 0:
            os.close(r)
            _forked_child(w, child_fn, *args)
        result["status"] = _reap(pid)

    async def main():
        loop.call_soon(in_callback)
        await until(lambda: "status" in result, 8 * WAIT)

    try:
        run_main(loop, main(), 10 * WAIT)
    finally:
        os.close(w)
        text = _read_all(r)
        os.close(r)
    return result.get("status", "missing"), text


def _child_new_loop_work(new_loop):
    lp = new_loop()
    try:
        async def work():
            order = await _loop_still_works(lp)
            order.append("running" if asyncio.get_running_loop() is lp else "other")
            return order

        order = lp.run_until_complete(work())
    finally:
        lp.close()
    return ",".join(order)


@scenario
def fork_new_loop(loop, new_loop):
    status, text = _fork_in_callback(loop, _child_new_loop_work, new_loop)
    return {"status": status, "child": text, "parent": run_main(loop, _loop_still_works(loop))}


def _child_signal_work(new_loop, sig):
    lp = new_loop()
    rec = Recorder(lp)
    try:
        lp.add_signal_handler(sig, rec, "child", sig)

        async def work():
            t = kill_from_thread(sig)
            await rec.wait(1)
            t.join(WAIT)
            await asyncio.sleep(SETTLE)

        lp.run_until_complete(work())
        removed = lp.remove_signal_handler(sig)
    finally:
        lp.close()
    return json.dumps({"calls": rec.calls, "removed": removed,
                       "disposition": disposition(sig)})


@scenario
def fork_child_signals(loop, new_loop, sig):
    """The parent loop has a handler for sig; a child forked from one of its
    callbacks makes a new loop whose own handler for sig works, and the
    child's signal does not reach the parent's loop."""
    parent = Recorder(loop)
    loop.add_signal_handler(sig, parent, "parent", sig)
    status, text = _fork_in_callback(loop, _child_signal_work, new_loop, sig)

    async def after():
        await asyncio.sleep(SETTLE)  # a leaked delivery would show up here
        leaked = list(parent.calls)
        t = kill_from_thread(sig)
        await parent.wait(1)
        t.join(WAIT)
        return leaked

    leaked = run_main(loop, after())
    removed = loop.remove_signal_handler(sig)
    return {"status": status, "child": text, "leaked_to_parent": leaked,
            "parent_calls": parent.calls, "parent_removed": removed}


def _mp_put_double(q, x):
    q.put(x * 2)


def _mp_pool_map(values):
    with multiprocessing.get_context("fork").Pool(2) as pool:
        return pool.map(abs, values)


@scenario
def fork_multiprocessing(loop, new_loop):
    ctx = multiprocessing.get_context("fork")

    async def main():
        # Called directly from the coroutine (blocks the loop briefly) ...
        direct = _mp_pool_map([-1, -2, -3])
        q = ctx.Queue()
        p = ctx.Process(target=_mp_put_double, args=(q, 21))
        p.start()
        got = q.get(timeout=4 * WAIT)
        p.join(4 * WAIT)
        # ... and from the loop's default executor.
        via_executor = await loop.run_in_executor(None, _mp_pool_map, [-4, -5])
        return {"direct": direct, "queue": got, "exitcode": p.exitcode,
                "executor": via_executor, "after": await _loop_still_works(loop)}

    return run_main(loop, main(), 10 * WAIT)


# ----------------------------------------------------------------- running


CHILD_SCENARIO = """
import json, sys
sys.path.insert(0, {tests_dir!r})
import test_signals
result = test_signals.child_entry({name!r}, new_event_loop, *{args!r})
print("RESULT " + json.dumps(result))
"""


def child_entry(name, new_loop, *args):
    """Run a scenario in this (child) interpreter."""
    loop = new_loop()
    try:
        return SCENARIOS[name](loop, new_loop, *args)
    finally:
        if not loop.is_closed():
            loop.close()


def run_scenario(flavor, loop_factory, name, *args, child, timeout=30):
    if not child:
        loop = loop_factory()
        try:
            return _jsonable(SCENARIOS[name](loop, loop_factory, *args))
        finally:
            if not loop.is_closed():
                loop.close()
    code = CHILD_SCENARIO.format(tests_dir=TESTS_DIR, name=name, args=tuple(args))
    proc = run_child(flavor, code, timeout=timeout)
    results = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or len(results) != 1:
        pytest.fail(f"child scenario {name}{tuple(args)} failed: rc={proc.returncode}\n"
                    f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return json.loads(results[0][len("RESULT "):])


@pytest.fixture(autouse=True)
def _restore_signal_state():
    """In-process hygiene: put back the dispositions and wakeup fd."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in _GUARDED}
    wakeup = current_wakeup_fd()
    yield
    for sig, handler in saved.items():
        if handler is not None:
            signal.signal(sig, handler)
    signal.set_wakeup_fd(wakeup if isinstance(wakeup, int) else -1)


def matrix(name, signame, flavor, loop_factory):
    sig = int(getattr(signal, signame))
    return sig, run_scenario(flavor, loop_factory, name, sig, child=signame not in IN_PROCESS)


signals_param = pytest.mark.parametrize("signame", MATRIX_SIGNALS)


# ------------------------------------------------------- 1. the matrix


@signals_param
def test_handler_called_while_running(flavor, loop_factory, signame):
    sig, res = matrix("handler_while_running", signame, flavor, loop_factory)
    assert res["calls"] == [expected_call("arg", sig)] * COUNT
    assert res["installed"] != "default"
    assert res["removed"] is True
    assert res["disposition"] == "default"


@signals_param
def test_handler_set_while_stopped(flavor, loop_factory, signame):
    sig, res = matrix("handler_set_while_stopped", signame, flavor, loop_factory)
    assert res["calls"] == [expected_call("arg", sig)] * COUNT
    assert res["removed"] is True
    assert res["disposition"] == "default"


@signals_param
def test_signal_delivered_while_stopped(flavor, loop_factory, signame):
    sig, res = matrix("delivered_while_stopped", signame, flavor, loop_factory)
    # Nothing runs outside the loop: the handler is a loop callback.
    assert res["before"] == 0
    assert res["between"] == 1
    assert res["calls"] == [expected_call("arg", sig)] * 2
    assert res["removed"] is True
    assert res["disposition"] == "default"


@signals_param
def test_removed_handler_restores_default(flavor, loop_factory, signame):
    sig, res = matrix("removed_handler", signame, flavor, loop_factory)
    assert res["first"] is True
    assert res["disposition"] == "default"
    assert res["second"] is False
    assert res["plain"] == [sig]
    assert res["loop_calls"] == []
    assert res["final"] == "default"
    assert res["wakeup_fd_restored"] is True


@signals_param
def test_close_restores_default(flavor, loop_factory, signame):
    sig, res = matrix("close_removes_handler", signame, flavor, loop_factory)
    assert res["calls"] == [expected_call("arg", sig)]
    assert res["installed"] != "default"
    assert res["after_close"] == "default"
    assert res["remove_after_close"] is False
    assert res["wakeup_fd_restored"] is True


@signals_param
def test_add_from_other_thread_raises(flavor, loop_factory, signame):
    sig, res = matrix("add_from_other_thread", signame, flavor, loop_factory)
    for key in ("main_loop", "thread_loop"):
        kind, msg = res[key]
        assert kind == "RuntimeError", res
        assert "main thread" in msg, res
    assert res["unchanged"] is True
    assert res["removed"] is False


# ------------------------------------------------ 2. asyncio's exact errors


def _noop(*args):
    pass


@pytest.mark.parametrize("bad", ["x", 2.0, None, b"2"], ids=repr)
def test_add_non_int_sig_type_error(loop, bad):
    with pytest.raises(TypeError) as info:
        loop.add_signal_handler(bad, _noop)
    assert str(info.value) == f"sig must be an int, not {bad!r}"
    with pytest.raises(TypeError) as info:
        loop.remove_signal_handler(bad)
    assert str(info.value) == f"sig must be an int, not {bad!r}"


@pytest.mark.parametrize("bad", [0, -1, signal.NSIG, signal.NSIG + 1, 1000])
def test_add_invalid_signal_number_value_error(loop, bad):
    with pytest.raises(ValueError) as info:
        loop.add_signal_handler(bad, _noop)
    assert str(info.value) == f"invalid signal number {bad}"
    with pytest.raises(ValueError) as info:
        loop.remove_signal_handler(bad)
    assert str(info.value) == f"invalid signal number {bad}"


@pytest.mark.parametrize("signame", ["SIGKILL", "SIGSTOP"])
def test_uncatchable_signal_runtime_error(loop, signame):
    sig = getattr(signal, signame)
    wakeup_before = current_wakeup_fd()
    with pytest.raises(RuntimeError) as info:
        loop.add_signal_handler(sig, _noop)
    assert str(info.value) == f"sig {int(sig)} cannot be caught"
    # also with a plain int
    with pytest.raises(RuntimeError) as info:
        loop.add_signal_handler(int(sig), _noop)
    assert str(info.value) == f"sig {int(sig)} cannot be caught"
    assert signal.getsignal(sig) is signal.SIG_DFL
    assert loop.remove_signal_handler(sig) is False
    assert current_wakeup_fd() == wakeup_before


async def _coro_fn():
    pass


@pytest.mark.parametrize("kind", ["function", "object", "partial"])
def test_coroutine_callback_type_error(loop, kind):
    if kind == "function":
        callback = _coro_fn
    elif kind == "object":
        callback = _coro_fn()
    else:
        callback = functools.partial(_coro_fn)
    try:
        with pytest.raises(TypeError) as info:
            loop.add_signal_handler(signal.SIGUSR1, callback)
        assert str(info.value) == TYPE_ERROR_CORO
    finally:
        if kind == "object":
            callback.close()
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_add_on_closed_loop(loop):
    loop.close()
    with pytest.raises(RuntimeError) as info:
        loop.add_signal_handler(signal.SIGUSR1, _noop)
    assert str(info.value) == CLOSED
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    # remove has no closed check: nothing registered -> False
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_argument_checks_order(loop):
    # asyncio checks: coroutine callback, then sig, then closed.
    with pytest.raises(TypeError) as info:
        loop.add_signal_handler("x", _coro_fn)
    assert str(info.value) == TYPE_ERROR_CORO
    loop.close()
    with pytest.raises(ValueError) as info:
        loop.add_signal_handler(0, _noop)
    assert str(info.value) == "invalid signal number 0"
    with pytest.raises(TypeError) as info:
        loop.add_signal_handler("x", _noop)
    assert str(info.value) == "sig must be an int, not 'x'"


@pytest.mark.parametrize("signame", ["SIGUSR1", "SIGHUP", "SIGINT", "SIGKILL"])
def test_remove_never_added_returns_false(loop, signame):
    sig = getattr(signal, signame)
    before = signal.getsignal(sig)
    assert loop.remove_signal_handler(sig) is False
    assert signal.getsignal(sig) is before


# ------------------------------------ 3. the handler is a loop callback


def test_handler_runs_in_loop_with_args(loop):
    rec = Recorder(loop)
    sig = signal.SIGUSR1
    loop.add_signal_handler(sig, rec, "a", 1, None)
    try:
        async def main():
            t = kill_from_thread(sig)
            await rec.wait(1)
            t.join(WAIT)
            await asyncio.sleep(SETTLE)

        run_main(loop, main())
    finally:
        assert loop.remove_signal_handler(sig) is True
    assert rec.calls == [expected_call("a", 1, None)]


def test_handler_can_stop_the_loop(loop):
    sig = signal.SIGUSR1
    seen = []
    guard_fired = []

    def handler():
        seen.append((asyncio.get_running_loop() is loop, loop.is_running()))
        loop.stop()

    def guard():
        guard_fired.append(True)
        loop.stop()

    loop.add_signal_handler(sig, handler)
    threads = []
    try:
        timer = loop.call_later(4 * WAIT, guard)
        loop.call_soon(lambda: threads.append(kill_from_thread(sig)))
        loop.run_forever()
        timer.cancel()
    finally:
        for t in threads:
            t.join(WAIT)
        assert loop.remove_signal_handler(sig) is True
    assert seen == [(True, True)]
    assert guard_fired == []
    assert loop.is_running() is False


def test_handler_exception_goes_to_exception_handler(loop):
    sig = signal.SIGUSR1
    errors = []
    calls = []

    class Boom(Exception):
        pass

    def handler(tag):
        calls.append(tag)
        raise Boom(tag)

    loop.set_exception_handler(lambda lp, ctx: errors.append((lp, ctx)))
    loop.add_signal_handler(sig, handler, "first")
    try:
        async def main():
            for i in (1, 2):
                t = kill_from_thread(sig)
                await until(lambda: len(errors) >= i)  # noqa: B023
                t.join(WAIT)
            await asyncio.sleep(SETTLE)
            return "alive"

        assert run_main(loop, main()) == "alive"
    finally:
        assert loop.remove_signal_handler(sig) is True
    assert calls == ["first", "first"]
    assert len(errors) == 2
    for lp, ctx in errors:
        assert lp is loop
        assert set(ctx) == {"message", "exception", "handle"}
        assert type(ctx["exception"]) is Boom
        assert ctx["exception"].args == ("first",)
        assert isinstance(ctx["handle"], asyncio.Handle)
        assert ctx["message"].startswith("Exception in callback ")
        # 3.13+ shows the callback's arguments only in debug mode.
        shown = "handler()" if sys.version_info >= (3, 13) else "handler('first')"
        assert f"exception_handler.<locals>.{shown}" in ctx["message"]


# ------------------------------------------ 4. replacing / removing / close


def test_add_twice_only_second_runs(loop):
    sig = signal.SIGUSR1
    first, second = Recorder(loop), Recorder(loop)
    loop.add_signal_handler(sig, first, "first")
    loop.add_signal_handler(sig, second, "second")
    try:
        async def main():
            t = kill_from_thread(sig)
            await second.wait(1)
            t.join(WAIT)
            await asyncio.sleep(SETTLE)

        run_main(loop, main())
    finally:
        assert loop.remove_signal_handler(sig) is True
        assert loop.remove_signal_handler(sig) is False
    assert first.calls == []
    assert second.calls == [expected_call("second")]


def test_replaced_after_delivery_while_stopped(loop):
    # The handler is looked up when the loop processes the signal: one
    # replaced after the signal arrived (loop stopped) is the one that runs.
    sig = signal.SIGUSR1
    first, second = Recorder(loop), Recorder(loop)
    loop.add_signal_handler(sig, first, "first")
    try:
        kill_self(sig)
        loop.add_signal_handler(sig, second, "second")

        async def main():
            await second.wait(1)
            await asyncio.sleep(SETTLE)

        run_main(loop, main())
    finally:
        assert loop.remove_signal_handler(sig) is True
    assert first.calls == []
    assert second.calls == [expected_call("second")]


def test_handler_removes_itself(loop):
    sig = signal.SIGUSR1
    results = []

    def handler():
        results.append(loop.remove_signal_handler(sig))
        results.append(disposition(sig))

    loop.add_signal_handler(sig, handler)

    async def main():
        t = kill_from_thread(sig)
        await until(lambda: results)
        t.join(WAIT)
        await asyncio.sleep(SETTLE)

    run_main(loop, main())
    assert results == [True, "default"]
    assert disposition(sig) == "default"
    assert loop.remove_signal_handler(sig) is False


def test_close_removes_all_handlers(loop):
    sigs = [signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP]
    wakeup_before = current_wakeup_fd()
    for sig in sigs:
        loop.add_signal_handler(sig, _noop)
    loop.run_until_complete(asyncio.sleep(0))
    assert [disposition(sig) == "default" for sig in sigs] == [False] * 3
    loop.close()
    assert [disposition(sig) for sig in sigs] == ["default"] * 3
    assert [loop.remove_signal_handler(sig) for sig in sigs] == [False] * 3
    assert current_wakeup_fd() == wakeup_before


def test_remove_one_keeps_the_others(loop):
    usr1, usr2 = Recorder(loop), Recorder(loop)
    loop.add_signal_handler(signal.SIGUSR1, usr1, "usr1")
    loop.add_signal_handler(signal.SIGUSR2, usr2, "usr2")
    try:
        assert loop.remove_signal_handler(signal.SIGUSR1) is True
        assert disposition(signal.SIGUSR1) == "default"

        async def main():
            t = kill_from_thread(signal.SIGUSR2)
            await usr2.wait(1)
            t.join(WAIT)
            await asyncio.sleep(SETTLE)

        run_main(loop, main())
    finally:
        assert loop.remove_signal_handler(signal.SIGUSR2) is True
    assert usr1.calls == []
    assert usr2.calls == [expected_call("usr2")]


# ------------------------------------ 5. several signals queued while stopped


def test_signals_queued_while_stopped_all_run(loop):
    order = []
    loop.add_signal_handler(signal.SIGUSR1, order.append, "USR1")
    loop.add_signal_handler(signal.SIGUSR2, order.append, "USR2")
    try:
        kill_self(signal.SIGUSR1)
        kill_self(signal.SIGUSR2)
        assert order == []

        async def main():
            await until(lambda: len(order) >= 2)
            await asyncio.sleep(SETTLE)

        run_main(loop, main())
    finally:
        assert loop.remove_signal_handler(signal.SIGUSR1) is True
        assert loop.remove_signal_handler(signal.SIGUSR2) is True
    assert order == ["USR1", "USR2"]


# ------------------------------------------------ 6. SIGCHLD from outside


def test_sigchld_without_handler(flavor, loop_factory):
    res = run_scenario(flavor, loop_factory, "sigchld_without_handler", child=True)
    assert res["codes"] == [0, 7] * 3
    assert res["order"] == ["soon", "timer"]


def test_sigchld_with_handler(flavor, loop_factory):
    res = run_scenario(flavor, loop_factory, "sigchld_with_handler", child=True)
    assert res["codes"] == [0, 7] * 3
    # Several SIGCHLDs may coalesce into one delivery, but at least one runs.
    assert 1 <= len(res["calls"]) <= 6
    assert all(call == expected_call("chld") for call in res["calls"]), res["calls"]
    assert res["removed"] is True
    assert res["order"] == ["soon", "timer"]
    assert res["disposition"] == "default"


# ------------------------------------------------------------------ 7. fork


def test_fork_in_callback_child_runs_new_loop(flavor, loop_factory):
    res = run_scenario(flavor, loop_factory, "fork_new_loop", child=True)
    assert res["child"] == "OK soon,timer,running", res["child"]
    assert res["status"] == 0
    assert res["parent"] == ["soon", "timer"]


def test_fork_multiprocessing_from_coroutine(flavor, loop_factory):
    res = run_scenario(flavor, loop_factory, "fork_multiprocessing", child=True,
                       timeout=50)
    assert res == {"direct": [1, 2, 3], "queue": 42, "exitcode": 0,
                   "executor": [4, 5], "after": ["soon", "timer"]}


def test_fork_child_signal_handlers(flavor, loop_factory):
    sig = int(signal.SIGUSR1)
    res = run_scenario(flavor, loop_factory, "fork_child_signals", sig, child=True)
    assert res["child"].startswith("OK "), res["child"]
    assert res["status"] == 0
    child = json.loads(res["child"][len("OK "):])
    assert child == {"calls": [expected_call("child", sig)], "removed": True,
                     "disposition": "default"}
    assert res["leaked_to_parent"] == []
    assert res["parent_calls"] == [expected_call("parent", sig)]
    assert res["parent_removed"] is True


# ------------------------------------------------ 8. Ctrl-C after remove


@pytest.mark.parametrize("where", ["stopped", "running"])
def test_ctrl_c_after_remove_raises_keyboard_interrupt(flavor, loop_factory, where):
    res = run_scenario(flavor, loop_factory, "ctrl_c_after_remove", where, child=True)
    assert res == {"handler_calls": 0, "removed": True, "disposition": "default",
                   "outcome": "KI"}
