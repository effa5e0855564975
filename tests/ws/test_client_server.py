"""tether's asyncio WebSocket client against tether's asyncio server, on loopback."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import logging
import ssl
import sys
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import tether.tls
import tether.ws
from tether.errors import ConnectionClosed, HandshakeError, InvalidState

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 10.0  # seconds; bounds every test so that nothing can hang

Handler = Callable[[tether.ws.ServerWebSocket], Awaitable[None]]


def run(coro: Awaitable[Any]) -> Any:
    """Run a test coroutine on a fresh event loop, bounded by TIMEOUT."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, TIMEOUT)

    return asyncio.run(bounded())


@contextlib.asynccontextmanager
async def server(handler: Handler, **kwargs: Any) -> AsyncIterator[str]:
    """Serve handler on a free loopback port; yield its ws:// URL."""
    kwargs.setdefault("ping_interval", None)
    async with tether.ws.serve(handler, "127.0.0.1", 0, **kwargs) as srv:
        yield f"ws://127.0.0.1:{srv.port}"


def connect(url: str, **kwargs: Any) -> tether.ws.connect:
    kwargs.setdefault("ping_interval", None)
    return tether.ws.connect(url, **kwargs)


async def echo(ws: tether.ws.ServerWebSocket) -> None:
    async for message in ws:
        await ws.send(message)


# ------------------------------------------------------------------------- basics


@pytest.mark.parametrize("compression", ["deflate", None])
def test_echo(compression: str | None) -> None:
    async def main() -> None:
        async with server(echo, compression=compression) as url, connect(url, compression=compression) as ws:
            for message in ["", "hello", "ünïcödé " * 100, b"", b"\x00\xff" * 1000]:
                await ws.send(message)
                assert await ws.recv() == message
            await ws.send(memoryview(b"view"))
            assert await ws.recv() == b"view"
            assert ws.subprotocol is None
            expected = "permessage-deflate" if compression else None
            assert ws.response.headers.get("Sec-WebSocket-Extensions") == expected

    run(main())


def test_send_rejects_other_types() -> None:
    async def main() -> None:
        async with server(echo) as url, connect(url) as ws:
            with pytest.raises(TypeError):
                await ws.send(42)  # type: ignore[arg-type]
            await ws.send("still open")
            assert await ws.recv() == "still open"

    run(main())


def test_client_async_for_ends_on_close_1000() -> None:
    async def handler(ws: tether.ws.ServerWebSocket) -> None:
        for i in range(3):
            await ws.send(f"message {i}")
        # Returning closes with 1000.

    async def main() -> None:
        async with server(handler) as url, connect(url) as ws:
            received = [message async for message in ws]
            assert received == ["message 0", "message 1", "message 2"]
            assert ws.close_code == 1000

    run(main())


def test_server_async_for_ends_on_close_1000() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[list[tether.ws.Data]] = loop.create_future()

        async def handler(ws: tether.ws.ServerWebSocket) -> None:
            received = [message async for message in ws]
            ended.set_result(received)

        async with server(handler) as url:
            async with connect(url) as ws:
                await ws.send("a")
                await ws.send(b"b")
            # Leaving the block closed with 1000.
            assert await ended == ["a", b"b"]

    run(main())


