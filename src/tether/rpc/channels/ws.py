"""The inbound WebSocket channel: ``/rpc`` on a `tether.http.App` (spec mgos-rpc.md §2.1).

Theory of operation. Each WebSocket connection is one non-persistent channel of
type ``WS_in``. Every message, text or binary, is one frame and goes to
`Dispatcher.handle`; the reply goes back on the same connection as a text
message. Requests on one connection run concurrently, as in mg_rpc, where an
asynchronous handler answers whenever it is done: replies may come back in
another order than the requests, matched by ``id``. The dispatcher's
``max_pending`` bounds the calls running at once (429 beyond).

A frame the firmware treats as invalid (`InvalidFrame`: not JSON, not an object,
a bad ``id``, too big, another device's ``dst``) closes the connection with the
error's close code (1007, or 1009 for a frame over the limit), as the firmware
closes a non-persistent channel (§1.1 step 1).

To save a task wake-up and a turn of the loop per call, each message is handled
in the connection's receive path (`tether.ws.WebSocket.set_message_handler`), and
a handler that does not wait (most, and the built-ins) is answered there at once,
with no coroutine at all (`Dispatcher._handle_now`); the rest of a handler that
waits runs in a task. After an invalid frame, or once the replies fill the write
buffer (a client that does not read them), the connection's task reads the
messages itself instead, and waits for the buffer to drain before the next one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine, Sequence
from typing import Any

from tether.errors import ConnectionClosed
from tether.http.app import App
from tether.http.auth import DigestAuth as HttpDigestAuth
from tether.http.parser import HTTPError
from tether.rpc.channels.origin import OriginPolicy
from tether.rpc.dispatch import Dispatcher
from tether.rpc.frames import InvalidFrame
from tether.ws.connection import Data
from tether.ws.server import ServerWebSocket

__all__ = ["SUBPROTOCOLS", "WebSocketChannel", "format_peer", "mount_websocket"]

logger = logging.getLogger("tether.rpc")

#: Subprotocols accepted on ``/rpc``, echoed when the client offers one (§2.1): the
#: firmware client's, mos's, and the device simulator's. A client offering none is
#: accepted too.
SUBPROTOCOLS = ("json-rpc", "clubby.cesanta.com", "dash.mongoose-os.com")


def format_peer(address: Any) -> str:
    """``host:port`` of a socket address (``RPC.Ping``'s ``channel_info``), "" if unknown."""
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return "" if address is None else str(address)


class _HandshakeView:
    """The upgrade request as `tether.http.auth` reads a request: method, target, headers."""

    __slots__ = ("headers", "method", "target")

    def __init__(self, method: str, target: str, headers: Any) -> None:
        self.method = method
        self.target = target
        self.headers = headers


class WebSocketChannel:
    """The handler of WebSocket connections on ``/rpc``: one ``WS_in`` channel each.

    Use `mount_websocket` (or `tether.rpc.channels.mount_rpc`) rather than building it.

    Args:
        dispatcher: where frames go.
        channel: the channel type ACL entries see.
        http_auth: checks an ``Authorization: Digest`` header of the upgrade request;
            a valid one binds its user to the connection (§2.1). None for no check.
    """

    def __init__(
        self, dispatcher: Dispatcher, *, channel: str = "WS_in", http_auth: HttpDigestAuth | None = None
    ) -> None:
        self.dispatcher = dispatcher
        self.channel = channel
        self.http_auth = http_auth

    def _user(self, ws: ServerWebSocket) -> str | None:
        request = ws.request
        if self.http_auth is None or request is None or not request.headers.get("authorization"):
            return None
        try:
            return self.http_auth.authenticate(_HandshakeView(request.method, request.path, request.headers))
        except HTTPError:
            return None  # a call that needs a user then gets the in-frame 401 challenge

    async def __call__(self, ws: ServerWebSocket) -> None:
        """Serve one connection until it closes."""
        handle_now = self.dispatcher._handle_now
        channel = self.channel
        user = self._user(ws)
        peer = format_peer(ws.remote_address)
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()
        invalid: list[InvalidFrame] = []
        backlog: deque[Data] = deque()  # what came after the replies could not be written
        blocked = False
        wake: asyncio.Future[None] = loop.create_future()  # set at an invalid frame or when blocked

        send_nowait = ws.send_nowait

        def send(reply: str) -> None:
            nonlocal blocked
            try:
                if not send_nowait(reply):
                    blocked = True
                    if not wake.done():
                        wake.set_result(None)
            except ConnectionClosed:
                pass

        def failed(exc: BaseException) -> None:
            if isinstance(exc, InvalidFrame):
                invalid.append(exc)
                if not wake.done():
                    wake.set_result(None)
            else:  # pragma: no cover - handle() answers every handler failure itself
                logger.error("rpc on %s failed", peer, exc_info=exc)

        def push(frame: bytes) -> bool:
            return ws.send_nowait(frame.decode("utf-8"))

        async def finish(rest: Coroutine[Any, Any, str | None]) -> None:
            try:
                reply = await rest
            except Exception as exc:
                failed(exc)
            else:
                if reply is not None and not invalid:
                    send(reply)

        def on_message(message: Data) -> None:
            # In the connection's receive path: no task wakes up for a call.
            if invalid:
                return  # the connection closes; what follows the invalid frame gets no answer
            if blocked:
                backlog.append(message)  # the rest of the data just read, at most
                return
            try:
                reply = handle_now(message, channel, peer, user, push)
            except Exception as error:
                failed(error)
                return
            if isinstance(reply, str):
                send(reply)
            elif reply is not None:  # a handler that waits: the rest in a task (asyncio.timeout() needs one)
                task = loop.create_task(finish(reply))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        closed = asyncio.ensure_future(ws.wait_closed())
        try:
            ws.set_message_handler(on_message)
            await asyncio.wait((wake, closed), return_when=asyncio.FIRST_COMPLETED)
            if closed.done():
                return
            # An invalid frame, or a client that does not read its replies: from here on
            # this task reads, as the echo does. What comes waits in the connection's queue,
            # which pauses reading when full, and a Close behind it is answered in order.
            ws.set_message_handler(None)
            while not invalid:
                if blocked:
                    blocked = False
                    await ws.drain()  # until the client reads its replies
                elif backlog:
                    on_message(backlog.popleft())
                else:
                    on_message(await ws.recv())  # raises ConnectionClosed at the end
            exc = invalid[0]
            logger.info("invalid frame from %s: %s; closing", peer, exc)
            await ws.close(exc.close_code, str(exc)[:120])
        finally:
            ws.set_message_handler(None)
            closed.cancel()
            for task in tasks:
                task.cancel()


def mount_websocket(
    app: App,
    dispatcher: Dispatcher,
    path: str = "/rpc",
    *,
    http_auth: HttpDigestAuth | None = None,
    subprotocols: Sequence[str] = SUBPROTOCOLS,
    ping_interval: float | None = 20.0,
    origins: OriginPolicy | None = None,
) -> WebSocketChannel:
    """Serve RPC over WebSocket on path of app (§2.1).

    Args:
        app: the HTTP application.
        dispatcher: where frames go.
        path: the WebSocket route.
        http_auth: see `WebSocketChannel`.
        subprotocols: accepted subprotocols, the first one the client offers is echoed.
        ping_interval: seconds between keepalive pings, None for none.
        origins: the web pages of other origins that may connect (`OriginPolicy`); by
            default none: a page of another origin gets 403 instead of the upgrade.

    Returns:
        The channel handler.
    """
    handler = WebSocketChannel(dispatcher, http_auth=http_auth)
    app.websocket(
        path,
        auth=origins if origins is not None else OriginPolicy(),
        subprotocols=subprotocols,
        compression=None,
        max_size=dispatcher.max_frame_size,
        ping_interval=ping_interval,
    )(handler)
    return handler
