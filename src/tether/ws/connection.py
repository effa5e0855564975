"""The asyncio WebSocket connection shared by the client and the server.

`WebSocket` is an `asyncio.Protocol` driving a `tether.ws.protocol.Connection`
core. Reading: each `data_received()` feeds the core and hands complete
messages to a waiting `recv()` directly or to a queue of at most `max_queue`
messages; past that, reading from the socket pauses, so a slow application
never makes memory grow. Writing: `send()` writes at once and waits only while
the transport's buffer is over its high-water mark (`write_limit`), so a peer
that never reads keeps the writer's memory bounded.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine, Iterable
from typing import Any, cast

from tether.errors import ConnectionClosed, InvalidState
from tether.ws.protocol import (
    _SPLIT_AT,
    BinaryMessage,
    CloseReceived,
    Connection,
    Pong,
    State,
    TextMessage,
)

__all__ = ["Data", "Handler", "WebSocket"]

logger = logging.getLogger("tether.ws")

Data = str | bytes

_CLOSED = object()  # marks, in the message queue, where the stream ends
_OPEN = State.OPEN
_DEFERRED = object()  # marks, in the message queue, where the peer closed or erred


class Handler:
    """The callback API: a connection's events as method calls.

    Subclass it and override what you need, then give `tether.ws.serve()` an
    instance (shared by every connection) or the class itself (one instance
    per connection), or give `tether.ws.connect()` an instance as
    ``handler=``. The callbacks run in the connection's receive path, with no
    task and no future per message, in Mongoose's event-handler spirit; they
    must not block. Send with `WebSocket.send_nowait()`, close with
    `WebSocket.close_nowait()`, and apply backpressure with
    `WebSocket.pause_reading()` / `resume_reading()` and `on_writable()`.

    An exception raised by a callback is logged and the connection is closed
    with 1011 (internal error).
    """

    __slots__ = ()

    def on_open(self, ws: WebSocket) -> None:
        """The handshake is complete; messages follow."""

    def on_message(self, ws: WebSocket, message: Data) -> None:
        """A whole message arrived: str for text, bytes for binary."""

    def on_close(self, ws: WebSocket, code: int, reason: str) -> None:
        """The connection ended (also when it was lost: then code is 1006).

        Called once, after `on_open()`; code and reason are `ws.close_code` and
        `ws.close_reason`.
        """

    def on_writable(self, ws: WebSocket) -> None:
        """The write buffer went back under `write_limit` after `send_nowait()` returned False."""


class WebSocket(asyncio.Protocol):
    """An open WebSocket connection on asyncio.

    Created by `tether.ws.connect()` and `tether.ws.serve()`; not meant to be
    built by hand. Use `send()`, `recv()` or ``async for message in ws``,
    `ping()` and `close()`; or, with a `Handler`, the callbacks and
    `send_nowait()`.

    Attributes:
        request: the handshake request (tether.ws.Request).
        response: the handshake response (tether.ws.Response).
        subprotocol: the negotiated subprotocol, or None.
    """

    # Slots: thousands of idle connections each save an instance dict.
    __slots__ = (
        "_callbacks",
        "_close_timeout",
        "_close_timer",
        "_core",
        "_deferred",
        "_deferred_done",
        "_drain_waiters",
        "_exc",
        "_handler",
        "_is_lost",
        "_keepalive_task",
        "_loop",
        "_lost",
        "_max_queue",
        "_messages",
        "_on_message",
        "_ping_interval",
        "_ping_timeout",
        "_pings",
        "_reading_paused",
        "_transport",
        "_waiter",
        "_write_limit",
        "_writing_paused",
        "local_address",
        "remote_address",
        "subprotocol",
    )

    def __init__(
        self,
        core: Connection,
        *,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        close_timeout: float = 10.0,
        max_queue: int = 32,
        write_limit: int = 2**16,
    ) -> None:
        self._core = core
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        # Made at the first message that waits: an idle connection holds no deque.
        self._messages: deque[Any] | None = None
        self._waiter: asyncio.Future[Any] | None = None
        self._handler: Callable[[Data], object] | None = None
        # The callback API: the Handler, and its on_message once on_open has been called.
        self._callbacks: Handler | None = None
        self._on_message: Callable[[WebSocket, Data], object] | None = None
        self._max_queue = max_queue
        self._reading_paused = False
        self._write_limit = write_limit
        self._writing_paused = False
        # Made when first needed: an idle connection holds neither.
        self._drain_waiters: list[asyncio.Future[None]] | None = None
        # Ping payload -> (future of the round trip, when it was sent).
        self._pings: dict[bytes, tuple[asyncio.Future[float], float]] | None = None
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._close_timeout = close_timeout
        self._keepalive_task: asyncio.Task[None] | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._is_lost = False  # self._lost.done(), for the hot path
        self._deferred: Callable[[], None] | None = None
        self._deferred_done = False
        self._exc: BaseException | None = None
        self.subprotocol: str | None = None
        self.remote_address: Any = None
        self.local_address: Any = None

    # ------------------------------------------------------------- properties

    # The handshake lives in the core only, which may keep it in a compact form.
    @property
    def request(self) -> Any:
        """The handshake request (tether.ws.Request), or None before it is known."""
        return getattr(self._core, "request", None)

    @request.setter
    def request(self, value: Any) -> None:
        setattr(self._core, "request", value)  # noqa: B010 - the base core has no such attribute

    @property
    def response(self) -> Any:
        """The handshake response (tether.ws.Response), or None before it is known."""
        return getattr(self._core, "response", None)

    @response.setter
    def response(self, value: Any) -> None:
        setattr(self._core, "response", value)  # noqa: B010 - the base core has no such attribute

    @property
    def state(self) -> State:
        """The core's state: CONNECTING, OPEN, CLOSING or CLOSED."""
        return self._core.state

    @property
    def close_code(self) -> int | None:
        """The close code, once the connection is closed; None before.

        The code received from the peer; when none was, the code tether sent
        when it failed the connection, else 1006 (abnormal closure).
        """
        if not self._lost.done():
            return None
        return self._closed_exc().code

    @property
    def close_reason(self) -> str | None:
        """The close reason, once the connection is closed; None before."""
        if not self._lost.done():
            return None
        return self._closed_exc().reason

    def _closed_exc(self) -> ConnectionClosed:
        exc = self._core.closed_error()
        if exc.__cause__ is None:
            exc.__cause__ = self._exc
        return exc

    # -------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = tcp = cast(asyncio.Transport, transport)
        tcp.set_write_buffer_limits(self._write_limit)
        self.remote_address = tcp.get_extra_info("peername")
        self.local_address = tcp.get_extra_info("sockname")
        out = self._core.data_to_send()
        if out:
            tcp.write(out)

    def data_received(self, data: bytes) -> None:
        core = self._core
        core.receive_data(data)
        if core._out:
            assert self._transport is not None
            self._transport.write(core.data_to_send())
        self._process_events()

    def _process_events(self) -> None:
        """Act on what the core reported: messages, pongs, close, handshake, errors."""
        core = self._core
        events = core._events  # read in place: the hot path avoids a list per call
        if events:
            core._events = []
            for event in events:
                kind = type(event)
                if kind is TextMessage or kind is BinaryMessage:
                    on_message = self._on_message
                    if on_message is not None:
                        try:
                            on_message(self, event.data)  # type: ignore[union-attr]
                        except Exception:
                            self._callback_failed("on_message")
                        continue
                    handler = self._handler
                    if handler is not None:  # set_message_handler(): no _deliver() call per message
                        try:
                            handler(event.data)  # type: ignore[union-attr]
                        except Exception:
                            logger.exception("message handler %r failed", handler)
                        continue
                    waiter = self._waiter
                    if waiter is not None and not waiter.done():
                        # The queue is empty whenever recv() waits: hand it over directly.
                        self._waiter = None
                        waiter.set_result(event.data)  # type: ignore[union-attr]
                    else:
                        self._deliver(event.data)  # type: ignore[union-attr]
                elif kind is Pong:
                    self._pong(event.payload)  # type: ignore[union-attr]
                elif kind is CloseReceived:
                    self._on_close_frame()
                else:
                    self._handshake_event(event)
        if not core._stopped and core.state is _OPEN:
            return
        if core.state is State.CLOSED and core.handshake_error is not None:
            self._closed_while_connecting()
        if core.error is not None and core.state is not State.CLOSED:
            self._defer(self._fail)
        elif core.state is State.CONNECTING:
            return
        if core.close_expected() and self._transport is not None:
            self._transport.close()

    def _handshake_event(self, event: object) -> None:
        """Handle a handshake event; the client and server subclasses override this."""

    def _closed_while_connecting(self) -> None:
        """The handshake failed; the client overrides this to report it."""

    def eof_received(self) -> bool:
        self._core.receive_eof()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._core.receive_eof()
        self._exc = exc
        if self._close_timer is not None:
            self._close_timer.cancel()
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
        self._is_lost = True
        if not self._lost.done():
            self._lost.set_result(None)
        self._deliver(_CLOSED)
        pings, self._pings = self._pings, None
        for fut, _ in (pings or {}).values():
            if not fut.done():
                fut.set_exception(self._closed_exc())
        self._wake_writers()
        if self._on_message is not None:
            assert self._callbacks is not None
            self._on_message = None
            closed = self._closed_exc()
            try:
                self._callbacks.on_close(self, closed.code, closed.reason)
            except Exception:
                logger.exception("WebSocket handler's on_close failed")

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_writers()
        if self._on_message is not None:
            assert self._callbacks is not None
            try:
                self._callbacks.on_writable(self)
            except Exception:
                self._callback_failed("on_writable")

    # ------------------------------------------------------------- callbacks

    def _open_callbacks(self) -> None:
        """The handshake is complete: hand the connection to its `Handler`."""
        callbacks = self._callbacks
        assert callbacks is not None
        self._on_message = callbacks.on_message
        try:
            callbacks.on_open(self)
        except Exception:
            self._callback_failed("on_open")

    def _callback_failed(self, name: str) -> None:
        logger.exception("WebSocket handler's %s failed", name)
        if self._core.state is State.OPEN:
            self.close_nowait(1011, "internal error")

    def pause_reading(self) -> None:
        """Stop reading from the socket until `resume_reading()`.

        Backpressure for `Handler` users, whose messages are not queued: while
        reading is paused, the kernel's buffers fill and the peer's writes slow
        down.
        """
        if not self._reading_paused and self._transport is not None and not self._transport.is_closing():
            self._reading_paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        """Read from the socket again after `pause_reading()`."""
        if self._reading_paused and self._transport is not None and not self._transport.is_closing():
            self._reading_paused = False
            self._transport.resume_reading()

    def _wake_writers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, None
        for fut in waiters or ():
            if not fut.done():
                fut.set_result(None)

    # ------------------------------------------------------------------ input

    def _deliver(self, item: Any) -> None:
        handler = self._handler
        if handler is not None and (type(item) is str or type(item) is bytes):
            try:
                handler(item)
            except Exception:
                logger.exception("message handler %r failed", handler)
            return
        waiter = self._waiter
        if waiter is not None and not self._messages:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(item)
                return
        messages = self._messages
        if messages is None:
            self._messages = messages = deque()
        messages.append(item)
        if (
            len(messages) >= self._max_queue
            and not self._reading_paused
            and self._transport is not None
            and not self._transport.is_closing()
        ):
            self._reading_paused = True
            self._transport.pause_reading()

    def set_message_handler(self, handler: Callable[[Data], object] | None) -> None:
        """Hand each message to ``handler`` as it arrives, instead of keeping it for `recv()`.

        For protocols layered on a WebSocket that answer from callbacks (an RPC client
        resolving its calls): the handler runs in the connection's receive path, so no
        task wakes up per message; it must not block, and an exception it raises is
        logged. Messages already waiting go to it first. The end of the connection is
        still reported by `recv()` (which raises `ConnectionClosed`) and `wait_closed()`.
        None goes back to queueing messages for `recv()`.

        Raises:
            InvalidState: if a `recv()` is waiting.
        """
        if handler is not None and self._waiter is not None and not self._waiter.done():
            raise InvalidState("set_message_handler() while recv() waits")
        self._handler = handler
        messages = self._messages
        while self._handler is not None and messages and type(messages[0]) in (str, bytes):
            self._deliver(messages.popleft())
        if self._reading_paused and not messages and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()

    def recv(self) -> Coroutine[Any, Any, Data]:
        """Receive the next message: str for text, bytes for binary (a coroutine).

        Raises:
            ConnectionClosed: when the connection is closed; its code and
                reason say how, and a protocol error of the peer is its __cause__.
            InvalidState: if another coroutine is already waiting in recv().
        """
        return self._receive(False)

    def __aiter__(self) -> WebSocket:
        return self

    def __anext__(self) -> Coroutine[Any, Any, Data]:
        """The next message for ``async for``, which ends at a normal close (1000 or 1001).

        Raises:
            ConnectionClosed: if the connection closed with another code.
        """
        return self._receive(True)

    async def _receive(self, iterating: bool) -> Data:
        # recv() and __anext__() share this body: one coroutine per message, not two.
        messages = self._messages
        if messages:
            item = messages.popleft()
            if self._reading_paused and len(messages) <= self._max_queue // 2:
                self._reading_paused = False
                if self._transport is not None:
                    self._transport.resume_reading()
        else:
            if self._waiter is not None:
                raise InvalidState("another coroutine is already waiting for a message")
            if self._is_lost:
                item = _CLOSED
            else:
                waiter = self._loop.create_future()
                self._waiter = waiter
                try:
                    item = await waiter
                finally:
                    self._waiter = None
        if item is _DEFERRED:
            self._run_deferred()
            item = _CLOSED
        if item is _CLOSED:
            if messages is None:
                self._messages = messages = deque()
            messages.appendleft(_CLOSED)  # every later recv() raises too
            await self.wait_closed()
            closed = self._closed_exc()
            if iterating and closed.ok:
                raise StopAsyncIteration
            raise closed
        return item  # type: ignore[no-any-return]

    # ----------------------------------------------------------------- output

    def _write(self) -> None:
        core = self._core
        out = core._out
        if out and self._transport is not None:
            core._out = []
            _write_all(self._transport, out)

    def _check_sendable(self) -> None:
        if self._core.state is not State.OPEN or self._lost.done():
            raise (
                self._closed_exc()
                if self._lost.done() or self._core.state is State.CLOSED
                else ConnectionClosed(*(self._core.close_sent or (1006, "")))
            )

    async def send(
        self, message: Data | bytearray | memoryview | Iterable[Data] | AsyncIterable[Data]
    ) -> None:
        """Send a message: str as text, bytes-like as binary, an iterable or
        async iterable of str or bytes as one fragmented message.

        Waits while the transport's write buffer is over `write_limit`.

        Raises:
            ConnectionClosed: if the connection is closed or closing.
            TypeError: for any other type, or fragments of mixed types.
        """
        core = self._core
        if core.state is not _OPEN:
            self._check_sendable()
        kind = type(message)
        if kind is str:
            core.send_text(message)  # type: ignore[arg-type]
        elif kind is bytes or isinstance(message, (bytes, bytearray, memoryview)):
            core.send_binary(message)  # type: ignore[arg-type]
        elif isinstance(message, str):
            core.send_text(message)
        elif isinstance(message, AsyncIterable):
            await self._send_fragments(message.__aiter__())
            return
        elif isinstance(message, Iterable):
            await self._send_fragments(_aiter_sync(message))
            return
        else:
            raise TypeError(f"cannot send {type(message).__name__}")
        out = core._out
        core._out = []
        assert self._transport is not None
        _write_all(self._transport, out)
        if self._writing_paused:
            await self._drain()

    def send_nowait(self, message: Data | bytearray | memoryview) -> bool:
        """Send a whole message now, without waiting: str as text, bytes-like as binary.

        For protocols layered on a WebSocket (MQTT over WebSocket) that write from
        callbacks. The caller applies backpressure itself.

        Returns:
            True while the write buffer is under `write_limit`; on False, await
            `drain()` before sending much more.

        Raises:
            ConnectionClosed: if the connection is closed or closing.
        """
        core = self._core
        if core.state is not _OPEN:
            self._check_sendable()
        if type(message) is str or isinstance(message, str):
            core.send_text(message)
        else:
            core.send_binary(message)
        out = core._out
        core._out = []
        assert self._transport is not None
        _write_all(self._transport, out)
        return not self._writing_paused

    async def drain(self) -> None:
        """Wait until the write buffer is under `write_limit` again.

        Raises:
            ConnectionClosed: if the connection closes meanwhile.
        """
        if self._writing_paused:
            await self._drain()

    async def _send_fragments(self, fragments: AsyncIterator[Data]) -> None:
        core = self._core
        try:
            first = await fragments.__anext__()
        except StopAsyncIteration:
            return
        text = isinstance(first, str)
        kind = str if text else (bytes, bytearray, memoryview)
        if not isinstance(first, (str, bytes, bytearray, memoryview)):
            raise TypeError(f"cannot send fragment of type {type(first).__name__}")
        if isinstance(first, str):
            core.send_text(first, fin=False)
        else:
            core.send_binary(first, fin=False)
        self._write()
        try:
            async for fragment in fragments:
                if not isinstance(fragment, kind):
                    raise TypeError("fragments of one message must all be str or all be bytes")
                self._check_sendable()
                core.send_continuation(fragment, fin=False)
                self._write()
                if self._writing_paused:
                    await self._drain()
        except BaseException:
            # The message cannot be finished: fail the connection (RFC 6455 §5.4 has
            # no way to abort a fragmented message).
            if core.state is State.OPEN:
                core.fail(1011, "sending a fragmented message failed")
                self._write()
                if self._transport is not None:
                    self._transport.close()
            raise
        core.send_continuation(b"", fin=True)
        self._write()
        if self._writing_paused:
            await self._drain()

    async def _drain(self) -> None:
        if self._lost.done():
            raise self._closed_exc()
        fut = self._loop.create_future()
        if self._drain_waiters is None:
            self._drain_waiters = []
        self._drain_waiters.append(fut)
        await fut
        if self._lost.done():
            raise self._closed_exc()

    async def ping(self, data: bytes | None = None) -> asyncio.Future[float]:
        """Send a Ping; return a future resolved with the round-trip time in
        seconds when the matching Pong arrives.

        Raises:
            ConnectionClosed: if the connection is not open.
        """
        self._check_sendable()
        pings = self._pings
        if pings is None:
            self._pings = pings = {}
        if data is None:
            data = os.urandom(4)
            while data in pings:
                data = os.urandom(4)
        elif data in pings:
            raise ValueError("a ping with that payload is already waiting")
        fut: asyncio.Future[float] = self._loop.create_future()
        fut.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
        pings[data] = (fut, self._loop.time())
        self._core.send_ping(data)
        self._write()
        return fut

    def _pong(self, payload: bytes) -> None:
        # RFC 6455 §5.5.3: a Pong answers the most recent Ping; it acknowledges earlier ones too.
        pings = self._pings
        if not pings or payload not in pings:
            return
        now = self._loop.time()
        for data in list(pings):
            fut, sent = pings.pop(data)
            if not fut.done():
                fut.set_result(now - sent)
            if data == payload:
                break

    async def _keepalive(self) -> None:
        assert self._ping_interval is not None
        try:
            while True:
                await asyncio.sleep(self._ping_interval)
                if self._core.state is not State.OPEN:
                    return
                waiter = await self.ping()
                if self._ping_timeout is None:
                    continue
                try:
                    await asyncio.wait_for(asyncio.shield(waiter), self._ping_timeout)
                except asyncio.TimeoutError:
                    logger.debug("keepalive ping timed out; failing the connection")
                    if self._core.state is State.OPEN:
                        self._core.fail(1011, "keepalive ping timeout")
                        self._write()
                    if self._transport is not None:
                        self._transport.abort()
                    return
        except ConnectionClosed:
            return

    def _start(self) -> None:
        """Called by the front ends once the handshake is complete."""
        if self._ping_interval is not None:
            self._keepalive_task = self._loop.create_task(self._keepalive())

    # ---------------------------------------------------------------- closing

    def _defer(self, action: Callable[[], None]) -> None:
        """Answer the peer's Close, or fail on its error, after the earlier messages.

        Messages that came before are still handed to the application and its
        answers still go out first (Autobahn's "strict" behaviour): the action
        runs when recv() reaches this point of the queue, or on the next turn of
        the loop when the messages were handed over already. An application that
        stops reading delays it by close_timeout at most.
        """
        if self._deferred is not None:
            return
        self._deferred = action
        if self._messages:
            self._messages.append(_DEFERRED)
            self._loop.call_later(self._close_timeout, self._run_deferred)
        else:
            self._loop.call_soon(self._run_deferred)

    def _run_deferred(self) -> None:
        if self._deferred is not None and not self._deferred_done:
            self._deferred_done = True
            self._deferred()

    def _on_close_frame(self) -> None:
        self._defer(self._acknowledge_close)
        if self._core.is_client and self._transport is not None and self._close_timer is None:
            # RFC 6455 §7.1.1: the server closes TCP first; give it close_timeout to do so.
            self._close_timer = self._loop.call_later(self._close_timeout, self._transport.abort)

    def _acknowledge_close(self) -> None:
        core = self._core
        core.acknowledge_close()
        self._write()
        if core.close_expected() and self._transport is not None:
            self._transport.close()

    def _fail(self) -> None:
        core = self._core
        if core.state is State.CLOSED:
            return
        core.fail()
        self._write()
        if self._transport is not None:
            self._transport.close()

    def _start_close(self, code: int, reason: str) -> None:
        core = self._core
        if core.state is State.OPEN:
            core.send_close(code, reason)
            self._write()
        elif core.state is State.CONNECTING and self._transport is not None:
            self._transport.close()
        if core.close_expected() and self._transport is not None:
            self._transport.close()

    def close_nowait(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake without waiting; idempotent.

        For `Handler` callbacks. The TCP connection is aborted if it has not
        ended `close_timeout` seconds later; `Handler.on_close()` tells when it has.

        Raises:
            ValueError: if the code may not be sent or the reason is too long.
        """
        self._start_close(code, reason)
        if self._close_timer is None and self._transport is not None and not self._is_lost:
            self._close_timer = self._loop.call_later(self._close_timeout, self._transport.abort)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection with the closing handshake; idempotent.

        Waits up to `close_timeout` for the peer's Close frame and for the TCP
        connection to end, then aborts it.

        Raises:
            ValueError: if the code may not be sent or the reason is too long.
        """
        self._start_close(code, reason)
        try:
            await asyncio.wait_for(asyncio.shield(self._lost), self._close_timeout)
        except asyncio.TimeoutError:
            if self._transport is not None:
                self._transport.abort()
            await self._lost

    async def wait_closed(self) -> None:
        """Wait until the TCP connection is closed."""
        await asyncio.shield(self._lost)


def _write_all(transport: asyncio.Transport, out: list[bytes]) -> None:
    """Write what the core queued: a large payload on its own, small pieces joined.

    asyncio's writelines() joins its pieces before Python 3.12, which would copy
    a large payload once more only to prepend its frame header.
    """
    if len(out) == 1:
        transport.write(out[0])
    elif len(out[-1]) < _SPLIT_AT:
        transport.write(b"".join(out))
    else:
        for piece in out:
            transport.write(piece)


async def _aiter_sync(items: Iterable[Data]) -> AsyncIterator[Data]:
    for item in items:
        yield item
