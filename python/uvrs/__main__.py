"""``python -m uvrs``: build information, or run a program on uvrs unchanged.

    python -m uvrs                      uvrs, libuv and Python versions, build facts
    python -m uvrs script.py [args]     run script.py with uvrs as asyncio's loop
    python -m uvrs -m module [args]     the same for ``python -m module``

The program is not edited: uvrs becomes asyncio's default loop (through the
event loop policy, which ``asyncio.run()``, ``asyncio.Runner()`` and
``asyncio.new_event_loop()`` consult), then the script runs as ``__main__``,
as ``python script.py`` would run it.
"""

from __future__ import annotations

import asyncio
import os
import platform
import runpy
import sys
import warnings

import uvrs
from uvrs import _uvrs

USAGE = """usage: python -m uvrs [-V | script.py [args...] | -m module [args...]]

Without arguments (or with -V/--version): print uvrs, libuv and Python versions.
With a script or a module: run it with uvrs as asyncio's event loop."""


def info() -> str:
    gil = getattr(sys, "_is_gil_enabled", None)
    lines = [
        f"uvrs {uvrs.__version__}",
        f"libuv {_uvrs.LIBUV_VERSION}",
        f"Python {platform.python_version()} ({sys.implementation.name}, "
        f"{'free-threaded' if gil is not None and not gil() else 'GIL'})",
        f"platform {platform.platform()}",
        f"build {_uvrs.BUILD_PROFILE}, "
        f"{'free-threaded' if _uvrs.FREE_THREADED_BUILD else 'GIL'} CPython ABI, "
        f"Python layer {os.path.dirname(uvrs.__file__)}",
        f"native module {_uvrs.__file__}",
    ]
    return "\n".join(lines)


def install_default_loop() -> None:
    """uvrs as asyncio's default loop, without the deprecation warnings that
    the policy calls raise on 3.14+ (policies work there until 3.16)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(uvrs.EventLoopPolicy())


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-V", "--version"):
        print(info())
        return 0
    if argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    install_default_loop()
    if argv[0] == "-m":
        if len(argv) < 2:
            print("python -m uvrs: -m needs a module name", file=sys.stderr)
            return 2
        sys.argv = argv[1:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        return 0
    script = argv[0]
    sys.argv = list(argv)
    # As `python script.py` does: the script's directory comes first.
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    runpy.run_path(script, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
