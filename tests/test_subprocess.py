"""Subprocesses: loop.subprocess_exec() / loop.subprocess_shell() and the
asyncio.create_subprocess_* API on top of them.

Reference behaviour is the stdlib loop's; every test runs on both flavors.
The high-level functions (asyncio.create_subprocess_exec/_shell) use the
running loop, so they are driven with ``arun(loop, main())``.

Version notes that matter here (stdlib behaviour the tests are built around):

* 3.10: Process.wait() returns as soon as the exit status is known; 3.11+
  wait until every pipe is closed too (i.e. after connection_lost).
* 3.10/3.11: communicate() without input leaves stdin open; 3.12+ closes it.
  No test calls communicate() without input on a child that reads stdin.
* send_signal() after the transport finished (connection_lost ran) raises
  ProcessLookupError on every version; between exit and connection_lost it
  is a silent no-op, so tests only probe it once connection_lost ran.
"""

import asyncio
import errno
import gc
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import threading

import pytest

from _util import arun, catch_loop_errors, open_fd_count, payload, sha256

if sys.platform == "win32":
    # Before anything below touches names Windows lacks (signal.SIGCHLD,
    # socket.AF_UNIX...): a skip mark would come too late, at collection.
    pytest.skip("POSIX subprocess semantics (/bin/sh, signals, fds)", allow_module_level=True)

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(sys.platform == "win32",
                       reason="POSIX subprocess semantics (/bin/sh, signals, fds)"),
]

PIPE = asyncio.subprocess.PIPE
DEVNULL = asyncio.subprocess.DEVNULL
STDOUT = asyncio.subprocess.STDOUT

PY = sys.executable
MiB = 1024 * 1024
LINUX = sys.platform.startswith("linux")
MISSING = "uvrs-test-no-such-program"

linux_only = pytest.mark.skipif(not LINUX, reason="needs /proc")


# ---------------------------------------------------------------------------
# helpers


def child_state(pid):
    """(state, ppid) of `pid` from /proc, or None when it is gone (Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def assert_reaped(pid):
    """`pid` is not left behind as a zombie child of this process."""
    if not LINUX:
        return
    st = child_state(pid)
    assert not (st is not None and st[1] == os.getpid() and st[0] == "Z"), (
        f"child {pid} was not reaped")


def zombie_children():
    """Pids of this process's zombie children (Linux), else None."""
    if not LINUX:
        return None
    me = os.getpid()
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = child_state(name)
        if st is not None and st[1] == me and st[0] == "Z":
            found.add(int(name))
    return found


