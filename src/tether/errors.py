"""The exceptions tether raises.

Every error tether raises on its own account derives from `TetherError`::

    TetherError
    ├── ProtocolError      .close_code, .reason_code; the peer broke the protocol
    │   ├── PayloadTooBig  a frame, message or packet over the limit (1009, 0x95)
    │   ├── InvalidUtf8    text that is not valid UTF-8 (1007)
    │   └── MalformedPacket  bytes that are not a valid MQTT packet (0x81)
    ├── InvalidState       send_*() at the wrong time (bad arguments raise ValueError)
    ├── ConnectionClosed   .code, .reason; the connection is closed
    ├── HandshakeError     .status, .headers; the opening handshake failed
    ├── Refused            .reason_code; an MQTT server said no (CONNACK, SUBACK, PUBACK)
    ├── RpcError           .code, .message; an mg_rpc call failed (the error reply's fields)
    ├── ConfigError        .path; a configuration value, file or schema entry is wrong
    └── Timeout            also a builtin TimeoutError

A peer's mistake never raises inside a protocol core's ``receive_data()``: the
core queues a close with the mapped code and keeps the cause; the front end
then raises `ConnectionClosed` from it.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ConfigError",
    "ConnectionClosed",
    "HandshakeError",
    "InvalidState",
    "InvalidUtf8",
    "MalformedPacket",
    "PayloadTooBig",
    "ProtocolError",
    "Refused",
    "RpcError",
    "TetherError",
    "Timeout",
]


class TetherError(Exception):
    """Base class of every exception tether raises on its own account."""


class ProtocolError(TetherError):
    """The peer broke the protocol.

    Attributes:
        close_code: the WebSocket close code this error maps to (RFC 6455 §7.4.1).
        reason_code: the MQTT 5.0 reason code it maps to (MQTT 5.0 §2.4), sent
            in the DISCONNECT where the protocol version has one.
    """

    close_code: int = 1002
    reason_code: int = 0x82  # Protocol Error

    def __init__(
        self, message: str, close_code: int | None = None, *, reason_code: int | None = None
    ) -> None:
        super().__init__(message)
        if close_code is not None:
            self.close_code = close_code
        if reason_code is not None:
            self.reason_code = reason_code


class PayloadTooBig(ProtocolError):
    """A frame, message or packet is larger than the configured limit."""

    close_code = 1009
    reason_code = 0x95  # Packet too large


class InvalidUtf8(ProtocolError):
    """A text message or a close reason is not valid UTF-8."""

    close_code = 1007


class MalformedPacket(ProtocolError):
    """Bytes that cannot be decoded as a packet of the protocol (MQTT 5.0 §4.13)."""

    reason_code = 0x81  # Malformed Packet


class InvalidState(TetherError):
    """An operation was attempted in a state that does not allow it."""


class ConnectionClosed(TetherError):
    """The connection is closed; no more messages can be sent or received.

    Attributes:
        code: the close code received from the peer, 1006 when the connection
            dropped without a close frame, 1005 when the close frame had none.
        reason: the close reason received from the peer, "" when none.
        rcvd_then_sent: True when the peer started the closing handshake.
    """

    def __init__(self, code: int, reason: str = "", *, rcvd_then_sent: bool | None = None) -> None:
        self.code = code
        self.reason = reason
        self.rcvd_then_sent = rcvd_then_sent
        detail = f"connection closed with code {code}"
        if reason:
            detail += f" ({reason})"
        super().__init__(detail)

    @property
    def ok(self) -> bool:
        """True when the connection closed normally (1000 or 1001)."""
        return self.code in (1000, 1001)


class HandshakeError(TetherError):
    """The opening handshake failed.

    Attributes:
        status: the HTTP status of the response (client side) or the status the
            server answers with (server side).
        headers: the response headers, as (name, value) pairs.
        body: the response body when one was read, else b"".
    """

    def __init__(
        self,
        message: str,
        status: int = 400,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = list(headers)
        self.body = body


class Refused(TetherError):
    """An MQTT server refused a request: a connection, a subscription or a publish.

    Attributes:
        reason_code: the MQTT 5.0 reason code (0x80 and above), or in 3.1.1 the
            CONNACK return code (1-5) or 0x80 for a refused subscription.
    """

    def __init__(self, message: str, reason_code: int) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class RpcError(TetherError):
    """An mg_rpc call failed: the ``error`` of a reply frame (spec mgos-rpc.md §1.2).

    A handler raises it to answer with that error; a client raises it when the
    reply carries one.

    Attributes:
        code: the ``error.code``, e.g. 404 (no handler), 400 (bad arguments),
            401 (authentication needed), 403 (denied), -1 (generic application error).
        message: the ``error.message``, "" when the reply has none.
    """

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"error {self.code}: {self.message}" if self.message else f"error {self.code}"


class ConfigError(TetherError):
    """A configuration value, file or schema entry is wrong.

    Attributes:
        path: the dotted key path the error is about, e.g. ``"wifi.sta.ssid"``;
            "" when it concerns a whole file.
    """

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


class Timeout(TetherError, TimeoutError):
    """An operation did not complete in time."""
