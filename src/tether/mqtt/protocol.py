"""The client side of an MQTT 3.1.1 or 5.0 session as a state machine: bytes in, events out.

Theory of operation
-------------------
A `Connection` is the client end of one MQTT session, which may outlive several network
connections. The front end feeds it what the transport read (`receive_data()`), writes
what it returns from `data_to_send()`, handles what `events_received()` returns, and calls
`tick()` at the time `next_deadline()` gives. The core never touches a socket or a clock:
every method that needs the time takes ``now`` (seconds, any monotonic origin).

States::

    DISCONNECTED ──connect()──▶ CONNECTING ──CONNACK accepted──▶ CONNECTED
         ▲                          │ CONNACK refused, error          │ disconnect(), server
         │                          ▼                                 ▼ DISCONNECT, error
         └──────connection_lost()── CLOSED ◀──────────────────────────┘
                (from any state)

Session state (MQTT 5.0 §4.1) survives `connection_lost()`: outgoing QoS 1 and 2
publishes not yet acknowledged, the queue of publishes waiting for a send slot, and the
packet identifiers of incoming QoS 2 publishes not yet released. On the next CONNACK,
when the server still has the session, the core resends unacknowledged PUBLISH packets
with DUP set and resends PUBREL packets (§4.4); when it has not, the publishes start new
flows and `Connected.session_lost` tells the application to subscribe again.

A peer's mistake never raises from `receive_data()`: `error` is set to a `ProtocolError`
whose ``reason_code`` says why, a DISCONNECT with that code is queued (5.0 only; 3.1.1
has no way to say it), the state becomes CLOSED and later input is ignored. The front
end then writes `data_to_send()` and closes the transport. A caller's mistake raises at
once: `InvalidState` for a call in the wrong state, `ValueError` for bad arguments, in
both cases before anything is queued.

Input is split into packets by their fixed headers in one pass (in C when the optional
accelerator `tether._speedups` is built), then each packet is decoded and handled before
the next, so the events do not depend on how the byte stream was split, even when it
ends in an invalid packet.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Final, Literal, cast

from tether.errors import InvalidState, ProtocolError
from tether.mqtt.packets import (
    _EMPTY as _EMPTY_PROPERTIES,
)
from tether.mqtt.packets import (
    DEFAULT_MAX_SIZE,
    MQTT_3_1_1,
    MQTT_5,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
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
    _decode_body,
    _decode_fixed_header,
    _split_packets,
    encode,
    encode_string,
    validate_filter,
)

__all__ = [
    "AuthReceived",
    "ConnectFailed",
    "Connected",
    "Connection",
    "Disconnected",
    "Event",
    "KeepAliveTimeout",
    "Message",
    "PendingPublish",
    "PendingQueueFull",
    "PongReceived",
    "Published",
    "SessionChange",
    "State",
    "Subscribed",
    "Unsubscribed",
]

_NO_PROPERTIES: Final = _EMPTY_PROPERTIES  # one object: encode() spots it by identity
# CONNECT properties that announce only our limits, by (receive maximum, topic alias
# maximum, maximum packet size): one frozen object for every connection that shares them.
_ANNOUNCED: dict[tuple[int, int, int], Properties] = {}
_MAX_PACKET_ID: Final = 0xFFFF
# MQTT 5.0 §3.1.2.11.3, §3.2.2.3.3: the Receive Maximum when the property is absent.
_DEFAULT_RECEIVE_MAXIMUM: Final = 0xFFFF
# MQTT 5.0 §1.5.5: the largest remaining length, plus five bytes of fixed header.
_LARGEST_PACKET: Final = 268_435_455 + 5
# The fixed headers of the four-byte acknowledgements (MQTT 5.0 §3.4-§3.7).
_ACK_HEADS: Final = {kind: bytes((kind, 2)) for kind in (0x40, 0x50, 0x62, 0x70)}
# How many topic names the QoS 0 fast paths remember, each way.
_TOPIC_CACHE: Final = 1024
# The fixed headers of QoS 0 PUBLISH packets with a remaining length below 128, by retain
# flag and length (MQTT 5.0 §3.3.1).
_QOS0_HEADERS: Final = tuple(tuple(bytes((first, n)) for n in range(128)) for first in (0x30, 0x31))
# Every table of a session that is empty is this one read-only mapping, replaced by a dict
# at the first entry: an idle connection holds no empty dicts (64 bytes each). Writing to
# it raises TypeError instead of sharing state between connections.
_EMPTY: Final = cast("dict[Any, Any]", MappingProxyType({}))
# The session changes of a connection that does not track them: never appended to.
_EMPTY_CHANGES: Final = cast("list[SessionChange]", ())


class State(enum.Enum):
    """The state of a `Connection` (see the module docstring for the transitions)."""

    DISCONNECTED = 0
    CONNECTING = 1
    CONNECTED = 2
    CLOSED = 3


class KeepAliveTimeout(ProtocolError):
    """The server did not answer a PINGREQ in time (MQTT 5.0 §3.1.2.10)."""

    reason_code = ReasonCode.KEEP_ALIVE_TIMEOUT


class PendingQueueFull(InvalidState):
    """`Connection.publish()` found the queue of publishes waiting for a send slot full.

    Wait for `Published` events (each frees a slot) and publish again.
    """


# --- events ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    """The server accepted the connection (CONNACK, MQTT 5.0 §3.2); state is CONNECTED.

    Attributes:
        session_present: the server resumed the session this client had.
        properties: the CONNACK properties (5.0), e.g. ``assigned_client_identifier``.
        session_lost: this client had connected before and the server has no session
            for it any more: subscribe again.
    """

    session_present: bool
    properties: Properties = _NO_PROPERTIES
    session_lost: bool = False


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    """The server refused the connection; state is CLOSED: close the transport.

    ``reason_code`` is a 5.0 reason code (0x80 or above) or a 3.1.1 return code (1-5).
    """

    reason_code: int
    properties: Properties = _NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Message:
    """An application message from the server (PUBLISH, MQTT 5.0 §3.3).

    ``topic`` is resolved from a topic alias where the packet used one. With
    ``auto_ack=False``, pass a QoS 1 or 2 message to `Connection.ack()` once handled.
    """

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties = _NO_PROPERTIES
    packet_id: int | None = None
    dup: bool = False


@dataclass(frozen=True, slots=True)
class Published:
    """An outgoing QoS 1 or 2 publish is done: PUBACK, PUBCOMP, or PUBREC with an error.

    ``reason_code`` is that packet's (0x80 or above means the server did not accept it).
    """

    packet_id: int
    reason_code: int = ReasonCode.SUCCESS
    properties: Properties = _NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Subscribed:
    """SUBACK: one reason code (granted QoS, or 0x80 and above) per subscription, in order."""

    packet_id: int
    reason_codes: tuple[int, ...]
    properties: Properties = _NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    """UNSUBACK: one reason code per filter in 5.0, none in 3.1.1."""

    packet_id: int
    reason_codes: tuple[int, ...] = ()
    properties: Properties = _NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PongReceived:
    """PINGRESP (MQTT 5.0 §3.13)."""


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The server sent DISCONNECT (5.0 §3.14); state is CLOSED: close the transport."""

    reason_code: int
    properties: Properties = _NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class AuthReceived:
    """AUTH (5.0 §3.15, §4.12): answer with `Connection.auth()` as the method requires."""

    reason_code: int
    properties: Properties = _NO_PROPERTIES