def read_fd_to_eof(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


async def py(code, *args, stdout=PIPE, **kwargs):
    """Run `code` in a child interpreter; return (stdout bytes, returncode)."""
    proc = await asyncio.create_subprocess_exec(PY, "-c", code, *args,
                                                stdout=stdout, **kwargs)
    out, _ = await proc.communicate()
    return out, proc.returncode


async def read_lines(stream):
    lines = []
    while True:
        line = await stream.readline()
        if not line:
            return lines
        lines.append(line)


async def read_chunks(stream, n=65536):
    chunks = []
    while True:
        chunk = await stream.read(n)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


class SubprocessRecorder(asyncio.SubprocessProtocol):
    """Records every SubprocessProtocol callback, in order, in `events`."""

    def __init__(self, loop):
        self.loop = loop
        self.transport = None
        self.events = []
        self.data = {1: bytearray(), 2: bytearray()}
        self.data_types = set()
        self.returncode_at_exit = "unset"
        self.made = loop.create_future()
        self.exited = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.events.append(("made",))
        self.transport = transport
        self.made.set_result(transport)

    def pipe_data_received(self, fd, data):
        self.events.append(("data", fd))
        self.data_types.add(type(data))
        self.data[fd] += data

    def pipe_connection_lost(self, fd, exc):
        self.events.append(("pipe_lost", fd, exc))

    def process_exited(self):
        self.events.append(("exited",))
        self.returncode_at_exit = self.transport.get_returncode()
        self.exited.set_result(None)

    def connection_lost(self, exc):
        self.events.append(("lost", exc))
        self.lost.set_result(exc)

    def pause_writing(self):
        self.events.append(("pause",))

    def resume_writing(self):
        self.events.append(("resume",))


class RecorderFactory:
    def __init__(self, loop):
        self.loop = loop
        self.protocols = []

    def __call__(self):
        proto = SubprocessRecorder(self.loop)
        self.protocols.append(proto)
        return proto


def check_order(proto, pipe_fds):
    """The ordering guarantees asyncio gives a SubprocessProtocol."""
    ev = proto.events
    kinds = [e[0] for e in ev]
    assert ev[0] == ("made",), ev
    assert kinds.count("made") == 1, ev
    assert kinds.count("exited") == 1, ev
    assert kinds.count("lost") == 1, ev
    assert ev[-1] == ("lost", None), ev
    lost_at = len(ev) - 1
    assert kinds.index("exited") < lost_at
    pipe_lost = [(i, e[1], e[2]) for i, e in enumerate(ev) if e[0] == "pipe_lost"]
    assert sorted(fd for _, fd, _ in pipe_lost) == sorted(pipe_fds), ev
    for i, fd, exc in pipe_lost:
        assert exc is None, ev
        assert i < lost_at
        later = [e for e in ev[i + 1:] if e[0] == "data" and e[1] == fd]
        assert not later, f"pipe_data_received({fd}) after its pipe_connection_lost: {ev}"
    assert proto.data_types <= {bytes}
    assert proto.returncode_at_exit == proto.transport.get_returncode()


# ---------------------------------------------------------------------------
# 1. the matrix: {exec, shell} x stdio x outcome x how the output is consumed

KINDS = ("pipe", "devnull", "fd-pipe", "fd-file", "fileobj", "merge")
PIPED = ("pipe", "merge")
OUTCOMES = ("exit0", "exit3", "signal", "spawnfail")
CONSUMES = ("communicate", "stream", "wait")

_PY_WRITE = "import os; os.write(1, b'out\\n'); os.write(2, b'err\\n')"
PY_CHILD = {
    "exit0": _PY_WRITE,
    "exit3": _PY_WRITE + "; raise SystemExit(3)",
    "signal": (_PY_WRITE + "; import signal; os.kill(os.getpid(), signal.SIGTERM)"
               "; os._exit(99)"),
}
_SH_WRITE = "printf 'out\\n'; printf 'err\\n' >&2"
SH_CHILD = {
    "exit0": _SH_WRITE,
    "exit3": _SH_WRITE + "; exit 3",
    "signal": _SH_WRITE + "; kill -TERM $$; exit 99",
    "spawnfail": MISSING,
}
RETURNCODE = {"exit0": 0, "exit3": 3, "signal": -signal.SIGTERM, "spawnfail": 127}


def _matrix():
    for mode, kind, outcome, consume in itertools.product(
            ("exec", "shell"), KINDS, OUTCOMES, CONSUMES):
        if consume == "stream" and kind not in PIPED:
            # Nothing to stream: the bytes go to the fd / file, which the
            # communicate and wait variants read back and check.
            continue
        if mode == "exec" and outcome == "spawnfail":
            # create_subprocess_exec raises: there is no process to consume.
            if consume != "communicate":
                continue
            consume = "none"
        yield pytest.param(mode, kind, outcome, consume,
                           id=f"{mode}-{kind}-{outcome}-{consume}")


class Sink:
    """Where the child's stdout / stderr go for one stdio kind."""

    def __init__(self, kind, tmp_path):
        self.kind = kind
        self._after_spawn = []   # parent copies of pipe write ends
        self._fds = []           # fds to close at the end
        self._files = []
        self.paths = (tmp_path / "out.bin", tmp_path / "err.bin")
        if kind == "pipe":
            self.stdout, self.stderr = PIPE, PIPE
        elif kind == "merge":
            self.stdout, self.stderr = PIPE, STDOUT
        elif kind == "devnull":
            self.stdout, self.stderr = DEVNULL, DEVNULL
        elif kind == "fd-pipe":
            self._r1, w1 = os.pipe()
            self._r2, w2 = os.pipe()
            self._fds += [self._r1, self._r2]
            self._after_spawn = [w1, w2]
            self.stdout, self.stderr = w1, w2
        elif kind == "fd-file":
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
            fd1 = os.open(self.paths[0], flags, 0o644)
            fd2 = os.open(self.paths[1], flags, 0o644)
            self._fds += [fd1, fd2]
            self.stdout, self.stderr = fd1, fd2
        elif kind == "fileobj":
            self._files = [open(p, "wb") for p in self.paths]  # noqa: SIM115
            self.stdout, self.stderr = self._files
        else:  # pragma: no cover
            raise AssertionError(kind)

    def spawned(self):
        """Close the parent's pipe write ends (they must still be open)."""
        for fd in self._after_spawn:
            os.fstat(fd)
            os.close(fd)
        self._after_spawn = []

    def landed(self):
        """(stdout bytes, stderr bytes) the child wrote to the fds / files."""
        if self.kind == "fd-pipe":
            return read_fd_to_eof(self._r1), read_fd_to_eof(self._r2)
        if self.kind == "fd-file":
            for fd in self._fds:
                os.fstat(fd)  # the loop must not have closed the caller's fd
        if self.kind == "fileobj":
            for f in self._files:
                assert not f.closed
                os.fstat(f.fileno())
                f.close()
        return tuple(p.read_bytes() for p in self.paths)

    def close(self):
        for fd in self._after_spawn + self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        for f in self._files:
            f.close()


def check_err(err, outcome):
    if outcome == "spawnfail":
        assert MISSING.encode() in err and b"not found" in err, err
    else:
        assert err == b"err\n"


@pytest.mark.parametrize("mode, kind, outcome, consume", list(_matrix()))
def test_matrix(loop, tmp_path, mode, kind, outcome, consume):
    sink = Sink(kind, tmp_path)
    exp_out = b"" if outcome == "spawnfail" else b"out\n"

    async def main():
        if mode == "exec":
            argv = (MISSING,) if outcome == "spawnfail" else (PY, "-c", PY_CHILD[outcome])
            create = asyncio.create_subprocess_exec(*argv, stdout=sink.stdout,
                                                    stderr=sink.stderr)
        else:
            create = asyncio.create_subprocess_shell(SH_CHILD[outcome], stdout=sink.stdout,
                                                     stderr=sink.stderr)
        if consume == "none":
            with pytest.raises(FileNotFoundError) as info:
                await create
            assert info.value.errno == errno.ENOENT
            assert info.value.filename == MISSING
            sink.spawned()
            if kind not in PIPED + ("devnull",):
                assert sink.landed() == (b"", b"")
            return

        proc = await create
        sink.spawned()
        assert isinstance(proc.pid, int) and proc.pid > 0
        assert proc.stdin is None
        if kind in PIPED:
            assert isinstance(proc.stdout, asyncio.StreamReader)
        else:
            assert proc.stdout is None
        if kind == "pipe":
            assert isinstance(proc.stderr, asyncio.StreamReader)
        else:
            assert proc.stderr is None

        if consume == "communicate":
            out, err = await proc.communicate()
            rc = proc.returncode
        elif consume == "stream":
            lines, err = await asyncio.gather(
                read_lines(proc.stdout),
                proc.stderr.read() if proc.stderr is not None else asyncio.sleep(0))
            out = b"".join(lines)
            if outcome != "spawnfail":
                assert lines == ([b"out\n", b"err\n"] if kind == "merge" else [b"out\n"])
            rc = await proc.wait()
        else:
            rc = await proc.wait()
            out = await proc.stdout.read() if proc.stdout is not None else None
            err = await proc.stderr.read() if proc.stderr is not None else None

        assert rc == RETURNCODE[outcome]
        assert proc.returncode == RETURNCODE[outcome]
        assert await proc.wait() == RETURNCODE[outcome]
        assert_reaped(proc.pid)

        if kind == "pipe":
            assert out == exp_out
            check_err(err, outcome)
        elif kind == "merge":
            assert err is None
            assert out.startswith(exp_out)
            check_err(out[len(exp_out):], outcome)
        else:
            assert out is None and err is None
            if kind != "devnull":
                out, err = sink.landed()
                assert out == exp_out
                check_err(err, outcome)

    try:
        arun(loop, main(), 15)
    finally:
        sink.close()


# ---------------------------------------------------------------------------
# 2. the low-level API: SubprocessProtocol callbacks and the transport


def test_protocol_order_all_pipes(loop):
    factory = RecorderFactory(loop)
    code = ("import sys; d = sys.stdin.buffer.read(); "
            "sys.stdout.buffer.write(b'out:' + d); sys.stdout.flush(); "
            "sys.stderr.buffer.write(b'err:' + d[::-1]); sys.stderr.flush()")

    async def main():
        transport, proto = await loop.subprocess_exec(factory, PY, "-c", code)
        assert factory.protocols == [proto]
        assert proto.transport is transport
        # connection_made() already ran when subprocess_exec() returns.
        assert proto.events[:1] == [("made",)]
        stdin = transport.get_pipe_transport(0)
        stdin.write(b"hello")
        stdin.write_eof()
        assert await proto.lost is None
        return transport, proto

    transport, proto = arun(loop, main(), 15)
    assert bytes(proto.data[1]) == b"out:hello"
    assert bytes(proto.data[2]) == b"err:olleh"
    assert transport.get_returncode() == 0
    check_order(proto, (0, 1, 2))
    transport.close()


def test_protocol_order_exit_code_no_stdin(loop):
    factory = RecorderFactory(loop)

    async def main():
        transport, proto = await loop.subprocess_exec(
            factory, PY, "-c", PY_CHILD["exit3"], stdin=DEVNULL)
        await proto.lost
        return transport, proto

    transport, proto = arun(loop, main(), 15)
    assert transport.get_returncode() == 3
    assert proto.returncode_at_exit == 3
    assert bytes(proto.data[1]) == b"out\n"
    assert bytes(proto.data[2]) == b"err\n"
    assert transport.get_pipe_transport(0) is None
    check_order(proto, (1, 2))
    transport.close()


def test_protocol_stdin_never_closed(loop):
    """The child exits while our end of its stdin is still open: the stdin
    pipe is reported lost (exc None) and connection_lost still arrives."""
    factory = RecorderFactory(loop)

    async def main():
        transport, proto = await loop.subprocess_exec(
            factory, PY, "-c", "import os; os.write(1, b'bye')")
        await proto.lost
        return transport, proto

    transport, proto = arun(loop, main(), 15)
    assert transport.get_returncode() == 0
    assert bytes(proto.data[1]) == b"bye"
    assert bytes(proto.data[2]) == b""
    check_order(proto, (0, 1, 2))
    transport.close()


def test_subprocess_shell_protocol(loop):
    factory = RecorderFactory(loop)

    async def main():
        transport, proto = await loop.subprocess_shell(
            factory, 'echo "$0"; echo oops >&2; exit 4', stdin=None)
        await proto.lost
        return transport, proto

    transport, proto = arun(loop, main(), 15)
    assert transport.get_returncode() == 4
    assert bytes(proto.data[1]) == b"/bin/sh\n"
    assert bytes(proto.data[2]) == b"oops\n"
    check_order(proto, (1, 2))
    transport.close()


def test_subprocess_shell_bytes_cmd(loop):
    async def main():
        proc = await asyncio.create_subprocess_shell(b"printf bytes; exit 6", stdout=PIPE)
        return await proc.communicate(), proc.returncode

    assert arun(loop, main(), 15) == ((b"bytes", None), 6)


def test_transport_methods(loop):
    factory = RecorderFactory(loop)
    code = "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read().upper())"

    async def main():
        transport, proto = await loop.subprocess_exec(
            factory, PY, "-c", code, stdin=PIPE, stdout=PIPE, stderr=DEVNULL)
        assert isinstance(transport, asyncio.SubprocessTransport)
        pid = transport.get_pid()
        assert isinstance(pid, int) and pid > 0
        popen = transport.get_extra_info("subprocess")
        assert popen.pid == pid
        # The child blocks reading stdin: it cannot have exited yet.
        assert transport.get_returncode() is None
        stdin = transport.get_pipe_transport(0)
        stdout = transport.get_pipe_transport(1)
        assert isinstance(stdin, asyncio.WriteTransport)
        assert isinstance(stdout, asyncio.ReadTransport)
        assert transport.get_pipe_transport(2) is None
        assert transport.get_pipe_transport(3) is None
        assert not transport.is_closing()
        stdin.write(b"abc")
        stdin.close()
        await proto.lost
        assert transport.get_returncode() == 0
        assert transport.get_pid() == pid
        assert bytes(proto.data[1]) == b"ABC"
        check_order(proto, (0, 1))
        transport.close()
        assert transport.is_closing()

    arun(loop, main(), 15)


SIGNAL_METHODS = [
    pytest.param("send_signal", -signal.SIGUSR1, id="send_signal-SIGUSR1"),
    pytest.param("terminate", -signal.SIGTERM, id="terminate"),
    pytest.param("kill", -signal.SIGKILL, id="kill"),
]


def _signal(target, method):
    if method == "send_signal":
        target.send_signal(signal.SIGUSR1)
    else:
        getattr(target, method)()


@pytest.mark.parametrize("method, code", SIGNAL_METHODS)
def test_transport_signals(loop, method, code):
    factory = RecorderFactory(loop)

    async def main():
        transport, proto = await loop.subprocess_exec(
            factory, PY, "-c", "import sys; sys.stdin.read()", stderr=DEVNULL)
        assert transport.get_returncode() is None
        _signal(transport, method)
        await proto.lost
        assert transport.get_returncode() == code
        check_order(proto, (0, 1))
        transport.close()

    arun(loop, main(), 15)


@pytest.mark.parametrize("method, code", SIGNAL_METHODS)
def test_process_signals(loop, method, code):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import sys; sys.stdin.read()", stdin=PIPE)
        assert proc.returncode is None
        _signal(proc, method)
        assert await proc.wait() == code
        assert proc.returncode == code

    arun(loop, main(), 15)


def test_close_kills_running_child(loop):
    factory = RecorderFactory(loop)

    async def main():
        transport, proto = await loop.subprocess_exec(
            factory, PY, "-c", "import time; time.sleep(60)")
        assert transport.get_returncode() is None
        transport.close()
        assert transport.is_closing()
        transport.close()  # idempotent
        await proto.lost
        return transport, proto

    transport, proto = arun(loop, main(), 15)
    assert transport.get_returncode() == -signal.SIGKILL
    check_order(proto, (0, 1, 2))
    assert_reaped(transport.get_pid())


def test_close_after_exit_keeps_returncode(loop):
    factory = RecorderFactory(loop)

    async def main():
        transport, proto = await loop.subprocess_exec(
            factory, PY, "-c", "raise SystemExit(5)", stdin=DEVNULL)
        await proto.exited
        transport.close()
        await proto.lost
        return transport

    transport = arun(loop, main(), 15)
    assert transport.get_returncode() == 5


def test_signal_after_exit_raises_process_lookup_error(loop):
    factory = RecorderFactory(loop)

    async def main():
        transport, proto = await loop.subprocess_exec(factory, "true")
        await proto.lost
        return transport

    transport = arun(loop, main(), 15)
    assert transport.get_returncode() == 0
    with pytest.raises(ProcessLookupError):
        transport.send_signal(signal.SIGTERM)
    with pytest.raises(ProcessLookupError):
        transport.terminate()
    with pytest.raises(ProcessLookupError):
        transport.kill()
    transport.close()
    assert transport.get_returncode() == 0


@pytest.mark.skipif(sys.version_info < (3, 11),
                    reason="3.10's Process.wait() returns before connection_lost")
def test_process_signal_after_wait_raises(loop):
    """wait() called while the child runs returns only once the transport
    finished (3.11+); the process is gone for send_signal() then.

    (A wait() called after the exit status is known but before
    connection_lost ran returns at once, and send_signal() is then a no-op:
    hence the child is kept alive until wait() is pending.)"""
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import sys; sys.stdin.read()", stdin=PIPE)
        waiter = asyncio.ensure_future(proc.wait())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert not waiter.done()
        proc.stdin.close()
        assert await waiter == 0
        with pytest.raises(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with pytest.raises(ProcessLookupError):
            proc.terminate()
        with pytest.raises(ProcessLookupError):
            proc.kill()

    arun(loop, main(), 15)


def test_low_level_large_stdin_flow_control(loop):
    """8 MiB written to the stdin pipe transport in one go: the protocol is
    paused then resumed, and `cat` echoes every byte back."""
    factory = RecorderFactory(loop)
    data = payload(8 * MiB, seed=11)

    async def main():
        transport, proto = await loop.subprocess_exec(factory, "cat", stderr=DEVNULL)
        stdin = transport.get_pipe_transport(0)
        stdin.write(data)
        assert stdin.get_write_buffer_size() > 0
        stdin.write_eof()
        await proto.lost
        return transport, proto

    transport, proto = arun(loop, main(), 30)
    assert transport.get_returncode() == 0
    assert len(proto.data[1]) == len(data)
    assert sha256(bytes(proto.data[1])) == sha256(data)
    kinds = [e[0] for e in proto.events]
    assert "pause" in kinds and "resume" in kinds
    assert kinds.index("pause") < kinds.index("resume")
    proto.events = [e for e in proto.events if e[0] not in ("pause", "resume")]
    check_order(proto, (0, 1))
    transport.close()


# ---------------------------------------------------------------------------
# 3. Popen arguments are passed through


def test_cwd(loop, tmp_path):
    async def main():
        exec_out = await py("import os; print(os.getcwd())", cwd=tmp_path)
        proc = await asyncio.create_subprocess_shell("pwd -P", stdout=PIPE, cwd=str(tmp_path))
        shell_out = await proc.communicate()
        return exec_out, (shell_out, proc.returncode)

    exec_out, shell_out = arun(loop, main(), 15)
    real = os.path.realpath(tmp_path).encode()
    assert exec_out == (real + b"\n", 0)
    assert shell_out == ((real + b"\n", None), 0)


def test_env_replaces_environment(loop):
    env_prog = shutil.which("env")
    if env_prog is None:
        pytest.skip("no env(1)")

    async def main():
        proc = await asyncio.create_subprocess_exec(
            env_prog, stdout=PIPE, env={"UVRS_A": "1", "UVRS_B": "two words"})
        return await proc.communicate(), proc.returncode

    (out, _), rc = arun(loop, main(), 15)
    assert rc == 0
    assert sorted(out.splitlines()) == [b"UVRS_A=1", b"UVRS_B=two words"]


def test_env_shell(loop):
    async def main():
        proc = await asyncio.create_subprocess_shell(
            'printf "%s" "$UVRS_VAR"', stdout=PIPE, env=dict(os.environ, UVRS_VAR="shell env"))
        return await proc.communicate()

    assert arun(loop, main(), 15) == (b"shell env", None)


def test_executable_overrides_argv0(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            "fake-argv0", "-c", 'printf "%s" "$0"', executable="/bin/sh", stdout=PIPE)
        return await proc.communicate(), proc.returncode

    assert arun(loop, main(), 15) == ((b"fake-argv0", None), 0)


def test_pass_fds(loop):
    r, w = os.pipe()
    try:
        async def main():
            return await py("import os, sys; os.write(int(sys.argv[1]), b'passed')",
                            str(w), pass_fds=(w,))

        assert arun(loop, main(), 15) == (b"", 0)
        os.close(w)
        w = None
        assert read_fd_to_eof(r) == b"passed"
    finally:
        os.close(r)
        if w is not None:
            os.close(w)


@pytest.mark.parametrize("close_fds", [True, False])
def test_close_fds(loop, close_fds):
    import fcntl

    r, w0 = os.pipe()
    w = fcntl.fcntl(w0, fcntl.F_DUPFD, 200)  # a high number nothing else uses
    os.close(w0)
    os.set_inheritable(w, True)
    code = ("import os, sys\n"
            "try:\n"
            "    os.write(int(sys.argv[1]), b'leaked')\n"
            "    print('open')\n"
            "except OSError as e:\n"
            "    print('closed', e.errno)\n")
    try:
        async def main():
            return await py(code, str(w), close_fds=close_fds)

        out = arun(loop, main(), 15)
        os.close(w)
        w = None
        if close_fds:
            assert out == (f"closed {errno.EBADF}\n".encode(), 0)
            assert read_fd_to_eof(r) == b""
        else:
            assert out == (b"open\n", 0)
            assert read_fd_to_eof(r) == b"leaked"
    finally:
        os.close(r)
        if w is not None:
            os.close(w)


@pytest.mark.parametrize("new_session", [True, False])
def test_start_new_session(loop, new_session):
    async def main():
        return await py("import os; print(os.getpid(), os.getsid(0))",
                        start_new_session=new_session)

    out, rc = arun(loop, main(), 15)
    assert rc == 0
    pid, sid = map(int, out.split())
    if new_session:
        assert sid == pid
    else:
        assert sid == os.getsid(0)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="process_group is 3.11+")
def test_process_group(loop):
    async def main():
        return await py("import os; print(os.getpid(), os.getpgid(0), os.getsid(0))",
                        process_group=0)

    out, rc = arun(loop, main(), 15)
    assert rc == 0
    pid, pgid, sid = map(int, out.split())
    assert pgid == pid
    assert pgid != os.getpgid(0)
    assert sid == os.getsid(0)  # a new group, not a new session


def test_umask(loop):
    async def main():
        return await py("import os; print(os.umask(0))", umask=0o027)

    assert arun(loop, main(), 15) == (b"%d\n" % 0o027, 0)


@linux_only
@pytest.mark.parametrize("restore", [True, False])
def test_restore_signals(loop, restore):
    """Python ignores SIGPIPE; restore_signals=True resets it to SIG_DFL in
    the child.  `cat /proc/self/status` shows the child's ignored set."""
    if signal.getsignal(signal.SIGPIPE) != signal.SIG_IGN:
        pytest.skip("SIGPIPE is not ignored in this process")

    async def main():
        proc = await asyncio.create_subprocess_exec(
            "cat", "/proc/self/status", stdout=PIPE, restore_signals=restore)
        return await proc.communicate(), proc.returncode

    (out, _), rc = arun(loop, main(), 15)
    assert rc == 0
    line = [ln for ln in out.splitlines() if ln.startswith(b"SigIgn:")][0]
    ignored = int(line.split()[1], 16)
    assert bool(ignored & (1 << (signal.SIGPIPE - 1))) is (not restore)


def test_preexec_fn(loop, tmp_path):
    marker = tmp_path / "preexec"

    def preexec():
        os.putenv("UVRS_PREEXEC", "ran")
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)

    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import os; print(os.environ.get('UVRS_PREEXEC'))",
            stdout=PIPE, preexec_fn=preexec)
        out, _ = await proc.communicate()
        return out, proc.returncode, proc.pid

    out, rc, pid = arun(loop, main(), 15)
    assert (out, rc) == (b"ran\n", 0)
    assert marker.read_bytes() == str(pid).encode()


