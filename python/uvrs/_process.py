"""Subprocesses: ``subprocess_exec`` / ``subprocess_shell``.

The child is started by ``subprocess.Popen``, as asyncio does, and not by
libuv's ``uv_spawn``:

* Popen takes every argument asyncio accepts (``preexec_fn``, ``user``,
  ``group``, ``extra_groups``, ``umask``, ``process_group``, ``pass_fds``,
  ``restore_signals`` ...) and raises the same exceptions for spawn failures;
  ``uv_spawn`` can express only part of that.
* Popen spawns faster: CPython's ``_posixsubprocess`` uses ``vfork()`` on
  Linux, where libuv forks the whole address space (uvloop spawns about 3x
  slower than asyncio for that reason).  docs/architecture.md has numbers.

The stdio pipes are uvrs's native pipe transports (``connect_read_pipe`` /
``connect_write_pipe``), and the transport is asyncio's own
``BaseSubprocessTransport``, so callback order follows the running Python
exactly.  Exit is observed without reaping anybody else's children: a pidfd
watched by the loop on Linux, else a thread blocked in ``waitpid(pid)``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from asyncio import base_subprocess
from asyncio.log import logger

from ._threadpipe import ThreadedWritePipeTransport, post_to_loop, threaded_pipes

__all__ = ("ProcessMixin",)

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only
_PIPE_SIZE = 256 * 1024

_can_use_pidfd = None


def _pidfd_available():
    """Whether pidfd_open() works here (Linux 5.3+), probed once."""
    global _can_use_pidfd
    if _can_use_pidfd is None:
        ok = False
        if hasattr(os, "pidfd_open"):
            try:
                os.close(os.pidfd_open(os.getpid(), 0))
                ok = True
            except OSError:
                pass
        _can_use_pidfd = ok
    return _can_use_pidfd


class SubprocessTransport(base_subprocess.BaseSubprocessTransport):
    """asyncio's subprocess transport; the child is a Popen."""

    def _start(self, args, shell, stdin, stdout, stderr, bufsize, **kwargs):
        self._proc = subprocess.Popen(
            args,
            shell=shell,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            universal_newlines=False,
            bufsize=bufsize,
            **kwargs,
        )
        if _F_SETPIPE_SZ is not None:
            for pipe in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
                if pipe is not None:
                    _grow_pipe(pipe.fileno())

    def _process_exited(self, returncode):
        # A threaded stdin pipe (Windows) cannot see its reader go away: the
        # child's exit says so (after the pipes are connected, if not yet).
        if 0 in self._pipes and threaded_pipes():
            self._call(self._stdin_reader_gone)
        super()._process_exited(returncode)

    def _stdin_reader_gone(self):
        proto = self._pipes.get(0)
        pipe = getattr(proto, "pipe", None)
        if isinstance(pipe, ThreadedWritePipeTransport):
            pipe._peer_gone()


def _grow_pipe(fd):
    """Linux: a 256 KiB pipe instead of 64 KiB.

    Fewer, larger reads and writes per round trip: ``cat`` of 50 MiB goes
    from about 0.8x to about 1x uvloop, whose libuv uses socketpairs (with
    their larger buffers) for stdio.  The child still sees a pipe, as under
    asyncio.  Refused (pipe-user-pages limit) is fine: the pipe stays as is.
    """
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_SIZE)
    except OSError:
        pass


class _ChildWatch:
    """Waits for one child to exit and reports it to its transport."""

    __slots__ = ("loop", "transport", "pid", "pidfd", "done")

    def __init__(self, loop, transport):
        self.loop = loop
        self.transport = transport
        self.pid = transport.get_pid()
        self.pidfd = -1
        self.done = False

    def start(self):
        if _pidfd_available():
            try:
                self.pidfd = os.pidfd_open(self.pid, 0)
            except OSError:
                self.pidfd = -1
        if self.pidfd >= 0:
            self.loop._add_reader(self.pidfd, self._on_pidfd)
        else:
            threading.Thread(
                target=self._wait_in_thread, name=f"uvrs-waitpid-{self.pid}", daemon=True
            ).start()

    def _reap(self, options):
        """waitpid() for our child only; its exit code, or None if still running."""
        try:
            pid, status = os.waitpid(self.pid, options)
        except ChildProcessError:
            # Somebody reaped it already (Popen.poll() in close(), or a
            # SIGCHLD handler): Popen may know the code.
            proc = self.transport.get_extra_info("subprocess")
            code = getattr(proc, "returncode", None)
            if code is None:
                logger.warning(
                    "child process pid %d exit status already read: will report returncode 255",
                    self.pid,
                )
                code = 255
            return code
        if pid == 0:
            return None
        return os.waitstatus_to_exitcode(status)

    def _on_pidfd(self):
        code = self._reap(os.WNOHANG)
        if code is None:
            return
        self._finish_pidfd()
        self._report(code)

    def _finish_pidfd(self):
        fd, self.pidfd = self.pidfd, -1
        if fd >= 0:
            self.loop._remove_reader(fd)
            os.close(fd)

    def _wait_in_thread(self):
        if sys.platform == "win32":
            # waitpid() takes a process handle there; Popen holds it.
            code = self.transport.get_extra_info("subprocess").wait()
        else:
            code = self._reap(0)
        if not post_to_loop(self.loop, self._report, code):
            logger.warning("Loop %r that handles pid %r is closed", self.loop, self.pid)

    def _report(self, code):
        if self.done:
            return
        self.done = True
        self.loop._child_watches.pop(self.pid, None)
        self.transport._process_exited(code)

    def cancel(self):
        """The loop is closing: stop watching (the child is not reaped)."""
        self.done = True
        fd, self.pidfd = self.pidfd, -1
        if fd >= 0:
            os.close(fd)


