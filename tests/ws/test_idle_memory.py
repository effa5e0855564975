"""What an idle WebSocket client connection keeps: the handshake as bytes (parsed when asked
for), a small pool of masking keys that grows with use, no dict, no ping table, no
handshake future once connected."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import tether.ws
from tether.ws.handshake import Headers, Request, build_request, parse_response
from tether.ws.protocol import ClientConnection, HandshakeComplete, ServerConnection

pytestmark = pytest.mark.timeout(30)


def open_client(**kwargs: Any) -> tuple[ClientConnection, HandshakeComplete]:
    client = ClientConnection("example.com:8080", "/mqtt", **kwargs)
    server = ServerConnection(subprotocols=kwargs.get("subprotocols", ()))
    server.receive_data(client.data_to_send())
    (received,) = server.events_received()
    server.accept(received.request)  # type: ignore[union-attr]
    client.receive_data(server.data_to_send())
    (done,) = client.events_received()
    assert isinstance(done, HandshakeComplete)
    return client, done


def test_request_and_response_are_parsed_when_asked_for_and_equal() -> None:
    client, done = open_client(subprotocols=["mqtt"], origin="https://example.com")
    assert client._request is None and client._response is None  # kept as bytes only
    request = client.request
    assert request == Request(
        "/mqtt",
        Headers(
            [
                ("Host", "example.com:8080"),
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", client.key),
                ("Sec-WebSocket-Version", "13"),
                ("Origin", "https://example.com"),
                ("Sec-WebSocket-Protocol", "mqtt"),
            ]
        ),
    )
    assert client.request is request  # parsed once
    assert client.response == done.response
    assert client.response is client.response
    assert client.subprotocol == "mqtt"
    assert client._head is None and client._offer_subprotocols == ()


def test_request_that_parsing_would_change_is_kept_as_it_is() -> None:
    client = ClientConnection("example.com", "/", headers=[("X-Padded", " value ")])
    assert client._request is not None
    assert client.request is not None and client.request.headers.get("X-Padded") == " value "
    assert client.data_to_send() == build_request(client.request)


def test_request_and_response_can_be_set() -> None:
    client, _ = open_client()
    other = parse_response(b"HTTP/1.1 101 Switching Protocols\r\nX-Other: 1")
    client.response = other
    assert client.response is other
    client.request = None
    assert client.request is None


def test_failed_handshake_has_no_response_and_drops_its_reader() -> None:
    client = ClientConnection("example.com", "/")
    client.receive_data(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    assert client.handshake_error is not None and client.handshake_error.status == 404
    assert client.response is None
    assert client._head is None


def test_masking_key_pool_doubles_from_16_bytes_to_256() -> None:
    client, _ = open_client()
    sizes = []
    keys = set()
    for _ in range(4 + 8 + 16 + 32 + 64 + 64):
        keys.add(client._next_mask())
        sizes.append(len(client._mask_pool))
    assert sorted(set(sizes)) == [16, 32, 64, 128, 256]
    assert sizes[0] == 16 and sizes[4] == 32 and sizes[-1] == 256
    assert len(keys) > 180  # drawn from os.urandom(), not repeated


async def test_connection_objects_have_no_dict_and_keep_the_handshake_once() -> None:
    seen: asyncio.Future[tuple[Any, Any]] = asyncio.get_running_loop().create_future()

    async def handler(ws: tether.ws.ServerWebSocket) -> None:
        seen.set_result((ws.request, ws.response))
        await ws.send(await ws.recv())

    server = await tether.ws.serve(handler, "127.0.0.1", 0, ping_interval=None)
    async with server, tether.ws.connect(f"ws://127.0.0.1:{server.port}/x", ping_interval=None) as ws:
        assert not hasattr(ws, "__dict__")
        assert ws._opened is None and ws._pings is None and ws._drain_waiters is None
        assert ws.request is ws._core.request and ws.request.path == "/x"
        assert ws.response is ws._core.response and ws.response.status == 101
        server_request, server_response = await seen
        assert server_request.headers.get("Sec-WebSocket-Key") == ws._core.key
        assert server_response.status == 101
        pong = await ws.ping()
        assert await asyncio.wait_for(pong, 10) >= 0
        assert ws._pings == {}
        await ws.send(b"echo")
        assert await ws.recv() == b"echo"
