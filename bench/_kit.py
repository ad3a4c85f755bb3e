"""Where the shared benchmark kit and its venv are, and how to wait for one
of its servers: shared by bench/ab.py and bench/instructions.py."""

from __future__ import annotations

import os
import subprocess
import time
from typing import IO

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
KIT = os.path.normpath(os.path.join(ROOT, "..", "shared", "bench"))
VENV = os.path.join(ROOT, ".bench-venv")
VENV_PYTHON = os.path.join(VENV, "bin", "python")
TARGET = os.path.join(VENV, ".loadgen-target", "release")
LOADGEN = os.path.join(TARGET, "loadgen")


def wait_ready(proc: subprocess.Popen, log: IO[str], timeout: float, poll: float) -> str | None:
    """Wait until the server's output (`log`) says READY, as every server of
    the kit does once it accepts connections. None when it did; otherwise
    (the server exited, or `timeout` seconds passed) its output so far."""
    deadline = time.monotonic() + timeout
    while True:
        log.seek(0)
        out = log.read()
        if "READY" in out:
            return None
        if proc.poll() is not None or time.monotonic() > deadline:
            return out
        time.sleep(poll)
