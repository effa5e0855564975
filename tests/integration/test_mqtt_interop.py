"""Interop through a real mosquitto: tether's MQTT client with mosquitto_pub/mosquitto_sub and paho-mqtt.

Issue 3, acceptance 2: messages published by tether arrive at ``mosquitto_sub`` and at a
``paho-mqtt`` subscriber byte for byte, and the other way round. Every direction sends the
same payloads (`PAYLOADS`: empty, every byte value, NUL, CR LF, UTF-8, 4 KiB of noise) in
order over MQTT 3.1.1 and 5.0; paho runs over every transport (TCP, TLS, WebSocket, secure
WebSocket), mosquitto's clients over TCP and TLS (they have no WebSocket).

The first tests check the harness without tether (paho and the mosquitto clients with each
other), so that a failure of a tether test points at tether. mosquitto_sub and
mosquitto_pub run as subprocesses stopped by PID; paho runs its network thread
(`loop_start`) and is driven through `Paho`.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import random
import threading
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from tests.integration.mosquitto import SCHEMES, TIMEOUT, Broker, receive, run, tether_client

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

VERSIONS = [pytest.param(4, id="v311"), pytest.param(5, id="v5")]
QOS = [0, 1, 2]
TRANSPORTS = [pytest.param(scheme, id=scheme) for scheme in SCHEMES]
MOSQUITTO_TRANSPORTS = ["mqtt", "mqtts"]  # mosquitto_pub and mosquitto_sub have no WebSocket
PAYLOADS = [
    b"",
    bytes(range(256)),
    b"\x00",
    b"\r\n\r\n",
    "température ✓ 🚀".encode(),
    random.Random(3).randbytes(4096),
]


# ------------------------------------------------------------------- paho-mqtt


class Paho:
    """A paho-mqtt 2.x client on its network thread, with blocking, bounded helpers.

    Messages go into a queue; `subscribe()` and `publish()` wait for the broker's answer.
    Use as a context manager: connects on entry, disconnects and joins the thread on exit.
    """

    def __init__(self, broker: Broker, scheme: str, version: int, client_id: str, **connect: Any) -> None:
        websockets = scheme in ("ws", "wss")
        self.version = version
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5 if version == 5 else paho.MQTTv311,
            transport="websockets" if websockets else "tcp",
        )
        if websockets:
            self.client.ws_set_options(path="/mqtt")
        if scheme in ("mqtts", "wss"):
            self.client.tls_set_context(broker.client_ssl())
        self.host, self.port = broker.host, broker.port(scheme)
        self.connect_args = connect
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.connected = threading.Event()
        self.connect_reason: Any = None
        self._acks: dict[int, Any] = {}
        self._acked = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda _client, _userdata, message: self.messages.put(message)
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(self, _client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        self.connect_reason = reason
        self.connected.set()

    def _on_subscribe(self, _client: Any, _userdata: Any, mid: int, reasons: Any, _props: Any) -> None:
        with self._acked:
            self._acks[mid] = [int(reason.value) for reason in reasons]
            self._acked.notify_all()

    def __enter__(self) -> Paho:
        self.client.connect(self.host, self.port, keepalive=60, **self.connect_args)
        self.client.loop_start()
        try:
            if not self.connected.wait(TIMEOUT):
                raise TimeoutError("paho: no CONNACK")
            if self.connect_reason.is_failure:
                raise ConnectionError(f"paho: connection refused: {self.connect_reason}")
        except BaseException:
            self.client.loop_stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        # paho closes the socket pair that wakes its thread only in __del__; in a reference
        # cycle the garbage collector may take the sockets first (ResourceWarning).
        self.client._reset_sockets()

    def subscribe(self, topic_filter: str, qos: int) -> list[int]:
        """Subscribe and wait for the SUBACK; return its reason codes."""
        result, mid = self.client.subscribe(topic_filter, qos)
        assert result == paho.MQTT_ERR_SUCCESS, result
        with self._acked:
            if not self._acked.wait_for(lambda: mid in self._acks, TIMEOUT):
                raise TimeoutError(f"paho: no SUBACK for {topic_filter!r}")
            return self._acks.pop(mid)

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> None:
        """Publish and wait until the QoS flow is complete (for QoS 0: written)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(TIMEOUT)
        if not info.is_published():
            raise TimeoutError(f"paho: publish on {topic!r} not completed")

    def get(self) -> paho.MQTTMessage:
        try:
            return self.messages.get(timeout=TIMEOUT)
        except queue.Empty:
            raise TimeoutError("paho: no message") from None


@contextlib.contextmanager
def paho_subscriber(broker: Broker, scheme: str, version: int, topic_filter: str, qos: int) -> Iterator[Paho]:
    with Paho(broker, scheme, version, f"paho-sub-{version}-{scheme}") as client:
        assert client.subscribe(topic_filter, qos) == [qos]
        yield client


# ------------------------------------------ the harness itself: no tether here


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("scheme", TRANSPORTS)
def test_paho_to_mosquitto_sub(mosquitto: Broker, topic: str, scheme: str, version: int) -> None:
    """paho publishes over each transport; mosquitto_sub gets every payload byte for byte."""
    with (
        mosquitto.mosquitto_sub(topic, qos=1, version=version) as sub,
        Paho(mosquitto, scheme, version, f"paho-pub-{version}-{scheme}") as pub,
    ):
        for payload in PAYLOADS:
            pub.publish(topic, payload, qos=1)
        received = [sub.get(TIMEOUT) for _ in PAYLOADS]
    assert [m.payload for m in received] == PAYLOADS
    assert {(m.topic, m.qos, m.retain) for m in received} == {(topic, 1, False)}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("scheme", TRANSPORTS)
