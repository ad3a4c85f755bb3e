"""Ctrl-C and Python-level signal handlers while the loop sleeps.

Most of these run a child interpreter (sys.executable) so that a signal
cannot disturb the test runner.  Time bounds below are generous upper bounds
("well before the 10 s sleep"), not speed measurements.
"""

import asyncio
import os
import select
import signal
import sys
import threading
import time

import pytest

from _util import run_briefly, run_child

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
    pytest.mark.timeout(30),
]

BOUND = 3.0  # seconds: far below the child's 10 s sleep


def wait_for_line(proc, token, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([proc.stdout], [], [], 0.05)
        if r:
            line = proc.stdout.readline()
            if not line:
                break
            if line.strip() == token:
                return True
        if proc.poll() is not None:
            break
    return False


def signal_child(flavor, code, signum, settle=0.2):
    """Start the child, wait for READY, let it settle into its sleep, send
    `signum`; return (stdout, stderr, returncode, seconds after signal)."""
    proc = run_child(flavor, code, popen=True)
    try:
        if not wait_for_line(proc, "READY"):
            out, err = proc.communicate(timeout=5)
            pytest.fail(f"child never got ready: rc={proc.returncode} "
                        f"out={out!r} err={err!r}")
        time.sleep(settle)
        sent = time.monotonic()
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=10)
        return out, err, proc.returncode, time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# ----------------------------------------------------------------- SIGINT

RUN_FOREVER_CHILD = """
import time
loop = new_event_loop()
loop.call_later(10, loop.stop)
loop.call_soon(print, "READY")
try:
    loop.run_forever()
except KeyboardInterrupt:
    print("KeyboardInterrupt")
    # the loop is still usable afterwards
    loop.call_soon(print, "REUSED")
    loop.call_soon(loop.stop)
    loop.run_forever()
else:
    print("NO-INTERRUPT")
loop.close()
"""


def test_sigint_interrupts_run_forever(flavor):
    out, err, rc, elapsed = signal_child(flavor, RUN_FOREVER_CHILD,
                                         signal.SIGINT)
    assert rc == 0, err
    assert out.split() == ["KeyboardInterrupt", "REUSED"]
    assert elapsed < BOUND


RUN_UNTIL_COMPLETE_CHILD = """
loop = new_event_loop()
async def main():
    print("READY")
    await asyncio.sleep(10)
    print("SLEPT")
try:
    loop.run_until_complete(main())
except KeyboardInterrupt:
    print("KeyboardInterrupt")
loop.close()
"""


def test_sigint_interrupts_run_until_complete_sleep(flavor):
    out, err, rc, elapsed = signal_child(flavor, RUN_UNTIL_COMPLETE_CHILD,
                                         signal.SIGINT)
    assert rc == 0, err
    assert out.split() == ["KeyboardInterrupt"]
    assert elapsed < BOUND


RUN_CHILD = """
async def main():
    print("READY")
    await asyncio.sleep(10)
    print("SLEPT")
try:
    run(main())
except KeyboardInterrupt:
    print("KeyboardInterrupt")
"""


def test_sigint_interrupts_run_entry_point(flavor):
    out, err, rc, elapsed = signal_child(flavor, RUN_CHILD, signal.SIGINT)
    assert rc == 0, err
    assert out.split() == ["KeyboardInterrupt"]
    assert elapsed < BOUND


UNCAUGHT_CHILD = """
async def main():
    print("READY")
    await asyncio.sleep(10)
run(main())
"""


def test_uncaught_sigint_kills_child_quickly(flavor):
    out, err, rc, elapsed = signal_child(flavor, UNCAUGHT_CHILD,
                                         signal.SIGINT)
    assert rc != 0
    assert "KeyboardInterrupt" in err
    assert elapsed < BOUND


SELF_KILL_CHILD = """
import os, signal, threading, time
loop = new_event_loop()
threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
start = time.monotonic()
try:
    loop.run_until_complete(asyncio.sleep(10))
except KeyboardInterrupt:
    print("KeyboardInterrupt after %.3f" % (time.monotonic() - start))
loop.close()
"""


