"""The WebSocket protocol as a state machine: bytes in, events out (RFC 6455, RFC 7692).

Theory of operation
-------------------
A `Connection` is one endpoint of one WebSocket. The front end feeds it what the
socket read (`receive_data()`, `receive_eof()`), collects what it must write
(`data_to_send()`) and what happened (`events_received()`), and calls `send_*()`
for what the application wants to say. It never touches a socket or a clock.

`ClientConnection` and `ServerConnection` add the opening handshake: the client
writes its request at construction and turns OPEN on a valid 101 answer; the
server emits a `Request` event and turns OPEN on `accept()`.

States::

    CONNECTING ──handshake──▶ OPEN ──send_close()──▶ CLOSING ──Close received──▶ CLOSED
         │                      └──Close received, then acknowledge_close()──────▶ CLOSED
         └──────────── handshake failed / EOF / fail() ─────────────────────────────┘

Incoming data frames are processed as their bytes arrive, not when the frame is
complete: payloads are unmasked, inflated and checked for UTF-8 piece by piece,
so a bad byte fails the connection at once and a large frame is never held
twice. Only headers and control frames (at most 131 bytes) wait in a buffer.

The core leaves two decisions to the front end, so that the application can
answer the messages that came before them (what the Autobahn suite calls
"strict" behaviour): when the peer sends a Close frame, the core emits
`CloseReceived` and the front end answers with `acknowledge_close()`; when the
peer breaks the protocol, `error` is set, further input is ignored, and the
front end calls `fail()`, which sends the Close frame with ``error.close_code``.
Either way, input after that point is ignored.
"""

from __future__ import annotations

import base64
import codecs
import enum
import os
from collections.abc import Sequence
from dataclasses import dataclass

from tether.errors import (
    ConnectionClosed,
    HandshakeError,
    InvalidState,
    InvalidUtf8,
    PayloadTooBig,
    ProtocolError,
)
from tether.ws import deflate as _deflate
from tether.ws import frames as _frames
from tether.ws.frames import apply_mask, decode_close, encode_close, encode_frame, join_mask
from tether.ws.handshake import (
    Headers,
    Request,
    Response,
    accept_key,
    build_request,
    build_response,
    is_valid_key,
    parse_extension_header,
    parse_request,
    parse_response,
    parse_token_list,
)

__all__ = [
    "BinaryMessage",
    "ClientConnection",
    "CloseReceived",
    "Connection",
    "Event",
    "HandshakeComplete",
    "Ping",
    "Pong",
    "RequestReceived",
    "ServerConnection",
    "State",
    "TextMessage",
]


class State(enum.Enum):
    """The state of a connection (RFC 6455 §4, §7)."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


@dataclass(frozen=True, slots=True)
class TextMessage:
    """A complete text message."""

    data: str


@dataclass(frozen=True, slots=True)
class BinaryMessage:
    """A complete binary message."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    """A Ping frame; the core has already queued the Pong (RFC 6455 §5.5.2)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    """A Pong frame."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class CloseReceived:
    """A Close frame; code 1005 when it had no payload (RFC 6455 §7.1.5).

    If the connection was OPEN, answer with `Connection.acknowledge_close()`.
    """

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """Server side: the client's handshake request; answer with accept() or reject()."""

    request: Request


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    """Client side: the server accepted; the connection is OPEN."""

    response: Response


Event = TextMessage | BinaryMessage | Ping | Pong | CloseReceived | RequestReceived | HandshakeComplete

_CONTROL_MAX = 125
#: Payloads from this size on are queued apart from their frame header.
_SPLIT_AT = 65536
# Unmasked headers of whole text and binary frames of 0..125 bytes: the server's hot path.
# Keys 0x8081 and 0x8082: the client's, with the mask bit.
_SMALL_HEADERS = {first: [bytes((first, n)) for n in range(126)] for first in (0x81, 0x82)}
_SMALL_HEADERS.update(
    {0x8000 | first: [bytes((first, 0x80 | n)) for n in range(126)] for first in (0x81, 0x82)}
)
# Masking keys are drawn from os.urandom() in pools that double from _MASK_FIRST bytes up to
# _MASK_POOL (64 keys) per call: a busy connection makes few calls, an idle one keeps 16 bytes.
_MASK_FIRST = 16
_MASK_POOL = 256


