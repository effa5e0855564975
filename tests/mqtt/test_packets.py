"""MQTT 3.1.1 and 5.0 control packets: tether.mqtt.packets."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.errors import MalformedPacket, PayloadTooBig, ProtocolError
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
    decode,
    decode_binary,
    decode_string,
    decode_string_pair,
    decode_varint,
    encode,
    encode_binary,
    encode_string,
    encode_string_pair,
    encode_varint,
    topic_matches,
    validate_filter,
    validate_topic,
)

V4, V5 = MQTT_3_1_1, MQTT_5
RC = ReasonCode


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def assert_round_trip(packet: Packet, wire: bytes, version: int) -> None:
    """encode() gives wire, decode() gives the packet back, and so does a PacketReader
    fed one byte at a time."""
    assert encode(packet, version) == wire
    assert decode(wire, version) == (packet, len(wire))
    reader = PacketReader(version)
    got = [p for i in range(len(wire)) for p in reader.feed(wire[i : i + 1])]
    assert got == [packet]
    assert reader.buffered == 0


# --- vectors ---------------------------------------------------------------------------

WILL_V4 = Will("w/t", b"bye", qos=1, retain=True)
PUBLISH_PROPS = Properties(
    payload_format_indicator=1,
    message_expiry_interval=60,
    content_type="t",
    response_topic="r",
    correlation_data=b"c",
    subscription_identifier=(1, 200),
    topic_alias=5,
    user_property=(("k", "v"),),
)
CONNACK_PROPS = Properties(
    assigned_client_identifier="id", topic_alias_maximum=10, maximum_qos=1, retain_available=False
)

VECTORS: list[tuple[str, int, Packet, str]] = [
    # MQTT 3.1.1
    ("connect", V4, Connect("a", keepalive=60, version=V4), "10 0d 00 04 4d 51 54 54 04 02 00 3c 00 01 61"),
    (
        "connect-will-auth",
        V4,
        Connect("c", clean_start=False, keepalive=10, username="u", password=b"p", will=WILL_V4, version=V4),
        "10 1d 00 04 4d 51 54 54 04 ec 00 0a 00 01 63 00 03 77 2f 74 00 03 62 79 65 00 01 75 00 01 70",
    ),
    ("connack", V4, ConnAck(), "20 02 00 00"),
    ("connack-session", V4, ConnAck(session_present=True), "20 02 01 00"),
    ("connack-refused", V4, ConnAck(reason_code=ConnectReturnCode.NOT_AUTHORIZED), "20 02 00 05"),
    ("publish-qos0", V4, Publish("a/b", b"hi"), "30 07 00 03 61 2f 62 68 69"),
    (
        "publish-qos1-dup-retain",
        V4,
        Publish("a/b", b"hi", qos=1, retain=True, dup=True, packet_id=10),
        "3b 09 00 03 61 2f 62 00 0a 68 69",
    ),
    ("publish-qos2", V4, Publish("a", b"", qos=2, packet_id=0xFFFF), "34 05 00 01 61 ff ff"),
    ("puback", V4, PubAck(1), "40 02 00 01"),
    ("pubrec", V4, PubRec(1), "50 02 00 01"),
    ("pubrel", V4, PubRel(1), "62 02 00 01"),
    ("pubcomp", V4, PubComp(1), "70 02 00 01"),
    (
        "subscribe",
        V4,
        Subscribe(1, (Subscription("a/+", qos=1), Subscription("#"))),
        "82 0c 00 01 00 03 61 2f 2b 01 00 01 23 00",
    ),
    ("suback", V4, SubAck(1, (RC.GRANTED_QOS_1, RC.UNSPECIFIED_ERROR)), "90 04 00 01 01 80"),
    ("unsubscribe", V4, Unsubscribe(1, ("a",)), "a2 05 00 01 00 01 61"),
    ("unsuback", V4, UnsubAck(1), "b0 02 00 01"),
    ("pingreq", V4, PingReq(), "c0 00"),
    ("pingresp", V4, PingResp(), "d0 00"),
    ("disconnect", V4, Disconnect(), "e0 00"),
    # MQTT 5.0
    ("connect", V5, Connect("a", keepalive=60), "10 0e 00 04 4d 51 54 54 05 02 00 3c 00 00 01 61"),
    (
        "connect-properties-will",
        V5,
        Connect(
            "c",
            keepalive=0,
            will=Will("t", b"x", properties=Properties(will_delay_interval=5)),
            properties=Properties(session_expiry_interval=60, receive_maximum=20),
        ),
        "10 22 00 04 4d 51 54 54 05 06 00 00 08 11 00 00 00 3c 21 00 14"
        " 00 01 63 05 18 00 00 00 05 00 01 74 00 01 78",
    ),
    (
        "connect-password-only",
        V5,
        Connect("", password=b"p"),
        "10 10 00 04 4d 51 54 54 05 42 00 00 00 00 00 00 01 70",
    ),
    ("connack", V5, ConnAck(), "20 03 00 00 00"),
    (
        "connack-properties",
        V5,
        ConnAck(session_present=True, properties=CONNACK_PROPS),
        "20 0f 01 00 0c 12 00 02 69 64 22 00 0a 24 01 25 00",
    ),
    ("connack-refused", V5, ConnAck(reason_code=RC.BANNED), "20 03 00 8a 00"),
    ("publish-qos0", V5, Publish("a/b", b"hi"), "30 08 00 03 61 2f 62 00 68 69"),
    (
        "publish-properties",
        V5,
        Publish("a/b", b"hi", qos=1, packet_id=1, properties=PUBLISH_PROPS),
        "32 2c 00 03 61 2f 62 00 01 22 01 01 02 00 00 00 3c 03 00 01 74 08 00 01 72 09 00 01 63"
        " 0b 01 0b c8 01 23 00 05 26 00 01 6b 00 01 76 68 69",
    ),
    (
        "publish-topic-alias",
        V5,
        Publish("", b"x", properties=Properties(topic_alias=5)),
        "30 07 00 00 03 23 00 05 78",
    ),
    ("puback", V5, PubAck(1), "40 02 00 01"),
    ("puback-reason", V5, PubAck(1, RC.NO_MATCHING_SUBSCRIBERS), "40 03 00 01 10"),
    (
        "puback-properties",
        V5,
        PubAck(1, RC.NOT_AUTHORIZED, Properties(reason_string="no")),
        "40 09 00 01 87 05 1f 00 02 6e 6f",
    ),
    (
        "puback-success-properties",
        V5,
        PubAck(1, properties=Properties(reason_string="no")),
        "40 09 00 01 00 05 1f 00 02 6e 6f",
    ),
    ("pubrec", V5, PubRec(2, RC.QUOTA_EXCEEDED), "50 03 00 02 97"),
    ("pubrel", V5, PubRel(1, RC.PACKET_IDENTIFIER_NOT_FOUND), "62 03 00 01 92"),
    ("pubcomp", V5, PubComp(1), "70 02 00 01"),
    (
        "subscribe-options",
        V5,
        Subscribe(
            2,
            (Subscription("a", qos=2, no_local=True, retain_as_published=True, retain_handling=2),),
            Properties(subscription_identifier=(7,)),
        ),
        "82 09 00 02 02 0b 07 00 01 61 2e",
    ),
    (
        "subscribe-shared",
        V5,
        Subscribe(3, (Subscription("$share/g/a/#", qos=1),)),
        "82 12 00 03 00 00 0c 24 73 68 61 72 65 2f 67 2f 61 2f 23 01",
    ),
    (
        "suback",
        V5,
        SubAck(1, (RC.GRANTED_QOS_0, RC.GRANTED_QOS_2, RC.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED)),
        "90 06 00 01 00 00 02 9e",
    ),
    ("unsubscribe", V5, Unsubscribe(1, ("a",)), "a2 06 00 01 00 00 01 61"),
    ("unsuback", V5, UnsubAck(1, (RC.NO_SUBSCRIPTION_EXISTED,)), "b0 04 00 01 00 11"),
    ("pingreq", V5, PingReq(), "c0 00"),
    ("pingresp", V5, PingResp(), "d0 00"),
    ("disconnect", V5, Disconnect(), "e0 00"),
    ("disconnect-will", V5, Disconnect(RC.DISCONNECT_WITH_WILL_MESSAGE), "e0 01 04"),
    (
        "disconnect-properties",
        V5,
        Disconnect(properties=Properties(session_expiry_interval=0)),
        "e0 07 00 05 11 00 00 00 00",
    ),
    ("auth", V5, Auth(), "f0 00"),
    (
        "auth-continue",
        V5,
        Auth(
            RC.CONTINUE_AUTHENTICATION,
            Properties(authentication_method="m", authentication_data=b"d"),
        ),
        "f0 0a 18 08 15 00 01 6d 16 00 01 64",
    ),
]


@pytest.mark.parametrize(
    ("version", "packet", "wire"), [v[1:] for v in VECTORS], ids=[f"v{v[1]}-{v[0]}" for v in VECTORS]
)
def test_vector(version: int, packet: Packet, wire: str) -> None:
    assert_round_trip(packet, h(wire), version)


EVERY_PROPERTY = [
    # (context packet, properties, wire of the properties)
    (
        ConnAck,
        Properties(
            session_expiry_interval=1,
            assigned_client_identifier="x",
            server_keep_alive=30,
            authentication_method="m",
            authentication_data=b"",
            response_information="ri",
            server_reference="s",
            reason_string="r",
            receive_maximum=1,
            topic_alias_maximum=0,
            maximum_qos=0,
            retain_available=True,
            user_property=(("a", "1"), ("a", "2")),
            maximum_packet_size=0xFFFFFFFF,
            wildcard_subscription_available=False,
            subscription_identifier_available=True,
            shared_subscription_available=False,
        ),
        "11 00 00 00 01 12 00 01 78 13 00 1e 15 00 01 6d 16 00 00 1a 00 02 72 69 1c 00 01 73"
        " 1f 00 01 72 21 00 01 22 00 00 24 00 25 01 26 00 01 61 00 01 31 26 00 01 61 00 01 32"
        " 27 ff ff ff ff 28 00 29 01 2a 00",
    ),
    (
        Connect,
        Properties(request_problem_information=False, request_response_information=True),
        "17 00 19 01",
    ),
]


@pytest.mark.parametrize(("kind", "props", "wire"), EVERY_PROPERTY, ids=["connack", "connect"])
def test_every_property(kind: type[Any], props: Properties, wire: str) -> None:
    body = h(wire)
    if kind is ConnAck:
        packet: Packet = ConnAck(properties=props)
        head = h("00 00") + encode_varint(len(body))
    else:
        packet = Connect("", properties=props)
        head = h("00 04 4d 51 54 54 05 02 00 00") + encode_varint(len(body))
        body += h("00 00")
    full = head + body
    first = "20" if kind is ConnAck else "10"
    assert_round_trip(packet, h(first) + encode_varint(len(full)) + full, V5)


# Short and long forms that decode to the same packet as a shorter canonical one.
NON_CANONICAL = [
    (V5, "40 03 00 01 00", PubAck(1)),
    (V5, "40 04 00 01 00 00", PubAck(1)),
    (V5, "62 04 00 01 92 00", PubRel(1, RC.PACKET_IDENTIFIER_NOT_FOUND)),
    (V5, "e0 01 00", Disconnect()),
    (V5, "e0 02 00 00", Disconnect()),
    (V5, "f0 02 00 00", Auth()),
]


@pytest.mark.parametrize(("version", "wire", "packet"), NON_CANONICAL)
def test_decode_non_canonical(version: int, wire: str, packet: Packet) -> None:
    assert decode(h(wire), version) == (packet, len(h(wire)))


# --- wire helpers ----------------------------------------------------------------------

VARINTS = [
    (0, "00"),
    (127, "7f"),
    (128, "80 01"),
    (16383, "ff 7f"),
    (16384, "80 80 01"),
    (2097151, "ff ff 7f"),
    (2097152, "80 80 80 01"),
    (268435455, "ff ff ff 7f"),
]


@pytest.mark.parametrize(("value", "wire"), VARINTS)
def test_varint(value: int, wire: str) -> None:
    data = h(wire)
    assert encode_varint(value) == data
    assert decode_varint(b"\xaa" + data + b"\xbb", 1) == (value, len(data) + 1)
    assert decode_varint(data[:-1], 0) is None


@pytest.mark.parametrize("wire", ["ff ff ff ff 7f", "80 00", "ff 80 00"])
def test_varint_malformed(wire: str) -> None:
    with pytest.raises(MalformedPacket):
        decode_varint(h(wire), 0)


@pytest.mark.parametrize("value", [-1, 268435456])
def test_varint_range(value: int) -> None:
    with pytest.raises(ValueError, match=str(value)):
        encode_varint(value)


@given(st.integers(0, 268435455))
def test_varint_round_trip(value: int) -> None:
    data = encode_varint(value)
    assert decode_varint(data, 0) == (value, len(data))


def test_strings() -> None:
    assert encode_string("aé") == h("00 03 61 c3 a9")
    assert decode_string(h("00 03 61 c3 a9 ff"), 0) == ("aé", 5)
    assert decode_string(h("00 03 61 c3 a9"), 0, 5) == ("aé", 5)
    assert encode_binary(b"\x00\x01") == h("00 02 00 01")
    assert decode_binary(h("00 02 00 01"), 0) == (b"\x00\x01", 4)
    assert encode_string_pair("k", "v") == h("00 01 6b 00 01 76")
    assert decode_string_pair(h("00 01 6b 00 01 76"), 0) == (("k", "v"), 6)
    assert encode_string("") == b"\x00\x00"
    assert len(encode_string("x" * 65535)) == 65537


@pytest.mark.parametrize(
    ("value", "match"),
    [("\ud800", "not valid UTF-8"), ("a\x00", "U\\+0000"), ("x" * 65536, "longer than 65535")],
)
def test_encode_string_refuses(value: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode_string(value)


def test_encode_binary_refuses() -> None:
    with pytest.raises(ValueError, match="longer than 65535"):
        encode_binary(bytes(65536))


@pytest.mark.parametrize(
    "wire",
    ["00", "00 02 61", "00 01 ff", "00 01 00", "00 03 ed a0 80", "00 02 c0 80"],
    ids=["short-length", "short-data", "invalid", "nul", "surrogate", "overlong"],
)
def test_decode_string_malformed(wire: str) -> None:
    with pytest.raises(MalformedPacket):
        decode_string(h(wire), 0)


# --- topics ----------------------------------------------------------------------------

VALID_TOPICS = ["a", "/", "a/b", "a//b", "$SYS/x", " ", "é/ü", "x" * 65535]
INVALID_TOPICS = [
    ("", "topic name is empty"),
    ("a/+", "topic 'a/\\+' contains '\\+'"),
    ("a/#", "topic 'a/#' contains '#'"),
    ("a#", "contains '#'"),
    ("a\x00", "U\\+0000"),
    ("\udc00", "not valid UTF-8"),
    ("é" * 32768, "longer than 65535"),
]
VALID_FILTERS = [
    "#",
    "+",
    "a/#",
    "+/+",
    "/+",
    "a/+/b/#",
    "+/#",
    "a//",
    "$share/g/a",
    "$share/g/#",
    "$share/g//",
    "$share",
]
INVALID_FILTERS = [
    ("", "topic filter is empty"),
    ("a#", "'#' other than alone"),
    ("#/a", "'#' other than alone"),
    ("a/#/b", "'#' other than alone"),
    ("a+", "'\\+' other than alone"),
    ("a/+b", "'\\+' other than alone"),
    ("$share//a", "empty share name"),
    ("$share/g", "no topic filter"),
    ("$share/g/", "no topic filter"),
    ("$share/g+/a", "wildcard in its share name"),
    ("$share/#/a", "wildcard in its share name"),
    ("$share/g/a#", "'#' other than alone"),
    ("a\x00", "U\\+0000"),
]


@pytest.mark.parametrize("topic", VALID_TOPICS)
def test_valid_topic(topic: str) -> None:
    validate_topic(topic)


@pytest.mark.parametrize(("topic", "match"), INVALID_TOPICS)
def test_invalid_topic(topic: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        validate_topic(topic)


@pytest.mark.parametrize("filter", VALID_FILTERS + VALID_TOPICS)
def test_valid_filter(filter: str) -> None:
    validate_filter(filter)


@pytest.mark.parametrize(("filter", "match"), INVALID_FILTERS)
def test_invalid_filter(filter: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        validate_filter(filter)


# --- malformed input -------------------------------------------------------------------

CONNECT_V5 = "00 04 4d 51 54 54 05"
MALFORMED: list[tuple[str, int, str, type[Exception], int]] = [
    # (name, version, wire, error, reason code)
    ("reserved-type", V5, "00 00", MalformedPacket, 0x81),
    ("auth-in-3.1.1", V4, "f0 00", MalformedPacket, 0x81),
    ("pubrel-flags", V5, "60 02 00 01", MalformedPacket, 0x81),
    ("subscribe-flags", V4, "80 06 00 01 00 01 61 00", MalformedPacket, 0x81),
    ("unsubscribe-flags", V4, "a0 05 00 01 00 01 61", MalformedPacket, 0x81),
    ("pingreq-flags", V4, "c1 00", MalformedPacket, 0x81),
    ("publish-qos3", V4, "36 05 00 01 61 00 01", MalformedPacket, 0x81),
    ("publish-dup-qos0", V4, "38 03 00 01 61", MalformedPacket, 0x81),
    ("length-5-bytes", V4, "30 ff ff ff ff 7f", MalformedPacket, 0x81),
    ("length-not-shortest", V4, "c0 80 00", MalformedPacket, 0x81),
    ("pingreq-length", V4, "c0 01 00", MalformedPacket, 0x81),
    ("pingresp-length", V5, "d0 01 00", MalformedPacket, 0x81),
    ("puback-id-0", V4, "40 02 00 00", MalformedPacket, 0x81),
    ("puback-short", V4, "40 01 00", MalformedPacket, 0x81),
    ("puback-3.1.1-long", V4, "40 03 00 01 00", MalformedPacket, 0x81),
    ("puback-reason", V5, "40 03 00 01 01", MalformedPacket, 0x81),
    ("publish-id-0", V4, "32 05 00 01 61 00 00", MalformedPacket, 0x81),
    ("publish-topic-#", V4, "30 03 00 01 23", ProtocolError, 0x90),
    ("publish-topic-+", V5, "30 06 00 03 61 2f 2b 00", ProtocolError, 0x90),
    ("publish-topic-empty", V4, "30 02 00 00", ProtocolError, 0x82),
    ("publish-topic-empty-no-alias", V5, "30 03 00 00 00", ProtocolError, 0x82),
    ("publish-topic-utf8", V4, "30 03 00 01 ff", MalformedPacket, 0x81),
    ("publish-topic-nul", V4, "30 03 00 01 00", MalformedPacket, 0x81),
    ("publish-topic-surrogate", V4, "30 05 00 03 ed a0 80", MalformedPacket, 0x81),
    ("publish-topic-long", V4, "30 03 00 05 61", MalformedPacket, 0x81),
    ("publish-no-topic", V4, "30 01 00", MalformedPacket, 0x81),
    ("publish-no-properties", V5, "30 03 00 01 61", MalformedPacket, 0x81),
    ("subscribe-empty", V4, "82 02 00 01", ProtocolError, 0x82),
    ("subscribe-empty-v5", V5, "82 03 00 01 00", ProtocolError, 0x82),
    ("unsubscribe-empty", V4, "a2 02 00 01", ProtocolError, 0x82),
    ("subscribe-no-options", V4, "82 05 00 01 00 01 61", MalformedPacket, 0x81),
    ("subscribe-reserved-3.1.1", V4, "82 06 00 01 00 01 61 04", MalformedPacket, 0x81),
    ("subscribe-qos3-3.1.1", V4, "82 06 00 01 00 01 61 03", MalformedPacket, 0x81),
    ("subscribe-qos3", V5, "82 07 00 01 00 00 01 61 03", ProtocolError, 0x82),
    ("subscribe-reserved", V5, "82 07 00 01 00 00 01 61 40", MalformedPacket, 0x81),
    ("subscribe-retain-handling-3", V5, "82 07 00 01 00 00 01 61 30", ProtocolError, 0x82),
    (
        "subscribe-shared-no-local",
        V5,
        "82 10 00 01 00 00 0a 24 73 68 61 72 65 2f 67 2f 61 04",
        ProtocolError,
        0x82,
    ),
    ("subscribe-filter", V4, "82 07 00 01 00 02 61 23 00", ProtocolError, 0x8F),
    ("unsubscribe-filter", V4, "a2 06 00 01 00 02 2b 61", ProtocolError, 0x8F),
    ("subscribe-id-0", V4, "82 06 00 00 00 01 61 00", MalformedPacket, 0x81),
    ("connect-name", V4, "10 0c 00 06 4d 51 49 73 64 70 03 02 00 3c", ProtocolError, 0x84),
    ("connect-level", V4, "10 0a 00 04 4d 51 54 54 06 02 00 3c", ProtocolError, 0x84),
    ("connect-short", V4, "10 08 00 04 4d 51 54 54 04 02", MalformedPacket, 0x81),
    ("connect-reserved", V4, "10 0d 00 04 4d 51 54 54 04 03 00 3c 00 01 61", MalformedPacket, 0x81),
    (
        "connect-will-qos3",
        V4,
        "10 12 00 04 4d 51 54 54 04 1c 00 3c 00 01 61 00 01 74 00 00",
        MalformedPacket,
        0x81,
    ),
    ("connect-will-retain", V4, "10 0d 00 04 4d 51 54 54 04 22 00 3c 00 01 61", MalformedPacket, 0x81),
    ("connect-will-qos", V4, "10 0d 00 04 4d 51 54 54 04 0a 00 3c 00 01 61", MalformedPacket, 0x81),
    (
        "connect-will-topic",
        V4,
        "10 12 00 04 4d 51 54 54 04 06 00 3c 00 01 61 00 01 23 00 00",
        ProtocolError,
        0x90,
    ),
    (
        "connect-password-only",
        V4,
        "10 10 00 04 4d 51 54 54 04 42 00 3c 00 01 61 00 01 70",
        MalformedPacket,
        0x81,
    ),
    ("connect-trailing", V4, "10 0e 00 04 4d 51 54 54 04 02 00 3c 00 01 61 00", MalformedPacket, 0x81),
    ("connect-no-username", V4, "10 0d 00 04 4d 51 54 54 04 82 00 3c 00 01 61", MalformedPacket, 0x81),
    ("connack-flags", V4, "20 02 02 00", MalformedPacket, 0x81),
    ("connack-code", V4, "20 02 00 06", MalformedPacket, 0x81),
    ("connack-long", V4, "20 03 00 00 00", MalformedPacket, 0x81),
    ("connack-session-refused", V4, "20 02 01 05", ProtocolError, 0x82),
    ("connack-reason", V5, "20 03 00 04 00", MalformedPacket, 0x81),
    ("connack-session-refused-v5", V5, "20 03 01 87 00", ProtocolError, 0x82),
    ("suback-empty", V5, "90 03 00 01 00", ProtocolError, 0x82),
    ("suback-empty-3.1.1", V4, "90 02 00 01", ProtocolError, 0x82),
    ("suback-code-3.1.1", V4, "90 03 00 01 03", MalformedPacket, 0x81),
    ("suback-code", V5, "90 04 00 01 00 11", MalformedPacket, 0x81),
    ("unsuback-3.1.1-codes", V4, "b0 03 00 01 00", MalformedPacket, 0x81),
    ("unsuback-empty", V5, "b0 03 00 01 00", ProtocolError, 0x82),
    ("disconnect-3.1.1", V4, "e0 01 00", MalformedPacket, 0x81),
    ("disconnect-reason", V5, "e0 01 01", MalformedPacket, 0x81),
    ("disconnect-trailing", V5, "e0 03 00 00 00", MalformedPacket, 0x81),
    ("auth-reason", V5, "f0 01 87", MalformedPacket, 0x81),
    # properties (MQTT 5.0 §2.2.2)
    ("property-unknown", V5, "30 06 00 01 61 02 05 00", MalformedPacket, 0x81),
    ("property-not-allowed", V5, "30 09 00 01 61 05 11 00 00 00 00", MalformedPacket, 0x81),
    ("will-property-in-publish", V5, "30 09 00 01 61 05 18 00 00 00 00", MalformedPacket, 0x81),
    ("property-twice", V5, "30 0c 00 01 61 08 03 00 01 74 03 00 01 74", ProtocolError, 0x82),
    ("property-length-past-end", V5, "30 04 00 01 61 05", MalformedPacket, 0x81),
    ("property-length-varint", V5, "30 04 00 01 61 80", MalformedPacket, 0x81),
    ("property-u32-short", V5, "30 07 00 01 61 03 02 00 00", MalformedPacket, 0x81),
    ("property-u16-short", V5, "30 06 00 01 61 02 23 00", MalformedPacket, 0x81),
    ("property-byte-short", V5, "30 05 00 01 61 01 01", MalformedPacket, 0x81),
    ("property-string-short", V5, "30 06 00 01 61 02 03 00", MalformedPacket, 0x81),
    ("property-pair-short", V5, "30 08 00 01 61 04 26 00 01 6b", MalformedPacket, 0x81),
    ("subscription-id-0", V5, "30 06 00 01 61 02 0b 00", ProtocolError, 0x82),
    ("subscription-id-short", V5, "30 06 00 01 61 02 0b 80", MalformedPacket, 0x81),
    ("subscribe-two-ids", V5, "82 0a 00 01 04 0b 01 0b 02 00 01 61 00", ProtocolError, 0x82),
    ("topic-alias-0", V5, "30 07 00 01 61 03 23 00 00", ProtocolError, 0x82),
    ("payload-format-2", V5, "30 06 00 01 61 02 01 02", ProtocolError, 0x82),
    ("retain-available-2", V5, "20 05 00 00 02 25 02", ProtocolError, 0x82),
    ("receive-maximum-0", V5, "20 06 00 00 03 21 00 00", ProtocolError, 0x82),
    ("maximum-packet-size-0", V5, "20 08 00 00 05 27 00 00 00 00", ProtocolError, 0x82),
    (
        "request-problem-information-2",
        V5,
        "10 0f " + CONNECT_V5 + " 02 00 00 02 17 02 00 00",
        ProtocolError,
        0x82,
    ),
    (
        "connect-property-not-allowed",
        V5,
        "10 0f " + CONNECT_V5 + " 02 00 00 02 23 01 00 00",
        MalformedPacket,
        0x81,
    ),
    (
        "connect-will-property-not-allowed",
        V5,
        "10 15 " + CONNECT_V5 + " 06 00 00 00 00 00 02 23 01 00 01 74 00 00",
        MalformedPacket,
        0x81,
    ),
]


@pytest.mark.parametrize(
    ("version", "wire", "error", "reason_code"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed(version: int, wire: str, error: type[ProtocolError], reason_code: int) -> None:
    data = h(wire)
    with pytest.raises(ProtocolError) as info:
        decode(data, version)
    assert type(info.value) is error
    assert info.value.reason_code == reason_code
    reader = PacketReader(version)
    with pytest.raises(error):
        reader.feed(data)
    with pytest.raises(error):  # the reader stays broken
        reader.feed(b"")


def test_connect_switches_reader_version() -> None:
    reader = PacketReader(V4)
    connect = Connect("a", keepalive=60)
    wire = encode(connect, V5) + encode(PubAck(1, RC.QUOTA_EXCEEDED), V5)
    assert reader.feed(wire) == [connect, PubAck(1, RC.QUOTA_EXCEEDED)]
    assert reader.version == V5


def test_payload_too_big() -> None:
    wire = encode(Publish("a", bytes(100)), V4)
    assert decode(wire, V4, max_size=len(wire)) == (Publish("a", bytes(100)), len(wire))
    with pytest.raises(PayloadTooBig) as info:
        decode(wire[:2], V4, max_size=len(wire) - 1)
    assert info.value.reason_code == 0x95
    # The reader raises on the fixed header alone, before buffering the body.
    reader = PacketReader(V4, max_size=len(wire) - 1)
    assert reader.feed(wire[:1]) == []
    with pytest.raises(PayloadTooBig):
        reader.feed(wire[1:2])


def test_decode_incomplete() -> None:
    wire = encode(Publish("a/b", b"payload", qos=1, packet_id=3), V5)
    for end in range(len(wire)):
        assert decode(wire[:end], V5) is None
    assert decode(bytearray(wire + b"\xc0"), V5) == (
        Publish("a/b", b"payload", qos=1, packet_id=3),
        len(wire),
    )
    assert decode(memoryview(wire), V5) is not None


def test_reader_keeps_one_partial_packet() -> None:
    reader = PacketReader(V4)
    one, two = encode(PingReq(), V4), encode(Publish("t", b"x" * 50), V4)
    assert reader.feed(one + two[:10]) == [PingReq()]
    assert reader.buffered == 10
    assert reader.feed(two[10:20]) == []
    assert reader.buffered == 20
    assert reader.feed(memoryview(two[20:] + one)) == [Publish("t", b"x" * 50), PingReq()]
    assert reader.buffered == 0


@pytest.mark.parametrize("version", [3, 6, None])
def test_bad_version(version: Any) -> None:
    with pytest.raises(ValueError, match="not 4"):
        encode(PingReq(), version)
    with pytest.raises(ValueError, match="not 4"):
        decode(b"", version)
    with pytest.raises(ValueError, match="not 4"):
        PacketReader(version)


# --- encoding refuses a caller's mistake -----------------------------------------------

ENCODE_ERRORS: list[tuple[str, int, Any, str]] = [
    ("publish-topic-#", V4, Publish("a/#"), "topic 'a/#' contains '#'"),
    ("publish-topic-empty", V5, Publish(""), "topic name is empty"),
    ("publish-topic-empty-3.1.1-alias", V4, Publish("", properties=Properties(topic_alias=1)), "empty"),
    ("publish-qos3", V4, Publish("a", qos=3, packet_id=1), "qos 3"),
    ("publish-dup-qos0", V4, Publish("a", dup=True), "dup"),
    ("publish-id-0", V4, Publish("a", qos=1, packet_id=0), "packet identifier 0"),
    ("publish-id-missing", V4, Publish("a", qos=1), "packet identifier None"),
    ("publish-id-qos0", V4, Publish("a", packet_id=1), "no packet identifier"),
    ("publish-id-big", V4, Publish("a", qos=2, packet_id=65536), "65536"),
    ("publish-properties-3.1.1", V4, Publish("a", properties=Properties(content_type="x")), "need MQTT 5"),
    (
        "publish-property-not-allowed",
        V5,
        Publish("a", properties=Properties(reason_string="x")),
        "reason_string",
    ),
    ("publish-subscription-id-0", V5, Publish("a", properties=Properties(subscription_identifier=(0,))), "0"),
    ("publish-topic-alias-0", V5, Publish("a", properties=Properties(topic_alias=0)), "topic_alias is 0"),
    ("publish-pfi-2", V5, Publish("a", properties=Properties(payload_format_indicator=2)), "outside 0..1"),
    ("publish-too-large", V5, Publish("a", bytes(268435455)), "larger than the MQTT limit"),
    ("property-string", V5, Publish("a", properties=Properties(content_type="\x00")), "U\\+0000"),
    ("property-binary", V5, Publish("a", properties=Properties(correlation_data=bytes(65536))), "65535"),
    ("property-pair", V5, Publish("a", properties=Properties(user_property=(("\ud800", "v"),))), "UTF-8"),
    ("puback-id-0", V4, PubAck(0), "packet identifier 0"),
    ("puback-reason-3.1.1", V4, PubAck(1, RC.QUOTA_EXCEEDED), "needs MQTT 5"),
    ("puback-reason", V5, PubAck(1, RC.BANNED), "not allowed in PUBACK"),
    ("pubrel-reason", V5, PubRel(1, RC.QUOTA_EXCEEDED), "not allowed in PUBREL"),
    ("puback-property", V5, PubAck(1, properties=Properties(topic_alias=1)), "topic_alias is not allowed"),
    ("connect-version", V5, Connect("a", version=V4), "version 4 encoded as version 5"),
    ("connect-keepalive", V4, Connect("a", keepalive=65536, version=V4), "keepalive"),
    ("connect-client-id", V4, Connect("\x00", version=V4), "U\\+0000"),
    ("connect-will-topic", V4, Connect("a", will=Will("+"), version=V4), "contains '\\+'"),
    ("connect-will-qos", V4, Connect("a", will=Will("t", qos=3), version=V4), "qos 3"),
    ("connect-password-only", V4, Connect("a", password=b"p", version=V4), "password only with a user"),
    (
        "connect-will-property",
        V5,
        Connect("a", will=Will("t", properties=Properties(session_expiry_interval=1))),
        "not allowed in will",
    ),
    ("connect-will-delay", V5, Connect("a", properties=Properties(will_delay_interval=1)), "CONNECT"),
    (
        "connect-request-problem",
        V5,
        Connect("a", properties=Properties(receive_maximum=0)),
        "receive_maximum is 0",
    ),
    ("connack-code-3.1.1", V4, ConnAck(reason_code=RC.BANNED), "not a MQTT 3.1.1"),
    ("connack-reason", V5, ConnAck(reason_code=RC.NO_MATCHING_SUBSCRIBERS), "not allowed in CONNACK"),
    ("connack-session-refused", V4, ConnAck(True, ConnectReturnCode.NOT_AUTHORIZED), "session_present"),
    ("connack-property", V5, ConnAck(properties=Properties(topic_alias=1)), "not allowed"),
    ("connack-server-keep-alive", V5, ConnAck(properties=Properties(server_keep_alive=65536)), "0..65535"),
    ("connack-max-packet", V5, ConnAck(properties=Properties(maximum_packet_size=2**32)), "4294967295"),
    ("subscribe-empty", V4, Subscribe(1, ()), "at least one subscription"),
    ("subscribe-filter", V4, Subscribe(1, (Subscription("a#"),)), "'#' other than alone"),
    ("subscribe-qos", V4, Subscribe(1, (Subscription("a", qos=3),)), "qos 3"),
    ("subscribe-id-0", V4, Subscribe(0, (Subscription("a"),)), "packet identifier 0"),
    ("subscribe-options-3.1.1", V4, Subscribe(1, (Subscription("a", no_local=True),)), "need MQTT 5"),
    (
        "subscribe-retain-handling",
        V5,
        Subscribe(1, (Subscription("a", retain_handling=3),)),
        "retain handling 3",
    ),
    ("subscribe-shared-no-local", V5, Subscribe(1, (Subscription("$share/g/a", no_local=True),)), "no_local"),
    (
        "subscribe-two-ids",
        V5,
        Subscribe(1, (Subscription("a"),), Properties(subscription_identifier=(1, 2))),
        "one subscription identifier",
    ),
    ("suback-empty", V4, SubAck(1, ()), "at least one"),
    ("suback-code-3.1.1", V4, SubAck(1, (RC.QUOTA_EXCEEDED,)), "not allowed in SUBACK"),
    ("suback-code", V5, SubAck(1, (RC.NO_SUBSCRIPTION_EXISTED,)), "not allowed in SUBACK"),
    ("unsubscribe-empty", V4, Unsubscribe(1, ()), "at least one topic filter"),
    ("unsubscribe-filter", V4, Unsubscribe(1, ("a+",)), "'\\+' other than alone"),
    ("unsuback-codes-3.1.1", V4, UnsubAck(1, (RC.SUCCESS,)), "need MQTT 5"),
    ("unsuback-empty", V5, UnsubAck(1), "at least one reason code"),
    ("unsuback-code", V5, UnsubAck(1, (RC.GRANTED_QOS_1,)), "not allowed in UNSUBACK"),
    ("disconnect-3.1.1", V4, Disconnect(RC.SERVER_BUSY), "needs MQTT 5"),
    ("disconnect-reason", V5, Disconnect(RC.GRANTED_QOS_1), "not allowed in DISCONNECT"),
    ("disconnect-properties-3.1.1", V4, Disconnect(properties=Properties(reason_string="x")), "need MQTT 5"),
    ("auth-3.1.1", V4, Auth(), "auth needs MQTT 5"),
    ("auth-reason", V5, Auth(RC.BANNED), "not allowed in AUTH"),
]


@pytest.mark.parametrize(
    ("version", "packet", "match"), [e[1:] for e in ENCODE_ERRORS], ids=[e[0] for e in ENCODE_ERRORS]
)
def test_encode_refuses(version: int, packet: Packet, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode(packet, version)


def test_encode_not_a_packet() -> None:
    with pytest.raises(TypeError, match="not an MQTT packet"):
        encode("CONNECT", V4)  # type: ignore[arg-type]


def test_connect_repr_redacts_password() -> None:
    text = repr(Connect("a", username="u", password=b"hunter2"))
    assert "hunter2" not in text
    assert "<redacted>" in text
    assert "password=None" in repr(Connect("a"))


def test_connack_3_1_1_reason_code_type() -> None:
    packet, _ = decode(h("20 02 00 05"), V4) or (None, 0)
    assert isinstance(packet, ConnAck)
    assert type(packet.reason_code) is ConnectReturnCode


# --- property tests --------------------------------------------------------------------

TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8)
LEVEL = st.text(st.characters(codec="utf-8", exclude_characters="\x00/+#"), max_size=4)
TOPICS = st.lists(LEVEL, min_size=1, max_size=4).map("/".join).filter(bool)
FILTERS = st.builds(
    lambda share, levels, hash_: share + "/".join(levels + (["#"] if hash_ else [])),
    st.sampled_from(["", "$share/g/"]),
    st.lists(st.one_of(LEVEL, st.just("+")), min_size=1, max_size=4),
    st.booleans(),
).filter(lambda f: f and f != "$share/g/")
DATA = st.binary(max_size=8)
U16 = st.integers(0, 0xFFFF)
U32 = st.integers(0, 0xFFFFFFFF)
PACKET_ID = st.integers(1, 0xFFFF)
FLAG = st.booleans()
QOS = st.integers(0, 2)
PAIRS = st.lists(st.tuples(TEXT, TEXT), max_size=2).map(tuple)

PROPERTY_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "payload_format_indicator": st.integers(0, 1),
    "message_expiry_interval": U32,
    "content_type": TEXT,
    "response_topic": TOPICS,
    "correlation_data": DATA,
    "session_expiry_interval": U32,
    "assigned_client_identifier": TEXT,
    "server_keep_alive": U16,
    "authentication_method": TEXT,
    "authentication_data": DATA,
    "request_problem_information": FLAG,
    "will_delay_interval": U32,
    "request_response_information": FLAG,
    "response_information": TEXT,
    "server_reference": TEXT,
    "reason_string": TEXT,
    "receive_maximum": st.integers(1, 0xFFFF),
    "topic_alias_maximum": U16,
    "topic_alias": st.integers(1, 0xFFFF),
    "maximum_qos": st.integers(0, 1),
    "retain_available": FLAG,
    "maximum_packet_size": st.integers(1, 0xFFFFFFFF),
    "wildcard_subscription_available": FLAG,
    "subscription_identifier_available": FLAG,
    "shared_subscription_available": FLAG,
}
ALLOWED = {
    "will": [
        "payload_format_indicator",
        "message_expiry_interval",
        "content_type",
        "response_topic",
        "correlation_data",
        "will_delay_interval",
    ],
    "connect": [
        "session_expiry_interval",
        "authentication_method",
        "authentication_data",
        "request_problem_information",
        "request_response_information",
        "receive_maximum",
        "topic_alias_maximum",
        "maximum_packet_size",
    ],
    "connack": [
        "session_expiry_interval",
        "assigned_client_identifier",
        "server_keep_alive",
        "authentication_method",
        "authentication_data",
        "response_information",
        "server_reference",
        "reason_string",
        "receive_maximum",
        "topic_alias_maximum",
        "maximum_qos",
        "retain_available",
        "maximum_packet_size",
        "wildcard_subscription_available",
        "subscription_identifier_available",
        "shared_subscription_available",
    ],
    "publish": [
        "payload_format_indicator",
        "message_expiry_interval",
        "content_type",
        "response_topic",
        "correlation_data",
        "topic_alias",
    ],
    "subscribe": [],
    "ack": ["reason_string"],
    "disconnect": ["session_expiry_interval", "server_reference", "reason_string"],
    "auth": ["authentication_method", "authentication_data", "reason_string"],
}


def properties(context: str) -> st.SearchStrategy[Properties]:
    optional = {name: PROPERTY_VALUES[name] for name in ALLOWED[context]}
    optional["user_property"] = PAIRS
    if context == "publish":
        optional["subscription_identifier"] = st.lists(st.integers(1, 268435455), max_size=3).map(tuple)
    if context == "subscribe":
        optional["subscription_identifier"] = st.integers(1, 268435455).map(lambda i: (i,))
    return st.fixed_dictionaries({}, optional=optional).map(lambda kw: Properties(**kw))


def reasons(*codes: int) -> st.SearchStrategy[ReasonCode]:
    return st.sampled_from([ReasonCode(c) for c in codes])


def packets(version: int) -> st.SearchStrategy[Packet]:
    v5 = version == V5

    def props(context: str) -> st.SearchStrategy[Properties]:
        return properties(context) if v5 else st.just(Properties())

    def acks(cls: Any, codes: tuple[int, ...]) -> st.SearchStrategy[Packet]:
        return st.builds(cls, PACKET_ID, reasons(*codes) if v5 else st.just(RC.SUCCESS), props("ack"))

    def publish(
        topic: str, qos: int, retain: bool, dup: bool, packet_id: int, payload: bytes, p: Properties
    ) -> Packet:
        if not topic and p.topic_alias is None:
            p = replace(p, topic_alias=1)
        return Publish(topic, payload, qos, retain, dup and qos > 0, packet_id if qos else None, p)

    subscription = (
        st.builds(Subscription, FILTERS, QOS, FLAG, FLAG, st.integers(0, 2))
        if v5
        else st.builds(Subscription, FILTERS, QOS)
    ).map(lambda s: replace(s, no_local=False) if s.filter.startswith("$share/") else s)
    connack_codes = reasons(0x00, 0x80, 0x87, 0x9F) if v5 else st.sampled_from(list(ConnectReturnCode))
    return st.one_of(
        st.builds(
            Connect,
            TEXT,
            FLAG,
            U16,
            st.none() | TEXT,
            st.none() | DATA,
            st.none() | st.builds(Will, TOPICS, DATA, QOS, FLAG, props("will")),
            props("connect"),
            st.just(version),
        ).map(lambda c: c if v5 or c.username is not None else replace(c, password=None)),
        st.builds(ConnAck, FLAG, connack_codes, props("connack")).map(
            lambda c: replace(c, session_present=False) if c.reason_code else c
        ),
        st.builds(
            publish,
            TOPICS | st.just("") if v5 else TOPICS,
            QOS,
            FLAG,
            FLAG,
            PACKET_ID,
            st.binary(max_size=32),
            props("publish"),
        ),
        acks(PubAck, (0x00, 0x10, 0x80, 0x97, 0x99)),
        acks(PubRec, (0x00, 0x10, 0x83, 0x91)),
        acks(PubRel, (0x00, 0x92)),
        acks(PubComp, (0x00, 0x92)),
        st.builds(
            Subscribe,
            PACKET_ID,
            st.lists(subscription, min_size=1, max_size=3).map(tuple),
            props("subscribe"),
        ),
        st.builds(
            SubAck,
            PACKET_ID,
            st.lists(reasons(0, 1, 2, 0x80, *((0x8F, 0x9E, 0xA2) if v5 else ())), min_size=1, max_size=3).map(
                tuple
            ),
            props("ack"),
        ),
        st.builds(
            Unsubscribe,
            PACKET_ID,
            st.lists(FILTERS, min_size=1, max_size=3).map(tuple),
            props("ack").map(lambda p: replace(p, reason_string=None)),
        ),
        st.builds(
            UnsubAck,
            PACKET_ID,
            st.lists(reasons(0x00, 0x11, 0x8F), min_size=1, max_size=3).map(tuple) if v5 else st.just(()),
            props("ack"),
        ),
        st.just(PingReq()),
        st.just(PingResp()),
        st.builds(
            Disconnect, reasons(0x00, 0x04, 0x8E, 0xA2) if v5 else st.just(RC.SUCCESS), props("disconnect")
        ),
        *([st.builds(Auth, reasons(0x00, 0x18, 0x19), props("auth"))] if v5 else []),
    )


@pytest.mark.parametrize("version", [V4, V5])
@settings(max_examples=100)
@given(data=st.data())
def test_every_packet_round_trips(version: int, data: st.DataObject) -> None:
    packet = data.draw(packets(version))
    wire = encode(packet, version)
    assert decode(wire, version) == (packet, len(wire))


@pytest.mark.parametrize("version", [V4, V5])
@settings(max_examples=50)
@given(data=st.data())
def test_any_split_gives_the_same_packets(version: int, data: st.DataObject) -> None:
    sent = data.draw(st.lists(packets(version), max_size=6))
    wire = b"".join(encode(p, version) for p in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    reader = PacketReader(version)
    got = []
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        got += reader.feed(wire[start:end])
    assert got == sent
    assert reader.buffered == 0


@pytest.mark.parametrize("version", [V4, V5])
@settings(max_examples=500)
@given(chunks=st.lists(st.binary(max_size=40), max_size=6))
def test_random_bytes_give_packets_or_a_protocol_error(version: int, chunks: list[bytes]) -> None:
    reader = PacketReader(version, max_size=64)
    try:
        for chunk in chunks:
            for packet in reader.feed(chunk):
                assert encode(packet, reader.version)  # what decodes is valid to send
    except ProtocolError as exc:
        assert type(exc) in (ProtocolError, MalformedPacket, PayloadTooBig)
    assert reader.buffered <= 64


@pytest.mark.parametrize(
    ("filter", "topic", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/+", "a", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("a/#", "b", False),
        ("#", "a/b", True),
        ("+/+", "/a", True),
        ("+", "/a", False),
        ("#", "$SYS/uptime", False),
        ("+/uptime", "$SYS/uptime", False),
        ("$SYS/#", "$SYS/uptime", True),
        ("$share/g/a/+", "a/b", True),
        ("$share/g/a/+", "b/b", False),
        ("a/+/c", "a//c", True),
        ("sport/tennis/+", "sport/tennis", False),
    ],
)
def test_topic_matches(filter: str, topic: str, expected: bool) -> None:
    assert topic_matches(filter, topic) is expected


# --- splitting a stream (the reference of tether._speedups.split_packets) -----------------


def _message(topic: str, payload: bytes, qos: int, retain: bool) -> tuple[str, bytes, int, bool]:
    return (topic, payload, qos, retain)


@pytest.mark.parametrize("version", [V4, V5])
def test_split_packets_py_frames_whole_packets(version: int) -> None:
    from tether.mqtt.packets import _split_packets_py

    names = {b"a/b": "a/b"}
    known = encode(Publish("a/b", b"12", retain=True), version)
    unknown = encode(Publish("c", b"3"), version)
    qos1 = encode(Publish("a/b", b"4", qos=1, packet_id=7), version)
    ack = encode(PubAck(9), version)
    wire = known + unknown + qos1 + ack + known[:3]
    items, offset, malformed = _split_packets_py(wire, 0, 1000, version, names, _message)
    at = len(known)
    assert items == [
        ("a/b", b"12", 0, True),
        (0x30, at + 2, at + len(unknown)),
        (0x32, at + len(unknown) + 2, at + len(unknown) + len(qos1)),
        (0x40, at + len(unknown) + len(qos1) + 2, len(wire) - 3),
    ]
    assert (offset, malformed) == (len(wire) - 3, False)
    # Without names (or without a message factory) every packet is a fixed header.
    for args in ((None, _message), (names, None)):
        assert [item[0] for item in _split_packets_py(wire, 0, 1000, version, *args)[0]] == [
            0x31,
            0x30,
            0x32,
            0x40,
        ]


def test_split_packets_py_leaves_odd_publishes_to_the_decoder() -> None:
    from tether.mqtt.packets import _split_packets_py

    names = {b"a/b": "a/b"}
    with_props = encode(Publish("a/b", b"x", properties=Properties(content_type="t")), V5)
    no_room = bytes((0x30, 3, 0, 9, 0x61))  # topic length past the end of the packet
    too_short = bytes((0x30, 2, 0, 0))  # no room for a topic and anything after it
    v5_no_props = bytes((0x30, 5, 0, 3)) + b"a/b"  # 5.0: the property length is missing
    for wire in (with_props, no_room, too_short, v5_no_props):
        items, offset, malformed = _split_packets_py(wire, 0, 1000, V5, names, _message)
        assert items == [(0x30, 2, len(wire))]
        assert (offset, malformed) == (len(wire), False)


@pytest.mark.parametrize(
    ("wire", "max_size"),
    [
        (b"\x00\x00", 10),  # reserved type
        (b"\x41\x02\x00\x01", 10),  # PUBACK with flags
        (b"\x30\x80\x00", 10),  # remaining length not in its shortest form
        (b"\x30\xff\xff\xff\xff\x01", 10**9),  # longer than four bytes
        (b"\x30\x20", 10),  # over max_size
    ],
)
def test_split_packets_py_reports_a_malformed_header(wire: bytes, max_size: int) -> None:
    from tether.mqtt.packets import _decode_fixed_header, _split_packets_py

    ack = encode(PubAck(1), V5)
    items, offset, malformed = _split_packets_py(ack + wire, 0, max_size, V5)
    assert (items, offset, malformed) == ([(0x40, 2, 4)], len(ack), True)
    with pytest.raises(ProtocolError):
        _decode_fixed_header(memoryview(ack + wire), offset, max_size, V5)


def test_the_compiled_splitter_is_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from tether.mqtt import packets

    monkeypatch.setenv("TETHER_NO_SPEEDUPS", "1")
    assert packets._load_compiled() is None
    monkeypatch.delenv("TETHER_NO_SPEEDUPS")
    monkeypatch.setitem(sys.modules, "tether._speedups", None)  # not built: import fails
    assert packets._load_compiled() is None
    monkeypatch.setitem(sys.modules, "tether._speedups", type(sys)("tether._speedups"))
    sys.modules["tether._speedups"].split_packets = _message  # type: ignore[attr-defined]
    loaded: object = packets._load_compiled()
    assert loaded is _message
