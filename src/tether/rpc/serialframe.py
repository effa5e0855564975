"""Framing of RPC frames on a serial line (spec mgos-rpc.md §2.4): bytes in, frames out.

Theory of operation. The byte stream is cut at every delimiter: ``\\n`` (the current
framing, one frame per line) or ``\"\"\"`` (the older wrapping that mos still sends),
whichever comes first; ``\"\"\"`` never occurs in valid JSON, so a frame cannot hold it.
Each piece between two delimiters is one of:

- empty or whitespace only: the device answers ``\\n`` (mos counts these in its handshake);
- exactly 0x04: the device answers ``\"\"\"`` 0x04 ``\"\"\"`` (mos's handshake);
- anything else: junk up to the first ``{`` is skipped, the frame runs to the last ``}``,
  and what follows it is comma-separated metadata whose first field is the CRC-32 (zlib,
  IEEE) of the frame's bytes in hex, e.g. ``{"id":5,"src":"mos","method":"Sys.GetInfo"}55dc4b48``.
  A wrong CRC drops the frame. As in the firmware, metadata shorter than 8 characters
  (after trailing whitespace such as the ``\\r`` of CRLF) is not taken for a CRC.

A device replies ``\\n`` + [``\"\"\"``] + frame + [8 lower-case hex CRC] + [``\"\"\"``] + ``\\n``:
the ``\"\"\"`` once the peer has used ``\"\"\"``, the CRC once the peer has sent a valid one;
both are sticky for the framer's life. A client (``client=True``) writes frames as mos
does, ``\\n\"\"\"{...}<crc>\"\"\"\\n``, which old and new firmware both read, and answers nothing.

A piece longer than ``max_line_size`` is dropped whole, however the bytes arrive; a frame
longer than ``max_frame_size`` too. XON (0x11) and XOFF (0x13) are removed from the input:
they cannot occur in valid JSON, and mos strips them the same way.

What was dropped is reported as `FrameDropped` events, for logging; the byte stream goes
on with the next piece.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

__all__ = [
    "EOF_FRAME",
    "MAX_FRAME_SIZE",
    "Event",
    "FrameDropped",
    "FrameReceived",
    "SerialFramer",
    "crc32_hex",
    "encode_frame",
    "split_metadata",
]

#: The default limit on a frame's size, ``rpc.max_frame_size`` (§5.5).
MAX_FRAME_SIZE = 4096
#: Bytes a line may hold beyond the frame: junk before it, CRC and metadata after it.
LINE_SLACK = 64
#: The handshake frame mos sends and the device echoes (§2.4).
EOF_FRAME = b"\x04"

_WRAP = b'"""'
_NEWLINE = b"\n"
_XON_XOFF = b"\x11\x13"
_HEX = re.compile(rb"(?:0[xX])?([0-9a-fA-F]+)")
_WHITESPACE = b" \t\n\r\x0b\x0c"  # C isspace() in the "C" locale, as the firmware checks


@dataclass(frozen=True)
class FrameReceived:
    """A frame arrived: the JSON text from its ``{`` to its ``}``, metadata removed."""

    frame: bytes


@dataclass(frozen=True)
class FrameDropped:
    """A piece of the stream was dropped: a wrong CRC, no JSON object, or over a limit.

    Attributes:
        reason: what was wrong, for the log.
        data: the start of the piece (at most 80 bytes), for the log.
    """

    reason: str
    data: bytes = b""


Event = FrameReceived | FrameDropped


def crc32_hex(frame: bytes) -> str:
    """The CRC-32 (zlib/IEEE 802.3) of frame as 8 lower-case hex digits (§2.4)."""
    return f"{zlib.crc32(frame) & 0xFFFFFFFF:08x}"


def encode_frame(frame: bytes, *, wrap: bool, crc: bool) -> bytes:
    """Frame bytes for the line: ``\\n`` [``\"\"\"``] frame [crc] [``\"\"\"``] ``\\n`` (§2.4).

    Raises:
        ValueError: if frame holds ``\"\"\"`` or a line break (valid compact JSON holds neither).
    """
    if _WRAP in frame or _NEWLINE in frame:
        raise ValueError('a serial frame must not hold \'"""\' or a line break')
    parts = [_NEWLINE]
    if wrap:
        parts.append(_WRAP)
    parts.append(frame)
    if crc:
        parts.append(crc32_hex(frame).encode("ascii"))
    if wrap:
        parts.append(_WRAP)
    parts.append(_NEWLINE)
    return b"".join(parts)


def split_metadata(piece: bytes) -> tuple[bytes, bytes] | None:
    """Split a piece into the frame (first ``{`` to last ``}``) and the metadata after it.

    Junk before the frame is skipped; the metadata has surrounding whitespace removed.

    Returns:
        (frame, metadata), or None when the piece holds no ``{`` ... ``}``.
    """
    start = piece.find(b"{")
    end = piece.rfind(b"}")
    if start < 0 or end < start:
        return None
    return piece[start : end + 1], piece[end + 1 :].strip(_WHITESPACE)


def _crc_matches(frame: bytes, metadata: bytes) -> bool:
    # Firmware: sscanf("%x") on the metadata, i.e. the leading hex digits of its first field.
    match = _HEX.match(metadata)
    return match is not None and int(match.group(1), 16) == zlib.crc32(frame) & 0xFFFFFFFF


