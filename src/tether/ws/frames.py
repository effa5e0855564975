"""WebSocket frame wire format (RFC 6455 §5): pure functions, no state.

Decoding of incoming frames is incremental and lives in `tether.ws.protocol`;
this module holds what both directions share: opcodes, the header encoder,
masking and the close-frame payload.
"""

from __future__ import annotations

import enum
import os
import struct
from collections.abc import Callable, Sequence
from typing import Any

from tether.errors import InvalidUtf8, ProtocolError

__all__ = [
    "CLOSE_CODES_SENDABLE",
    "Opcode",
    "apply_mask",
    "decode_close",
    "encode_close",
    "encode_frame",
    "is_valid_close_code",
    "join_mask",
]


class Opcode(enum.IntEnum):
    """Frame opcodes (RFC 6455 §5.2)."""

    CONT = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


DATA_OPCODES = frozenset({0x0, 0x1, 0x2})
CONTROL_OPCODES = frozenset({0x8, 0x9, 0xA})

_pack_h16 = struct.Struct("!BBH").pack
_pack_h64 = struct.Struct("!BBQ").pack


def encode_frame(
    opcode: int,
    payload: bytes | bytearray | memoryview,
    *,
    fin: bool = True,
    rsv1: bool = False,
    mask: bytes | None = None,
    length: int | None = None,
) -> bytes:
    """Encode one frame (RFC 6455 §5.2).

    Args:
        opcode: the frame's opcode.
        payload: the payload, not yet masked.
        fin: whether this is the last frame of its message.
        rsv1: the "per-message compressed" bit (RFC 7692 §6).
        mask: four bytes to mask the payload with (clients must, §5.3), or None.
        length: the payload length to announce, when payload is b"" because
            the caller sends the (masked) payload itself after the header.

    Returns:
        The frame's bytes.
    """
    if length is None:
        length = len(payload)
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    mask_bit = 0x80 if mask is not None else 0
    if length < 126:
        header = bytes((first, mask_bit | length))
    elif length < 65536:
        header = _pack_h16(first, mask_bit | 126, length)
    else:
        header = _pack_h64(first, mask_bit | 127, length)
    if mask is None:
        return header + payload if length else header
    return header + mask + apply_mask(payload, mask)


def _apply_mask_py(data: bytes | bytearray | memoryview, mask: bytes, offset: int = 0) -> bytes:
    """XOR data with a four-byte mask (RFC 6455 §5.3); masking and unmasking alike.

    Args:
        data: the bytes to mask.
        mask: the four-byte masking key.
        offset: the position of data[0] within the frame payload, so a payload
            that arrives in pieces can be unmasked piece by piece.

    Returns:
        The masked bytes.
    """
    n = len(data)
    if n == 0:
        return b""
    if offset & 3:
        k = offset & 3
        mask = mask[k:] + mask[:k]
    if n < 1024:
        # One big-integer XOR runs in C and beats any per-byte loop in Python.
        key = mask * ((n >> 2) + 1)
        return (int.from_bytes(data, "little") ^ int.from_bytes(key[:n], "little")).to_bytes(n, "little")
    # Larger: each byte lane gets one constant XOR, which bytes.translate does in C
    # (about twice the big-integer speed at 1 MiB).
    out = bytearray(n)
    for lane in range(4):
        out[lane::4] = bytes(data[lane::4]).translate(_XOR_TABLES[mask[lane]])
    return bytes(out)


_XOR_TABLES = [bytes(i ^ k for i in range(256)) for k in range(256)]


def _join_mask_py(parts: Sequence[bytes | bytearray | memoryview], mask: bytes) -> bytes:
    """Concatenate the pieces of one masked payload and unmask it from position 0."""
    return apply_mask(b"".join(parts), mask)


#: Scans whole small data frames into events; None on the pure-Python path, where
#: tether.ws.protocol does it (the reference). See tether/_speedups_ws.c.
scan_frames: Callable[[bytes, int, bool, int, list[Any], type, type], int] | None = None
apply_mask = _apply_mask_py
join_mask: Callable[[Sequence[bytes | bytearray | memoryview], bytes], bytes] = _join_mask_py
#: True when the compiled accelerator (tether._speedups) is in use.
SPEEDUPS = False
if not os.environ.get("TETHER_NO_SPEEDUPS"):
    try:
        from tether import _speedups
    except ImportError:  # no compiler at install time: the pure-Python path
        pass
    else:
        SPEEDUPS = True
        apply_mask = _speedups.apply_mask
        join_mask = _speedups.join_mask
        scan_frames = _speedups.ws_scan


# RFC 6455 §7.4.1 and the IANA registry: 1012-1014 are registered since.
_VALID_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})
CLOSE_CODES_SENDABLE = _VALID_CODES


def is_valid_close_code(code: int) -> bool:
    """Whether a close code may appear in a Close frame (RFC 6455 §7.4)."""
    return code in _VALID_CODES or 3000 <= code <= 4999


def encode_close(code: int | None, reason: str = "") -> bytes:
    """Encode a Close frame's payload (RFC 6455 §5.5.1).

    Args:
        code: the close code, or None for an empty payload (then reason must be "").
        reason: the reason, at most 123 bytes in UTF-8.

    Raises:
        ValueError: if the code may not be sent or the reason is too long.
    """
    if code is None:
        if reason:
            raise ValueError("a close reason needs a close code")
        return b""
    if not is_valid_close_code(code):
        raise ValueError(f"close code {code} may not be sent")
    data = reason.encode()
    if len(data) > 123:
        raise ValueError(f"close reason is {len(data)} bytes, more than 123")
    return code.to_bytes(2, "big") + data


def decode_close(payload: bytes) -> tuple[int, str]:
    """Decode a Close frame's payload (RFC 6455 §5.5.1).

    Returns:
        (code, reason); (1005, "") for an empty payload (RFC 6455 §7.1.5).

    Raises:
        ProtocolError: if the payload is one byte long or the code is invalid.
        InvalidUtf8: if the reason is not UTF-8.
    """
    if not payload:
        return 1005, ""
    if len(payload) == 1:
        raise ProtocolError("close frame payload of 1 byte")
    code = int.from_bytes(payload[:2], "big")
    if not is_valid_close_code(code):
        raise ProtocolError(f"invalid close code {code}")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError as exc:
        raise InvalidUtf8("close reason is not valid UTF-8") from exc
    return code, reason