def test_user_and_group(loop):
    kwargs = {"user": os.getuid(), "group": os.getgid()}
    if os.geteuid() == 0:
        kwargs["extra_groups"] = [os.getgid()]

    async def main():
        return await py("import os; print(os.getuid(), os.getgid(), sorted(os.getgroups()))",
                        **kwargs)

    out, rc = arun(loop, main(), 15)
    assert rc == 0
    expected = f"{os.getuid()} {os.getgid()} "
    assert out.decode().startswith(expected)
    if "extra_groups" in kwargs:
        assert out.decode() == f"{expected}[{os.getgid()}]\n"


# ---------------------------------------------------------------------------
# 4. argument errors

COMMON_BAD = [
    ({"universal_newlines": True}, "universal_newlines must be False"),
    ({"bufsize": 1}, "bufsize must be 0"),
    ({"text": True}, "text must be False"),
    ({"encoding": "utf-8"}, "encoding must be None"),
    ({"errors": "strict"}, "errors must be None"),
]
EXEC_BAD = COMMON_BAD + [({"shell": True}, "shell must be False")]
SHELL_BAD = COMMON_BAD + [({"shell": False}, "shell must be True")]


def _bad_params(cases):
    return [pytest.param(kw, msg, id=next(iter(kw))) for kw, msg in cases]


