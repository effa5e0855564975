"""The client side of an MQTT session: tether.mqtt.protocol, driven by a fake broker."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.errors import InvalidState, MalformedPacket, PayloadTooBig, ProtocolError
from tether.mqtt.packets import (
    MQTT_3_1_1,
    MQTT_5,
    Auth,
    ConnAck,
    Connect,
    ConnectReturnCode,
    Disconnect,
    Packet,
    PacketReader,
    PingReq,
    PingResp,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    ReasonCode,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
    encode,
)
from tether.mqtt.protocol import (
    AuthReceived,
    Connected,
    ConnectFailed,
    Connection,
    Disconnected,
    KeepAliveTimeout,
    Message,
    PendingPublish,
    PendingQueueFull,
    PongReceived,
    Published,
    State,
    Subscribed,
    Unsubscribed,
)

V4, V5 = MQTT_3_1_1, MQTT_5
RC = ReasonCode
BOTH = pytest.mark.parametrize("version", [V4, V5])


class Broker:
    """A fake broker: decodes what the client wrote, encodes what it answers."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.version = conn.version
        self.reader = PacketReader(conn.version)

    def received(self) -> list[Packet]:
        return self.reader.feed(self.conn.data_to_send())

    def wire(self, *packets: Packet) -> bytes:
        return b"".join(encode(p, self.version) for p in packets)

    def send(self, *packets: Packet, now: float = 0.0) -> list[Any]:
        self.conn.receive_data(self.wire(*packets), now)
        return self.conn.events_received()


def connect(version: int = V5, connack: ConnAck | None = None, **kwargs: Any) -> tuple[Connection, Broker]:
    kwargs.setdefault("client_id", "pump-7")
    conn = Connection(version=version, **kwargs)
    broker = Broker(conn)
    conn.connect(now=0.0)
    [packet] = broker.received()
    assert isinstance(packet, Connect)
    events = broker.send(connack or ConnAck())
    assert isinstance(events[0], Connected)
    assert conn.state is State.CONNECTED
    return conn, broker


def assert_failed(conn: Connection, error: type[ProtocolError], code: int) -> None:
    assert conn.state is State.CLOSED
    assert type(conn.error) is error
    assert conn.error.reason_code == code
    expected = encode(Disconnect(RC(code)), V5) if conn.version == V5 else b""
    assert conn.data_to_send() == expected


# --- connecting ------------------------------------------------------------------------


def test_connect_v5_announces_limits():
    conn = Connection(
        "pump-7",
        keepalive=30,
        receive_maximum=10,
        topic_alias_maximum=5,
        max_packet_size=4096,
        username="u",
        password=b"p",
        will=Will("dead", b"x"),
        connect_properties=Properties(session_expiry_interval=60),
    )
    broker = Broker(conn)
    assert conn.state is State.DISCONNECTED
    conn.connect(now=5.0)
    assert conn.state is State.CONNECTING
    assert conn.next_deadline() is None
    [packet] = broker.received()
    assert packet == Connect(
        "pump-7",
        True,
        30,
        "u",
        b"p",
        Will("dead", b"x"),
        Properties(
            session_expiry_interval=60, receive_maximum=10, topic_alias_maximum=5, maximum_packet_size=4096
        ),
        V5,
    )


def test_connect_v5_defaults_leave_off_default_properties():
    conn = Connection("c")
    conn.connect(now=0)
    [packet] = Broker(conn).received()
    assert isinstance(packet, Connect)
    assert packet.properties == Properties(maximum_packet_size=2**20)


def test_connect_v4_has_no_properties():
    conn = Connection("c", version=V4, clean_start=False)
    conn.connect(now=0)
    [packet] = Broker(conn).received()
    assert packet == Connect("c", False, 60, version=V4)


def test_connack_v5_properties_apply():
    props = Properties(
        assigned_client_identifier="auto-1",
        receive_maximum=3,
        maximum_packet_size=500,
        topic_alias_maximum=4,
        maximum_qos=1,
        retain_available=False,
        server_keep_alive=10,
    )
    conn, _broker = connect(client_id="", connack=ConnAck(False, RC.SUCCESS, props))
    assert conn.client_id == "auto-1"
    assert conn.server_receive_maximum == 3
    assert conn.server_maximum_packet_size == 500
    assert conn.server_topic_alias_maximum == 4
    assert conn.server_maximum_qos == 1
    assert conn.server_retain_available is False
    assert conn.effective_keepalive == 10


@BOTH
def test_connected_event(version):
    conn = Connection("c", version=version)
    broker = Broker(conn)
    conn.connect(now=0)
    broker.received()
    assert broker.send(ConnAck()) == [Connected(False, Properties(), False)]


def test_connack_refused_v4():
    conn = Connection("c", version=V4)
    broker = Broker(conn)
    conn.connect(now=0)
    events = broker.send(ConnAck(False, ConnectReturnCode.NOT_AUTHORIZED))
    assert events == [ConnectFailed(5)]
    assert conn.state is State.CLOSED
    assert conn.error is None
    assert conn.data_to_send() == encode(Connect("c", version=V4, keepalive=60), V4)


def test_connack_refused_v5():
    conn = Connection("c")
    broker = Broker(conn)
    conn.connect(now=0)
    broker.received()
    props = Properties(reason_string="go away")
    assert broker.send(ConnAck(False, RC.NOT_AUTHORIZED, props)) == [ConnectFailed(0x87, props)]
    assert conn.state is State.CLOSED
    assert conn.data_to_send() == b""
    # Input after CLOSED is ignored.
    assert broker.send(PingResp()) == []


def test_constructor_arguments_are_checked():
    for kwargs in (
        {"version": 3},
        {"receive_maximum": 0},
        {"receive_maximum": 65536},
        {"topic_alias_maximum": -1},
        {"max_packet_size": 1},
        {"max_pending": -1},
        {"ping_timeout": 0},
        {"keepalive": 70000},
        {"version": V4, "connect_properties": Properties(session_expiry_interval=1)},
    ):
        with pytest.raises(ValueError):
            Connection("c", **kwargs)


