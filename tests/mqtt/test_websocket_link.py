"""MQTT over WebSocket against a fake broker (tether.ws.serve) on loopback: the link runs no
task per connection, reports how the WebSocket ended, and pauses the transport for
backpressure. Real brokers are in tests/integration/test_mqtt_broker.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import tether.ws
from tether.errors import ConnectionClosed, ProtocolError
from tether.mqtt import Client
from tether.mqtt.packets import (
    MQTT_5,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PacketReader,
    Properties,
    Publish,
    ReasonCode,
    encode,
)

pytestmark = pytest.mark.timeout(30)


class WsSession:
    """One MQTT connection to the fake broker, inside a WebSocket, seen from the broker."""

    def __init__(self, ws: tether.ws.ServerWebSocket) -> None:
        self.ws = ws
        self.packets = PacketReader(MQTT_5)
        self.pending: list[Packet] = []

    async def expect(self, kind: type[Packet]) -> Any:
        while not self.pending:
            message = await asyncio.wait_for(self.ws.recv(), 10)
            assert isinstance(message, bytes)
            self.pending += self.packets.feed(message)
        packet = self.pending.pop(0)
        assert isinstance(packet, kind), packet
        return packet

    async def send(self, *packets: Packet) -> None:
        await self.ws.send(b"".join(encode(p, MQTT_5) for p in packets))

    async def accept(self) -> None:
        await self.expect(Connect)
        await self.send(ConnAck(False, ReasonCode.SUCCESS, Properties()))


Script = Callable[[WsSession], Awaitable[None]]


async def serve_script(script: Script) -> tuple[Any, asyncio.Future[None]]:
    """Start a WebSocket server that runs script for its one connection."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def handler(ws: tether.ws.ServerWebSocket) -> None:
        try:
            await script(WsSession(ws))
        except BaseException as exc:
            done.set_exception(exc)
            raise
        done.set_result(None)

    server = await tether.ws.serve(handler, "127.0.0.1", 0, subprotocols=["mqtt"], ping_interval=None)
    return server, done


def ws_client(server: Any, **kwargs: Any) -> Client:
    kwargs.setdefault("client_id", "c1")
    kwargs.setdefault("reconnect", False)
    kwargs.setdefault("connect_timeout", 5)
    return Client(f"ws://127.0.0.1:{server.port}/mqtt", **kwargs)


def client_tasks() -> list[asyncio.Task[Any]]:
    """Tasks running code of the MQTT client (the old link read in one per connection)."""
    client_files = ("mqtt/client.py",)
    return [
        t
        for t in asyncio.all_tasks()
        if getattr(t.get_coro(), "cr_code", None) is not None
        and t.get_coro().cr_code.co_filename.endswith(client_files)  # type: ignore[union-attr]
    ]


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in 5 s")


async def test_connected_client_runs_no_task_and_receives() -> None:
    async def script(s: WsSession) -> None:
        await s.accept()
        # Two packets in one message, then one packet split over two messages.
        first = encode(Publish("t/1", b"one"), MQTT_5) + encode(Publish("t/2", b"two"), MQTT_5)
        third = encode(Publish("t/3", b"three"), MQTT_5)
        await s.ws.send(first)
        await s.ws.send(third[:3])
        await s.ws.send(third[3:])
        await s.expect(Disconnect)

    server, done = await serve_script(script)
    async with server:
        c = ws_client(server)
        stream = c.messages()
        await c.connect()
        assert client_tasks() == []  # no reader task per connection
        got = [(m.topic, m.payload) for m in [await stream.get(5) for _ in range(3)]]
        assert got == [("t/1", b"one"), ("t/2", b"two"), ("t/3", b"three")]
        await c.disconnect()
        await asyncio.wait_for(done, 10)


async def test_text_message_ends_the_connection_with_1002() -> None:
    closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def script(s: WsSession) -> None:
        await s.accept()
        await s.ws.send("not MQTT")
        await s.ws.wait_closed()
        closed.set_result(s.ws.close_code)

    server, done = await serve_script(script)
    async with server:
        errors: list[BaseException | None] = []
        c = ws_client(server, on_disconnect=lambda _client, error: errors.append(error))
        await c.connect()
        assert await asyncio.wait_for(closed, 10) == 1002
        await _until(lambda: bool(errors))
        assert isinstance(errors[0], ProtocolError)
        assert "text message" in str(errors[0])
        await asyncio.wait_for(done, 10)


# A close without MQTT's DISCONNECT is a dropped connection (1006) to the MQTT client,
# whatever the WebSocket close code, unless that code says something went wrong.
@pytest.mark.parametrize(("code", "reported"), [(1000, 1006), (1011, 1011)])
async def test_server_close_is_reported(code: int, reported: int) -> None:
    async def script(s: WsSession) -> None:
        await s.accept()
        await s.ws.close(code)

    server, done = await serve_script(script)
    async with server:
        errors: list[BaseException | None] = []
        c = ws_client(server, on_disconnect=lambda _client, error: errors.append(error))
        await c.connect()
        await _until(lambda: bool(errors))
        assert isinstance(errors[0], ConnectionClosed) and errors[0].code == reported
        assert not c.is_connected
        await asyncio.wait_for(done, 10)


async def test_full_stream_pauses_the_transport_until_read() -> None:
    count = 64  # of 64 KiB each: more than the socket buffers hold
    sent = asyncio.Event()

    async def script(s: WsSession) -> None:
        await s.accept()
        for i in range(count):
            await s.send(Publish("t", str(i).encode().ljust(2**16)))
        sent.set()
        await s.expect(Disconnect)

    server, done = await serve_script(script)
    async with server:
        c = ws_client(server)
        stream = c.messages(max_queue=4)
        await c.connect()
        link = c._link
        assert link is not None
        transport = link._ws._transport  # type: ignore[attr-defined]
        await _until(lambda: len(stream) >= 4)
        assert not transport.is_reading()  # paused at the bound, not queued in a task
        assert not sent.is_set()
        got = [int((await stream.get(5)).payload.rstrip()) for _ in range(count)]
        assert got == list(range(count))
        assert transport.is_reading()
        await c.disconnect()
        await asyncio.wait_for(done, 10)