@pytest.mark.parametrize("api", ["loop", "create"])
@pytest.mark.parametrize("kwargs, message", _bad_params(EXEC_BAD))
def test_subprocess_exec_bad_args(loop, api, kwargs, message):
    factory = RecorderFactory(loop)

    async def main():
        if api == "loop":
            await loop.subprocess_exec(factory, PY, "-c", "pass", **kwargs)
        else:
            await asyncio.create_subprocess_exec(PY, "-c", "pass", **kwargs)

    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        arun(loop, main())
    assert factory.protocols == []


@pytest.mark.parametrize("api", ["loop", "create"])
@pytest.mark.parametrize("kwargs, message", _bad_params(SHELL_BAD))
def test_subprocess_shell_bad_args(loop, api, kwargs, message):
    factory = RecorderFactory(loop)

    async def main():
        if api == "loop":
            await loop.subprocess_shell(factory, "true", **kwargs)
        else:
            await asyncio.create_subprocess_shell("true", **kwargs)

    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        arun(loop, main())
    assert factory.protocols == []


@pytest.mark.parametrize("cmd", [["ls"], None, 42], ids=["list", "None", "int"])
def test_subprocess_shell_cmd_must_be_string(loop, cmd):
    factory = RecorderFactory(loop)
    with pytest.raises(ValueError, match="^cmd must be a string$"):
        arun(loop, loop.subprocess_shell(factory, cmd))
    assert factory.protocols == []