Event = (
    Connected
    | ConnectFailed
    | Message
    | Published
    | Subscribed
    | Unsubscribed
    | PongReceived
    | Disconnected
    | AuthReceived
)


@dataclass(frozen=True, slots=True)
class PendingPublish:
    """An outgoing QoS 1 or 2 publish the session still owns (see `Connection.pending()`).

    Attributes:
        publish: the PUBLISH packet, with its packet identifier and the full topic name.
        queued: not sent yet: waiting for a send slot (Receive Maximum, 5.0 §4.9).
        released: QoS 2 and PUBREC received: PUBREL sent, waiting for PUBCOMP.
    """

    publish: Publish
    queued: bool = False
    released: bool = False


@dataclass(frozen=True, slots=True)
class SessionChange:
    """One change to the session state a durable store keeps (``track_changes=True``).

    Apply them in order, and make them durable before writing the `data_to_send()` that
    follows them: then a process that dies at any point restarts from a state the server
    agrees with (see `Connection.restore()`).

    ``kind`` is one of:
        ``"add"``: ``publish`` (QoS 1 or 2, with its packet identifier) joined the session.
        ``"release"``: PUBREC arrived for QoS 2 publish ``packet_id``; PUBREL follows.
        ``"done"``: outgoing publish ``packet_id`` is finished (see `Published`).
        ``"received"``: incoming QoS 2 publish ``packet_id`` was received and PUBREC
            follows: until PUBREL, a resent PUBLISH with this identifier is not delivered.
        ``"released"``: incoming QoS 2 publish ``packet_id`` got PUBREL: forget it.
        ``"clear_received"``: the server lost the session: forget every incoming one.
    """

    kind: Literal["add", "release", "done", "received", "released", "clear_received"]
    packet_id: int = 0
    publish: Publish | None = None


@dataclass
class _Flight:
    publish: Publish
    released: bool = False


