import asyncio
import ssl
import sys
from collections.abc import Awaitable, Callable, Coroutine, Generator, Sequence
from concurrent.futures import Executor
from socket import socket
from typing import IO, Any, Literal, NamedTuple, TypeVar

from typing_extensions import TypeAlias, TypeVarTuple, Unpack, deprecated

from . import _uvrs
from ._handles import Handle as Handle
from ._handles import TimerHandle as TimerHandle

if sys.version_info >= (3, 14):
    __all__ = ["Handle", "Loop", "LoopMetrics", "TimerHandle", "install", "new_event_loop", "run"]
else:
    __all__ = [
        "Handle",
        "Loop",
        "LoopMetrics",
        "TimerHandle",
        "install",
        "new_event_loop",
        "run",
        "EventLoopPolicy",
        "Policy",
    ]

__version__: str

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")
_ProtocolT = TypeVar("_ProtocolT", bound=asyncio.BaseProtocol)

if sys.version_info >= (3, 12):
    _AwaitableLike: TypeAlias = Awaitable[_T]
    _CoroutineLike: TypeAlias = Coroutine[Any, Any, _T]
else:
    _AwaitableLike: TypeAlias = Generator[Any, None, _T] | Awaitable[_T]
    _CoroutineLike: TypeAlias = Generator[Any, None, _T] | Coroutine[Any, Any, _T]

_Context: TypeAlias = dict[str, Any]
_ExceptionHandler: TypeAlias = Callable[[asyncio.AbstractEventLoop, _Context], object]
_ProtocolFactory: TypeAlias = Callable[[], asyncio.BaseProtocol]
_SSLContext: TypeAlias = bool | ssl.SSLContext | None
_Address: TypeAlias = Any
_FileDescriptorLike: TypeAlias = Any

class LoopMetrics(NamedTuple):
    """libuv's counters for one loop, as ``Loop.metrics()`` returns them."""

    idle_time: float | None
    loop_count: int
    events: int
    events_waiting: int