class SerialFramer:
    """Turns a serial byte stream into frames and frames into bytes, without I/O.

    Args:
        client: False for the device side (answers empty and 0x04 pieces, replies in the
            peer's style), True for a client (writes frames as mos does, answers nothing).
        max_frame_size: the largest frame passed on, in bytes.
        max_line_size: the longest piece between delimiters; default
            ``max_frame_size + 64`` (room for junk, CRC and metadata).

    Raises:
        ValueError: if a limit is below 1.
    """

    def __init__(
        self, *, client: bool = False, max_frame_size: int = MAX_FRAME_SIZE, max_line_size: int | None = None
    ) -> None:
        if max_frame_size < 1:
            raise ValueError(f"max_frame_size must be at least 1, not {max_frame_size}")
        if max_line_size is None:
            max_line_size = max_frame_size + LINE_SLACK
        if max_line_size < 1:
            raise ValueError(f"max_line_size must be at least 1, not {max_line_size}")
        self.client = client
        self.max_frame_size = max_frame_size
        self.max_line_size = max_line_size
        #: The peer has used the ``\"\"\"`` wrapping: replies are wrapped too (sticky).
        self.wrapped = False
        #: The peer has sent a valid CRC: replies carry one too (sticky).
        self.crc = False
        self._buffer = bytearray()
        self._discarding = False  # inside a piece already known to be too long
        self._events: list[Event] = []
        self._outgoing = bytearray()

    def __repr__(self) -> str:
        role = "client" if self.client else "device"
        return f"SerialFramer({role}, wrapped={self.wrapped}, crc={self.crc}, buffered={len(self._buffer)})"

    # Bytes in.

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Take bytes read from the line; read what they made with `events_received`."""
        self._buffer += bytes(data).translate(None, _XON_XOFF)
        while True:
            newline = self._buffer.find(_NEWLINE)
            wrap = self._buffer.find(_WRAP)
            if newline < 0 and wrap < 0:
                break
            if wrap >= 0 and (newline < 0 or wrap < newline):
                end, size = wrap, len(_WRAP)
                self.wrapped = True
            else:
                end, size = newline, len(_NEWLINE)
            piece = bytes(self._buffer[:end])
            del self._buffer[: end + size]
            if self._discarding:
                self._discarding = False  # the rest of a piece already reported
            elif len(piece) > self.max_line_size:
                self._drop_long(piece)
            else:
                self._piece(piece)
        # A trailing '"' or '""' may be the start of the delimiter that ends the piece.
        quotes = min(len(self._buffer) - len(self._buffer.rstrip(b'"')), len(_WRAP) - 1)
        if not self._discarding and len(self._buffer) - quotes > self.max_line_size:
            self._drop_long(bytes(self._buffer))
            self._discarding = True
        if self._discarding:
            del self._buffer[: len(self._buffer) - quotes]

    def _piece(self, piece: bytes) -> None:
        if not piece.strip(_WHITESPACE):
            if not self.client:
                self._outgoing += _NEWLINE  # §2.4: an empty frame is answered with an empty frame
            return
        if piece == EOF_FRAME:
            if not self.client:
                self._outgoing += _WRAP + EOF_FRAME + _WRAP  # §2.4: mos's handshake
            return
        split = split_metadata(piece)
        if split is None:
            self._drop("no JSON object", piece)
            return
        frame, metadata = split
        if len(metadata) >= 8:  # shorter metadata is not a CRC (firmware: meta.len >= 8)
            if not _crc_matches(frame, metadata):
                self._drop(f"bad CRC {metadata[:16]!r}, frame's is {crc32_hex(frame)}", frame)
                return
            self.crc = True
        if len(frame) > self.max_frame_size:
            self._drop(f"frame of {len(frame)} bytes is over the limit of {self.max_frame_size}", frame)
            return
        self._events.append(FrameReceived(frame))

    def _drop(self, reason: str, data: bytes) -> None:
        self._events.append(FrameDropped(reason, data[:80]))

    def _drop_long(self, data: bytes) -> None:
        # The same event whether the piece arrived whole or the buffer outgrew the limit.
        self._drop(f"line over {self.max_line_size} bytes", data[: self.max_line_size + 1])

    def events_received(self) -> list[Event]:
        """What the bytes received so far made, in order, since the last call."""
        events, self._events = self._events, []
        return events

    # Frames out.

    def send_frame(self, frame: bytes) -> None:
        """Queue a frame; write `data_to_send` next.

        A device writes it in the peer's style (see `wrapped` and `crc`); a client as
        mos does, wrapped and with a CRC. Line breaks, which valid JSON holds only as
        whitespace, become spaces (a `RawJSON` result may hold some).

        Raises:
            ValueError: if frame holds ``\"\"\"`` (valid JSON never does).
        """
        frame = frame.replace(b"\r\n", b" ").replace(b"\n", b" ")
        if self.client:
            self._outgoing += encode_frame(frame, wrap=True, crc=True)
        else:
            self._outgoing += encode_frame(frame, wrap=self.wrapped, crc=self.crc)

    def data_to_send(self) -> bytes:
        """The bytes to write to the line, in order: answers and frames."""
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data
