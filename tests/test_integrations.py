"""Real libraries on the loop: aiohttp, anyio, uvicorn, and ``python -m uvrs``.

Each test runs once on asyncio's loop and once on uvrs, and checks what the
library delivered (status, body, bytes, order), plus which loop ran it. A
library that is not installed skips its tests; ``tools/dev.py`` installs all
of them.
"""

import asyncio
import os
import socket
import subprocess
import sys
import threading

import pytest

from _util import LOCALHOST, recv_all

pytestmark = pytest.mark.timeout(60)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "aiohttp_hello.py")


def _loop_module(flavor):
    return "uvrs._loop" if flavor.is_uvrs else "asyncio."


# ----------------------------------------------------------------- aiohttp


def test_aiohttp_server_and_client(run, flavor):
    web = pytest.importorskip("aiohttp.web")
    aiohttp = pytest.importorskip("aiohttp")
    body = os.urandom(300_000)

    async def upload(request):
        data = await request.read()
        return web.Response(body=data[::-1], headers={"X-Len": str(len(data))})

    async def stream(request):
        resp = web.StreamResponse()
        await resp.prepare(request)
        for i in range(50):
            await resp.write(b"%03d," % i)
        await resp.write_eof()
        return resp

    async def ws_echo(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data + b"!")
            elif msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(msg.data * 2)
        return ws

    async def main():
        app = web.Application(client_max_size=2**21)
        app.add_routes([web.post("/up", upload), web.get("/stream", stream),
                        web.get("/ws", ws_echo)])
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, LOCALHOST, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        base = f"http://{LOCALHOST}:{port}"
        try:
            async with aiohttp.ClientSession() as session:
                # Concurrent uploads over the connection pool.
                async def one():
                    async with session.post(base + "/up", data=body) as resp:
                        return resp.status, resp.headers["X-Len"], await resp.read()

                results = await asyncio.gather(*(one() for _ in range(8)))
                async with session.get(base + "/stream") as resp:
                    streamed = await resp.read()
                async with session.ws_connect(base + "/ws") as ws:
                    await ws.send_bytes(b"abc")
                    first = (await ws.receive()).data
                    await ws.send_str("xy")
                    second = (await ws.receive()).data
            return type(asyncio.get_running_loop()).__module__, results, streamed, first, second
        finally:
            await runner.cleanup()

    module, results, streamed, first, second = run(main())
    assert module.startswith(_loop_module(flavor))
    assert results == [(200, str(len(body)), body[::-1])] * 8
    assert streamed == b"".join(b"%03d," % i for i in range(50))
    assert (first, second) == (b"abc!", "xyxy")


# ------------------------------------------------------------------- anyio


def test_anyio_tcp_threads_and_cancel_scopes(flavor):
    anyio = pytest.importorskip("anyio")
    order = []

    async def handler(stream):
        async with stream:
            data = b""
            while not data.endswith(b"\n"):
                data += await stream.receive()
            await stream.send(data.upper())

    async def main():
        listener = await anyio.create_tcp_listener(local_host=LOCALHOST, local_port=0)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handler)
            replies = []
            for i in range(20):
                async with await anyio.connect_tcp(LOCALHOST, port) as client:
                    await client.send(b"hello %d\n" % i)
                    replies.append(await client.receive())
            # A worker thread, then a cancel scope that times out.
            order.append(await anyio.to_thread.run_sync(lambda: "thread"))
            with anyio.move_on_after(0.05) as scope:
                await anyio.sleep(10)
            order.append(("cancelled", scope.cancelled_caught))
            tg.cancel_scope.cancel()
        return type(asyncio.get_running_loop()).__module__, replies

    module, replies = anyio.run(
        main, backend="asyncio", backend_options={"loop_factory": flavor.new_event_loop})
    assert module.startswith(_loop_module(flavor))
    assert replies == [b"HELLO %d\n" % i for i in range(20)]
    assert order == ["thread", ("cancelled", True)]


# ----------------------------------------------------------------- uvicorn