def test_v4_empty_client_id_needs_clean_start():
    conn = Connection("", version=V4)
    with pytest.raises(ValueError, match="client identifier"):
        conn.connect(now=0, clean_start=False)
    assert conn.state is State.DISCONNECTED
    assert conn.data_to_send() == b""


def test_calls_in_the_wrong_state():
    conn = Connection("c")
    with pytest.raises(InvalidState):
        conn.publish("t", b"x")
    with pytest.raises(InvalidState):
        conn.subscribe(["t"])
    with pytest.raises(InvalidState):
        conn.unsubscribe(["t"])
    with pytest.raises(InvalidState):
        conn.ping(0)
    with pytest.raises(InvalidState):
        conn.disconnect()
    with pytest.raises(InvalidState):
        conn.auth()
    with pytest.raises(InvalidState):
        conn.ack(Message("t", b"", 1, packet_id=1))
    with pytest.raises(InvalidState, match="DISCONNECTED"):
        conn.receive_data(b"\x20\x02\x00\x00", now=0)
    conn.connect(now=0)
    with pytest.raises(InvalidState, match="connect"):
        conn.connect(now=0)
    with pytest.raises(InvalidState, match="CONNECTING"):
        conn.publish("t")
    conn.tick(100.0)  # no timer before CONNACK
    assert conn.next_deadline() is None


def test_disconnect_v5_and_v4():
    conn, broker = connect(V5)
    conn.disconnect(RC.DISCONNECT_WITH_WILL_MESSAGE, Properties(reason_string="bye"))
    assert broker.received() == [Disconnect(RC.DISCONNECT_WITH_WILL_MESSAGE, Properties(reason_string="bye"))]
    assert conn.state is State.CLOSED
    conn4, _broker4 = connect(V4)
    with pytest.raises(ValueError):
        conn4.disconnect(0x04)
    with pytest.raises(ValueError, match="not an MQTT reason code"):
        conn4.disconnect(0x03)
    assert conn4.state is State.CONNECTED
    conn4.disconnect()
    assert conn4.data_to_send() == b"\xe0\x00"


def test_disconnect_while_connecting():
    conn = Connection("c")
    conn.connect(now=0)
    conn.data_to_send()
    conn.disconnect()
    assert conn.data_to_send() == b"\xe0\x00"
    assert conn.state is State.CLOSED


# --- outgoing publishes ----------------------------------------------------------------


@BOTH
def test_publish_qos0(version):
    conn, broker = connect(version)
    assert conn.publish("a/b", b"hi", retain=True) is None
    assert broker.received() == [Publish("a/b", b"hi", 0, True)]
    assert conn.pending() == ()


@BOTH
def test_publish_qos1(version):
    conn, broker = connect(version)
    packet_id = conn.publish("a/b", b"hi", qos=1)
    assert packet_id == 1
    assert broker.received() == [Publish("a/b", b"hi", 1, packet_id=1)]
    assert conn.pending() == (PendingPublish(Publish("a/b", b"hi", 1, packet_id=1)),)
    assert broker.send(PubAck(1)) == [Published(1)]
    assert conn.pending() == ()
    # A repeated or unknown PUBACK is ignored (no rule makes it an error).
    assert broker.send(PubAck(1), PubAck(77)) == []
    assert conn.error is None


def test_publish_qos1_v5_reason_code():
    conn, broker = connect()
    conn.publish("t", b"", qos=1)
    props = Properties(reason_string="nobody")
    assert broker.send(PubAck(1, RC.NO_MATCHING_SUBSCRIBERS, props)) == [Published(1, 0x10, props)]


@BOTH
def test_publish_qos2(version):
    conn, broker = connect(version)
    packet_id = conn.publish("t", b"x", qos=2)
    assert broker.received() == [Publish("t", b"x", 2, packet_id=packet_id)]
    assert broker.send(PubRec(1)) == []
    assert broker.received() == [PubRel(1)]
    assert conn.pending() == (PendingPublish(Publish("t", b"x", 2, packet_id=1), released=True),)
    # A repeated PUBREC is answered with PUBREL again.
    assert broker.send(PubRec(1)) == []
    assert broker.received() == [PubRel(1)]
    assert broker.send(PubComp(1)) == [Published(1)]
    assert conn.pending() == ()
    assert broker.send(PubComp(1)) == []


def test_publish_qos2_pubrec_error_ends_flow():
    conn, broker = connect()
    conn.publish("t", b"x", qos=2)
    broker.received()
    assert broker.send(PubRec(1, RC.QUOTA_EXCEEDED)) == [Published(1, 0x97)]
    assert broker.received() == []
    assert conn.pending() == ()


def test_pubrec_unknown_id():
    conn, broker = connect(V5)
    assert broker.send(PubRec(9)) == []
    assert broker.received() == [PubRel(9, RC.PACKET_IDENTIFIER_NOT_FOUND)]
    conn4, broker4 = connect(V4)
    assert broker4.send(PubRec(9)) == []
    assert broker4.received() == []
    assert conn.error is None and conn4.error is None


@pytest.mark.parametrize(
    ("qos", "ack", "message"),
    [
        (2, PubAck(1), "PUBACK for QoS 2"),
        (1, PubRec(1), "PUBREC for QoS 1"),
        (1, PubComp(1), "PUBCOMP for publish 1 before PUBREC"),
        (2, PubComp(1), "PUBCOMP for publish 1 before PUBREC"),
    ],
)
@BOTH
def test_mismatched_acks_are_protocol_errors(version, qos, ack, message):
    conn, broker = connect(version)
    conn.publish("t", b"x", qos=qos)
    conn.data_to_send()
    assert broker.send(ack) == []
    assert_failed(conn, ProtocolError, 0x82)
    assert message in str(conn.error)


def test_publish_arguments_are_checked():
    conn, _ = connect(
        connack=ConnAck(
            False, RC.SUCCESS, Properties(maximum_qos=1, retain_available=False, maximum_packet_size=64)
        )
    )
    for args, kwargs in (
        (("a/#",), {}),
        (("",), {}),
        (("t",), {"qos": 3}),
        (("t",), {"qos": 2}),
        (("t",), {"retain": True}),
        (("t",), {"properties": Properties(topic_alias=1)}),
        (("t",), {"properties": Properties(subscription_identifier=(1,))}),
        (("t",), {"properties": Properties(receive_maximum=1)}),
        (("t", b"x" * 100), {"qos": 1}),
    ):
        with pytest.raises(ValueError):
            conn.publish(*args, **kwargs)
    assert conn.data_to_send() == b""
    assert conn.pending() == ()
    assert conn.publish("t", b"x" * 50) is None
    assert len(conn.data_to_send()) <= 64


