"""The asyncio MQTT client: `Client`.

Theory of operation
-------------------
A `Client` owns one MQTT session (a `tether.mqtt.protocol.Connection`) and, while
connected, one link: a TCP or TLS connection (``mqtt://``, ``mqtts://``) or a WebSocket
carrying binary messages (``ws://``, ``wss://``, subprotocol ``mqtt``). Bytes read from
the link go to the core; events from the core resolve the futures that `publish()`,
`subscribe()` and `unsubscribe()` wait on, and fill the queues of `messages()`.

Writes are batched: calls made in one turn of the event loop go out in one write at
the end of it. With a store (the durable outbox, `tether.mqtt.store`), the session
changes of a batch are committed to the file before its bytes are written.

After the first successful connect, a lost link is reopened with jittered exponential
backoff (``reconnect=True``). The session is resumed when the server kept it; when it
did not, the client subscribes again to what it was subscribed to. Publishes made while
the link is down wait in the session (QoS 1 and 2) or until the link is up (QoS 0).

Backpressure, never unbounded queues: a publish waits while ``max_pending`` QoS 1/2
publishes wait for a send slot or the outbox is full, and while the link's write buffer
is full; reading stops while a `messages()` queue is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import secrets
import socket
import ssl as ssl_module
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from types import MappingProxyType, TracebackType
from typing import Any, Final, cast
from urllib.parse import unquote, urlsplit

from tether import tls
from tether.backoff import Backoff
from tether.errors import ConnectionClosed, HandshakeError, InvalidState, ProtocolError, Refused, Timeout
from tether.mqtt.packets import (
    DEFAULT_MAX_SIZE,
    MQTT_3_1_1,
    MQTT_5,
    ConnectReturnCode,
    Properties,
    ReasonCode,
    Subscription,
    Will,
    topic_matches,
    validate_filter,
)
from tether.mqtt.protocol import (
    Connected,
    ConnectFailed,
    Connection,
    Disconnected,
    Message,
    PendingQueueFull,
    Published,
    State,
    Subscribed,
    Unsubscribed,
)
from tether.mqtt.store import Outbox
from tether.ws.uri import without_userinfo

__all__ = ["Client", "MessageStream"]

logger = logging.getLogger("tether.mqtt")

_DEFAULT_PORTS: Final = {"mqtt": 1883, "mqtts": 8883, "ws": 80, "wss": 443}
# CONNACK codes that another try cannot fix (3.1.1 §3.2.2.3, 5.0 §3.2.2.2).
_PERMANENT_REFUSALS: Final = frozenset(
    {
        ConnectReturnCode.UNACCEPTABLE_PROTOCOL_VERSION,
        ConnectReturnCode.IDENTIFIER_REJECTED,
        ConnectReturnCode.BAD_USER_NAME_OR_PASSWORD,
        ConnectReturnCode.NOT_AUTHORIZED,
        ReasonCode.UNSUPPORTED_PROTOCOL_VERSION,
        ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
        ReasonCode.BAD_USER_NAME_OR_PASSWORD,
        ReasonCode.NOT_AUTHORIZED,
        ReasonCode.BANNED,
        ReasonCode.BAD_AUTHENTICATION_METHOD,
    }
)

# Bytes of QoS 0 publishes made in one turn of the loop that are written at once, without
# waiting for the end of the turn.
_EARLY_WRITE: Final = 2**16

# Each table and list of a client that is empty is one of these two read-only objects,
# replaced by a dict or list at the first entry: an idle connection holds no empty
# containers (64 and 56 bytes each). Writing to them raises instead of sharing state.
_NO_ENTRIES: Final = cast("dict[Any, Any]", MappingProxyType({}))
_NO_ITEMS: Final = cast("list[Any]", ())

Payload = bytes | bytearray | memoryview | str
OnConnect = Callable[["Client", Connected], object]
OnDisconnect = Callable[["Client", BaseException | None], object]
OnMessage = Callable[[Message], object]


def _describe(code: int, version: int) -> str:
    try:
        name = ConnectReturnCode(code).name if version == MQTT_3_1_1 else ReasonCode(code).name
    except ValueError:
        name = "unknown"
    return f"{name.lower().replace('_', ' ')} (0x{code:02x})"


def _payload(data: Payload) -> bytes:
    if isinstance(data, str):
        return data.encode()
    return bytes(data)


# --- links: one network connection each ------------------------------------------------------


class _Link:
    """What the client needs of a network connection."""

    __slots__ = ()

    @property
    def paused(self) -> bool:
        """True while the write buffer is over the client's ``write_limit``."""
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    async def drain(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def pause_reading(self) -> None:
        raise NotImplementedError

    def resume_reading(self) -> None:
        raise NotImplementedError


class _StreamLink(_Link, asyncio.Protocol):
    """MQTT over TCP or TLS."""

    __slots__ = (
        "_client",
        "_drainers",
        "_lost",
        "_paused",
        "_transport",
    )

    def __init__(self, client: Client) -> None:
        self._client = client
        self._transport: asyncio.Transport | None = None
        self._drainers: list[asyncio.Future[None]] = []
        self._lost = False
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = tcp = cast(asyncio.Transport, transport)
        tcp.set_write_buffer_limits(self._client.write_limit)
        sock = tcp.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self._client._received(self, data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._wake()
        self._client._link_lost(self, exc)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake()

    def _wake(self) -> None:
        for waiter in self._drainers:
            if not waiter.done():
                waiter.set_result(None)
        self._drainers.clear()

    def write(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)

    async def drain(self) -> None:
        if self._paused and not self._lost:
            waiter = asyncio.get_running_loop().create_future()
            self._drainers.append(waiter)
            await waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def pause_reading(self) -> None:
        if self._transport is not None and not self._lost:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self._lost:
            self._transport.resume_reading()


class _WebSocketLink(_Link):
    """MQTT over WebSocket (MQTT 5.0 §6): binary messages carrying the byte stream.

    No task per connection: the WebSocket hands each message to `_message` as it arrives
    (`set_message_handler`), and the end of the connection is a done-callback on the future
    it resolves when the TCP connection is gone. Pausing reading pauses the transport, as
    for TCP; a message already read in the same chunk is still handed over.
    """

    __slots__ = (
        "_client",
        "_error",
        "_ws",
    )

    def __init__(self, client: Client, ws: Any) -> None:
        from tether.ws.client import ClientWebSocket

        assert isinstance(ws, ClientWebSocket)
        self._client = client
        self._ws = ws
        # Why reading stopped before the connection closed: a text message, or _received raised.
        self._error: Exception | None = None
        ws.set_message_handler(self._message)
        ws._lost.add_done_callback(self._closed)

    def _message(self, message: str | bytes) -> None:
        if self._error is not None:
            return  # the connection is being closed; nothing more is read
        if isinstance(message, str):
            # 5.0 §6 [MQTT-6.0.0-1]: a text message closes the connection.
            self._error = ProtocolError("text message on an MQTT WebSocket")
            asyncio.get_running_loop().create_task(self._ws.close(1002, "text message"))
            return
        try:
            self._client._received(self, message)
        except Exception as exc:
            # As asyncio does for a protocol's data_received(): end the connection. The
            # WebSocket logs the exception.
            self._error = exc
            self.abort()
            raise

    def _closed(self, _: asyncio.Future[None]) -> None:
        error: BaseException | None = self._error
        if error is None:
            closed = self._ws._closed_exc()
            error = None if closed.ok else closed
        self._client._link_lost(self, error)

    @property
    def paused(self) -> bool:
        return bool(self._ws._writing_paused)

    def write(self, data: bytes) -> None:
        with contextlib.suppress(ConnectionClosed):
            self._ws.send_nowait(data)

    async def drain(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._ws.drain()

    def close(self) -> None:
        asyncio.get_running_loop().create_task(self._ws.close())

    def abort(self) -> None:
        transport = self._ws._transport
        if transport is not None:
            transport.abort()

    def pause_reading(self) -> None:
        transport = self._ws._transport
        if transport is not None and not transport.is_closing():
            transport.pause_reading()

    def resume_reading(self) -> None:
        transport = self._ws._transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()


# --- message streams -------------------------------------------------------------------------


class MessageStream:
    """Messages whose topic matches a filter, in the order they arrived.

    Made by `Client.messages()`; iterate with ``async for``. It collects messages from
    the moment it is made, so make it before subscribing. When ``max_queue`` messages
    wait unread, the client stops reading from the network until some are read.
    Iteration ends after `Client.disconnect()`, or raises the error that ended the
    client. ``close()`` (or leaving ``async with``) stops collecting.
    """

    __slots__ = (
        "_client",
        "_end",
        "_ended",
        "_full",
        "_queue",
        "_waiter",
        "filter",
        "max_queue",
    )

    def __init__(self, client: Client, filter: str | None, max_queue: int) -> None:
        if filter is not None:
            validate_filter(filter)
        if max_queue < 1:
            raise ValueError(f"max_queue {max_queue} is below 1")
        self.filter = filter
        self.max_queue = max_queue
        self._client = client
        self._queue: deque[Message] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._end: BaseException | None = None
        self._ended = False
        self._full = False

    def _put(self, message: Message) -> None:
        self._queue.append(message)
        if len(self._queue) >= self.max_queue and not self._full:
            self._full = True
            self._client._stream_full(True)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _finish(self, error: BaseException | None) -> None:
        self._ended = True
        self._end = error
        self._wake()

    def __len__(self) -> int:
        return len(self._queue)

    def __aiter__(self) -> MessageStream:
        return self

    async def __anext__(self) -> Message:
        while not self._queue:
            if self._ended:
                if self._end is not None:
                    raise self._end
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        message = self._queue.popleft()
        if self._full and len(self._queue) <= self.max_queue // 2:
            self._full = False
            self._client._stream_full(False)
        return message

    async def get(self, timeout: float | None = None) -> Message:
        """The next message; raises `Timeout` after ``timeout`` seconds.

        Raises:
            StopAsyncIteration: once the stream ended.
        """
        try:
            return await asyncio.wait_for(self.__anext__(), timeout)
        except asyncio.TimeoutError as exc:
            raise Timeout(f"no message within {timeout} s") from exc

    def close(self) -> None:
        """Stop collecting messages; what was collected can still be read."""
        self._client._remove_stream(self)
        if self._full:
            self._full = False
            self._client._stream_full(False)
        self._finish(None)

    async def __aenter__(self) -> MessageStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


# --- the client ------------------------------------------------------------------------------


class Client:
    """An MQTT 3.1.1 or 5.0 client on asyncio.

    Args:
        url: ``mqtt://host[:1883]``, ``mqtts://host[:8883]``, ``ws://host[:80]/path`` or
            ``wss://host[:443]/path``; ``user:password@`` sets username and password.
        client_id: the client identifier; None makes one (kept in the store, if any).
        version: 5 (MQTT 5.0) or 4 (MQTT 3.1.1).
        keepalive: seconds between packets before a PINGREQ; 0 turns keep alive off.
        clean_start: start a new session at the first connect (later connects resume).
        session_expiry: seconds the server keeps the session after a disconnect (5.0);
            3.1.1 keeps it while ``clean_start`` is False.
        username, password: credentials.
        will: the will message.
        ssl: an SSLContext for mqtts:// and wss:// (see `tether.tls.client_context`); by
            default one that verifies the server against the system store or certifi.
        server_hostname: the name for SNI and certificate checks; default the URL's host.
        store: a path for the durable outbox (`tether.mqtt.store.Outbox`), or an Outbox.
        reconnect: reopen a lost connection, with backoff from ``backoff_min`` doubling
            to ``backoff_max`` seconds.
        connect_timeout: seconds for TCP, TLS, WebSocket handshake and CONNACK together.
        max_pending: QoS 1/2 publishes that may wait for a send slot before `publish()`
            waits.
        receive_maximum: incoming QoS 1/2 publishes unacknowledged at once (5.0).
        max_packet_size: the largest incoming packet accepted.
        properties: further CONNECT properties (5.0).
        write_limit: bytes in the write buffer above which `publish()` waits.
        on_connect: called with the client and the `Connected` event after each CONNACK.
        on_disconnect: called with the client and the error (None for a clean close)
            after each lost connection.
        on_message: called with each message that no `messages()` stream takes.

    Raises:
        ValueError: for a bad URL or argument.
    """

    __slots__ = (
        "_backoff",
        "_client_id",
        "_closing",
        "_connack",
        "_connected_waiters",
        "_core",
        "_core_args",
        "_ended",
        "_error",
        "_flush_handle",
        "_full_streams",
        "_link",
        "_loop",
        "_lost",
        "_publish_turn",
        "_publishers_waiting",
        "_publishes",
        "_reconnect_handle",
        "_reconnect_task",
        "_requests",
        "_response_subscribed",
        "_response_topic",
        "_responses",
        "_server_hostname",
        "_shown_url",
        "_space_waiters",
        "_ssl",
        "_started",
        "_store",
        "_store_arg",
        "_streams",
        "_subscriptions",
        "_timer",
        "_timer_when",
        "_unwritten",
        "_unwritten_size",
        "_up",
        "clean_start",
        "connect_timeout",
        "host",
        "keepalive",
        "on_connect",
        "on_disconnect",
        "on_message",
        "path",
        "port",
        "reconnect",
        "scheme",
        "session_expiry",
        "url",
        "version",
        "write_limit",
    )

    def __init__(
        self,
        url: str,
        *,
        client_id: str | None = None,
        version: int = MQTT_5,
        keepalive: int = 60,
        clean_start: bool = True,
        session_expiry: int = 0,
        username: str | None = None,
        password: str | bytes | None = None,
        will: Will | None = None,
        ssl: ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
        store: str | os.PathLike[str] | Outbox | None = None,
        reconnect: bool = True,
        backoff_min: float = 1.0,
        backoff_max: float = 60.0,
        connect_timeout: float = 10.0,
        max_pending: int = 1000,
        receive_maximum: int = 0xFFFF,
        max_packet_size: int = DEFAULT_MAX_SIZE,
        properties: Properties | None = None,
        write_limit: int = 2**16,
        on_connect: OnConnect | None = None,
        on_disconnect: OnDisconnect | None = None,
        on_message: OnMessage | None = None,
    ) -> None:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        shown = without_userinfo(url)  # what logs and errors show: never the password
        if scheme not in _DEFAULT_PORTS:
            raise ValueError(f"URL {shown!r} is not mqtt://, mqtts://, ws:// or wss://")
        if not parts.hostname:
            raise ValueError(f"URL {shown!r} has no host")
        if version not in (MQTT_3_1_1, MQTT_5):
            raise ValueError(f"MQTT version {version!r} is not 4 (3.1.1) or 5 (5.0)")
        if ssl is not None and scheme in ("mqtt", "ws"):
            raise ValueError(f"ssl given for a {scheme}:// URL")
        self.url = url
        self._shown_url = shown
        self.scheme = scheme
        self.host = parts.hostname
        self.port = parts.port or _DEFAULT_PORTS[scheme]
        self.path = parts.path or "/"
        if parts.query:
            self.path += "?" + parts.query
        if username is None and parts.username:
            username = unquote(parts.username)
            if password is None and parts.password is not None:
                password = unquote(parts.password)
        self.version = version
        self.keepalive = keepalive
        self.clean_start = clean_start
        self.session_expiry = session_expiry
        self.reconnect = reconnect
        self.connect_timeout = connect_timeout
        self.write_limit = write_limit
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.on_message = on_message
        self._ssl = ssl
        self._server_hostname = server_hostname
        self._backoff = Backoff(backoff_min, backoff_max)
        self._store_arg = store
        self._store: Outbox | None = None
        connect_props = properties
        if version == MQTT_5 and session_expiry:
            connect_props = replace(properties or Properties(), session_expiry_interval=session_expiry)
        # The session's arguments, until connect() makes it.
        self._core_args: dict[str, Any] | None = {
            "version": version,
            "keepalive": keepalive,
            "clean_start": clean_start,
            "username": username,
            "password": password.encode() if isinstance(password, str) else password,
            "will": will,
            "connect_properties": connect_props,
            "receive_maximum": receive_maximum,
            "max_packet_size": max_packet_size,
            "max_pending": max_pending,
        }
        self._client_id = client_id
        self._core: Connection | None = None
        self._link: _Link | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # No task runs while connected: a lost link schedules a reconnect (a timer), which
        # runs a task only while it opens the link (see _link_lost()).
        self._reconnect_handle: asyncio.TimerHandle | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        # Pending only while a link is opened: resolved by CONNACK or the link's loss.
        self._connack: asyncio.Future[Connected] | None = None
        # Made by disconnect() to wait for the link to close.
        self._lost: asyncio.Future[BaseException | None] | None = None
        self._connected_waiters: list[asyncio.Future[None]] = _NO_ITEMS
        self._space_waiters: list[asyncio.Future[None]] = _NO_ITEMS
        self._publish_turn: asyncio.Lock | None = None  # made when a publish first waits
        # Publishes accepted since the last write to the outbox (see _flush()).
        self._unwritten = 0
        self._unwritten_size = 0
        self._publishers_waiting = 0
        self._publishes: dict[int, asyncio.Future[int]] = _NO_ENTRIES
        # SUBSCRIBE/UNSUBSCRIBE waiting for their answer: packet id -> (future, request).
        self._requests: dict[int, tuple[asyncio.Future[Any], tuple[Any, ...]]] = _NO_ENTRIES
        self._subscriptions: dict[str, tuple[Subscription, Properties | None]] = _NO_ENTRIES
        self._streams: list[MessageStream] = _NO_ITEMS
        self._full_streams = 0
        self._responses: dict[bytes, asyncio.Future[Message]] = _NO_ENTRIES
        self._response_topic: str | None = None
        self._response_subscribed: asyncio.Future[tuple[int, ...]] | None = None
        self._up = False  # connected, as on_disconnect sees it
        self._flush_handle: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0
        self._closing = False
        self._ended = False
        self._error: BaseException | None = None
        self._started = False

    # --- properties --------------------------------------------------------------------------

    @property
    def client_id(self) -> str | None:
        """The client identifier in use (the server's, when it assigned one)."""
        return self._core.client_id if self._core is not None else self._client_id

    @property
    def is_connected(self) -> bool:
        """True between a CONNACK and the loss of that connection."""
        return self._core is not None and self._core.state is State.CONNECTED

    @property
    def store(self) -> Outbox | None:
        """The durable outbox, once connected with one."""
        return self._store

    @property
    def session(self) -> Connection:
        """The session core, for inspection (e.g. ``pending()``); do not drive it.

        Raises:
            InvalidState: before `connect()`.
        """
        if self._core is None:
            raise InvalidState("the client has not connected yet")
        return self._core

    # --- connecting --------------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.disconnect()

    async def connect(self) -> Connected:
        """Connect, and keep the connection up in the background (``reconnect``).

        Returns:
            The `Connected` event of the first CONNACK.

        Raises:
            Refused: the server refused the connection (bad credentials, ...).
            Timeout: no CONNACK within ``connect_timeout``.
            OSError, ssl.SSLError, HandshakeError: the connection could not be opened.
            InvalidState: if called twice.
        """
        if self._started:
            raise InvalidState("connect() was already called")
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._open_session()
        try:
            connected = await self._open(self.clean_start)
        except BaseException as exc:
            self._end(exc)
            await self._stop()
            raise
        self._backoff.reset()
        return connected

    def _open_session(self) -> None:
        store = self._store_arg
        if store is not None and not isinstance(store, Outbox):
            store = Outbox(store)
        self._store = store
        client_id = self._client_id
        if store is not None and client_id is None:
            client_id = store.client_id
        if client_id is None:
            client_id = "tether-" + secrets.token_hex(6)
        if store is not None:
            store.claim(client_id)
        self._client_id = client_id
        assert self._core_args is not None
        core = Connection(client_id, track_changes=store is not None, **self._core_args)
        self._core_args = None
        if store is not None:
            pending, received = store.load()
            core.restore(pending, received)
        self._core = core

    def _retry_later(self, message: str, error: BaseException | None) -> None:
        delay = self._backoff.next()
        logger.info(message, self._shown_url, error, delay)
        assert self._loop is not None
        self._reconnect_handle = self._loop.call_later(delay, self._start_reconnect)

    def _start_reconnect(self) -> None:
        self._reconnect_handle = None
        if self._closing or self._loop is None:
            return
        self._reconnect_task = self._loop.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        # Later connects resume the session: 5.0 keeps it for session_expiry, 3.1.1
        # while clean_start is False (5.0 §3.1.2.4, 3.1.1 §3.1.2.4).
        clean_start = self.clean_start if self.version == MQTT_3_1_1 else False
        try:
            await self._open(clean_start)
        except Exception as exc:
            if self._closing:
                return
            if not self.reconnect or _is_permanent(exc):
                self._end(exc)
                return
            self._retry_later("connecting to %s failed (%s); next try in %.1f s", exc)
        else:
            self._backoff.reset()
        finally:
            self._reconnect_task = None

    async def _open(self, clean_start: bool) -> Connected:
        loop = asyncio.get_running_loop()
        core = self.session
        self._connack = loop.create_future()
        opened: list[_Link] = []

        async def open_() -> Connected:
            link = await self._open_link()
            opened.append(link)
            core.connect(loop.time(), clean_start=clean_start)
            self._link = link
            self._flush()
            assert self._connack is not None
            return await self._connack

        try:
            return await asyncio.wait_for(open_(), self.connect_timeout)
        except BaseException as exc:
            for link in opened:
                link.abort()
            if core.state is not State.DISCONNECTED:
                core.connection_lost()
            self._link = None
            if isinstance(exc, asyncio.TimeoutError):
                raise Timeout(
                    f"connecting to {self._shown_url} timed out after {self.connect_timeout} s"
                ) from exc
            raise
        finally:
            self._connack = None  # the Connected event is not kept

    async def _open_link(self) -> _Link:
        loop = asyncio.get_running_loop()
        secure = self.scheme in ("mqtts", "wss")
        context = (self._ssl or tls.client_context()) if secure else None
        hostname = (self._server_hostname or self.host) if secure else None
        if self.scheme in ("mqtt", "mqtts"):
            _, protocol = await loop.create_connection(
                lambda: _StreamLink(self), self.host, self.port, ssl=context, server_hostname=hostname
            )
            return protocol
        from tether.ws import connect as ws_connect

        host = f"[{self.host}]" if ":" in self.host else self.host
        ws_url = f"{self.scheme}://{host}:{self.port}{self.path}"
        max_packet = self.session.max_packet_size
        ws = await ws_connect(
            ws_url,
            subprotocols=["mqtt"],
            ssl=context,
            server_hostname=hostname,
            open_timeout=None,
            ping_interval=None,  # MQTT's keep alive does this
            max_size=max(2 * max_packet, 2**16),
            write_limit=self.write_limit,
        )
        if ws.subprotocol != "mqtt":
            await ws.close(1002, "subprotocol mqtt needed")
            raise ProtocolError(f"the server at {ws_url} did not agree to subprotocol mqtt")
        return _WebSocketLink(self, ws)

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the client is connected (at once if it is).

        Raises:
            Timeout: after ``timeout`` seconds.
            the error that ended the client, if it ended.
        """
        if self.is_connected:
            return
        self._check_usable()
        assert self._loop is not None
        waiter = self._loop.create_future()
        if self._connected_waiters is _NO_ITEMS:
            self._connected_waiters = []
        self._connected_waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError as exc:
            raise Timeout(f"not connected within {timeout} s") from exc

    def _check_usable(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closing:
            raise InvalidState("the client is disconnected")
        if self._core is None:
            raise InvalidState("the client has not connected yet: use connect() or async with")

    # --- disconnecting -----------------------------------------------------------------------

    async def disconnect(
        self, reason_code: int = ReasonCode.NORMAL_DISCONNECTION, *, timeout: float = 5.0
    ) -> None:
        """Send DISCONNECT, close the connection and stop reconnecting.

        Publishes not yet done fail with `ConnectionClosed` (they stay in the outbox, if
        any, and are sent after the next connect); `messages()` streams end.

        Args:
            reason_code: 0 for a normal disconnection; 4 (5.0) asks the server to send
                the will.
            timeout: seconds to wait for the connection to close.
        """
        if self._closing:
            return
        self._closing = True
        core = self._core
        link = self._link
        if core is not None and link is not None and core.state in (State.CONNECTING, State.CONNECTED):
            core.disconnect(reason_code if self.version == MQTT_5 else 0)
            self._flush()
            link.close()
            if self._link is link:
                assert self._loop is not None
                self._lost = lost = self._loop.create_future()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(lost), timeout)
                self._lost = None
            if self._link is link:
                link.abort()
        await self._stop()

    async def _stop(self) -> None:
        if self._reconnect_handle is not None:
            self._reconnect_handle.cancel()
            self._reconnect_handle = None
        task = self._reconnect_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._link is not None:
            self._link.abort()
            self._link = None
        self._end(None)

    def _end(self, error: BaseException | None) -> None:
        # The client is finished: nothing waits any more.
        self._closing = True
        if self._ended:
            return
        self._ended = True
        if self._error is None:
            self._error = error
        closed = error or ConnectionClosed(1000, "the client disconnected")
        for waiters in (self._connected_waiters, self._space_waiters):
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(closed)
        self._connected_waiters = self._space_waiters = _NO_ITEMS
        for future in (*self._publishes.values(), *(f for f, _ in self._requests.values())):
            if not future.done():
                future.set_exception(closed)
        for response in self._responses.values():
            if not response.done():
                response.set_exception(closed)
        self._publishes = self._requests = self._responses = _NO_ENTRIES
        for stream in self._streams:
            stream._finish(error)
        self._streams = _NO_ITEMS
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._reconnect_handle is not None:
            self._reconnect_handle.cancel()
            self._reconnect_handle = None
        if self._store is not None:
            if self._core is not None:
                with contextlib.suppress(Exception):
                    self._store.apply(self._core.session_changes())
            if not isinstance(self._store_arg, Outbox):
                self._store.close()

    # --- the link's callbacks ----------------------------------------------------------------

    def _received(self, link: _Link, data: bytes | bytearray | memoryview) -> None:
        core = self._core
        if link is not self._link or core is None or self._loop is None:
            return
        core.receive_data(data, self._loop.time())
        self._handle_events()
        self._flush()
        if core.state is State.CLOSED:
            if core.error is not None:
                logger.warning("closing the connection to %s: %s", self._shown_url, core.error)
            link.close()

    def _link_lost(self, link: _Link, exc: BaseException | None) -> None:
        if link is not self._link:
            return
        self._link = None
        core = self.session
        error: BaseException | None = core.error or exc
        if error is None and core.state is not State.CLOSED and not self._closing:
            error = ConnectionClosed(1006, "the connection dropped")
        was_connected, self._up = self._up, False
        core.connection_lost()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(error or ConnectionClosed(1006, "closed before CONNACK"))
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(error)
        if not was_connected:
            return  # lost while opening: the task that opens it fails, and decides
        logger.info("disconnected from %s: %s", self._shown_url, error or "closed")
        if self.on_disconnect is not None:
            self._callback(self.on_disconnect, self, error)
        if self._closing:
            return
        if not self.reconnect:
            self._end(error or ConnectionClosed(1000, "the server closed the connection"))
            return
        self._retry_later("connection to %s lost (%s); reconnecting in %.1f s", error)

    def _callback(self, function: Callable[..., object], *args: Any) -> None:
        try:
            result = function(*args)
            if inspect.isawaitable(result):
                assert self._loop is not None
                self._loop.create_task(_await(result))
        except Exception:
            logger.exception("MQTT callback %r failed", function)

    # --- events --------------------------------------------------------------------------------

    def _handle_events(self) -> None:
        core = self.session
        for event in core.events_received():
            if isinstance(event, Message):
                self._deliver(event)
            elif isinstance(event, Published):
                future = self._publishes.pop(event.packet_id, None) if self._publishes else None
                if future is not None and not future.done():
                    if event.reason_code >= 0x80:
                        future.set_exception(
                            Refused(
                                f"publish refused: {_describe(event.reason_code, MQTT_5)}", event.reason_code
                            )
                        )
                    else:
                        future.set_result(event.reason_code)
                self._wake_space()
            elif isinstance(event, (Subscribed, Unsubscribed)):
                entry = self._requests.pop(event.packet_id, None) if self._requests else None
                if entry is not None and not entry[0].done():
                    entry[0].set_result(event.reason_codes)
            elif isinstance(event, Connected):
                self._connected(event)
            elif isinstance(event, ConnectFailed):
                code = event.reason_code
                error = Refused(f"connection refused: {_describe(code, self.version)}", code)
                if self._connack is not None and not self._connack.done():
                    self._connack.set_exception(error)
            elif isinstance(event, Disconnected):
                reason = event.properties.reason_string
                detail = f" ({reason})" if reason else ""
                logger.info("the server disconnected: %s%s", _describe(event.reason_code, MQTT_5), detail)
            # PongReceived needs nothing; AuthReceived cannot happen without an
            # authentication method, which this client does not offer.

    def _connected(self, event: Connected) -> None:
        core = self.session
        if self._store is not None:
            self._store.claim(core.client_id)
        logger.info("connected to %s (session present: %s)", self._shown_url, event.session_present)
        self._up = True
        # Send again any SUBSCRIBE/UNSUBSCRIBE that was waiting for its answer, and when
        # the server has no subscriptions for us, make them again.
        waiting = list(self._requests.values())
        self._requests = _NO_ENTRIES
        if not event.session_present:
            for subscription, props in self._subscriptions.values():
                self._send_request(("subscribe", (subscription,), props), None)
        for future, request in waiting:
            self._send_request(request, future)
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(event)
        for waiter in self._connected_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._connected_waiters = _NO_ITEMS
        self._wake_space()
        if self.on_connect is not None:
            self._callback(self.on_connect, self, event)

    def _deliver(self, message: Message) -> None:
        correlation = message.properties.correlation_data
        if correlation is not None and message.topic == self._response_topic:
            future = self._responses.pop(correlation, None) if self._responses else None
            if future is not None and not future.done():
                future.set_result(message)
            return
        taken = False
        for stream in self._streams:
            if stream.filter is None or topic_matches(stream.filter, message.topic):
                stream._put(message)
                taken = True
        if not taken:
            if self.on_message is not None:
                self._callback(self.on_message, message)
            else:
                logger.debug("no stream takes the message on %r", message.topic)

    def _stream_full(self, full: bool) -> None:
        self._full_streams += 1 if full else -1
        link = self._link
        if link is None:
            return
        if full and self._full_streams == 1:
            link.pause_reading()
        elif not full and self._full_streams == 0:
            link.resume_reading()

    def _remove_stream(self, stream: MessageStream) -> None:
        if stream in self._streams:
            self._streams.remove(stream)

    def _wake_space(self) -> None:
        # Only the publish at the head of the line waits here (see publish()).
        waiters = self._space_waiters
        while waiters:
            waiter = waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)

    # --- writing -------------------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if self._flush_handle is None:
            assert self._loop is not None
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        core = self._core
        if core is None:
            return
        if self._store is not None:
            changes = core.session_changes()
            if changes:
                # Durable before the bytes that follow from these changes go out.
                self._store.apply(changes)
            self._unwritten = self._unwritten_size = 0
        data = core.data_to_send()
        link = self._link
        if data and link is not None:
            link.write(data)
        self._arm_timer()

    def _arm_timer(self) -> None:
        core = self._core
        deadline = core.next_deadline() if core is not None else None
        if deadline is None:
            return
        if self._timer is not None:
            if self._timer_when <= deadline:
                return  # an early tick is harmless; it re-arms
            self._timer.cancel()
        assert self._loop is not None
        self._timer_when = deadline
        self._timer = self._loop.call_at(deadline, self._tick)

    def _tick(self) -> None:
        self._timer = None
        core = self._core
        link = self._link
        if core is None or link is None or self._loop is None:
            return
        core.tick(self._loop.time())
        self._flush()
        if core.state is State.CLOSED:
            logger.warning("closing the connection to %s: %s", self._shown_url, core.error)
            link.abort()

    def _store_has_room(self, size: int) -> bool:
        store = self._store
        return store is None or store.has_room(
            size, unwritten=self._unwritten, unwritten_size=self._unwritten_size
        )

    async def _wait_space(self) -> None:
        self._check_usable()
        assert self._loop is not None
        waiter = self._loop.create_future()
        if self._space_waiters is _NO_ITEMS:
            self._space_waiters = []
        self._space_waiters.append(waiter)
        await waiter

    # --- the API -------------------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        payload: Payload = b"",
        qos: int = 0,
        retain: bool = False,
        *,
        properties: Properties | None = None,
    ) -> int:
        """Publish a message; return when its QoS flow is complete.

        QoS 0 returns once the message is written (waiting for a connection first, and
        while the write buffer is full). QoS 1 and 2 return when PUBACK or PUBCOMP
        arrives; made while the connection is down, they wait in the session (and in the
        outbox, with a store) and go out after the next connect.

        Args:
            topic: the topic name.
            payload: bytes, or str sent as UTF-8.
            qos: 0, 1 or 2.
            retain: ask the server to keep the message for later subscribers.
            properties: PUBLISH properties (5.0), e.g. ``message_expiry_interval``,
                ``content_type``, ``user_property``.

        Returns:
            The reason code of PUBACK/PUBCOMP (0 or 0x10 "no matching subscribers"), 0 at
            QoS 0.

        Raises:
            Refused: the server refused the message (reason code 0x80 or above).
            ValueError: for an invalid topic, QoS or properties.
            ConnectionClosed: the client was disconnected before the flow completed.
        """
        core = self._core
        if not qos:
            link = self._link
            if core is None or core.state is not State.CONNECTED or link is None:
                # Wait for the connection, then publish as usual.
                self._check_usable()
                await self.wait_connected()
                return await self.publish(topic, payload, 0, retain, properties=properties)
            assert self._loop is not None
            data0 = payload.encode() if isinstance(payload, str) else payload
            core.publish(topic, data0, 0, retain, properties, now=self._loop.time())
            if core.bytes_to_send >= _EARLY_WRITE:
                # A burst in one turn of the loop: write what it made so far, so that the
                # server works on it while more is made, and the write buffer's limit
                # (``link.paused``) holds the burst back.
                self._flush()
            elif self._flush_handle is None:
                self._flush_handle = self._loop.call_soon(self._flush)
            if link.paused:
                await link.drain()
            return 0
        self._check_usable()
        data = _payload(payload)
        core = self.session
        size = len(topic.encode()) + len(data)
        store = self._store
        packet_id: int | None = None
        if not self._publishers_waiting and self._store_has_room(size):
            with contextlib.suppress(PendingQueueFull):
                packet_id = core.publish(topic, data, qos, retain, properties)
        if packet_id is None:
            # No room: wait in line. Publishes keep the order in which they were made,
            # and only the one at the head of the line waits for room.
            self._publishers_waiting += 1
            if self._publish_turn is None:
                self._publish_turn = asyncio.Lock()
            try:
                async with self._publish_turn:
                    while True:
                        if not self._store_has_room(size):
                            await self._wait_space()
                            continue
                        try:
                            packet_id = core.publish(topic, data, qos, retain, properties)
                        except PendingQueueFull:
                            await self._wait_space()
                            continue
                        break
            finally:
                self._publishers_waiting -= 1
        if store is not None:
            self._unwritten += 1
            self._unwritten_size += size
        assert packet_id is not None and self._loop is not None
        future: asyncio.Future[int] = self._loop.create_future()
        if self._publishes is _NO_ENTRIES:
            self._publishes = {}
        self._publishes[packet_id] = future
        self._schedule_flush()
        link = self._link
        if link is not None and link.paused:
            await link.drain()
        return await future

    async def subscribe(
        self,
        subscriptions: str | Subscription | Sequence[str | Subscription | tuple[str, int]],
        qos: int = 0,
        *,
        properties: Properties | None = None,
    ) -> tuple[int, ...]:
        """Subscribe; return when SUBACK arrives. The client keeps the subscription
        across reconnects (it subscribes again when the server lost the session).

        Args:
            subscriptions: a filter, a `Subscription` (with 5.0 options such as
                ``no_local``), or a list of them or of (filter, qos) pairs.
            qos: the QoS for filters given as strings.
            properties: SUBSCRIBE properties (5.0), e.g. ``subscription_identifier``.

        Returns:
            The granted QoS of each subscription.

        Raises:
            Refused: the server refused a subscription (its reason code, 0x80 or above).
            ValueError: for an invalid filter or options.
        """
        self._check_usable()
        items: list[Subscription] = []
        listed = [subscriptions] if isinstance(subscriptions, (str, Subscription)) else subscriptions
        for item in listed:
            if isinstance(item, Subscription):
                items.append(item)
            elif isinstance(item, str):
                items.append(Subscription(item, qos))
            else:
                items.append(Subscription(item[0], item[1]))
        if not items:
            raise ValueError("subscribe() needs at least one subscription")
        for sub in items:
            validate_filter(sub.filter)
            if sub.qos not in (0, 1, 2):
                raise ValueError(f"qos {sub.qos!r} is not 0, 1 or 2")
        codes: tuple[int, ...] = await self._request(("subscribe", tuple(items), properties))
        refused = [(s.filter, c) for s, c in zip(items, codes, strict=True) if c >= 0x80]
        for sub, code in zip(items, codes, strict=True):
            if code < 0x80:
                if self._subscriptions is _NO_ENTRIES:
                    self._subscriptions = {}
                self._subscriptions[sub.filter] = (sub, properties)
        if refused:
            names = ", ".join(f"{f!r}: {_describe(c, MQTT_5)}" for f, c in refused)
            raise Refused(f"subscription refused: {names}", refused[0][1])
        return codes

    async def unsubscribe(
        self, filters: str | Sequence[str], *, properties: Properties | None = None
    ) -> None:
        """Unsubscribe; return when UNSUBACK arrives.

        Raises:
            Refused: in 5.0, the server refused (e.g. 0x11 no subscription existed is not
                a refusal; 0x87 not authorized is).
            ValueError: for an invalid filter.
        """
        self._check_usable()
        items = (filters,) if isinstance(filters, str) else tuple(filters)
        if not items:
            raise ValueError("unsubscribe() needs at least one topic filter")
        for item in items:
            validate_filter(item)
            if item in self._subscriptions:
                del self._subscriptions[item]
        codes: tuple[int, ...] = await self._request(("unsubscribe", items, properties))
        refused = [(f, c) for f, c in zip(items, codes, strict=False) if c >= 0x80]
        if refused:
            raise Refused(f"unsubscribe refused: {_describe(refused[0][1], MQTT_5)}", refused[0][1])

    async def _request(self, request: tuple[Any, ...]) -> Any:
        assert self._loop is not None
        future: asyncio.Future[Any] = self._loop.create_future()
        if self.is_connected:
            self._send_request(request, future)
        else:
            # Sent by _connected() after the next CONNACK.
            self._add_request(-id(future), future, request)
        return await future

    def _send_request(self, request: tuple[Any, ...], future: asyncio.Future[Any] | None) -> None:
        core = self.session
        if core.state is not State.CONNECTED:
            if future is not None:
                self._add_request(-id(future), future, request)
            return
        kind, items, props = request
        assert self._loop is not None
        now = self._loop.time()
        if kind == "subscribe":
            packet_id = core.subscribe(items, props, now=now)
        else:
            packet_id = core.unsubscribe(items, props, now=now)
        if future is None:
            future = self._loop.create_future()
            future.add_done_callback(_log_resubscribe)
        self._add_request(packet_id, future, request)
        self._schedule_flush()

    def _add_request(self, key: int, future: asyncio.Future[Any], request: tuple[Any, ...]) -> None:
        if self._requests is _NO_ENTRIES:
            self._requests = {}
        self._requests[key] = (future, request)

    def messages(self, filter: str | None = None, *, max_queue: int = 1000) -> MessageStream:
        """Collect the messages whose topic matches ``filter`` (all when None).

        Make the stream before subscribing so that nothing is missed; a message goes to
        every stream that matches it. Iterate with ``async for``.

        Raises:
            ValueError: for an invalid filter.
        """
        stream = MessageStream(self, filter, max_queue)
        if self._error is not None or self._closing:
            stream._finish(self._error)
        else:
            if self._streams is _NO_ITEMS:
                self._streams = []
            self._streams.append(stream)
        return stream

    # --- request / response (MQTT 5.0 §4.10) -------------------------------------------------

    async def request(
        self,
        topic: str,
        payload: Payload = b"",
        qos: int = 1,
        *,
        timeout: float = 10.0,
        properties: Properties | None = None,
    ) -> Message:
        """Publish a request with a Response Topic and Correlation Data; return the response.

        The client subscribes to its own response topic at the first request.

        Raises:
            Timeout: no response within ``timeout`` seconds.
            InvalidState: with MQTT 3.1.1, which has no response topic.
        """
        if self.version != MQTT_5:
            raise InvalidState("request() needs MQTT 5")
        self._check_usable()
        if self._response_subscribed is None:
            # One response topic per client, subscribed once, however many first
            # requests run at the same time.
            self._response_topic = f"tether/response/{secrets.token_hex(8)}"
            self._response_subscribed = asyncio.ensure_future(self.subscribe(self._response_topic, qos=1))
        try:
            await asyncio.shield(self._response_subscribed)
        except Exception:
            self._response_subscribed = None  # the next request tries again
            raise
        correlation = secrets.token_bytes(8)
        assert self._loop is not None
        future: asyncio.Future[Message] = self._loop.create_future()
        if self._responses is _NO_ENTRIES:
            self._responses = {}
        self._responses[correlation] = future
        props = replace(
            properties or Properties(), response_topic=self._response_topic, correlation_data=correlation
        )
        try:
            await self.publish(topic, payload, qos, properties=props)
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError as exc:
            raise Timeout(f"no response to {topic!r} within {timeout} s") from exc
        finally:
            if correlation in self._responses:
                del self._responses[correlation]

    async def respond(
        self,
        request: Message,
        payload: Payload = b"",
        qos: int | None = None,
        *,
        properties: Properties | None = None,
    ) -> int:
        """Publish the response to a request message, to its Response Topic with its
        Correlation Data.

        Raises:
            ValueError: if the request has no Response Topic.
        """
        topic = request.properties.response_topic
        if topic is None:
            raise ValueError(f"the message on {request.topic!r} has no response topic")
        props = replace(properties or Properties(), correlation_data=request.properties.correlation_data)
        return await self.publish(topic, payload, request.qos if qos is None else qos, properties=props)


def _is_permanent(exc: BaseException) -> bool:
    if isinstance(exc, Refused):
        return exc.reason_code in _PERMANENT_REFUSALS
    if isinstance(exc, ssl_module.SSLCertVerificationError):
        return True
    return isinstance(exc, HandshakeError) and 400 <= exc.status < 500


def _log_resubscribe(future: asyncio.Future[Any]) -> None:
    if future.cancelled():
        return
    error = future.exception()
    if error is not None:
        logger.debug("subscribing again failed: %s", error)
    elif any(code >= 0x80 for code in future.result()):
        logger.warning("subscribing again was refused: %s", future.result())


async def _await(result: Awaitable[object]) -> None:
    try:
        await result
    except Exception:
        logger.exception("MQTT callback failed")