class Loop(_uvrs.LoopCore, asyncio.AbstractEventLoop):
    """asyncio event loop on libuv, implemented in Rust."""

    slow_callback_duration: float
    def __init__(self) -> None: ...
    # Running and stopping (time, callbacks, futures and tasks come from LoopCore).
    def run_forever(self) -> None: ...
    def run_until_complete(self, future: _AwaitableLike[_T]) -> _T: ...
    def close(self) -> None: ...
    async def shutdown_asyncgens(self) -> None: ...
    async def shutdown_default_executor(self, timeout: float | None = None) -> None: ...
    # Threads and executors.
    def run_in_executor(
        self,
        executor: Executor | None,
        func: Callable[[Unpack[_Ts]], _T],
        *args: Unpack[_Ts],
    ) -> asyncio.Future[_T]: ...
    def set_default_executor(self, executor: Executor) -> None: ...
    # Error handling.
    def set_exception_handler(self, handler: _ExceptionHandler | None) -> None: ...
    def get_exception_handler(self) -> _ExceptionHandler | None: ...
    def default_exception_handler(self, context: _Context) -> None: ...
    def call_exception_handler(self, context: _Context) -> None: ...
    # libuv's counters (a uvrs extension).
    def metrics(self) -> LoopMetrics: ...
    # Debug mode.
    def get_debug(self) -> bool: ...
    def set_debug(self, enabled: bool) -> None: ...
    # DNS.
    async def getaddrinfo(
        self,
        host: bytes | str | None,
        port: bytes | str | int | None,
        *,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[tuple[Any, Any, int, str, Any]]: ...
    async def getnameinfo(
        self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int = 0
    ) -> tuple[str, str]: ...
    # Streams, servers, datagrams, pipes, subprocesses.
    async def create_connection(
        self,
        protocol_factory: Callable[[], _ProtocolT],
        host: str | None = None,
        port: int | None = None,
        *,
        ssl: _SSLContext = None,
        family: int = 0,
        proto: int = 0,
        flags: int = 0,
        sock: socket | None = None,
        local_addr: tuple[str, int] | None = None,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        happy_eyeballs_delay: float | None = None,
        interleave: int | None = None,
        all_errors: bool = False,
    ) -> tuple[asyncio.Transport, _ProtocolT]: ...
    async def create_server(
        self,
        protocol_factory: _ProtocolFactory,
        host: str | Sequence[str] | None = None,
        port: int | None = None,
        *,
        family: int = ...,
        flags: int = ...,
        sock: socket | None = None,
        backlog: int = 100,
        ssl: _SSLContext = None,
        reuse_address: bool | None = ...,
        reuse_port: bool | None = None,
        keep_alive: bool | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        start_serving: bool = True,
    ) -> asyncio.Server: ...
    async def connect_accepted_socket(
        self,
        protocol_factory: Callable[[], _ProtocolT],
        sock: socket,
        *,
        ssl: _SSLContext = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
    ) -> tuple[asyncio.Transport, _ProtocolT]: ...
    async def sendfile(
        self,
        transport: asyncio.WriteTransport,
        file: IO[bytes],
        offset: int = 0,
        count: int | None = None,
        *,
        fallback: bool = True,
    ) -> int: ...
    async def start_tls(
        self,
        transport: asyncio.BaseTransport,
        protocol: asyncio.BaseProtocol,
        sslcontext: ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
    ) -> asyncio.Transport | None: ...
    async def create_unix_connection(
        self,
        protocol_factory: Callable[[], _ProtocolT],
        path: str | None = None,
        *,
        ssl: _SSLContext = None,
        sock: socket | None = None,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
    ) -> tuple[asyncio.Transport, _ProtocolT]: ...
    async def create_unix_server(
        self,
        protocol_factory: _ProtocolFactory,
        path: Any = None,
        *,
        sock: socket | None = None,
        backlog: int = 100,
        ssl: _SSLContext = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        start_serving: bool = True,
        cleanup_socket: bool | None = None,
    ) -> asyncio.Server: ...
    async def create_datagram_endpoint(
        self,
        protocol_factory: Callable[[], _ProtocolT],
        local_addr: tuple[str, int] | str | None = None,
        remote_addr: tuple[str, int] | str | None = None,
        *,
        family: int = 0,
        proto: int = 0,
        flags: int = 0,
        reuse_address: bool | None = ...,
        reuse_port: bool | None = None,
        allow_broadcast: bool | None = None,
        sock: socket | None = None,
    ) -> tuple[asyncio.DatagramTransport, _ProtocolT]: ...
    async def connect_read_pipe(
        self, protocol_factory: Callable[[], _ProtocolT], pipe: Any
    ) -> tuple[asyncio.ReadTransport, _ProtocolT]: ...
    async def connect_write_pipe(
        self, protocol_factory: Callable[[], _ProtocolT], pipe: Any
    ) -> tuple[asyncio.WriteTransport, _ProtocolT]: ...
    async def subprocess_shell(
        self,
        protocol_factory: Callable[[], _ProtocolT],
        cmd: bytes | str,
        *,
        stdin: int | IO[Any] | None = -1,
        stdout: int | IO[Any] | None = -1,
        stderr: int | IO[Any] | None = -1,
        universal_newlines: Literal[False] = False,
        shell: Literal[True] = True,
        bufsize: Literal[0] = 0,
        encoding: None = None,
        errors: None = None,
        text: Literal[False] | None = None,
        **kwargs: Any,
    ) -> tuple[asyncio.SubprocessTransport, _ProtocolT]: ...
    async def subprocess_exec(
        self,
        protocol_factory: Callable[[], _ProtocolT],
        program: Any,
        *args: Any,
        stdin: int | IO[Any] | None = -1,
        stdout: int | IO[Any] | None = -1,
        stderr: int | IO[Any] | None = -1,
        universal_newlines: Literal[False] = False,
        shell: Literal[False] = False,
        bufsize: Literal[0] = 0,
        encoding: None = None,
        errors: None = None,
        text: Literal[False] | None = None,
        **kwargs: Any,
    ) -> tuple[asyncio.SubprocessTransport, _ProtocolT]: ...
    # File descriptors and raw sockets.
    def add_reader(
        self,
        fd: _FileDescriptorLike,
        callback: Callable[[Unpack[_Ts]], Any],
        *args: Unpack[_Ts],
    ) -> None: ...
    def remove_reader(self, fd: _FileDescriptorLike) -> bool: ...
    def add_writer(
        self,
        fd: _FileDescriptorLike,
        callback: Callable[[Unpack[_Ts]], Any],
        *args: Unpack[_Ts],
    ) -> None: ...
    def remove_writer(self, fd: _FileDescriptorLike) -> bool: ...
    async def sock_recv(self, sock: socket, n: int) -> bytes: ...
    async def sock_recv_into(self, sock: socket, buf: Any) -> int: ...
    async def sock_recvfrom(self, sock: socket, bufsize: int) -> tuple[bytes, Any]: ...
    async def sock_recvfrom_into(
        self, sock: socket, buf: Any, nbytes: int = 0
    ) -> tuple[int, Any]: ...
    async def sock_sendall(self, sock: socket, data: Any) -> None: ...
    async def sock_sendto(self, sock: socket, data: Any, address: _Address) -> int: ...
    async def sock_connect(self, sock: socket, address: _Address) -> None: ...
    async def sock_accept(self, sock: socket) -> tuple[socket, Any]: ...
    async def sock_sendfile(
        self,
        sock: socket,
        file: IO[bytes],
        offset: int = 0,
        count: int | None = None,
        *,
        fallback: bool | None = True,
    ) -> int: ...
    # Signals.
    def add_signal_handler(
        self,
        sig: int,
        callback: Callable[[Unpack[_Ts]], object],
        *args: Unpack[_Ts],
    ) -> None: ...
    def remove_signal_handler(self, sig: int) -> bool: ...

def new_event_loop() -> Loop: ...

if sys.version_info >= (3, 12):
    def run(
        main: Coroutine[Any, Any, _T],
        *,
        loop_factory: Callable[[], Loop] | None = None,
        debug: bool | None = None,
        **run_kwargs: Any,
    ) -> _T: ...

else:
    def run(
        main: Coroutine[Any, Any, _T],
        *,
        loop_factory: Callable[[], Loop] | None = None,
        debug: bool | None = None,
    ) -> _T: ...

if sys.version_info >= (3, 14):
    # Deprecated by CPython 3.14's deprecation of asyncio policies (removal in 3.16).
    @deprecated(
        "uvrs.Policy is deprecated and slated for removal in Python 3.16; use uvrs.run() "
        "or asyncio.run(..., loop_factory=uvrs.new_event_loop)"
    )
    class Policy(asyncio.events._BaseDefaultEventLoopPolicy):
        def new_event_loop(self) -> Loop: ...

    EventLoopPolicy = Policy

else:
    class Policy(asyncio.DefaultEventLoopPolicy):
        def new_event_loop(self) -> Loop: ...

    EventLoopPolicy = Policy

@deprecated("uvrs.install() is deprecated in favor of uvrs.run()")
def install() -> None: ...
