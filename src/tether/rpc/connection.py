"""The asyncio RPC client: `connect` a mos-style port, then `RpcClient.call`.

Theory of operation. An `RpcClient` runs an `RpcClientCore` over a `Transport`.
`call` asks the core for a request frame, sends it, and waits for the future the
reader resolves: the reader feeds every frame that arrives to the core,
sends what the core wants sent (the digest retry after a 401, spec §4), and turns
the core's events into results or `RpcError`. When the transport closes, every
waiting call fails with `ConnectionClosed`. The reader is a task, except over a
WebSocket: there the connection hands each message to it as it arrives
(`WebSocketTransport.attach`), so a call wakes one task, its caller, not two,
and `call` writes the frame's text from `RpcClientCore.start_call` at once.
A call's deadline is a note in its entry until a tick, at most `_TICK` seconds
later, gives the calls still waiting a timer: most calls never need one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import ssl as ssl_module
import urllib.parse
from collections import deque
from collections.abc import Callable, Generator
from types import TracebackType
from typing import Any

from tether.errors import ConnectionClosed, Timeout
from tether.rpc.client import CallFailed, CallResult, RpcClientCore
from tether.rpc.frames import InvalidFrame, Request
from tether.rpc.transports import HttpTransport, Transport, WebSocketTransport, open_transport

__all__ = ["RpcClient", "connect"]

logger = logging.getLogger("tether.rpc")

#: The longest a call waits before a timer watches its deadline (see RpcClient._on_tick).
_TICK = 0.1

#: A waiting call: (its future, its deadline, its method, its timeout in seconds).
_Waiter = tuple["asyncio.Future[Any]", float, str, float]
#: A watched deadline: (deadline, the call's future, its method, its timeout in seconds).
_Deadline = tuple[float, "asyncio.Future[Any]", str, float]


class RpcClient:
    """Calls methods over a `Transport`; made by `connect`.

    Args:
        transport: an open transport.
        src: this client's id, the ``src`` of its frames.
        dst: the ``dst`` of calls, None to leave it out (the device on the other end).
        credentials: (user, password) to answer an in-frame 401 challenge with.
        timeout: the default seconds a call waits for its reply.
        max_pending: calls that may wait at once; one more fails the oldest with 429.
        on_request: called with each request or notification the peer sends (a device's
            ``Console.Event`` lines, a backend's calls), on the event loop, as it arrives;
            it must not block, and what it keeps it must bound. None to drop them.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        src: str = "tether",
        dst: str | None = None,
        credentials: tuple[str, str] | None = None,
        timeout: float = 10.0,
        max_pending: int = 25,
        on_request: Callable[[Request], None] | None = None,
    ) -> None:
        self.transport = transport
        self.timeout = timeout
        self.on_request = on_request
        self.core = RpcClientCore(src, dst=dst, credentials=credentials, max_pending=max_pending)
        self._loop = asyncio.get_running_loop()  # once: each get_running_loop() costs a getpid()
        self._waiters: dict[int, _Waiter] = {}  # by call id, oldest first
        self._closed: ConnectionClosed | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._reader: asyncio.Task[None] | None = None
        # Deadlines. A call only notes its own in its _waiters entry: most calls end long
        # before it, and a timer per call costs a heap push and a cancel. A tick, at most
        # _TICK seconds after a call starts and never after its deadline, fails the calls
        # whose deadline passed and watches the others' (their ids in _watched): in
        # _deadlines, in the order they fall due, served by one timer, or, for one that
        # falls before the last one there, with a timer of its own (in _timers). So each
        # call still fails at its own deadline.
        self._tick: asyncio.TimerHandle | None = None
        self._tick_at = math.inf
        self._watched: set[int] = set()
        self._deadlines: deque[_Deadline] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._timers: dict[int, asyncio.TimerHandle] = {}
        # Over a WebSocket, a call writes its frame at once (send_nowait) and the connection
        # hands each reply to _receive: no task but the caller's wakes up.
        self._send_text: Callable[[str], bool] | None = None
        if isinstance(transport, WebSocketTransport) and transport.attach(self._receive, self._start_reader):
            self._send_text = transport.ws.send_nowait
        else:
            self._start_reader()

    def __repr__(self) -> str:
        return f"RpcClient({self.transport!r}, src={self.core.src!r})"

    async def call(
        self, method: str, params: Any = None, *, timeout: float | None = None, dst: str | None = None
    ) -> Any:
        """Call method with params and return its result.

        Args:
            method: e.g. ``Sys.GetInfo``.
            params: any JSON value, None for none.
            timeout: seconds to wait for the reply; None for the client's default.
            dst: the ``dst`` of this call, None for the client's.

        Returns:
            The ``result`` (None for ``null``, or for the ``"error":{"code":0}`` success quirk).

        Raises:
            RpcError: for an error reply (``.code``, ``.message``), 429 if evicted from the queue.
            Timeout: if no reply came in time.
            ConnectionClosed: if the transport closed.
            ValueError, TypeError: if params cannot be JSON.
        """
        if self._closed is not None:
            raise self._closed
        core = self.core
        waiters = self._waiters
        # Then the oldest call fails with 429 (each of the core's calls is one of ours).
        evicts = len(waiters) >= core.max_pending
        send_text = self._send_text
        if send_text is not None:
            # Over a WebSocket: the frame's text straight from the core, sent at once.
            call_id, text = core.start_call(method, params, dst=dst)
        else:
            call_id = core.call(method, params, dst=dst)
        loop = self._loop
        future = loop.create_future()
        seconds = self.timeout if timeout is None else timeout
        # The deadline fails the future, cheaper than asyncio.timeout() per call; an HTTP
        # send, which waits for its answer, is raced against the same future.
        now = loop.time()
        deadline = now + seconds
        waiters[call_id] = (future, deadline, method, seconds)
        if evicts:
            self._process_events()
        if deadline < self._tick_at:
            self._schedule_tick(min(deadline, now + _TICK))
        try:
            if send_text is not None:
                if not send_text(text):
                    await self.transport.drain()  # type: ignore[attr-defined]  # a WebSocketTransport
            else:
                await self._send(core.frames_to_send(), future)
            return await future
        except BaseException:
            core.cancel(call_id)  # a late reply is then ignored (a reply that came forgot it)
            raise
        finally:
            if not future.done():
                future.cancel()  # the send failed: its deadline must not set an exception
            del waiters[call_id]
            if self._watched:
                self._watched.discard(call_id)
                timer = self._timers.pop(call_id, None)
                if timer is not None:
                    timer.cancel()

    async def _send(self, frames: list[bytes], future: asyncio.Future[Any]) -> None:
        """Send a call's frames over a transport other than a WebSocket."""
        transport = self.transport
        for frame in frames:
            send = transport.send(frame)
            if isinstance(transport, HttpTransport):
                sending = asyncio.ensure_future(send)
                await asyncio.wait((sending, future), return_when=asyncio.FIRST_COMPLETED)
                if not sending.done():
                    sending.cancel()
                else:
                    sending.result()  # raises what the send raised
            else:
                await send

    def _schedule_tick(self, when: float) -> None:
        if self._tick is not None:
            self._tick.cancel()
        self._tick_at = when
        self._tick = self._loop.call_at(when, self._on_tick)

    def _on_tick(self) -> None:
        """Fail the calls whose deadline passed; watch the deadlines of the others."""
        self._tick = None
        self._tick_at = math.inf
        loop = self._loop
        now = loop.time()
        deadlines = self._deadlines
        while deadlines and deadlines[0][1].done():
            deadlines.popleft()
        if len(deadlines) > 64 and len(deadlines) > 2 * len(self._waiters):
            # A slow call at the head keeps finished ones behind it: drop those.
            self._deadlines = deadlines = deque(entry for entry in deadlines if not entry[1].done())
        watched = self._watched
        for call_id, (future, deadline, method, seconds) in self._waiters.items():
            if call_id in watched or future.done():
                continue  # (a call that is done has yet to see it)
            if deadline <= now:
                _expire(future, method, seconds)
                continue
            watched.add(call_id)
            if deadlines and deadline < deadlines[-1][0]:
                self._timers[call_id] = loop.call_at(deadline, _expire, future, method, seconds)
            else:
                deadlines.append((deadline, future, method, seconds))
                if self._timer is None:
                    self._timer = loop.call_at(deadline, self._expire_due)

    def _expire_due(self) -> None:
        """Fail the calls whose deadline passed, then wait for the next deadline."""
        self._timer = None
        loop = self._loop
        now = loop.time()
        deadlines = self._deadlines
        while deadlines:
            deadline, future, method, seconds = deadlines[0]
            if not future.done():
                if deadline > now:
                    self._timer = loop.call_at(deadline, self._expire_due)
                    return
                _expire(future, method, seconds)
            deadlines.popleft()

    async def notify(self, method: str, params: Any = None, *, dst: str | None = None) -> None:
        """Send a notification: the method runs, nothing comes back.

        Raises:
            ConnectionClosed: if the transport closed.
        """
        if self._closed is not None:
            raise self._closed
        self.core.notify(method, params, dst=dst)
        for frame in self.core.frames_to_send():
            await self.transport.send(frame)

    async def close(self) -> None:
        """Close the transport; calls still waiting fail with `ConnectionClosed`."""
        if self._closed is None:
            self._fail_all(ConnectionClosed(1000, "client closed"))
        if self._reader is not None:
            self._reader.cancel()
        for timer in (self._timer, self._tick, *self._timers.values()):
            if timer is not None:
                timer.cancel()
        self._timer = self._tick = None
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(ConnectionClosed):
            await self.transport.close()

    async def __aenter__(self) -> RpcClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _process_events(self) -> None:
        waiters = self._waiters
        for event in self.core.events_received():
            if isinstance(event, CallResult):
                waiter = waiters.get(event.id)
                if waiter is not None and not waiter[0].done():
                    waiter[0].set_result(event.result)
            elif isinstance(event, CallFailed):
                waiter = waiters.get(event.id)
                if waiter is not None and not waiter[0].done():
                    waiter[0].set_exception(event.error)
            elif self.on_request is None:
                logger.debug("ignoring a request from the peer: %r", event.request)
            else:
                try:
                    self.on_request(event.request)
                except Exception:
                    logger.exception("on_request raised for %r", event.request)

    def _fail_all(self, exc: ConnectionClosed) -> None:
        self._closed = exc
        for future, *_ in self._waiters.values():
            if not future.done():
                future.set_exception(exc)

    async def _resend(self, frames: list[bytes]) -> None:
        try:
            for frame in frames:
                await self.transport.send(frame)
        except ConnectionClosed:
            pass  # the reader sees the close and fails the calls

    def _start_reader(self) -> None:
        if self._reader is None and self._closed is None:
            self._reader = self._loop.create_task(self._read())

    def _receive(self, frame: str | bytes) -> None:
        """Take one frame: from the reader task, or straight from a WebSocket's receive path."""
        core = self.core
        try:
            matched = core.receive_result(frame)
            if matched is not None:  # the usual case: one call succeeded
                waiter = self._waiters.get(matched[0])
                if waiter is not None:
                    future = waiter[0]
                    if not future.done():
                        future.set_result(matched[1])
                return
            core.receive_frame(frame)
        except InvalidFrame as exc:
            logger.info("ignoring an invalid frame: %s", exc)
            return
        resend = core.frames_to_send()
        if resend:
            # §4: the digest retry. Sent from a task: an HTTP send waits for its answer,
            # which the reader must be free to take.
            task = self._loop.create_task(self._resend(resend))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._process_events()

    async def _read(self) -> None:
        transport = self.transport
        try:
            while True:
                self._receive(await transport.recv())
        except ConnectionClosed as exc:
            self._fail_all(exc)
        except Exception as exc:
            closed = ConnectionClosed(1006, f"transport failed: {exc}")
            closed.__cause__ = exc
            self._fail_all(closed)


