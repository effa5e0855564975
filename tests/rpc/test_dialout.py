"""The dial-out WebSocket channel (spec mgos-rpc.md §2.5) against a test backend on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from tests.rpc.handlers import make_dispatcher

import tether.rpc as rpc
import tether.ws as ws
from tether.errors import ConnectionClosed, RpcError, Timeout


class Backend:
    """A backend: takes the device's connections, calls it, answers its calls."""

    def __init__(self) -> None:
        self.connections: asyncio.Queue[ws.ServerWebSocket] = asyncio.Queue()
        self.requests: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.next_id = 100

    async def handler(self, conn: ws.ServerWebSocket) -> None:
        await self.connections.put(conn)
        async for message in conn:
            frame = json.loads(message)
            if "method" in frame:
                await self.requests.put(frame)
                if frame.get("id") is not None:
                    result = {"hello": frame.get("params")}
                    await conn.send(
                        json.dumps(
                            {"id": frame["id"], "src": "backend", "dst": frame["src"], "result": result}
                        )
                    )
            else:
                self.replies[frame["id"]].set_result(frame)

    async def call(
        self, conn: ws.ServerWebSocket, method: str, params: Any = None, **fields: Any
    ) -> dict[str, Any]:
        self.next_id += 1
        self.replies[self.next_id] = asyncio.get_running_loop().create_future()
        await conn.send(
            json.dumps({"id": self.next_id, "src": "backend", "method": method, "params": params, **fields})
        )
        return await asyncio.wait_for(self.replies[self.next_id], 10)


def device() -> rpc.Dispatcher:
    """The shared handler set (its ``Sum`` answers ``3.00``) and ``Where``."""
    d, _ = make_dispatcher()

    @d.method("Where")
    async def where(call: rpc.Call) -> Any:
        await asyncio.sleep(0)
        return call.channel

    return d


async def test_backend_calls_the_device_again_after_a_killed_connection() -> None:
    backend = Backend()
    async with ws.serve(backend.handler, "127.0.0.1", 0, subprotocols=["json-rpc"]) as server:
        url = f"ws://127.0.0.1:{server.port}/rpc"
        async with rpc.DialOut(device(), url, backoff_min=0.01, backoff_max=0.05) as dialout:
            conn = await asyncio.wait_for(backend.connections.get(), 10)
            assert conn.request.headers.get("Sec-WebSocket-Protocol") == "json-rpc"
            assert conn.subprotocol == "json-rpc"
            assert conn.request.headers.get("Origin") == "https://mongoose-os.com"
            reply = await backend.call(conn, "Sum", {"a": 1, "b": 2})
            assert reply == {"id": backend.next_id, "src": "tether_0A1B2C", "dst": "backend", "result": 3}
            assert (await backend.call(conn, "Where"))["result"] == "WS_out"
            reply = await backend.call(conn, "Sum", {"a": 1, "b": 2}, dst="tether_0A1B2C")
            assert reply["result"] == 3

            assert conn._transport is not None
            conn._transport.abort()  # kill the connection: no close frame
            conn = await asyncio.wait_for(backend.connections.get(), 10)
            reply = await backend.call(conn, "Sum", {"a": 2, "b": 3})
            assert reply["result"] == 5
            assert dialout.connections == 2


async def test_device_calls_the_backend() -> None:
    backend = Backend()
    async with ws.serve(backend.handler, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.port}/rpc"
        dialout = rpc.DialOut(device(), url, backoff_min=0.01, backoff_max=0.05)
        # A call made before the connection is up waits for it (§1.4: queued until a channel opens).
        early = asyncio.ensure_future(dialout.call("Backend.Hello", {"n": 1}))
        dialout.start()
        try:
            assert await early == {"hello": {"n": 1}}
            request = await backend.requests.get()
            assert request["src"] == "tether_0A1B2C" and request["method"] == "Backend.Hello"
            assert "dst" not in request
            assert await dialout.call("Backend.Hello", [2], dst="backend") == {"hello": [2]}
            assert (await backend.requests.get())["dst"] == "backend"
            dialout.notify("Backend.Event", {"up": True})
            notification = await backend.requests.get()
            assert notification["method"] == "Backend.Event" and "id" not in notification
        finally:
            await dialout.close()


