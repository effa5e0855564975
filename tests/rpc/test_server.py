"""tether.rpc.Server: one dispatcher over HTTP/WS, serial (a pty, stdin/stdout) and dial-out,
started and stopped as one; `parse_listen_addr`. MQTT is in
tests/integration/test_rpc_server_mqtt.py (it needs mosquitto)."""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tests.rpc.handlers import DEVICE_ID, make_dispatcher

import tether.http as http
import tether.rpc as rpc
import tether.ws as ws
from tether import tls
from tether.errors import RpcError
from tether.rpc.channels.serial import open_pty
from tether.rpc.serialframe import FrameReceived, SerialFramer

WAIT = 5.0  # seconds any single step may take before the test fails


# --- parse_listen_addr -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (8000, ("0.0.0.0", 8000)),
        (0, ("0.0.0.0", 0)),
        ("8000", ("0.0.0.0", 8000)),
        (":8000", ("0.0.0.0", 8000)),
        (" 80 ", ("0.0.0.0", 80)),
        ("127.0.0.1:8000", ("127.0.0.1", 8000)),
        ("localhost:65535", ("localhost", 65535)),
        ("[::1]:8000", ("::1", 8000)),
        ("[::]:0", ("::", 0)),
        ("tcp://:8080", ("0.0.0.0", 8080)),
        ("TCP://10.0.0.1:80", ("10.0.0.1", 80)),
    ],
)
def test_parse_listen_addr(value: str | int, expected: tuple[str, int]) -> None:
    assert rpc.parse_listen_addr(value) == expected


