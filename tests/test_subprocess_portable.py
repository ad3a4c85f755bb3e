"""Subprocesses on every platform (Windows included): only sys.executable
and the platform shell, so this runs where test_subprocess.py (POSIX tools,
signals, /proc) cannot. On Windows uvrs's stdio pipes are the threaded
transports; tools/dev.py also runs this file with them forced on POSIX."""

import asyncio
import hashlib
import os
import signal
import subprocess
import sys

import pytest

from _util import arun

pytestmark = pytest.mark.timeout(60)

PY = sys.executable
PIPE = asyncio.subprocess.PIPE

ECHO = "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"


def test_communicate_stdout_and_exit_code(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import sys; sys.stdout.write('out'); sys.stderr.write('err'); sys.exit(3)",
            stdout=PIPE, stderr=PIPE)  # fmt: skip
        out, err = await proc.communicate()
        return out, err, proc.returncode

    assert arun(loop, main(), 30) == (b"out", b"err", 3)


def test_stdin_to_stdout_round_trip_keeps_every_byte(loop):
    data = os.urandom(2 * 1024 * 1024)

    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", ECHO, stdin=PIPE, stdout=PIPE)
        out, _ = await proc.communicate(data)
        return out, proc.returncode

    out, code = arun(loop, main(), 30)
    assert code == 0
    assert hashlib.sha256(out).digest() == hashlib.sha256(data).digest()


def test_streaming_write_drain_and_readline(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-u", "-c",
            "import sys\nfor line in sys.stdin: sys.stdout.write(line.upper()); sys.stdout.flush()",
            stdin=PIPE, stdout=PIPE)  # fmt: skip
        got = []
        for word in (b"alpha", b"beta", b"gamma"):
            proc.stdin.write(word + b"\n")
            await proc.stdin.drain()
            got.append((await proc.stdout.readline()).strip())
        proc.stdin.close()
        rest = await proc.stdout.read()
        return got, rest, await proc.wait()

    assert arun(loop, main(), 30) == ([b"ALPHA", b"BETA", b"GAMMA"], b"", 0)


def test_stderr_merged_into_stdout(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c",
            "import sys; sys.stdout.write('a'); sys.stdout.flush(); sys.stderr.write('b')",
            stdout=PIPE, stderr=subprocess.STDOUT)  # fmt: skip
        out, err = await proc.communicate()
        return out, err, proc.returncode

    assert arun(loop, main(), 30) == (b"ab", None, 0)


def test_wait_only_with_devnull(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "print('x' * 100000)", stdout=subprocess.DEVNULL)  # fmt: skip
        return await proc.wait()

    assert arun(loop, main(), 30) == 0


def test_wait_returns_with_stdin_left_open(loop):
    # The child exits without reading its stdin: wait() must not hang on
    # the stdin pipe (a threaded pipe cannot see its reader go away).
    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", "pass", stdin=PIPE)
        return await proc.wait()

    assert arun(loop, main(), 30) == 0


def test_kill_a_running_child(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import time; print('ready', flush=True); time.sleep(60)",
            stdout=PIPE)  # fmt: skip
        assert (await proc.stdout.readline()).strip() == b"ready"
        proc.kill()
        return await proc.wait()

    code = arun(loop, main(), 30)
    assert code == (1 if sys.platform == "win32" else -signal.SIGKILL)


def test_shell_echo(loop):
    async def main():
        proc = await asyncio.create_subprocess_shell("echo hello", stdout=PIPE)
        out, _ = await proc.communicate()
        return out.strip(), proc.returncode

    assert arun(loop, main(), 30) == (b"hello", 0)


def test_protocol_callback_order(loop):
    events = []
    done = loop.create_future()

    class Proto(asyncio.SubprocessProtocol):
        def connection_made(self, transport):
            events.append("made")

        def pipe_data_received(self, fd, data):
            if not events or events[-1] != ("data", fd):
                events.append(("data", fd))

        def pipe_connection_lost(self, fd, exc):
            events.append(("pipe_lost", fd, exc))

        def process_exited(self):
            events.append("exited")

        def connection_lost(self, exc):
            events.append(("lost", exc))
            done.set_result(None)

    async def main():
        transport, _ = await loop.subprocess_exec(
            Proto, PY, "-c", "import sys; sys.stdout.write('hi')",
            stdin=None, stderr=None)  # fmt: skip
        await done
        code = transport.get_returncode()
        transport.close()
        return code

    assert arun(loop, main(), 30) == 0
    assert events[0] == "made"
    assert ("data", 1) in events
    assert ("pipe_lost", 1, None) in events
    assert events.index("exited") < events.index(("lost", None))
    assert events.index(("pipe_lost", 1, None)) < events.index(("lost", None))
    assert events[-1] == ("lost", None)


def test_missing_program_raises_file_not_found(loop):
    async def main():
        await asyncio.create_subprocess_exec("uvrs-no-such-program-xyz", stdout=PIPE)

    with pytest.raises(FileNotFoundError):
        arun(loop, main(), 30)
    # The loop still works afterwards.
    assert arun(loop, asyncio.sleep(0, "ok")) == "ok"