class Connection:
    """One endpoint of a WebSocket connection after (or around) its handshake.

    Args:
        is_client: True for the client role: outgoing frames are masked and
            incoming frames must not be (RFC 6455 §5.1).
        max_message_size: the largest message accepted, in bytes after
            decompression; larger ones close the connection with 1009. None: no limit.
        max_frame_size: the largest frame payload accepted (1009 beyond). None:
            same as max_message_size.
        deflate: the agreed permessage-deflate parameters, or None for none.
        state: the initial state; OPEN for a connection whose handshake is
            already done.

    Raises:
        ValueError: if a limit is not positive.
    """

    __slots__ = (
        "_buf",
        "_compress",
        "_decoder",
        "_deferred_unmask",
        "_deflate",
        "_events",
        "_fast_max",
        "_frame_fin",
        "_frame_mask",
        "_left",
        "_mask_at",
        "_mask_bit",
        "_mask_pool",
        "_mask_pos",
        "_msg_compressed",
        "_msg_opcode",
        "_msg_parts",
        "_msg_size",
        "_out",
        "_send_compressed",
        "_send_opcode",
        "_stopped",
        "close_rcvd",
        "close_rcvd_then_sent",
        "close_sent",
        "deflate_params",
        "eof_received",
        "error",
        "handshake_error",
        "is_client",
        "max_frame_size",
        "max_message_size",
        "state",
    )

    def __init__(
        self,
        *,
        is_client: bool,
        max_message_size: int | None = 2**20,
        max_frame_size: int | None = None,
        deflate: _deflate.DeflateParams | None = None,
        state: State = State.OPEN,
    ) -> None:
        for name, value in (("max_message_size", max_message_size), ("max_frame_size", max_frame_size)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, not {value}")
        self.is_client = is_client
        self._mask_bit = 0 if is_client else 0x80  # what incoming frames must have
        self.max_message_size = max_message_size if max_message_size is not None else 2**62
        self.max_frame_size = max_frame_size if max_frame_size is not None else self.max_message_size
        self._fast_max = min(125, self.max_frame_size, self.max_message_size)
        self.state = state
        #: the peer's protocol violation, once there is one; see fail().
        self.error: ProtocolError | None = None
        #: the Close frame received: (code, reason), or None.
        self.close_rcvd: tuple[int, str] | None = None
        #: the Close frame sent: (code, reason), or None.
        self.close_sent: tuple[int, str] | None = None
        #: True when the peer sent its Close frame before ours.
        self.close_rcvd_then_sent: bool | None = None
        self.eof_received = False
        #: why the opening handshake failed, once it has (the state is then CLOSED).
        self.handshake_error: HandshakeError | None = None
        # True once input is ignored: after an error, the peer's Close, EOF or CLOSED.
        self._stopped = False
        self._out: list[bytes] = []
        self._events: list[Event] = []
        self._buf = b""
        self._deflate: _deflate.Deflate | None = None
        self._compress = False  # whether outgoing messages are compressed
        self.deflate_params: _deflate.DeflateParams | None = None
        if deflate is not None:
            self._set_deflate(deflate)
        self._mask_pool = b""  # drawn on first use
        self._mask_at = 0
        # Frame being read.
        self._left = 0  # payload bytes of the current data frame still to come
        self._frame_fin = False
        self._frame_mask: bytes | None = None
        self._mask_pos = 0
        # Message being read.
        self._msg_opcode = 0  # 0: none; 1 text; 2 binary
        self._msg_compressed = False
        self._msg_size = 0
        self._msg_parts: list[bytes | memoryview | str] = []
        # A masked, uncompressed, one-frame binary message: its pieces are kept as
        # they arrive and unmasked once, when it is whole (join_mask).
        self._deferred_unmask = False
        self._decoder: codecs.IncrementalDecoder | None = None
        # Message being sent in fragments: its opcode, or 0.
        self._send_opcode = 0
        self._send_compressed = False

    def _set_deflate(self, params: _deflate.DeflateParams) -> None:
        self.deflate_params = params
        self._deflate = _deflate.Deflate(params, is_client=self.is_client)
        self._compress = self._deflate.compress_enabled

    # ------------------------------------------------------------------ output

    def data_to_send(self) -> bytes:
        """Return and forget the bytes to write to the peer (b"" when none)."""
        out = self._out
        if not out:
            return b""
        self._out = []
        return out[0] if len(out) == 1 else b"".join(out)

    def events_received(self) -> list[Event]:
        """Return and forget the events that arrived since the last call."""
        events = self._events
        self._events = []
        return events

    def closed_error(self) -> ConnectionClosed:
        """The `ConnectionClosed` that tells how this connection ended.

        Its code is the one the peer sent; when none was received, the one
        this side failed the connection with; else 1006 (dropped). A protocol
        error of the peer is its __cause__.
        """
        if self.close_rcvd is not None:
            code, reason = self.close_rcvd
        elif self.error is not None and self.close_sent is not None:
            code, reason = self.close_sent
        else:
            code, reason = 1006, ""
        exc = ConnectionClosed(code, reason, rcvd_then_sent=self.close_rcvd_then_sent)
        exc.__cause__ = self.error
        return exc

    def close_expected(self) -> bool:
        """Whether the front end should now close the TCP connection.

        True once the closing handshake is complete on the server (RFC 6455
        §7.1.1: the server closes first) or after `fail()`; a client waits for
        the server to close and closes itself only after a timeout.
        """
        if self.state is not State.CLOSED:
            return False
        return not self.is_client or self.close_rcvd is None or self.error is not None

    # ------------------------------------------------------------------- input

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Process bytes read from the peer; then collect events and output.

        A peer's protocol violation never raises here: it sets `error`.
        """
        if self._stopped:
            return
        if self.state is State.CONNECTING:
            self._receive_handshake(bytes(data))
            return
        if self._buf:
            data = self._buf + bytes(data)
        elif type(data) is not bytes:
            data = bytes(data)
        try:
            pos = self._parse(data)
        except ProtocolError as exc:
            self.error = exc
            self._stopped = True
            # Nothing more will be read: free the partial message at once.
            self._buf = b""
            self._msg_parts = []
            self._deferred_unmask = False
            self._decoder = None
            return
        self._buf = data[pos:] if pos < len(data) else b""

    def receive_eof(self) -> None:
        """Note that the peer closed its side of the TCP connection."""
        if self.eof_received:
            return
        self.eof_received = True
        self.state = State.CLOSED
        self._stopped = True

    def _parse(self, data: bytes) -> int:
        """Consume frames from data; return the offset of the first unconsumed byte."""
        view = None  # made when a payload is consumed in pieces; the fast path needs none
        end = len(data)
        pos = 0
        mask_bit = self._mask_bit
        fast_max = self._fast_max
        events = self._events
        scan = _frames.scan_frames
        if scan is not None and not self._left and not self._msg_opcode:
            # Compiled: whole small data frames, as the fast path below takes them.
            pos = scan(data, 0, bool(mask_bit), fast_max, events, TextMessage, BinaryMessage)
        while pos < end:
            if self._left:
                if view is None:
                    view = memoryview(data)
                n = self._left if self._left <= end - pos else end - pos
                if self._deferred_unmask:
                    self._msg_parts.append(view[pos : pos + n])
                    pos += n
                    self._left -= n
                    if not self._left:
                        assert self._frame_mask is not None
                        events.append(BinaryMessage(join_mask(self._msg_parts, self._frame_mask)))  # type: ignore[arg-type]
                        self._msg_parts = []
                        self._msg_opcode = 0
                        self._deferred_unmask = False
                    continue
                mask = self._frame_mask
                if mask is not None:
                    chunk: bytes | memoryview = apply_mask(view[pos : pos + n], mask, self._mask_pos)
                    self._mask_pos += n
                elif n == end and pos == 0:
                    chunk = data
                else:
                    chunk = view[pos : pos + n]
                pos += n
                self._left -= n
                self._message_data(chunk, self._left == 0 and self._frame_fin)
                continue
            # A frame header (RFC 6455 §5.2).
            if end - pos < 2:
                break
            b0 = data[pos]
            b1 = data[pos + 1]
            length = b1 & 0x7F
            if (
                (b0 == 0x82 or b0 == 0x81)
                and length <= fast_max
                and b1 & 0x80 == mask_bit
                and not self._msg_opcode
                and pos + length + (6 if mask_bit else 2) <= end
            ):
                # Fast path: a small, whole, unfragmented, uncompressed data frame.
                if mask_bit:
                    start = pos + 6
                    pos = start + length
                    payload = apply_mask(data[start:pos], data[start - 4 : start])
                else:
                    start = pos + 2
                    pos = start + length
                    payload = data[start:pos]
                if b0 == 0x82:
                    events.append(BinaryMessage(payload))
                else:
                    try:
                        events.append(TextMessage(payload.decode()))
                    except UnicodeDecodeError as exc:
                        raise InvalidUtf8("text message is not valid UTF-8") from exc
                continue
            hlen = 2
            if length == 126:
                hlen = 4
                if end - pos < 4:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
            elif length == 127:
                hlen = 10
                if end - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                if length >> 63:
                    raise ProtocolError("frame length has its most significant bit set")
            masked = b1 & 0x80
            if masked:
                hlen += 4
                if end - pos < hlen:
                    break
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if masked:
                if self.is_client:
                    raise ProtocolError("masked frame from the server")
            elif not self.is_client:
                raise ProtocolError("unmasked frame from the client")
            if b0 & 0x30 or (b0 & 0x40 and (self._deflate is None or opcode not in (1, 2))):
                raise ProtocolError("reserved bits set")
            if opcode >= 8:
                if opcode > 0xA:
                    raise ProtocolError(f"reserved opcode {opcode:#x}")
                if not fin:
                    raise ProtocolError("fragmented control frame")
                if length > _CONTROL_MAX:
                    raise ProtocolError(f"control frame payload of {length} bytes")
                if end - pos < hlen + length:
                    break
                payload = data[pos + hlen : pos + hlen + length]
                if masked:
                    payload = apply_mask(payload, data[pos + hlen - 4 : pos + hlen])
                pos += hlen + length
                self._control(opcode, payload)
                if self.close_rcvd is not None:
                    break
                continue
            if opcode == 0:
                if not self._msg_opcode:
                    raise ProtocolError("continuation frame without a message to continue")
            elif opcode <= 2:
                if self._msg_opcode:
                    raise ProtocolError("new data frame inside a fragmented message")
                self._msg_opcode = opcode
                self._msg_compressed = bool(b0 & 0x40)
                self._msg_size = 0
            else:
                raise ProtocolError(f"reserved opcode {opcode:#x}")
            if length > self.max_frame_size:
                raise PayloadTooBig(f"frame of {length} bytes is over the limit of {self.max_frame_size}")
            if not self._msg_compressed and self._msg_size + length > self.max_message_size:
                raise PayloadTooBig(
                    f"message of {self._msg_size + length} bytes or more is over the limit "
                    f"of {self.max_message_size}"
                )
            self._frame_mask = data[pos + hlen - 4 : pos + hlen] if masked else None
            self._mask_pos = 0
            self._frame_fin = bool(fin)
            self._left = length
            self._deferred_unmask = bool(
                masked and fin and opcode == 2 and length and not self._msg_compressed
            )
            pos += hlen
            if length == 0:
                self._message_data(b"", self._frame_fin)
        return pos

    def _message_data(self, chunk: bytes | memoryview, last: bool) -> None:
        """Add a piece of the current message's payload; complete it when last."""
        if self._msg_compressed:
            assert self._deflate is not None
            chunk = self._deflate.decompress(chunk, self.max_message_size - self._msg_size, fin=last)
            self._msg_size += len(chunk)
        elif not self._msg_parts and last:
            # Fast path: a message in one piece.
            if self._msg_opcode == 1:
                try:
                    text = str(chunk, "utf-8")
                except UnicodeDecodeError as exc:
                    raise InvalidUtf8("text message is not valid UTF-8") from exc
                self._events.append(TextMessage(text))
            else:
                self._events.append(BinaryMessage(bytes(chunk) if type(chunk) is not bytes else chunk))
            self._msg_opcode = 0
            return
        else:
            self._msg_size += len(chunk)
        if self._msg_opcode == 1:
            decoder = self._decoder
            if decoder is None:
                decoder = self._decoder = codecs.getincrementaldecoder("utf-8")()
            try:
                self._msg_parts.append(decoder.decode(chunk, last))
            except UnicodeDecodeError as exc:
                raise InvalidUtf8("text message is not valid UTF-8") from exc
            if last:
                decoder.reset()
                self._events.append(TextMessage("".join(self._msg_parts)))  # type: ignore[arg-type]
        else:
            if chunk:
                self._msg_parts.append(chunk)
            if last:
                parts = self._msg_parts
                one = len(parts) == 1 and type(parts[0]) is bytes
                # Binary parts are bytes or memoryviews; text parts never reach here.
                message = parts[0] if one else b"".join(parts)  # type: ignore[arg-type]
                assert type(message) is bytes
                self._events.append(BinaryMessage(message))
        if last:
            self._msg_parts = []
            self._msg_opcode = 0

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == 0x9:
            self._events.append(Ping(payload))
            if self.state is State.OPEN:
                self._out.append(self._frame(0xA, payload))
        elif opcode == 0xA:
            self._events.append(Pong(payload))
        else:
            code, reason = decode_close(payload)
            self.close_rcvd = (code, reason)
            self._stopped = True
            if self.state is State.OPEN:
                # The front end answers with acknowledge_close() once the application
                # has had the messages before this frame (RFC 6455 §5.5.1 lets an
                # endpoint finish what it is sending before its Close).
                self.close_rcvd_then_sent = True
            else:
                self.state = State.CLOSED
                self._stopped = True
            self._msg_parts = []
            self._msg_opcode = 0
            self._events.append(CloseReceived(code, reason))

    # ------------------------------------------------------------------ output

    def _next_mask(self) -> bytes:
        # RFC 6455 §5.3: masking keys from a strong source, drawn many at a time.
        at = self._mask_at
        if at + 4 > len(self._mask_pool):
            size = len(self._mask_pool)
            self._mask_pool = os.urandom(min(2 * size, _MASK_POOL) if size else _MASK_FIRST)
            at = 0
        self._mask_at = at + 4
        return self._mask_pool[at : at + 4]

    def _frame(
        self, opcode: int, payload: bytes | bytearray | memoryview, fin: bool = True, rsv1: bool = False
    ) -> bytes:
        return encode_frame(
            opcode, payload, fin=fin, rsv1=rsv1, mask=self._next_mask() if self.is_client else None
        )

    def _encode_whole(self, first: int, payload: bytes | bytearray | memoryview) -> None:
        """Queue an unfragmented, uncompressed frame; the hot path of sending.

        A large payload is queued apart from its header, so that it is not
        copied once more only to prepend a few bytes (`data_to_send()` still
        returns one bytes object; the asyncio front end writes the two pieces).
        """
        n = len(payload)
        if self.is_client:
            mask = self._next_mask()
            if n < 126:
                self._out.append(
                    b"".join((_SMALL_HEADERS[first | 0x8000][n], mask, apply_mask(payload, mask)))
                )
            elif n < _SPLIT_AT:
                self._out.append(encode_frame(first & 0x0F, payload, mask=mask))
            else:
                self._out += (encode_frame(first & 0x0F, b"", mask=mask, length=n), apply_mask(payload, mask))
        elif n < 126:
            self._out.append(_SMALL_HEADERS[first][n] + payload)
        elif n < _SPLIT_AT:
            self._out.append(encode_frame(first & 0x0F, payload))
        else:
            # bytes(): the caller may change a bytearray once send_*() has returned.
            self._out += (encode_frame(first & 0x0F, b"", length=n), bytes(payload))

    def _check_open(self) -> None:
        if self.state is not State.OPEN:
            raise InvalidState(f"cannot send in state {self.state.name}")

    def _send_data(self, opcode: int, data: bytes | bytearray | memoryview, fin: bool) -> None:
        self._check_open()
        if opcode:
            if self._send_opcode:
                raise InvalidState("a fragmented message is still being sent")
            compressed = self._compress
            self._send_compressed = compressed
        else:
            if not self._send_opcode:
                raise InvalidState("no fragmented message to continue")
            compressed = self._send_compressed
        if compressed:
            assert self._deflate is not None
            data = self._deflate.compress(data, fin=fin)
        self._out.append(self._frame(opcode, data, fin, compressed and opcode != 0))
        self._send_opcode = 0 if fin else (opcode or self._send_opcode)

    def send_text(self, data: str | bytes, *, fin: bool = True) -> None:
        """Send a text message, or its first fragment when fin is False.

        Args:
            data: the text; bytes are sent as they are and must be UTF-8.
            fin: False to continue the message with send_continuation().

        Raises:
            InvalidState: if the connection is not OPEN or a fragmented message is unfinished.
        """
        payload = data.encode() if isinstance(data, str) else data
        if fin and self.state is State.OPEN and not self._send_opcode and not self._compress:
            self._encode_whole(0x81, payload)
        else:
            self._send_data(1, payload, fin)

    def send_binary(self, data: bytes | bytearray | memoryview, *, fin: bool = True) -> None:
        """Send a binary message, or its first fragment when fin is False.

        Raises:
            InvalidState: if the connection is not OPEN or a fragmented message is unfinished.
        """
        if fin and self.state is State.OPEN and not self._send_opcode and not self._compress:
            self._encode_whole(0x82, data)
        else:
            self._send_data(2, data, fin)

    def send_continuation(self, data: str | bytes | bytearray | memoryview, *, fin: bool) -> None:
        """Send the next fragment of the message started with fin=False.

        Raises:
            InvalidState: if no fragmented message is being sent.
        """
        self._send_data(0, data.encode() if isinstance(data, str) else data, fin)

    def send_ping(self, payload: bytes = b"") -> None:
        """Send a Ping frame.

        Raises:
            ValueError: if the payload is over 125 bytes.
            InvalidState: if the connection is not OPEN.
        """
        if len(payload) > _CONTROL_MAX:
            raise ValueError(f"ping payload of {len(payload)} bytes, more than 125")
        self._check_open()
        self._out.append(self._frame(0x9, payload))

    def send_pong(self, payload: bytes = b"") -> None:
        """Send an unsolicited Pong frame (a heartbeat, RFC 6455 §5.5.3).

        Raises:
            ValueError: if the payload is over 125 bytes.
            InvalidState: if the connection is not OPEN.
        """
        if len(payload) > _CONTROL_MAX:
            raise ValueError(f"pong payload of {len(payload)} bytes, more than 125")
        self._check_open()
        self._out.append(self._frame(0xA, payload))

    def send_close(self, code: int | None = 1000, reason: str = "") -> None:
        """Start the closing handshake (RFC 6455 §7.1.2).

        Args:
            code: the close code, or None to send a Close frame without payload.
            reason: at most 123 bytes of UTF-8.

        Raises:
            ValueError: if the code may not be sent or the reason is too long.
            InvalidState: if the connection is not OPEN.
        """
        payload = encode_close(code, reason)
        self._check_open()
        self._out.append(self._frame(0x8, payload))
        self.close_sent = (code if code is not None else 1005, reason)
        if self.close_rcvd is None:
            self.close_rcvd_then_sent = False
            self.state = State.CLOSING
        else:
            self.state = State.CLOSED
            self._stopped = True

    def acknowledge_close(self) -> None:
        """Answer the peer's Close frame by echoing its code (RFC 6455 §5.5.1).

        A `CloseReceived` event leaves an OPEN connection OPEN so that answers to
        the messages before it can still be sent; call this (or `send_close()`)
        then. Does nothing when no Close is waiting for an answer.
        """
        if self.close_rcvd is not None and self.state is State.OPEN:
            code = self.close_rcvd[0]
            self.send_close(None if code == 1005 else code)

    def fail(self, code: int | None = None, reason: str = "") -> None:
        """Fail the connection (RFC 6455 §7.1.7): send a Close frame unless one
        was sent, and move to CLOSED; the front end then closes the transport.

        Args:
            code: the close code; by default the one of `error`, else 1011.
            reason: the close reason; by default the message of `error`.
        """
        if code is None:
            code = self.error.close_code if self.error is not None else 1011
            if not reason and self.error is not None:
                reason = str(self.error)
        if self.state is State.OPEN:
            data = reason.encode()
            if len(data) > 123:
                reason = data[:120].decode(errors="ignore") + "..."
            self._out.append(self._frame(0x8, encode_close(code, reason)))
            self.close_sent = (code, reason)
            if self.close_rcvd is None:
                self.close_rcvd_then_sent = False
        self.state = State.CLOSED
        self._stopped = True
        if self.error is None:
            self.error = ProtocolError(reason or "connection failed", code)
        self._stopped = True

    # -------------------------------------------------------------- handshake

    def _receive_handshake(self, data: bytes) -> None:  # pragma: no cover - overridden
        raise InvalidState("no handshake in this role")


class _HeadReader:
    """Collects an HTTP head of bounded size from a byte stream."""

    __slots__ = ("buf", "max_size")

    def __init__(self, max_size: int) -> None:
        self.buf = b""
        self.max_size = max_size

    def feed(self, data: bytes) -> tuple[bytes, bytes] | None:
        """Return (head without CRLF CRLF, bytes after it) once complete.

        Raises:
            HandshakeError: status 431 when the head is over max_size.
        """
        start = max(0, len(self.buf) - 3)
        self.buf += data
        at = self.buf.find(b"\r\n\r\n", start)
        if at < 0:
            if len(self.buf) > self.max_size:
                raise HandshakeError(f"HTTP head over {self.max_size} bytes", status=431)
            return None
        if at > self.max_size:
            raise HandshakeError(f"HTTP head over {self.max_size} bytes", status=431)
        head, rest = self.buf[:at], self.buf[at + 4 :]
        self.buf = b""
        return head, rest


class ClientConnection(Connection):
    """The client side, from the handshake request on.

    The request is queued at construction: write `data_to_send()` first.

    Args:
        host: the Host header value, e.g. "example.com:8080".
        path: the request target, e.g. "/rpc".
        origin: an Origin header value, or None.
        subprotocols: subprotocols to offer, in order of preference.
        headers: more request headers (for example Authorization).
        deflate: permessage-deflate parameters to offer, or None for no compression.
        max_head_size: the largest response head accepted.
        **kwargs: the limits of `Connection`.
    """

    __slots__ = (
        "_head",
        "_offer_deflate",
        "_offer_subprotocols",
        "_request",
        "_request_head",
        "_response",
        "_response_head",
        "key",
        "subprotocol",
    )

    def __init__(
        self,
        host: str,
        path: str = "/",
        *,
        origin: str | None = None,
        subprotocols: Sequence[str] = (),
        headers: Sequence[tuple[str, str]] = (),
        deflate: _deflate.DeflateParams | None = None,
        max_head_size: int = 16384,
        max_message_size: int | None = 2**20,
        max_frame_size: int | None = None,
    ) -> None:
        super().__init__(
            is_client=True,
            max_message_size=max_message_size,
            max_frame_size=max_frame_size,
            state=State.CONNECTING,
        )
        self.key = base64.b64encode(os.urandom(16)).decode("ascii")
        self.subprotocol: str | None = None
        # The handshake is kept as the bytes of its heads (a fraction of the parsed
        # objects' size, for thousands of idle connections) and parsed when asked for.
        self._response: Response | None = None
        self._response_head = b""
        self._offer_deflate = deflate
        self._offer_subprotocols = tuple(subprotocols)  # both needed until the handshake ends
        self._head: _HeadReader | None = _HeadReader(max_head_size)
        hdrs = Headers(
            [
                ("Host", host),
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", self.key),
                ("Sec-WebSocket-Version", "13"),
            ]
        )
        if origin is not None:
            hdrs.add("Origin", origin)
        if subprotocols:
            hdrs.add("Sec-WebSocket-Protocol", ", ".join(subprotocols))
        if deflate is not None:
            hdrs.add("Sec-WebSocket-Extensions", deflate.offer())
        for name, value in headers:
            hdrs.add(name, value)
        request = Request(path, hdrs)
        head = build_request(request)
        self._out.append(head)
        # Parsing gives back an equal request unless, say, a header value has spaces around it.
        try:
            exact = parse_request(head[:-4]) == request
        except HandshakeError:
            exact = False
        self._request: Request | None = None if exact else request
        self._request_head = head if exact else b""

    @property
    def request(self) -> Request | None:
        """The handshake request sent (`Request`)."""
        if self._request is None and self._request_head:
            self._request = parse_request(self._request_head[:-4])
        return self._request

    @request.setter
    def request(self, value: Request | None) -> None:
        self._request = value
        self._request_head = b""

    @property
    def response(self) -> Response | None:
        """The server's 101 response once the handshake succeeded, else None."""
        if self._response is None and self._response_head:
            self._response = parse_response(self._response_head)
        return self._response

    @response.setter
    def response(self, value: Response | None) -> None:
        self._response = value
        self._response_head = b""

    def _receive_handshake(self, data: bytes) -> None:
        assert self._head is not None
        try:
            got = self._head.feed(data)
            if got is None:
                return
            head, rest = got
            response = parse_response(head)
            if response.status != 101:
                raise HandshakeError(
                    f"server rejected the WebSocket handshake with HTTP {response.status}",
                    status=response.status,
                    headers=list(response.headers),
                    body=rest,
                )
            try:
                self._check_response(response)
            except HandshakeError as exc:
                raise HandshakeError(str(exc), status=101, headers=list(response.headers)) from exc
        except HandshakeError as exc:
            self.handshake_error = exc
            self.state = State.CLOSED
            self._stopped = True
            self._end_handshake()
            return
        self._response_head = head
        self._end_handshake()
        self.state = State.OPEN
        self._events.append(HandshakeComplete(response))
        if rest:
            self.receive_data(rest)

    def _end_handshake(self) -> None:
        """Forget what only the handshake needed."""
        self._head = None
        self._offer_subprotocols = ()

    def _check_response(self, response: Response) -> None:
        """Validate a 101 answer (RFC 6455 §4.1, client steps 1-6).

        Raises:
            HandshakeError: the caller sets its status to 101 and adds the headers.
        """
        h = response.headers
        if "websocket" not in (t.lower() for t in parse_token_list(h.get_all("Upgrade"))):
            raise HandshakeError("response has no Upgrade: websocket")
        if "upgrade" not in (t.lower() for t in parse_token_list(h.get_all("Connection"))):
            raise HandshakeError("response has no Connection: Upgrade")
        accept = h.get_all("Sec-WebSocket-Accept")
        if accept != [accept_key(self.key)]:
            raise HandshakeError(f"Sec-WebSocket-Accept {accept!r} does not match the key")
        protocols = parse_token_list(h.get_all("Sec-WebSocket-Protocol"))
        if len(protocols) > 1:
            raise HandshakeError("server selected more than one subprotocol")
        if protocols:
            if protocols[0] not in self._offer_subprotocols:
                raise HandshakeError(f"server selected subprotocol {protocols[0]!r}, which was not offered")
            self.subprotocol = protocols[0]
        extensions = parse_extension_header(h.get_all("Sec-WebSocket-Extensions"))
        for name, params in extensions:
            if name != _deflate.NAME or self._offer_deflate is None or self.deflate_params is not None:
                raise HandshakeError(f"server accepted extension {name!r}, which was not offered")
            self._set_deflate(_deflate.DeflateParams.from_response(self._offer_deflate, params))


class ServerConnection(Connection):
    """The server side, from the handshake request on.

    Feed it bytes until a `RequestReceived` event arrives, then call
    `accept()` or `reject()`. A server that parsed the request itself creates
    the connection and calls `accept(request)` at once.

    Args:
        subprotocols: subprotocols this server speaks, in its order of preference.
        deflate: permessage-deflate constraints to accept offers with, or None
            to decline compression.
        max_head_size: the largest request head accepted (431 beyond).
        **kwargs: the limits of `Connection`.
    """

    __slots__ = (
        "_accept_deflate",
        "_early",
        "_head",
        "request",
        "response",
        "subprotocol",
        "subprotocols",
    )

    def __init__(
        self,
        *,
        subprotocols: Sequence[str] = (),
        deflate: _deflate.DeflateParams | None = None,
        max_head_size: int = 16384,
        max_message_size: int | None = 2**20,
        max_frame_size: int | None = None,
    ) -> None:
        super().__init__(
            is_client=False,
            max_message_size=max_message_size,
            max_frame_size=max_frame_size,
            state=State.CONNECTING,
        )
        self.subprotocols = list(subprotocols)
        self.subprotocol: str | None = None
        self.request: Request | None = None
        self.response: Response | None = None
        self._accept_deflate = deflate
        self._head: _HeadReader | None = _HeadReader(max_head_size)
        self._early = b""

    def _receive_handshake(self, data: bytes) -> None:
        if self._head is None:  # request received, accept() pending
            self._early += data
            if len(self._early) > 65536:
                self.handshake_error = HandshakeError("data sent before the handshake completed")
                self.state = State.CLOSED
                self._stopped = True
            return
        try:
            got = self._head.feed(data)
            if got is None:
                return
            head, self._early = got
            request = parse_request(head)
        except HandshakeError as exc:
            self.reject(exc.status, str(exc))
            self.handshake_error = exc
            return
        self._head = None
        self.request = request
        self._events.append(RequestReceived(request))

    def accept(
        self,
        request: Request,
        *,
        headers: Sequence[tuple[str, str]] = (),
        subprotocol: str | None = None,
    ) -> None:
        """Validate the request and answer 101 (RFC 6455 §4.2.2).

        Args:
            request: the request, from `RequestReceived` or parsed elsewhere.
            headers: more response headers.
            subprotocol: the subprotocol to select; by default the first of
                this server's `subprotocols` that the client offered.

        Raises:
            HandshakeError: if the request is not a valid WebSocket upgrade; an
                error response is then queued and the connection is CLOSED.
            InvalidState: if the handshake was already answered.
        """
        if self.state is not State.CONNECTING:
            raise InvalidState("the handshake was already answered")
        self.request = request
        try:
            response_headers = self._check_request(request, subprotocol)
        except HandshakeError as exc:
            self.reject(exc.status, str(exc), headers=exc.headers)
            self.handshake_error = exc
            raise
        for name, value in headers:
            response_headers.add(name, value)
        self._head = None
        self.state = State.OPEN
        self.response = Response(101, response_headers)
        self._out.append(build_response(self.response))
        if self._early:
            early, self._early = self._early, b""
            self.receive_data(early)

    def _check_request(self, request: Request, subprotocol: str | None) -> Headers:
        h = request.headers
        if request.method != "GET":
            raise HandshakeError(
                f"method {request.method} is not GET", status=405, headers=[("Allow", "GET")]
            )
        if "upgrade" not in (t.lower() for t in parse_token_list(h.get_all("Connection"))):
            raise HandshakeError(
                "request has no Connection: Upgrade",
                status=426,
                headers=[("Upgrade", "websocket"), ("Connection", "Upgrade")],
            )
        if "websocket" not in (t.lower() for t in parse_token_list(h.get_all("Upgrade"))):
            raise HandshakeError(
                "request has no Upgrade: websocket",
                status=426,
                headers=[("Upgrade", "websocket"), ("Connection", "Upgrade")],
            )
        if h.get_all("Sec-WebSocket-Version") != ["13"]:
            raise HandshakeError(
                "unsupported Sec-WebSocket-Version", status=426, headers=[("Sec-WebSocket-Version", "13")]
            )
        keys = h.get_all("Sec-WebSocket-Key")
        if len(keys) != 1 or not is_valid_key(keys[0]):
            raise HandshakeError("missing or invalid Sec-WebSocket-Key")
        if h.get("Host") is None:
            raise HandshakeError("request has no Host header")
        out = Headers(
            [
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Accept", accept_key(keys[0])),
            ]
        )
        offered = parse_token_list(h.get_all("Sec-WebSocket-Protocol"))
        if subprotocol is None:
            subprotocol = next((p for p in self.subprotocols if p in offered), None)
        elif subprotocol not in offered:
            raise ValueError(f"subprotocol {subprotocol!r} was not offered")
        if subprotocol is not None:
            out.add("Sec-WebSocket-Protocol", subprotocol)
            self.subprotocol = subprotocol
        if self._accept_deflate is not None:
            try:
                extensions = parse_extension_header(h.get_all("Sec-WebSocket-Extensions"))
            except HandshakeError:
                extensions = []  # a malformed offer is declined, not fatal
            offers = [p for n, p in extensions if n == _deflate.NAME]
            params = _deflate.negotiate(self._accept_deflate, offers)
            if params is not None:
                self._set_deflate(params)
                out.add("Sec-WebSocket-Extensions", params.response())
        return out

    def reject(
        self,
        status: int,
        body: str | bytes = "",
        *,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Refuse the handshake with an HTTP error; the connection is then CLOSED.

        Raises:
            InvalidState: if the handshake was already answered.
        """
        if self.state is not State.CONNECTING:
            raise InvalidState("the handshake was already answered")
        data = body.encode() if isinstance(body, str) else body
        hdrs = Headers(headers)
        if "Content-Type" not in hdrs:
            hdrs.add("Content-Type", "text/plain; charset=utf-8")
        hdrs.add("Content-Length", str(len(data)))
        hdrs.add("Connection", "close")
        self.response = Response(status, hdrs, body=data)
        self._out.append(build_response(self.response))
        self.state = State.CLOSED
        self._stopped = True