def _expire(future: asyncio.Future[Any], method: str, seconds: float) -> None:
    if not future.done():
        future.set_exception(Timeout(f"call of {method} timed out after {seconds} s"))


def _split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """Take ``user:pass@`` out of a ws/http URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("ws", "wss", "http", "https") or "@" not in parts.netloc:
        return url, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    stripped = urllib.parse.urlunsplit(parts._replace(netloc=hostport))
    return stripped, (urllib.parse.unquote(user), urllib.parse.unquote(password))


class connect:
    """Connect an `RpcClient` to a device, as ``mos --port URL`` does.

    ``client = await connect(url)`` or ``async with connect(url) as client``::

        async with tether.rpc.connect("ws://192.168.4.1/rpc") as client:
            info = await client.call("Sys.GetInfo")

    Ports (`tether.rpc.transports.open_transport`): ``ws://host/rpc``, ``wss://…``,
    ``http://host/rpc``, ``https://…``, ``mqtt://broker[:port]/<device_id>``,
    ``mqtts://…``, a serial device path or ``serial://PATH``.

    Args:
        url: the port. ``user:pass@`` in a ws or http URL gives the credentials.
        src: this client's id; by default ``tether``, over MQTT
            ``<device_id>/rpc-resp/tether-<random>`` as mos does (§2.3).
        credentials: (user, password) for in-frame digest (§4) and HTTP Digest.
        ssl: an SSLContext for wss://, https://, mqtts://.
        timeout: seconds to connect, and the default seconds a call waits.
        on_request: see `RpcClient`: called with each request or notification the peer sends.

    Raises:
        ValueError: for an unknown scheme.
        OSError, HandshakeError, Timeout: if the connection cannot be made.
    """

    def __init__(
        self,
        url: str,
        *,
        src: str | None = None,
        credentials: tuple[str, str] | None = None,
        ssl: ssl_module.SSLContext | None = None,
        timeout: float = 10.0,
        on_request: Callable[[Request], None] | None = None,
    ) -> None:
        self.url, url_credentials = _split_credentials(url)
        self.credentials = credentials if credentials is not None else url_credentials
        self.src = src
        self.ssl = ssl
        self.timeout = timeout
        self.on_request = on_request
        self._client: RpcClient | None = None

    async def _open(self) -> RpcClient:
        src, dst = self.src, None
        scheme = self.url.partition("://")[0].lower() if "://" in self.url else ""
        if scheme.startswith("mqtt"):
            # §2.3: frames go to the device id of the URL path; replies come to <src>/rpc.
            # The whole path is the device id, as for mos (ids may hold '/').
            dst = urllib.parse.urlsplit(self.url).path[1:] or None
            if src is None:
                src = f"{dst}/rpc-resp/tether-{secrets.token_hex(4)}"
        src = src or "tether"
        transport = await open_transport(
            self.url, src=src, credentials=self.credentials, ssl=self.ssl, timeout=self.timeout
        )
        return RpcClient(
            transport,
            src=src,
            dst=dst,
            credentials=self.credentials,
            timeout=self.timeout,
            on_request=self.on_request,
        )

    def __await__(self) -> Generator[Any, None, RpcClient]:
        return self._open().__await__()

    async def __aenter__(self) -> RpcClient:
        self._client = await self._open()
        return self._client

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._client is not None
        await self._client.close()