@pytest.mark.parametrize(
    ("code", "reason"), [(1000, ""), (1001, "going away"), (3000, "app"), (4999, "é" * 61)]
)
def test_client_close_code_and_reason_reach_server(code: int, reason: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        closed: asyncio.Future[tuple[int, str, int | None, str | None]] = loop.create_future()

        async def handler(ws: tether.ws.ServerWebSocket) -> None:
            try:
                await ws.recv()
            except ConnectionClosed as exc:
                await ws.wait_closed()
                closed.set_result((exc.code, exc.reason, ws.close_code, ws.close_reason))

        async with server(handler) as url, connect(url) as ws:
            await ws.close(code, reason)
            assert await closed == (code, reason, code, reason)
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.code == code  # the code the server echoed (RFC 6455 §5.5.1)

    run(main())


@pytest.mark.parametrize(("code", "reason"), [(1001, "bye"), (1011, "oops"), (4000, "custom")])
def test_server_close_code_and_reason_reach_client(code: int, reason: str) -> None:
    async def handler(ws: tether.ws.ServerWebSocket) -> None:
        await ws.close(code, reason)

    async def main() -> None:
        async with server(handler) as url, connect(url) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert (info.value.code, info.value.reason) == (code, reason)
            assert info.value.rcvd_then_sent is True
            assert (ws.close_code, ws.close_reason) == (code, reason)

    run(main())


def test_async_for_raises_on_abnormal_close_code() -> None:
    async def handler(ws: tether.ws.ServerWebSocket) -> None:
        await ws.send("one")
        await ws.close(4000, "custom")

    async def main() -> None:
        async with server(handler) as url, connect(url) as ws:
            received = []
            with pytest.raises(ConnectionClosed) as info:
                async for message in ws:
                    received.append(message)
            assert received == ["one"]
            assert info.value.code == 4000
            assert not info.value.ok

    run(main())


class Closes:
    """A handler that records the messages and how its connection ended."""

    def __init__(self) -> None:
        self.messages: list[tether.ws.Data] = []
        self.closed: asyncio.Queue[ConnectionClosed] = asyncio.Queue()

    async def __call__(self, ws: tether.ws.ServerWebSocket) -> None:
        try:
            while True:
                self.messages.append(await ws.recv())
        except ConnectionClosed as exc:
            self.closed.put_nowait(exc)


def test_send_rejects_first_fragment_of_wrong_type_without_closing() -> None:
    async def main() -> None:
        async with server(echo) as url, connect(url) as ws:
            with pytest.raises(TypeError):
                await ws.send([1, 2])  # type: ignore[list-item]
            await ws.send([])  # nothing to send
            await ws.send("still open")
            assert await ws.recv() == "still open"

    run(main())


def _raises_after_first() -> Any:
    yield "first"
    raise RuntimeError("source failed")


@pytest.mark.parametrize(
    ("fragments", "error"),
    [
        pytest.param(lambda: ["text", b"bytes"], TypeError, id="mixed-types"),
        pytest.param(lambda: [b"bytes", "text"], TypeError, id="mixed-types-binary-first"),
        pytest.param(_raises_after_first, RuntimeError, id="iterator-raises"),
    ],
)
def test_failed_fragmented_send_fails_connection_with_1011(
    fragments: Callable[[], Any], error: type[Exception]
) -> None:
    """RFC 6455 has no way to abandon a fragmented message: the connection is failed."""

    async def main() -> None:
        handler = Closes()
        async with server(handler) as url, connect(url) as ws:
            with pytest.raises(error):
                await ws.send(fragments())
            exc = await handler.closed.get()
            assert exc.code == 1011
            assert handler.messages == []
            with pytest.raises(ConnectionClosed):
                await ws.send("after")
            await ws.wait_closed()
            assert ws.close_code == 1011

    run(main())


def test_cancelled_fragmented_send_fails_connection_with_1011() -> None:
    async def main() -> None:
        handler = Closes()
        started = asyncio.Event()
        never = asyncio.Event()

        async def fragments() -> AsyncIterator[bytes]:
            yield b"first"
            started.set()
            await never.wait()
            yield b"never sent"

        async with server(handler) as url, connect(url) as ws:
            sending = asyncio.ensure_future(ws.send(fragments()))
            await started.wait()
            sending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await sending
            exc = await handler.closed.get()
            assert exc.code == 1011
            assert handler.messages == []

    run(main())


def test_send_during_fragmented_message_raises_invalid_state_and_ping_goes_through() -> None:
    async def main() -> None:
        started = asyncio.Event()
        go_on = asyncio.Event()

        async def fragments() -> AsyncIterator[str]:
            yield "frag"
            started.set()
            await go_on.wait()
            yield "mented"

        async with server(echo) as url, connect(url) as ws:
            sending = asyncio.ensure_future(ws.send(fragments()))
            await started.wait()
            with pytest.raises(InvalidState):
                await ws.send("interleaved")
            pong = await ws.ping(b"between fragments")  # control frames may interleave (RFC 6455 §5.4)
            assert await pong >= 0
            go_on.set()
            await sending
            assert await ws.recv() == "fragmented"

    run(main())


def test_close_rejects_invalid_codes_and_reasons() -> None:
    async def main() -> None:
        async with server(echo) as url, connect(url) as ws:
            for code in (999, 1005, 1006, 1015, 5000):
                with pytest.raises(ValueError):
                    await ws.close(code)
            with pytest.raises(ValueError):
                await ws.close(1000, "x" * 124)
            await ws.send("still open")
            assert await ws.recv() == "still open"

    run(main())


def test_recv_and_send_after_close_raise_connection_closed() -> None:
    async def main() -> None:
        async with server(echo) as url, connect(url) as ws:
            await ws.close(1000, "done")
            await ws.close()  # idempotent
            for _ in range(2):
                with pytest.raises(ConnectionClosed) as info:
                    await ws.recv()
                assert info.value.code == 1000
                with pytest.raises(ConnectionClosed):
                    await ws.send("too late")
                with pytest.raises(ConnectionClosed):
                    await ws.ping()

    run(main())


def test_concurrent_recv_raises_invalid_state() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        go: asyncio.Future[None] = loop.create_future()

        async def handler(ws: tether.ws.ServerWebSocket) -> None:
            await go
            await ws.send("for the first")
            await echo(ws)

        async with server(handler) as url, connect(url) as ws:
            first = asyncio.ensure_future(ws.recv())
            await asyncio.sleep(0)  # one loop step: first is now waiting in recv()
            with pytest.raises(InvalidState):
                await ws.recv()
            go.set_result(None)
            assert await first == "for the first"
            await ws.send("after")
            assert await ws.recv() == "after"

    run(main())


def test_ping_resolves_with_round_trip_time() -> None:
    async def main() -> None:
        async with server(echo) as url, connect(url) as ws:
            waiters = [await ws.ping(), await ws.ping(b"payload")]
            for waiter in waiters:
                assert await waiter >= 0
            with pytest.raises(ValueError):
                await ws.ping(b"x" * 126)
            waiter = await ws.ping(b"same")
            with pytest.raises(ValueError):
                await ws.ping(b"same")  # a second Ping with that payload could not be told apart
            await waiter

    run(main())


def test_handler_exception_closes_with_1011(caplog: pytest.LogCaptureFixture) -> None:
    async def handler(ws: tether.ws.ServerWebSocket) -> None:
        await ws.recv()
        raise RuntimeError("boom")

    async def main() -> None:
        async with server(handler) as url, connect(url) as ws:
            await ws.send("trigger")
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.code == 1011
            assert "boom" not in info.value.reason  # the error stays on the server

    with caplog.at_level(logging.ERROR, logger="tether.ws"):
        run(main())
    assert any(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in caplog.records)


def test_server_close_closes_clients_with_1001() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        handler_ended: asyncio.Future[int | None] = loop.create_future()
        opened = asyncio.Queue[None]()

        async def handler(ws: tether.ws.ServerWebSocket) -> None:
            opened.put_nowait(None)
            try:
                await echo(ws)
            finally:
                handler_ended.set_result(ws.close_code)

        async with tether.ws.serve(handler, "127.0.0.1", 0, ping_interval=None) as srv:
            url = f"ws://127.0.0.1:{srv.port}"
            async with connect(url) as ws1, connect(url) as ws2:
                await opened.get()
                await opened.get()
                srv.close()
                for ws in (ws1, ws2):
                    with pytest.raises(ConnectionClosed) as info:
                        await ws.recv()
                    assert info.value.code == 1001
                    assert ws.close_code == 1001
                await srv.wait_closed()
            assert await handler_ended == 1001

    run(main())


# ---------------------------------------------------------------- handshake hooks


def test_process_request_routes_by_path() -> None:
    def route(request: tether.ws.Request) -> tether.ws.Response | None:
        if request.path in ("/rpc", "/rpc?device=7"):
            return None
        return tether.ws.Response(
            404,
            tether.ws.Headers([("Content-Type", "text/plain"), ("X-Route", "none")]),
            body=b"no such path\n",
        )

    async def handler(ws: tether.ws.ServerWebSocket) -> None:
        await ws.send(ws.request.path)

    async def main() -> None:
        async with server(handler, process_request=route) as url:
            for path in ("/rpc", "/rpc?device=7"):
                async with connect(url + path) as ws:
                    assert await ws.recv() == path
            for path in ("/", "/other"):
                with pytest.raises(HandshakeError) as info:
                    await connect(url + path)
                assert info.value.status == 404
                assert ("X-Route", "none") in info.value.headers
                assert b"no such path\n".startswith(info.value.body)

    run(main())


def test_async_process_request_and_failure_gives_500(caplog: pytest.LogCaptureFixture) -> None:
    async def check(request: tether.ws.Request) -> tether.ws.Response | None:
        await asyncio.sleep(0)  # a coroutine that really suspends
        if request.path == "/crash":
            raise RuntimeError("hook failed")
        if request.path == "/deny":
            return tether.ws.Response(403, tether.ws.Headers([]), body=b"")
        return None

    async def main() -> None:
        async with server(echo, process_request=check) as url:
            async with connect(url + "/ok") as ws:
                await ws.send("ok")
                assert await ws.recv() == "ok"
            with pytest.raises(HandshakeError) as info:
                await connect(url + "/deny")
            assert info.value.status == 403
            with pytest.raises(HandshakeError) as info:
                await connect(url + "/crash")
            assert info.value.status == 500

    with caplog.at_level(logging.ERROR, logger="tether.ws"):
        run(main())


def test_basic_auth_from_url_reaches_process_request() -> None:
    seen: list[str | None] = []

    def check(request: tether.ws.Request) -> tether.ws.Response | None:
        auth = request.headers.get("Authorization")
        seen.append(auth)
        if auth != "Basic " + base64.b64encode(b"user:p@ss w").decode():
            return tether.ws.Response(
                401, tether.ws.Headers([("WWW-Authenticate", 'Basic realm="tether"')]), body=b""
            )
        return None

    async def main() -> None:
        async with server(echo, process_request=check) as url:
            host = url.removeprefix("ws://")
            async with connect(f"ws://user:p%40ss%20w@{host}/") as ws:
                await ws.send("authorized")
                assert await ws.recv() == "authorized"
            with pytest.raises(HandshakeError) as info:
                await connect(f"ws://user:wrong@{host}/")
            assert info.value.status == 401
            assert ("WWW-Authenticate", 'Basic realm="tether"') in info.value.headers
            with pytest.raises(HandshakeError):
                await connect(url)
        assert seen == [
            "Basic " + base64.b64encode(b"user:p@ss w").decode(),
            "Basic " + base64.b64encode(b"user:wrong").decode(),
            None,
        ]

    run(main())


def test_extra_headers_and_origin_reach_server() -> None:
    seen: list[tether.ws.Request] = []

    def check(request: tether.ws.Request) -> None:
        seen.append(request)

    async def main() -> None:
        async with (
            server(echo, process_request=check) as url,
            connect(url, headers={"X-Device-Id": "pump-7"}, origin="http://device.local") as ws,
        ):
            assert ws.request.headers.get("X-Device-Id") == "pump-7"
        [request] = seen
        assert request.headers.get("x-device-id") == "pump-7"
        assert request.headers.get("Origin") == "http://device.local"

    run(main())


@pytest.mark.parametrize(
    ("offered", "expected"),
    [
        (["v1", "v2"], "v2"),  # the server's preference wins
        (["v1"], "v1"),
        (["v3", "v1"], "v1"),
        (["v3"], None),
        ([], None),
    ],
)
@pytest.mark.parametrize("supported", [["v2", "v1"], []], ids=["server-v2-v1", "server-none"])
def test_subprotocol_selection(supported: list[str], offered: list[str], expected: str | None) -> None:
    if not supported:
        expected = None

    async def handler(ws: tether.ws.ServerWebSocket) -> None:
        await ws.send(repr(ws.subprotocol))

    async def main() -> None:
        async with (
            server(handler, subprotocols=supported) as url,
            connect(url, subprotocols=offered) as ws,
        ):
            assert ws.subprotocol == expected
            assert await ws.recv() == repr(expected)

    run(main())


# ------------------------------------------------------------------- reconnecting


def test_reconnecting_client_reconnects_after_server_drops_connection() -> None:
    """The server closes the first connection and goes away; the client retries until it is back."""

    async def main() -> None:
        failed = asyncio.Event()

        class OnRetry(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if "failed" in record.getMessage():
                    failed.set()

        count = 0

        async def handler(ws: tether.ws.ServerWebSocket) -> None:
            nonlocal count
            count += 1
            if count == 1:
                await ws.close(1012, "restarting")
            else:
                await ws.send(f"welcome back, connection {count}")
                await echo(ws)

        async def restart(old: tether.ws.Server, port: int) -> tether.ws.Server:
            await old.wait_closed()
            await failed.wait()  # the client found nobody listening
            return await tether.ws.serve(handler, "127.0.0.1", port, ping_interval=None)

        logger = logging.getLogger("tether.ws")
        on_retry = OnRetry(logging.INFO)
        logger.addHandler(on_retry)
        old_level = logger.level
        logger.setLevel(logging.INFO)
        first = await tether.ws.serve(handler, "127.0.0.1", 0, ping_interval=None)
        restarting: asyncio.Task[tether.ws.Server] | None = None
        seen: list[tether.ws.Data | int] = []
        port = first.port
        try:
            url = f"ws://127.0.0.1:{port}/"
            connections = aiter(connect(url, backoff_min=0.01, backoff_max=0.05))
            async with contextlib.aclosing(connections):
                async for ws in connections:
                    try:
                        seen.append(await ws.recv())
                    except ConnectionClosed as exc:
                        seen.append(exc.code)
                        first.close()  # stop listening before the client dials again
                        restarting = asyncio.ensure_future(restart(first, port))
                        continue
                    await ws.send("echo")
                    seen.append(await ws.recv())
                    break
        finally:
            logger.removeHandler(on_retry)
            logger.setLevel(old_level)
            first.close()
            await first.wait_closed()
            if restarting is not None:
                second = await restarting
                second.close()
                await second.wait_closed()
        assert seen == [1012, "welcome back, connection 2", "echo"]

    run(main())


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_reconnecting_client_raises_on_permanent_rejection(status: int) -> None:
    calls = 0

    def refuse(request: tether.ws.Request) -> tether.ws.Response:
        nonlocal calls
        calls += 1
        return tether.ws.Response(status, tether.ws.Headers([]), body=b"go away")

    async def main() -> None:
        async with server(echo, process_request=refuse) as url:
            with pytest.raises(HandshakeError) as info:
                async for _ in connect(url, backoff_min=0.01, backoff_max=0.05):
                    pytest.fail("the server refused every connection")
            assert info.value.status == status

    run(main())
    assert calls == 1  # no retry


@pytest.mark.parametrize("status", [429, 500, 503])
def test_reconnecting_client_retries_transient_rejection(status: int) -> None:
    calls = 0

    def flaky(request: tether.ws.Request) -> tether.ws.Response | None:
        nonlocal calls
        calls += 1
        if calls <= 2:
            return tether.ws.Response(status, tether.ws.Headers([]), body=b"later")
        return None

    async def main() -> None:
        async with (
            server(echo, process_request=flaky) as url,
            contextlib.aclosing(aiter(connect(url, backoff_min=0.01, backoff_max=0.05))) as it,
        ):
            async for ws in it:
                await ws.send("finally")
                assert await ws.recv() == "finally"
                break

    run(main())
    assert calls == 3


# --------------------------------------------------------------------------- TLS


# Python 3.10's asyncio leaves the server's TLS transport unclosed when a handshake
# fails (its sslproto was rewritten in 3.11); the warning is asyncio's, not tether's.
@pytest.fixture
def collect_leaked_tls_transports() -> Iterator[None]:
    """On 3.10, collect the leaked transports inside the test that leaked them, warnings ignored."""
    yield
    if sys.version_info < (3, 11):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()


@contextlib.asynccontextmanager
async def tls_server(pki: dict[str, Path]) -> AsyncIterator[int]:
    """An echo server over TLS; yield its port."""
    ctx = tether.tls.server_context(pki["cert"], pki["key"])
    async with tether.ws.serve(echo, "127.0.0.1", 0, ssl=ctx, ping_interval=None) as srv:
        yield srv.port


@pytest.mark.parametrize("server_hostname", [None, "localhost"], ids=["ip-address", "dns-name"])
def test_wss_with_test_ca(pki: dict[str, Path], server_hostname: str | None) -> None:
    async def main() -> None:
        async with tls_server(pki) as port:
            ctx = tether.tls.client_context(ca_file=pki["ca"])
            async with connect(f"wss://127.0.0.1:{port}/", ssl=ctx, server_hostname=server_hostname) as ws:
                await ws.send("secret")
                assert await ws.recv() == "secret"
                assert ws._transport is not None
                assert ws._transport.get_extra_info("ssl_object") is not None

    run(main())


@pytest.mark.usefixtures("collect_leaked_tls_transports")
def test_wss_without_the_ca_fails_verification(
    pki: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with tls_server(pki) as port:
            with pytest.raises(ssl.SSLCertVerificationError):
                await connect(f"wss://127.0.0.1:{port}/")
            with pytest.raises(ssl.SSLCertVerificationError):
                await connect(f"wss://127.0.0.1:{port}/", ssl=tether.tls.client_context())
            # The reconnecting client gives up at once too: a bad certificate is permanent.
            with pytest.raises(ssl.SSLCertVerificationError):
                async for _ in connect(f"wss://127.0.0.1:{port}/", backoff_min=0.01, backoff_max=0.05):
                    pytest.fail("connected without verifying the server")

    with caplog.at_level(logging.CRITICAL, logger="asyncio"):
        run(main())


@pytest.mark.usefixtures("collect_leaked_tls_transports")
def test_wss_with_wrong_host_name_fails_verification(
    pki: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with tls_server(pki) as port:
            ctx = tether.tls.client_context(ca_file=pki["ca"])
            with pytest.raises(ssl.SSLCertVerificationError):
                await connect(f"wss://127.0.0.1:{port}/", ssl=ctx, server_hostname="example.com")

    with caplog.at_level(logging.CRITICAL, logger="asyncio"):
        run(main())


def test_ssl_context_for_ws_uri_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        tether.ws.connect("ws://127.0.0.1:1/", ssl=ssl.create_default_context())


@pytest.mark.parametrize(
    "uri", ["http://127.0.0.1/", "ws://", "ws://127.0.0.1/#fragment", "ws://127.0.0.1:99999/"]
)
def test_invalid_uri_is_a_value_error(uri: str) -> None:
    with pytest.raises(ValueError):
        tether.ws.connect(uri)


@pytest.mark.parametrize(
    "headers",
    [{"X-Evil": "a\r\nInjected: yes"}, {"X-Evil": "a\nb"}, {"Bad Name": "x"}, {"X-Nul": "a\x00"}],
)
def test_header_injection_is_refused(headers: dict[str, str]) -> None:
    seen: list[tether.ws.Request] = []

    async def main() -> None:
        async with server(echo, process_request=seen.append) as url:
            with pytest.raises(ValueError):
                await connect(url, headers=headers)

    run(main())
    assert seen == []


@pytest.mark.usefixtures("collect_leaked_tls_transports")
def test_wss_with_client_certificate(pki: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    """Mutual TLS: the server asks for a certificate signed by the test CA."""

    async def main() -> None:
        server_ctx = tether.tls.server_context(pki["cert"], pki["key"], client_ca_file=pki["ca"])
        async with tether.ws.serve(echo, "127.0.0.1", 0, ssl=server_ctx, ping_interval=None) as srv:
            url = f"wss://127.0.0.1:{srv.port}/"
            ctx = tether.tls.client_context(
                ca_file=pki["ca"], cert_file=pki["client_cert"], key_file=pki["client_key"]
            )
            async with connect(url, ssl=ctx) as ws:
                await ws.send("with a certificate")
                assert await ws.recv() == "with a certificate"
                assert ws._transport is not None
                peer = ws._transport.get_extra_info("ssl_object")
                assert peer is not None
            # Without a client certificate the server refuses the TLS handshake.
            with pytest.raises((ssl.SSLError, ConnectionClosed, ConnectionResetError)):
                async with connect(url, ssl=tether.tls.client_context(ca_file=pki["ca"])) as ws:
                    await ws.send("no certificate")
                    await ws.recv()

    with caplog.at_level(logging.CRITICAL, logger="asyncio"):
        run(main())


def test_wss_with_verification_off(pki: dict[str, Path]) -> None:
    """verify=False is the explicit, documented way to skip checks (tests, lab setups)."""

    async def main() -> None:
        async with tls_server(pki) as port:
            ctx = tether.tls.client_context(verify=False)
            async with connect(f"wss://127.0.0.1:{port}/", ssl=ctx, server_hostname="example.com") as ws:
                await ws.send("unverified")
                assert await ws.recv() == "unverified"

    run(main())


def test_message_handler_takes_messages_from_the_receive_path() -> None:
    async def main() -> None:
        async def echo(ws: Any) -> None:
            async for message in ws:
                await ws.send(message)

        async with (
            tether.ws.serve(echo, "127.0.0.1", 0) as server,
            tether.ws.connect(f"ws://127.0.0.1:{server.port}/") as client,
        ):
            await client.send("queued")
            while not client._messages:  # the echo waits in the queue
                await asyncio.sleep(0.001)
            got: list[Any] = []
            arrived = asyncio.Event()

            def handler(message: Any) -> None:
                got.append(message)
                if len(got) == 3:
                    arrived.set()

            client.set_message_handler(handler)
            await client.send(b"bytes")
            await client.send("text")
            await asyncio.wait_for(arrived.wait(), 5)
            assert got == ["queued", b"bytes", "text"]
            client.set_message_handler(None)
            await client.send("back to recv")
            assert await client.recv() == "back to recv"

    run(main())


def test_a_message_handler_may_remove_itself_while_queued_messages_replay() -> None:
    async def main() -> None:
        async def two(ws: Any) -> None:
            await ws.send("first")
            await ws.send("second")
            await ws.recv()

        async with (
            tether.ws.serve(two, "127.0.0.1", 0) as server,
            tether.ws.connect(f"ws://127.0.0.1:{server.port}/") as client,
        ):
            while len(client._messages or ()) < 2:
                await asyncio.sleep(0.001)
            got: list[Any] = []

            def once(message: Any) -> None:
                got.append(message)
                client.set_message_handler(None)  # the rest goes back to recv()

            client.set_message_handler(once)
            assert got == ["first"]
            assert await asyncio.wait_for(client.recv(), 5) == "second"
            await client.send("done")

    run(main())