def test_default_args_accepted(loop):
    """The allowed values of the checked arguments are accepted."""
    async def main():
        t1, p1 = await loop.subprocess_exec(
            lambda: SubprocessRecorder(loop), "true", universal_newlines=False, shell=False,
            bufsize=0, text=False, encoding=None, errors=None)
        t2, p2 = await loop.subprocess_shell(
            lambda: SubprocessRecorder(loop), "exit 2", universal_newlines=False, shell=True,
            bufsize=0, text=None, encoding=None, errors=None)
        await p1.lost
        await p2.lost
        t1.close()
        t2.close()
        return t1.get_returncode(), t2.get_returncode()

    assert arun(loop, main(), 15) == (0, 2)


# ---------------------------------------------------------------------------
# 5. spawn failures leave nothing behind


def _spawn_failures(tmp_path):
    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    missing_dir = tmp_path / "no-such-dir"
    return {
        "missing-path": ("exec", (MISSING,), {}, FileNotFoundError, errno.ENOENT, MISSING),
        "missing-abs": ("exec", ("/nonexistent/" + MISSING,), {}, FileNotFoundError,
                        errno.ENOENT, "/nonexistent/" + MISSING),
        "not-executable": ("exec", (str(script),), {}, PermissionError, errno.EACCES,
                           str(script)),
        "directory": ("exec", (str(tmp_path),), {}, PermissionError, errno.EACCES,
                      str(tmp_path)),
        "bad-cwd": ("exec", ("true",), {"cwd": str(missing_dir)}, FileNotFoundError,
                    errno.ENOENT, str(missing_dir)),
        "cwd-is-file": ("exec", ("true",), {"cwd": str(a_file)}, NotADirectoryError,
                        errno.ENOTDIR, str(a_file)),
        "shell-bad-cwd": ("shell", ("true",), {"cwd": str(missing_dir)}, FileNotFoundError,
                          errno.ENOENT, str(missing_dir)),
    }


