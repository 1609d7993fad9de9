"""WebSocket echo server and client for burrow's edge tests (Debian's python3-websockets).

    ws_echo.py server             prints `listening on PORT`, echoes every message
    ws_echo.py client URL N       sends N messages of growing size, checks each echo, prints `ok N`
"""

import asyncio
import sys

import websockets


async def echo(ws, *_):
    async for message in ws:
        await ws.send(message)


async def serve():
    async with websockets.serve(echo, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"listening on {port}", flush=True)
        await asyncio.Future()


async def client(url, count):
    async with websockets.connect(url, max_size=None) as ws:
        for i in range(count):
            message = bytes((i + j) % 251 for j in range(i * 997 + 1))
            await ws.send(message)
            back = await ws.recv()
            if back != message:
                sys.exit(f"echo {i} differs: sent {len(message)} bytes, got {len(back)}")
        text = "héllo through burrow"
        await ws.send(text)
        if await ws.recv() != text:
            sys.exit("text echo differs")
    print(f"ok {count}", flush=True)


if sys.argv[1] == "server":
    asyncio.run(serve())
else:
    asyncio.run(client(sys.argv[2], int(sys.argv[3])))
