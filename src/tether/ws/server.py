"""The asyncio WebSocket server: `serve()`."""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Generator, Sequence
from types import TracebackType
from typing import Any, Literal, cast

from tether.errors import ConnectionClosed, HandshakeError
from tether.ws.connection import Handler, WebSocket
from tether.ws.deflate import DeflateParams
from tether.ws.handshake import Headers, Request, Response
from tether.ws.protocol import RequestReceived, ServerConnection, State

__all__ = ["Server", "ServerWebSocket", "serve", "upgrade_server"]

logger = logging.getLogger("tether.ws")

#: What serve() runs per connection: a coroutine function taking the connection,
#: or the callback API: a Handler shared by every connection, or a Handler class
#: instantiated per connection.
ConnectionHandler = Callable[["ServerWebSocket"], Awaitable[None]] | Handler | type[Handler]
ProcessRequest = Callable[[Request], "Awaitable[Response | None] | Response | None"]


class ServerWebSocket(WebSocket):
    """The server side of a WebSocket connection; see `WebSocket`."""

    _core: ServerConnection

    def __init__(self, server: Server, core: ServerConnection, **kwargs: Any) -> None:
        super().__init__(core, **kwargs)
        self._server = server
        self._open_timer: asyncio.TimerHandle | None = None
        self._process_task: asyncio.Task[None] | None = None
        self.handler_task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._server._connections.add(self)
        if self._server.open_timeout is not None:
            self._open_timer = self._loop.call_later(self._server.open_timeout, self._open_timed_out)

    def _open_timed_out(self) -> None:
        if self._core.state is State.CONNECTING and self._transport is not None:
            logger.debug("handshake from %s timed out", self.remote_address)
            self._transport.abort()

    def _handshake_event(self, event: object) -> None:
        if isinstance(event, RequestReceived):
            self.request = event.request
            if self._server.process_request is None:
                self._accept(event.request)
            else:
                self._process_task = self._loop.create_task(self._process(event.request))

    async def _process(self, request: Request) -> None:
        assert self._server.process_request is not None
        try:
            answer = self._server.process_request(request)
            if inspect.isawaitable(answer):
                answer = await answer
            if answer is not None and not isinstance(answer, Response):
                raise TypeError(f"process_request returned {type(answer).__name__}, not Response or None")
        except Exception:
            logger.exception("process_request failed")
            answer = Response(
                500, Headers([("Content-Type", "text/plain; charset=utf-8")]), body=b"Internal Server Error\n"
            )
        if self._core.state is not State.CONNECTING or self._lost.done():
            return
        if answer is not None:
            self._core.reject(answer.status, answer.body, headers=list(answer.headers))
            self._write()
            if self._transport is not None:
                self._transport.close()
            return
        self._accept(request)

    def _accept(self, request: Request) -> None:
        try:
            self._core.accept(request)
        except HandshakeError as exc:
            logger.debug("refused handshake from %s: %s", self.remote_address, exc)
            self._write()
            if self._transport is not None:
                self._transport.close()
            return
        if self._open_timer is not None:
            self._open_timer.cancel()
        self.response = self._core.response
        self.subprotocol = self._core.subprotocol
        self._start()
        handler = self._server.handler
        if isinstance(handler, Handler):
            self._callbacks = handler
        elif isinstance(handler, type) and issubclass(handler, Handler):
            self._callbacks = handler()
        else:
            self.handler_task = self._loop.create_task(self._run_handler())
        # The response, and the answers to frames that came with the request.
        self._write()
        if self._callbacks is not None:
            self._open_callbacks()
        self._process_events()

    async def _run_handler(self) -> None:
        handler = cast(Callable[["ServerWebSocket"], Awaitable[None]], self._server.handler)
        try:
            await handler(self)
        except ConnectionClosed:
            pass
        except Exception:
            logger.exception("connection handler failed")
            await self.close(1011, "internal error")
        else:
            await self.close()
        finally:
            self._server._connections.discard(self)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._open_timer is not None:
            self._open_timer.cancel()
        if self._process_task is not None and not self._process_task.done():
            self._process_task.cancel()  # the client left during process_request
        if self.handler_task is None:
            self._server._connections.discard(self)


