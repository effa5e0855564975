"""tether.rpc.connection: RpcClient's call path and deadlines, over a stand-in WebSocket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from tether.errors import ConnectionClosed, RpcError, Timeout
from tether.rpc import RpcClient
from tether.rpc.transports import WebSocketTransport
from tether.ws.protocol import State


class FakeSocket:
    """What RpcClient uses of a client WebSocket: it keeps what is sent, replies come by hand."""

    state = State.OPEN

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.handler: Callable[[str], object] | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def set_message_handler(self, handler: Callable[[str], object] | None) -> None:
        self.handler = handler

    def send_nowait(self, message: str) -> bool:
        self.sent.append(json.loads(message))
        return True

    def reply(self, text: str) -> None:
        assert self.handler is not None
        self.handler(text)

    async def wait_closed(self) -> None:
        await asyncio.shield(self.closed)

    async def close(self) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def started(client: RpcClient, timeouts: list[float]) -> list[asyncio.Future[Any]]:
    calls = [asyncio.ensure_future(client.call("M", timeout=t)) for t in timeouts]
    await asyncio.sleep(0)  # a turn of the loop: each call sends its frame, then waits
    return calls


def tick(client: RpcClient) -> None:
    """Run the client's tick now, as its timer would."""
    if client._tick is not None:
        client._tick.cancel()
    client._on_tick()


async def test_calls_are_watched_from_the_first_tick_on() -> None:
    ws = FakeSocket()
    client = RpcClient(WebSocketTransport(ws), timeout=60)  # type: ignore[arg-type]
    calls = await started(client, [50, 40, 60, 60])
    ids = [frame["id"] for frame in ws.sent]
    assert not client._watched and client._tick is not None
    tick(client)
    assert client._watched == set(ids)
    # In the order they fall due, served by one timer; the one due before the last gets its own.
    assert [entry[3] for entry in client._deadlines] == [50, 60, 60]
    assert list(client._timers) == [ids[1]] and client._timer is not None
    tick(client)  # nothing new to watch
    assert len(client._deadlines) == 3 and len(client._timers) == 1
    ws.reply(f'{{"id":{ids[1]},"result":1}}')
    assert await calls[1] == 1
    assert not client._timers  # its timer went with it
    ws.reply(f'{{"id":{ids[0]},"error":{{"code":400,"message":"bad"}}}}')
    with pytest.raises(RpcError):
        await calls[0]
    for call_id in ids[2:]:
        ws.reply(f'{{"id":{call_id},"result":2}}')
    assert await asyncio.gather(*calls[2:]) == [2, 2]
    tick(client)
    assert not client._waiters and not client._watched and not client._deadlines
    await client.close()
    assert client._timer is None and client._tick is None


async def test_finished_calls_behind_a_slow_one_are_dropped() -> None:
    ws = FakeSocket()
    client = RpcClient(WebSocketTransport(ws), timeout=60, max_pending=100)  # type: ignore[arg-type]
    calls = await started(client, [60] * 70)
    tick(client)
    for frame in ws.sent[1:]:
        ws.reply(f'{{"id":{frame["id"]},"result":null}}')
    await asyncio.gather(*calls[1:])
    assert len(client._deadlines) == 70
    tick(client)
    assert len(client._deadlines) == 1  # the slow one at the head
    await client.close()
    with pytest.raises(ConnectionClosed, match="client closed"):
        await calls[0]


async def test_each_watched_call_fails_at_its_own_deadline() -> None:
    ws = FakeSocket()
    client = RpcClient(WebSocketTransport(ws))  # type: ignore[arg-type]
    first, second, third = await started(client, [0.01, 0.02, 0.03])
    tick(client)  # before any deadline: all three are watched, in order
    assert [entry[3] for entry in client._deadlines] == [0.01, 0.02, 0.03]
    ws.reply(f'{{"id":{ws.sent[0]["id"]},"result":1}}')
    assert await first == 1
    with pytest.raises(Timeout, match=r"call of M timed out after 0\.02 s"):
        await asyncio.wait_for(second, 5)
    assert not third.done()  # the timer waits again for the next deadline
    with pytest.raises(Timeout, match=r"after 0\.03 s"):
        await asyncio.wait_for(third, 5)
    assert not client._deadlines and client._timer is None
    await client.close()


async def test_a_call_not_yet_watched_fails_at_the_tick_at_its_deadline() -> None:
    ws = FakeSocket()
    client = RpcClient(WebSocketTransport(ws), timeout=60)  # type: ignore[arg-type]
    [slow] = await started(client, [60])
    tick = client._tick_at
    [quick] = await started(client, [0.01])
    assert client._tick_at < tick  # the tick comes earlier, at the quick call's deadline
    with pytest.raises(Timeout):
        await asyncio.wait_for(quick, 5)
    assert client._watched == {ws.sent[0]["id"]}  # the slow one, watched at that tick
    await client.close()
    with pytest.raises(ConnectionClosed, match="client closed"):
        await slow