def test_packet_ids_skip_ids_in_use_and_wrap():
    conn, broker = connect()
    assert conn.publish("t", qos=1) == 1
    assert conn.subscribe(["s"]) == 2
    assert conn.unsubscribe("s") == 3
    conn._next_id = 65535
    assert conn.publish("t", qos=1) == 65535
    assert conn.publish("t", qos=1) == 4  # 1, 2 and 3 are in use
    broker.send(PubAck(1))
    conn._next_id = 1
    assert conn.publish("t", qos=1) == 1


def test_packet_ids_exhausted():
    conn, _ = connect(max_pending=70000)
    conn.server_receive_maximum = 0  # every publish waits in the queue
    for _ in range(65535):
        conn.publish("t", qos=1)
    with pytest.raises(InvalidState, match="packet identifiers"):
        conn.publish("t", qos=1)


# --- flow control (MQTT 5.0 §4.9) -------------------------------------------------------


def test_server_receive_maximum_queues_publishes():
    conn, broker = connect(connack=ConnAck(False, RC.SUCCESS, Properties(receive_maximum=2)), max_pending=2)
    assert [conn.publish("t", bytes([i]), qos=1) for i in range(4)] == [1, 2, 3, 4]
    assert [p.packet_id for p in broker.received()] == [1, 2]  # type: ignore[union-attr]
    assert [(p.publish.packet_id, p.queued) for p in conn.pending()] == [
        (1, False),
        (2, False),
        (3, True),
        (4, True),
    ]
    with pytest.raises(PendingQueueFull):
        conn.publish("t", b"", qos=2)
    # QoS 0 is not subject to the Receive Maximum.
    assert conn.publish("t", b"zero") is None
    assert broker.received() == [Publish("t", b"zero")]
    assert broker.send(PubAck(2)) == [Published(2)]
    assert broker.received() == [Publish("t", b"\x02", 1, packet_id=3)]
    assert broker.send(PubAck(1), PubAck(3)) == [Published(1), Published(3)]
    assert broker.received() == [Publish("t", b"\x03", 1, packet_id=4)]
    assert conn.publish("t", b"new", qos=1) == 5
    assert broker.received() == [Publish("t", b"new", 1, packet_id=5)]


def test_incoming_receive_maximum_exceeded():
    conn, broker = connect(receive_maximum=2, auto_ack=False)
    events = broker.send(Publish("t", b"1", 1, packet_id=1), Publish("t", b"2", 2, packet_id=2))
    assert len(events) == 2
    # A QoS 1 redelivery of an unacknowledged message does not count twice.
    assert len(broker.send(Publish("t", b"1", 1, dup=True, packet_id=1))) == 1
    assert broker.send(Publish("t", b"3", 1, packet_id=3)) == []
    assert_failed(conn, ProtocolError, 0x93)


def test_incoming_receive_maximum_not_checked_in_v4():
    conn, broker = connect(V4, receive_maximum=1, auto_ack=False)
    assert len(broker.send(Publish("t", b"1", 1, packet_id=1), Publish("t", b"2", 1, packet_id=2))) == 2
    assert conn.error is None


# --- incoming publishes ----------------------------------------------------------------


@BOTH
def test_incoming_qos0_and_qos1_auto_ack(version):
    _conn, broker = connect(version)
    events = broker.send(Publish("a", b"0", retain=True), Publish("b", b"1", 1, packet_id=7))
    assert events == [Message("a", b"0", 0, True), Message("b", b"1", 1, packet_id=7)]
    assert broker.received() == [PubAck(7)]


@BOTH
def test_incoming_qos2_auto_ack(version):
    _conn, broker = connect(version)
    assert broker.send(Publish("t", b"x", 2, packet_id=5)) == [Message("t", b"x", 2, packet_id=5)]
    assert broker.received() == [PubRec(5)]
    # Until PUBREL, the same identifier is the same message, DUP or not.
    assert broker.send(Publish("t", b"x", 2, dup=True, packet_id=5)) == []
    assert broker.send(Publish("t", b"x", 2, packet_id=5)) == []
    assert broker.received() == [PubRec(5), PubRec(5)]
    assert broker.send(PubRel(5)) == []
    assert broker.received() == [PubComp(5)]
    # After PUBREL the identifier is free for a new message.
    assert broker.send(Publish("t", b"y", 2, packet_id=5)) == [Message("t", b"y", 2, packet_id=5)]


@BOTH
def test_pubrel_unknown_id(version):
    _conn, broker = connect(version)
    assert broker.send(PubRel(3)) == []
    code = RC.PACKET_IDENTIFIER_NOT_FOUND if version == V5 else RC.SUCCESS
    assert broker.received() == [PubComp(3, code)]


@BOTH
def test_manual_ack(version):
    conn, broker = connect(version, auto_ack=False)
    m0, m1, m2 = broker.send(
        Publish("t", b"0"), Publish("t", b"1", 1, packet_id=1), Publish("t", b"2", 2, packet_id=2)
    )
    assert broker.received() == []
    # Not yet acknowledged: a redelivered QoS 2 is not delivered, and gets no PUBREC.
    assert broker.send(Publish("t", b"2", 2, dup=True, packet_id=2)) == []
    assert broker.received() == []
    conn.ack(m0)
    conn.ack(m1, now=1.0)
    conn.ack(m2)
    assert broker.received() == [PubAck(1), PubRec(2)]
    conn.ack(m1)
    conn.ack(m2)
    assert broker.received() == []
    broker.send(PubRel(2))
    assert broker.received() == [PubComp(2)]