class ProcessMixin:
    _child_watches = None

    async def subprocess_shell(
        self,
        protocol_factory,
        cmd,
        *,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=False,
        shell=True,
        bufsize=0,
        encoding=None,
        errors=None,
        text=None,
        **kwargs,
    ):
        if not isinstance(cmd, (bytes, str)):
            raise ValueError("cmd must be a string")
        _check_popen_args(universal_newlines, not shell, "shell must be True", bufsize, text,
                          encoding, errors)  # fmt: skip
        return await self._spawn(protocol_factory, cmd, True, f"run shell command {cmd!r}",
                                 stdin, stdout, stderr, bufsize, kwargs)  # fmt: skip

    async def subprocess_exec(
        self,
        protocol_factory,
        program,
        *args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=False,
        shell=False,
        bufsize=0,
        encoding=None,
        errors=None,
        text=None,
        **kwargs,
    ):
        _check_popen_args(universal_newlines, shell, "shell must be False", bufsize, text,
                          encoding, errors)  # fmt: skip
        return await self._spawn(protocol_factory, (program, *args), False,
                                 f"execute program {program!r}", stdin, stdout, stderr, bufsize,
                                 kwargs)  # fmt: skip

    async def _spawn(self, protocol_factory, args, shell, what, stdin, stdout, stderr, bufsize,
                     kwargs):  # fmt: skip
        """What subprocess_exec and subprocess_shell share once their
        arguments are checked (debug logging as asyncio's, without the
        arguments: they may hold secrets)."""
        protocol = protocol_factory()
        debug = self.get_debug()
        if debug:
            _log_subprocess(what, stdin, stdout, stderr)
        transport = await self._make_subprocess_transport(
            protocol, args, shell, stdin, stdout, stderr, bufsize, **kwargs
        )
        if debug:
            logger.info("%s: %r", what, transport)
        return transport, protocol

    async def _make_subprocess_transport(
        self, protocol, args, shell, stdin, stdout, stderr, bufsize, extra=None, **kwargs
    ):
        self._check_closed()
        waiter = self.create_future()
        transport = SubprocessTransport(
            self, protocol, args, shell, stdin, stdout, stderr, bufsize,
            waiter=waiter, extra=extra, **kwargs,
        )  # fmt: skip
        watch = _ChildWatch(self, transport)
        if self._child_watches is None:
            self._child_watches = {}
        self._child_watches[watch.pid] = watch
        watch.start()
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transport.close()
            await transport._wait()
            raise
        return transport

    def _close_child_watches(self):
        watches = self._child_watches
        if watches:
            self._child_watches = None
            for watch in watches.values():
                watch.cancel()


def _check_popen_args(universal_newlines, bad_shell, shell_msg, bufsize, text, encoding, errors):
    """The arguments asyncio refuses, with its messages, in its order."""
    if universal_newlines:
        raise ValueError("universal_newlines must be False")
    if bad_shell:
        raise ValueError(shell_msg)
    if bufsize != 0:
        raise ValueError("bufsize must be 0")
    if text:
        raise ValueError("text must be False")
    if encoding is not None:
        raise ValueError("encoding must be None")
    if errors is not None:
        raise ValueError("errors must be None")


def _log_subprocess(msg, stdin, stdout, stderr):
    info = [msg]
    if stdin is not None:
        info.append(f"stdin={_format_pipe(stdin)}")
    if stdout is not None and stderr == subprocess.STDOUT:
        info.append(f"stdout=stderr={_format_pipe(stdout)}")
    else:
        if stdout is not None:
            info.append(f"stdout={_format_pipe(stdout)}")
        if stderr is not None:
            info.append(f"stderr={_format_pipe(stderr)}")
    logger.debug(" ".join(info))


def _format_pipe(fd):
    if fd == subprocess.PIPE:
        return "<pipe>"
    if fd == subprocess.STDOUT:
        return "<stdout>"
    return repr(fd)
