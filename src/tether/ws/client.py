"""The asyncio WebSocket client: `connect()`, once or reconnecting."""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
from collections.abc import AsyncIterator, Generator, Sequence
from types import TracebackType
from typing import Any, Literal

from tether import tls
from tether.backoff import Backoff
from tether.errors import ConnectionClosed, HandshakeError, Timeout
from tether.ws.connection import Handler, WebSocket
from tether.ws.deflate import DeflateParams
from tether.ws.protocol import ClientConnection, HandshakeComplete
from tether.ws.uri import parse_uri

__all__ = ["ClientWebSocket", "connect"]

logger = logging.getLogger("tether.ws")


class ClientWebSocket(WebSocket):
    """The client side of a WebSocket connection; see `WebSocket`."""

    __slots__ = ("_opened",)

    _core: ClientConnection

    def __init__(self, core: ClientConnection, handler: Handler | None = None, **kwargs: Any) -> None:
        super().__init__(core, **kwargs)
        self._callbacks = handler
        # Resolved when the handshake ends; dropped by connect() once it has seen it.
        self._opened: asyncio.Future[None] | None = self._loop.create_future()

    def _handshake_event(self, event: object) -> None:
        if isinstance(event, HandshakeComplete):
            self.subprotocol = self._core.subprotocol
            self._start()
            if self._opened is not None and not self._opened.done():
                self._opened.set_result(None)
            if self._callbacks is not None:
                # Before the frames that came with the response: they go to on_message.
                self._open_callbacks()

    def _closed_while_connecting(self) -> None:
        error = self._core.handshake_error
        if error is not None and self._opened is not None and not self._opened.done():
            self._opened.set_exception(error)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._opened is not None and not self._opened.done():
            error = ConnectionClosed(1006, "connection lost during the handshake")
            error.__cause__ = exc
            self._opened.set_exception(error)


def _is_permanent(exc: BaseException) -> bool:
    """Whether a failed connection attempt should not be retried."""
    if isinstance(exc, HandshakeError):
        return 400 <= exc.status < 500 and exc.status not in (408, 429)
    return isinstance(exc, (ValueError, ssl_module.SSLCertVerificationError))


class connect:
    """Open a WebSocket client connection.

    ``await connect(uri)`` and ``async with connect(uri) as ws`` open one
    connection. ``async for ws in connect(uri)`` reconnects for ever with
    jittered exponential backoff (from backoff_min doubling to backoff_max)
    after each lost connection or transient failure, and raises permanent
    errors: an invalid URI, a 4xx answer to the handshake, a certificate that
    does not verify.

    Args:
        uri: ``ws://`` or ``wss://`` URI; ``user:pass@`` becomes Basic auth.
        subprotocols: subprotocols to offer.
        headers: more request headers, as pairs or a dict.
        origin: an Origin header.
        compression: "deflate" to offer permessage-deflate, None for none.
        ssl: an SSLContext (see `tether.tls.client_context`) for wss://; by
            default one that verifies against the system store or certifi.
        server_hostname: the name for SNI and verification; default the URI's host.
        open_timeout: seconds for TCP, TLS and the handshake together.
        ping_interval: seconds between keepalive pings; None disables them.
        ping_timeout: seconds to wait for a Pong before failing with 1011.
        close_timeout: seconds to wait for the closing handshake.
        max_size: the largest message accepted (1009 beyond); None: no limit.
        max_queue: messages received but not yet read before reading pauses.
        write_limit: the write buffer's high-water mark, in bytes.
        backoff_min: the first reconnect delay, in seconds.
        backoff_max: the largest reconnect delay, in seconds.
        handler: a `Handler` whose callbacks get this connection's events
            (each connection's, when reconnecting) instead of `recv()`.
    """

    def __init__(
        self,
        uri: str,
        *,
        subprotocols: Sequence[str] | None = None,
        headers: Sequence[tuple[str, str]] | dict[str, str] | None = None,
        origin: str | None = None,
        compression: Literal["deflate"] | None = None,
        ssl: ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
        open_timeout: float | None = 10.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        close_timeout: float = 10.0,
        max_size: int | None = 2**20,
        max_queue: int = 32,
        write_limit: int = 2**16,
        backoff_min: float = 1.0,
        backoff_max: float = 60.0,
        handler: Handler | None = None,
    ) -> None:
        if compression not in (None, "deflate"):
            raise ValueError(f"unsupported compression {compression!r}")
        self.uri = parse_uri(uri)
        if ssl is not None and not self.uri.secure:
            raise ValueError("ssl given for a ws:// URI")
        self._subprotocols = list(subprotocols or ())
        self._headers = self.uri.request_headers(headers)
        self._origin = origin
        self._deflate = DeflateParams() if compression == "deflate" else None
        self._ssl = ssl
        self._server_hostname = server_hostname
        self._open_timeout = open_timeout
        self._ws_kwargs: dict[str, Any] = {
            "ping_interval": ping_interval,
            "ping_timeout": ping_timeout,
            "close_timeout": close_timeout,
            "max_queue": max_queue,
            "write_limit": write_limit,
        }
        self._max_size = max_size
        self._backoff = Backoff(backoff_min, backoff_max)
        self._ws: ClientWebSocket | None = None
        self._handler = handler

    async def _open(self) -> ClientWebSocket:
        uri = self.uri
        ssl_ctx: ssl_module.SSLContext | None = None
        if uri.secure:
            ssl_ctx = self._ssl if self._ssl is not None else tls.client_context()
        core = ClientConnection(
            uri.host_header,
            uri.path,
            origin=self._origin,
            subprotocols=self._subprotocols,
            headers=self._headers,
            deflate=self._deflate,
            max_message_size=self._max_size,
        )
        loop = asyncio.get_running_loop()

        async def open_() -> ClientWebSocket:
            _, protocol = await loop.create_connection(
                lambda: ClientWebSocket(core, self._handler, **self._ws_kwargs),
                uri.host,
                uri.port,
                ssl=ssl_ctx,
                server_hostname=(self._server_hostname or uri.host) if ssl_ctx else None,
            )
            opened = protocol._opened
            assert opened is not None
            try:
                await opened
            except BaseException:
                if protocol._transport is not None:
                    protocol._transport.abort()
                raise
            protocol._opened = None  # an open connection needs it no more
            return protocol

        try:
            return await asyncio.wait_for(open_(), self._open_timeout)
        except asyncio.TimeoutError as exc:
            raise Timeout(f"opening {uri.host}:{uri.port} timed out after {self._open_timeout} s") from exc

    def __await__(self) -> Generator[Any, None, ClientWebSocket]:
        return self._open().__await__()

    async def __aenter__(self) -> ClientWebSocket:
        self._ws = await self._open()
        return self._ws

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._ws is not None
        await self._ws.close()

    def __aiter__(self) -> AsyncIterator[ClientWebSocket]:
        return self._reconnect()

    async def _reconnect(self) -> AsyncIterator[ClientWebSocket]:
        backoff = self._backoff
        while True:
            try:
                ws = await self._open()
            except Exception as exc:
                if _is_permanent(exc):
                    raise
                delay = backoff.next()
                logger.info("connecting to %s failed (%s); retrying in %.1f s", self.uri.host, exc, delay)
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            try:
                yield ws
            finally:
                await ws.close()
            # The connection ended: wait a little before dialing again, as after a failure.
            await asyncio.sleep(backoff.next())