def test_manual_ack_with_error_code_ends_qos2():
    conn, broker = connect(auto_ack=False)
    m1, m2 = broker.send(Publish("t", b"1", 1, packet_id=1), Publish("t", b"2", 2, packet_id=2))
    with pytest.raises(ValueError):
        conn.ack(m1, RC.PACKET_IDENTIFIER_NOT_FOUND)  # not allowed in PUBACK
    conn.ack(m1, RC.NOT_AUTHORIZED)
    conn.ack(m2, RC.NOT_AUTHORIZED)
    assert broker.received() == [PubAck(1, RC.NOT_AUTHORIZED), PubRec(2, RC.NOT_AUTHORIZED)]
    # The flow ended: the identifier is free again.
    assert broker.send(Publish("t", b"3", 2, packet_id=2)) == [Message("t", b"3", 2, packet_id=2)]


def test_pubrel_before_pubrec_releases():
    conn, broker = connect(auto_ack=False)
    [message] = broker.send(Publish("t", b"1", 2, packet_id=4))
    broker.send(PubRel(4))
    assert broker.received() == [PubComp(4)]
    conn.ack(message)
    assert broker.received() == []


# --- subscriptions ---------------------------------------------------------------------


@BOTH
def test_subscribe_and_unsubscribe(version):
    conn, broker = connect(version)
    packet_id = conn.subscribe(["a", ("b/+", 1), Subscription("c/#", 2)], now=1.0)
    assert broker.received() == [
        Subscribe(packet_id, (Subscription("a"), Subscription("b/+", 1), Subscription("c/#", 2)))
    ]
    assert broker.send(SubAck(packet_id, (RC.GRANTED_QOS_0, RC.GRANTED_QOS_1, RC.UNSPECIFIED_ERROR))) == [
        Subscribed(packet_id, (0, 1, 0x80))
    ]
    packet_id = conn.unsubscribe(["a", "b/+"])
    assert broker.received() == [Unsubscribe(packet_id, ("a", "b/+"))]
    codes = (RC.SUCCESS, RC.NO_SUBSCRIPTION_EXISTED) if version == V5 else ()
    assert broker.send(UnsubAck(packet_id, codes)) == [Unsubscribed(packet_id, tuple(codes))]
    # Unknown identifiers are ignored.
    assert broker.send(SubAck(99, (RC.SUCCESS,)), UnsubAck(98, codes)) == []
    assert conn.error is None


def test_subscribe_v5_properties():
    conn, broker = connect()
    props = Properties(subscription_identifier=(5,))
    packet_id = conn.subscribe([Subscription("a", 1, no_local=True)], props)
    assert broker.received() == [Subscribe(packet_id, (Subscription("a", 1, no_local=True),), props)]


def test_subscribe_arguments_are_checked():
    conn, _ = connect(V4)
    for subscriptions in ([], ["a/#/b"], [("a", 3)], [Subscription("a", no_local=True)]):
        with pytest.raises(ValueError):
            conn.subscribe(subscriptions)
    for filters in ([], ["a+"]):
        with pytest.raises(ValueError):
            conn.unsubscribe(filters)
    assert conn.data_to_send() == b""
    assert conn.subscribe(["a"]) == 1


@pytest.mark.parametrize(
    "ack",
    [SubAck(1, (RC.SUCCESS, RC.SUCCESS)), UnsubAck(2, (RC.SUCCESS,))],
)
def test_suback_count_mismatch(ack):
    conn, broker = connect()
    conn.subscribe(["a"])
    conn.unsubscribe(["a", "b"])
    broker.received()
    assert broker.send(ack) == []
    assert_failed(conn, ProtocolError, 0x82)


# --- topic aliases (MQTT 5.0 §3.3.2.3.4) -----------------------------------------------


def test_incoming_topic_aliases():
    _conn, broker = connect(topic_alias_maximum=2)
    events = broker.send(
        Publish("a/b", b"1", properties=Properties(topic_alias=2)),
        Publish("", b"2", properties=Properties(topic_alias=2)),
        Publish("c", b"3", properties=Properties(topic_alias=2)),
        Publish("", b"4", properties=Properties(topic_alias=2)),
    )
    assert [(e.topic, e.payload) for e in events] == [("a/b", b"1"), ("a/b", b"2"), ("c", b"3"), ("c", b"4")]


@pytest.mark.parametrize(
    ("maximum", "packet", "code"),
    [
        (0, Publish("a", properties=Properties(topic_alias=1)), 0x94),
        (2, Publish("a", properties=Properties(topic_alias=3)), 0x94),
        (2, Publish("", properties=Properties(topic_alias=1)), 0x82),
    ],
)
def test_incoming_topic_alias_errors(maximum, packet, code):
    conn, broker = connect(topic_alias_maximum=maximum)
    assert broker.send(packet) == []
    assert_failed(conn, ProtocolError, code)


def test_incoming_topic_aliases_reset_per_connection():
    conn, broker = connect(topic_alias_maximum=1)
    broker.send(Publish("a", properties=Properties(topic_alias=1)))
    conn.connection_lost()
    conn.connect(now=0)
    broker = Broker(conn)
    broker.received()
    broker.send(ConnAck())
    broker.send(Publish("", properties=Properties(topic_alias=1)))
    assert_failed(conn, ProtocolError, 0x82)


def test_outgoing_topic_aliases():
    connack = ConnAck(False, RC.SUCCESS, Properties(topic_alias_maximum=2))
    conn, broker = connect(connack=connack, use_topic_aliases=True)
    for topic in ("a", "b", "a", "c", "b"):
        conn.publish(topic, b"", qos=1)
    a1, b2 = Properties(topic_alias=1), Properties(topic_alias=2)
    assert broker.received() == [
        Publish("a", b"", 1, packet_id=1, properties=a1),
        Publish("b", b"", 1, packet_id=2, properties=b2),
        Publish("", b"", 1, packet_id=3, properties=a1),
        Publish("c", b"", 1, packet_id=4),
        Publish("", b"", 1, packet_id=5, properties=b2),
    ]
    # The session keeps full topic names, without aliases.
    assert [p.publish.topic for p in conn.pending()] == ["a", "b", "a", "c", "b"]
    assert all(p.publish.properties == Properties() for p in conn.pending())


def test_outgoing_topic_aliases_need_server_support():
    conn, broker = connect(use_topic_aliases=True)
    conn.publish("a")
    conn.publish("a")
    assert broker.received() == [Publish("a"), Publish("a")]


