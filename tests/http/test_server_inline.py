"""Async handlers whose first step runs inside data_received (server._resume).

A handler that never waits is answered without a task; one that waits is
taken over by a task from where it stopped. These tests check that both give
what ``await handler(request)`` in a task would: results, exceptions,
cancellation and context variables.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

from tether.http import App, HTTPError, Request, serve

TIMEOUT = 10.0
marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")


async def fetch(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def make_app(gate: asyncio.Event) -> App:
    app = App()

    @app.get("/now")
    async def now(request: Request) -> dict[str, Any]:
        marker.set("now")
        return {"ok": True}

    @app.get("/later")
    async def later(request: Request) -> dict[str, Any]:
        marker.set("later")
        await gate.wait()
        return {"marker": marker.get()}

    @app.get("/later-fails")
    async def later_fails(request: Request) -> None:
        await asyncio.sleep(0)
        raise HTTPError(409, "conflict")

    @app.get("/later-crashes")
    async def later_crashes(request: Request) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("boom")

    @app.get("/now-fails")
    async def now_fails(request: Request) -> None:
        raise HTTPError(418, "teapot")

    @app.get("/marker")
    async def show_marker(request: Request) -> str:
        return marker.get()

    return app


def test_first_step_inline_and_task_takeover() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        async with serve(make_app(gate)) as server:
            port = server.port
            assert await fetch(port, "/now") == (200, b'{"ok":true}')
            pending = asyncio.ensure_future(fetch(port, "/later"))
            await asyncio.sleep(0)  # the handler waits on the gate, whatever the clock says
            assert not pending.done()
            gate.set()
            assert await pending == (200, b'{"marker":"later"}')
            assert (await fetch(port, "/later-fails"))[0] == 409
            assert (await fetch(port, "/later-crashes"))[0] == 500
            assert (await fetch(port, "/now-fails"))[0] == 418
            # Context variables a handler set stay in its own context.
            assert await fetch(port, "/marker") == (200, b"unset")
        assert marker.get() == "unset"

    asyncio.run(asyncio.wait_for(main(), TIMEOUT))


def test_waiting_handler_is_cancelled_on_shutdown() -> None:
    async def main() -> None:
        seen: list[str] = []
        app = App()

        @app.get("/wait")
        async def wait(request: Request) -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise

        server = await serve(app, shutdown_timeout=0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        for _ in range(100):
            if any(conn._task is not None for conn in server._connections):
                break
            await asyncio.sleep(0.01)
        server.close()
        await server.wait_closed()
        assert seen == ["cancelled"]
        writer.close()
        await reader.read()

    asyncio.run(asyncio.wait_for(main(), TIMEOUT))


def test_resume_passes_values_and_exceptions() -> None:
    from tether.http.server import _resume

    async def inner() -> str:
        fut = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(fut.set_result, "value")
        got = await fut
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            return got + " then cancelled"
        return "not reached"

    async def main() -> str:
        coro = inner()
        yielded = coro.send(None)
        task = asyncio.ensure_future(_await(_resume(coro, yielded)))
        for _ in range(10):
            await asyncio.sleep(0)
        task.cancel()
        return await task

    async def _await(awaitable: Any) -> Any:
        return await awaitable

    assert asyncio.run(main()) == "value then cancelled"


@pytest.mark.parametrize("value", [{"a": [1, 2.5, None, True, "é"]}, [], "s", 3])
def test_json_bytes_matches_json_dumps(value: Any) -> None:
    import json

    from tether.http.app import json_bytes

    assert json_bytes(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def test_json_bytes_errors() -> None:
    from tether.http.app import json_bytes

    circular: list[Any] = []
    circular.append(circular)
    with pytest.raises(ValueError, match="Circular"):
        json_bytes(circular)
    with pytest.raises(TypeError, match="set"):
        json_bytes({"x": {1}})
