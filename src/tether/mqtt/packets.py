"""MQTT 3.1.1 and 5.0 control packets (OASIS MQTT 3.1.1 §2-§3, MQTT 5.0 §1-§4): pure functions, no state.

Each control packet is a frozen dataclass; `encode` turns one into bytes for a protocol
version (4 for 3.1.1, 5 for 5.0) and `decode` turns bytes back into one. `PacketReader`
splits a byte stream into packets. Decoding is strict: a peer's mistake raises
`MalformedPacket` or `ProtocolError` (with the MQTT 5.0 reason code the spec gives), a
packet larger than the limit raises `PayloadTooBig`. Encoding refuses a caller's mistake
with `ValueError` before producing any bytes.

Versions differ only where the spec says so: 3.1.1 has no properties, no reason codes in
acknowledgements, UNSUBACK or DISCONNECT, no subscription options beyond QoS and no AUTH.
"""

from __future__ import annotations

import enum
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from tether.errors import MalformedPacket, PayloadTooBig, ProtocolError

__all__ = [
    "DEFAULT_MAX_SIZE",
    "MQTT_3_1_1",
    "MQTT_5",
    "Auth",
    "ConnAck",
    "Connect",
    "ConnectReturnCode",
    "Disconnect",
    "Packet",
    "PacketReader",
    "PacketType",
    "PingReq",
    "PingResp",
    "Properties",
    "PubAck",
    "PubComp",
    "PubRec",
    "PubRel",
    "Publish",
    "ReasonCode",
    "SubAck",
    "Subscribe",
    "Subscription",
    "UnsubAck",
    "Unsubscribe",
    "Will",
    "decode",
    "decode_binary",
    "decode_string",
    "decode_string_pair",
    "decode_varint",
    "encode",
    "encode_binary",
    "encode_string",
    "encode_string_pair",
    "encode_varint",
    "topic_matches",
    "validate_filter",
    "validate_topic",
]

#: Protocol level of MQTT 3.1.1 (MQTT 3.1.1 §3.1.2.2).
MQTT_3_1_1: Final = 4
#: Protocol level of MQTT 5.0 (MQTT 5.0 §3.1.2.2).
MQTT_5: Final = 5
#: Default limit on the size of one packet, fixed header included.
DEFAULT_MAX_SIZE: Final = 2**20

_VERSIONS = (MQTT_3_1_1, MQTT_5)
_MAX_VARINT = 268_435_455
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_Buffer = bytes | bytearray | memoryview