# --- packet size ------------------------------------------------------------------------


@BOTH
def test_incoming_packet_too_large(version):
    conn, broker = connect(version, max_packet_size=20)
    assert broker.send(Publish("t", b"x" * 10)) == [Message("t", b"x" * 10)]
    assert broker.send(Publish("t", b"x" * 100)) == []
    assert_failed(conn, PayloadTooBig, 0x95)


def test_subscribe_over_server_maximum_packet_size():
    conn, _ = connect(connack=ConnAck(False, RC.SUCCESS, Properties(maximum_packet_size=20)))
    with pytest.raises(ValueError, match="server's maximum"):
        conn.subscribe(["a" * 30])
    assert conn.data_to_send() == b""


# --- keep alive ------------------------------------------------------------------------


@BOTH
def test_keepalive_pings_and_pong(version):
    conn, broker = connect(version, keepalive=10)
    assert conn.next_deadline() == 10.0
    conn.tick(9.9)
    assert broker.received() == []
    conn.publish("t", now=4.0)
    broker.received()
    assert conn.next_deadline() == 14.0
    conn.publish("t")  # without now, the timer is not reset: one ping too many at worst
    broker.received()
    assert conn.next_deadline() == 14.0
    conn.tick(14.0)
    assert broker.received() == [PingReq()]
    assert conn.next_deadline() == 19.0  # half the keep alive
    conn.tick(18.0)
    assert broker.received() == []
    assert broker.send(PingResp(), now=18.5) == [PongReceived()]
    assert conn.next_deadline() == 24.0
    conn.tick(24.0)
    assert broker.received() == [PingReq()]
    conn.tick(29.0)
    assert_failed(conn, KeepAliveTimeout, 0x8D)
    assert conn.next_deadline() is None


def test_any_packet_answers_a_ping():
    conn, broker = connect(keepalive=10, ping_timeout=3)
    conn.tick(10)
    assert conn.next_deadline() == 13
    broker.send(Publish("t"), now=12)
    assert conn.next_deadline() == 20
    # Acknowledging an incoming publish counts as sending.
    broker.send(Publish("t", qos=1, packet_id=1), now=15)
    assert conn.next_deadline() == 25


def test_explicit_ping():
    conn, broker = connect(keepalive=10)
    conn.ping(now=3)
    conn.ping(now=4)
    assert broker.received() == [PingReq(), PingReq()]
    assert conn.next_deadline() == 8
    assert broker.send(PingResp(), now=5) == [PongReceived()]
    assert conn.next_deadline() == 14


def test_keepalive_small_minimum_timeout():
    conn, _ = connect(keepalive=1)
    conn.tick(1)
    assert conn.next_deadline() == 2.0


def test_keepalive_off_and_server_override():
    conn, _ = connect(keepalive=0)
    assert conn.next_deadline() is None
    conn.tick(1000)
    assert conn.data_to_send() == b""
    conn, _ = connect(keepalive=0, connack=ConnAck(False, RC.SUCCESS, Properties(server_keep_alive=20)))
    assert conn.next_deadline() == 20
    conn, _ = connect(keepalive=60, connack=ConnAck(False, RC.SUCCESS, Properties(server_keep_alive=0)))
    assert conn.next_deadline() is None


# --- session resume (MQTT 5.0 §4.4) -----------------------------------------------------


def reconnect(conn: Connection, connack: ConnAck, now: float = 100.0) -> tuple[Broker, list[Any]]:
    conn.connection_lost()
    assert conn.state is State.DISCONNECTED
    assert conn.data_to_send() == b""
    conn.connect(now=now, clean_start=False)
    broker = Broker(conn)
    [packet] = broker.received()
    assert isinstance(packet, Connect) and not packet.clean_start
    return broker, broker.send(connack, now=now)


@BOTH
def test_session_present_resends_publish_and_pubrel(version):
    conn, broker = connect(version, auto_ack=False)
    conn.publish("a", b"1", qos=1)
    conn.publish("b", b"2", qos=2)
    conn.publish("c", b"3", qos=2)
    conn.subscribe(["s"])
    broker.received()
    broker.send(PubRec(2))
    [message] = broker.send(Publish("in", b"q2", 2, packet_id=9))
    conn.ack(message)
    broker.received()
    broker, events = reconnect(conn, ConnAck(True))
    assert events == [Connected(True, Properties(), False)]
    assert broker.received() == [
        Publish("a", b"1", 1, dup=True, packet_id=1),
        PubRel(2),
        Publish("c", b"3", 2, dup=True, packet_id=3),
    ]
    # The incoming QoS 2 message is still known: not delivered again, PUBREC again.
    assert broker.send(Publish("in", b"q2", 2, dup=True, packet_id=9)) == []
    assert broker.received() == [PubRec(9)]
    assert broker.send(PubAck(1), PubComp(2), PubRec(3), PubComp(3)) == [
        Published(1),
        Published(2),
        Published(3),
    ]
    # The SUBSCRIBE in flight was forgotten with the connection.
    assert broker.send(SubAck(4, (RC.SUCCESS,))) == []


@BOTH
def test_session_lost_restarts_publishes(version):
    conn, broker = connect(version, auto_ack=False)
    conn.publish("a", b"1", qos=1)
    conn.publish("b", b"2", qos=2)
    conn.publish("c", b"3", qos=2)
    broker.received()
    broker.send(PubRec(2))
    broker.send(Publish("in", b"q2", 2, packet_id=9))
    broker, events = reconnect(conn, ConnAck(False))
    # PUBREC had transferred the QoS 2 message to the server: it is done.
    assert events == [Connected(False, Properties(), True), Published(2)]
    assert broker.received() == [
        Publish("a", b"1", 1, packet_id=1),
        Publish("c", b"3", 2, packet_id=3),
    ]
    # The server forgot its QoS 2 state, and so did the client.
    assert broker.send(Publish("in", b"new", 2, packet_id=9)) == [Message("in", b"new", 2, packet_id=9)]


