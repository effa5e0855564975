"""tether's asyncio WebSocket client and server against websockets and aiohttp, both ways.

Each direction runs with permessage-deflate on and off. Peer clients talk to a
tether server whose handler is written per test; tether's client talks to peer
servers that echo and obey a few text commands:

- ``cmd:ping``: ping the client with payload b"srv", wait for the Pong, answer "pong:srv";
- ``cmd:close:CODE:REASON``: close the connection with that code and reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import websockets
import websockets.asyncio.client
import websockets.asyncio.server
from aiohttp import web

import tether.ws
from tether.errors import ConnectionClosed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TIMEOUT = 10.0  # seconds; bounds every test so that nothing can hang
MAX_SIZE = 2**21  # room for the 1 MiB messages on every side
SIZES = [0, 1, 125, 126, 65535, 65536, 2**20]
SUBPROTOCOLS = ["v2.tether", "v1.tether"]  # a server's, in order of preference
OFFERED = ["unknown.tether", "v1.tether"]  # a client's: exactly one in common
PEER_CLIENTS = ["websockets", "aiohttp"]
PEER_SERVERS = ["websockets", "aiohttp"]
COMPRESSION = [pytest.param(True, id="deflate"), pytest.param(False, id="plain")]


def run(coro: Awaitable[Any]) -> Any:
    """Run a test coroutine on a fresh event loop, bounded by TIMEOUT."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, TIMEOUT)

    return asyncio.run(bounded())