def test_parse_listen_addr_default_host() -> None:
    assert rpc.parse_listen_addr("8000", "127.0.0.1") == ("127.0.0.1", 8000)
    assert rpc.parse_listen_addr(":1", "::1") == ("::1", 1)
    assert rpc.parse_listen_addr("10.0.0.2:1", "127.0.0.1") == ("10.0.0.2", 1)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "has no valid port"),
        (":", "has no valid port"),
        ("host:", "has no valid port"),
        ("http", "has no valid port"),
        ("80a", "has no valid port"),
        ("+80", "has no valid port"),
        ("-1", "has no valid port"),
        ("٨٠", "has no valid port"),  # digits, but not ASCII ones
        ("65536", "is not in 0-65535"),
        ("127.0.0.1:99999", "is not in 0-65535"),
        ("123456", "has no valid port"),
        (65536, "is not in 0-65535"),
        (-1, "is not in 0-65535"),
        (True, "is not a port number"),
        (80.0, "is not a port number"),
        ("::1:8000", "in brackets"),
        ("[::1]", "is not \\[IPv6\\]:port"),
        ("[::1:8000", "is not \\[IPv6\\]:port"),
        ("[]:80", "is not \\[IPv6\\]:port"),
        ("udp://:1234", "scheme 'udp' is not tcp"),
        ("my host:80", "has spaces"),
    ],
)
def test_parse_listen_addr_rejects(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rpc.parse_listen_addr(value)


# --- HTTP and WebSocket ------------------------------------------------------------------------


async def test_ws_and_http_answer_on_a_free_port() -> None:
    dispatcher, _ = make_dispatcher()
    server = rpc.Server(dispatcher, http="127.0.0.1:0")
    assert (server.http_port, server.urls, server.http_server) == (None, [], None)
    async with server:
        port = server.http_port
        assert port is not None and port > 0
        assert server.http_server is not None and server.http_server.port == port
        assert server.urls == [f"ws://127.0.0.1:{port}/rpc", f"http://127.0.0.1:{port}/rpc"]
        for url in server.urls:
            async with rpc.connect(url, timeout=WAIT) as client:
                assert (await client.call("RPC.Ping"))["channel_info"].startswith("127.0.0.1:")
                assert await client.call("Sum", {"a": 1, "b": 2}) == 3
        assert (server.dial_out, server.mqtt_channel) == (None, None)
    assert server.http_port == port  # kept after close, for the log
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_the_callers_app_keeps_its_routes_and_method_registers() -> None:
    app = http.App()

    @app.get("/hello")
    async def hello(request: http.Request) -> dict[str, str]:
        return {"hello": "world"}

    server = rpc.Server(device_id="dev-1", http="127.0.0.1:0", app=app)
    assert server.app is app and server.dispatcher.device_id == server.device_id == "dev-1"
    assert server.mount is not None and server.mount.websocket is not None and server.mount.http is not None

    @server.method("Double", args={"type": "object", "properties": {"x": {"type": "number"}}})
    def double(call: rpc.Call) -> Any:
        return call.params["x"] * 2

    async with server:
        async with rpc.connect(server.urls[0], timeout=WAIT) as client:
            assert await client.call("Double", {"x": 21}) == 42
        reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
        writer.write(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = await asyncio.wait_for(reader.read(), WAIT)
        writer.close()
        assert response.startswith(b"HTTP/1.1 200") and response.endswith(b'{"hello":"world"}')


async def test_https_and_wss(pki: dict[str, Path]) -> None:
    context = tls.server_context(pki["cert"], pki["key"])
    client_context = tls.client_context(ca_file=pki["ca"])
    async with rpc.Server(http="127.0.0.1:0", ssl=context) as server:
        port = server.http_port
        assert server.urls == [f"wss://127.0.0.1:{port}/rpc", f"https://127.0.0.1:{port}/rpc"]
        for url in server.urls:
            async with rpc.connect(url, ssl=client_context, timeout=WAIT) as client:
                assert await client.call("RPC.List") == ["RPC.List", "RPC.Describe", "RPC.Ping"]


async def test_start_close_and_serve_forever() -> None:
    server = rpc.Server(http="127.0.0.1:0")
    await server.close()  # before start: nothing to do
    await server.start()
    with pytest.raises(RuntimeError, match="started already"):
        await server.start()
    serving = asyncio.ensure_future(server.serve_forever())
    await asyncio.sleep(0)
    assert not serving.done()
    await server.close()
    await asyncio.wait_for(serving, WAIT)  # returns once closed
    await server.close()  # idempotent
    # serve_forever starts the server itself, and closes it when cancelled.
    server = rpc.Server(http="127.0.0.1:0")
    serving = asyncio.ensure_future(server.serve_forever())
    deadline = time.monotonic() + WAIT
    while server.http_port is None and time.monotonic() < deadline:
        await asyncio.sleep(0)
    async with rpc.connect(server.urls[1], timeout=WAIT) as client:
        assert (await client.call("RPC.Ping"))["channel_info"].startswith("127.0.0.1:")
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", server.http_port)


def test_arguments_are_checked_at_once() -> None:
    dispatcher = rpc.Dispatcher("a")
    with pytest.raises(ValueError, match="device_id 'b' is not the dispatcher's 'a'"):
        rpc.Server(dispatcher, device_id="b")
    assert rpc.Server(dispatcher, device_id="a").device_id == "a"
    assert rpc.Server().device_id == "tether"
    with pytest.raises(ValueError, match="need an HTTP server"):
        rpc.Server(http=None, app=http.App())
    with pytest.raises(ValueError, match="need an HTTP server"):
        rpc.Server(http=None, ssl=tls.client_context())
    with pytest.raises(ValueError, match="dial_out_ssl needs"):
        rpc.Server(dial_out_ssl=tls.client_context())
    with pytest.raises(ValueError, match="is not a ws:// or wss:// URI"):
        rpc.Server(dial_out="http://backend/rpc")
    with pytest.raises(ValueError, match="has no valid port"):
        rpc.Server(http="localhost")
    with pytest.raises(ValueError, match="serial must be"):
        rpc.Server(serial="")
    app = http.App()
    rpc.mount_rpc(app, dispatcher)
    with pytest.raises(ValueError):
        rpc.Server(dispatcher, app=app)  # /rpc is taken


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = rpc.Server(http=f"127.0.0.1:{port}")
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            await server.start()
        assert server.http_server is None


async def test_a_failed_channel_leaves_nothing_running(tmp_path: Path) -> None:
    port = free_port()
    missing = tmp_path / "no-such-tty"
    server = rpc.Server(http=f"127.0.0.1:{port}", serial=str(missing))
    with pytest.raises(OSError, match="cannot open serial device") as failed:
        await server.start()
    assert str(missing) in str(failed.value)
    assert server.http_server is None and server.http_port is None
    with pytest.raises(OSError):  # the HTTP server that had started is closed again
        await asyncio.open_connection("127.0.0.1", port)
    async with rpc.Server(http=f"127.0.0.1:{port}") as again:  # and its port free
        assert again.http_port == port


# --- serial ------------------------------------------------------------------------------------


def line_call(fd_out: int, fd_in: int, frame: dict[str, Any]) -> dict[str, Any]:
    """Write a frame as mos does, read lines until the reply frame (within WAIT)."""
    framer = SerialFramer(client=True)
    framer.send_frame(json.dumps(frame).encode())
    os.write(fd_out, framer.data_to_send())
    deadline = time.monotonic() + WAIT
    while True:
        ready, _, _ = select.select([fd_in], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, "no reply in time"
        framer.receive_data(os.read(fd_in, 65536))
        for event in framer.events_received():
            if isinstance(event, FrameReceived):
                reply: dict[str, Any] = json.loads(event.frame)
                return reply


async def test_serial_on_a_pty_path() -> None:
    dispatcher, _ = make_dispatcher()
    with open_pty() as pty:
        async with rpc.Server(dispatcher, http=None, serial=pty.path) as server:
            assert server.urls == [] and server.http_port is None
            request = {"id": 7, "src": "mos", "method": "Sum", "params": {"a": 1, "b": 2}}
            reply = await asyncio.to_thread(line_call, pty.master, pty.master, request)
            assert reply == {"id": 7, "src": DEVICE_ID, "dst": "mos", "result": 3}
            ping = {"id": 8, "src": "mos", "method": "RPC.Ping"}
            reply = await asyncio.to_thread(line_call, pty.master, pty.master, ping)
            assert reply["result"] == {"channel_info": "UART0"}


async def test_serial_on_stdin_and_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    dispatcher, _ = make_dispatcher()
    to_device, from_test = os.pipe()
    to_test, from_device = os.pipe()
    with (
        open(to_device, "rb", buffering=0) as stdin,
        open(from_device, "wb", buffering=0) as stdout,
        open(from_test, "wb", buffering=0) as request_pipe,
        open(to_test, "rb", buffering=0) as reply_pipe,
    ):
        monkeypatch.setattr(sys, "stdin", stdin)
        monkeypatch.setattr(sys, "stdout", stdout)
        async with rpc.Server(dispatcher, http=None, serial="-"):
            request = {"id": 9, "src": "mos", "method": "Echo", "params": ["é"]}
            reply = await asyncio.to_thread(line_call, request_pipe.fileno(), reply_pipe.fileno(), request)
            assert reply == {"id": 9, "src": DEVICE_ID, "dst": "mos", "result": ["é"]}
        assert os.get_blocking(stdin.fileno())  # given back as it was, and not closed
        os.fstat(stdout.fileno())


# --- dial-out ----------------------------------------------------------------------------------


async def test_dial_out_to_a_backend() -> None:
    dispatcher, _ = make_dispatcher()
    connections: asyncio.Queue[ws.ServerWebSocket] = asyncio.Queue()

    async def backend(conn: ws.ServerWebSocket) -> None:
        await connections.put(conn)
        await conn.wait_closed()

    async with ws.serve(backend, "127.0.0.1", 0, subprotocols=["json-rpc"]) as backend_server:
        url = f"ws://127.0.0.1:{backend_server.port}/rpc"
        server = rpc.Server(dispatcher, http=None, dial_out=url, reconnect_min=0.01, reconnect_max=0.05)
        assert server.dial_out is not None and server.dial_out.url == url
        assert not server.dial_out.connected
        async with server:
            await asyncio.wait_for(server.dial_out.wait_connected(), WAIT)
            assert server.dial_out.connected
            conn = await asyncio.wait_for(connections.get(), WAIT)
            await conn.send(
                json.dumps({"id": 1, "src": "backend", "method": "Sum", "params": {"a": 2, "b": 3}})
            )
            reply = json.loads(await asyncio.wait_for(conn.recv(), WAIT))
            assert reply == {"id": 1, "src": DEVICE_ID, "dst": "backend", "result": 5}
            await conn.send(json.dumps({"id": 2, "src": "backend", "method": "Fail"}))
            reply = json.loads(await asyncio.wait_for(conn.recv(), WAIT))
            assert reply["error"] == {"code": -1, "message": "nope"}
        # close() stopped the channel: the backend's side of the link ends.
        await asyncio.wait_for(conn.wait_closed(), WAIT)
        assert not server.dial_out.connected


async def test_dial_out_that_cannot_connect_does_not_fail_start() -> None:
    port = free_port()
    async with rpc.Server(
        http="127.0.0.1:0", dial_out=f"ws://127.0.0.1:{port}/rpc", reconnect_min=0.01
    ) as server:
        assert server.dial_out is not None and not server.dial_out.connected
        async with rpc.connect(server.urls[0], timeout=WAIT) as client:
            with pytest.raises(RpcError) as failed:
                await client.call("No.Such")
            assert failed.value.code == 404
    assert not server.dial_out.connected


async def test_close_is_idempotent_and_concurrent() -> None:
    server = rpc.Server(http="127.0.0.1:0")
    await server.start()
    await asyncio.gather(server.close(), server.close())
    await server.close()
    assert repr(server).startswith("Server('tether', ['ws://127.0.0.1:")


def test_repr_leaves_credentials_out() -> None:
    server = rpc.Server(http=None, dial_out="wss://user:s3cret@backend.example:8443/rpc?token=t0ken")
    assert "s3cret" not in repr(server) and "user" not in repr(server) and "t0ken" not in repr(server)
    assert "dial-out wss://backend.example:8443/rpc?…" in repr(server)