def test_uvicorn_serves_on_the_loop_given_by_name(flavor):
    uvicorn = pytest.importorskip("uvicorn")
    seen = []

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen.append(type(asyncio.get_running_loop()).__module__)
        reply = b"got " + body
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"%d" % len(reply))]})
        await send({"type": "http.response.body", "body": reply})

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOCALHOST, 0))
    port = sock.getsockname()[1]
    # The command line's `--loop uvrs:new_event_loop`, as a Config argument.
    loop_name = "uvrs:new_event_loop" if flavor.is_uvrs else "asyncio"
    config = uvicorn.Config(app, loop=loop_name, log_level="warning", lifespan="on",
                            http="h11")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    try:
        for _ in range(500):
            if server.started:
                break
            threading.Event().wait(0.01)
        assert server.started
        replies = []
        for i in range(3):
            with socket.create_connection((LOCALHOST, port), timeout=10) as c:
                msg = b"n=%d" % i
                c.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(msg), msg))
                replies.append(recv_all(c))
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()
    assert not thread.is_alive()
    for i, reply in enumerate(replies):
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert body == b"got n=%d" % i
    assert len(seen) == 3
    assert all(m.startswith(_loop_module(flavor)) for m in seen)


# ---------------------------------------------------------- python -m uvrs


def test_python_m_uvrs_runs_an_unchanged_aiohttp_program(flavor):
    pytest.importorskip("aiohttp")
    if flavor.is_uvrs:
        cmd = [sys.executable, "-m", "uvrs", EXAMPLE]
    else:
        cmd = [sys.executable, EXAMPLE]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=50, env=env,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    expected_loop = "loop: uvrs._loop.Loop" if flavor.is_uvrs else "loop: asyncio."
    assert lines[0].startswith(expected_loop)
    assert lines[2:] == ["GET /hello/uvrs: 200 hello, uvrs", "websocket: PING"]


# ------------------------------------------------- asyncio's task tooling


def test_tasks_are_the_stdlib_c_tasks(loop, flavor):
    """Tools that inspect tasks from outside (3.14's `python -m asyncio ps`,
    debuggers) know asyncio's own Task type: uvrs creates exactly those."""
    _asyncio = pytest.importorskip("_asyncio")

    async def child():
        await asyncio.sleep(0)
        return asyncio.current_task()

    async def main():
        task = loop.create_task(child(), name="the-child")
        assert await task is task
        return task

    task = loop.run_until_complete(main())
    assert type(task) is asyncio.Task is _asyncio.Task
    assert task.get_name() == "the-child"


_PS_CHILD = """
import asyncio, ctypes, sys
if sys.argv[1] == "uvrs":
    import uvrs
    run = uvrs.run
else:
    run = asyncio.run
# Let a sibling process (python -m asyncio ps) read this one's memory under
# Yama's ptrace_scope=1: PR_SET_PTRACER, PR_SET_PTRACER_ANY.
ctypes.CDLL(None).prctl(0x59616D61, ctypes.c_ulong(-1), 0, 0, 0)

async def sleeper():
    await asyncio.sleep(60)

async def main():
    async with asyncio.TaskGroup() as tg:
        tg.create_task(sleeper(), name="sleeper-one")
        tg.create_task(sleeper(), name="sleeper-two")
        await asyncio.sleep(0.05)
        print("ready", flush=True)
        await asyncio.sleep(60)

run(main())
"""


@pytest.mark.skipif(sys.version_info < (3, 14), reason="python -m asyncio ps is new in 3.14")
@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="reading another process needs privileges on macOS and Windows")
def test_python_m_asyncio_ps_sees_the_tasks(flavor):
    child = subprocess.Popen([sys.executable, "-c", _PS_CHILD, flavor.name],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        out = subprocess.run([sys.executable, "-m", "asyncio", "ps", str(child.pid)],
                             capture_output=True, text=True, timeout=30)
        if out.returncode != 0 and ("ermission" in out.stderr or "not permitted" in out.stderr):
            pytest.skip(f"cannot read another process here: {out.stderr.strip()[-200:]}")
        assert out.returncode == 0, out.stderr
        assert "sleeper-one" in out.stdout
        assert "sleeper-two" in out.stdout
    finally:
        child.kill()
        child.communicate()