SPAWN_FAILURES = ["missing-path", "missing-abs", "not-executable", "directory",
                  "bad-cwd", "cwd-is-file", "shell-bad-cwd"]


@pytest.mark.parametrize("api", ["create", "loop"])
@pytest.mark.parametrize("case", SPAWN_FAILURES)
def test_spawn_failure(loop, tmp_path, case, api):
    mode, argv, kwargs, exc_type, err, filename = _spawn_failures(tmp_path)[case]
    factory = RecorderFactory(loop)

    async def spawn():
        if api == "create":
            if mode == "exec":
                return await asyncio.create_subprocess_exec(
                    *argv, stdin=PIPE, stdout=PIPE, stderr=PIPE, **kwargs)
            return await asyncio.create_subprocess_shell(
                argv[0], stdin=PIPE, stdout=PIPE, stderr=PIPE, **kwargs)
        if mode == "exec":
            return await loop.subprocess_exec(factory, *argv, **kwargs)
        return await loop.subprocess_shell(factory, argv[0], **kwargs)

    async def true_rc():
        proc = await asyncio.create_subprocess_exec(
            "true", stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL)
        return await proc.wait()

    # Warm up: whatever the loop sets up lazily for its first child.
    assert arun(loop, true_rc(), 15) == 0
    gc.collect()  # fds of earlier tests' garbage must not close mid-test
    fds_before = open_fd_count()
    zombies_before = zombie_children()

    with pytest.raises(exc_type) as info:
        arun(loop, spawn(), 15)
    assert info.value.errno == err
    assert info.value.filename == filename

    gc.collect()
    assert open_fd_count() == fds_before
    if zombies_before is not None:
        assert zombie_children() <= zombies_before
    for proto in factory.protocols:  # a protocol may exist, but never connected
        assert proto.events == []
    # The loop still works.
    assert arun(loop, true_rc(), 15) == 0


