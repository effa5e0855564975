"""Issue 4, acceptance 2: one handler set (`tests.rpc.handlers`) served at once over every
channel — WebSocket, HTTP frame mode, HTTP REST mode, MQTT through a real mosquitto, serial
over a pseudo-terminal pair, and dial-out to a test backend — gives identical results."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.rpc.handlers import DEVICE_ID, make_dispatcher

import tether.rpc as rpc
import tether.ws as ws
from tether.errors import ConnectionClosed, RpcError
from tether.mqtt import Client
from tether.rpc.channels.serial import open_pty, serve_serial

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

WAIT = 5.0  # seconds any single step may take before the test fails

NESTED = {"x": [1, "y", None, {"z": {"deep": [True, False, 1.5]}}], "s": "é", "n": -(2**53 + 1)}

#: (method, params): the calls made over every channel.
CALLS: list[tuple[str, Any]] = [
    ("Sum", {"a": 1, "b": 2}),
    ("Echo", NESTED),
    ("RPC.List", None),
    ("Config.Get", None),
    ("Fail", None),
    ("No.Such", None),
    ("Sum", {"a": 1}),
]

#: What every channel must answer, in the order of `CALLS` (``RPC.List`` is checked apart).
EXPECTED: list[Any] = [
    ("result", 3.0),
    ("result", NESTED),
    None,
    ("result", {"user": None}),
    ("error", -1, "nope"),
    ("error", 404, "No handler for No.Such"),
    ("error", 400, "b is required"),
]

OURS = {"Sum", "Echo", "Note", "Config.Get", "Fail", "RPC.List", "RPC.Describe", "RPC.Ping"}


class BackendTransport:
    """The backend's end of the dial-out link as a client `Transport`."""

    def __init__(self, conn: ws.ServerWebSocket) -> None:
        self.conn = conn
        self.done = asyncio.Event()

    async def send(self, frame: bytes) -> None:
        await self.conn.send(frame.decode())

    async def recv(self) -> bytes:
        message = await self.conn.recv()
        return message.encode() if isinstance(message, str) else bytes(message)

    async def close(self) -> None:
        self.done.set()


async def outcome(client: rpc.RpcClient, method: str, params: Any) -> Any:
    try:
        return ("result", await client.call(method, params, timeout=WAIT))
    except RpcError as exc:
        return ("error", exc.code, exc.message)


async def rest_call(port: int, method: str, params: Any) -> tuple[int, bytes]:
    """POST /rpc/<method> with the params as the body: status and body."""
    body = b"" if params is None else json.dumps(params).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"POST /rpc/{method} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        lines = head.decode("latin-1").split("\r\n")
        length = next(
            int(v) for k, _, v in (x.partition(":") for x in lines) if k.lower() == "content-length"
        )
        return int(lines[0].split()[1]), await asyncio.wait_for(reader.readexactly(length), WAIT)
    finally:
        writer.close()


async def rest_outcome(port: int, method: str, params: Any) -> Any:
    status, body = await rest_call(port, method, params)
    value = json.loads(body)
    if status == 200:
        return ("result", value)
    assert status == (value["code"] if value["code"] in (403, 404) else 500), (method, status, value)
    return ("error", value["code"], value.get("message", ""))


@contextlib.asynccontextmanager
async def task_of(coroutine: Any) -> AsyncIterator[asyncio.Task[Any]]:
    task = asyncio.ensure_future(coroutine)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
            await task


async def test_one_handler_set_over_all_channels(make_broker: Any) -> None:
    dispatcher, notes = make_dispatcher()
    broker = make_broker(schemes=("mqtt",))
    links: asyncio.Queue[BackendTransport] = asyncio.Queue()

    async def backend(conn: ws.ServerWebSocket) -> None:
        link = BackendTransport(conn)
        await links.put(link)
        await link.done.wait()

    async with contextlib.AsyncExitStack() as stack:
        # Dial-out: the device connects to the backend, which calls it over the link.
        backend_server = await stack.enter_async_context(
            ws.serve(backend, "127.0.0.1", 0, subprotocols=["json-rpc"])
        )
        # MQTT: the device's client on the broker; the server adds the channel on <device_id>/rpc/#.
        device_client = await stack.enter_async_context(Client(broker.url("mqtt"), client_id="device"))
        # WebSocket and HTTP on /rpc, MQTT and dial-out: one Server.
        server = await stack.enter_async_context(
            rpc.Server(
                dispatcher,
                http="127.0.0.1:0",
                mqtt=device_client,
                dial_out=f"ws://127.0.0.1:{backend_server.port}/rpc",
                reconnect_min=0.01,
            )
        )
        port = server.http_port
        assert port is not None
        # Serial: the device on the pty's master, so that clients may open its slave path
        # (`Server(serial=PATH)` serves a path itself; tests/rpc/test_server.py covers it).
        pty = stack.enter_context(open_pty())
        await stack.enter_async_context(task_of(serve_serial(dispatcher, pty.master)))
        link = await asyncio.wait_for(links.get(), WAIT)
        stack.callback(link.done.set)

        clients: dict[str, rpc.RpcClient] = {
            "ws": await stack.enter_async_context(rpc.connect(server.urls[0], timeout=WAIT)),
            "http": await stack.enter_async_context(rpc.connect(server.urls[1], timeout=WAIT)),
            "mqtt": await stack.enter_async_context(
                rpc.connect(f"{broker.url('mqtt')}/{DEVICE_ID}", timeout=WAIT)
            ),
            "serial": await stack.enter_async_context(rpc.connect(f"serial://{pty.path}", timeout=WAIT)),
            "dialout": rpc.RpcClient(link, src="backend", timeout=WAIT),
        }
        stack.push_async_callback(clients["dialout"].close)

        results: dict[str, list[Any]] = {}
        for name, client in clients.items():
            results[name] = [await outcome(client, method, params) for method, params in CALLS]
        results["rest"] = [await rest_outcome(port, method, params) for method, params in CALLS]

        listed = results["ws"][2]
        assert listed[0] == "result" and set(listed[1]) >= OURS, listed
        for name, got in results.items():
            assert got[2] == listed, name
            assert [g for i, g in enumerate(got) if i != 2] == [e for e in EXPECTED if e is not None], name

        # REST mode's bodies themselves: Sum's RawJSON verbatim, error objects with the statuses.
        assert await rest_call(port, "Sum", {"a": 1, "b": 2}) == (200, b"3.00\r\n")
        assert await rest_call(port, "Fail", None) == (500, b'{"code":-1,"message":"nope"}\r\n')
        status, body = await rest_call(port, "No.Such", None)
        assert (status, json.loads(body)) == (404, {"code": 404, "message": "No handler for No.Such"})

        # The one answer that differs by design: RPC.Ping reports the channel's peer.
        pings = {
            name: (await client.call("RPC.Ping", timeout=WAIT))["channel_info"]
            for name, client in clients.items()
        }
        assert pings.pop("mqtt") == "" and pings.pop("serial") == "UART0", pings
        assert pings.pop("dialout") == f"127.0.0.1:{backend_server.port}"
        assert all(peer.startswith("127.0.0.1:") for peer in pings.values()), pings

        # A notification over each client channel reaches Note.
        for name, client in clients.items():
            await client.notify("Note", name)
        deadline = time.monotonic() + WAIT
        while sorted(notes) != sorted(clients) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert sorted(notes) == sorted(clients)
