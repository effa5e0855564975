"""The WebSocket and HTTP channels (spec mgos-rpc.md §2.1, §2.2) and `tether.rpc.connect`,
against a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import tether.http as http
import tether.rpc as rpc
import tether.ws as ws
from tether.errors import ConnectionClosed, RpcError, Timeout
from tether.http.auth import parse_auth_params

ACL = '[{"method":"Config.*","acl":"admin"},{"method":"*","acl":"*"}]'


def make_dispatcher(tmp_path: Path | None = None, *, max_pending: int = 100) -> rpc.Dispatcher:
    acl = auth = None
    if tmp_path is not None:
        htdigest = tmp_path / "rpc.htdigest"
        http.write_htdigest(htdigest, "admin", "RPC", "secret")
        http.write_htdigest(htdigest, "bob", "RPC", "hunter2")
        acl, auth = rpc.Acl.parse(ACL), rpc.DigestAuth(htdigest, "RPC")
    d = rpc.Dispatcher("tether_0A1B2C", acl=acl, auth=auth, max_pending=max_pending)
    d.gate = asyncio.Event()  # type: ignore[attr-defined]
    d.seen = asyncio.Event()  # type: ignore[attr-defined]

    @d.method(
        "Sum", args={"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}
    )
    def sum_(call: rpc.Call) -> Any:
        return call.params["a"] + call.params["b"]

    @d.method("Echo")
    async def echo(call: rpc.Call) -> Any:
        await asyncio.sleep(0)  # an async handler that waits: the task path of the channels
        return call.params

    @d.method("Text")
    def text(call: rpc.Call) -> str:
        return "hello"

    @d.method("Fail")
    def fail(call: rpc.Call) -> None:
        raise RuntimeError("secret detail")

    @d.method("Hang", deadline=0.05)
    async def hang(call: rpc.Call) -> None:
        await asyncio.Event().wait()

    @d.method("Block", deadline=None)
    async def block(call: rpc.Call) -> str:
        await d.gate.wait()  # type: ignore[attr-defined]
        return "unblocked"

    @d.method("Notice")
    def notice(call: rpc.Call) -> None:
        d.seen.set()  # type: ignore[attr-defined]

    @d.method("Config.Get")
    def config_get(call: rpc.Call) -> dict[str, Any]:
        return {"user": call.user}

    return d


@contextlib.asynccontextmanager
async def running(dispatcher: rpc.Dispatcher) -> AsyncIterator[int]:
    app = http.App()
    rpc.mount_rpc(app, dispatcher, ping_interval=None)
    async with http.serve(app, "127.0.0.1", 0) as server:
        yield server.port


async def http_request(
    port: int, method: str, target: str, body: bytes = b"", headers: tuple[tuple[str, str], ...] = ()
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request on a new connection: status, fields (lower-case names), body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers)
        writer.write(head.encode() + b"\r\n" + body)
        lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                fields[name.lower()] = value.strip()
        data = await reader.readexactly(int(fields.get("content-length", "0")))
        return int(lines[0].split()[1]), fields, data
    finally:
        writer.close()


def digest_header(challenge: str, user: str, password: str, method: str, uri: str) -> str:
    p = parse_auth_params(challenge.partition(" ")[2])
    ha1 = hashlib.md5(f"{user}:{p['realm']}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    response = hashlib.md5(f"{ha1}:{p['nonce']}:00000001:abc:auth:{ha2}".encode()).hexdigest()
    return (
        f'Digest username="{user}", realm="{p["realm"]}", nonce="{p["nonce"]}", uri="{uri}", '
        f'qop=auth, nc=00000001, cnonce="abc", response="{response}", opaque="{p.get("opaque", "")}"'
    )


async def rest(
    port: int, method: str, target: str, body: bytes = b"", user: str | None = None, password: str = ""
):
    status, fields, data = await http_request(port, method, target, body)
    if status == 401 and user is not None:
        auth = digest_header(fields["www-authenticate"], user, password, method, target)
        status, fields, data = await http_request(port, method, target, body, (("Authorization", auth),))
    return status, fields, data


async def outcome(client: rpc.RpcClient, method: str, params: Any = None) -> Any:
    try:
        return ("result", await client.call(method, params))
    except RpcError as exc:
        return ("error", exc.code, exc.message)


async def rest_outcome(port: int, method: str, params: Any = None) -> Any:
    body = b"" if params is None else json.dumps(params).encode()
    status, _, data = await http_request(port, "POST", f"/rpc/{method}", body)
    value = json.loads(data)
    if status == 200:
        return ("result", value)
    return ("error", value["code"], value.get("message", ""))


CALLS = [
    ("Sum", {"a": 1, "b": 2}),
    ("Echo", {"x": [1, "y", None], "big": 2**53 + 1}),
    ("Text", None),
    ("RPC.Describe", {"name": "Sum"}),
    ("RPC.Describe", {}),
    ("sum", {"a": 1.5, "b": "x"}),
    ("No.Such", None),
    ("Fail", None),
    ("Hang", None),
]


async def test_same_handlers_give_the_same_results_over_ws_http_and_rest() -> None:
    async with running(make_dispatcher()) as port:
        async with (
            rpc.connect(f"ws://127.0.0.1:{port}/rpc") as wsc,
            rpc.connect(f"http://127.0.0.1:{port}/rpc") as httpc,
        ):
            for method, params in CALLS:
                over_ws = await outcome(wsc, method, params)
                assert await outcome(httpc, method, params) == over_ws, method
                assert await rest_outcome(port, method, params) == over_ws, method
            assert await wsc.call("Sum", {"a": 1, "b": 2}) == 3
        with pytest.raises(RpcError) as failed:
            async with rpc.connect(f"ws://127.0.0.1:{port}/rpc") as wsc:
                await wsc.call("Fail")
        assert (failed.value.code, failed.value.message) == (500, "internal error")


async def test_rest_mode_status_codes_and_args() -> None:
    async with running(make_dispatcher()) as port:
        status, fields, body = await http_request(port, "GET", "/rpc/Sum?a=1&b=2")
        assert (status, body) == (200, b"3\r\n")
        assert fields["content-type"] == "application/json"
        assert fields["access-control-allow-origin"] == "*"
        assert fields["access-control-allow-headers"] == "*"
        assert (await http_request(port, "PUT", "/rpc/Sum", b'{"a":2,"b":2}'))[::2] == (200, b"4\r\n")
        assert (await http_request(port, "POST", "/rpc/Sum", b'{"a":2,"b":2}'))[::2] == (200, b"4\r\n")
        # Query values are JSON; one that is not is a string.
        status, _, body = await http_request(port, "GET", "/rpc/Echo?n=1&s=%22x%22&t=plain+text&o=%7B%7D")
        assert json.loads(body) == {"n": 1, "s": "x", "t": "plain text", "o": {}}
        status, _, body = await http_request(port, "GET", "/rpc/No.Such")
        assert (status, json.loads(body)) == (404, {"code": 404, "message": "No handler for No.Such"})
        status, _, body = await http_request(port, "GET", "/rpc/Fail")
        assert (status, json.loads(body)) == (500, {"code": 500, "message": "internal error"})
        status, _, body = await http_request(port, "GET", "/rpc/Sum?a=1&b=%22x%22")
        assert (status, json.loads(body)["code"]) == (500, 400)
        status, _, body = await http_request(port, "GET", "/rpc/Hang")
        assert (status, json.loads(body)) == (500, {"code": 504, "message": "deadline exceeded"})
        status, _, body = await http_request(port, "GET", "/rpc/Text")
        assert (status, body) == (200, b'"hello"\r\n')  # tether quotes strings (the firmware does not)
        status, fields, body = await http_request(port, "OPTIONS", "/rpc/Sum")
        assert (status, body, fields["access-control-allow-origin"]) == (200, b"", "*")
        status, _, body = await http_request(port, "POST", "/rpc/Sum", b"{not json")
        assert status == 400
        status, _, body = await http_request(port, "POST", "/rpc/Echo", b'"' + b"x" * 5000 + b'"')
        assert status == 400
        assert (await http_request(port, "GET", "/rpc/Sum?a=1&b=2"))[::2] == (200, b"3\r\n")


async def test_frame_mode_answers() -> None:
    async with running(make_dispatcher()) as port:
        frame = b'{"id":1099511627777,"src":"mos","tag":"t","method":"Sum","params":{"a":1,"b":2}}\n'
        status, fields, body = await http_request(port, "POST", "/rpc", frame)
        assert (status, body) == (
            200,
            b'{"id":1099511627777,"src":"tether_0A1B2C","dst":"mos","tag":"t","result":3}\r\n',
        )
        assert fields["content-type"] == "application/json"
        status, _, body = await http_request(port, "POST", "/rpc/", b'{"id":"q","method":"No.Such"}')
        assert (status, json.loads(body)["error"]) == (
            200,
            {"code": 404, "message": "No handler for No.Such"},
        )
        assert (await http_request(port, "POST", "/rpc", b'{"method":"Notice"}'))[::2] == (200, b"")
        for bad in (
            b"{nope",
            b'[{"id":1,"method":"RPC.List"}]',
            b'{"id":true,"method":"RPC.List"}',
            b'{"id":1,"method":"Echo","params":"' + b"x" * 5000 + b'"}',
            b'{"id":1,"dst":"other","method":"RPC.List"}',
        ):
            status, _, body = await http_request(port, "POST", "/rpc", bad)
            assert (status, body) == (400, b"Invalid request\r\n")
        assert (await http_request(port, "OPTIONS", "/rpc"))[0] == 200


@pytest.mark.parametrize("scheme", ["ws", "http"])
async def test_auth_and_acl_with_connect(tmp_path: Path, scheme: str) -> None:
    async with running(make_dispatcher(tmp_path)) as port:
        url = f"{scheme}://127.0.0.1:{port}/rpc"
        async with rpc.connect(url) as client:
            assert await client.call("Sum", {"a": 1, "b": 1}) == 2  # open to everyone
            with pytest.raises(RpcError) as denied:
                await client.call("Config.Get")
            assert denied.value.code == 401
        async with rpc.connect(url, credentials=("admin", "secret")) as client:
            assert await client.call("Config.Get") == {"user": "admin"}
            assert await client.call("Config.Get") == {"user": "admin"}  # the challenge is reused
        async with rpc.connect(url.replace("://", "://admin:secret@")) as client:
            assert await client.call("Config.Get") == {"user": "admin"}
        async with rpc.connect(url, credentials=("bob", "hunter2")) as client:
            with pytest.raises(RpcError) as denied:
                await client.call("Config.Get")
            assert (denied.value.code, denied.value.message) == (403, "unauthorized")
        async with rpc.connect(url, credentials=("admin", "wrong")) as client:
            with pytest.raises(RpcError) as denied:
                await client.call("Config.Get")
            assert denied.value.code == 401


async def test_auth_and_acl_over_http_status_codes(tmp_path: Path) -> None:
    async with running(make_dispatcher(tmp_path)) as port:
        for target, body in (("/rpc/Config.Get", b""), ("/rpc", b'{"id":1,"method":"Config.Get"}')):
            method = "GET" if not body else "POST"
            status, fields, data = await http_request(port, method, target, body)
            assert (status, data) == (401, b"")
            challenge = parse_auth_params(fields["www-authenticate"].partition(" ")[2])
            assert fields["www-authenticate"].startswith("Digest ")
            assert (challenge["realm"], challenge["qop"], challenge["algorithm"]) == ("RPC", "auth", "MD5")
            status, _, data = await rest(port, method, target, body, "admin", "secret")
            assert status == 200 and b'"user":"admin"' in data
            status, _, data = await rest(port, method, target, body, "bob", "hunter2")
            if target == "/rpc":
                assert (status, json.loads(data)["error"]) == (200, {"code": 403, "message": "unauthorized"})
            else:
                assert (status, json.loads(data)) == (403, {"code": 403, "message": "unauthorized"})
            assert (await rest(port, method, target, body, "admin", "nope"))[0] == 401


async def test_websocket_upgrade_digest_binds_the_user(tmp_path: Path) -> None:
    async with running(make_dispatcher(tmp_path)) as port:
        _status, fields, _ = await http_request(port, "POST", "/rpc/Config.Get")
        auth = digest_header(fields["www-authenticate"], "admin", "secret", "GET", "/rpc")
        async with ws.connect(f"ws://127.0.0.1:{port}/rpc", headers=[("Authorization", auth)]) as conn:
            await conn.send('{"id":1,"method":"Config.Get"}')
            assert json.loads(await conn.recv())["result"] == {"user": "admin"}


@pytest.mark.parametrize(
    ("offered", "selected"),
    [
        (["clubby.cesanta.com"], "clubby.cesanta.com"),
        (["json-rpc"], "json-rpc"),
        (None, None),
        (["dash.mongoose-os.com", "json-rpc"], "json-rpc"),
    ],
)
async def test_websocket_subprotocols(offered: list[str] | None, selected: str | None) -> None:
    async with (
        running(make_dispatcher()) as port,
        ws.connect(f"ws://127.0.0.1:{port}/rpc", subprotocols=offered) as conn,
    ):
        assert conn.subprotocol == selected
        # mos ends messages with a newline; binary frames are parsed too.
        await conn.send('{"src":"mos","id":1099511627777,"method":"RPC.Ping"}\n')
        reply = json.loads(await conn.recv())
        assert reply["id"] == 1099511627777 and reply["dst"] == "mos"
        assert reply["result"]["channel_info"].startswith("127.0.0.1:")
        await conn.send(b'{"id":"b","method":"Sum","params":{"a":1,"b":1}}')
        assert await conn.recv() == '{"id":"b","src":"tether_0A1B2C","result":2}'


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("{nope", 1007),
        ('[{"id":1,"method":"RPC.List"}]', 1007),
        ('{"id":{},"method":"RPC.List"}', 1007),
        ('{"id":1,"dst":"other","method":"RPC.List"}', 1007),
        ('{"id":1,"method":"Echo","params":"' + "x" * 5000 + '"}', 1009),
    ],
)
async def test_websocket_invalid_frames_close_only_that_connection(
    message: str, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "tether.rpc")
    async with running(make_dispatcher()) as port:
        url = f"ws://127.0.0.1:{port}/rpc"
        async with rpc.connect(url) as other, ws.connect(url) as conn:
            await conn.send(message)
            with pytest.raises(ConnectionClosed) as closed:
                await conn.recv()
            assert closed.value.code == code
            assert await other.call("Sum", {"a": 1, "b": 2}) == 3


async def test_websocket_requests_run_concurrently_and_notifications_get_nothing() -> None:
    d = make_dispatcher()
    async with running(d) as port, ws.connect(f"ws://127.0.0.1:{port}/rpc") as conn:
        await conn.send('{"id":1,"method":"Block"}')
        await conn.send('{"method":"Notice"}')
        await conn.send('{"method":"Echo","params":[1]}')  # a handler that waits: no reply either
        await conn.send('{"id":2,"method":"Echo","params":[2]}')
        assert json.loads(await conn.recv()) == {"id": 2, "src": "tether_0A1B2C", "result": [2]}
        assert d.seen.is_set()  # type: ignore[attr-defined]
        # Text that UTF-8 cannot hold (a lone surrogate) goes out escaped, as HTTP sends it.
        await conn.send('{"id":3,"method":"Text"}')
        assert await conn.recv() == '{"id":3,"src":"tether_0A1B2C","result":"hello"}'
        await conn.send('{"id":4,"method":"Echo","params":"\\u00e9\\ud800"}')
        assert await conn.recv() == '{"id":4,"src":"tether_0A1B2C","result":"\\u00e9\\ud800"}'
        d.gate.set()  # type: ignore[attr-defined]
        assert json.loads(await conn.recv())["result"] == "unblocked"


@pytest.mark.parametrize("channel", ["ws", "http", "rest"])
async def test_flood_beyond_the_queue_gets_429(channel: str) -> None:
    d = make_dispatcher(max_pending=3)
    async with running(d) as port:
        if channel == "rest":
            blocked = [asyncio.ensure_future(http_request(port, "GET", "/rpc/Block")) for _ in range(3)]
            while d.pending < 3:
                await asyncio.sleep(0)
            status, _, body = await http_request(port, "GET", "/rpc/Block")
            assert (status, json.loads(body)) == (500, {"code": 429, "message": "Request queue overflow"})
            d.gate.set()  # type: ignore[attr-defined]
            assert [(s, b) for s, _, b in await asyncio.gather(*blocked)] == [(200, b'"unblocked"\r\n')] * 3
            return
        async with rpc.connect(f"{channel}://127.0.0.1:{port}/rpc") as client:
            blocked = [asyncio.ensure_future(client.call("Block")) for _ in range(3)]
            while d.pending < 3:
                await asyncio.sleep(0)
            with pytest.raises(RpcError) as flooded:
                await client.call("Block")
            assert (flooded.value.code, flooded.value.message) == (429, "Request queue overflow")
            d.gate.set()  # type: ignore[attr-defined]
            assert await asyncio.gather(*blocked) == ["unblocked"] * 3
            assert await client.call("Sum", {"a": 1, "b": 2}) == 3


@pytest.mark.parametrize("scheme", ["ws", "http"])
async def test_client_timeout_and_close(scheme: str) -> None:
    d = make_dispatcher()
    async with running(d) as port:
        client = await rpc.connect(f"{scheme}://127.0.0.1:{port}/rpc", timeout=5)
        with pytest.raises(Timeout):
            await client.call("Block", timeout=0.01)
        d.gate.set()  # type: ignore[attr-defined]
        assert await client.call("Block") == "unblocked"
        await client.notify("Notice")
        await asyncio.wait_for(d.seen.wait(), 5)  # type: ignore[attr-defined]
        await client.close()
        with pytest.raises(ConnectionClosed):
            await client.call("Sum", {"a": 1, "b": 2})


@pytest.mark.parametrize("scheme", ["ws", "http"])
async def test_client_timeouts_in_any_order(scheme: str) -> None:
    d = make_dispatcher()
    async with running(d) as port, rpc.connect(f"{scheme}://127.0.0.1:{port}/rpc", timeout=5) as client:
        assert (client._reader is None) == (scheme == "ws")  # over ws, no reader task
        slow = asyncio.ensure_future(client.call("Block"))  # times out last
        await asyncio.sleep(0.01)
        # Deadlines before the last one, then after it, then equal ones.
        calls = [client.call("Block", timeout=t) for t in (0.05, 0.02, 0.03, 0.03)]
        outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 2)
        assert all(isinstance(o, Timeout) for o in outcomes), outcomes
        assert not slow.done()
        d.gate.set()  # type: ignore[attr-defined]
        assert await slow == "unblocked"
        for _ in range(100):
            assert await client.call("Sum", {"a": 1, "b": 2}, timeout=1 if _ % 2 else 3) == 3
        client._on_tick()
        assert len(client._deadlines) <= 1  # finished calls leave no deadline behind
        assert not client._waiters and not client._watched and not client._timers


async def test_client_deadline_timer_fails_overdue_calls_only() -> None:
    d = make_dispatcher()
    async with running(d) as port, rpc.connect(f"ws://127.0.0.1:{port}/rpc", timeout=0.05) as client:
        first = asyncio.ensure_future(client.call("Block"))
        await asyncio.sleep(0.03)
        second = asyncio.ensure_future(client.call("Block"))
        with pytest.raises(Timeout):
            await first
        assert not second.done()  # the timer waits again for the next deadline
        with pytest.raises(Timeout):
            await asyncio.wait_for(second, 1)


async def test_pending_calls_fail_when_the_server_goes_away() -> None:
    d = make_dispatcher()
    app = http.App()
    rpc.mount_rpc(app, d, ping_interval=None)
    server = await http.serve(app, "127.0.0.1", 0)
    client = await rpc.connect(f"ws://127.0.0.1:{server.port}/rpc")
    try:
        call = asyncio.ensure_future(client.call("Block"))
        while d.pending < 1:
            await asyncio.sleep(0)
        server.close()
        with pytest.raises(ConnectionClosed):
            await call
        await server.wait_closed()
    finally:
        await client.close()


async def test_connect_rejects_unknown_schemes() -> None:
    with pytest.raises(ValueError, match="unknown RPC port scheme"):
        await rpc.connect("gopher://127.0.0.1/rpc")


async def test_websocket_client_that_does_not_read_holds_the_server_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Replies fill the server's write buffer: its channel stops answering (and reading)
    # until they drain, then answers every request, in order.
    from tether.ws.server import ServerWebSocket

    held = asyncio.Event()
    drain = ServerWebSocket.drain

    async def watched_drain(self: ServerWebSocket) -> None:
        held.set()
        await drain(self)

    monkeypatch.setattr(ServerWebSocket, "drain", watched_drain)
    calls, text = 3000, "x" * 3500  # ~10 MB of replies: more than the socket buffers hold
    dispatcher = make_dispatcher()
    dispatcher.add_handler("Same", lambda call: call.params)  # answers at once, in the receive path
    async with (
        running(dispatcher) as port,
        ws.connect(f"ws://127.0.0.1:{port}/rpc", ping_interval=None) as conn,
    ):
        sock = conn._transport.get_extra_info("socket")  # type: ignore[union-attr]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2**16)  # no autotuning up to 32 MB

        async def send_all() -> None:
            for n in range(calls):
                await conn.send(f'{{"id":{n + 1},"method":"Same","params":"{text}"}}')

        sending = asyncio.ensure_future(send_all())
        await held.wait()  # the server waits for this client to read
        ids = [json.loads(await conn.recv())["id"] for _ in range(calls)]
        await sending
        assert ids == list(range(1, calls + 1))
        # Still served normally afterwards.
        await conn.send('{"id":"last","method":"Sum","params":{"a":1,"b":1}}')
        assert json.loads(await conn.recv())["result"] == 2
