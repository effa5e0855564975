"""Frame wire format (RFC 6455 §5): tether.ws.frames."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.errors import InvalidUtf8, ProtocolError
from tether.ws.frames import (
    CLOSE_CODES_SENDABLE,
    Opcode,
    apply_mask,
    decode_close,
    encode_close,
    encode_frame,
    is_valid_close_code,
)
from tether.ws.protocol import BinaryMessage, Connection, Event, Ping, Pong, TextMessage

CLOSE_CODES = json.loads((Path(__file__).parent.parent / "vectors" / "close_codes.json").read_text())
VALID_CODES = [code for code, _ in CLOSE_CODES["valid"]]
INVALID_CODES = [code for code, _ in CLOSE_CODES["invalid"]]

# (opcode, payload, fin, mask) of each frame on the wire.
FrameSpec = tuple[int, bytes, bool, bytes | None]


def assert_round_trip(specs: list[FrameSpec], wire: bytes, events: list[Event]) -> None:
    """encode_frame() gives wire, and a Connection reading wire gives events.

    The receiver is a server when the frames are masked, else a client. It reads wire
    whole, and again split into single bytes for the first 16 bytes (every header split).
    """
    assert b"".join(encode_frame(op, payload, fin=fin, mask=mask) for op, payload, fin, mask in specs) == wire
    is_client = specs[0][3] is None
    for pieces in ([wire], [wire[i : i + 1] for i in range(16)] + [wire[16:]]):
        conn = Connection(is_client=is_client)
        got: list[Event] = []
        for piece in pieces:
            conn.receive_data(piece)
            got += conn.events_received()
        assert conn.error is None
        assert got == events


RFC_MASK = bytes.fromhex("37fa213d")


class TestRfc6455Examples:
    """RFC 6455 §5.7, byte for byte."""

    def test_single_frame_unmasked_text(self) -> None:
        assert_round_trip(
            [(Opcode.TEXT, b"Hello", True, None)],
            bytes([0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F]),
            [TextMessage("Hello")],
        )

    def test_single_frame_masked_text(self) -> None:
        assert_round_trip(
            [(Opcode.TEXT, b"Hello", True, RFC_MASK)],
            bytes([0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58]),
            [TextMessage("Hello")],
        )

    def test_fragmented_unmasked_text(self) -> None:
        assert_round_trip(
            [(Opcode.TEXT, b"Hel", False, None), (Opcode.CONT, b"lo", True, None)],
            bytes([0x01, 0x03, 0x48, 0x65, 0x6C]) + bytes([0x80, 0x02, 0x6C, 0x6F]),
            [TextMessage("Hello")],
        )

    def test_unmasked_ping(self) -> None:
        assert_round_trip(
            [(Opcode.PING, b"Hello", True, None)],
            bytes([0x89, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F]),
            [Ping(b"Hello")],
        )

    def test_masked_pong(self) -> None:
        assert_round_trip(
            [(Opcode.PONG, b"Hello", True, RFC_MASK)],
            bytes([0x8A, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58]),
            [Pong(b"Hello")],
        )

    def test_256_bytes_binary(self) -> None:
        payload = bytes(range(256))
        assert_round_trip(
            [(Opcode.BINARY, payload, True, None)],
            bytes([0x82, 0x7E, 0x01, 0x00]) + payload,
            [BinaryMessage(payload)],
        )

    def test_64_kib_binary(self) -> None:
        payload = bytes(range(256)) * 256
        assert_round_trip(
            [(Opcode.BINARY, payload, True, None)],
            bytes([0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00]) + payload,
            [BinaryMessage(payload)],
        )


class TestEncodeFrame:
    @pytest.mark.parametrize(
        ("length", "header"),
        [
            (0, b"\x82\x00"),
            (125, b"\x82\x7d"),
            (126, b"\x82\x7e\x00\x7e"),
            (65535, b"\x82\x7e\xff\xff"),
            (65536, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
        ],
    )
    def test_length_encodings(self, length: int, header: bytes) -> None:
        # RFC 6455 §5.2: 7-bit, 16-bit and 64-bit payload lengths.
        payload = b"x" * length
        assert encode_frame(Opcode.BINARY, payload) == header + payload

    @pytest.mark.parametrize(
        ("length", "second_byte"), [(0, b"\x80"), (125, b"\xfd"), (126, b"\xfe"), (65536, b"\xff")]
    )
    def test_mask_bit_in_every_length_encoding(self, length: int, second_byte: bytes) -> None:
        assert encode_frame(Opcode.BINARY, b"x" * length, mask=b"\0\0\0\0")[1:2] == second_byte

    def test_first_byte_flags(self) -> None:
        assert encode_frame(Opcode.TEXT, b"", fin=False) == b"\x01\x00"
        assert encode_frame(Opcode.TEXT, b"", rsv1=True) == b"\xc1\x00"
        assert encode_frame(Opcode.CONT, b"", fin=True) == b"\x80\x00"
        assert encode_frame(Opcode.CLOSE, b"") == b"\x88\x00"

    def test_masked_empty_payload_carries_the_key(self) -> None:
        assert encode_frame(Opcode.PING, b"", mask=RFC_MASK) == b"\x89\x80" + RFC_MASK

    @pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
    def test_payload_types(self, kind: type) -> None:
        assert encode_frame(Opcode.BINARY, kind(b"abc")) == b"\x82\x03abc"
        assert encode_frame(Opcode.BINARY, kind(b"abc"), mask=b"\0\0\0\0") == b"\x82\x83\0\0\0\0abc"

    def test_opcodes(self) -> None:
        # RFC 6455 §5.2 / §11.8.
        assert {op.name: op.value for op in Opcode} == {
            "CONT": 0,
            "TEXT": 1,
            "BINARY": 2,
            "CLOSE": 8,
            "PING": 9,
            "PONG": 10,
        }


class TestApplyMask:
    def test_rfc_example(self) -> None:
        assert apply_mask(b"Hello", RFC_MASK) == bytes.fromhex("7f9f4d5158")

    @pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
    def test_empty_and_types(self, kind: type) -> None:
        assert apply_mask(kind(b""), RFC_MASK) == b""
        assert apply_mask(kind(b"Hello"), RFC_MASK) == bytes.fromhex("7f9f4d5158")

    def test_offset_rotates_the_key(self) -> None:
        assert apply_mask(b"ello", RFC_MASK, 1) == bytes.fromhex("9f4d5158")
        assert apply_mask(b"o", RFC_MASK, 4) == bytes.fromhex("58")

    @given(
        data=st.binary(max_size=64), mask=st.binary(min_size=4, max_size=4), cuts=st.lists(st.integers(0, 64))
    )
    def test_piecewise_equals_whole(self, data: bytes, mask: bytes, cuts: list[int]) -> None:
        points = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
        pieces = [apply_mask(data[a:b], mask, a) for a, b in pairwise(points)]
        assert b"".join(pieces) == apply_mask(data, mask)
        assert apply_mask(apply_mask(data, mask), mask) == data


class TestCloseCodes:
    @pytest.mark.parametrize("code", VALID_CODES)
    def test_valid(self, code: int) -> None:
        assert is_valid_close_code(code)
        assert decode_close(encode_close(code, "bye")) == (code, "bye")

    @pytest.mark.parametrize("code", INVALID_CODES)
    def test_invalid(self, code: int) -> None:
        assert not is_valid_close_code(code)
        with pytest.raises(ValueError, match=f"close code {code} may not be sent"):
            encode_close(code)
        with pytest.raises(ProtocolError) as info:
            decode_close(code.to_bytes(2, "big"))
        assert info.value.close_code == 1002

    def test_sendable_codes_are_valid(self) -> None:
        assert all(is_valid_close_code(code) for code in CLOSE_CODES_SENDABLE)
        assert {1000, 1001, 1011} <= CLOSE_CODES_SENDABLE


class TestClosePayload:
    def test_encode(self) -> None:
        assert encode_close(1000) == b"\x03\xe8"
        assert encode_close(1001, "bye") == b"\x03\xe9bye"
        assert encode_close(None) == b""

    def test_reason_needs_a_code(self) -> None:
        with pytest.raises(ValueError, match="needs a close code"):
            encode_close(None, "bye")

    def test_reason_length_is_counted_in_bytes(self) -> None:
        # RFC 6455 §5.5: control payloads are at most 125 bytes, 2 of them the code.
        assert len(encode_close(1000, "x" * 123)) == 125
        with pytest.raises(ValueError, match="124 bytes"):
            encode_close(1000, "x" * 124)
        with pytest.raises(ValueError, match="124 bytes"):
            encode_close(1000, "é" * 62)

    def test_decode_empty_is_1005(self) -> None:
        # RFC 6455 §7.1.5.
        assert decode_close(b"") == (1005, "")

    def test_decode_one_byte(self) -> None:
        with pytest.raises(ProtocolError, match="1 byte") as info:
            decode_close(b"\x03")
        assert info.value.close_code == 1002

    def test_decode_unicode_reason(self) -> None:
        assert decode_close(b"\x03\xe8" + "ça va".encode()) == (1000, "ça va")

    def test_decode_invalid_utf8_reason(self) -> None:
        with pytest.raises(InvalidUtf8) as info:
            decode_close(b"\x03\xe8\xff")
        assert info.value.close_code == 1007
