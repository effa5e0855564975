"""MQTT 3.1.1 and 5.0: a sans-I/O core, an asyncio client and a blocking client.

Client::

    async with tether.mqtt.Client("mqtts://broker.example.com", store="outbox.sqlite") as client:
        messages = client.messages("devices/+/cmd")
        await client.subscribe("devices/+/cmd", qos=1)
        await client.publish("devices/pump-7/telemetry", b'{"t": 21.5}', qos=1)
        async for message in messages:
            print(message.topic, message.payload)

The URL scheme picks the transport: ``mqtt://`` (TCP), ``mqtts://`` (TLS), ``ws://`` and
``wss://`` (WebSocket). The blocking client is `tether.mqtt.sync`; the packet codec is
`tether.mqtt.packets` and the session core `tether.mqtt.protocol`.
"""

from __future__ import annotations

from tether.errors import ConnectionClosed, InvalidState, ProtocolError, Refused, Timeout
from tether.mqtt.client import Client, MessageStream
from tether.mqtt.packets import MQTT_3_1_1, MQTT_5, Properties, ReasonCode, Subscription, Will, topic_matches
from tether.mqtt.protocol import Connected, Message
from tether.mqtt.store import Outbox, OutboxEntry, OutboxFull

__all__ = [
    "MQTT_3_1_1",
    "MQTT_5",
    "Client",
    "Connected",
    "ConnectionClosed",
    "InvalidState",
    "Message",
    "MessageStream",
    "Outbox",
    "OutboxEntry",
    "OutboxFull",
    "Properties",
    "ProtocolError",
    "ReasonCode",
    "Refused",
    "Subscription",
    "Timeout",
    "Will",
    "topic_matches",
]