def test_mosquitto_pub_to_paho(mosquitto: Broker, topic: str, scheme: str, version: int) -> None:
    """mosquitto_pub publishes; paho, over each transport, gets every payload byte for byte."""
    with paho_subscriber(mosquitto, scheme, version, topic, qos=2) as sub:
        for payload in PAYLOADS:
            mosquitto.mosquitto_pub(topic, payload, qos=2, version=version)
        received = [sub.get() for _ in PAYLOADS]
    assert [m.payload for m in received] == PAYLOADS
    assert {(m.topic, m.qos, m.retain) for m in received} == {(topic, 2, False)}


# -------------------------------------------------------- tether and its peers


@pytest.mark.parametrize("qos", QOS)
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("scheme", MOSQUITTO_TRANSPORTS)
def test_tether_to_mosquitto_sub(mosquitto: Broker, topic: str, scheme: str, version: int, qos: int) -> None:
    """tether publishes; mosquitto_sub prints every payload, in order, byte for byte."""

    async def publish_all() -> None:
        async with tether_client(mosquitto, scheme, version, f"tether-pub-{version}-{qos}") as client:
            for payload in PAYLOADS:
                await client.publish(topic, payload, qos=qos)

    with mosquitto.mosquitto_sub(topic, qos=2, version=version, scheme=scheme) as sub:
        run(publish_all())
        received = [sub.get(TIMEOUT) for _ in PAYLOADS]
    assert [m.payload for m in received] == PAYLOADS
    assert {(m.topic, m.qos, m.retain) for m in received} == {(topic, qos, False)}


@pytest.mark.parametrize("qos", QOS)
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("scheme", MOSQUITTO_TRANSPORTS)
def test_mosquitto_pub_to_tether(mosquitto: Broker, topic: str, scheme: str, version: int, qos: int) -> None:
    """mosquitto_pub publishes; tether receives every payload, in order, byte for byte."""

    async def main() -> list[Any]:
        async with tether_client(mosquitto, scheme, version, f"tether-sub-{version}-{qos}") as client:
            messages = client.messages(topic)
            await client.subscribe(topic, qos=2)
            for payload in PAYLOADS:
                await asyncio.to_thread(
                    mosquitto.mosquitto_pub, topic, payload, qos=qos, version=version, scheme=scheme
                )
            return await receive(messages, len(PAYLOADS))

    received = run(main())
    assert [m.payload for m in received] == PAYLOADS
    assert {(m.topic, m.qos, m.retain) for m in received} == {(topic, qos, False)}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("scheme", TRANSPORTS)
def test_tether_to_paho(mosquitto: Broker, topic: str, scheme: str, version: int) -> None:
    """tether publishes over each transport (QoS 0, 1, 2 in turn); paho gets it byte for byte."""

    async def publish_all() -> None:
        async with tether_client(mosquitto, scheme, version, f"tether-pub-{version}-{scheme}") as client:
            for index, payload in enumerate(PAYLOADS):
                await client.publish(topic, payload, qos=index % 3)

    with paho_subscriber(mosquitto, "mqtt", version, topic, qos=2) as sub:
        run(publish_all())
        received = [sub.get() for _ in PAYLOADS]
    # Order holds per QoS only: paho hands a QoS 2 message over at PUBREL (4.3.3 method B),
    # after a QoS 0 message the broker sent later.
    assert {m.payload: m.qos for m in received} == {p: i % 3 for i, p in enumerate(PAYLOADS)}
    assert len(received) == len(PAYLOADS)
    assert {(m.topic, m.retain) for m in received} == {(topic, False)}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("scheme", TRANSPORTS)
def test_paho_to_tether(mosquitto: Broker, topic: str, scheme: str, version: int) -> None:
    """paho publishes (QoS 0, 1, 2 in turn); tether, over each transport, gets it byte for byte."""

    async def main() -> list[Any]:
        async with tether_client(mosquitto, scheme, version, f"tether-sub-{version}-{scheme}") as client:
            messages = client.messages(topic)
            await client.subscribe(topic, qos=2)
            with Paho(mosquitto, "mqtt", version, f"paho-pub-{version}-{scheme}") as pub:
                for index, payload in enumerate(PAYLOADS):
                    await asyncio.to_thread(pub.publish, topic, payload, index % 3)
            return await receive(messages, len(PAYLOADS))

    received = run(main())
    # Order holds per QoS only: paho hands a QoS 2 message over at PUBREL (4.3.3 method B),
    # after a QoS 0 message the broker sent later.
    assert {m.payload: m.qos for m in received} == {p: i % 3 for i, p in enumerate(PAYLOADS)}
    assert len(received) == len(PAYLOADS)
    assert {(m.topic, m.retain) for m in received} == {(topic, False)}


def test_tether_v5_properties_reach_paho(mosquitto: Broker, topic: str) -> None:
    """A 5.0 publish's user properties, content type and correlation data reach paho intact."""

    async def publish() -> None:
        from tether.mqtt.packets import Properties

        async with tether_client(mosquitto, "mqtt", 5, "tether-props") as client:
            await client.publish(
                topic,
                b"\x00\xff",
                qos=1,
                properties=Properties(
                    user_property=(("k", "v"), ("k", "w")),
                    content_type="application/octet-stream",
                    correlation_data=bytes(range(256)),
                    response_topic=topic + "/reply",
                ),
            )

    with paho_subscriber(mosquitto, "mqtt", 5, topic, qos=1) as sub:
        run(publish())
        message = sub.get()
    assert message.payload == b"\x00\xff"
    assert message.properties.UserProperty == [("k", "v"), ("k", "w")]
    assert message.properties.ContentType == "application/octet-stream"
    assert message.properties.CorrelationData == bytes(range(256))
    assert message.properties.ResponseTopic == topic + "/reply"