class Server:
    """A running WebSocket server; close() stops it, `async with` does for you.

    Attributes:
        sockets: the listening sockets.
    """

    def __init__(
        self,
        handler: ConnectionHandler,
        *,
        process_request: ProcessRequest | None,
        subprotocols: Sequence[str],
        deflate: DeflateParams | None,
        open_timeout: float | None,
        max_size: int | None,
        ws_kwargs: dict[str, Any],
    ) -> None:
        self.handler = handler
        self.process_request = process_request
        self.open_timeout = open_timeout
        self._subprotocols = list(subprotocols)
        self._deflate = deflate
        self._max_size = max_size
        self._ws_kwargs = ws_kwargs
        self._connections: set[ServerWebSocket] = set()
        self._server: asyncio.base_events.Server | None = None
        self._port = 0

    def _protocol(self) -> ServerWebSocket:
        core = ServerConnection(
            subprotocols=self._subprotocols, deflate=self._deflate, max_message_size=self._max_size
        )
        return ServerWebSocket(self, core, **self._ws_kwargs)

    @property
    def connections(self) -> frozenset[ServerWebSocket]:
        """The connections of this server, open or still opening or closing."""
        return frozenset(self._connections)

    def take_over(
        self, transport: asyncio.BaseTransport, request: Request, data: bytes = b""
    ) -> ServerWebSocket:
        """Continue a connection whose upgrade request another server parsed.

        An HTTP server that read a WebSocket upgrade request calls this with
        its transport: the transport gets a new `ServerWebSocket` as its
        protocol, which answers the handshake (101, or an error response and
        close when the request is not a valid upgrade, RFC 6455 §4.2.2) and
        then runs the handler, like a connection accepted by `serve()`.

        Args:
            transport: the connection, reading from it not paused.
            request: the parsed upgrade request.
            data: bytes received after the request (early frames).

        Returns:
            The new connection.
        """
        ws = self._protocol()
        core = ws._core
        # The head was parsed elsewhere: bytes that follow are early frames, which the
        # core holds until accept() (RFC 6455 §4.2.2 lets a client send them at once).
        core._head = None
        core.request = request
        transport.set_protocol(ws)
        ws.connection_made(transport)
        ws._handshake_event(RequestReceived(request))
        if data and core.state is not State.CLOSED and not ws._lost.done():
            ws.data_received(data)
        return ws

    def broadcast(self, message: str | bytes) -> int:
        """Send message to every open connection, without waiting.

        A connection whose write buffer is over its `write_limit` (a client
        that does not read) misses the message instead of buffering it without
        bound.

        Returns:
            How many connections the message was written to.
        """
        sent = 0
        for ws in list(self._connections):
            if ws.state is not State.OPEN or ws._writing_paused or ws._lost.done():
                continue
            if isinstance(message, str):
                ws._core.send_text(message)
            else:
                ws._core.send_binary(message)
            ws._write()
            sent += 1
        return sent

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets."""
        assert self._server is not None
        return tuple(self._server.sockets)

    @property
    def port(self) -> int:
        """The port of the first listening socket (handy with port=0); kept after close()."""
        return self._port

    def close(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Stop listening and close every connection with code (1001: going away)."""
        if self._server is not None:
            self._server.close()
        for ws in list(self._connections):
            if ws.state is State.OPEN:
                ws._core.send_close(code, reason)
                ws._write()
            elif ws._transport is not None and ws.state is State.CONNECTING:
                ws._transport.close()

    async def wait_closed(self, timeout: float = 10.0) -> None:
        """Wait until every connection and its handler has ended.

        Connections still open after timeout are aborted, handlers still
        running after another timeout are cancelled.
        """
        conns = list(self._connections)
        if conns:
            waiters = [asyncio.ensure_future(c.wait_closed()) for c in conns]
            _, pending = await asyncio.wait(waiters, timeout=timeout)
            for ws in conns:
                if ws._transport is not None and not ws._lost.done():
                    ws._transport.abort()
            if pending:
                await asyncio.wait(pending)
        tasks = [
            task
            for c in conns
            for task in (c.handler_task, c._process_task)
            if task is not None and not task.done()
        ]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
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