# ---------------------------------------------------------------------------
# 6. throughput integrity


def test_large_communicate(loop):
    data = payload(8 * MiB, seed=3)

    async def main():
        proc = await asyncio.create_subprocess_exec("cat", stdin=PIPE, stdout=PIPE)
        out, err = await proc.communicate(data)
        return out, err, proc.returncode

    out, err, rc = arun(loop, main(), 30)
    assert (err, rc) == (None, 0)
    assert len(out) == len(data)
    assert sha256(out) == sha256(data)


def test_large_streaming_with_drain(loop):
    data = payload(8 * MiB, seed=4)

    async def main():
        proc = await asyncio.create_subprocess_exec("cat", stdin=PIPE, stdout=PIPE)

        async def writer():
            view = memoryview(data)
            for i in range(0, len(view), 65536):
                proc.stdin.write(view[i:i + 65536])
                await proc.stdin.drain()
            proc.stdin.close()
            await proc.stdin.wait_closed()

        _, out = await asyncio.gather(writer(), read_chunks(proc.stdout))
        return out, await proc.wait()

    out, rc = arun(loop, main(), 30)
    assert rc == 0
    assert len(out) == len(data)
    assert sha256(out) == sha256(data)


def test_large_stdout_and_stderr_together(loop):
    """4 MiB on stdout and a different 4 MiB on stderr, interleaved."""
    code = ("import random, sys\n"
            "a = random.Random(5).randbytes(4 << 20)\n"
            "b = random.Random(6).randbytes(4 << 20)\n"
            "for i in range(0, len(a), 1 << 16):\n"
            "    sys.stdout.buffer.write(a[i:i + (1 << 16)]); sys.stdout.flush()\n"
            "    sys.stderr.buffer.write(b[i:i + (1 << 16)]); sys.stderr.flush()\n")

    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", code, stdout=PIPE, stderr=PIPE)
        out, err = await proc.communicate()
        return out, err, proc.returncode

    out, err, rc = arun(loop, main(), 30)
    assert rc == 0
    assert sha256(out) == sha256(payload(4 * MiB, seed=5))
    assert sha256(err) == sha256(payload(4 * MiB, seed=6))


# ---------------------------------------------------------------------------
# 7. concurrency


def test_many_processes_at_once(loop):
    code = "import sys; sys.stdout.write(sys.argv[1]); sys.exit(int(sys.argv[1]) % 7)"

    async def one(i):
        proc = await asyncio.create_subprocess_exec(PY, "-c", code, str(i), stdout=PIPE)
        out, _ = await proc.communicate()
        return out, proc.returncode

    async def main():
        return await asyncio.gather(*(one(i) for i in range(20)))

    results = arun(loop, main(), 30)
    assert results == [(str(i).encode(), i % 7) for i in range(20)]