def test_session_lost_respects_new_receive_maximum():
    conn, broker = connect(max_pending=5)
    for i in range(3):
        conn.publish("t", bytes([i]), qos=1)
    conn.connection_lost()
    with pytest.raises(InvalidState, match="qos 0"):
        conn.publish("t", qos=0)
    assert conn.publish("t", b"\x03", qos=1) == 4  # offline: waits in the session's queue
    conn.connect(now=1.0)
    broker = Broker(conn)
    broker.received()
    broker.send(ConnAck(False, RC.SUCCESS, Properties(receive_maximum=1)))
    assert broker.received() == [Publish("t", b"\x00", 1, packet_id=1)]
    assert [p.queued for p in conn.pending()] == [False, True, True, True]


def test_first_connect_never_says_session_lost():
    conn = Connection("c", clean_start=False)
    broker = Broker(conn)
    conn.connect(now=0)
    assert broker.send(ConnAck(False)) == [Connected(False, Properties(), False)]


def test_reconnect_after_error_clears_error():
    conn, broker = connect()
    broker.send(PingReq())
    assert conn.error is not None
    conn.connection_lost()
    conn.connect(now=0)
    assert conn.error is None
    assert conn.state is State.CONNECTING


# --- unexpected packets and malformed input ---------------------------------------------


@pytest.mark.parametrize(
    "packet",
    [
        "connect",
        Subscribe(1, (Subscription("a"),)),
        Unsubscribe(1, ("a",)),
        PingReq(),
        ConnAck(),
    ],
)
@BOTH
def test_client_packets_from_server(version, packet):
    conn, broker = connect(version)
    if packet == "connect":
        packet = Connect("x", version=version)
    assert broker.send(packet, PingResp()) == []
    assert_failed(conn, ProtocolError, 0x82)


def test_disconnect_from_server_v4_is_an_error():
    conn, broker = connect(V4)
    broker.send(Disconnect())
    assert_failed(conn, ProtocolError, 0x82)


def test_connect_with_bad_protocol_maps_to_protocol_error():
    conn, _broker = connect()
    conn.receive_data(b"\x10\x07\x00\x04MQTT\x09", now=0)
    assert conn.error is not None and conn.error.reason_code == 0x84
    assert conn.data_to_send() == b"\xe0\x01\x82"


@pytest.mark.parametrize("packet", [Publish("t"), PingResp(), SubAck(1, (RC.SUCCESS,)), Disconnect()])
def test_packets_before_connack(packet):
    conn = Connection("c")
    conn.connect(now=0)
    conn.data_to_send()
    conn.receive_data(encode(packet, V5), now=0)
    assert conn.events_received() == []
    assert_failed(conn, ProtocolError, 0x82)


def test_session_present_after_clean_start():
    conn = Connection("c")
    conn.connect(now=0)
    conn.data_to_send()
    conn.receive_data(encode(ConnAck(True), V5), now=0)
    assert_failed(conn, ProtocolError, 0x82)


@BOTH
def test_malformed_packet(version):
    conn, _broker = connect(version)
    conn.receive_data(b"\x00\x00", now=0)
    assert_failed(conn, MalformedPacket, 0x81)
    conn.receive_data(b"\xd0\x00", now=0)
    assert conn.events_received() == []


def test_packets_before_an_error_are_handled():
    conn, _broker = connect()
    conn.receive_data(encode(PingResp(), V5) + b"\xd0\x01\x00" + encode(PingResp(), V5), now=0)
    assert conn.events_received() == [PongReceived()]
    assert_failed(conn, MalformedPacket, 0x81)


def test_server_disconnect_v5():
    conn, broker = connect()
    props = Properties(reason_string="shutdown")
    events = broker.send(Disconnect(RC.SERVER_SHUTTING_DOWN, props), PingResp())
    assert events == [Disconnected(0x8B, props)]
    assert conn.state is State.CLOSED
    assert conn.error is None
    assert conn.data_to_send() == b""


def test_receive_nothing_and_partial_packets():
    conn, _broker = connect()
    conn.receive_data(b"", now=0)
    conn.receive_data(b"\xd0", now=0)
    assert conn.events_received() == []
    conn.receive_data(b"\x00", now=0)
    assert conn.events_received() == [PongReceived()]


# --- AUTH (MQTT 5.0 §4.12) --------------------------------------------------------------


def test_auth_exchange():
    conn = Connection("c", connect_properties=Properties(authentication_method="SCRAM"))
    broker = Broker(conn)
    conn.connect(now=0)
    broker.received()
    props = Properties(authentication_method="SCRAM", authentication_data=b"challenge")
    assert broker.send(Auth(RC.CONTINUE_AUTHENTICATION, props)) == [AuthReceived(0x18, props)]
    conn.auth(RC.CONTINUE_AUTHENTICATION, Properties(authentication_method="SCRAM", authentication_data=b"r"))
    assert broker.received() == [
        Auth(RC.CONTINUE_AUTHENTICATION, Properties(authentication_method="SCRAM", authentication_data=b"r"))
    ]
    assert isinstance(broker.send(ConnAck())[0], Connected)


def test_auth_without_method_is_an_error():
    conn, broker = connect()
    broker.send(Auth())
    assert_failed(conn, ProtocolError, 0x82)


def test_auth_needs_v5():
    conn, _ = connect(V4)
    with pytest.raises(InvalidState, match="MQTT 5"):
        conn.auth()


# --- properties (Hypothesis) ------------------------------------------------------------


def _server_script(version: int) -> bytes:
    packets: list[Packet] = [
        ConnAck(),
        Publish("a/b", b"0"),
        Publish("a/b", b"1", 1, packet_id=1),
        Publish("c", b"2", 2, packet_id=2),
        Publish("c", b"2", 2, dup=True, packet_id=2),
        PubRel(2),
        PubAck(1),
        PubRec(2),
        PubComp(2),
        SubAck(3, (RC.GRANTED_QOS_1,)),
        PingResp(),
    ]
    return b"".join(encode(p, version) for p in packets)


def _run(version: int, chunks: list[bytes]) -> tuple[list[Any], bytes]:
    conn = Connection("c", version=version)
    conn.connect(now=0)
    conn.data_to_send()
    conn.receive_data(chunks[0], now=0)
    conn.publish("x", qos=1)
    conn.publish("y", qos=2)
    conn.subscribe([("z", 1)])
    for chunk in chunks[1:]:
        conn.receive_data(chunk, now=0)
    return conn.events_received(), conn.data_to_send()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([V4, V5]), st.lists(st.integers(min_value=0, max_value=200), max_size=8))
