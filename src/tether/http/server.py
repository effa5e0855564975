"""The asyncio HTTP/1.1 server: `serve()`.

`_HttpConnection` is the `asyncio.Protocol` (no streams in between). Each
``data_received()`` feeds the `tether.http.protocol.ServerConnection` core and
acts on its events. Static files and sync handlers are answered inside
``data_received()``, without a task; async handlers and streamed bodies run in
one task per request. Responses to pipelined requests are collected and
written together. Each connection has one deadline at a time (header, body or
keep-alive timeout) and one timer, re-armed lazily, so a request costs no
timer operations.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import os
import socket
import ssl as ssl_module
import time
import types
from collections.abc import Coroutine, Generator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from tether.errors import ConnectionClosed, InvalidState
from tether.http import ssi
from tether.http.app import App, Request, Response, json_bytes
from tether.http.parser import HTTPError
from tether.http.protocol import (
    Data,
    EndOfMessage,
    InvalidRequest,
    RequestReceived,
    ServerConnection,
    State,
)
from tether.http.static import SMALL_FILE, FileBody, http_date
from tether.ws.handshake import Headers as WsHeaders
from tether.ws.handshake import Request as WsRequest

__all__ = ["Server", "serve"]

logger = logging.getLogger("tether.http")

_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"
_JSON_FIELDS = (("Content-Type", _JSON),)
_CoroutineType = types.CoroutineType
_copy_context = contextvars.copy_context
_LINGER_TIMEOUT = 2.0
_LINGER_BYTES = 2**24
_PIPELINE_HIGH = 2**16


# State.X is a descriptor lookup on Python 3.11 (0.1 µs): the hot path uses these.
_IDLE, _BODY, _SENDING, _DONE, _ERROR, _CLOSED = (
    State.IDLE,
    State.BODY,
    State.SENDING,
    State.DONE,
    State.ERROR,
    State.CLOSED,
)


class _Upgrade:
    __slots__ = ("server",)

    def __init__(self, server: Any) -> None:
        self.server = server


class _HttpConnection(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._app = server.app
        self._loop = server._loop
        self._core = ServerConnection(
            max_head_size=server.max_head_size,
            max_request_line=server.max_request_line,
            max_headers=server.max_headers,
            max_body_size=_connection_limit(server.app),
        )
        self._transport: asyncio.Transport | None = None
        self._request: Request | None = None
        self._task: asyncio.Task[None] | None = None
        self._streaming = False
        self._processing = False
        self._reading_paused = False
        self._writing_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._head_timer = True
        self._lingering = False
        self._discarded = 0
        self._lost = False
        self._switched = False
        self._client: Any = None
        self.closed: asyncio.Future[None] = self._loop.create_future()

    # -------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = tcp = cast(asyncio.Transport, transport)
        sock = tcp.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Small responses go out at once; keep-alive never waits on Nagle.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._client = tcp.get_extra_info("peername")
        server = self._server
        if server._closing or len(server._connections) >= server.max_connections:
            # RFC 9110 §15.6.4: 503, and the client may retry later.
            self._core.close()
            self._core.respond(
                503, [("Content-Type", _TEXT), ("Retry-After", "1")], b"Service Unavailable\n", close=True
            )
            tcp.write(self._core.data_to_send())
            tcp.close()
            return
        server._connections.add(self)
        self._core.common_headers = server._common_headers()
        self._set_deadline(server.header_timeout)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._discarded += len(data)
            if self._discarded > _LINGER_BYTES and self._transport is not None:
                self._transport.close()
            return
        core = self._core
        if core.request_state is _BODY:
            self._set_deadline(self._server.body_timeout)
        # A head that is not complete after this gets its header_timeout in _settle().
        core.receive_data(data)
        self._process()

    def eof_received(self) -> bool:
        if self._lingering:
            return False  # the client has read our answer and stopped sending: close
        self._core.receive_eof()
        self._process()
        return True  # keep the transport open to finish the response; closed by _settle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._server._connections.discard(self)
        if self._request is not None:
            self._request._fail(ConnectionClosed(1006, "client disconnected"))
        if self._task is not None and self._streaming and not self._task.done():
            self._task.cancel()  # nobody reads the rest of a streamed response
        self._wake_writers()
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_writers()

    def _wake_writers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def _drain(self) -> None:
        if self._lost:
            raise ConnectionClosed(1006, "client disconnected")
        if self._writing_paused:
            fut = self._loop.create_future()
            self._drain_waiters.append(fut)
            await fut
            if self._lost:
                raise ConnectionClosed(1006, "client disconnected")

    # -------------------------------------------------------------- deadlines

    def _set_deadline(self, timeout: float | None) -> None:
        if timeout is None:
            self._deadline = None
            return
        self._deadline = deadline = self._loop.time() + timeout
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None or self._lost:
            return
        now = self._loop.time()
        if now < deadline:
            self._timer = self._loop.call_at(deadline, self._on_timer)
            return
        self._deadline = None
        self._timed_out()

    def _timed_out(self) -> None:
        core = self._core
        transport = self._transport
        assert transport is not None
        if self._lingering:
            transport.close()
        elif core.request_state is _IDLE and core.response_state is _IDLE:
            if core.buffered:
                # RFC 9110 §15.5.9: the head did not arrive in time (a slowloris client).
                logger.info("request head from %s timed out", self._client)
                core.close()
                core.respond(408, [("Content-Type", _TEXT)], b"Request Timeout\n", close=True)
                self._flush()
            transport.close()
        elif core.request_state is _BODY:
            request = self._request
            if request is not None and request._waiter is not None:
                logger.info("request body from %s timed out", self._client)
                request._fail(HTTPError(408))
            else:
                self._set_deadline(self._server.body_timeout)  # the handler is busy, not the client

    # --------------------------------------------------------------- requests

    def _process(self) -> None:
        """Act on the core's events until it needs more bytes or a response."""
        if self._processing or self._switched:
            return
        self._processing = True
        core = self._core
        try:
            while True:
                events = core.events_received()
                if not events:
                    break
                for event in events:
                    kind = type(event)
                    if kind is RequestReceived:
                        self._on_request(event)  # type: ignore[arg-type]
                        if self._switched:
                            return
                    elif kind is Data:
                        if self._request is not None:
                            self._request._feed(event.data)  # type: ignore[union-attr]
                            if self._request._buffered > 2**18:
                                self._pause_reading()
                    elif kind is EndOfMessage:
                        if self._request is not None:
                            self._request._end()
                        if core.request_state is _DONE:
                            self._deadline = None
                    else:
                        self._on_invalid(event)  # type: ignore[arg-type]
        finally:
            self._processing = False
        self._settle()

    def _settle(self) -> None:
        """Write what is pending; close, wait for the next head, or apply back-pressure."""
        if self._switched:
            return
        core = self._core
        transport = self._transport
        if transport is None or self._lost:
            core.data_to_send()  # nowhere to write it
            return
        data = core.data_to_send()
        if data:
            transport.write(data)
        request_state = core.request_state
        response_state = core.response_state
        if request_state is _IDLE and response_state is _IDLE and self._task is None:
            # The common case first: the response went out, wait for the next head.
            if self._server._closing:
                core.close()
                transport.close()
                return
            if core.buffered:
                if not self._head_timer:
                    self._head_timer = True
                    self._set_deadline(self._server.header_timeout)
            else:
                self._head_timer = False
                self._set_deadline(self._server.keep_alive_timeout)
            if self._reading_paused:
                self._resume_reading()
        elif response_state is _CLOSED:
            self._close_after_response()
        elif request_state is _CLOSED and response_state is not _SENDING:
            if self._task is None:
                transport.close()
        elif request_state is _DONE and core.buffered > _PIPELINE_HIGH:
            self._pause_reading()  # a pipelining client that runs ahead of the responses

    def _pause_reading(self) -> None:
        if not self._reading_paused and self._transport is not None:
            self._reading_paused = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self._transport is not None and not self._lingering:
            self._reading_paused = False
            self._transport.resume_reading()

    def _body_consumed(self) -> None:
        """The handler took the buffered body: read on."""
        if self._core.request_state is _BODY:
            self._resume_reading()

    def _send_continue(self) -> None:
        self._core.send_continue()
        self._flush()

    def _flush(self) -> None:
        data = self._core.data_to_send()
        if data and self._transport is not None and not self._lost:
            self._transport.write(data)

    def _close_after_response(self) -> None:
        transport = self._transport
        assert transport is not None
        if self._task is not None and not self._task.done() and self._streaming:
            return
        core = self._core
        if self._lingering:
            return
        if core.request_state in (_BODY, _ERROR) and transport.can_write_eof():
            # The client may still be sending a body we refused: read and drop it for a
            # while, so that its TCP stack does not answer our response with a reset
            # before the client has read it (the "lingering close" of HTTP servers).
            self._lingering = True
            self._resume_reading()
            transport.write_eof()
            self._deadline = None
            self._set_deadline(_LINGER_TIMEOUT)
            return
        transport.close()

    def _on_invalid(self, event: InvalidRequest) -> None:
        logger.debug("bad request from %s: %s %s", self._client, event.status, event.message)
        if self._request is not None:
            self._request._fail(HTTPError(event.status, event.message))
            return  # the handler answers (or has answered) this request
        if self._core.response_state is _IDLE:
            self._core.respond(
                event.status, [("Content-Type", _TEXT)], (event.message + "\n").encode(), close=True
            )

    def _on_request(self, event: RequestReceived) -> None:
        self._head_timer = False
        self._deadline = None
        if event.has_body:
            self._set_deadline(self._server.body_timeout)
        request = Request(
            event.method,
            event.target,
            event.headers,
            app=self._app,
            http_version=event.http_version,
            conn=self,
            has_body=event.has_body,
            client=self._client,
        )
        self._request = request
        request._continue = event.expect_continue
        try:
            result = self._dispatch(request, event)
        except HTTPError as exc:
            result = _error_response(exc)
        except Exception:
            logger.exception("handler for %s %s failed", request.method, request.path)
            result = _error_response(HTTPError(500))
        if type(result) is _Upgrade:
            self._upgrade(request, result.server)
            return
        if type(result) is _CoroutineType or inspect.iscoroutine(result):
            # Run the handler's first step here: one that never waits (most do not)
            # is answered at once, without a task or a turn of the loop. It runs in a
            # copy of the context, as a task's steps would.
            context = _copy_context()
            try:
                yielded = context.run(result.send, None)
            except StopIteration as stop:
                result = stop.value
            except HTTPError as exc:
                result = _error_response(exc)
            except ConnectionClosed:
                return
            except Exception:
                logger.exception("handler for %s %s failed", request.method, request.path)
                result = _error_response(HTTPError(500))
            else:
                # It waits: a task takes it over from where it stopped.
                self._task = self._loop.create_task(
                    self._run(request, _resume(result, yielded)), context=context
                )
                return
        self._send(request, result)

    def _dispatch(self, request: Request, event: RequestReceived) -> Any:
        """Route the request; return what to answer, or a coroutine that gives it."""
        app = self._app
        target = request.target
        if target[:1] == "/" and "?" not in target and "%" not in target:
            path = request._path = target  # what request.path gives, without its steps
        else:
            path = request.path
        if event.upgrade is not None and event.upgrade.lower() == "websocket":
            ws_route = app._ws.get(path)
            if ws_route is not None:
                if ws_route.auth is not None:
                    request.user = ws_route.auth.authenticate(request)
                return _Upgrade(ws_route.server)
        table = app._exact.get(path)
        route = table.get(request.method) if table is not None else None
        if route is not None:  # a fixed path: no parameters (path_params stays {})
            if route.auth is not None:
                request.user = route.auth.authenticate(request)
            return route.handler(request)
        route, params, allowed = app._match(request.method, path)
        if route is not None:
            if route.auth is not None:
                request.user = route.auth.authenticate(request)
            request.path_params = params
            return route.handler(request)
        if allowed:
            raise HTTPError(405, headers=[("Allow", ", ".join(allowed))])
        if path in app._ws:
            # RFC 9110 §15.5.22: this resource needs the WebSocket protocol.
            raise HTTPError(426, headers=[("Upgrade", "websocket"), ("Connection", "Upgrade")])
        if app.static is not None and request.method in ("GET", "HEAD"):
            if app.static_auth is not None:
                request.user = app.static_auth.authenticate(request)
            return self._static(request)
        raise HTTPError(404)

    def _static(self, request: Request) -> Any:
        static = self._app.static
        assert static is not None
        raw_path = request.raw_path
        real, st = static.resolve(raw_path)
        if os.path.isdir(real):
            if not raw_path.endswith("/"):
                query = request.query_string
                location = raw_path + "/" + ("?" + query if query else "")
                return Response(b"", 301, [("Location", location)])
            for name in static.index:
                candidate = os.path.join(real, name)
                if os.path.isfile(candidate):
                    real = candidate
                    st = os.stat(real)
                    break
            else:
                if not static.directory_listing:
                    raise HTTPError(403, "directory listing is off")
                return Response(static.listing(raw_path, real), content_type="text/html; charset=utf-8")
        if static.ssi and real.endswith(".shtml"):
            return self._ssi(request, real)
        status, headers, body = static.file_response(request.method, request.headers, real, st)
        return _Prepared(status, headers, body)

    async def _ssi(self, request: Request, real: str) -> Response:
        app = self._app
        assert app.static is not None
        url = request.path if not request.path.endswith("/") else request.path + "index.shtml"
        page = await ssi.render(app.static, real, url, app._ssi, request, max_depth=app.ssi_max_depth)
        return Response(
            page, headers=[("Cache-Control", "no-cache")], content_type="text/html; charset=utf-8"
        )

    def _upgrade(self, request: Request, ws_server: Any) -> None:
        core = self._core
        try:
            data = core.detach()
        except InvalidState:
            self._send(request, _error_response(HTTPError(400, "upgrade request with a body")))
            return
        self._switched = True
        self._request = None
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._server._connections.discard(self)
        self._resume_reading()
        assert self._transport is not None
        ws_request = WsRequest(request.target, WsHeaders(list(request.headers)), request.method)
        ws_server.take_over(self._transport, ws_request, data)

    async def _run(
        self, request: Request, coro: Any, prepared: tuple[int, list[tuple[str, str]], Any] | None = None
    ) -> None:
        """Run an async handler and send its response, or stream a prepared body."""
        try:
            if prepared is not None:
                await self._stream(request, *prepared)
                return
            try:
                result = await coro
            except HTTPError as exc:
                result = _error_response(exc)
            except ConnectionClosed:
                return
            except Exception:
                logger.exception("handler for %s %s failed", request.method, request.path)
                result = _error_response(HTTPError(500))
            if not self._lost:
                await self._send_async(request, result)
        finally:
            self._task = None
            self._streaming = False
            if not self._lost:
                self._process()

    # -------------------------------------------------------------- responses

    def _head(self, request: Request, result: Any) -> tuple[int, list[tuple[str, str]], Any]:
        """Turn a handler's result into status, header fields and body."""
        if type(result) is _Prepared:
            return result.status, result.headers, result.body
        status = 200
        headers: list[tuple[str, str]]
        content_type: str | None = None
        if isinstance(result, Response):
            status, headers, content_type, body = (
                result.status,
                list(result.headers),
                result.content_type,
                result.body,
            )
        else:
            headers, body = [], result
        if body is None:
            if status == 200:
                status = 204
            body = b""
        elif isinstance(body, (dict, list)):
            body = json_bytes(body)
            content_type = content_type or _JSON
        elif isinstance(body, str):
            body = body.encode("utf-8")
            content_type = content_type or _TEXT
        elif isinstance(body, (bytes, bytearray, memoryview)):
            body = bytes(body)
            content_type = content_type or "application/octet-stream"
        elif isinstance(body, Path):
            static_files = self._app.static
            real = os.path.realpath(body)
            if static_files is None:
                from tether.http.static import StaticFiles

                static_files = StaticFiles(os.path.dirname(real), ssi=False)
            if not os.path.isfile(real):
                raise HTTPError(404)
            fstatus, fheaders, body = static_files.file_response(
                request.method, request.headers, real, content_type=content_type
            )
            if status == 200:
                status = fstatus
            return status, [*fheaders, *headers], body
        if content_type is not None and not any(k.lower() == "content-type" for k, _ in headers):
            headers.append(("Content-Type", content_type))
        return status, headers, body

    def _send(self, request: Request, result: Any) -> None:
        """Answer at once when the body is in memory; else hand over to a task."""
        kind = type(result)
        if kind is dict or kind is list:
            # The common case of a REST endpoint, without the general conversion.
            try:
                body = json_bytes(result)
            except Exception:  # _head() below raises it again, as for any result
                pass
            else:
                self._respond(request, 200, _JSON_FIELDS, body)
                return
        try:
            status, headers, body = self._head(request, result)
        except HTTPError as exc:
            status, headers, body = self._head(request, _error_response(exc))
        if type(body) is bytes:
            self._respond(request, status, headers, body)
            return
        if isinstance(body, FileBody) and body.length <= SMALL_FILE:
            self._respond(request, status, headers, _read_segments(body))
            return
        self._task = self._loop.create_task(self._run(request, None, (status, headers, body)))

    def _respond(
        self, request: Request, status: int, headers: Sequence[tuple[str, str]], body: bytes
    ) -> None:
        core = self._core
        try:
            core.respond(status, headers, body, close=self._server._closing)
        except ValueError:
            logger.exception("invalid response header for %s %s", request.method, request.path)
            core.respond(500, [("Content-Type", _TEXT)], b"Internal Server Error\n", close=True)
        self._done(request)

    def _done(self, request: Request) -> None:
        """The response is complete: drop the request's temporary files."""
        if request._files:
            request._cleanup()
        if self._request is request:
            self._request = None

    async def _send_async(self, request: Request, result: Any) -> None:
        try:
            status, headers, body = self._head(request, result)
        except HTTPError as exc:
            status, headers, body = self._head(request, _error_response(exc))
        if type(body) is bytes:
            self._respond(request, status, headers, body)
            return
        if isinstance(body, FileBody) and body.length <= SMALL_FILE:
            self._respond(request, status, headers, _read_segments(body))
            return
        await self._stream(request, status, headers, body)

    async def _stream(self, request: Request, status: int, headers: list[tuple[str, str]], body: Any) -> None:
        core = self._core
        self._streaming = True
        try:
            if isinstance(body, FileBody):
                core.start_response(status, headers, content_length=body.length, close=self._server._closing)
                self._flush()
                if request.method != "HEAD":
                    await self._send_file(body)
            else:
                core.start_response(status, headers, close=self._server._closing)
                self._flush()
                if request.method == "HEAD":
                    _close_iterator(body)
                else:
                    await self._send_iterable(body)
            core.end_response()
        except ConnectionClosed:
            return
        except Exception:
            logger.exception("streaming the response to %s %s failed", request.method, request.path)
            if self._transport is not None:
                self._transport.close()  # the response is cut short: the client must see that
            return
        finally:
            self._streaming = False
        self._done(request)

    async def _send_iterable(self, body: Any) -> None:
        core = self._core
        if hasattr(body, "__aiter__"):
            async for piece in body:
                core.send_data(piece.encode("utf-8") if isinstance(piece, str) else piece)
                self._flush()
                await self._drain()
            return
        iterator = iter(body)
        try:
            for piece in iterator:
                core.send_data(piece.encode("utf-8") if isinstance(piece, str) else piece)
                self._flush()
                await self._drain()
        finally:
            _close_iterator(iterator)

    async def _send_file(self, body: FileBody) -> None:
        transport = self._transport
        assert transport is not None
        core = self._core
        with open(body.path, "rb") as f:
            for segment in body.segments:
                if isinstance(segment, bytes):
                    core.send_data(segment)
                    self._flush()
                    await self._drain()
                    continue
                offset, count = segment
                sent = 0
                if not self._lost and transport.get_extra_info("sslcontext") is None:
                    try:
                        sent = await self._loop.sendfile(transport, f, offset, count, fallback=False)
                    except (
                        NotImplementedError,
                        AttributeError,
                        RuntimeError,
                        asyncio.SendfileNotAvailableError,
                    ):
                        sent = 0
                    core.body_sent(sent)
                f.seek(offset + sent)
                left = count - sent
                while left > 0:
                    chunk = f.read(min(left, 2**18))
                    if not chunk:
                        raise ConnectionClosed(1006, "file shrank while being sent")
                    left -= len(chunk)
                    core.send_data(chunk)
                    self._flush()
                    await self._drain()