class Connection:
    """The client end of an MQTT session, sans I/O.

    Args:
        client_id: the client identifier; "" lets a 5.0 server assign one, which then
            replaces it for later connects.
        version: 4 (MQTT 3.1.1) or 5 (MQTT 5.0).
        keepalive: seconds; 0 turns keep alive off. A 5.0 server may override it.
        clean_start: the Clean Start (3.1.1: Clean Session) flag of CONNECT; `connect()`
            can override it per connection.
        username, password, will: as in CONNECT.
        connect_properties: further CONNECT properties (5.0), such as
            ``session_expiry_interval`` or ``authentication_method``.
        receive_maximum: how many incoming QoS 1 and 2 publishes may be unacknowledged
            at once (5.0 §3.1.2.11.3); one more is a protocol error (0x93).
        topic_alias_maximum: the highest incoming topic alias accepted (5.0), 0 for none.
        max_packet_size: the largest incoming packet accepted, fixed header included;
            sent as Maximum Packet Size in 5.0.
        max_pending: how many QoS 1 and 2 publishes may wait for a send slot.
        auto_ack: acknowledge incoming QoS 1 and 2 publishes as they arrive; when False,
            the application calls `ack()`.
        use_topic_aliases: use outgoing topic aliases, up to the server's maximum (5.0).
        ping_timeout: seconds to wait for an answer to PINGREQ; by default half the keep
            alive, at least 1 s.
        track_changes: record every change of the session state for a durable store;
            collect them with `session_changes()`.

    Raises:
        ValueError: if an argument is out of range or the CONNECT could not be encoded.
    """

    __slots__ = (
        "_aliases_in",
        "_aliases_out",
        "_buffer",
        "_changes",
        "_connect_properties",
        "_connected_before",
        "_events",
        "_in_flight",
        "_last_sent",
        "_next_id",
        "_out",
        "_password",
        "_ping_sent",
        "_qos2_received",
        "_queue",
        "_queued_ids",
        "_requests",
        "_sent_clean_start",
        "_topic_heads",
        "_topic_names",
        "_track",
        "_unacked_qos1",
        "_username",
        "_will",
        "auto_ack",
        "clean_start",
        "client_id",
        "error",
        "keepalive",
        "max_packet_size",
        "max_pending",
        "ping_timeout",
        "receive_maximum",
        "server_keepalive",
        "server_maximum_packet_size",
        "server_maximum_qos",
        "server_receive_maximum",
        "server_retain_available",
        "server_topic_alias_maximum",
        "state",
        "topic_alias_maximum",
        "use_topic_aliases",
        "version",
    )

    def __init__(
        self,
        client_id: str = "",
        *,
        version: int = MQTT_5,
        keepalive: int = 60,
        clean_start: bool = True,
        username: str | None = None,
        password: bytes | None = None,
        will: Will | None = None,
        connect_properties: Properties | None = None,
        receive_maximum: int = _DEFAULT_RECEIVE_MAXIMUM,
        topic_alias_maximum: int = 0,
        max_packet_size: int = DEFAULT_MAX_SIZE,
        max_pending: int = 1000,
        auto_ack: bool = True,
        use_topic_aliases: bool = False,
        ping_timeout: float | None = None,
        track_changes: bool = False,
    ) -> None:
        if version not in (MQTT_3_1_1, MQTT_5):
            raise ValueError(f"MQTT version {version!r} is not 4 (3.1.1) or 5 (5.0)")
        if not 1 <= receive_maximum <= _DEFAULT_RECEIVE_MAXIMUM:
            raise ValueError(f"receive_maximum {receive_maximum} is outside 1..65535")
        if not 0 <= topic_alias_maximum <= 0xFFFF:
            raise ValueError(f"topic_alias_maximum {topic_alias_maximum} is outside 0..65535")
        if not 2 <= max_packet_size <= _LARGEST_PACKET:
            raise ValueError(f"max_packet_size {max_packet_size} is outside 2..{_LARGEST_PACKET}")
        if max_pending < 0:
            raise ValueError(f"max_pending {max_pending} is negative")
        if ping_timeout is not None and ping_timeout <= 0:
            raise ValueError(f"ping_timeout {ping_timeout} is not positive")
        self.version = version
        self.client_id = client_id
        self.keepalive = keepalive
        self.clean_start = clean_start
        self.receive_maximum = receive_maximum
        self.topic_alias_maximum = topic_alias_maximum
        self.max_packet_size = max_packet_size
        self.max_pending = max_pending
        self.auto_ack = auto_ack
        self.use_topic_aliases = use_topic_aliases
        self.ping_timeout = ping_timeout
        self._username = username
        self._password = password
        self._will = will
        properties = connect_properties or _NO_PROPERTIES
        if version == MQTT_5:
            # §3.1.2.11: announce our limits; absent Receive Maximum means 65535 and absent
            # Topic Alias Maximum means 0, so those are left off at their defaults.
            limits = (receive_maximum, topic_alias_maximum, max_packet_size)
            announced = _ANNOUNCED.get(limits) if properties is _NO_PROPERTIES else None
            if announced is None:
                announced = replace(
                    properties,
                    receive_maximum=None if receive_maximum == _DEFAULT_RECEIVE_MAXIMUM else receive_maximum,
                    topic_alias_maximum=topic_alias_maximum or None,
                    maximum_packet_size=max_packet_size,
                )
                if properties is _NO_PROPERTIES and len(_ANNOUNCED) < 64:
                    # Shared between connections: most have the same limits.
                    _ANNOUNCED[limits] = announced
            properties = announced
        self._connect_properties = properties
        # Refuse a CONNECT that cannot be encoded now, not at connect().
        encode(self._connect_packet(clean_start), version)

        self.state = State.DISCONNECTED
        #: The cause when the connection failed: a `ProtocolError` with ``reason_code``.
        self.error: ProtocolError | None = None
        self._out = bytearray()
        self._events: list[Event] = []
        self._buffer = bytearray()
        self._track = track_changes
        self._changes: list[SessionChange] = [] if track_changes else _EMPTY_CHANGES
        # Topics seen valid, for the QoS 0 fast paths: name -> encoded, encoded -> name.
        self._topic_heads: dict[str, bytes] = _EMPTY
        self._topic_names: dict[bytes, str] = _EMPTY
        self._connected_before = False
        self._sent_clean_start = clean_start
        # Session state (§4.1), kept across connection_lost().
        self._in_flight: dict[int, _Flight] = _EMPTY  # in the order they were sent
        # Publishes waiting for a send slot; made when the first one waits.
        self._queue: deque[Publish] | None = None
        # Packet id sets are dicts (keys only): an empty dict costs 64 bytes, a set 216.
        self._queued_ids: dict[int, None] = _EMPTY
        self._qos2_received: dict[int, bool] = _EMPTY  # packet id -> PUBREC sent
        # Network connection state.
        self._requests: dict[int, int] = _EMPTY  # SUBSCRIBE/UNSUBSCRIBE packet id -> filters
        self._unacked_qos1: dict[int, None] = _EMPTY
        self._aliases_in: dict[int, str] = _EMPTY
        self._aliases_out: dict[str, int] = _EMPTY
        self._next_id = 1
        self._last_sent = 0.0
        self._ping_sent: float | None = None
        self._reset_server_limits()

    def _reset_server_limits(self) -> None:
        self.server_receive_maximum = _DEFAULT_RECEIVE_MAXIMUM
        self.server_maximum_packet_size: int | None = None
        self.server_topic_alias_maximum = 0
        self.server_maximum_qos = 2
        self.server_retain_available = True
        self.server_keepalive: int | None = None

    def _connect_packet(self, clean_start: bool) -> Connect:
        return Connect(
            client_id=self.client_id,
            clean_start=clean_start,
            keepalive=self.keepalive,
            username=self._username,
            password=self._password,
            will=self._will,
            properties=self._connect_properties,
            version=self.version,
        )

    # --- the verbs every core shares -----------------------------------------------------

    def data_to_send(self) -> bytes:
        """Return the bytes to write to the transport, and forget them."""
        data = bytes(self._out)
        self._out.clear()
        return data

    @property
    def bytes_to_send(self) -> int:
        """How many bytes `data_to_send()` would return now."""
        return len(self._out)

    def events_received(self) -> list[Event]:
        """Return the events since the last call, in order, and forget them."""
        events, self._events = self._events, []
        return events

    @property
    def effective_keepalive(self) -> int:
        """The keep alive in force: the server's (5.0 §3.2.2.3.14) or ours."""
        return self.keepalive if self.server_keepalive is None else self.server_keepalive

    def next_deadline(self) -> float | None:
        """The time at which to call `tick()`, or None when no timer runs."""
        keepalive = self.effective_keepalive
        if self.state is not State.CONNECTED or not keepalive:
            return None
        if self._ping_sent is not None:
            return self._ping_sent + self._ping_timeout()
        return self._last_sent + keepalive

    def _ping_timeout(self) -> float:
        if self.ping_timeout is not None:
            return self.ping_timeout
        return max(1.0, self.effective_keepalive / 2)

    def tick(self, now: float) -> None:
        """Run the keep alive timer: send PINGREQ, or fail when the answer is late.

        Call it at `next_deadline()`; calling it earlier or more often is harmless.
        """
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return
        if self._ping_sent is not None:
            self._fail(KeepAliveTimeout(f"no answer to PINGREQ within {self._ping_timeout():g} s"))
        else:
            # §3.1.2.10: no more than Keep Alive seconds without sending a packet.
            self._send(PingReq(), now)
            self._ping_sent = now

    # --- connecting ----------------------------------------------------------------------

    def connect(self, now: float, *, clean_start: bool | None = None) -> None:
        """Queue CONNECT; write `data_to_send()` to a newly opened transport.

        Args:
            now: the current time.
            clean_start: overrides the constructor's flag for this connection; pass False
                to resume the session after `connection_lost()`.

        Raises:
            InvalidState: unless DISCONNECTED (call `connection_lost()` first).
            ValueError: for 3.1.1 with an empty client identifier and no clean start
                (3.1.1 §3.1.3.1).
        """
        if self.state is not State.DISCONNECTED:
            raise InvalidState(f"connect() in state {self.state.name}")
        clean = self.clean_start if clean_start is None else clean_start
        if self.version == MQTT_3_1_1 and not self.client_id and not clean:
            raise ValueError("MQTT 3.1.1 needs a client identifier without clean start")
        self.error = None
        self._sent_clean_start = clean
        self._reset_server_limits()
        self._send(self._connect_packet(clean), now)
        self.state = State.CONNECTING

    def connection_lost(self) -> None:
        """The transport closed: keep the session state, forget the network connection.

        The state becomes DISCONNECTED; `connect()` may follow. Unsent bytes are dropped.
        """
        self.state = State.DISCONNECTED
        self._out.clear()
        self._buffer.clear()
        self._requests = _EMPTY
        self._unacked_qos1 = _EMPTY
        self._aliases_in = _EMPTY
        self._aliases_out = _EMPTY
        self._ping_sent = None

    def disconnect(
        self, reason_code: int = ReasonCode.NORMAL_DISCONNECTION, properties: Properties | None = None
    ) -> None:
        """Queue DISCONNECT; the state becomes CLOSED. Write `data_to_send()`, then close.

        Args:
            reason_code: a DISCONNECT reason code (5.0 §3.14.2.1); 0 in 3.1.1. 0x04 asks
                the server to publish the will.
            properties: DISCONNECT properties (5.0).

        Raises:
            InvalidState: unless CONNECTING or CONNECTED.
            ValueError: if the reason code or properties are not allowed.
        """
        self._check_state(State.CONNECTING, State.CONNECTED, what="disconnect()")
        packet = Disconnect(_reason(reason_code), properties or _NO_PROPERTIES)
        self._send(packet)
        self.state = State.CLOSED

    def auth(
        self, reason_code: int = ReasonCode.CONTINUE_AUTHENTICATION, properties: Properties | None = None
    ) -> None:
        """Queue AUTH (5.0 §3.15) to continue or restart extended authentication.

        Raises:
            InvalidState: in 3.1.1, or unless CONNECTING or CONNECTED.
            ValueError: if the reason code or properties are not allowed in AUTH.
        """
        if self.version != MQTT_5:
            raise InvalidState("auth() needs MQTT 5")
        self._check_state(State.CONNECTING, State.CONNECTED, what="auth()")
        self._send(Auth(_reason(reason_code), properties or _NO_PROPERTIES))

    # --- sending -------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes | bytearray | memoryview = b"",
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
        *,
        now: float | None = None,
    ) -> int | None:
        """Publish an application message (MQTT 5.0 §3.3).

        QoS 1 and 2 publishes beyond the server's Receive Maximum wait in a queue and are
        sent as acknowledgements free a slot (5.0 §4.9). They belong to the session, so
        they may also be made while not connected: they wait in the same queue and go
        out after the next CONNACK.

        Args:
            topic, payload, qos, retain, properties: the message. ``topic_alias`` and
                ``subscription_identifier`` are not allowed in properties: the connection
                manages aliases (``use_topic_aliases``) and identifiers are server-only.
            now: the current time, when known: sending resets the keep alive timer.

        Returns:
            The packet identifier of a QoS 1 or 2 publish, to match with `Published`;
            None at QoS 0.

        Raises:
            InvalidState: at QoS 0 unless CONNECTED.
            PendingQueueFull: if the publish would wait and ``max_pending`` are waiting.
            ValueError: for an invalid topic, QoS, properties, or QoS or retain the server
                does not support, or a packet over the server's Maximum Packet Size.
        """
        connected = self.state is State.CONNECTED
        if not qos and properties is None and connected and not self.use_topic_aliases:
            # The common case, telemetry at QoS 0, without building a Publish: a PUBLISH
            # without properties (MQTT 5.0 §3.3) to a topic sent before, whose encoded name
            # (and, in 5.0, property length 0) is kept. Limits that apply take the slow path.
            head = self._topic_heads.get(topic)
            if head is not None and (not retain or self.server_retain_available):
                length = len(head) + len(payload)
                limit = self.server_maximum_packet_size
                if length < 16384 and (limit is None or length + 3 <= limit):
                    out = self._out
                    if length < 128:
                        out += _QOS0_HEADERS[1 if retain else 0][length]
                    else:
                        out += bytes((0x31 if retain else 0x30, length & 0x7F | 0x80, length >> 7))
                    out += head
                    out += payload
                    if now is not None:
                        self._last_sent = now
                    return None
        if qos not in (0, 1, 2):
            raise ValueError(f"qos {qos!r} is not 0, 1 or 2")
        if not qos and not connected:
            raise InvalidState(f"publish() at qos 0 in state {self.state.name}")
        props = properties or _NO_PROPERTIES
        if props.topic_alias is not None:
            raise ValueError("topic_alias is managed by the connection (use_topic_aliases)")
        if props.subscription_identifier:
            # 5.0 §3.3.4: a client does not send a Subscription Identifier in PUBLISH.
            raise ValueError("subscription_identifier is not allowed in a client's publish")
        if qos > self.server_maximum_qos:
            # 5.0 §3.2.2.3.4: not above the server's Maximum QoS.
            raise ValueError(f"qos {qos} is above the server's maximum qos {self.server_maximum_qos}")
        if retain and not self.server_retain_available:
            raise ValueError("the server does not support retained messages")  # §3.2.2.3.5
        # 5.0 §4.9: beyond the server's Receive Maximum, QoS 1 and 2 publishes wait.
        waits = bool(qos) and (
            not connected or bool(self._queue) or len(self._in_flight) >= self.server_receive_maximum
        )
        waiting = len(self._queue) if self._queue is not None else 0
        if waits and waiting >= self.max_pending:
            raise PendingQueueFull(f"{waiting} publishes already wait for a send slot")
        packet_id = self._allocate_id() if qos else None
        packet = Publish(topic, bytes(payload), qos, retain, False, packet_id, props)
        data = self._encode(packet)  # a caller's mistake raises here, before any state changes
        if len(self._topic_heads) < _TOPIC_CACHE and topic not in self._topic_heads:
            # encode() found the topic valid: remember its encoded form.
            if self._topic_heads is _EMPTY:
                self._topic_heads = {}
            self._topic_heads[topic] = encode_string(topic) + (b"\x00" if self.version == MQTT_5 else b"")
        if packet_id is not None:
            self._use_id(packet_id)
            if self._track:
                self._changes.append(SessionChange("add", packet_id, packet))
        if waits and packet_id is not None:
            if self._queue is None:
                self._queue = deque()
            self._queue.append(packet)
            if self._queued_ids is _EMPTY:
                self._queued_ids = {}
            self._queued_ids[packet_id] = None
        else:
            self._transmit(packet, now, data)
        return packet_id

    def subscribe(
        self,
        subscriptions: Sequence[Subscription | tuple[str, int] | str],
        properties: Properties | None = None,
        *,
        now: float | None = None,
    ) -> int:
        """Queue SUBSCRIBE (MQTT 5.0 §3.8); `Subscribed` answers it.

        Args:
            subscriptions: `Subscription` objects, (filter, qos) pairs, or filters (QoS 0).
            properties: SUBSCRIBE properties (5.0), e.g. ``subscription_identifier``.
            now: the current time, when known.

        Returns:
            The packet identifier, to match with `Subscribed`.

        Raises:
            InvalidState: unless CONNECTED.
            ValueError: for no subscriptions, an invalid filter or options.
        """
        self._check_state(State.CONNECTED, what="subscribe()")
        items: list[Subscription] = []
        for item in subscriptions:
            if isinstance(item, Subscription):
                sub = item
            elif isinstance(item, str):
                sub = Subscription(item)
            else:
                sub = Subscription(item[0], item[1])
            validate_filter(sub.filter)
            items.append(sub)
        if not items:
            raise ValueError("subscribe() needs at least one subscription")
        packet_id = self._allocate_id()
        packet = Subscribe(packet_id, tuple(items), properties or _NO_PROPERTIES)
        self._send(packet, now)
        self._add_request(packet_id, len(items))
        return packet_id

    def unsubscribe(
        self, filters: Sequence[str] | str, properties: Properties | None = None, *, now: float | None = None
    ) -> int:
        """Queue UNSUBSCRIBE (MQTT 5.0 §3.10); `Unsubscribed` answers it.

        Returns:
            The packet identifier, to match with `Unsubscribed`.

        Raises:
            InvalidState: unless CONNECTED.
            ValueError: for no filters or an invalid filter.
        """
        self._check_state(State.CONNECTED, what="unsubscribe()")
        items = (filters,) if isinstance(filters, str) else tuple(filters)
        for filter in items:
            validate_filter(filter)
        if not items:
            raise ValueError("unsubscribe() needs at least one topic filter")
        packet_id = self._allocate_id()
        self._send(Unsubscribe(packet_id, items, properties or _NO_PROPERTIES), now)
        self._add_request(packet_id, len(items))
        return packet_id

    def _add_request(self, packet_id: int, count: int) -> None:
        if self._requests is _EMPTY:
            self._requests = {}
        self._requests[packet_id] = count
        self._use_id(packet_id)

    def ping(self, now: float) -> None:
        """Queue PINGREQ now; `PongReceived` answers it, else the keep alive timer fails.

        Raises:
            InvalidState: unless CONNECTED.
        """
        self._check_state(State.CONNECTED, what="ping()")
        self._send(PingReq(), now)
        if self._ping_sent is None:
            self._ping_sent = now

    def ack(
        self, message: Message, reason_code: int = ReasonCode.SUCCESS, *, now: float | None = None
    ) -> None:
        """Acknowledge an incoming QoS 1 or 2 message when ``auto_ack`` is False.

        Queues PUBACK (QoS 1) or PUBREC (QoS 2). A reason code of 0x80 or above (5.0)
        refuses the message; for QoS 2 that ends the flow (5.0 §4.3.3). A QoS 0 message,
        one already acknowledged, or one from an earlier connection the server will send
        again, is ignored.

        Raises:
            InvalidState: unless CONNECTED.
            ValueError: if the reason code is not allowed in PUBACK/PUBREC.
        """
        self._check_state(State.CONNECTED, what="ack()")
        packet_id = message.packet_id
        if packet_id is None:
            return
        code = _reason(reason_code)
        if message.qos == 1 and packet_id in self._unacked_qos1:
            self._send(PubAck(packet_id, code), now)
            del self._unacked_qos1[packet_id]
        elif message.qos == 2 and self._qos2_received.get(packet_id) is False:
            self._send(PubRec(packet_id, code), now)
            if code >= 0x80:
                del self._qos2_received[packet_id]
            else:
                self._qos2_received[packet_id] = True
                if self._track:
                    self._changes.append(SessionChange("received", packet_id))

    def pending(self) -> tuple[PendingPublish, ...]:
        """The outgoing QoS 1 and 2 publishes not yet done, in the order they were made.

        Read-only: a durable store can persist them; in-flight ones come first.
        """
        flights = tuple(PendingPublish(f.publish, False, f.released) for f in self._in_flight.values())
        return flights + tuple(PendingPublish(p, True) for p in self._queue or ())

    def session_changes(self) -> list[SessionChange]:
        """Return the session changes since the last call, in order, and forget them.

        Empty unless the connection was made with ``track_changes=True``.
        """
        if not self._track:
            return []
        changes, self._changes = self._changes, []
        return changes

    def restore(self, pending: Iterable[PendingPublish], received_qos2: Iterable[int] = ()) -> None:
        """Load session state a durable store kept, before the first `connect()`.

        Args:
            pending: the outgoing QoS 1 and 2 publishes not yet done, in order; those
                with ``released`` wait for PUBCOMP, the others are sent (again, with the
                same packet identifier) after the next CONNACK.
            received_qos2: packet identifiers of incoming QoS 2 publishes received (PUBREC
                sent) and not yet released.

        Raises:
            InvalidState: unless DISCONNECTED with no session state yet.
            ValueError: for a publish without a packet identifier or a repeated one.
        """
        self._check_state(State.DISCONNECTED, what="restore()")
        if self._in_flight or self._queue or self._qos2_received:
            raise InvalidState("restore() into a connection that already has session state")
        flights: dict[int, _Flight] = {}
        queue: deque[Publish] = deque()
        for item in pending:
            packet = item.publish
            packet_id = packet.packet_id
            if packet_id is None or packet.qos not in (1, 2):
                raise ValueError(f"publish to {packet.topic!r} is not a qos 1 or 2 publish with a packet id")
            if packet_id in flights or any(p.packet_id == packet_id for p in queue):
                raise ValueError(f"packet identifier {packet_id} appears twice")
            if item.released and packet.qos == 2:
                flights[packet_id] = _Flight(packet, released=True)
            else:
                queue.append(replace(packet, dup=False))
        self._in_flight = flights or _EMPTY
        self._queue = queue or None
        self._queued_ids = _in_flight_ids(list(queue)) or _EMPTY
        self._qos2_received = dict.fromkeys(received_qos2, True) or _EMPTY
        used = [*flights, *self._queued_ids, *self._qos2_received]
        if used:
            self._connected_before = True
            self._next_id = max(flights.keys() | self._queued_ids, default=0) % _MAX_PACKET_ID + 1

    # --- internals: sending --------------------------------------------------------------

    def _check_state(self, *allowed: State, what: str) -> None:
        if self.state not in allowed:
            raise InvalidState(f"{what} in state {self.state.name}")

    def _encode(self, packet: Packet) -> bytes:
        data = encode(packet, self.version)
        limit = self.server_maximum_packet_size
        if limit is not None and len(data) > limit:
            # 5.0 §3.1.2.11.4: never send a packet over the server's limit.
            raise ValueError(f"packet of {len(data)} bytes is larger than the server's maximum {limit}")
        return data

    def _ack(self, kind: int, packet_id: int, now: float) -> None:
        # PUBACK, PUBREC, PUBREL or PUBCOMP with reason code 0 and no properties: the same
        # four bytes in 3.1.1 and 5.0 (5.0 §3.4.2.1 lets the reason code be left out).
        self._out += _ACK_HEADS[kind] + packet_id.to_bytes(2, "big")
        self._last_sent = now

    def _send(self, packet: Packet, now: float | None = None) -> None:
        self._out += self._encode(packet)
        if now is not None:
            self._last_sent = now

    def _allocate_id(self) -> int:
        # The next free identifier (§2.2.1); _use_id() claims it once the packet is built,
        # so a call refused with ValueError does not use one up.
        packet_id = self._next_id
        for _ in range(_MAX_PACKET_ID):
            if (
                packet_id not in self._in_flight
                and packet_id not in self._requests
                and packet_id not in self._queued_ids
            ):
                return packet_id
            packet_id = packet_id % _MAX_PACKET_ID + 1
        raise InvalidState("all 65535 packet identifiers are in use")

    def _use_id(self, packet_id: int) -> None:
        self._next_id = packet_id % _MAX_PACKET_ID + 1

    def _transmit(self, packet: Publish, now: float | None, data: bytes | None = None) -> None:
        # Send a publish for the first time in this connection, with a topic alias when
        # the server allows them (5.0 §3.3.2.3.4); the session keeps the full topic.
        # ``data`` is the packet already encoded, without an alias.
        wire = packet
        if self.use_topic_aliases and self.server_topic_alias_maximum:
            alias = self._aliases_out.get(packet.topic)
            if alias is not None:
                wire = replace(packet, topic="", properties=replace(packet.properties, topic_alias=alias))
            elif len(self._aliases_out) < self.server_topic_alias_maximum:
                alias = len(self._aliases_out) + 1
                if self._aliases_out is _EMPTY:
                    self._aliases_out = {}
                self._aliases_out[packet.topic] = alias
                wire = replace(packet, properties=replace(packet.properties, topic_alias=alias))
        if data is None or wire is not packet:
            data = self._encode(wire)
        self._out += data
        if now is not None:
            self._last_sent = now
        if packet.packet_id is not None:
            if self._in_flight is _EMPTY:
                self._in_flight = {}
            self._in_flight[packet.packet_id] = _Flight(packet)

    def _flush_queue(self, now: float | None) -> None:
        # Called only while CONNECTED: after CONNACK, and when an acknowledgement frees a
        # slot (acknowledgements before CONNACK are protocol errors).
        queue = self._queue
        if not queue:
            return
        while queue and len(self._in_flight) < self.server_receive_maximum:
            packet = queue.popleft()
            self._queued_ids.pop(packet.packet_id or 0, None)  # a dict while the queue is not empty
            # A publish made while not connected meets this server's limits only now.
            result = self._encode_or_refuse(packet)
            if isinstance(result, bytes):
                self._transmit(packet, now, result)
            else:
                self._done(packet.packet_id or 0, result, _NO_PROPERTIES)
        if not queue and self._queue is queue:
            self._queue = None  # an idle session holds no deque
            self._queued_ids = _EMPTY

    def _encode_or_refuse(self, packet: Publish) -> bytes | ReasonCode:
        # The packet's bytes, or the reason code a server would give for a publish it does
        # not support (5.0 §4.13).
        if packet.qos > self.server_maximum_qos:
            return ReasonCode.QOS_NOT_SUPPORTED
        if packet.retain and not self.server_retain_available:
            return ReasonCode.RETAIN_NOT_SUPPORTED
        try:
            return self._encode(packet)
        except ValueError:
            return ReasonCode.PACKET_TOO_LARGE

    def _done(self, packet_id: int, code: int, properties: Properties) -> None:
        self._events.append(Published(packet_id, code, properties))
        if self._track:
            self._changes.append(SessionChange("done", packet_id))

    def _fail(self, error: ProtocolError) -> None:
        self.error = error
        if self.version == MQTT_5:
            # 5.0 §4.13: close with a DISCONNECT carrying the reason code; a code that
            # DISCONNECT cannot carry (such as 0x84 from decoding a CONNECT) becomes 0x82.
            try:
                self._out += encode(Disconnect(ReasonCode(error.reason_code)), MQTT_5)
            except ValueError:
                self._out += encode(Disconnect(ReasonCode.PROTOCOL_ERROR), MQTT_5)
        self.state = State.CLOSED

    # --- receiving -----------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """Feed bytes read from the transport; then collect events and data to send.

        A peer's mistake sets `error` and closes instead of raising. Input is ignored
        once CLOSED.

        Raises:
            InvalidState: if DISCONNECTED (nothing was connected).
        """
        if self.state is State.DISCONNECTED:
            raise InvalidState("receive_data() in state DISCONNECTED")
        if self.state is State.CLOSED or not data:
            return
        # Parse in place; only the tail of an incomplete packet is kept (copied once).
        buffer = self._buffer
        source: bytes | bytearray | memoryview = data
        if buffer:
            buffer += data
            source = buffer
        at = 0
        try:
            with memoryview(source) as view:
                # QoS 0 PUBLISH packets of a topic seen before and without properties come
                # back as Messages; only while CONNECTED, since the server's first packet
                # must be CONNACK. A topic first seen in this call takes the full decoder.
                names: dict[bytes, str] | None = self._topic_names
                if self.state is not State.CONNECTED or names is _EMPTY:
                    names = None
                items, at, malformed = _split_packets(
                    view, 0, self.max_packet_size, self.version, names, Message
                )
                if items:
                    self._ping_sent = None  # any packet shows the server is alive
                events = self._events
                for item in items:
                    if type(item) is Message:
                        events.append(item)
                        continue
                    self._handle(_decode_body(view, item, self.version), now)
                    if self.state is not State.CONNECTED and self.state is not State.CONNECTING:
                        break  # what follows is ignored, as all input once CLOSED
                else:
                    if malformed:
                        # Raises the error of the invalid fixed header at ``at``.
                        _decode_fixed_header(view, at, self.max_packet_size, self.version)
        except ProtocolError as exc:
            self._fail(exc)
        # Once CLOSED, input is ignored and connection_lost() clears the buffer.
        if source is buffer:
            del buffer[:at]
        elif at < len(data):
            buffer += memoryview(data)[at:]

    def _handle(self, packet: Packet, now: float) -> None:
        if isinstance(packet, ConnAck):
            self._handle_connack(packet, now)
        elif self.state is State.CONNECTING and not isinstance(packet, Auth):
            # 3.1.1 §3.2 [MQTT-3.2.0-1], 5.0 §3.2: the server's first packet is CONNACK
            # (5.0 §4.12: or AUTH); 5.0 §3.14 [MQTT-3.14.0-1]: no DISCONNECT before it.
            raise ProtocolError(f"{type(packet).__name__} before CONNACK")
        elif isinstance(packet, Publish):
            self._handle_publish(packet, now)
        elif isinstance(packet, PubAck):
            self._handle_puback(packet, now)
        elif isinstance(packet, PubRec):
            self._handle_pubrec(packet, now)
        elif isinstance(packet, PubRel):
            self._handle_pubrel(packet, now)
        elif isinstance(packet, PubComp):
            self._handle_pubcomp(packet, now)
        elif isinstance(packet, (SubAck, UnsubAck)):
            self._handle_suback(packet)
        elif isinstance(packet, PingResp):
            self._events.append(PongReceived())
        elif isinstance(packet, Disconnect) and self.version == MQTT_5:
            # 5.0 §3.14.4: the server closes after DISCONNECT; we send nothing back.
            self.state = State.CLOSED
            self._events.append(Disconnected(packet.reason_code, packet.properties))
        elif isinstance(packet, Auth):
            # 5.0 §4.12: a server sends AUTH only when CONNECT had an Authentication Method.
            if self._connect_properties.authentication_method is None:
                raise ProtocolError("AUTH without an authentication method in CONNECT")
            self._events.append(AuthReceived(packet.reason_code, packet.properties))
        else:
            # CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ are client-to-server packets (5.0
            # §2.1.2), as is DISCONNECT in 3.1.1 (§3.14): a server never sends them.
            raise ProtocolError(f"server sent {type(packet).__name__}")

    def _handle_connack(self, packet: ConnAck, now: float) -> None:
        if self.state is not State.CONNECTING:
            raise ProtocolError("second CONNACK")  # 5.0 §3.2 [MQTT-3.2.0-2]
        code = int(packet.reason_code)
        if code:
            # 3.1.1 §3.2.2.3, 5.0 §3.2.2.2: refused; the server closes the connection.
            self.state = State.CLOSED
            self._events.append(ConnectFailed(code, packet.properties))
            return
        if packet.session_present and self._sent_clean_start:
            # 5.0 §3.2.2.1.1 [MQTT-3.2.2-4]: a client without session state closes.
            raise ProtocolError("CONNACK with session present after clean start")
        props = packet.properties
        if props.receive_maximum is not None:
            self.server_receive_maximum = props.receive_maximum
        self.server_maximum_packet_size = props.maximum_packet_size
        self.server_topic_alias_maximum = props.topic_alias_maximum or 0
        if props.maximum_qos is not None:
            self.server_maximum_qos = props.maximum_qos
        if props.retain_available is not None:
            self.server_retain_available = props.retain_available
        self.server_keepalive = props.server_keep_alive
        if props.assigned_client_identifier is not None:
            # 5.0 §3.2.2.3.7: use it to resume this session later.
            self.client_id = props.assigned_client_identifier
        session_lost = self._connected_before and not packet.session_present
        self._connected_before = True
        self.state = State.CONNECTED
        self._last_sent = now
        self._events.append(Connected(packet.session_present, props, session_lost))
        if packet.session_present:
            # 5.0 §4.4 [MQTT-4.4.0-1]: resend unacknowledged PUBLISH with DUP set, and
            # PUBREL, with their original packet identifiers, in their original order.
            for packet_id, flight in self._in_flight.items():
                if flight.released:
                    self._send(PubRel(packet_id), now)
                else:
                    self._send(replace(flight.publish, dup=True), now)
        else:
            # The server has no session: its packet identifiers and QoS 2 state are gone.
            if self._qos2_received and self._track:
                self._changes.append(SessionChange("clear_received"))
            self._qos2_received = _EMPTY
            restart: list[Publish] = []
            for packet_id, flight in self._in_flight.items():
                if flight.released:
                    # PUBREC said the server owns the message (§4.3.3): it is delivered.
                    self._done(packet_id, ReasonCode.SUCCESS, _NO_PROPERTIES)
                else:
                    restart.append(flight.publish)
            self._in_flight = _EMPTY
            if restart:
                if self._queue is None:
                    self._queue = deque()
                self._queue.extendleft(reversed(restart))
                self._queued_ids = {**self._queued_ids, **_in_flight_ids(restart)}
        self._flush_queue(now)

    def _handle_publish(self, packet: Publish, now: float) -> None:
        topic = packet.topic
        alias = packet.properties.topic_alias
        if alias is not None:
            # 5.0 §3.3.2.3.4: 0 or above our Topic Alias Maximum is 0x94; a new topic
            # name sets the mapping, an empty one uses it.
            if alias > self.topic_alias_maximum:
                raise ProtocolError(
                    f"topic alias {alias} is above the maximum {self.topic_alias_maximum}",
                    reason_code=ReasonCode.TOPIC_ALIAS_INVALID,
                )
            if topic:
                if self._aliases_in is _EMPTY:
                    self._aliases_in = {}
                self._aliases_in[alias] = topic
            elif alias in self._aliases_in:
                topic = self._aliases_in[alias]
            else:
                raise ProtocolError(f"topic alias {alias} is not mapped")
        packet_id = packet.packet_id
        if alias is None and len(self._topic_names) < _TOPIC_CACHE:
            # The decoder found this topic name valid: later QoS 0 PUBLISH packets with it
            # take the fast path of receive_data().
            if self._topic_names is _EMPTY:
                self._topic_names = {}
            self._topic_names.setdefault(topic.encode(), topic)
        message = Message(
            topic, packet.payload, packet.qos, packet.retain, packet.properties, packet_id, packet.dup
        )
        if packet_id is None:
            self._events.append(message)
            return
        if packet.qos == 2 and packet_id in self._qos2_received:
            # 5.0 §4.3.3: until PUBREL, a PUBLISH with this identifier is the same message:
            # do not deliver it again; answer PUBREC again once it was sent.
            if self._qos2_received[packet_id]:
                self._send(PubRec(packet_id), now)
            return
        if (
            self.version == MQTT_5
            and packet_id not in self._unacked_qos1
            and len(self._unacked_qos1) + len(self._qos2_received) >= self.receive_maximum
        ):
            # 5.0 §3.3.4: more unacknowledged QoS 1/2 publishes than ours.
            raise ProtocolError(
                f"more than {self.receive_maximum} unacknowledged publishes",
                reason_code=ReasonCode.RECEIVE_MAXIMUM_EXCEEDED,
            )
        self._events.append(message)
        if packet.qos == 1:
            if self.auto_ack:
                self._ack(0x40, packet_id, now)
            else:
                if self._unacked_qos1 is _EMPTY:
                    self._unacked_qos1 = {}
                self._unacked_qos1[packet_id] = None
        else:
            if self._qos2_received is _EMPTY:
                self._qos2_received = {}
            self._qos2_received[packet_id] = self.auto_ack
            if self.auto_ack:
                if self._track:
                    self._changes.append(SessionChange("received", packet_id))
                self._ack(0x50, packet_id, now)

    def _finish(self, packet_id: int, code: int, properties: Properties, now: float) -> None:
        del self._in_flight[packet_id]
        self._done(packet_id, code, properties)
        self._flush_queue(now)

    def _handle_puback(self, packet: PubAck, now: float) -> None:
        flight = self._in_flight.get(packet.packet_id)
        if flight is None:
            # No rule makes this an error (5.0 §4.3.2): a late or repeated PUBACK.
            return
        if flight.publish.qos != 1:
            raise ProtocolError(f"PUBACK for QoS 2 publish {packet.packet_id}")
        self._finish(packet.packet_id, packet.reason_code, packet.properties, now)

    def _handle_pubrec(self, packet: PubRec, now: float) -> None:
        packet_id = packet.packet_id
        flight = self._in_flight.get(packet_id)
        if flight is None:
            if self.version == MQTT_5:
                # 5.0 §3.6.2.1: PUBREL 0x92, Packet Identifier not found.
                self._send(PubRel(packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND), now)
            return
        if flight.publish.qos != 2:
            raise ProtocolError(f"PUBREC for QoS 1 publish {packet_id}")
        if packet.reason_code >= 0x80:
            # 5.0 §4.3.3: a PUBREC with a failure code ends the flow.
            self._finish(packet_id, packet.reason_code, packet.properties, now)
            return
        # 5.0 §4.3.3: answer PUBREC with PUBREL (again, for a repeated PUBREC).
        if not flight.released and self._track:
            self._changes.append(SessionChange("release", packet_id))
        flight.released = True
        self._ack(0x62, packet_id, now)

    def _handle_pubrel(self, packet: PubRel, now: float) -> None:
        # 5.0 §4.3.3: answer every PUBREL with PUBCOMP and forget the
        # identifier; 5.0 §3.7.2.1: with 0x92 when it was not known.
        code = ReasonCode.SUCCESS
        if packet.packet_id not in self._qos2_received:
            if self.version == MQTT_5:
                code = ReasonCode.PACKET_IDENTIFIER_NOT_FOUND
        else:
            del self._qos2_received[packet.packet_id]
            if self._track:
                self._changes.append(SessionChange("released", packet.packet_id))
        if code:
            self._send(PubComp(packet.packet_id, code), now)
        else:
            self._ack(0x70, packet.packet_id, now)

    def _handle_pubcomp(self, packet: PubComp, now: float) -> None:
        flight = self._in_flight.get(packet.packet_id)
        if flight is None:
            return  # as for PUBACK: no rule makes it an error
        if not flight.released:
            raise ProtocolError(f"PUBCOMP for publish {packet.packet_id} before PUBREC")
        self._finish(packet.packet_id, packet.reason_code, packet.properties, now)

    def _handle_suback(self, packet: SubAck | UnsubAck) -> None:
        count = self._requests.get(packet.packet_id)
        if count is None:
            return  # no rule makes an unknown identifier an error; ignore it
        is_suback = isinstance(packet, SubAck)
        if (is_suback or self.version == MQTT_5) and len(packet.reason_codes) != count:
            # 5.0 §3.9.3, §3.11.3: one reason code per topic filter, in order.
            raise ProtocolError(
                f"{type(packet).__name__} with {len(packet.reason_codes)} reason codes for {count} filters"
            )
        del self._requests[packet.packet_id]
        codes = tuple(int(code) for code in packet.reason_codes)
        if is_suback:
            self._events.append(Subscribed(packet.packet_id, codes, packet.properties))
        else:
            self._events.append(Unsubscribed(packet.packet_id, codes, packet.properties))


def _in_flight_ids(publishes: list[Publish]) -> dict[int, None]:
    return {p.packet_id: None for p in publishes if p.packet_id is not None}


def _reason(code: int) -> ReasonCode:
    try:
        return ReasonCode(code)
    except ValueError:
        raise ValueError(f"reason code 0x{code:02x} is not an MQTT reason code") from None
