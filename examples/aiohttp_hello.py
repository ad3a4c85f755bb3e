"""An ordinary aiohttp program: nothing in it mentions uvrs.

    python examples/aiohttp_hello.py           # on asyncio's loop
    python -m uvrs examples/aiohttp_hello.py   # the same program on uvrs

It serves a small web app on a free loopback port, fetches a page and a
WebSocket echo from it with aiohttp's client, prints what it got and which
event loop ran it, and exits. Pass --serve to keep serving instead.
"""

import asyncio
import sys

from aiohttp import ClientSession, WSMsgType, web


async def hello(request: web.Request) -> web.Response:
    name = request.match_info.get("name", "world")
    return web.Response(text=f"hello, {name}")


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data.upper())
    return ws


async def main(serve: bool) -> None:
    app = web.Application()
    app.add_routes([web.get("/", hello), web.get("/hello/{name}", hello), web.get("/ws", echo)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 8080 if serve else 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    print(f"loop: {type(loop).__module__}.{type(loop).__qualname__}")
    print(f"serving on http://127.0.0.1:{port}/", flush=True)
    try:
        if serve:
            await asyncio.Event().wait()
        async with ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/hello/uvrs") as resp:
                print(f"GET /hello/uvrs: {resp.status} {await resp.text()}")
            async with session.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
                await ws.send_str("ping")
                reply = await ws.receive()
                print(f"websocket: {reply.data}")
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main("--serve" in sys.argv[1:]))