def test_any_split_gives_the_same_events(version, cuts):
    stream = _server_script(version)
    connack = len(encode(ConnAck(), version))
    rest = stream[connack:]
    points = sorted({min(c, len(rest)) for c in cuts})
    chunks = [stream[:connack]] + [rest[i:j] for i, j in zip([0, *points], [*points, len(rest)], strict=True)]
    whole = _run(version, [stream[:connack], rest])
    assert _run(version, chunks) == whole
    assert len(whole[0]) == 8


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([V4, V5]), st.binary(max_size=64), st.booleans())
def test_random_bytes_after_connack(version, data, auto_ack):
    conn, _broker = connect(version, auto_ack=auto_ack, topic_alias_maximum=3, receive_maximum=2)
    conn.publish("t", qos=1)
    conn.publish("u", qos=2)
    conn.data_to_send()
    conn.receive_data(data, now=1.0)
    events = conn.events_received()
    assert conn.error is None or isinstance(conn.error, ProtocolError)
    if conn.error is not None:
        assert conn.state is State.CLOSED
    for event in events:
        if isinstance(event, Message) and event.qos and conn.state is State.CONNECTED:
            conn.ack(event)
    conn.data_to_send()


# --- publishing while not connected, durable session state --------------------------------


def resume(conn: Connection, connack: ConnAck, now: float = 1.0) -> Broker:
    conn.connection_lost()
    conn.connect(now=now, clean_start=False)
    broker = Broker(conn)
    broker.received()
    broker.send(connack, now=now)
    return broker


def test_publish_before_the_first_connect_goes_out_after_connack():
    conn = Connection("c")
    assert conn.publish("t", b"a", qos=1) == 1
    assert conn.publish("t", b"b", qos=2) == 2
    assert conn.data_to_send() == b""
    assert [p.queued for p in conn.pending()] == [True, True]
    conn.connect(now=0)
    broker = Broker(conn)
    [hello] = broker.received()
    assert isinstance(hello, Connect)
    broker.send(ConnAck())
    assert broker.received() == [Publish("t", b"a", 1, packet_id=1), Publish("t", b"b", 2, packet_id=2)]


def test_offline_queue_is_bounded():
    conn = Connection("c", max_pending=2)
    conn.publish("t", qos=1)
    conn.publish("t", qos=1)
    with pytest.raises(PendingQueueFull):
        conn.publish("t", qos=1)


@pytest.mark.parametrize(
    ("connack", "kwargs", "code"),
    [
        (ConnAck(properties=Properties(maximum_qos=1)), {"qos": 2}, RC.QOS_NOT_SUPPORTED),
        (ConnAck(properties=Properties(retain_available=False)), {"qos": 1, "retain": True}, 0x9A),
        (ConnAck(properties=Properties(maximum_packet_size=20)), {"qos": 1, "payload": b"x" * 50}, 0x95),
    ],
)
def test_offline_publish_the_server_does_not_support_ends_with_a_reason(connack, kwargs, code):
    conn = Connection("c", track_changes=True)
    payload = kwargs.pop("payload", b"x")
    packet_id = conn.publish("t", payload, **kwargs)
    conn.connect(now=0)
    broker = Broker(conn)
    broker.received()
    events = broker.send(connack)
    assert events[1:] == [Published(packet_id, code)]
    assert broker.received() == []
    assert conn.pending() == ()
    assert conn.session_changes()[-1].kind == "done"


def test_session_changes_follow_every_flow():
    conn, broker = connect(track_changes=True)
    assert conn.session_changes() == []
    one = conn.publish("a", b"1", qos=1)
    two = conn.publish("b", b"2", qos=2)
    conn.publish("c", b"0", qos=0)
    changes = conn.session_changes()
    assert [(c.kind, c.packet_id) for c in changes] == [("add", one), ("add", two)]
    assert changes[0].publish == Publish("a", b"1", 1, packet_id=one)
    broker.send(PubAck(one), PubRec(two), PubRec(two))
    assert [(c.kind, c.packet_id) for c in conn.session_changes()] == [("done", one), ("release", two)]
    broker.send(PubComp(two))
    assert [(c.kind, c.packet_id) for c in conn.session_changes()] == [("done", two)]
    broker.send(Publish("in", b"x", 2, packet_id=7), Publish("in", b"y", 1, packet_id=8))
    assert [(c.kind, c.packet_id) for c in conn.session_changes()] == [("received", 7)]
    broker.send(PubRel(7), PubRel(7))
    assert [(c.kind, c.packet_id) for c in conn.session_changes()] == [("released", 7)]


def test_session_changes_with_manual_ack_and_a_lost_session():
    conn, broker = connect(track_changes=True, auto_ack=False)
    [message] = broker.send(Publish("in", b"x", 2, packet_id=7))
    assert conn.session_changes() == []  # not acknowledged: the server will send it again
    conn.ack(message)
    assert [(c.kind, c.packet_id) for c in conn.session_changes()] == [("received", 7)]
    sent = conn.publish("t", b"q", qos=2)
    broker.send(PubRec(sent))
    conn.session_changes()
    resume(conn, ConnAck(False))
    assert [(c.kind, c.packet_id) for c in conn.session_changes()] == [("clear_received", 0), ("done", sent)]


def test_changes_are_not_recorded_by_default():
    conn, _ = connect()
    conn.publish("t", qos=1)
    assert conn.session_changes() == []


def test_restore_resends_and_releases_in_order():
    restored = Connection("c", track_changes=True)
    restored.restore(
        [
            PendingPublish(Publish("t", b"released", 2, packet_id=5), released=True),
            PendingPublish(Publish("t", b"sent", 1, dup=True, packet_id=6)),
            PendingPublish(Publish("t", b"queued", 2, packet_id=9), queued=True),
        ],
        received_qos2=[3],
    )
    assert restored.publish("t", b"new", qos=1) == 10
    restored.connect(now=0, clean_start=False)
    broker = Broker(restored)
    broker.received()
    events = broker.send(ConnAck(True))
    assert events == [Connected(True)]
    assert broker.received() == [
        PubRel(5),
        Publish("t", b"sent", 1, packet_id=6),
        Publish("t", b"queued", 2, packet_id=9),
        Publish("t", b"new", 1, packet_id=10),
    ]
    # The incoming QoS 2 publish 3 was delivered before the restart: not again.
    assert broker.send(Publish("in", b"again", 2, dup=True, packet_id=3)) == []
    assert broker.received() == [PubRec(3)]


