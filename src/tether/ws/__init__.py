"""WebSocket (RFC 6455, RFC 7692 permessage-deflate): a sans-I/O core and asyncio front ends.

Client::

    async with tether.ws.connect("wss://example.com/rpc") as ws:
        await ws.send("hello")
        print(await ws.recv())

Server::

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    async with tether.ws.serve(echo, "127.0.0.1", 8765) as server:
        await server.serve_forever()

Callbacks, for the hottest paths (no task or future per message)::

    class Echo(tether.ws.Handler):
        def on_message(self, ws, message):
            ws.send_nowait(message)

    server = await tether.ws.serve(Echo(), "127.0.0.1", 8765)

The blocking client is `tether.ws.sync`; the core is `tether.ws.protocol`.
"""

from __future__ import annotations

from tether.errors import (
    ConnectionClosed,
    HandshakeError,
    InvalidState,
    InvalidUtf8,
    PayloadTooBig,
    ProtocolError,
)
from tether.ws.client import ClientWebSocket, connect
from tether.ws.connection import Data, Handler, WebSocket
from tether.ws.deflate import DeflateParams
from tether.ws.frames import Opcode
from tether.ws.handshake import Headers, Request, Response
from tether.ws.protocol import ClientConnection, Connection, ServerConnection, State
from tether.ws.server import Server, ServerWebSocket, serve

__all__ = [
    "ClientConnection",
    "ClientWebSocket",
    "Connection",
    "ConnectionClosed",
    "Data",
    "DeflateParams",
    "Handler",
    "HandshakeError",
    "Headers",
    "InvalidState",
    "InvalidUtf8",
    "Opcode",
    "PayloadTooBig",
    "ProtocolError",
    "Request",
    "Response",
    "Server",
    "ServerConnection",
    "ServerWebSocket",
    "State",
    "WebSocket",
    "connect",
    "serve",
]