def test_concurrent_cats_do_not_mix(loop):
    blobs = [payload(256 * 1024, seed=100 + i) for i in range(8)]

    async def one(blob):
        proc = await asyncio.create_subprocess_exec("cat", stdin=PIPE, stdout=PIPE)
        out, _ = await proc.communicate(blob)
        return sha256(out), proc.returncode

    async def main():
        return await asyncio.gather(*(one(b) for b in blobs))

    assert arun(loop, main(), 30) == [(sha256(b), 0) for b in blobs]


# ---------------------------------------------------------------------------
# 8. closing stdin

STDIN_LEN = "import sys; print(len(sys.stdin.buffer.read()))"


@pytest.mark.parametrize("how", ["close", "write_eof", "communicate", "close-empty",
                                 "devnull"])
def test_stdin_eof(loop, how):
    data = payload(200_000, seed=7)  # more than a pipe buffer holds
    expected = {"close-empty": 0, "devnull": 0}.get(how, len(data))

    async def main():
        stdin = DEVNULL if how == "devnull" else PIPE
        proc = await asyncio.create_subprocess_exec(PY, "-c", STDIN_LEN, stdin=stdin,
                                                    stdout=PIPE)
        if how == "communicate":
            out, _ = await proc.communicate(data)
        else:
            if how == "close":
                proc.stdin.write(data)
                proc.stdin.close()
                assert proc.stdin.is_closing()
                await proc.stdin.wait_closed()
            elif how == "write_eof":
                assert proc.stdin.can_write_eof()
                proc.stdin.write(data)
                await proc.stdin.drain()
                proc.stdin.write_eof()
            elif how == "close-empty":
                proc.stdin.close()
            else:
                assert proc.stdin is None
            out = await proc.stdout.read()
        return out, await proc.wait()

    assert arun(loop, main(), 15) == (b"%d\n" % expected, 0)


# ---------------------------------------------------------------------------
# 9. the child stops reading while we still write


@pytest.mark.parametrize("child, expected", [
    pytest.param((PY, "-c", "raise SystemExit(5)"), (b"", 5), id="exec-exit5"),
    pytest.param(("/bin/sh", "-c", "exit 5"), (b"", 5), id="sh-exit5"),
    pytest.param((PY, "-c", "import os; os.close(0); os.write(1, b'bye')"), (b"bye", 0),
                 id="closes-stdin"),
])
def test_communicate_child_exits_early(loop, child, expected):
    errors = catch_loop_errors(loop)
    data = payload(4 * MiB, seed=8)

    async def main():
        proc = await asyncio.create_subprocess_exec(*child, stdin=PIPE, stdout=PIPE)
        out, _ = await proc.communicate(data)
        return out, proc.returncode

    assert arun(loop, main(), 30) == expected
    assert errors == []


def test_drain_raises_when_child_is_gone(loop):
    data = payload(64 * 1024, seed=9)

    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", "raise SystemExit(5)",
                                                    stdin=PIPE)
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for _ in range(1000):  # at most 64 MiB
                proc.stdin.write(data)
                await proc.stdin.drain()
        return await proc.wait()

    assert arun(loop, main(), 30) == 5


# ---------------------------------------------------------------------------
# 10. children the loop did not spawn are not the loop's business


def test_foreign_children_in_thread(loop):
    """subprocess.run() in a thread while the loop runs its own children: a
    loop that reaped every child (waitpid(-1)) would make Popen.wait() see
    ECHILD and report 0 instead of 7."""
    results = []
    failures = []
    started = threading.Event()

    def thread_main():
        started.set()
        try:
            for _ in range(15):
                results.append(subprocess.run(["/bin/sh", "-c", "exit 7"]).returncode)
        except BaseException as exc:  # pragma: no cover
            failures.append(exc)

    async def one(i):
        proc = await asyncio.create_subprocess_exec("/bin/sh", "-c", f"exit {i + 1}")
        return await proc.wait()

    async def main():
        codes = []
        for i in range(15):
            codes.append(await one(i))
        return codes

    thread = threading.Thread(target=thread_main)
    thread.start()
    try:
        started.wait(10)
        codes = arun(loop, main(), 30)
    finally:
        thread.join(30)
    assert not thread.is_alive()
    assert failures == []
    assert codes == [i + 1 for i in range(15)]
    assert results == [7] * 15


@pytest.mark.skipif(not hasattr(os, "waitid"), reason="needs os.waitid")
def test_foreign_child_exits_while_loop_runs(loop):
    """A Popen child that exits (SIGCHLD) while the loop is busy with its own
    children keeps its status for Popen.wait()."""
    foreign = subprocess.Popen([PY, "-c", "raise SystemExit(9)"])
    try:
        async def main():
            codes = []
            for _ in range(50):
                proc = await asyncio.create_subprocess_exec("true")
                codes.append(await proc.wait())
                # WNOWAIT: look without reaping.
                st = os.waitid(os.P_PID, foreign.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                if st is not None:
                    return codes, st
            return codes, None

        codes, st = arun(loop, main(), 30)
        assert set(codes) == {0}
        assert st is not None, "the foreign child did not exit in time"
        assert (st.si_pid, st.si_status) == (foreign.pid, 9)
        assert foreign.wait(10) == 9
    finally:
        if foreign.returncode is None:
            foreign.kill()
            foreign.wait()
