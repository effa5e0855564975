"""Echo servers, one per library, for the WebSocket benchmark.

``python bench/ws/servers.py LIB --loop asyncio|uvloop [--cpu 0]`` listens on
127.0.0.1 on a free port, prints ``PORT <n>`` on stdout and echoes every
message back until it gets SIGTERM or SIGINT. Compression and keepalive pings
are off, and every library accepts messages up to `common.MAX_SIZE`.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any, cast

from common import HOST, LIBS, LOOPS, MAX_SIZE, pin_to_cpu, raise_nofile, run_on_loop, settle_malloc

#: Each server starts listening, returns its port, and keeps serving until the loop stops.
Starter = Callable[[], Awaitable[int]]

# Keeps the server objects alive while the loop runs.
_keep: list[Any] = []


async def start_tether() -> int:
    import tether.ws

    async def echo(ws: tether.ws.ServerWebSocket) -> None:
        async for message in ws:
            await ws.send(message)

    server = await tether.ws.serve(echo, HOST, 0, compression=None, max_size=MAX_SIZE, ping_interval=None)
    _keep.append(server)
    return server.port


async def start_tether_cb() -> int:
    """tether's callback API (tether.ws.Handler): no task or future per message."""
    import tether.ws

    class Echo(tether.ws.Handler):
        __slots__ = ()

        def on_message(self, ws: tether.ws.WebSocket, message: tether.ws.Data) -> None:
            ws.send_nowait(message)

    server = await tether.ws.serve(Echo(), HOST, 0, compression=None, max_size=MAX_SIZE, ping_interval=None)
    _keep.append(server)
    return server.port


async def start_websockets() -> int:
    from websockets.asyncio.server import ServerConnection, serve

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    server = await serve(echo, HOST, 0, compression=None, max_size=MAX_SIZE, ping_interval=None)
    _keep.append(server)
    return int(server.sockets[0].getsockname()[1])


async def start_aiohttp() -> int:
    from aiohttp import WSMsgType, web

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False, max_msg_size=MAX_SIZE, heartbeat=None)
        await ws.prepare(request)
        async for message in ws:
            if message.type is WSMsgType.BINARY:
                await ws.send_bytes(message.data)
            elif message.type is WSMsgType.TEXT:
                await ws.send_str(message.data)
        return ws

    app = web.Application()
    app.router.add_get("/", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    _keep.append(runner)
    return int(runner.addresses[0][1])


async def start_picows(use_aiofastnet: bool = False) -> int:
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

    class Echo(WSListener):
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            # Clients send each message as one frame, so a frame is a message here.
            kind = frame.msg_type
            if kind is WSMsgType.BINARY or kind is WSMsgType.TEXT:
                transport.send(kind, frame.get_payload_as_memoryview())
            elif kind is WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()

    def listener(request: WSUpgradeRequest) -> WSListener:
        return Echo()

    server = await ws_create_server(
        listener,
        HOST,
        0,
        max_frame_size=MAX_SIZE,
        enable_auto_ping=False,
        use_aiofastnet=use_aiofastnet,
    )
    _keep.append(server)
    return int(server.sockets[0].getsockname()[1])


async def start_picows_fastnet() -> int:
    return await start_picows(use_aiofastnet=True)


async def start_wsproto() -> int:
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import (
        AcceptConnection,
        BytesMessage,
        CloseConnection,
        Message,
        Ping,
        Request,
        TextMessage,
    )

    class Echo(asyncio.Protocol):
        """wsproto inside a plain asyncio.Protocol; echoes each whole message."""

        def __init__(self) -> None:
            self.ws = WSConnection(ConnectionType.SERVER)
            self.transport: asyncio.Transport | None = None
            self.parts: list[Any] = []

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            # uvloop's transports do not derive from asyncio.Transport; cast, don't check.
            self.transport = cast(asyncio.Transport, transport)

        def data_received(self, data: bytes) -> None:
            ws = self.ws
            ws.receive_data(data)
            out = bytearray()
            close = False
            for event in ws.events():
                if isinstance(event, Message):
                    self.parts.append(event.data)
                    if not event.message_finished:
                        continue
                    whole = self.parts[0] if len(self.parts) == 1 else self.parts[0][:0].join(self.parts)
                    self.parts = []
                    reply = TextMessage(whole) if isinstance(event, TextMessage) else BytesMessage(whole)
                    out += ws.send(reply)
                elif isinstance(event, Request):
                    out += ws.send(AcceptConnection())
                elif isinstance(event, Ping):
                    out += ws.send(event.response())
                elif isinstance(event, CloseConnection):
                    out += ws.send(event.response())
                    close = True
            assert self.transport is not None
            if out:
                self.transport.write(out)
            if close:
                self.transport.close()

    server = await asyncio.get_running_loop().create_server(Echo, HOST, 0)
    _keep.append(server)
    return int(server.sockets[0].getsockname()[1])


async def start_raw() -> int:
    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            # uvloop's transports do not derive from asyncio.Transport; cast, don't check.
            self.transport = cast(asyncio.Transport, transport)

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)

    server = await asyncio.get_running_loop().create_server(Echo, HOST, 0)
    _keep.append(server)
    return int(server.sockets[0].getsockname()[1])


STARTERS: dict[str, Starter] = {
    "tether": start_tether,
    "tether-cb": start_tether_cb,
    # The same servers on the pure-Python path (main() sets TETHER_NO_SPEEDUPS).
    "tether-py": start_tether,
    "tether-cb-py": start_tether_cb,
    "websockets": start_websockets,
    "aiohttp": start_aiohttp,
    "picows": start_picows,
    "picows-fastnet": start_picows_fastnet,
    "wsproto": start_wsproto,
    "raw": start_raw,
}
assert set(LIBS) <= set(STARTERS)


async def serve(lib: str) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    port = await STARTERS[lib]()
    print(f"PORT {port}", flush=True)
    await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lib", choices=sorted(STARTERS))
    parser.add_argument("--loop", choices=LOOPS, default="asyncio")
    parser.add_argument("--cpu", type=int, default=0, help="CPU to pin to; -1 for none")
    parser.add_argument("--profile", metavar="FILE", help="write cProfile stats here on exit")
    args = parser.parse_args(argv)
    if args.lib.endswith("-py"):
        os.environ["TETHER_NO_SPEEDUPS"] = "1"  # before tether is imported
    if args.cpu >= 0:
        pin_to_cpu(args.cpu)
    raise_nofile()
    settle_malloc()
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        try:
            run_on_loop(args.loop, serve(args.lib))
        finally:
            profiler.disable()
            profiler.dump_stats(args.profile)
    else:
        run_on_loop(args.loop, serve(args.lib))


if __name__ == "__main__":
    main()