class _Prepared:
    """A static-file answer: status, fields and body already worked out."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[str, str]], body: Any) -> None:
        self.status = status
        self.headers = headers
        self.body = body


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], yielded: Any) -> Generator[Any, Any, Any]:
    """Go on with coro, whose first step already ran and yielded `yielded`.

    Awaited inside a task, this hands the task what coro yielded (the future
    it waits for) and passes values, exceptions (cancellation) and close()
    back into coro, as ``await coro`` would have from the start.
    """
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
            continue
        try:
            yielded = coro.send(sent)
        except StopIteration as stop:
            return stop.value


def _error_response(exc: HTTPError) -> Response:
    return Response((exc.message + "\n").encode("utf-8"), exc.status, exc.headers, content_type=_TEXT)


def _read_segments(body: FileBody) -> bytes:
    with open(body.path, "rb") as f:
        parts = []
        for segment in body.segments:
            if isinstance(segment, bytes):
                parts.append(segment)
            else:
                f.seek(segment[0])
                parts.append(f.read(segment[1]))
    return b"".join(parts)


_closing_tasks: set[asyncio.Future[Any]] = set()


def _close_iterator(iterator: Any) -> None:
    close = getattr(iterator, "close", None)
    if close is not None and not inspect.iscoroutinefunction(close):
        close()
    elif hasattr(iterator, "aclose"):
        task = asyncio.ensure_future(iterator.aclose())
        _closing_tasks.add(task)
        task.add_done_callback(_closing_tasks.discard)


def _connection_limit(app: App) -> int | None:
    limits = [app.max_body_size, app.max_upload_size]
    if any(limit is None for limit in limits):
        return None
    return max(cast(list[int], limits))


class Server:
    """A running HTTP server; close() stops it, `async with` does for you.

    Attributes:
        app: the application served.
    """

    def __init__(
        self,
        app: App,
        *,
        max_connections: int,
        header_timeout: float,
        body_timeout: float,
        keep_alive_timeout: float,
        max_head_size: int,
        max_request_line: int,
        max_headers: int,
        shutdown_timeout: float,
    ) -> None:
        self.app = app
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.keep_alive_timeout = keep_alive_timeout
        self.max_head_size = max_head_size
        self.max_request_line = max_request_line
        self.max_headers = max_headers
        self.shutdown_timeout = shutdown_timeout
        self._loop = asyncio.get_running_loop()
        self._connections: set[_HttpConnection] = set()
        self._server: asyncio.base_events.Server | None = None
        self._closing = False
        self._port = 0
        self._date_second = -1
        self._date = b""

    def _common_headers(self) -> bytes:
        """Date (RFC 9110 §6.6.1) and Server fields, formatted once per second."""
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            self._date = b"Server: tether\r\nDate: %s\r\n" % http_date(now).encode()
        return self._date

    def _protocol(self) -> _HttpConnection:
        conn = _HttpConnection(self)
        return conn

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets."""
        assert self._server is not None
        return tuple(self._server.sockets)

    @property
    def port(self) -> int:
        """The port of the first listening socket (handy with port=0); kept after close()."""
        return self._port

    def close(self) -> None:
        """Stop listening; close idle connections; let requests in progress finish.

        Each connection with a request in progress is closed after its
        response; WebSocket connections are closed with 1001 (going away).
        """
        self._closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            core = conn._core
            if (
                core.request_state is _IDLE
                and core.response_state is _IDLE
                and conn._task is None
                and conn._transport is not None
            ):
                core.close()
                conn._transport.close()
        for ws_server in self.app._ws_servers():
            ws_server.close()

    async def wait_closed(self, timeout: float | None = None) -> None:
        """Wait until every connection has ended.

        Connections still open after timeout (the shutdown_timeout of
        `serve` by default) are aborted and their handlers cancelled.
        """
        timeout = self.shutdown_timeout if timeout is None else timeout
        conns = list(self._connections)
        if conns:
            await asyncio.wait([c.closed for c in conns], timeout=timeout)
            for conn in conns:
                if not conn._lost and conn._transport is not None:
                    conn._transport.abort()
            tasks = [c._task for c in conns if c._task is not None and not c._task.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)
        for ws_server in self.app._ws_servers():
            await ws_server.wait_closed(timeout)
        if self._server is not None:
            await self._server.wait_closed()

    async def serve_forever(self) -> None:
        """Serve until cancelled."""
        assert self._server is not None
        await self._server.serve_forever()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        await self.wait_closed()


