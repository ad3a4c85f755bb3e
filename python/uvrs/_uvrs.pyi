"""Native core of uvrs (Rust, PyO3, libuv). See docs/architecture.md."""

import asyncio
import sys
from collections.abc import Callable, Coroutine, Generator
from contextvars import Context
from socket import socket
from typing import Any, TypeVar

from typing_extensions import Self, TypeAlias, TypeVarTuple, Unpack, disjoint_base

from ._handles import Handle, TimerHandle

__all__ = ["LoopCore", "_set_handle_types", "LIBUV_VERSION"]

LIBUV_VERSION: str
__version__: str

def _cancel_handle(handle: object, /) -> None: ...

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

if sys.version_info >= (3, 12):
    _CoroutineLike: TypeAlias = Coroutine[Any, Any, _T]
else:
    _CoroutineLike: TypeAlias = Generator[Any, None, _T] | Coroutine[Any, Any, _T]

_TaskFactory: TypeAlias = Callable[..., asyncio.Future[Any]]

@disjoint_base
class LoopCore:
    """Hot paths of the event loop: ready queue, timers, libuv, GIL handling.

    Subclassed by ``uvrs.Loop``; not meant to be used on its own.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Self: ...
    def time(self) -> float: ...
    def call_soon(
        self,
        callback: Callable[[Unpack[_Ts]], object],
        *args: Unpack[_Ts],
        context: Context | None = None,
    ) -> Handle: ...
    def call_later(
        self,
        delay: float,
        callback: Callable[[Unpack[_Ts]], object],
        *args: Unpack[_Ts],
        context: Context | None = None,
    ) -> TimerHandle: ...
    def call_at(
        self,
        when: float,
        callback: Callable[[Unpack[_Ts]], object],
        *args: Unpack[_Ts],
        context: Context | None = None,
    ) -> TimerHandle: ...
    def call_soon_threadsafe(
        self,
        callback: Callable[[Unpack[_Ts]], object],
        *args: Unpack[_Ts],
        context: Context | None = None,
    ) -> Handle: ...
    def _timer_handle_cancelled(self, handle: TimerHandle) -> None: ...
    def create_future(self) -> asyncio.Future[Any]: ...
    if sys.version_info >= (3, 13):
        def create_task(
            self,
            coro: _CoroutineLike[_T],
            *,
            name: str | None = None,
            context: Context | None = None,
            eager_start: bool | None = None,
        ) -> asyncio.Task[_T]: ...
    elif sys.version_info >= (3, 11):
        def create_task(
            self,
            coro: _CoroutineLike[_T],
            *,
            name: str | None = None,
            context: Context | None = None,
        ) -> asyncio.Task[_T]: ...
    else:
        def create_task(
            self, coro: _CoroutineLike[_T], *, name: str | None = None
        ) -> asyncio.Task[_T]: ...

    def set_task_factory(self, factory: _TaskFactory | None) -> None: ...
    def get_task_factory(self) -> _TaskFactory | None: ...
    def get_debug(self) -> bool: ...
    def _set_debug_flag(self, enabled: bool) -> None: ...
    def is_running(self) -> bool: ...
    def is_closed(self) -> bool: ...
    @property
    def _closed(self) -> bool: ...
    def stop(self) -> None: ...
    def _check_closed(self) -> None: ...
    def _run_native(self) -> None: ...
    def _close_native(self) -> None: ...
    def _watch_wakeup_fd(
        self, sock: socket | int, on_data: Callable[[bytes], object] | None = None
    ) -> None: ...
    def _add_reader(self, fd: int, callback: Callable[..., object], *args: Any) -> Handle: ...
    def _add_writer(self, fd: int, callback: Callable[..., object], *args: Any) -> Handle: ...
    def _remove_reader(self, fd: int) -> bool: ...
    def _remove_writer(self, fd: int) -> bool: ...
    def _unwatch_wakeup_fd(self) -> None: ...

def _set_handle_types(handle: type[Handle], timer: type[TimerHandle]) -> None: ...