def upgrade_server(
    handler: ConnectionHandler,
    *,
    process_request: ProcessRequest | None = None,
    subprotocols: Sequence[str] = (),
    compression: Literal["deflate"] | None = "deflate",
    open_timeout: float | None = 10.0,
    ping_interval: float | None = 20.0,
    ping_timeout: float | None = 20.0,
    close_timeout: float = 10.0,
    max_size: int | None = 2**20,
    max_queue: int = 32,
    write_limit: int = 2**16,
) -> Server:
    """A WebSocket server that does not listen: another server hands it connections.

    tether's HTTP server keeps one per WebSocket route and calls
    `Server.take_over()` for each upgrade request on that route. `close()`
    and `wait_closed()` work as for a listening server.

    Args:
        handler: a coroutine function taking the `ServerWebSocket`, or a
            `Handler` (see `serve`).
        process_request, subprotocols, compression, open_timeout,
            ping_interval, ping_timeout, close_timeout, max_size, max_queue,
            write_limit: as for `serve`.

    Raises:
        ValueError: for an unsupported compression.
    """
    if compression not in (None, "deflate"):
        raise ValueError(f"unsupported compression {compression!r}")
    return Server(
        handler,
        process_request=process_request,
        subprotocols=subprotocols,
        deflate=DeflateParams() if compression == "deflate" else None,
        open_timeout=open_timeout,
        max_size=max_size,
        ws_kwargs={
            "ping_interval": ping_interval,
            "ping_timeout": ping_timeout,
            "close_timeout": close_timeout,
            "max_queue": max_queue,
            "write_limit": write_limit,
        },
    )


class serve:
    """Start a WebSocket server.

    ``async with serve(handler, "127.0.0.1", 8765) as server:`` or
    ``server = await serve(...)``. For each connection, ``await handler(ws)``
    runs; when it returns the connection is closed with 1000, when it raises,
    with 1011. With the callback API, handler is a `Handler` instance shared
    by every connection or a `Handler` subclass instantiated per connection;
    its methods are called from the connection's receive path.

    Args:
        handler: a coroutine function taking the `ServerWebSocket`, a
            `Handler`, or a `Handler` subclass.
        host: the address to listen on.
        port: the port; 0 picks a free one (see `Server.port`).
        process_request: called with the handshake `Request` before accepting;
            return None to go on or a `Response` to answer instead (for path
            routing and authentication). May be a coroutine function.
        subprotocols: subprotocols this server speaks, in order of preference.
        compression: "deflate" to accept permessage-deflate offers, None to decline.
        ssl: an SSLContext for wss:// (see `tether.tls.server_context`).
        open_timeout: seconds a client has to complete the handshake.
        ping_interval, ping_timeout, close_timeout, max_size, max_queue,
            write_limit: as for `tether.ws.connect`.
        sock: an already listening socket to use instead of host and port.
        backlog: the listen backlog.
    """

    def __init__(
        self,
        handler: ConnectionHandler,
        host: str | None = "127.0.0.1",
        port: int | None = 0,
        *,
        process_request: ProcessRequest | None = None,
        subprotocols: Sequence[str] = (),
        compression: Literal["deflate"] | None = "deflate",
        ssl: ssl_module.SSLContext | None = None,
        open_timeout: float | None = 10.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        close_timeout: float = 10.0,
        max_size: int | None = 2**20,
        max_queue: int = 32,
        write_limit: int = 2**16,
        sock: socket.socket | None = None,
        backlog: int = 1024,
    ) -> None:
        # The same server as one that does not listen; start() makes it listen.
        self._server = upgrade_server(
            handler,
            process_request=process_request,
            subprotocols=subprotocols,
            compression=compression,
            open_timeout=open_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            max_size=max_size,
            max_queue=max_queue,
            write_limit=write_limit,
        )
        self._listen: dict[str, Any] = {
            "host": host,
            "port": port,
            "ssl": ssl,
            "sock": sock,
            "backlog": backlog,
        }

    async def _start(self) -> Server:
        loop = asyncio.get_running_loop()
        listen = dict(self._listen)
        if listen["sock"] is not None:
            listen.pop("host")
            listen.pop("port")
        server = self._server
        server._server = await loop.create_server(server._protocol, **listen)
        server._port = int(server.sockets[0].getsockname()[1])
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
        self._server.close()
        await self._server.wait_closed()