class serve:
    """Start an HTTP server for app.

    ``server = await serve(app, "127.0.0.1", 8000)`` or
    ``async with serve(app, ...) as server:``.

    Args:
        app: the `App` to serve.
        host: the address to listen on.
        port: the port; 0 picks a free one (see `Server.port`).
        ssl: an SSLContext for https:// (see `tether.tls.server_context`).
        sock: an already listening socket to use instead of host and port.
        backlog: the listen backlog.
        max_connections: connections served at once; more are answered 503.
        header_timeout: seconds a client has to send a whole request head
            (against slowloris clients); answered 408.
        body_timeout: seconds the body may pause while a handler waits for it.
        keep_alive_timeout: seconds an idle keep-alive connection stays open.
        max_head_size: the largest request head in bytes (431 beyond).
        max_request_line: the longest request line (414 beyond).
        max_headers: the most header fields in a request (431 beyond).
        shutdown_timeout: seconds `Server.wait_closed` lets requests finish.
    """

    def __init__(
        self,
        app: App,
        host: str | None = "127.0.0.1",
        port: int | None = 0,
        *,
        ssl: ssl_module.SSLContext | None = None,
        sock: socket.socket | None = None,
        backlog: int = 1024,
        max_connections: int = 1024,
        header_timeout: float = 10.0,
        body_timeout: float = 60.0,
        keep_alive_timeout: float = 15.0,
        max_head_size: int = 16384,
        max_request_line: int = 8192,
        max_headers: int = 100,
        shutdown_timeout: float = 10.0,
    ) -> None:
        self._app = app
        self._options: dict[str, Any] = {
            "max_connections": max_connections,
            "header_timeout": header_timeout,
            "body_timeout": body_timeout,
            "keep_alive_timeout": keep_alive_timeout,
            "max_head_size": max_head_size,
            "max_request_line": max_request_line,
            "max_headers": max_headers,
            "shutdown_timeout": shutdown_timeout,
        }
        self._listen: dict[str, Any] = {
            "host": host,
            "port": port,
            "ssl": ssl,
            "sock": sock,
            "backlog": backlog,
        }
        self._server: Server | None = None

    async def _start(self) -> Server:
        loop = asyncio.get_running_loop()
        server = Server(self._app, **self._options)
        listen = dict(self._listen)
        if listen["sock"] is not None:
            listen.pop("host")
            listen.pop("port")
        server._server = await loop.create_server(server._protocol, **listen)
        server._port = int(server.sockets[0].getsockname()[1])
        self._server = server
        return server

    def __await__(self) -> Generator[Any, None, Server]:
        return self._start().__await__()

    async def __aenter__(self) -> Server:
        return await self._start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
