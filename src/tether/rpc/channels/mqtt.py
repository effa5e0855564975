"""RPC over MQTT (spec mgos-rpc.md §2.3): the device side and the client side.

Device side (`MqttChannel`, channel type ``MQTT``), as rpc-mqtt does it on the
``mqtt.*`` connection:

- subscribes with QoS 1 to ``<device_id>/rpc``, or with ``wildcard`` (``rpc.mqtt.sub_wc``,
  the default) to ``<device_id>/rpc/#``, which matches ``<device_id>/rpc`` as well
  (MQTT 5.0 §4.7.1.2); on ``<device_id>/rpc/<Method>`` the method comes from the topic and
  overrides the payload's, while ``id``, ``src`` and ``params`` come from the payload;
- each message's payload is one frame; a request with an ``id`` but no ``src`` cannot be
  answered and is dropped; a notification (no ``id``) runs its handler and gets nothing;
  invalid frames, responses and frames over ``dispatcher.max_frame_size`` are logged on
  ``tether.rpc`` and dropped;
- the reply goes to ``<src>/rpc`` (``rpc.mqtt.pub_topic`` of the reply's ``dst``) with QoS 1
  (``rpc.mqtt.qos``), not retained. ``RPC.Ping`` reports ``""`` as on the firmware.

Client side (`open_mqtt_transport`), as mos does it for ``mqtt://broker/<device_id>``:
subscribe QoS 1 to ``<src>/rpc``, publish each frame QoS 1 to ``<device_id>/rpc``. mos's
``src`` is ``<device_id>/rpc-resp/<client_id>`` (`response_src`), outside the device's
wildcard and of its own, so that two clients never see each other's replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import ssl as ssl_module
from types import TracebackType
from urllib.parse import unquote, urlsplit

from tether.errors import ConnectionClosed, TetherError, Timeout
from tether.mqtt import Client, Message, MessageStream
from tether.rpc.dispatch import Dispatcher
from tether.rpc.frames import InvalidFrame, Request, parse_frame

__all__ = ["MqttChannel", "MqttTransport", "open_mqtt_transport", "response_src", "serve_mqtt"]

logger = logging.getLogger("tether.rpc")

#: The channel type ACL entries name (§4).
CHANNEL_TYPE = "MQTT"
_WHITESPACE = b" \t\r\n"


def _check_topic_part(name: str, value: str) -> None:
    if not value:
        raise ValueError(f"{name} must not be empty")
    if "+" in value or "#" in value or "\0" in value:
        raise ValueError(f"{name} {value!r} contains '+', '#' or NUL")


def _with_method(payload: bytes, method: str) -> bytes:
    """The payload with ``method`` set (last key wins), keeping its other bytes as they are.

    Used for ``<device_id>/rpc/<Method>`` topics, where the topic names the method (§2.3).
    A payload that does not end with ``}`` is returned unchanged (it is no frame).
    """
    text = payload.rstrip(_WHITESPACE)
    if not text.endswith(b"}"):
        return payload
    body = text[:-1].rstrip(_WHITESPACE)
    separator = b"" if body.endswith(b"{") else b","
    return body + separator + b'"method":' + json.dumps(method).encode("ascii") + b"}"


class MqttChannel:
    """Serves a dispatcher on an MQTT client's connection (§2.3).

    Args:
        dispatcher: answers the frames, with channel type ``MQTT``.
        client: a `tether.mqtt.Client`, connected or not yet; the channel does not close it.
        device_id: the id in the topics; default ``dispatcher.device_id``.
        wildcard: subscribe ``<device_id>/rpc/#`` (methods in topics), else ``<device_id>/rpc``.
        qos: the QoS of the subscription and of replies (``rpc.mqtt.qos``).
        max_concurrency: messages answered at once; default ``dispatcher.max_pending + 1``
            (one more than the dispatcher admits, so a flood is answered with 429). Beyond
            it the channel stops reading, and the client's flow control holds the broker.

    Raises:
        ValueError: if device_id is empty or holds ``+``, ``#`` or NUL, or qos is not 0-2.

    Use ``async with MqttChannel(...)`` or `start` and `close`; `serve_mqtt` runs one.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        client: Client,
        device_id: str | None = None,
        *,
        wildcard: bool = True,
        qos: int = 1,
        max_concurrency: int | None = None,
    ) -> None:
        self.device_id = dispatcher.device_id if device_id is None else device_id
        _check_topic_part("device_id", self.device_id)
        if qos not in (0, 1, 2):
            raise ValueError(f"qos {qos!r} is not 0, 1 or 2")
        self.dispatcher = dispatcher
        self.client = client
        self.qos = qos
        #: The topic requests arrive on; replies go to ``<src>/rpc``.
        self.topic = f"{self.device_id}/rpc"
        #: The filter subscribed to.
        self.filter = f"{self.topic}/#" if wildcard else self.topic
        self._slots = asyncio.Semaphore(max_concurrency or dispatcher.max_pending + 1)
        self._stream: MessageStream | None = None
        self._serving: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"MqttChannel({self.filter!r}, in_flight={len(self._tasks)})"

    async def start(self) -> None:
        """Subscribe (returns on SUBACK, when the channel is open) and start serving.

        Raises:
            Refused: if the broker refuses the subscription.
            InvalidState: if the client is closed.
        """
        if self._stream is not None:
            raise RuntimeError("the channel is already started")
        self._stream = self.client.messages(self.filter)
        try:
            await self.client.subscribe(self.filter, qos=self.qos)
        except BaseException:
            self._stream.close()
            self._stream = None
            raise
        self._serving = asyncio.create_task(self._serve(self._stream))

    async def wait_closed(self) -> None:
        """Wait until the channel stops: `close`, or the client's end.

        Raises:
            TetherError: the error that ended the client, if any.
        """
        if self._serving is not None:
            await asyncio.shield(self._serving)

    async def close(self) -> None:
        """Stop serving: unsubscribe (if the client is still up) and cancel the calls in flight."""
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()
            if self.client.is_connected:
                with contextlib.suppress(TetherError, OSError):
                    await self.client.unsubscribe(self.filter)
        tasks = [*self._tasks]
        if self._serving is not None:
            tasks.append(self._serving)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> MqttChannel:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _serve(self, stream: MessageStream) -> None:
        async for message in stream:
            await self._slots.acquire()
            task = asyncio.create_task(self._answer(message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _answer(self, message: Message) -> None:
        try:
            await self._handle(message)
        finally:
            self._slots.release()

    async def _handle(self, message: Message) -> None:
        dispatcher = self.dispatcher
        data = message.payload
        try:
            if len(data) > dispatcher.max_frame_size:
                parse_frame(data, max_size=dispatcher.max_frame_size)  # raises FrameTooBig
            if message.topic != self.topic:
                # §2.3: on <id>/rpc/<Method> the topic names the method.
                method = message.topic[len(self.topic) + 1 :]
                data = _with_method(data, method)
            frame = parse_frame(data, max_size=max(dispatcher.max_frame_size, len(data)))
            if not isinstance(frame, Request):
                logger.debug("mqtt: dropped a response on %s: nothing waits for it", message.topic)
                return
            if not frame.src and not frame.is_notification:
                logger.info(
                    "mqtt: dropped request %s for %s: no src to reply to", frame.id_json, frame.method
                )
                return
            reply = await dispatcher.dispatch(frame, channel=CHANNEL_TYPE, peer="")
        except InvalidFrame as exc:
            logger.info("mqtt: dropped an invalid frame on %s: %s", message.topic, exc)
            return
        if reply is None or not frame.src:
            return
        topic = f"{frame.src}/rpc"  # rpc.mqtt.pub_topic "%.*s/rpc" of the reply's dst
        try:
            await self.client.publish(topic, dispatcher.encode(reply), qos=self.qos)
        except (ValueError, TetherError) as exc:
            logger.info("mqtt: reply %s to %r not sent: %s", reply.id_json, topic, exc)


async def serve_mqtt(
    dispatcher: Dispatcher,
    client: Client,
    device_id: str | None = None,
    *,
    wildcard: bool = True,
    qos: int = 1,
    max_concurrency: int | None = None,
) -> None:
    """Serve dispatcher on client until the client ends or the task is cancelled.

    See `MqttChannel` for the arguments.

    Raises:
        TetherError: the error that ended the client, if any.
    """
    channel = MqttChannel(
        dispatcher, client, device_id, wildcard=wildcard, qos=qos, max_concurrency=max_concurrency
    )
    async with channel:
        await channel.wait_closed()


# --- client side ----------------------------------------------------------------------------


def response_src(device_id: str, client_id: str | None = None) -> str:
    """mos's ``src`` for calls over MQTT: ``<device_id>/rpc-resp/<client_id>`` (§2.3).

    client_id defaults to ``tether-`` and 8 random hex digits, so each caller gets a
    reply topic of its own.
    """
    return f"{device_id}/rpc-resp/{client_id or 'tether-' + secrets.token_hex(4)}"


class MqttTransport:
    """A client-side `tether.rpc.transports.Transport` over MQTT (§2.3).

    Made by `open_mqtt_transport`. Frames are sent as they are (their ``src`` must be the
    transport's ``src``, or the replies go elsewhere).

    Attributes:
        client: the MQTT client it owns.
        device_id: the device called: frames go to ``<device_id>/rpc``.
        src: replies arrive on ``<src>/rpc``.
    """

    def __init__(
        self, client: Client, stream: MessageStream, *, device_id: str, src: str, qos: int = 1
    ) -> None:
        self.client = client
        self.device_id = device_id
        self.src = src
        self.qos = qos
        self._stream = stream
        self._closed = False

    def __repr__(self) -> str:
        return f"MqttTransport({self.client.url!r}, device_id={self.device_id!r}, src={self.src!r})"

    async def send(self, frame: bytes) -> None:
        """Publish one frame to ``<device_id>/rpc`` (QoS 1: returns on PUBACK).

        Raises:
            ConnectionClosed: if the transport or the connection is closed.
        """
        if self._closed:
            raise ConnectionClosed(1000, "transport closed")
        try:
            await self.client.publish(f"{self.device_id}/rpc", frame, qos=self.qos)
        except ConnectionClosed:
            raise
        except TetherError as exc:
            raise ConnectionClosed(1006, f"MQTT publish failed: {exc}") from exc

    async def recv(self) -> bytes:
        """The next frame published to ``<src>/rpc``.

        Raises:
            ConnectionClosed: once the transport or the connection is closed.
        """
        try:
            message = await self._stream.__anext__()
        except StopAsyncIteration:
            raise ConnectionClosed(1000, "transport closed") from None
        except ConnectionClosed:
            raise
        except TetherError as exc:
            raise ConnectionClosed(1006, f"MQTT connection lost: {exc}") from exc
        return message.payload

    async def close(self) -> None:
        """Disconnect; a pending `recv` raises `ConnectionClosed`."""
        if self._closed:
            return
        self._closed = True
        self._stream.close()
        with contextlib.suppress(TetherError, OSError):
            await self.client.disconnect()


async def open_mqtt_transport(
    url: str, *, src: str, ssl: ssl_module.SSLContext | None = None, timeout: float = 10.0
) -> MqttTransport:
    """Connect to a broker as mos does for ``--port mqtt://[user:pass@]BROKER[:port]/<device_id>``.

    Connects (client id ``tether-`` + random hex, no reconnect), subscribes QoS 1 to
    ``<src>/rpc`` and returns once the subscription is in place.

    Args:
        url: ``mqtt://`` (port 1883) or ``mqtts://`` (8883); the path is the device id.
        src: the ``src`` of the caller's frames; see `response_src` for mos's choice.
        ssl: the TLS context for ``mqtts://``; default: verify against the system store.
        timeout: seconds for connecting and subscribing, each.

    Raises:
        ValueError: for another scheme, no device id, or ``+``/``#`` in the device id or src.
        Refused: if the broker refuses the connection or the subscription.
        Timeout: if the broker does not answer in time.
        OSError: if the broker cannot be reached (``ssl.SSLError`` for TLS failures).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"URL {url!r} is not mqtt:// or mqtts://")
    device_id = unquote(parts.path[1:])  # mos: the path after its first '/'
    _check_topic_part("device id in URL", device_id)
    _check_topic_part("src", src)
    client = Client(
        f"{scheme}://{parts.netloc}",
        client_id=f"tether-{secrets.token_hex(4)}",
        ssl=ssl,
        reconnect=False,
        connect_timeout=timeout,
    )
    stream = client.messages(f"{src}/rpc")
    try:
        await client.connect()
        try:
            await asyncio.wait_for(client.subscribe(f"{src}/rpc", qos=1), timeout)
        except asyncio.TimeoutError:
            raise Timeout(f"no SUBACK for {src}/rpc within {timeout:g} s") from None
    except BaseException:
        stream.close()
        with contextlib.suppress(TetherError, OSError):
            await client.disconnect()
        raise
    return MqttTransport(client, stream, device_id=device_id, src=src)