def make_text(size: int) -> str:
    """Text of exactly size UTF-8 bytes: two-byte characters that compress poorly, then ASCII."""
    rng = random.Random(size)
    chars = [chr(rng.randrange(0x80, 0x800)) for _ in range(size // 2)]
    return "".join(chars) + "z" * (size % 2)


def make_binary(size: int) -> bytes:
    return random.Random(-size).randbytes(size)


def extension_names(header: str | None) -> list[str]:
    """Extension names in a Sec-WebSocket-Extensions header value."""
    if header is None:
        return []
    return [element.split(";")[0].strip() for element in header.split(",") if element.strip()]


# ----------------------------------------------------------------- tether server


@contextlib.asynccontextmanager
async def tether_server(
    handler: Callable[[tether.ws.ServerWebSocket], Awaitable[None]], *, compression: bool, **kwargs: Any
) -> AsyncIterator[str]:
    """Serve handler with tether on a free loopback port; yield its ws:// URL."""
    kwargs.setdefault("max_size", MAX_SIZE)
    kwargs.setdefault("ping_interval", None)
    async with tether.ws.serve(
        handler, "127.0.0.1", 0, compression="deflate" if compression else None, **kwargs
    ) as server:
        yield f"ws://127.0.0.1:{server.port}/"


async def echo(ws: tether.ws.ServerWebSocket) -> None:
    async for message in ws:
        await ws.send(message)


# ------------------------------------------------------------------ peer clients


class PeerClosed(Exception):
    """A peer client saw the connection close: code and reason."""

    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class WebsocketsClient:
    """websockets' client, behind the small interface the tests use."""

    def __init__(self, ws: websockets.asyncio.client.ClientConnection) -> None:
        self.ws = ws
        self.subprotocol = ws.subprotocol
        self.extensions = [ext.name for ext in ws.protocol.extensions]
        self.extensions_header = ws.response.headers.get("Sec-WebSocket-Extensions")

    async def send(self, message: str | bytes) -> None:
        await self.ws.send(message)

    async def recv(self) -> str | bytes:
        try:
            return await self.ws.recv()
        except websockets.ConnectionClosed as exc:
            await self.ws.wait_closed()
            raise PeerClosed(self.ws.close_code, self.ws.close_reason) from exc

    async def ping(self, payload: bytes) -> None:
        pong = await self.ws.ping(payload)
        await pong

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code, reason)


class AiohttpClient:
    """aiohttp's client with autoping off, so that Pings and Pongs can be seen."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.subprotocol = ws.protocol
        self.extensions = ["permessage-deflate"] if ws.compress else []
        self.extensions_header = ws._response.headers.get("Sec-WebSocket-Extensions")
        self._pending: deque[str | bytes] = deque()
        self._pongs: list[bytes] = []

    async def _next(self) -> str | bytes | None:
        """The next data message; None after a Pong (kept in _pongs)."""
        msg = await self.ws.receive()
        if msg.type is aiohttp.WSMsgType.PING:
            await self.ws.pong(msg.data)
            return None
        if msg.type is aiohttp.WSMsgType.PONG:
            self._pongs.append(msg.data)
            return None
        if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            return msg.data  # type: ignore[no-any-return]
        if msg.type is aiohttp.WSMsgType.CLOSE:
            raise PeerClosed(msg.data, msg.extra)
        raise PeerClosed(self.ws.close_code, None)

    async def send(self, message: str | bytes) -> None:
        if isinstance(message, str):
            await self.ws.send_str(message)
        else:
            await self.ws.send_bytes(message)

    async def recv(self) -> str | bytes:
        if self._pending:
            return self._pending.popleft()
        while True:
            message = await self._next()
            if message is not None:
                return message

    async def ping(self, payload: bytes) -> None:
        await self.ws.ping(payload)
        while payload not in self._pongs:
            message = await self._next()
            if message is not None:
                self._pending.append(message)
        self._pongs.remove(payload)

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code=code, message=reason.encode())


@contextlib.asynccontextmanager
async def peer_client(
    kind: str,
    url: str,
    *,
    compression: bool,
    subprotocols: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[Any]:
    """Connect to url with the peer library `kind`."""
    if kind == "websockets":
        async with websockets.asyncio.client.connect(
            url,
            compression="deflate" if compression else None,
            subprotocols=subprotocols,  # type: ignore[arg-type]
            additional_headers=headers,
            max_size=MAX_SIZE,
            proxy=None,
            ping_interval=None,
            open_timeout=TIMEOUT,
            close_timeout=TIMEOUT,
        ) as ws:
            yield WebsocketsClient(ws)
    else:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(
                url,
                protocols=subprotocols or (),
                headers=headers,
                compress=15 if compression else 0,
                max_msg_size=MAX_SIZE,
                autoping=False,
            ) as ws,
        ):
            yield AiohttpClient(ws)


# ------------------------------------------------------------------ peer servers


@dataclasses.dataclass
class Seen:
    """What a peer server saw of one connection."""

    headers: Any
    subprotocol: str | None
    extensions: list[str]
    closed: asyncio.Future[tuple[int | None, str | None]]


@dataclasses.dataclass
class PeerServer:
    url: str
    connections: asyncio.Queue[Seen]


def parse_close_command(message: str) -> tuple[int, str]:
    _, _, code, reason = message.split(":", 3)
    return int(code), reason


async def websockets_handler(
    ws: websockets.asyncio.server.ServerConnection, connections: asyncio.Queue[Seen]
) -> None:
    seen = Seen(
        headers=ws.request.headers,  # type: ignore[union-attr]
        subprotocol=ws.subprotocol,
        extensions=[ext.name for ext in ws.protocol.extensions],
        closed=asyncio.get_running_loop().create_future(),
    )
    connections.put_nowait(seen)
    try:
        async for message in ws:
            if isinstance(message, str) and message.startswith("cmd:close:"):
                await ws.close(*parse_close_command(message))
            elif message == "cmd:ping":
                pong = await ws.ping(b"srv")
                await pong
                await ws.send("pong:srv")
            else:
                await ws.send(message)
    finally:
        await ws.wait_closed()
        seen.closed.set_result((ws.close_code, ws.close_reason))


async def aiohttp_handler(
    request: web.Request, connections: asyncio.Queue[Seen], compression: bool, subprotocols: list[str]
) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(
        compress=compression, protocols=subprotocols, max_msg_size=MAX_SIZE, autoping=False
    )
    await ws.prepare(request)
    seen = Seen(
        headers=request.headers,
        subprotocol=ws.ws_protocol,
        extensions=["permessage-deflate"] if ws.compress else [],
        closed=asyncio.get_running_loop().create_future(),
    )
    connections.put_nowait(seen)
    while True:
        msg = await ws.receive()
        if msg.type is aiohttp.WSMsgType.TEXT and msg.data.startswith("cmd:close:"):
            code, reason = parse_close_command(msg.data)
            await ws.close(code=code, message=reason.encode())
            seen.closed.set_result((ws.close_code, None))
            break
        if msg.type is aiohttp.WSMsgType.TEXT and msg.data == "cmd:ping":
            await ws.ping(b"srv")
        elif msg.type is aiohttp.WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type is aiohttp.WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
        elif msg.type is aiohttp.WSMsgType.PING:
            await ws.pong(msg.data)
        elif msg.type is aiohttp.WSMsgType.PONG:
            await ws.send_str("pong:" + msg.data.decode())
        elif msg.type is aiohttp.WSMsgType.CLOSE:
            seen.closed.set_result((msg.data, msg.extra))
            break
        else:
            seen.closed.set_result((ws.close_code, None))
            break
    return ws


@contextlib.asynccontextmanager
async def peer_server(
    kind: str, *, compression: bool, subprotocols: list[str] | None = None
) -> AsyncIterator[PeerServer]:
    """Run an echo server of the peer library `kind` on a free loopback port."""
    connections: asyncio.Queue[Seen] = asyncio.Queue()
    if kind == "websockets":
        async with websockets.asyncio.server.serve(
            lambda ws: websockets_handler(ws, connections),
            "127.0.0.1",
            0,
            compression="deflate" if compression else None,
            subprotocols=subprotocols,  # type: ignore[arg-type]
            max_size=MAX_SIZE,
            ping_interval=None,
            close_timeout=TIMEOUT,
        ) as server:
            port = server.sockets[0].getsockname()[1]
            yield PeerServer(f"ws://127.0.0.1:{port}/", connections)
    else:

        async def handle(request: web.Request) -> web.WebSocketResponse:
            return await aiohttp_handler(request, connections, compression, subprotocols or [])

        app = web.Application()
        app.router.add_get("/", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            yield PeerServer(f"ws://127.0.0.1:{port}/", connections)
        finally:
            await runner.cleanup()


def tether_client(url: str, *, compression: bool, **kwargs: Any) -> tether.ws.connect:
    kwargs.setdefault("max_size", MAX_SIZE)
    kwargs.setdefault("ping_interval", None)
    return tether.ws.connect(url, compression="deflate" if compression else None, **kwargs)


# ==================================================== peer clients, tether server


@pytest.mark.parametrize("compression", COMPRESSION)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", PEER_CLIENTS)
def test_peer_client_messages(kind: str, size: int, compression: bool) -> None:
    received: list[str | bytes] = []

    async def handler(ws: tether.ws.ServerWebSocket) -> None:
        async for message in ws:
            received.append(message)
            await ws.send(message)

    async def main() -> None:
        text, binary = make_text(size), make_binary(size)
        async with (
            tether_server(handler, compression=compression) as url,
            peer_client(kind, url, compression=compression) as client,
        ):
            await client.send(text)
            assert await client.recv() == text
            await client.send(binary)
            assert await client.recv() == binary
        assert received == [text, binary]  # str for text, bytes for binary on tether's side too

    run(main())


@pytest.mark.parametrize("compression", COMPRESSION)
@pytest.mark.parametrize("kind", PEER_CLIENTS)
def test_peer_client_receives_fragmented_messages(kind: str, compression: bool) -> None:
    async def fragments() -> AsyncIterator[bytes]:
        yield b"\x00" * 70000
        yield b""
        yield b"\x01" * 3

    async def handler(ws: tether.ws.ServerWebSocket) -> None:
        await ws.send(["frag", "mént", "", "ed"])
        await ws.send([b"ab", b"c" * 65536, b"d"])
        await ws.send(fragments())
        await echo(ws)

    async def main() -> None:
        async with (
            tether_server(handler, compression=compression) as url,
            peer_client(kind, url, compression=compression) as client,
        ):
            assert await client.recv() == "fragménted"
            assert await client.recv() == b"ab" + b"c" * 65536 + b"d"
            assert await client.recv() == b"\x00" * 70000 + b"\x01" * 3
            await client.send("still open")
            assert await client.recv() == "still open"

    run(main())


@pytest.mark.parametrize("compression", COMPRESSION)
@pytest.mark.parametrize("kind", PEER_CLIENTS)
def test_peer_client_ping_pong(kind: str, compression: bool) -> None:
    async def handler(ws: tether.ws.ServerWebSocket) -> None:
        assert await ws.recv() == "ping me"
        pong = await ws.ping(b"from tether")
        rtt = await pong
        assert rtt >= 0
        await ws.send("got your pong")
        await echo(ws)

    async def main() -> None:
        async with (
            tether_server(handler, compression=compression) as url,
            peer_client(kind, url, compression=compression) as client,
        ):
            await client.ping(b"from peer")  # tether answers with a matching Pong
            await client.send("ping me")
            assert await client.recv() == "got your pong"  # the peer answered tether's Ping

    run(main())


@pytest.mark.parametrize("compression", COMPRESSION)
@pytest.mark.parametrize("kind", PEER_CLIENTS)
def test_peer_client_subprotocol(kind: str, compression: bool) -> None:
    async def handler(ws: tether.ws.ServerWebSocket) -> None:
        await ws.send(f"server chose {ws.subprotocol}")
        await echo(ws)

    async def main() -> None:
        async with (
            tether_server(handler, compression=compression, subprotocols=SUBPROTOCOLS) as url,
            peer_client(kind, url, compression=compression, subprotocols=OFFERED) as client,
        ):
            assert client.subprotocol == "v1.tether"
            assert await client.recv() == "server chose v1.tether"

    run(main())


@pytest.mark.parametrize("compression", COMPRESSION)
@pytest.mark.parametrize("kind", PEER_CLIENTS)
def test_peer_client_extra_headers_reach_server(kind: str, compression: bool) -> None:
    seen: list[tether.ws.Request] = []

    async def handler(ws: tether.ws.ServerWebSocket) -> None:
        seen.append(ws.request)
        await echo(ws)

    async def main() -> None:
        headers = {"X-Device-Id": "pump-7", "X-Firmware": "1.2.3"}
        async with (
            tether_server(handler, compression=compression) as url,
            peer_client(kind, url, compression=compression, headers=headers) as client,
        ):
            await client.send("hello")
            assert await client.recv() == "hello"
        [request] = seen
        assert request.headers.get("x-device-id") == "pump-7"
        assert request.headers.get("X-Firmware") == "1.2.3"

    run(main())


@pytest.mark.parametrize("compression", COMPRESSION)
@pytest.mark.parametrize("kind", PEER_CLIENTS)
def test_peer_client_closes_with_code_and_reason(kind: str, compression: bool) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        closed: asyncio.Future[tuple[int, str, int | None, str | None]] = loop.create_future()

        async def handler(ws: tether.ws.ServerWebSocket) -> None:
            try:
                await ws.recv()
            except ConnectionClosed as exc:
                await ws.wait_closed()
                closed.set_result((exc.code, exc.reason, ws.close_code, ws.close_reason))

        async with (
            tether_server(handler, compression=compression) as url,
            peer_client(kind, url, compression=compression) as client,
        ):
            await client.close(4001, "bye from peer")
            assert await closed == (4001, "bye from peer", 4001, "bye from peer")

    run(main())


@pytest.mark.parametrize("compression", COMPRESSION)
@pytest.mark.parametrize("kind", PEER_CLIENTS)
def test_peer_client_sees_tether_close_code_and_reason(kind: str, compression: bool) -> None:
    async def handler(ws: tether.ws.ServerWebSocket) -> None:
        await ws.close(4002, "bye from tether")

    async def main() -> None:
        async with (
            tether_server(handler, compression=compression) as url,
            peer_client(kind, url, compression=compression) as client,
        ):
            with pytest.raises(PeerClosed) as info:
                await client.recv()
            assert (info.value.code, info.value.reason) == (4002, "bye from tether")

    run(main())


@pytest.mark.parametrize("compression", COMPRESSION)
@pytest.mark.parametrize("kind", PEER_CLIENTS)
def test_peer_client_compression_negotiated(kind: str, compression: bool) -> None:
    answered: list[str | None] = []

    async def handler(ws: tether.ws.ServerWebSocket) -> None:
        answered.append(ws.response.headers.get("Sec-WebSocket-Extensions"))
        await echo(ws)

    async def main() -> None:
        async with (
            tether_server(handler, compression=compression) as url,
            peer_client(kind, url, compression=compression) as client,
        ):
            message = "compressible " * 1000
            await client.send(message)
            assert await client.recv() == message
            expected = ["permessage-deflate"] if compression else []
            assert client.extensions == expected
            assert extension_names(client.extensions_header) == expected
        [header] = answered
        assert extension_names(header) == expected

    run(main())


@pytest.mark.parametrize("kind", PEER_CLIENTS)
def test_peer_client_offer_declined_by_tether_server(kind: str) -> None:
    async def main() -> None:
        async with (
            tether_server(echo, compression=False) as url,
            peer_client(kind, url, compression=True) as client,
        ):
            assert client.extensions == []
            await client.send(b"plain")
            assert await client.recv() == b"plain"

    run(main())


# ==================================================== tether client, peer servers


@pytest.mark.parametrize("compression", COMPRESSION)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", PEER_SERVERS)
def test_tether_client_messages(kind: str, size: int, compression: bool) -> None:
    async def main() -> None:
        text, binary = make_text(size), make_binary(size)
        async with (
            peer_server(kind, compression=compression) as server,
            tether_client(server.url, compression=compression) as ws,
        ):
            await ws.send(text)
            assert await ws.recv() == text
            await ws.send(binary)
            assert await ws.recv() == binary
            await ws.send(bytearray(binary))
            assert await ws.recv() == binary

    run(main())


@pytest.mark.parametrize("compression", COMPRESSION)
@pytest.mark.parametrize("kind", PEER_SERVERS)
def test_tether_client_sends_fragmented_messages(kind: str, compression: bool) -> None:
    async def fragments() -> AsyncIterator[str]:
        yield "async "
        yield ""
        yield "fragments"

    async def main() -> None:
        async with (
            peer_server(kind, compression=compression) as server,
            tether_client(server.url, compression=compression) as ws,
        ):
            await ws.send(["frag", "mént", "", "ed"])
            assert await ws.recv() == "fragménted"
            await ws.send([b"ab", b"c" * 65536, b"d"])
            assert await ws.recv() == b"ab" + b"c" * 65536 + b"d"
            await ws.send(fragments())
            assert await ws.recv() == "async fragments"
            await ws.send([b"one fragment"])
            assert await ws.recv() == b"one fragment"

    run(main())


@pytest.mark.parametrize("compression", COMPRESSION)
@pytest.mark.parametrize("kind", PEER_SERVERS)
def test_tether_client_ping_pong(kind: str, compression: bool) -> None:
    async def main() -> None:
        async with (
            peer_server(kind, compression=compression) as server,
            tether_client(server.url, compression=compression) as ws,
        ):
            pong = await ws.ping(b"from tether")
            assert await pong >= 0
            await ws.send("cmd:ping")
            assert await ws.recv() == "pong:srv"  # tether answered the server's Ping

    run(main())


@pytest.mark.parametrize("compression", COMPRESSION)
@pytest.mark.parametrize("kind", PEER_SERVERS)
def test_tether_client_subprotocol(kind: str, compression: bool) -> None:
    async def main() -> None:
        async with (
            peer_server(kind, compression=compression, subprotocols=SUBPROTOCOLS) as server,
            tether_client(server.url, compression=compression, subprotocols=OFFERED) as ws,
        ):
            assert ws.subprotocol == "v1.tether"
            seen = await server.connections.get()
            assert seen.subprotocol == "v1.tether"

    run(main())


@pytest.mark.parametrize("compression", COMPRESSION)
@pytest.mark.parametrize("kind", PEER_SERVERS)
def test_tether_client_extra_headers_reach_server(kind: str, compression: bool) -> None:
    async def main() -> None:
        async with peer_server(kind, compression=compression) as server:
            for headers in (
                {"X-Device-Id": "pump-7", "X-Firmware": "1.2.3"},
                [("X-Device-Id", "pump-7"), ("X-Firmware", "1.2.3")],
            ):
                async with tether_client(server.url, compression=compression, headers=headers) as ws:
                    await ws.send("hello")
                    assert await ws.recv() == "hello"
                seen = await server.connections.get()
                assert seen.headers["x-device-id"] == "pump-7"
                assert seen.headers["X-Firmware"] == "1.2.3"

    run(main())


@pytest.mark.parametrize("compression", COMPRESSION)
@pytest.mark.parametrize("kind", PEER_SERVERS)
def test_tether_client_closes_with_code_and_reason(kind: str, compression: bool) -> None:
    async def main() -> None:
        async with peer_server(kind, compression=compression) as server:
            async with tether_client(server.url, compression=compression) as ws:
                await ws.close(4001, "bye from tether")
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
            seen = await server.connections.get()
            assert await seen.closed == (4001, "bye from tether")

    run(main())


@pytest.mark.parametrize("compression", COMPRESSION)
@pytest.mark.parametrize("kind", PEER_SERVERS)
def test_tether_client_sees_peer_close_code_and_reason(kind: str, compression: bool) -> None:
    async def main() -> None:
        async with (
            peer_server(kind, compression=compression) as server,
            tether_client(server.url, compression=compression) as ws,
        ):
            await ws.send("cmd:close:4002:bye from peer")
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert (info.value.code, info.value.reason) == (4002, "bye from peer")
            assert (ws.close_code, ws.close_reason) == (4002, "bye from peer")
            seen = await server.connections.get()
            code, _ = await seen.closed
            assert code == 4002

    run(main())


@pytest.mark.parametrize("compression", COMPRESSION)
@pytest.mark.parametrize("kind", PEER_SERVERS)
def test_tether_client_compression_negotiated(kind: str, compression: bool) -> None:
    async def main() -> None:
        async with (
            peer_server(kind, compression=compression) as server,
            tether_client(server.url, compression=compression) as ws,
        ):
            message = "compressible " * 1000
            await ws.send(message)
            assert await ws.recv() == message
            expected = ["permessage-deflate"] if compression else []
            assert extension_names(ws.response.headers.get("Sec-WebSocket-Extensions")) == expected
            seen = await server.connections.get()
            assert seen.extensions == expected

    run(main())


@pytest.mark.parametrize("kind", PEER_SERVERS)
def test_tether_client_offer_declined_by_peer_server(kind: str) -> None:
    async def main() -> None:
        async with (
            peer_server(kind, compression=False) as server,
            tether_client(server.url, compression=True) as ws,
        ):
            assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
            await ws.send(b"plain")
            assert await ws.recv() == b"plain"

    run(main())


# =========================================================== permessage-deflate parameters

DEFLATE_PARAMS = [
    {},
    {"server_no_context_takeover": True},
    {"client_no_context_takeover": True},
    {"server_max_window_bits": 9},
    {"client_max_window_bits": 9},
    {
        "server_no_context_takeover": True,
        "client_no_context_takeover": True,
        "server_max_window_bits": 10,
        "client_max_window_bits": 10,
    },
]


def deflate_messages() -> list[str | bytes]:
    """Messages that repeat themselves, so that a wrong compression context shows."""
    rng = random.Random(7)
    pieces = ["abc" * 500, "hello world " * 300, bytes(range(256)) * 20, make_text(5000), b""]
    return [rng.choice(pieces) for _ in range(20)]


def expected_params(params: dict[str, Any]) -> list[str]:
    return sorted(f"{k}={v}" if v is not True else k for k, v in params.items())


def params_in(header: str | None) -> list[str]:
    assert header is not None
    name, *params = (part.strip() for part in header.split(";"))
    assert name == "permessage-deflate"
    return sorted(params)


@pytest.mark.parametrize("params", [*DEFLATE_PARAMS, {"server_max_window_bits": 8}], ids=repr)
def test_websockets_client_deflate_parameters(params: dict[str, Any]) -> None:
    """websockets' client asks for each parameter; tether's server agrees and keeps to it."""
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

    async def main() -> None:
        async with (
            tether_server(echo, compression=True) as url,
            websockets.asyncio.client.connect(
                url,
                extensions=[ClientPerMessageDeflateFactory(**params)],
                compression=None,
                proxy=None,
                ping_interval=None,
            ) as ws,
        ):
            assert params_in(ws.response.headers.get("Sec-WebSocket-Extensions")) == expected_params(params)
            for message in deflate_messages():
                await ws.send(message)
                assert await ws.recv() == message

    run(main())


@pytest.mark.parametrize("params", [*DEFLATE_PARAMS, {"client_max_window_bits": 8}], ids=repr)
def test_tether_client_deflate_parameters_from_websockets_server(params: dict[str, Any]) -> None:
    """websockets' server imposes each parameter; tether's client accepts and keeps to it."""
    from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

    async def main() -> None:
        async with websockets.asyncio.server.serve(
            websockets_echo,
            "127.0.0.1",
            0,
            extensions=[ServerPerMessageDeflateFactory(**params, require_client_max_window_bits=False)],
            compression=None,
            ping_interval=None,
        ) as server:
            port = server.sockets[0].getsockname()[1]
            async with tether_client(f"ws://127.0.0.1:{port}/", compression=True) as ws:
                header = ws.response.headers.get("Sec-WebSocket-Extensions")
                assert params_in(header) == expected_params(params)
                for message in deflate_messages():
                    await ws.send(message)
                    assert await ws.recv() == message

    run(main())


async def websockets_echo(ws: websockets.asyncio.server.ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)