def test_sigint_from_thread_in_child(flavor):
    start = time.monotonic()
    proc = run_child(flavor, SELF_KILL_CHILD, timeout=15)
    wall = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("KeyboardInterrupt after ")
    waited = float(proc.stdout.split()[-1])
    assert 0.15 <= waited < BOUND
    assert wall < 8


# -------------------------------------------------- Python signal handlers

USR1_CHILD = """
import signal
loop = new_event_loop()
def handler(signum, frame):
    print("HANDLER", signum)
    loop.call_soon_threadsafe(loop.stop)
signal.signal(signal.SIGUSR1, handler)
loop.call_later(10, loop.stop)
loop.call_soon(print, "READY")
loop.run_forever()
print("STOPPED")
loop.close()
"""


def test_python_signal_handler_runs_while_loop_sleeps(flavor):
    out, err, rc, elapsed = signal_child(flavor, USR1_CHILD, signal.SIGUSR1)
    assert rc == 0, err
    assert out.split() == ["HANDLER", str(int(signal.SIGUSR1)), "STOPPED"]
    assert elapsed < BOUND


RAISING_HANDLER_CHILD = """
import signal
class Boom(Exception):
    pass
def handler(signum, frame):
    raise Boom("from handler")
signal.signal(signal.SIGUSR1, handler)
loop = new_event_loop()
loop.call_later(10, loop.stop)
loop.call_soon(print, "READY")
try:
    loop.run_forever()
except Boom as exc:
    print("CAUGHT", exc.args[0].replace(" ", "_"))
print("RUNNING", loop.is_running())
loop.close()
"""


def test_raising_signal_handler_propagates_out_of_run_forever(flavor):
    out, err, rc, elapsed = signal_child(flavor, RAISING_HANDLER_CHILD,
                                         signal.SIGUSR1)
    assert rc == 0, err
    assert out.split() == ["CAUGHT", "from_handler", "RUNNING", "False"]
    assert elapsed < BOUND


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signal handlers need the main thread")
def test_signal_handler_in_process(loop):
    seen = []

    def handler(signum, frame):
        seen.append(signum)
        loop.call_soon_threadsafe(loop.stop)

    old = signal.signal(signal.SIGUSR2, handler)
    try:
        guard = loop.call_later(10, loop.stop)
        timer = threading.Timer(0.05, os.kill,
                                (os.getpid(), signal.SIGUSR2))
        loop.call_soon(timer.start)
        start = time.monotonic()
        loop.run_forever()
        elapsed = time.monotonic() - start
        guard.cancel()
        timer.join(5)
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert seen == [signal.SIGUSR2]
    assert elapsed < BOUND


# -------------------------------------------- process-wide state restored


def _current_wakeup_fd():
    fd = signal.set_wakeup_fd(-1)
    if fd != -1:
        signal.set_wakeup_fd(fd)
    return fd


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="set_wakeup_fd needs the main thread")
def test_signal_state_restored_after_run(loop):
    sigint_before = signal.getsignal(signal.SIGINT)
    fd_before = _current_wakeup_fd()
    run_briefly(loop)
    loop.run_until_complete(asyncio.sleep(0))
    assert signal.getsignal(signal.SIGINT) is sigint_before
    assert _current_wakeup_fd() == fd_before


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="set_wakeup_fd needs the main thread")
def test_signal_state_restored_after_interrupt(loop):
    sigint_before = signal.getsignal(signal.SIGINT)
    fd_before = _current_wakeup_fd()

    def interrupt():
        raise KeyboardInterrupt

    loop.call_soon(interrupt)
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert signal.getsignal(signal.SIGINT) is sigint_before
    assert _current_wakeup_fd() == fd_before


def test_user_wakeup_fd_preserved(loop):
    r, w = os.pipe()
    os.set_blocking(w, False)
    old = signal.set_wakeup_fd(w)
    try:
        run_briefly(loop)
        assert _current_wakeup_fd() == w
    finally:
        signal.set_wakeup_fd(old)
        os.close(r)
        os.close(w)
