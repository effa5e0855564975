"""The callback API (tether.ws.Handler) on tether's server and client, and against websockets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

import tether.ws
from tether.errors import ConnectionClosed

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 10.0


def run(coro: Any) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, TIMEOUT)

    return asyncio.run(bounded())


class Recorder(tether.ws.Handler):
    """Echoes every message and records every callback."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.closed: asyncio.Event = asyncio.Event()

    def on_open(self, ws: tether.ws.WebSocket) -> None:
        self.calls.append(("open", ws))

    def on_message(self, ws: tether.ws.WebSocket, message: tether.ws.Data) -> None:
        self.calls.append(("message", message))
        ws.send_nowait(message)

    def on_close(self, ws: tether.ws.WebSocket, code: int, reason: str) -> None:
        self.calls.append(("close", code, reason))
        self.closed.set()


@contextlib.asynccontextmanager
async def serving(handler: Any, **kwargs: Any) -> AsyncIterator[tether.ws.Server]:
    kwargs.setdefault("ping_interval", None)
    async with tether.ws.serve(handler, "127.0.0.1", 0, **kwargs) as server:
        yield server


def url(server: tether.ws.Server) -> str:
    return f"ws://127.0.0.1:{server.port}/"


def test_a_shared_handler_echoes_and_sees_open_and_close() -> None:
    async def main() -> None:
        handler = Recorder()
        async with serving(handler) as server:
            async with tether.ws.connect(url(server), ping_interval=None) as ws:
                for message in ["hello", b"\x00\xff" * 100, "", "ünïcödé"]:
                    await ws.send(message)
                    assert await ws.recv() == message
            await asyncio.wait_for(handler.closed.wait(), TIMEOUT)
        kinds = [call[0] for call in handler.calls]
        assert kinds == ["open", "message", "message", "message", "message", "close"]
        assert isinstance(handler.calls[0][1], tether.ws.ServerWebSocket)
        assert handler.calls[-1] == ("close", 1000, "")

    run(main())


def test_a_handler_class_gets_one_instance_per_connection() -> None:
    instances: list[Recorder] = []

    class PerConnection(Recorder):
        def __init__(self) -> None:
            super().__init__()
            instances.append(self)

    async def main() -> None:
        async with serving(PerConnection) as server:
            for n in range(2):
                async with tether.ws.connect(url(server), ping_interval=None) as ws:
                    await ws.send(f"#{n}")
                    assert await ws.recv() == f"#{n}"
            for instance in instances:
                await asyncio.wait_for(instance.closed.wait(), TIMEOUT)
        assert len(instances) == 2
        assert [[c for c in i.calls if c[0] == "message"] for i in instances] == [
            [("message", "#0")],
            [("message", "#1")],
        ]

    run(main())


def test_a_client_handler_gets_messages_sent_with_the_handshake_after_on_open() -> None:
    async def greet(ws: tether.ws.ServerWebSocket) -> None:
        # Sent at once: may arrive in the same read as the 101 response.
        await ws.send("welcome")
        async for message in ws:
            await ws.send(message)

    class Client(tether.ws.Handler):
        def __init__(self) -> None:
            self.calls: list[tuple[Any, ...]] = []
            self.got: asyncio.Queue[tether.ws.Data] = asyncio.Queue()
            self.closed = asyncio.Event()

        def on_open(self, ws: tether.ws.WebSocket) -> None:
            self.calls.append(("open",))

        def on_message(self, ws: tether.ws.WebSocket, message: tether.ws.Data) -> None:
            self.calls.append(("message", message))
            self.got.put_nowait(message)

        def on_close(self, ws: tether.ws.WebSocket, code: int, reason: str) -> None:
            self.calls.append(("close", code, reason))
            self.closed.set()

    async def main() -> None:
        client = Client()
        async with serving(greet) as server:
            ws = await tether.ws.connect(url(server), ping_interval=None, handler=client)
            assert await client.got.get() == "welcome"
            assert ws.send_nowait(b"ping") is True
            assert await client.got.get() == b"ping"
            await ws.close()
            await asyncio.wait_for(client.closed.wait(), TIMEOUT)
        assert client.calls == [("open",), ("message", "welcome"), ("message", b"ping"), ("close", 1000, "")]

    run(main())


class Failing(Recorder):
    def on_message(self, ws: tether.ws.WebSocket, message: tether.ws.Data) -> None:
        raise RuntimeError("boom")


class Closer(Recorder):
    def on_message(self, ws: tether.ws.WebSocket, message: tether.ws.Data) -> None:
        ws.close_nowait(4000, "bye")
        ws.close_nowait(4001, "twice is harmless")


