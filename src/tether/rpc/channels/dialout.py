"""The outbound WebSocket channel: the device dials its backend (spec mgos-rpc.md §2.5).

Theory of operation. `DialOut` keeps one WebSocket to ``rpc.ws.server_address``
open: it offers subprotocol ``json-rpc`` and ``Origin: https://mongoose-os.com``,
and after a lost connection or a failed attempt dials again after a delay that
starts at ``backoff_min`` (1 s) and doubles up to ``backoff_max`` (60 s), reset
by a handshake that worked. The channel is persistent, of type ``WS_out``
(``WSS_out`` over TLS), and is the device's default route.

Every frame that arrives is parsed once: a request goes to the dispatcher exactly
as if it came over the device's own server (concurrently, the reply sent back
with ``src`` = the device id and ``dst`` = the caller's ``src``); a response goes
to the `RpcClientCore` behind `call`, whose frames carry ``src`` = the device id.
An invalid frame is logged and dropped: a persistent channel stays open (§1.1).
Calls made while no connection is open wait in the core's queue (at most
``max_pending``, the oldest failing with 429) and leave when one opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as ssl_module
from collections.abc import AsyncGenerator, Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any, cast

from tether.backoff import Backoff
from tether.errors import ConnectionClosed, Timeout
from tether.rpc.channels.ws import format_peer
from tether.rpc.client import CallFailed, CallResult, RpcClientCore
from tether.rpc.dispatch import Dispatcher
from tether.rpc.frames import InvalidFrame, Request, parse_frame
from tether.ws.client import ClientWebSocket
from tether.ws.client import connect as ws_connect
from tether.ws.uri import for_logs

__all__ = ["DialOut"]

logger = logging.getLogger("tether.rpc")


class DialOut:
    """A persistent outbound WebSocket channel to a backend (``rpc.ws.server_address``).

    ``async with DialOut(dispatcher, "ws://backend:8000/rpc") as dialout:`` keeps the
    connection up until the block ends (or use `start` and `close`); meanwhile
    ``await dialout.call("Backend.Hello", {...})`` calls the backend.

    Args:
        dispatcher: serves the requests the backend sends.
        url: ``ws://`` or ``wss://`` address of the backend.
        ssl: an SSLContext for wss:// (``rpc.ws.ssl_ca_cert``/``ssl_cert``/``ssl_key``).
        headers: extra handshake headers (mDash: ``Authorization: Bearer <token>``).
        backoff_min: the first reconnect delay (``rpc.ws.reconnect_interval_min``).
        backoff_max: the largest delay (``rpc.ws.reconnect_interval_max``).
        open_timeout: seconds for TCP, TLS and the handshake.
        ping_interval: seconds between keepalive pings, None for none.
        max_pending: calls to the backend that may wait (``rpc.max_queue_length``).
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        url: str,
        *,
        ssl: ssl_module.SSLContext | None = None,
        headers: Sequence[tuple[str, str]] = (),
        backoff_min: float = 1.0,
        backoff_max: float = 60.0,
        open_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        max_pending: int = 25,
    ) -> None:
        self.dispatcher = dispatcher
        self.url = url
        self._shown = for_logs(url)  # never a password or a token in a log line
        self.channel = "WSS_out" if url.lower().startswith("wss:") else "WS_out"
        self._connect = ws_connect(
            url,
            subprotocols=["json-rpc"],
            origin="https://mongoose-os.com",
            headers=list(headers),
            ssl=ssl,
            open_timeout=open_timeout,
            ping_interval=ping_interval,
            max_size=max(dispatcher.max_frame_size, 2**16),
            backoff_min=backoff_min,
            backoff_max=backoff_max,
        )
        self._backoff = Backoff(backoff_min, backoff_max)
        self.core = RpcClientCore(dispatcher.device_id, max_pending=max_pending)
        self._waiters: dict[int, asyncio.Future[Any]] = {}
        self._ws: ClientWebSocket | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0

    def __repr__(self) -> str:
        return f"DialOut({self._shown!r}, connected={self.connected})"

    @property
    def connected(self) -> bool:
        """True while the connection is open."""
        return self._ws is not None

    async def wait_connected(self) -> None:
        """Wait until the connection is open."""
        await self._connected.wait()

    def start(self) -> None:
        """Start dialing, in a task; `close` stops it."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Close the connection and stop dialing; waiting calls fail with `ConnectionClosed`."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._tasks):
            task.cancel()
        closed = ConnectionClosed(1000, "dial-out channel closed")
        for future in self._waiters.values():
            if not future.done():
                future.set_exception(closed)

    async def __aenter__(self) -> DialOut:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def call(
        self, method: str, params: Any = None, *, timeout: float | None = 10.0, dst: str | None = None
    ) -> Any:
        """Call method on the backend and return its result.

        The frame carries ``src`` = the device id. While no connection is open the
        call waits for one (within timeout).

        Raises:
            RpcError: for an error reply, 429 if evicted from the queue.
            Timeout: if no reply came within timeout seconds.
            ConnectionClosed: if the channel was closed.
        """
        core = self.core
        call_id = core.call(method, params, dst=dst)
        future = asyncio.get_running_loop().create_future()
        self._waiters[call_id] = future
        self._process_events()
        self._flush()
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            raise Timeout(f"call of {method} timed out after {timeout} s") from None
        finally:
            del self._waiters[call_id]
            core.cancel(call_id)

    def notify(self, method: str, params: Any = None, *, dst: str | None = None) -> None:
        """Send a notification to the backend (queued while the connection is down)."""
        self.core.notify(method, params, dst=dst)
        self._flush()

    # Internals.

    def _flush(self) -> None:
        ws = self._ws
        if ws is None:
            return  # the frames stay in the core until a connection opens
        for frame in self.core.frames_to_send():
            try:
                ws.send_nowait(frame.decode("utf-8"))
            except ConnectionClosed:
                return

    def _process_events(self) -> None:
        for event in self.core.events_received():
            if isinstance(event, CallResult):
                future = self._waiters.get(event.id)
                if future is not None and not future.done():
                    future.set_result(event.result)
            elif isinstance(event, CallFailed):
                future = self._waiters.get(event.id)
                if future is not None and not future.done():
                    future.set_exception(event.error)

    async def _run(self) -> None:
        while True:
            # connect's iterator is an async generator: aclose() closes the connection it gave.
            connections = cast(AsyncGenerator[ClientWebSocket, None], aiter(self._connect))
            try:
                async for ws in connections:
                    self._backoff.reset()
                    await self._serve(ws)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A "permanent" failure of the iterator (a 4xx handshake answer, a bad
                # certificate): a device keeps trying, with the same backoff (§2.5).
                delay = self._backoff.next()
                logger.warning("dialing %s failed (%s); retrying in %.1f s", self._shown, exc, delay)
                await asyncio.sleep(delay)
            finally:
                await connections.aclose()

    def _answer(
        self,
        running: Coroutine[Any, Any, Any],
        done: Callable[[Any], None],
        failed: Callable[[BaseException], None],
    ) -> None:
        async def call() -> None:
            try:
                reply = await running
            except Exception as exc:
                failed(exc)
            else:
                done(reply)

        task = asyncio.get_running_loop().create_task(call())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, ws: ClientWebSocket) -> None:
        self.connections += 1
        peer = format_peer(ws.remote_address)
        logger.info("dial-out channel to %s open", self._shown)
        self._ws = ws
        self._connected.set()
        self._flush()
        dispatcher, channel = self.dispatcher, self.channel

        def done(reply: Any) -> None:
            if reply is not None:
                with contextlib.suppress(ConnectionClosed):
                    ws.send_nowait(dispatcher.encode(reply).decode("utf-8"))

        def push(frame: bytes) -> bool:
            return ws.send_nowait(frame.decode("utf-8"))

        def failed(exc: BaseException) -> None:
            if isinstance(exc, InvalidFrame):  # another device's dst (§1.1 step 2)
                logger.info("dropping a frame from %s: %s", self._shown, exc)
            else:  # pragma: no cover - dispatch() answers every handler failure itself
                logger.error("rpc from %s failed", self._shown, exc_info=exc)

        try:
            async for message in ws:
                try:
                    frame = parse_frame(message, max_size=dispatcher.max_frame_size)
                except InvalidFrame as exc:
                    logger.info("dropping an invalid frame from %s: %s", self._shown, exc)
                    continue
                if isinstance(frame, Request):
                    # A task per call, so that a handler's timeouts and cancellation are its
                    # own (asyncio.timeout acts on the current task); dial-out traffic is light.
                    self._answer(
                        dispatcher.dispatch(frame, channel=channel, peer=peer, push=push), done, failed
                    )
                else:
                    self.core.receive_frame(message)
                    self._flush()
                    self._process_events()
        except ConnectionClosed:
            pass
        finally:
            self._ws = None
            self._connected.clear()
            logger.info("dial-out channel to %s closed", self._shown)