async def test_invalid_frames_are_dropped_and_the_link_stays(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tether.rpc")
    backend = Backend()
    async with (
        ws.serve(backend.handler, "127.0.0.1", 0) as server,
        rpc.DialOut(device(), f"ws://127.0.0.1:{server.port}/rpc", backoff_min=0.01) as dialout,
    ):
        conn = await asyncio.wait_for(backend.connections.get(), 10)
        await dialout.wait_connected()
        await conn.send("{nope")
        await conn.send('[{"id":1,"method":"Sum"}]')
        await conn.send('{"id":5,"dst":"someone_else","src":"backend","method":"Sum"}')
        await conn.send('{"id":424242,"src":"backend","result":1}')  # a reply nobody waits for
        assert (await backend.call(conn, "Sum", {"a": 1, "b": 1}))["result"] == 2
        assert dialout.connected and dialout.connections == 1
    assert "dropping an invalid frame" in caplog.text


async def test_logs_show_neither_password_nor_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tether.rpc")
    backend = Backend()
    async with ws.serve(backend.handler, "127.0.0.1", 0) as server:
        url = f"ws://dev:pw-secret@127.0.0.1:{server.port}/rpc?token=tok-secret"
        async with rpc.DialOut(device(), url, backoff_min=0.01) as dialout:
            conn = await asyncio.wait_for(backend.connections.get(), 10)
            await dialout.wait_connected()
            await conn.send("{nope")
            assert (await backend.call(conn, "Sum", {"a": 1, "b": 1}))["result"] == 2
            assert repr(dialout) == f"DialOut('ws://127.0.0.1:{server.port}/rpc?…', connected=True)"
    assert f"dial-out channel to ws://127.0.0.1:{server.port}/rpc?… open" in caplog.text
    assert "secret" not in caplog.text


async def test_calls_fail_cleanly() -> None:
    async def silent(conn: ws.ServerWebSocket) -> None:
        async for message in conn:
            frame = json.loads(message)
            if frame["method"] == "Fail":
                await conn.send(json.dumps({"id": frame["id"], "error": {"code": 404, "message": "no"}}))

    async with ws.serve(silent, "127.0.0.1", 0) as server:
        dialout = rpc.DialOut(device(), f"ws://127.0.0.1:{server.port}/rpc", backoff_min=0.01)
        async with dialout:
            with pytest.raises(RpcError) as failed:
                await dialout.call("Fail")
            assert (failed.value.code, failed.value.message) == (404, "no")
            with pytest.raises(Timeout):
                await dialout.call("Silence", timeout=0.01)
            pending = asyncio.ensure_future(dialout.call("Silence", timeout=None))
            await asyncio.sleep(0)
        with pytest.raises(ConnectionClosed):
            await pending


async def test_keeps_dialing_after_refusals() -> None:
    refusals = 0

    def refuse_twice(request: ws.Request) -> ws.Response | None:
        nonlocal refusals
        if refusals < 2:
            refusals += 1
            return ws.Response(403, ws.Headers([]), body=b"")
        return None

    backend = Backend()
    async with (
        ws.serve(backend.handler, "127.0.0.1", 0, process_request=refuse_twice) as server,
        rpc.DialOut(device(), f"ws://127.0.0.1:{server.port}/rpc", backoff_min=0.01, backoff_max=0.02),
    ):
        conn = await asyncio.wait_for(backend.connections.get(), 10)
        assert (await backend.call(conn, "Sum", {"a": 1, "b": 1}))["result"] == 2
    assert refusals == 2


async def test_a_handler_on_the_dial_out_link_runs_in_a_task_of_its_own() -> None:
    """asyncio.timeout() and cancellation in a handler must act on the handler, not on the
    task that reads the connection (which would drop the link). Python 3.11's wait_for in
    the dispatcher hides the difference; from 3.12, wait_for times out the current task."""
    import asyncio
    import json

    import tether.ws as ws
    from tether.rpc import DialOut, Dispatcher

    dispatcher = Dispatcher("dev")
    tasks: list[object] = []

    @dispatcher.method("Slow")
    async def slow(call: object) -> str:
        tasks.append(asyncio.current_task())
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(10)
        except TimeoutError:
            return "timed out"
        return "never"

    replies: asyncio.Queue[dict[str, object]] = asyncio.Queue()

    async def backend(conn: object) -> None:
        await conn.send(json.dumps({"id": 1, "src": "srv", "method": "Slow"}))  # type: ignore[attr-defined]
        async for message in conn:  # type: ignore[attr-defined]
            await replies.put(json.loads(message))

    async with ws.serve(backend, "127.0.0.1", 0) as server:
        link = DialOut(dispatcher, f"ws://127.0.0.1:{server.port}/rpc")
        async with link:
            reply = await asyncio.wait_for(replies.get(), 5)
            assert reply["result"] == "timed out"
            assert link.connected and link.connections == 1
    assert tasks and tasks[0] is not None
