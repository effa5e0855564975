"""A WebSocket server that does not listen: `upgrade_server`, `Server.take_over`, `broadcast`.

An HTTP server parses the upgrade request and hands the transport over; here a
minimal asyncio protocol plays that part.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import tether.ws
from tether.ws.handshake import Headers, Request, Response, parse_request
from tether.ws.server import upgrade_server

TIMEOUT = 10.0


class Handoff(asyncio.Protocol):
    """Reads one request head, then gives the connection to a WebSocket server."""

    def __init__(self, server: tether.ws.Server) -> None:
        self.server = server
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        head, sep, rest = self.buf.partition(b"\r\n\r\n")
        if sep:
            self.server.take_over(self.transport, parse_request(head), rest)


async def echo(ws: Any) -> None:
    async for message in ws:
        await ws.send(message)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))


@pytest.mark.parametrize("process", [False, True])
def test_take_over_and_broadcast(process: bool) -> None:
    async def main() -> None:
        seen: list[str] = []

        async def check(request: Request) -> Response | None:
            seen.append(request.path)
            await asyncio.sleep(0)
            return None

        ws_server = upgrade_server(echo, process_request=check if process else None, compression=None)
        loop = asyncio.get_running_loop()
        listener = await loop.create_server(lambda: Handoff(ws_server), "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        async with tether.ws.connect(f"ws://127.0.0.1:{port}/feed") as client:
            await client.send("hello")
            assert await client.recv() == "hello"
            assert len(ws_server.connections) == 1
            assert ws_server.broadcast("news") == 1
            assert ws_server.broadcast(b"\x00") == 1
            assert await client.recv() == "news"
            assert await client.recv() == b"\x00"
        assert seen == (["/feed"] if process else [])
        ws_server.close()
        await ws_server.wait_closed()
        listener.close()
        await listener.wait_closed()

    run(main())


def test_early_frames_and_refusal() -> None:
    async def main() -> None:
        ws_server = upgrade_server(echo, compression=None)
        loop = asyncio.get_running_loop()
        listener = await loop.create_server(lambda: Handoff(ws_server), "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        head = (
            f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        masked_hi = bytes([0x81, 0x82, 0, 0, 0, 0]) + b"hi"  # a text frame with a zero mask
        writer.write(head + masked_hi)  # the frame arrives with the request
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        assert await reader.readexactly(4) == b"\x81\x02hi"
        writer.close()
        # Not an upgrade: the WebSocket server answers the error and closes.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 426")
        writer.close()
        ws_server.close()
        await ws_server.wait_closed()
        listener.close()
        await listener.wait_closed()
        with pytest.raises(ValueError):
            upgrade_server(echo, compression="zstd")  # type: ignore[arg-type]
        assert Headers([("A", "b")]).get("a") == "b"

    run(main())