@pytest.mark.parametrize(
    ("handler_class", "code", "reason"), [(Failing, 1011, "internal error"), (Closer, 4000, "bye")]
)
def test_a_callback_that_raises_or_closes_still_gets_on_close(
    handler_class: type[Recorder], code: int, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        handler = handler_class()
        async with serving(handler) as server, tether.ws.connect(url(server), ping_interval=None) as ws:
            await ws.send("anything")
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert (info.value.code, info.value.reason) == (code, reason)
            await asyncio.wait_for(handler.closed.wait(), TIMEOUT)
        # close_code and close_reason are the peer's: tether's client echoes the code only.
        assert handler.calls[-1] == ("close", code, "")

    with caplog.at_level(logging.ERROR, logger="tether.ws"):
        run(main())
    assert ("on_message failed" in caplog.text) is (handler_class is Failing)


def test_a_lost_connection_reports_1006_and_server_close_1001() -> None:
    async def main() -> None:
        lost = Recorder()
        async with serving(lost) as server:
            ws = await tether.ws.connect(url(server), ping_interval=None)
            await ws.send("x")
            assert await ws.recv() == "x"
            assert ws._transport is not None
            ws._transport.abort()
            await asyncio.wait_for(lost.closed.wait(), TIMEOUT)
        assert lost.calls[-1] == ("close", 1006, "")

        going = Recorder()
        async with serving(going) as server:
            ws = await tether.ws.connect(url(server), ping_interval=None)
            await ws.send("x")
            assert await ws.recv() == "x"
            server.close()
            await server.wait_closed()
            await asyncio.wait_for(going.closed.wait(), TIMEOUT)
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        assert going.calls[-1] == ("close", 1001, "")

    run(main())


def test_pause_and_resume_reading() -> None:
    class Pausing(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.paused = asyncio.Event()

        def on_message(self, ws: tether.ws.WebSocket, message: tether.ws.Data) -> None:
            super().on_message(ws, message)
            if message == "pause":
                ws.pause_reading()
                ws.pause_reading()  # idempotent
                self.ws = ws
                self.paused.set()

    async def main() -> None:
        handler = Pausing()
        async with serving(handler) as server, tether.ws.connect(url(server), ping_interval=None) as ws:
            await ws.send("pause")
            assert await ws.recv() == "pause"
            await asyncio.wait_for(handler.paused.wait(), TIMEOUT)
            transport = handler.ws._transport
            assert transport is not None and not transport.is_reading()
            await ws.send("after")
            handler.ws.resume_reading()
            handler.ws.resume_reading()  # idempotent
            assert transport.is_reading()
            assert await ws.recv() == "after"
        assert [c[1] for c in handler.calls if c[0] == "message"] == ["pause", "after"]

    run(main())


def test_on_writable_after_the_peer_drains() -> None:
    chunk = b"x" * 65536

    class Flooder(tether.ws.Handler):
        def __init__(self) -> None:
            self.sent = 0
            self.full = asyncio.Event()
            self.writable = asyncio.Event()

        def on_message(self, ws: tether.ws.WebSocket, message: tether.ws.Data) -> None:
            # Write until the buffer is over write_limit: the client does not read.
            for _ in range(2000):
                self.sent += 1
                if not ws.send_nowait(chunk):
                    break
            self.full.set()

        def on_writable(self, ws: tether.ws.WebSocket) -> None:
            self.writable.set()

    async def main() -> None:
        handler = Flooder()
        async with (
            serving(handler, write_limit=65536) as server,
            tether.ws.connect(url(server), ping_interval=None, max_queue=2) as ws,
        ):
            await ws.send("go")
            await asyncio.wait_for(handler.full.wait(), TIMEOUT)
            assert 0 < handler.sent < 2000
            assert not handler.writable.is_set()
            for _ in range(handler.sent):
                assert await ws.recv() == chunk
            await asyncio.wait_for(handler.writable.wait(), TIMEOUT)

    run(main())


def test_websockets_client_against_a_callback_server() -> None:
    websockets_client = pytest.importorskip("websockets.asyncio.client")

    async def main() -> None:
        handler = Recorder()
        async with serving(handler, compression="deflate") as server:
            async with websockets_client.connect(url(server)) as ws:
                for message in ["text", b"\x01" * 70000, "é" * 1000]:
                    await ws.send(message)
                    assert await ws.recv() == message
            await asyncio.wait_for(handler.closed.wait(), TIMEOUT)
        assert handler.calls[-1] == ("close", 1000, "")

    run(main())


def test_failing_on_open_and_on_close_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    class Failing(tether.ws.Handler):
        def __init__(self) -> None:
            self.closed = asyncio.Event()

        def on_open(self, ws: tether.ws.WebSocket) -> None:
            raise RuntimeError("open")

        def on_close(self, ws: tether.ws.WebSocket, code: int, reason: str) -> None:
            self.closed.set()
            raise RuntimeError("close")

    async def main() -> None:
        handler = Failing()
        async with serving(handler) as server, tether.ws.connect(url(server), ping_interval=None) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.code == 1011
            await asyncio.wait_for(handler.closed.wait(), TIMEOUT)

    with caplog.at_level(logging.ERROR, logger="tether.ws"):
        run(main())
    assert "on_open failed" in caplog.text
    assert "on_close failed" in caplog.text
