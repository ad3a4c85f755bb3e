"""Helpers shared by the test modules (import as ``from _util import ...``)."""

import os
import subprocess
import sys
import textwrap


def run_briefly(loop, times=1):
    """Let the loop run `times` iterations' worth of ready callbacks."""
    for _ in range(times):
        loop.call_soon(loop.stop)
        loop.run_forever()


def run_child(flavor, code, *, env=None, args=(), timeout=15, stdin=None,
              popen=False):
    """Run `code` in a fresh interpreter (sys.executable).

    The code sees `new_event_loop`, `run` and `IMPL` already defined for the
    flavor under test.
    """
    prelude = textwrap.dedent(f"""\
        import asyncio, sys
        IMPL = {flavor.name!r}
        if IMPL == "uvrs":
            import uvrs
            new_event_loop = uvrs.new_event_loop
            run = uvrs.run
        else:
            new_event_loop = asyncio.new_event_loop
            run = asyncio.run
        """)
    full = prelude + textwrap.dedent(code)
    child_env = dict(os.environ)
    child_env.pop("PYTHONASYNCIODEBUG", None)
    child_env["PYTHONUNBUFFERED"] = "1"
    if env:
        child_env.update(env)
    cmd = [sys.executable, *args, "-c", full]
    if popen:
        return subprocess.Popen(cmd, env=child_env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=stdin,
                                text=True)
    return subprocess.run(cmd, env=child_env, capture_output=True, text=True,
                          timeout=timeout)
