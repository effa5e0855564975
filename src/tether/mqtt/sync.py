"""The blocking MQTT client: `Client`, for scripts and threaded programs.

Example::

    from tether.mqtt.sync import Client

    with Client("mqtt://127.0.0.1", on_message=lambda m: print(m.topic, m.payload)) as client:
        client.subscribe("sensors/#", qos=1)
        client.publish("sensors/t1", b"21.5", qos=1)   # returns after PUBACK

Design: MQTT needs something reading the connection all the time (keep alive, incoming
messages, acknowledgements), so each blocking client runs the asyncio `tether.mqtt.Client`
on an event loop in a thread of its own, as paho-mqtt's ``loop_start()`` runs its network
loop. Every method hands its work to that thread and waits for the result, so every method
may be called from any thread. ``on_message`` runs in a third thread, the dispatcher, so a
callback may call any method, ``publish(qos=2)`` included, without deadlock; while it runs,
messages queue up to ``max_queue``, then reading from the network pauses.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar

from tether.errors import InvalidState, Timeout
from tether.mqtt.client import Client as AsyncClient
from tether.mqtt.client import MessageStream as AsyncMessageStream
from tether.mqtt.client import Payload
from tether.mqtt.packets import Properties, Subscription
from tether.mqtt.protocol import Connected, Message

__all__ = ["Client", "MessageStream"]

logger = logging.getLogger("tether.mqtt")

T = TypeVar("T")


class MessageStream:
    """Messages matching a filter, read with ``for message in stream`` or `get()`.

    Made by `Client.messages()`. Iteration ends when the client disconnects.
    """

    def __init__(self, client: Client, stream: AsyncMessageStream) -> None:
        self._client = client
        self._stream = stream

    def get(self, timeout: float | None = None) -> Message:
        """The next message.

        Raises:
            Timeout: after ``timeout`` seconds.
            StopIteration: once the stream ended.
        """
        if self._client._loop.is_closed():
            # The client disconnected, which ended the stream: hand out what it collected.
            if self._stream._queue:
                return self._stream._queue.popleft()
            raise StopIteration
        try:
            return self._client._call(self._stream.__anext__(), timeout)
        except StopAsyncIteration:
            raise StopIteration from None

    def __iter__(self) -> Iterator[Message]:
        """Every message until the client disconnects, however long the wait."""
        while True:
            try:
                yield self.get()
            except Timeout:
                continue
            except StopIteration:
                return

    def __len__(self) -> int:
        return len(self._stream)

    def close(self) -> None:
        """Stop collecting messages."""
        if not self._client._loop.is_closed():  # else the stream ended with the client
            self._client._loop.call_soon_threadsafe(self._stream.close)

    def __enter__(self) -> MessageStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Client:
    """A blocking MQTT client; every method is safe to call from any thread.

    Args:
        url: as for `tether.mqtt.Client` (mqtt://, mqtts://, ws://, wss://).
        on_message: called in the dispatcher thread with every message received.
        max_queue: messages waiting for ``on_message`` before reading pauses.
        timeout: the default timeout, in seconds, of every blocking call; None waits
            for ever.
        **kwargs: every other argument of `tether.mqtt.Client`.
    """

    def __init__(
        self,
        url: str,
        *,
        on_message: Callable[[Message], object] | None = None,
        max_queue: int = 1000,
        timeout: float | None = 60.0,
        **kwargs: Any,
    ) -> None:
        self.on_message = on_message
        self.timeout = timeout
        self._max_queue = max_queue
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tether-mqtt", daemon=True)
        self._dispatcher: threading.Thread | None = None
        self._lock = threading.Lock()
        self._client = self._run_sync(lambda: AsyncClient(url, **kwargs))

    def _run_sync(self, make: Callable[[], T]) -> T:
        # The asyncio client must be made in its loop's thread (it may read the loop).
        async def build() -> T:
            return make()

        if threading.current_thread() is self._thread:
            return make()  # waiting for the loop from its own thread would never end
        if not self._thread.is_alive():
            self._thread.start()
        return asyncio.run_coroutine_threadsafe(build(), self._loop).result()

    def _check_thread(self) -> None:
        if threading.current_thread() is self._thread:
            raise InvalidState("a blocking call from the client's own event loop thread")

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            self._check_thread()
        if self._loop.is_closed():
            coro.close()
            raise InvalidState("the client is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(self.timeout if timeout is None else timeout)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise Timeout(f"no result within {self.timeout if timeout is None else timeout} s") from exc

    # --- properties ----------------------------------------------------------------------------

    @property
    def client_id(self) -> str | None:
        """The client identifier in use."""
        return self._client.client_id

    @property
    def is_connected(self) -> bool:
        """True while connected."""
        return self._client.is_connected

    @property
    def asyncio_client(self) -> AsyncClient:
        """The `tether.mqtt.Client` doing the work (use it only from its loop's thread)."""
        return self._client

    # --- connecting ----------------------------------------------------------------------------

    def connect(self, timeout: float | None = None) -> Connected:
        """Connect (see `tether.mqtt.Client.connect`) and start the dispatcher.

        Raises:
            Refused, Timeout, OSError: as `tether.mqtt.Client.connect`.
        """
        self._check_thread()
        with self._lock:
            stream = None
            if self.on_message is not None and self._dispatcher is None:
                # Made before connecting: messages a resumed session holds may come with CONNACK.
                stream = self._run_sync(lambda: self._client.messages(max_queue=self._max_queue))
            connected = self._call(self._client.connect(), timeout)
            if stream is not None:
                self._dispatcher = threading.Thread(
                    target=self._dispatch, args=(stream,), name="tether-mqtt-dispatch", daemon=True
                )
                self._dispatcher.start()
            return connected

    def _dispatch(self, stream: AsyncMessageStream) -> None:
        while True:
            next_message = stream.__anext__()
            try:
                future = asyncio.run_coroutine_threadsafe(next_message, self._loop)
            except RuntimeError:  # the loop is closed: the callback disconnected the client
                next_message.close()
                return
            try:
                message = future.result()
            except (StopAsyncIteration, RuntimeError):
                return
            except Exception as exc:
                logger.debug("message dispatch ended: %s", exc)
                return
            callback = self.on_message
            if callback is None:
                continue
            try:
                callback(message)
            except Exception:
                logger.exception("on_message callback failed")

    def disconnect(self, timeout: float | None = None) -> None:
        """Disconnect, stop the threads; safe to call more than once and from a callback."""
        if self._loop.is_closed():
            return
        # A callback must not wait for the lock: a thread in disconnect() may hold it while
        # it waits for the callback to return. That thread finishes what this one started.
        if not self._lock.acquire(blocking=threading.current_thread() is not self._dispatcher):
            if self._thread.is_alive():
                with contextlib.suppress(InvalidState):  # that thread closed the loop
                    self._call(self._client.disconnect(), timeout)
            return
        try:
            if self._thread.is_alive():
                self._call(self._client.disconnect(), timeout)
            dispatcher = self._dispatcher
            if dispatcher is not None and dispatcher is not threading.current_thread():
                dispatcher.join(self.timeout)
            if self._thread.is_alive():
                self._loop.call_soon_threadsafe(self._loop.stop)
                if threading.current_thread() is not self._thread:
                    self._thread.join(self.timeout)
            if not self._thread.is_alive():
                self._loop.close()
        finally:
            self._lock.release()

    def __enter__(self) -> Client:
        try:
            self.connect()
        except BaseException:
            self.disconnect()  # stop the loop thread; __exit__ will not run
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.disconnect()

    def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until connected (see `tether.mqtt.Client.wait_connected`)."""
        self._call(self._client.wait_connected(), timeout)

    # --- the API -------------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: Payload = b"",
        qos: int = 0,
        retain: bool = False,
        *,
        properties: Properties | None = None,
        timeout: float | None = None,
    ) -> int:
        """Publish and wait until the QoS flow completes (see `tether.mqtt.Client.publish`)."""
        return self._call(self._client.publish(topic, payload, qos, retain, properties=properties), timeout)

    def subscribe(
        self,
        subscriptions: str | Subscription | Sequence[str | Subscription | tuple[str, int]],
        qos: int = 0,
        *,
        properties: Properties | None = None,
        timeout: float | None = None,
    ) -> tuple[int, ...]:
        """Subscribe and wait for SUBACK (see `tether.mqtt.Client.subscribe`)."""
        return self._call(self._client.subscribe(subscriptions, qos, properties=properties), timeout)

    def unsubscribe(
        self,
        filters: str | Sequence[str],
        *,
        properties: Properties | None = None,
        timeout: float | None = None,
    ) -> None:
        """Unsubscribe and wait for UNSUBACK."""
        self._call(self._client.unsubscribe(filters, properties=properties), timeout)

    def messages(self, filter: str | None = None, *, max_queue: int = 1000) -> MessageStream:
        """Collect messages matching ``filter`` (see `tether.mqtt.Client.messages`)."""
        stream = self._run_sync(lambda: self._client.messages(filter, max_queue=max_queue))
        return MessageStream(self, stream)

    def request(self, topic: str, payload: Payload = b"", qos: int = 1, *, timeout: float = 10.0) -> Message:
        """Publish a request and wait for its response (MQTT 5; see `tether.mqtt.Client.request`)."""
        return self._call(self._client.request(topic, payload, qos, timeout=timeout), timeout + 5)

    def respond(self, request: Message, payload: Payload = b"", qos: int | None = None) -> int:
        """Publish the response to a request message."""
        return self._call(self._client.respond(request, payload, qos))