def test_restore_then_session_lost_counts_released_as_delivered():
    conn = Connection("c")
    conn.restore([PendingPublish(Publish("t", b"r", 2, packet_id=5), released=True)], [3])
    conn.connect(now=0, clean_start=False)
    broker = Broker(conn)
    broker.received()
    assert broker.send(ConnAck(False)) == [Connected(False, Properties(), True), Published(5)]
    assert broker.send(Publish("in", b"new", 2, packet_id=3)) == [Message("in", b"new", 2, packet_id=3)]


def test_restore_refuses_bad_state():
    conn = Connection("c")
    with pytest.raises(ValueError, match="packet id"):
        conn.restore([PendingPublish(Publish("t", b"", 0))])
    with pytest.raises(ValueError, match="twice"):
        conn.restore([PendingPublish(Publish("t", b"", 1, packet_id=1))] * 2)
    conn.publish("t", qos=1)
    with pytest.raises(InvalidState, match="session state"):
        conn.restore([])
    connected, _ = connect()
    with pytest.raises(InvalidState, match="CONNECTED"):
        connected.restore([])


def test_restore_of_nothing_is_a_fresh_session():
    conn = Connection("c")
    conn.restore([], [])
    conn.connect(now=0)
    broker = Broker(conn)
    broker.received()
    assert broker.send(ConnAck(False)) == [Connected(False)]


def test_large_publish_in_small_chunks_keeps_only_the_tail():
    conn, broker = connect()
    payload = bytes(range(256)) * 400
    wire = broker.wire(Publish("big", payload), Publish("small", b"s"))
    events = []
    for at in range(0, len(wire), 1000):
        conn.receive_data(memoryview(wire)[at : at + 1000], now=0)
        events += conn.events_received()
        assert len(conn._buffer) < len(wire)
    assert events == [Message("big", payload), Message("small", b"s")]
    assert len(conn._buffer) == 0


# --- the QoS 0 fast paths give the same bytes and events as the general ones ---------------


@BOTH
@pytest.mark.parametrize("size", [0, 1, 100, 16_000, 20_000])
@pytest.mark.parametrize("retain", [False, True])
def test_qos0_publish_fast_path_bytes(version, size, retain):
    conn, _ = connect(version)
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    expected = encode(Publish("a/b", payload, 0, retain), version)
    for _ in range(3):  # the first publish teaches the connection the topic
        conn.publish("a/b", payload, 0, retain)
        assert conn.data_to_send() == expected


def test_qos0_publish_fast_path_respects_server_limits():
    conn, _ = connect(V5, ConnAck(properties=Properties(maximum_packet_size=50, retain_available=False)))
    conn.publish("a/b", b"x")
    conn.data_to_send()
    with pytest.raises(ValueError, match="maximum"):
        conn.publish("a/b", b"x" * 60)
    with pytest.raises(ValueError, match="retained"):
        conn.publish("a/b", b"x", retain=True)
    assert conn.data_to_send() == b""


@BOTH
def test_qos0_receive_fast_path_events(version):
    conn, broker = connect(version)
    packets = [
        Publish("a/b", b"first"),
        Publish("a/b", b"second", retain=True),
        Publish("a/b", b""),
        Publish("a/c", b"other topic"),
    ]
    if version == V5:
        packets.append(Publish("a/b", b"with properties", properties=Properties(content_type="text/plain")))
    events = broker.send(*packets)
    expected = [Message(p.topic, p.payload, 0, p.retain, p.properties) for p in packets]
    assert events == expected
    # A topic with a wildcard is still refused after valid ones were cached.
    conn.receive_data(b"\x30\x05\x00\x02a#" + (b"\x00" if version == V5 else b"") + b"x"[: version == V4], 0)
    assert conn.state is State.CLOSED


def test_qos0_publish_fast_path_resets_the_keepalive_timer_and_counts_bytes():
    conn, _ = connect(V5, keepalive=10)
    wire = encode(Publish("a/b", b"x"), V5)
    conn.publish("a/b", b"x", now=1.0)  # teaches the connection the topic
    conn.publish("a/b", b"x", now=5.0)
    assert conn.bytes_to_send == 2 * len(wire)
    assert conn.next_deadline() == 15.0
    assert conn.data_to_send() == 2 * wire
    assert conn.bytes_to_send == 0


@BOTH
def test_packets_before_a_malformed_header_are_handled_first(version):
    conn, broker = connect(version)
    broker.send(Publish("a/b", b"seen"))  # the topic is now known to the fast path
    conn.receive_data(broker.wire(PingResp(), Publish("a/b", b"x"), Publish("c", b"y")) + b"\x00\x00", 0.0)
    assert conn.events_received() == [PongReceived(), Message("a/b", b"x"), Message("c", b"y")]
    assert_failed(conn, MalformedPacket, RC.MALFORMED_PACKET)


@BOTH
def test_input_after_the_server_disconnects_in_the_same_read_is_ignored(version):
    conn, broker = connect(version)
    broker.send(Publish("a/b", b"seen"))
    after = broker.wire(Publish("a/b", b"late")) + b"\x00\x00"
    if version == V5:
        conn.receive_data(broker.wire(Disconnect(RC.SERVER_SHUTTING_DOWN)) + after, 0.0)
        assert conn.events_received() == [Disconnected(RC.SERVER_SHUTTING_DOWN)]
        assert conn.state is State.CLOSED and conn.error is None
    else:
        # 3.1.1: a server never sends DISCONNECT; what follows the error is ignored too.
        conn.receive_data(broker.wire(Disconnect()) + after, 0.0)
        assert conn.events_received() == []
        assert_failed(conn, ProtocolError, RC.PROTOCOL_ERROR)