class PacketType(enum.IntEnum):
    """Control packet types (MQTT 5.0 §2.1.2)."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


class ReasonCode(enum.IntEnum):
    """Reason codes (MQTT 5.0 §2.4); SUBACK in 3.1.1 uses 0x00-0x02 and 0x80 alike."""

    SUCCESS = 0x00
    NORMAL_DISCONNECTION = 0x00
    GRANTED_QOS_0 = 0x00
    GRANTED_QOS_1 = 0x01
    GRANTED_QOS_2 = 0x02
    DISCONNECT_WITH_WILL_MESSAGE = 0x04
    NO_MATCHING_SUBSCRIBERS = 0x10
    NO_SUBSCRIPTION_EXISTED = 0x11
    CONTINUE_AUTHENTICATION = 0x18
    RE_AUTHENTICATE = 0x19
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    BAD_USER_NAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    BANNED = 0x8A
    SERVER_SHUTTING_DOWN = 0x8B
    BAD_AUTHENTICATION_METHOD = 0x8C
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    PACKET_IDENTIFIER_IN_USE = 0x91
    PACKET_IDENTIFIER_NOT_FOUND = 0x92
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    MESSAGE_RATE_TOO_HIGH = 0x96
    QUOTA_EXCEEDED = 0x97
    ADMINISTRATIVE_ACTION = 0x98
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    USE_ANOTHER_SERVER = 0x9C
    SERVER_MOVED = 0x9D
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    CONNECTION_RATE_EXCEEDED = 0x9F
    MAXIMUM_CONNECT_TIME = 0xA0
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2


class ConnectReturnCode(enum.IntEnum):
    """CONNACK return codes of MQTT 3.1.1 (MQTT 3.1.1 §3.2.2.3)."""

    ACCEPTED = 0
    UNACCEPTABLE_PROTOCOL_VERSION = 1
    IDENTIFIER_REJECTED = 2
    SERVER_UNAVAILABLE = 3
    BAD_USER_NAME_OR_PASSWORD = 4
    NOT_AUTHORIZED = 5


# MQTT 5.0 §2.4 and each packet's reason code table: which codes each packet may carry.
_REASONS: Final[dict[int, frozenset[int]]] = {
    PacketType.CONNACK: frozenset(
        (0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95)
    )
    | frozenset((0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F)),
    PacketType.PUBACK: frozenset((0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99)),
    PacketType.PUBREC: frozenset((0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99)),
    PacketType.PUBREL: frozenset((0x00, 0x92)),
    PacketType.PUBCOMP: frozenset((0x00, 0x92)),
    PacketType.SUBACK: frozenset((0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2)),
    PacketType.UNSUBACK: frozenset((0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91)),
    PacketType.DISCONNECT: frozenset((0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E))
    | frozenset(range(0x8F, 0xA3)) - {0x91, 0x92},
    PacketType.AUTH: frozenset((0x00, 0x18, 0x19)),
}
# MQTT 3.1.1 §3.9.3: the only SUBACK return codes.
_SUBACK_V4: Final = frozenset((0x00, 0x01, 0x02, 0x80))


# --- wire helpers (MQTT 5.0 §1.5) -------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """Encode a variable byte integer (MQTT 5.0 §1.5.5).

    Raises:
        ValueError: if value is outside 0..268435455.
    """
    if not 0 <= value <= _MAX_VARINT:
        raise ValueError(f"variable byte integer {value} is outside 0..{_MAX_VARINT}")
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(buf: _Buffer, at: int) -> tuple[int, int] | None:
    """Decode a variable byte integer (MQTT 5.0 §1.5.5).

    Returns:
        (value, offset after it), or None if buf ends inside it.

    Raises:
        MalformedPacket: if the integer is longer than four bytes or not in its
            shortest form (§1.5.5: "MUST use the minimum number of bytes").
    """
    value = 0
    n = len(buf)
    for i in range(4):
        if at + i >= n:
            return None
        byte = buf[at + i]
        value |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            if byte == 0 and i:
                raise MalformedPacket("variable byte integer is not in its shortest form")
            return value, at + i + 1
    raise MalformedPacket("variable byte integer is longer than four bytes")


def encode_string(value: str) -> bytes:
    """Encode a UTF-8 encoded string with its two-byte length (MQTT 5.0 §1.5.4).

    Raises:
        ValueError: if value holds a surrogate or U+0000, or is over 65535 bytes in UTF-8.
    """
    try:
        data = value.encode()
    except UnicodeEncodeError:
        raise ValueError(f"string {value!r} is not valid UTF-8") from None
    if "\x00" in value:
        raise ValueError(f"string {value!r} contains U+0000")
    if len(data) > 0xFFFF:
        raise ValueError(f"string of {len(data)} bytes is longer than 65535")
    return _U16.pack(len(data)) + data


def decode_string(buf: _Buffer, at: int, end: int | None = None) -> tuple[str, int]:
    """Decode a UTF-8 encoded string (MQTT 5.0 §1.5.4).

    Args:
        buf: the bytes holding the string.
        at: where its two-byte length starts.
        end: the end of the packet holding it; len(buf) by default.

    Returns:
        (value, offset after it).

    Raises:
        MalformedPacket: if it runs past end, is not valid UTF-8 or contains U+0000.
    """
    stop, start = _length_prefixed(buf, at, len(buf) if end is None else end, "string")
    try:
        value = str(buf[start:stop], "utf-8")
    except UnicodeDecodeError:
        raise MalformedPacket("string is not valid UTF-8") from None
    if "\x00" in value:
        raise MalformedPacket(f"string {value!r} contains U+0000")
    return value, stop


def encode_binary(value: bytes) -> bytes:
    """Encode binary data with its two-byte length (MQTT 5.0 §1.5.6).

    Raises:
        ValueError: if value is longer than 65535 bytes.
    """
    if len(value) > 0xFFFF:
        raise ValueError(f"binary data of {len(value)} bytes is longer than 65535")
    return _U16.pack(len(value)) + bytes(value)


def decode_binary(buf: _Buffer, at: int, end: int | None = None) -> tuple[bytes, int]:
    """Decode binary data (MQTT 5.0 §1.5.6).

    Returns:
        (value, offset after it).

    Raises:
        MalformedPacket: if it runs past end (len(buf) by default).
    """
    stop, start = _length_prefixed(buf, at, len(buf) if end is None else end, "binary data")
    return bytes(buf[start:stop]), stop


def encode_string_pair(name: str, value: str) -> bytes:
    """Encode a UTF-8 string pair (MQTT 5.0 §1.5.7).

    Raises:
        ValueError: as `encode_string` does for either string.
    """
    return encode_string(name) + encode_string(value)


def decode_string_pair(buf: _Buffer, at: int, end: int | None = None) -> tuple[tuple[str, str], int]:
    """Decode a UTF-8 string pair (MQTT 5.0 §1.5.7).

    Returns:
        ((name, value), offset after it).

    Raises:
        MalformedPacket: as `decode_string` does for either string.
    """
    name, at = decode_string(buf, at, end)
    value, at = decode_string(buf, at, end)
    return (name, value), at


def _length_prefixed(buf: _Buffer, at: int, end: int, what: str) -> tuple[int, int]:
    if at + 2 > end:
        raise MalformedPacket(f"{what} length runs past the end of the packet")
    stop = at + 2 + ((buf[at] << 8) | buf[at + 1])
    if stop > end:
        raise MalformedPacket(f"{what} runs past the end of the packet")
    return stop, at + 2


def _u8(buf: _Buffer, at: int, end: int) -> int:
    if at >= end:
        raise MalformedPacket("packet ends early")
    return buf[at]


def _u16(buf: _Buffer, at: int, end: int) -> int:
    if at + 2 > end:
        raise MalformedPacket("packet ends early")
    return (buf[at] << 8) | buf[at + 1]


def _varint_in(buf: _Buffer, at: int, end: int) -> tuple[int, int]:
    result = decode_varint(buf, at)
    if result is None or result[1] > end:
        raise MalformedPacket("variable byte integer runs past the end of the packet")
    return result


# --- topics (MQTT 5.0 §4.7, §4.8.2) ----------------------------------------------------


def _topic_problem(name: str) -> str | None:
    # Checks shared by encode and decode; decode already has valid UTF-8 without U+0000.
    if not name:
        return "topic name is empty"
    if "+" in name:
        return f"topic {name!r} contains '+'"
    if "#" in name:
        return f"topic {name!r} contains '#'"
    return None


def _filter_problem(filter: str) -> str | None:
    if not filter:
        return "topic filter is empty"
    levels = filter
    if filter.startswith("$share/"):
        # §4.8.2: $share/{ShareName}/{filter}; ShareName is not empty, without '/', '+', '#'.
        share, slash, levels = filter[7:].partition("/")
        if not share:
            return f"shared subscription {filter!r} has an empty share name"
        if "+" in share or "#" in share:
            return f"shared subscription {filter!r} has a wildcard in its share name"
        if not slash or not levels:
            return f"shared subscription {filter!r} has no topic filter"
    if "+" not in levels and "#" not in levels:
        return None
    parts = levels.split("/")
    last = len(parts) - 1
    for i, level in enumerate(parts):
        if "#" in level and (level != "#" or i != last):
            return f"topic filter {filter!r} has '#' other than alone in its last level"
        if "+" in level and level != "+":
            return f"topic filter {filter!r} has '+' other than alone in its level"
    return None


def _check_length(value: str, what: str) -> None:
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        raise ValueError(f"{what} {value!r} is not valid UTF-8") from None
    if "\x00" in value:
        raise ValueError(f"{what} {value!r} contains U+0000")
    if size > 0xFFFF:
        raise ValueError(f"{what} of {size} bytes is longer than 65535")


def validate_topic(name: str) -> None:
    """Check a topic name, as in PUBLISH and a will (MQTT 5.0 §4.7).

    A topic name is not empty, has no wildcard ('+', '#'), no U+0000, and is at most 65535
    bytes in UTF-8.

    Raises:
        ValueError: naming the topic and its problem; fix the topic before sending.
    """
    _check_length(name, "topic")
    problem = _topic_problem(name)
    if problem is not None:
        raise ValueError(problem)


def validate_filter(filter: str) -> None:
    """Check a topic filter, as in SUBSCRIBE and UNSUBSCRIBE (MQTT 5.0 §4.7, §4.8.2).

    '#' stands alone in the last level, '+' alone in its level; a shared subscription
    ``$share/{ShareName}/{filter}`` has a non-empty ShareName without '/', '+' or '#', then a
    filter. Not empty, no U+0000, at most 65535 bytes in UTF-8.

    Raises:
        ValueError: naming the filter and its problem.
    """
    _check_length(filter, "topic filter")
    problem = _filter_problem(filter)
    if problem is not None:
        raise ValueError(problem)


def topic_matches(filter: str, topic: str) -> bool:
    """Whether a topic name matches a topic filter (MQTT 5.0 §4.7).

    '+' matches one level, a final '#' any number of levels including none (so ``a/#``
    matches ``a``); a filter starting with a wildcard does not match a topic starting with
    '$' (§4.7.2). A shared subscription ``$share/{ShareName}/{filter}`` matches as its
    filter.
    """
    if filter.startswith("$share/"):
        filter = filter[7:].partition("/")[2]
    if "+" not in filter and "#" not in filter:
        return filter == topic
    if topic.startswith("$") and filter[0] in "+#":
        return False
    wanted = filter.split("/")
    levels = topic.split("/")
    for i, level in enumerate(wanted):
        if level == "#":
            return True  # also when the topic ends one level above: "a/#" matches "a"
        if i >= len(levels) or (level != "+" and level != levels[i]):
            return False
    return len(levels) == len(wanted)


# --- properties (MQTT 5.0 §2.2.2) ------------------------------------------------------

_WILL: Final = 0  # the will properties of CONNECT (§3.1.3.2), a context of their own


@dataclass(frozen=True)
class Properties:
    """MQTT 5.0 properties (§2.2.2.2); None or () where absent.

    Each packet allows some of them (the table of §2.2.2.2); `encode` refuses the others.
    ``subscription_identifier`` repeats in PUBLISH and appears at most once in SUBSCRIBE;
    ``user_property`` holds ordered (name, value) pairs, names may repeat.
    """

    payload_format_indicator: int | None = None
    message_expiry_interval: int | None = None
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    subscription_identifier: tuple[int, ...] = ()
    session_expiry_interval: int | None = None
    assigned_client_identifier: str | None = None
    server_keep_alive: int | None = None
    authentication_method: str | None = None
    authentication_data: bytes | None = None
    request_problem_information: bool | None = None
    will_delay_interval: int | None = None
    request_response_information: bool | None = None
    response_information: str | None = None
    server_reference: str | None = None
    reason_string: str | None = None
    receive_maximum: int | None = None
    topic_alias_maximum: int | None = None
    topic_alias: int | None = None
    maximum_qos: int | None = None
    retain_available: bool | None = None
    user_property: tuple[tuple[str, str], ...] = ()
    maximum_packet_size: int | None = None
    wildcard_subscription_available: bool | None = None
    subscription_identifier_available: bool | None = None
    shared_subscription_available: bool | None = None


_EMPTY: Final = Properties()

# Data types (§2.2.2.2): a byte of 0 or 1 as int, a byte of 0 or 1 as bool, two- and
# four-byte integers, a variable byte integer, a string, binary data, a string pair.
_BYTE, _BOOL, _U16_T, _U32_T, _VARINT, _STR, _BIN, _PAIR = range(8)
_P = PacketType
_SERVER_REPLIES = (_P.CONNACK, _P.PUBACK, _P.PUBREC, _P.PUBREL, _P.PUBCOMP, _P.SUBACK, _P.UNSUBACK)
_ALL = (_WILL, *range(1, 16))
# identifier, field name, data type, where allowed, smallest allowed value.
_PROPERTY_TABLE: Final[tuple[tuple[int, str, int, frozenset[int], int], ...]] = tuple(
    (ident, name, kind, frozenset(where), low)
    for ident, name, kind, where, low in (
        (0x01, "payload_format_indicator", _BYTE, (_P.PUBLISH, _WILL), 0),
        (0x02, "message_expiry_interval", _U32_T, (_P.PUBLISH, _WILL), 0),
        (0x03, "content_type", _STR, (_P.PUBLISH, _WILL), 0),
        (0x08, "response_topic", _STR, (_P.PUBLISH, _WILL), 0),
        (0x09, "correlation_data", _BIN, (_P.PUBLISH, _WILL), 0),
        (0x0B, "subscription_identifier", _VARINT, (_P.PUBLISH, _P.SUBSCRIBE), 1),
        (0x11, "session_expiry_interval", _U32_T, (_P.CONNECT, _P.CONNACK, _P.DISCONNECT), 0),
        (0x12, "assigned_client_identifier", _STR, (_P.CONNACK,), 0),
        (0x13, "server_keep_alive", _U16_T, (_P.CONNACK,), 0),
        (0x15, "authentication_method", _STR, (_P.CONNECT, _P.CONNACK, _P.AUTH), 0),
        (0x16, "authentication_data", _BIN, (_P.CONNECT, _P.CONNACK, _P.AUTH), 0),
        (0x17, "request_problem_information", _BOOL, (_P.CONNECT,), 0),
        (0x18, "will_delay_interval", _U32_T, (_WILL,), 0),
        (0x19, "request_response_information", _BOOL, (_P.CONNECT,), 0),
        (0x1A, "response_information", _STR, (_P.CONNACK,), 0),
        (0x1C, "server_reference", _STR, (_P.CONNACK, _P.DISCONNECT), 0),
        (0x1F, "reason_string", _STR, (*_SERVER_REPLIES, _P.DISCONNECT, _P.AUTH), 0),
        (0x21, "receive_maximum", _U16_T, (_P.CONNECT, _P.CONNACK), 1),
        (0x22, "topic_alias_maximum", _U16_T, (_P.CONNECT, _P.CONNACK), 0),
        (0x23, "topic_alias", _U16_T, (_P.PUBLISH,), 1),
        (0x24, "maximum_qos", _BYTE, (_P.CONNACK,), 0),
        (0x25, "retain_available", _BOOL, (_P.CONNACK,), 0),
        (0x26, "user_property", _PAIR, _ALL, 0),
        (0x27, "maximum_packet_size", _U32_T, (_P.CONNECT, _P.CONNACK), 1),
        (0x28, "wildcard_subscription_available", _BOOL, (_P.CONNACK,), 0),
        (0x29, "subscription_identifier_available", _BOOL, (_P.CONNACK,), 0),
        (0x2A, "shared_subscription_available", _BOOL, (_P.CONNACK,), 0),
    )
)
_BY_ID: Final = {row[0]: row for row in _PROPERTY_TABLE}
_HIGH: Final = {_BYTE: 1, _BOOL: 1, _U16_T: 0xFFFF, _U32_T: 0xFFFFFFFF, _VARINT: _MAX_VARINT}
_CONTEXT_NAMES: Final[dict[int, str]] = {_WILL: "will", **{t: t.name for t in PacketType}}


def _encode_properties(props: Properties, context: int) -> bytes:
    # §2.2.2.1: the property length, then each property as identifier and value.
    if props is _EMPTY or props == _EMPTY:
        return b"\x00"
    parts: list[bytes] = []
    for ident, name, kind, where, low in _PROPERTY_TABLE:
        value: Any = getattr(props, name)
        if value is None or value == ():
            continue
        if context not in where:
            raise ValueError(f"property {name} is not allowed in {_CONTEXT_NAMES[context]}")
        if kind == _PAIR:
            for pair_name, pair_value in value:
                parts.append(b"\x26" + encode_string_pair(pair_name, pair_value))
            continue
        if kind == _VARINT:
            if context == _P.SUBSCRIBE and len(value) > 1:
                raise ValueError("subscribe allows one subscription identifier")
            for number in value:
                _check_int(name, number, low, _MAX_VARINT)
                parts.append(b"\x0b" + encode_varint(number))
            continue
        head = bytes((ident,))
        if kind == _STR:
            parts.append(head + encode_string(value))
        elif kind == _BIN:
            parts.append(head + encode_binary(value))
        else:
            _check_int(name, value, low, _HIGH[kind])
            if kind == _U16_T:
                parts.append(head + _U16.pack(value))
            elif kind == _U32_T:
                parts.append(head + _U32.pack(value))
            else:
                parts.append(head + bytes((int(value),)))
    body = b"".join(parts)
    return encode_varint(len(body)) + body


def _check_int(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ValueError(f"property {name} is {value}, outside {low}..{high}")


def _decode_properties(buf: _Buffer, at: int, end: int, context: int) -> tuple[Properties, int]:
    length, at = _varint_in(buf, at, end)
    stop = at + length
    if stop > end:
        raise MalformedPacket("properties run past the end of the packet")
    if not length:
        return _EMPTY, at
    values: dict[str, Any] = {}
    pairs: list[tuple[str, str]] = []
    identifiers: list[int] = []
    while at < stop:
        ident, at = _varint_in(buf, at, stop)
        row = _BY_ID.get(ident)
        if row is None:
            raise MalformedPacket(f"unknown property identifier 0x{ident:02x}")
        _, name, kind, where, low = row
        if context not in where:
            # §2.2.2.2: an identifier not valid for the packet type makes it malformed.
            raise MalformedPacket(f"property {name} is not allowed in {_CONTEXT_NAMES[context]}")
        value: Any
        if kind == _PAIR:
            pair, at = decode_string_pair(buf, at, stop)
            pairs.append(pair)
            continue
        if kind == _VARINT:
            value, at = _varint_in(buf, at, stop)
            if identifiers and context != _P.PUBLISH:
                raise ProtocolError(f"property {name} appears more than once")
            if not value:
                raise ProtocolError(f"property {name} is 0")  # §3.3.4, §3.8.2.1.2
            identifiers.append(value)
            continue
        if name in values:
            raise ProtocolError(f"property {name} appears more than once")
        elif kind == _STR:
            value, at = decode_string(buf, at, stop)
        elif kind == _BIN:
            value, at = decode_binary(buf, at, stop)
        elif kind == _U16_T:
            value = _u16(buf, at, stop)
            at += 2
        elif kind == _U32_T:
            if at + 4 > stop:
                raise MalformedPacket("packet ends early")
            value = _U32.unpack_from(buf, at)[0]
            at += 4
        else:
            value = _u8(buf, at, stop)
            at += 1
            if value > 1:
                raise ProtocolError(f"property {name} is {value}, not 0 or 1")
            if kind == _BOOL:
                value = bool(value)
        if value == 0 and low:
            # §3.1.2.11.3, §3.1.2.11.4, §3.3.2.3.4: these may not be 0.
            raise ProtocolError(f"property {name} is 0")
        values[name] = value
    if pairs:
        values["user_property"] = tuple(pairs)
    if identifiers:
        values["subscription_identifier"] = tuple(identifiers)
    return Properties(**values), at


# --- packets (MQTT 5.0 §3) -------------------------------------------------------------


@dataclass(frozen=True)
class Will:
    """The will message of a CONNECT (MQTT 5.0 §3.1.2.5, §3.1.3.2-§3.1.3.4)."""

    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    properties: Properties = _EMPTY


@dataclass(frozen=True)
class Connect:
    """CONNECT (MQTT 5.0 §3.1): the client opens a session.

    ``version`` is the protocol level on the wire; `decode` reads it from the packet and
    `encode` refuses a Connect whose version differs from the one asked for.
    """

    client_id: str = ""
    clean_start: bool = True
    keepalive: int = 0
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    properties: Properties = _EMPTY
    version: int = MQTT_5

    def __repr__(self) -> str:
        # STYLE: secrets are never echoed.
        password = None if self.password is None else "<redacted>"
        return (
            f"Connect(client_id={self.client_id!r}, clean_start={self.clean_start}, "
            f"keepalive={self.keepalive}, username={self.username!r}, password={password}, "
            f"will={self.will!r}, properties={self.properties!r}, version={self.version})"
        )


@dataclass(frozen=True)
class ConnAck:
    """CONNACK (MQTT 5.0 §3.2); reason_code is a ConnectReturnCode in 3.1.1."""

    session_present: bool = False
    reason_code: ReasonCode | ConnectReturnCode = ReasonCode.SUCCESS
    properties: Properties = _EMPTY


@dataclass(frozen=True)
class Publish:
    """PUBLISH (MQTT 5.0 §3.3).

    ``packet_id`` is None at QoS 0 and 1..65535 otherwise. ``topic`` may be "" in 5.0 when
    the properties carry a topic alias (§3.3.2.3.4).
    """

    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None
    properties: Properties = _EMPTY


@dataclass(frozen=True)
class PubAck:
    """PUBACK (MQTT 5.0 §3.4): QoS 1 publish received."""

    packet_id: int
    reason_code: ReasonCode = ReasonCode.SUCCESS
    properties: Properties = _EMPTY


@dataclass(frozen=True)
class PubRec:
    """PUBREC (MQTT 5.0 §3.5): QoS 2 publish received, part 1."""

    packet_id: int
    reason_code: ReasonCode = ReasonCode.SUCCESS
    properties: Properties = _EMPTY


@dataclass(frozen=True)
class PubRel:
    """PUBREL (MQTT 5.0 §3.6): QoS 2 publish release, part 2."""

    packet_id: int
    reason_code: ReasonCode = ReasonCode.SUCCESS
    properties: Properties = _EMPTY


@dataclass(frozen=True)
class PubComp:
    """PUBCOMP (MQTT 5.0 §3.7): QoS 2 publish complete, part 3."""

    packet_id: int
    reason_code: ReasonCode = ReasonCode.SUCCESS
    properties: Properties = _EMPTY


@dataclass(frozen=True)
class Subscription:
    """One topic filter and its subscription options (MQTT 5.0 §3.8.3.1).

    Only ``qos`` exists in 3.1.1. ``retain_handling``: 0 send retained messages, 1 only
    for a new subscription, 2 never.
    """

    filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0


@dataclass(frozen=True)
class Subscribe:
    """SUBSCRIBE (MQTT 5.0 §3.8)."""

    packet_id: int
    subscriptions: tuple[Subscription, ...]
    properties: Properties = _EMPTY


@dataclass(frozen=True)
class SubAck:
    """SUBACK (MQTT 5.0 §3.9): one reason code per subscription, in order."""

    packet_id: int
    reason_codes: tuple[ReasonCode, ...]
    properties: Properties = _EMPTY


@dataclass(frozen=True)
class Unsubscribe:
    """UNSUBSCRIBE (MQTT 5.0 §3.10)."""

    packet_id: int
    filters: tuple[str, ...]
    properties: Properties = _EMPTY


@dataclass(frozen=True)
class UnsubAck:
    """UNSUBACK (MQTT 5.0 §3.11): one reason code per filter in 5.0, none in 3.1.1."""

    packet_id: int
    reason_codes: tuple[ReasonCode, ...] = ()
    properties: Properties = _EMPTY


@dataclass(frozen=True)
class PingReq:
    """PINGREQ (MQTT 5.0 §3.12)."""


@dataclass(frozen=True)
class PingResp:
    """PINGRESP (MQTT 5.0 §3.13)."""


@dataclass(frozen=True)
class Disconnect:
    """DISCONNECT (MQTT 5.0 §3.14); 3.1.1 has neither reason code nor properties."""

    reason_code: ReasonCode = ReasonCode.NORMAL_DISCONNECTION
    properties: Properties = _EMPTY


@dataclass(frozen=True)
class Auth:
    """AUTH (MQTT 5.0 §3.15): extended authentication exchange; 5.0 only."""

    reason_code: ReasonCode = ReasonCode.SUCCESS
    properties: Properties = _EMPTY


Packet = (
    Connect
    | ConnAck
    | Publish
    | PubAck
    | PubRec
    | PubRel
    | PubComp
    | Subscribe
    | SubAck
    | Unsubscribe
    | UnsubAck
    | PingReq
    | PingResp
    | Disconnect
    | Auth
)
_Ack = PubAck | PubRec | PubRel | PubComp
_ACK_TYPES: Final[dict[type[Any], int]] = {
    PubAck: PacketType.PUBACK,
    PubRec: PacketType.PUBREC,
    PubRel: PacketType.PUBREL,
    PubComp: PacketType.PUBCOMP,
}


# --- encoding --------------------------------------------------------------------------


def encode(packet: Packet, version: int) -> bytes:
    """Encode one control packet for a protocol version.

    Args:
        packet: the packet.
        version: 4 (MQTT 3.1.1) or 5 (MQTT 5.0).

    Returns:
        The packet's bytes, fixed header included; write them to the transport.

    Raises:
        ValueError: if the packet is not valid for that version: a bad topic or filter,
            packet identifier 0 or missing, a string too long, a property or reason code
            not allowed there, or a packet too large.
    """
    _check_version(version)
    v5 = version == MQTT_5
    first: int
    body: bytes
    if isinstance(packet, Publish):
        first, body = _encode_publish(packet, v5)
    elif isinstance(packet, (PubAck, PubRec, PubRel, PubComp)):
        kind = _ACK_TYPES[type(packet)]
        first = kind << 4 | (0b0010 if kind == PacketType.PUBREL else 0)
        body = _encode_ack(packet, kind, v5)
    elif isinstance(packet, Connect):
        first, body = 0x10, _encode_connect(packet, version)
    elif isinstance(packet, ConnAck):
        first, body = 0x20, _encode_connack(packet, v5)
    elif isinstance(packet, Subscribe):
        first, body = 0x82, _encode_subscribe(packet, v5)
    elif isinstance(packet, SubAck):
        first, body = 0x90, _encode_suback(packet, v5)
    elif isinstance(packet, Unsubscribe):
        first, body = 0xA2, _encode_unsubscribe(packet, v5)
    elif isinstance(packet, UnsubAck):
        first, body = 0xB0, _encode_unsuback(packet, v5)
    elif isinstance(packet, PingReq):
        first, body = 0xC0, b""
    elif isinstance(packet, PingResp):
        first, body = 0xD0, b""
    elif isinstance(packet, Disconnect):
        first, body = 0xE0, _encode_reason_only(packet, PacketType.DISCONNECT, v5)
    elif isinstance(packet, Auth):
        if not v5:
            raise ValueError("auth needs MQTT 5")
        first, body = 0xF0, _encode_reason_only(packet, PacketType.AUTH, v5)
    else:
        raise TypeError(f"not an MQTT packet: {packet!r}")
    # encode_varint refuses a remaining length over the MQTT limit (§1.5.5).
    return bytes((first,)) + encode_varint(len(body)) + body


def _check_version(version: int) -> None:
    if version not in _VERSIONS:
        raise ValueError(f"MQTT version {version!r} is not 4 (3.1.1) or 5 (5.0)")


def _check_packet_id(packet_id: int | None) -> int:
    if packet_id is None or not 1 <= packet_id <= 0xFFFF:
        raise ValueError(f"packet identifier {packet_id!r} is outside 1..65535")
    return packet_id


def _check_qos(qos: int) -> None:
    if qos not in (0, 1, 2):
        raise ValueError(f"qos {qos!r} is not 0, 1 or 2")


def _props(props: Properties, context: int, v5: bool) -> bytes:
    if v5:
        return _encode_properties(props, context)
    if props is not _EMPTY and props != _EMPTY:
        raise ValueError("properties need MQTT 5")
    return b""


def _check_reason(code: int, kind: int, v5: bool) -> None:
    if not v5:
        if code:
            raise ValueError(f"reason code 0x{code:02x} needs MQTT 5")
        return
    if code not in _REASONS[kind]:
        raise ValueError(f"reason code 0x{code:02x} is not allowed in {PacketType(kind).name}")


def _encode_connect(packet: Connect, version: int) -> bytes:
    if packet.version != version:
        raise ValueError(f"connect for MQTT version {packet.version} encoded as version {version}")
    v5 = version == MQTT_5
    if not 0 <= packet.keepalive <= 0xFFFF:
        raise ValueError(f"keepalive {packet.keepalive} is outside 0..65535")
    flags = 0x02 if packet.clean_start else 0
    payload = [encode_string(packet.client_id)]
    will = packet.will
    if will is not None:
        _check_qos(will.qos)
        validate_topic(will.topic)
        flags |= 0x04 | will.qos << 3 | (0x20 if will.retain else 0)
        payload += (
            _props(will.properties, _WILL, v5),
            encode_string(will.topic),
            encode_binary(will.payload),
        )
    if packet.username is not None:
        flags |= 0x80
        payload.append(encode_string(packet.username))
    if packet.password is not None:
        # MQTT 3.1.1 §3.1.2.9: no password without a user name (5.0 allows it).
        if not v5 and packet.username is None:
            raise ValueError("MQTT 3.1.1 allows a password only with a user name")
        flags |= 0x40
        payload.append(encode_binary(packet.password))
    header = b"\x00\x04MQTT" + bytes((version, flags)) + _U16.pack(packet.keepalive)
    return header + _props(packet.properties, PacketType.CONNECT, v5) + b"".join(payload)


def _encode_connack(packet: ConnAck, v5: bool) -> bytes:
    code = int(packet.reason_code)
    if v5:
        _check_reason(code, PacketType.CONNACK, v5)
    elif code not in ConnectReturnCode._value2member_map_:
        raise ValueError(f"return code {code} is not a MQTT 3.1.1 CONNACK return code")
    # §3.2.2.1.1: a refusal never has a session.
    if code and packet.session_present:
        raise ValueError("connack refusing the connection cannot have session_present")
    flags = b"\x01" if packet.session_present else b"\x00"
    return flags + bytes((code,)) + _props(packet.properties, PacketType.CONNACK, v5)


def _encode_publish(packet: Publish, v5: bool) -> tuple[int, bytes]:
    qos = packet.qos
    _check_qos(qos)
    topic = packet.topic
    if topic or not v5 or packet.properties.topic_alias is None:
        validate_topic(topic)
    flags = 0x30 | qos << 1 | (0x01 if packet.retain else 0)
    if packet.dup:
        if not qos:
            raise ValueError("dup needs qos 1 or 2")
        flags |= 0x08
    head = encode_string(topic)
    if qos:
        head += _U16.pack(_check_packet_id(packet.packet_id))
    elif packet.packet_id is not None:
        raise ValueError("qos 0 publish has no packet identifier")
    head += _props(packet.properties, PacketType.PUBLISH, v5)
    if len(head) + len(packet.payload) > _MAX_VARINT:
        # Refuse before copying a payload that big.
        raise ValueError(f"publish of {len(head) + len(packet.payload)} bytes is larger than the MQTT limit")
    return flags, head + packet.payload


def _encode_ack(packet: _Ack, kind: int, v5: bool) -> bytes:
    head = _U16.pack(_check_packet_id(packet.packet_id))
    code = int(packet.reason_code)
    _check_reason(code, kind, v5)
    props = _props(packet.properties, kind, v5)
    # §3.4.2.1: the reason code and the property length may be left off.
    if props == b"\x00" or not v5:
        return head + bytes((code,)) if code else head
    return head + bytes((code,)) + props


def _encode_reason_only(packet: Disconnect | Auth, kind: int, v5: bool) -> bytes:
    code = int(packet.reason_code)
    _check_reason(code, kind, v5)
    props = _props(packet.properties, kind, v5)
    # §3.14.2.1, §3.15.2.1: the reason code and the property length may be left off.
    if props == b"\x00" or not v5:
        return bytes((code,)) if code else b""
    return bytes((code,)) + props


def _encode_subscribe(packet: Subscribe, v5: bool) -> bytes:
    if not packet.subscriptions:
        raise ValueError("subscribe needs at least one subscription")
    parts = [
        _U16.pack(_check_packet_id(packet.packet_id)),
        _props(packet.properties, PacketType.SUBSCRIBE, v5),
    ]
    for sub in packet.subscriptions:
        validate_filter(sub.filter)
        _check_qos(sub.qos)
        options = sub.qos
        if sub.no_local or sub.retain_as_published or sub.retain_handling:
            if not v5:
                raise ValueError("subscription options other than qos need MQTT 5")
            if sub.retain_handling not in (0, 1, 2):
                raise ValueError(f"retain handling {sub.retain_handling!r} is not 0, 1 or 2")
            if sub.no_local and sub.filter.startswith("$share/"):
                raise ValueError(f"shared subscription {sub.filter!r} cannot have no_local")
            options |= (sub.no_local << 2) | (sub.retain_as_published << 3) | (sub.retain_handling << 4)
        parts.append(encode_string(sub.filter) + bytes((options,)))
    return b"".join(parts)


def _encode_suback(packet: SubAck, v5: bool) -> bytes:
    if not packet.reason_codes:
        raise ValueError("suback needs at least one reason code")
    allowed = _REASONS[PacketType.SUBACK] if v5 else _SUBACK_V4
    for code in packet.reason_codes:
        if code not in allowed:
            raise ValueError(f"reason code 0x{int(code):02x} is not allowed in SUBACK")
    head = _U16.pack(_check_packet_id(packet.packet_id)) + _props(packet.properties, PacketType.SUBACK, v5)
    return head + bytes(packet.reason_codes)


def _encode_unsubscribe(packet: Unsubscribe, v5: bool) -> bytes:
    if not packet.filters:
        raise ValueError("unsubscribe needs at least one topic filter")
    parts = [
        _U16.pack(_check_packet_id(packet.packet_id)),
        _props(packet.properties, PacketType.UNSUBSCRIBE, v5),
    ]
    for filter in packet.filters:
        validate_filter(filter)
        parts.append(encode_string(filter))
    return b"".join(parts)


def _encode_unsuback(packet: UnsubAck, v5: bool) -> bytes:
    head = _U16.pack(_check_packet_id(packet.packet_id))
    if not v5:
        if packet.reason_codes:
            raise ValueError("unsuback reason codes need MQTT 5")
        return head + _props(packet.properties, PacketType.UNSUBACK, v5)
    if not packet.reason_codes:
        raise ValueError("unsuback needs at least one reason code")
    for code in packet.reason_codes:
        _check_reason(code, PacketType.UNSUBACK, v5)
    return head + _props(packet.properties, PacketType.UNSUBACK, v5) + bytes(packet.reason_codes)


# --- decoding --------------------------------------------------------------------------

# §2.1.3: the fixed header flags of every type but PUBLISH; None marks a reserved type.
_FLAGS: Final[tuple[int | None, ...]] = (None, 0, 0, -1, 0, 0, 2, 0, 2, 0, 2, 0, 0, 0, 0, 0)


def _decode_fixed_header(buf: _Buffer, at: int, max_size: int, version: int) -> tuple[int, int, int] | None:
    # Returns (first byte, start of the variable header, end of the packet), or None.
    if at >= len(buf):
        return None
    first = buf[at]
    kind = first >> 4
    flags = _FLAGS[kind]
    if flags is None or (kind == PacketType.AUTH and version != MQTT_5):
        raise MalformedPacket(f"reserved packet type {kind}")
    if flags >= 0 and first & 0x0F != flags:
        raise MalformedPacket(f"{PacketType(kind).name} with fixed header flags 0x{first & 0x0F:x}")
    result = decode_varint(buf, at + 1)
    if result is None:
        return None
    length, start = result
    end = start + length
    if end - at > max_size:
        raise PayloadTooBig(f"packet of {end - at} bytes is larger than {max_size}")
    return first, start, end


def _split_packets_py(
    buf: _Buffer,
    at: int,
    max_size: int,
    version: int,
    names: dict[bytes, str] | None = None,
    message: Callable[[str, bytes, int, bool], Any] | None = None,
) -> tuple[list[Any], int, bool]:
    # Split the whole packets of buf from offset at by their fixed headers (MQTT 5.0 §2.1).
    # Returns (items, offset, malformed): items in order, each the (first byte, start of the
    # variable header, end) of a packet, except that with names and message a QoS 0 PUBLISH
    # without DUP (§3.3.1) and, in 5.0, without properties, whose topic name is a key of
    # names, is message(names[topic], payload, 0, retain) (names holds only topic names
    # found valid before). offset is the end of the last whole packet; malformed says that
    # the fixed header at offset is invalid: _decode_fixed_header() there raises the error.
    # The reference of tether._speedups.split_packets, which builds each such message as a
    # copy of message("", b"", 0, False) with topic, payload and retain replaced.
    items: list[Any] = []
    size = len(buf)
    v5 = version == MQTT_5
    while True:
        try:
            header = _decode_fixed_header(buf, at, max_size, version)
        except ProtocolError:
            return items, at, True
        if header is None or header[2] > size:
            return items, at, False
        first, start, end = header
        if names is not None and message is not None and first & 0xFE == 0x30 and end - start > 2:
            topic_end = start + 2 + (buf[start] << 8 | buf[start + 1])
            topic = names.get(bytes(buf[start + 2 : topic_end])) if topic_end <= end else None
            if topic is not None and (not v5 or (topic_end < end and buf[topic_end] == 0)):
                items.append(message(topic, bytes(buf[topic_end + v5 : end]), 0, bool(first & 1)))
                at = end
                continue
        items.append(header)
        at = end


def _load_compiled() -> Callable[..., tuple[list[Any], int, bool]] | None:
    # tether._speedups.split_packets, unless TETHER_NO_SPEEDUPS is set or it is not built
    # (no compiler at install time, or a build older than it).
    if os.environ.get("TETHER_NO_SPEEDUPS"):
        return None
    try:
        from tether._speedups import split_packets
    except ImportError:
        return None
    return split_packets


_compiled_split = _load_compiled()
#: True when the compiled accelerator (tether._speedups) splits received packets.
SPEEDUPS = _compiled_split is not None
_split_packets = _compiled_split or _split_packets_py


def decode(
    data: bytes | bytearray | memoryview, version: int, *, max_size: int = DEFAULT_MAX_SIZE
) -> tuple[Packet, int] | None:
    """Decode the control packet at the start of data.

    Args:
        data: received bytes.
        version: 4 (MQTT 3.1.1) or 5 (MQTT 5.0); a CONNECT is decoded by the protocol
            level it carries, which its ``version`` field reports.
        max_size: the largest packet accepted, fixed header included.

    Returns:
        (packet, bytes consumed), or None when data does not yet hold a whole packet:
        read more and call again.

    Raises:
        MalformedPacket: if the bytes are not a valid packet (MQTT 5.0 §4.13).
        ProtocolError: if the packet breaks another rule of the protocol; its
            ``reason_code`` is the one to disconnect with.
        PayloadTooBig: if the fixed header announces a packet over max_size.
    """
    _check_version(version)
    with memoryview(data) as view:
        header = _decode_fixed_header(view, 0, max_size, version)
        if header is None or header[2] > len(view):
            return None
        return _decode_body(view, header, version), header[2]


def _decode_body(buf: memoryview, header: tuple[int, int, int], version: int) -> Packet:
    first, at, end = header
    kind = first >> 4
    v5 = version == MQTT_5
    if kind == PacketType.PUBLISH:
        return _decode_publish(buf, first, at, end, v5)
    if PacketType.PUBACK <= kind <= PacketType.PUBCOMP:
        return _decode_ack(buf, kind, at, end, v5)
    if kind == PacketType.CONNECT:
        return _decode_connect(buf, at, end)
    if kind == PacketType.CONNACK:
        return _decode_connack(buf, at, end, v5)
    if kind == PacketType.SUBSCRIBE:
        return _decode_subscribe(buf, at, end, v5)
    if kind == PacketType.SUBACK or kind == PacketType.UNSUBACK:
        return _decode_suback(buf, kind, at, end, v5)
    if kind == PacketType.UNSUBSCRIBE:
        return _decode_unsubscribe(buf, at, end, v5)
    if kind == PacketType.PINGREQ or kind == PacketType.PINGRESP:
        if end != at:
            raise MalformedPacket(f"{PacketType(kind).name} with a remaining length of {end - at}")
        return PingReq() if kind == PacketType.PINGREQ else PingResp()
    return _decode_reason_only(buf, kind, at, end, v5)


def _done(at: int, end: int, kind: int) -> None:
    if at != end:
        raise MalformedPacket(f"{PacketType(kind).name} has {end - at} bytes after its content")


def _reason(code: int, allowed: frozenset[int], kind: int) -> ReasonCode:
    if code not in allowed:
        raise MalformedPacket(f"reason code 0x{code:02x} is not valid in {PacketType(kind).name}")
    return ReasonCode(code)


def _packet_id(buf: _Buffer, at: int, end: int) -> int:
    packet_id = _u16(buf, at, end)
    if not packet_id:
        # §2.2.1: packets that carry an identifier carry a non-zero one.
        raise MalformedPacket("packet identifier 0")
    return packet_id


def _topic_error(topic: str) -> None:
    problem = _topic_problem(topic)
    if problem is not None:
        code = ReasonCode.PROTOCOL_ERROR if not topic else ReasonCode.TOPIC_NAME_INVALID
        raise ProtocolError(problem, reason_code=code)


def _decode_connect(buf: memoryview, at: int, end: int) -> Connect:
    name, at = decode_binary(buf, at, end)
    level = _u8(buf, at, end)
    # §3.1.2.1-§3.1.2.2: the server answers an unknown protocol with 0x84 (3.1.1: code 1).
    if name != b"MQTT" or level not in _VERSIONS:
        raise ProtocolError(
            f"unsupported protocol {name!r} level {level}",
            reason_code=ReasonCode.UNSUPPORTED_PROTOCOL_VERSION,
        )
    v5 = level == MQTT_5
    flags = _u8(buf, at + 1, end)
    keepalive = _u16(buf, at + 2, end)
    at += 4
    if flags & 0x01:
        raise MalformedPacket("connect flags reserved bit set")  # §3.1.2.3
    properties = _EMPTY
    if v5:
        properties, at = _decode_properties(buf, at, end, PacketType.CONNECT)
    client_id, at = decode_string(buf, at, end)
    will = None
    will_qos = (flags >> 3) & 3
    if flags & 0x04:
        if will_qos == 3:
            raise MalformedPacket("will qos 3")  # §3.1.2.6
        will_properties = _EMPTY
        if v5:
            will_properties, at = _decode_properties(buf, at, end, _WILL)
        topic, at = decode_string(buf, at, end)
        _topic_error(topic)
        payload, at = decode_binary(buf, at, end)
        will = Will(topic, payload, will_qos, bool(flags & 0x20), will_properties)
    elif flags & 0x38:
        raise MalformedPacket("will qos or retain set without a will")  # §3.1.2.6, §3.1.2.7
    username = password = None
    if flags & 0x80:
        username, at = decode_string(buf, at, end)
    if flags & 0x40:
        if not v5 and username is None:
            raise MalformedPacket("password without a user name")  # 3.1.1 §3.1.2.9
        password, at = decode_binary(buf, at, end)
    _done(at, end, PacketType.CONNECT)
    return Connect(client_id, bool(flags & 0x02), keepalive, username, password, will, properties, level)


def _decode_connack(buf: memoryview, at: int, end: int, v5: bool) -> ConnAck:
    flags = _u8(buf, at, end)
    code = _u8(buf, at + 1, end)
    if flags & 0xFE:
        raise MalformedPacket("connack flags reserved bits set")  # §3.2.2.1
    reason_code: ReasonCode | ConnectReturnCode
    properties = _EMPTY
    if v5:
        reason_code = _reason(code, _REASONS[PacketType.CONNACK], PacketType.CONNACK)
        properties, at = _decode_properties(buf, at + 2, end, PacketType.CONNACK)
    else:
        if code > 5:
            raise MalformedPacket(f"connack return code {code}")
        reason_code = ConnectReturnCode(code)
        at += 2
    _done(at, end, PacketType.CONNACK)
    if flags and code:
        raise ProtocolError("connack refuses the connection with session present")  # §3.2.2.1.1
    return ConnAck(bool(flags), reason_code, properties)


def _decode_publish(buf: memoryview, first: int, at: int, end: int, v5: bool) -> Publish:
    qos = (first >> 1) & 3
    if qos == 3:
        raise MalformedPacket("publish with qos 3")  # §3.3.1.2
    dup = bool(first & 0x08)
    if dup and not qos:
        raise MalformedPacket("publish with dup at qos 0")  # §3.3.1.1
    topic, at = decode_string(buf, at, end)
    packet_id = None
    if qos:
        packet_id = _packet_id(buf, at, end)
        at += 2
    properties = _EMPTY
    if v5:
        properties, at = _decode_properties(buf, at, end, PacketType.PUBLISH)
    # §3.3.2.3.4: an empty topic name stands for the topic alias.
    if topic or properties.topic_alias is None:
        _topic_error(topic)
    return Publish(topic, bytes(buf[at:end]), qos, bool(first & 0x01), dup, packet_id, properties)


_ACK_CLASSES: Final[dict[int, type[_Ack]]] = {kind: cls for cls, kind in _ACK_TYPES.items()}


def _decode_ack(buf: memoryview, kind: int, at: int, end: int, v5: bool) -> _Ack:
    packet_id = _packet_id(buf, at, end)
    at += 2
    reason_code = ReasonCode.SUCCESS
    properties = _EMPTY
    # §3.4.2.1: a remaining length of 2 means success; under 4, no properties.
    if v5 and at < end:
        reason_code = _reason(buf[at], _REASONS[kind], kind)
        at += 1
        if at < end:
            properties, at = _decode_properties(buf, at, end, kind)
    _done(at, end, kind)
    return _ACK_CLASSES[kind](packet_id, reason_code, properties)


def _decode_reason_only(buf: memoryview, kind: int, at: int, end: int, v5: bool) -> Disconnect | Auth:
    reason_code = ReasonCode.SUCCESS
    properties = _EMPTY
    # §3.14.2.1, §3.15.2.1: no reason code means 0x00; under 2 bytes, no properties.
    if v5 and at < end:
        reason_code = _reason(buf[at], _REASONS[kind], kind)
        at += 1
        if at < end:
            properties, at = _decode_properties(buf, at, end, kind)
    _done(at, end, kind)
    if kind == PacketType.AUTH:
        return Auth(reason_code, properties)
    return Disconnect(reason_code, properties)


def _filter_error(filter: str) -> None:
    problem = _filter_problem(filter)
    if problem is not None:
        raise ProtocolError(problem, reason_code=ReasonCode.TOPIC_FILTER_INVALID)


def _decode_subscribe(buf: memoryview, at: int, end: int, v5: bool) -> Subscribe:
    packet_id = _packet_id(buf, at, end)
    at += 2
    properties = _EMPTY
    if v5:
        properties, at = _decode_properties(buf, at, end, PacketType.SUBSCRIBE)
    subscriptions = []
    while at < end:
        filter, at = decode_string(buf, at, end)
        options = _u8(buf, at, end)
        at += 1
        _filter_error(filter)
        qos = options & 3
        # §3.8.3.1: reserved bits make it malformed; QoS 3 is malformed in 3.1.1 and a
        # protocol error in 5.0, as are retain handling 3 and no local on a shared filter.
        if options & (0xC0 if v5 else 0xFC):
            raise MalformedPacket(f"subscription options 0x{options:02x} with reserved bits set")
        if qos == 3:
            if v5:
                raise ProtocolError("subscription with qos 3")
            raise MalformedPacket("subscription with qos 3")
        retain_handling = options >> 4
        if retain_handling == 3:
            raise ProtocolError("subscription with retain handling 3")
        no_local = bool(options & 0x04)
        if no_local and filter.startswith("$share/"):
            raise ProtocolError(f"shared subscription {filter!r} with no local")
        subscriptions.append(Subscription(filter, qos, no_local, bool(options & 0x08), retain_handling))
    if not subscriptions:
        raise ProtocolError("subscribe without a topic filter")  # §3.8.3
    return Subscribe(packet_id, tuple(subscriptions), properties)


def _decode_suback(buf: memoryview, kind: int, at: int, end: int, v5: bool) -> SubAck | UnsubAck:
    packet_id = _packet_id(buf, at, end)
    at += 2
    if kind == PacketType.UNSUBACK and not v5:
        _done(at, end, kind)
        return UnsubAck(packet_id)
    properties = _EMPTY
    if v5:
        properties, at = _decode_properties(buf, at, end, kind)
    allowed = _REASONS[kind] if v5 else _SUBACK_V4
    codes = tuple(_reason(code, allowed, kind) for code in buf[at:end])
    if not codes:
        raise ProtocolError(f"{PacketType(kind).name} without a reason code")
    if kind == PacketType.SUBACK:
        return SubAck(packet_id, codes, properties)
    return UnsubAck(packet_id, codes, properties)


def _decode_unsubscribe(buf: memoryview, at: int, end: int, v5: bool) -> Unsubscribe:
    packet_id = _packet_id(buf, at, end)
    at += 2
    properties = _EMPTY
    if v5:
        properties, at = _decode_properties(buf, at, end, PacketType.UNSUBSCRIBE)
    filters = []
    while at < end:
        filter, at = decode_string(buf, at, end)
        _filter_error(filter)
        filters.append(filter)
    if not filters:
        raise ProtocolError("unsubscribe without a topic filter")  # §3.10.3
    return Unsubscribe(packet_id, tuple(filters), properties)


class PacketReader:
    """Splits a received byte stream into packets.

    Feed it bytes as they arrive; it keeps at most one incomplete packet. After a CONNECT
    it switches to the version that CONNECT carries, so a server can start with either.

    Args:
        version: 4 (MQTT 3.1.1) or 5 (MQTT 5.0).
        max_size: the largest packet accepted, fixed header included.

    Raises:
        ValueError: if version is not 4 or 5.
    """

    def __init__(self, version: int, max_size: int = DEFAULT_MAX_SIZE) -> None:
        _check_version(version)
        self.version = version
        self.max_size = max_size
        self._buffer = bytearray()
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """How many bytes of an incomplete packet are waiting for the rest."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Packet]:
        """Add received bytes and return the packets they complete, in order.

        Returns:
            The complete packets, possibly none.

        Raises:
            MalformedPacket, ProtocolError: if the peer sent an invalid packet; close the
                connection with the error's ``reason_code``. The reader keeps raising the
                same error, and packets decoded earlier in the same call are dropped.
            PayloadTooBig: as soon as a fixed header announces a packet over max_size.
        """
        if self._error is not None:
            raise self._error
        source = data
        if self._buffer:
            self._buffer += data
            source = self._buffer
        packets: list[Packet] = []
        at = 0
        try:
            with memoryview(source) as view:
                size = len(view)
                while True:
                    header = _decode_fixed_header(view, at, self.max_size, self.version)
                    if header is None or header[2] > size:
                        break
                    packet = _decode_body(view, header, self.version)
                    if isinstance(packet, Connect):
                        self.version = packet.version
                    packets.append(packet)
                    at = header[2]
        except ProtocolError as exc:
            self._error = exc
            raise
        if source is self._buffer:
            del self._buffer[:at]
        else:
            self._buffer = bytearray(data[at:])
        return packets
