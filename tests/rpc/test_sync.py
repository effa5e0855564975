"""tether.rpc.sync, the blocking client, against a `tether.rpc.Server` (WebSocket, HTTP) and
`serve_serial` on a pseudo-terminal, run by an event loop in a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tests.rpc.handlers import DEVICE_ID, make_dispatcher

import tether.http as http
import tether.rpc as rpc
import tether.rpc.sync as rpc_sync
from tether.errors import ConnectionClosed, ProtocolError, RpcError, Timeout
from tether.rpc.channels.serial import open_pty, serve_serial

T = TypeVar("T")

WAIT = 5.0  # seconds any single step may take before the test fails
ACL = '[{"method":"Config.*","acl":"admin"},{"method":"*","acl":"*"}]'
NESTED_ARGS = {"x": [1, "y", None, {"z": {"deep": [True, False, 1.5]}}], "s": "é", "n": -(2**53 + 1)}


@dataclass
class Device:
    """A device on a loop in a thread: ``urls`` (ws, http), ``serial`` (a pty path)."""

    loop: asyncio.AbstractEventLoop
    server: rpc.Server
    serial: str
    notes: list[Any]
    entered: threading.Event  # set when Hang starts
    release: asyncio.Event  # lets Hang return

    @property
    def urls(self) -> dict[str, str]:
        return {"ws": self.server.urls[0], "http": self.server.urls[1], "serial": self.serial}

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(WAIT)


@pytest.fixture
def device(tmp_path: Path) -> Iterator[Device]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="device", daemon=True)
    thread.start()
    htdigest = tmp_path / "rpc.htdigest"
    http.write_htdigest(htdigest, "admin", "RPC", "secret")
    entered = threading.Event()

    async def setup() -> tuple[rpc.Server, list[Any], asyncio.Event]:
        dispatcher, notes = make_dispatcher(
            acl=rpc.Acl.parse(ACL), auth=rpc.DigestAuth(htdigest, "RPC"), deadline=None
        )
        release = asyncio.Event()

        @dispatcher.method("Hang")
        async def hang(call: rpc.Call) -> str:
            entered.set()
            await release.wait()  # set only at teardown
            return "released"

        server = rpc.Server(dispatcher, http="127.0.0.1:0")
        await server.start()
        return server, notes, release

    async def serve_pty(dispatcher: rpc.Dispatcher, master: int) -> asyncio.Task[None]:
        return asyncio.create_task(serve_serial(dispatcher, master))

    async def teardown(server: rpc.Server, serial: asyncio.Task[None], release: asyncio.Event) -> None:
        release.set()
        await server.close()
        serial.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serial

    with open_pty() as pty:
        server, notes, release = asyncio.run_coroutine_threadsafe(setup(), loop).result(WAIT)
        dev = Device(loop, server, pty.path, notes, entered, release)
        serial = dev.run(serve_pty(server.dispatcher, pty.master))
        try:
            yield dev
        finally:
            dev.run(teardown(server, serial, release))
            loop.call_soon_threadsafe(loop.stop)
            thread.join(WAIT)
            loop.close()


CHANNELS = ["ws", "http", "serial"]


@pytest.mark.parametrize("channel", CHANNELS)
def test_calls_results_and_errors(device: Device, channel: str) -> None:
    with rpc_sync.connect(device.urls[channel], timeout=WAIT) as client:
        assert client.call("Sum", {"a": 1, "b": 2}) == 3
        assert client.call("Echo", NESTED_ARGS) == NESTED_ARGS
        assert client.call("Echo", "é") == "é"
        with pytest.raises(RpcError) as failed:
            client.call("Fail")
        assert (failed.value.code, failed.value.message) == (-1, "nope")
        with pytest.raises(RpcError) as failed:
            client.call("No.Such")
        assert (failed.value.code, failed.value.message) == (404, "No handler for No.Such")
        with pytest.raises(RpcError) as failed:
            client.call("Sum", {"a": 1})
        assert (failed.value.code, failed.value.message) == (400, "b is required")
        ping = client.call("RPC.Ping")["channel_info"]
        assert ping == "UART0" if channel == "serial" else ping.startswith("127.0.0.1:")
        client.notify("Note", channel)
        assert client.call("Sum", {"a": 0, "b": 0}) == 0  # after the notification, in order
        assert device.notes == [channel]


@pytest.mark.parametrize("channel", CHANNELS)
def test_timeout_leaves_the_client_usable(device: Device, channel: str) -> None:
    with rpc_sync.connect(device.urls[channel], timeout=WAIT) as client:
        with pytest.raises(Timeout, match=re.escape("call of Hang timed out after 0.2 s")):
            client.call("Hang", timeout=0.2)
        assert device.entered.is_set()
        assert client.call("Sum", {"a": 2, "b": 2}) == 4


@pytest.mark.parametrize("channel", CHANNELS)
def test_four_threads_call_at_once(device: Device, channel: str) -> None:
    with rpc_sync.connect(device.urls[channel], timeout=WAIT) as client:

        def worker(n: int) -> list[Any]:
            return [client.call("Echo", {"thread": n, "i": i}) for i in range(50)]

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(worker, range(4)))
    assert results == [[{"thread": n, "i": i} for i in range(50)] for n in range(4)]


@pytest.mark.parametrize("channel", ["ws", "http"])
def test_digest_auth(device: Device, channel: str) -> None:
    url = device.urls[channel]
    with rpc_sync.connect(url, timeout=WAIT) as client:
        assert client.call("Sum", {"a": 1, "b": 1}) == 2  # open to everyone
        with pytest.raises(RpcError) as denied:
            client.call("Config.Get")
        assert denied.value.code == 401
    with rpc_sync.connect(url, credentials=("admin", "secret"), timeout=WAIT) as client:
        assert client.call("Config.Get") == {"user": "admin"}
        assert client.call("Config.Get") == {"user": "admin"}  # the challenge is reused
    with rpc_sync.connect(url.replace("://", "://admin:secret@"), timeout=WAIT) as client:
        assert client.call("Config.Get") == {"user": "admin"}
    with rpc_sync.connect(url, credentials=("admin", "wrong"), timeout=WAIT) as client:
        with pytest.raises(RpcError) as denied:
            client.call("Config.Get")
        assert denied.value.code == 401


def test_device_id_becomes_dst(device: Device) -> None:
    with rpc_sync.connect(device.urls["ws"], device_id=DEVICE_ID, timeout=WAIT) as client:
        assert client.call("Sum", {"a": 1, "b": 2}) == 3
    # §1.1 step 2: a frame for another device is not answered; WS_in closes with 1007.
    with rpc_sync.connect(device.urls["ws"], device_id="someone-else", timeout=WAIT) as client:
        with pytest.raises(ConnectionClosed) as closed:
            client.call("Sum", {"a": 1, "b": 2})
        assert closed.value.code == 1007
        with pytest.raises(ConnectionClosed):
            client.call("Sum", {"a": 1, "b": 2})
    with rpc_sync.connect(device.urls["http"], device_id="someone-else", timeout=WAIT) as client:
        with pytest.raises(RpcError) as invalid:
            client.call("Sum", {"a": 1, "b": 2})
        assert (invalid.value.code, invalid.value.message) == (400, "Invalid request")


@pytest.mark.parametrize("channel", CHANNELS)
def test_close_wakes_a_waiting_call(device: Device, channel: str) -> None:
    client = rpc_sync.connect(device.urls[channel], timeout=WAIT)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(client.call, "Hang")
        assert device.entered.wait(WAIT)
        if channel == "http":
            # The POST waits for its response: closing ends the client, the response ends the call.
            client.close()
            device.loop.call_soon_threadsafe(device.release.set)
            assert waiting.result(WAIT) == "released"
        else:
            client.close()
            with pytest.raises(ConnectionClosed):
                waiting.result(WAIT)
    client.close()  # idempotent
    with pytest.raises(ConnectionClosed):
        client.call("Sum", {"a": 1, "b": 2})
    with pytest.raises(ConnectionClosed):
        client.notify("Note")


def test_connect_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown RPC port scheme 'gopher'"):
        rpc_sync.connect("gopher://host/rpc")
    with pytest.raises(ValueError, match="no device id"):
        rpc_sync.connect("mqtt://127.0.0.1:1")
    with pytest.raises(ValueError, match="contains '\\+'"):
        rpc_sync.connect("mqtt://127.0.0.1:1/a+b")
    with pytest.raises(ValueError, match="is not the device id 'dev'"):
        rpc_sync.connect("mqtt://127.0.0.1:1/dev", device_id="other")
    with pytest.raises(ValueError, match="no serial device path"):
        rpc_sync.connect("serial://")
    with pytest.raises(FileNotFoundError):
        rpc_sync.connect(str(tmp_path / "no-such-tty"))


def test_http_errors_are_connection_closed() -> None:
    with (
        rpc_sync.connect("http://127.0.0.1:1/rpc", timeout=WAIT) as client,
        pytest.raises(ConnectionClosed, match=re.escape("HTTP request to http://127.0.0.1:1/rpc failed")),
    ):
        client.call("Sum")


class PlainHandler(BaseHTTPRequestHandler):
    """Answers every POST with the status and body its path names: /<status>/<body>; a
    status ending in ``c`` (``/500c/…``) closes the connection after the response, without
    saying so, as a server does with an idle keep-alive connection."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        _, status, body = self.path.split("/", 2)
        data = body.encode()
        self.close_connection = status.endswith("c")
        self.send_response(int(status.rstrip("c")))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def plain_http() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), PlainHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(WAIT)


def test_http_status_and_missing_reply(plain_http: int) -> None:
    with rpc_sync.connect(f"http://127.0.0.1:{plain_http}/500/boom", timeout=WAIT) as client:
        with pytest.raises(RpcError) as failed:
            client.call("Sum")
        assert (failed.value.code, failed.value.message) == (500, "boom")
        client.notify("Note")  # a notification takes any answer
    with rpc_sync.connect(f"http://127.0.0.1:{plain_http}/500c/gone", timeout=WAIT) as client:
        for _ in range(3):  # each call after the first finds its kept connection closed
            with pytest.raises(RpcError, match="gone"):
                client.call("Sum")
    with (
        rpc_sync.connect(f"http://127.0.0.1:{plain_http}/200/", timeout=WAIT) as client,
        pytest.raises(ProtocolError, match="no reply to the call of Sum"),
    ):
        client.call("Sum")


def test_serial_line_closed_by_the_other_side() -> None:
    with open_pty() as pty:
        client = rpc_sync.connect(f"serial://{pty.path}", timeout=WAIT)
        os.close(pty.master)
        with pytest.raises(ConnectionClosed) as closed:
            client.call("Sum", {"a": 1, "b": 2})
        assert closed.value.code == 1006
        client.close()
