"""The WebSocket state machine (RFC 6455, RFC 7692): tether.ws.protocol.

Every test drives cores with bytes; client and server cores are wired back to back
without sockets.
"""

from __future__ import annotations

import base64
import contextlib
import zlib
from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.errors import HandshakeError, InvalidState, InvalidUtf8, PayloadTooBig, ProtocolError
from tether.ws.deflate import DeflateParams
from tether.ws.frames import Opcode, decode_close, encode_frame
from tether.ws.handshake import Headers, Request, accept_key, build_request, parse_request, parse_response
from tether.ws.protocol import (
    BinaryMessage,
    ClientConnection,
    CloseReceived,
    Connection,
    Event,
    HandshakeComplete,
    Ping,
    Pong,
    RequestReceived,
    ServerConnection,
    State,
    TextMessage,
)

MASK = bytes.fromhex("37fa213d")
DATA_EVENTS = (TextMessage, BinaryMessage, Ping, Pong, CloseReceived)


# ---------------------------------------------------------------- helpers


def from_client(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv1: bool = False) -> bytes:
    """A frame as a client sends it: masked (RFC 6455 §5.3)."""
    return encode_frame(opcode, payload, fin=fin, rsv1=rsv1, mask=MASK)


def from_server(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv1: bool = False) -> bytes:
    """A frame as a server sends it: unmasked."""
    return encode_frame(opcode, payload, fin=fin, rsv1=rsv1)


def with_first_byte(frame: bytes, first: int) -> bytes:
    return bytes([first]) + frame[1:]


def feed(conn: Connection, *chunks: bytes) -> list[Event]:
    for chunk in chunks:
        conn.receive_data(chunk)
    return conn.events_received()


def pump(src: Connection, dst: Connection) -> list[Event]:
    """Move what src wrote into dst; return dst's events."""
    return feed(dst, src.data_to_send())


class WireFrame(NamedTuple):
    fin: bool
    rsv1: bool
    opcode: int
    masked: bool
    payload: bytes


def split_frames(data: bytes) -> list[WireFrame]:
    """Decode complete frames with a decoder independent of the one under test."""
    frames = []
    pos = 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        pos += 2
        length = b1 & 0x7F
        if length == 126:
            length = int.from_bytes(data[pos : pos + 2], "big")
            pos += 2
        elif length == 127:
            length = int.from_bytes(data[pos : pos + 8], "big")
            pos += 8
        key = b""
        if b1 & 0x80:
            key = data[pos : pos + 4]
            pos += 4
        payload = data[pos : pos + length]
        pos += length
        if key:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        frames.append(WireFrame(bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0F, bool(key), payload))
    assert pos == len(data)
    return frames


def sent_close(conn: Connection) -> tuple[int, str]:
    """The code and reason of the one Close frame conn wrote."""
    frames = split_frames(conn.data_to_send())
    assert [f.opcode for f in frames] == [Opcode.CLOSE]
    assert frames[0].masked is conn.is_client
    return decode_close(frames[0].payload)


def open_pair(deflate: DeflateParams | None = None) -> tuple[Connection, Connection]:
    client = Connection(is_client=True, deflate=deflate)
    server = Connection(is_client=False, deflate=deflate)
    return client, server


def assert_fails(conn: Connection, data: bytes, close_code: int, error_type: type = ProtocolError) -> None:
    """The peer broke the protocol: error is set, nothing is sent until fail()."""
    conn.receive_data(data)
    assert conn.error is not None
    assert isinstance(conn.error, error_type), conn.error
    assert conn.error.close_code == close_code
    assert conn.data_to_send() == b""
    # Input after the error is ignored.
    frame = from_client(Opcode.TEXT, b"late") if not conn.is_client else from_server(Opcode.TEXT, b"late")
    assert feed(conn, frame) == []
    conn.fail()
    assert conn.state is State.CLOSED
    assert conn.close_expected()
    if conn.close_rcvd is None:
        assert sent_close(conn)[0] == close_code


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c for c in cuts if 0 <= c <= len(data))})
    return [data[a:b] for a, b in pairwise(points)]


def retained_bytes(obj: object) -> int:
    """Bytes held in buffers reachable from obj's attributes (lists, bytes, str, memoryviews)."""
    seen: set[int] = set()

    def walk(value: object) -> int:
        if id(value) in seen:
            return 0
        seen.add(id(value))
        if isinstance(value, (bytes, bytearray, str)):
            return len(value)
        if isinstance(value, memoryview):
            return walk(value.obj)
        if isinstance(value, (list, tuple, set, frozenset)):
            return sum(walk(v) for v in value)
        if isinstance(value, dict):
            return sum(walk(v) for v in value.values())
        if type(value).__module__.startswith("tether."):
            names = list(getattr(value, "__dict__", {}))
            for cls in type(value).__mro__:
                names += getattr(cls, "__slots__", ())
            return sum(walk(getattr(value, n, None)) for n in names)
        return 0

    return walk(obj)


def raw_deflate(data: bytes) -> bytes:
    """data compressed as one permessage-deflate message (RFC 7692 §7.2.1)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


# ------------------------------------------------------------ data frames


class TestMessages:
    def test_text_and_binary(self) -> None:
        server = Connection(is_client=False)
        events = feed(
            server, from_client(Opcode.TEXT, "héllo".encode()), from_client(Opcode.BINARY, b"\x00\xff")
        )
        assert events == [TextMessage("héllo"), BinaryMessage(b"\x00\xff")]

    def test_empty_messages(self) -> None:
        client = Connection(is_client=True)
        assert feed(client, from_server(Opcode.TEXT), from_server(Opcode.BINARY)) == [
            TextMessage(""),
            BinaryMessage(b""),
        ]

    @pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
    def test_input_types(self, kind: type) -> None:
        client = Connection(is_client=True)
        assert feed(client, kind(from_server(Opcode.BINARY, b"abc"))) == [BinaryMessage(b"abc")]

    def test_byte_by_byte(self) -> None:
        wire = from_client(Opcode.TEXT, "κόσμε".encode()) + from_client(Opcode.BINARY, b"x" * 300)
        server = Connection(is_client=False)
        events = feed(server, *(wire[i : i + 1] for i in range(len(wire))))
        assert events == [TextMessage("κόσμε"), BinaryMessage(b"x" * 300)]

    @pytest.mark.parametrize("length", [126, 70_000])
    def test_extended_length_header_byte_by_byte(self, length: int) -> None:
        wire = from_client(Opcode.BINARY, b"x" * length)
        server = Connection(is_client=False)
        events = feed(server, *(wire[i : i + 1] for i in range(14)), wire[14:])
        assert events == [BinaryMessage(b"x" * length)]

    def test_unmasked_payload_in_pieces(self) -> None:
        client = Connection(is_client=True)
        wire = from_server(Opcode.BINARY, b"0123456789")
        assert feed(client, wire[:2], wire[2:5], wire[5:]) == [BinaryMessage(b"0123456789")]

    def test_fragmented_with_control_frames_between(self) -> None:
        # RFC 6455 §5.4: control frames may be injected in the middle of a fragmented message.
        client = Connection(is_client=True)
        events = feed(
            client,
            from_server(Opcode.TEXT, b"\xce", fin=False),
            from_server(Opcode.PING, b"p"),
            from_server(Opcode.CONT, b"\xba", fin=False),
            from_server(Opcode.PONG, b"q"),
            from_server(Opcode.CONT, b"", fin=False),
            from_server(Opcode.CONT, b"!", fin=True),
        )
        assert events == [Ping(b"p"), Pong(b"q"), TextMessage("κ!")]

    def test_fragmented_binary(self) -> None:
        server = Connection(is_client=False)
        events = feed(
            server,
            from_client(Opcode.BINARY, b"", fin=False),
            from_client(Opcode.CONT, b"ab", fin=False),
            from_client(Opcode.CONT, b"", fin=False),
            from_client(Opcode.CONT, b"cd", fin=True),
            from_client(Opcode.BINARY, b"", fin=False),
            from_client(Opcode.CONT, b"ef", fin=True),
        )
        assert events == [BinaryMessage(b"abcd"), BinaryMessage(b"ef")]

    def test_messages_before_an_error_are_delivered(self) -> None:
        server = Connection(is_client=False)
        wire = (
            from_client(Opcode.PING, b"p")
            + from_client(Opcode.TEXT, b"ok")
            + from_client(Opcode.CONT, b"bad")
            + from_client(Opcode.TEXT, b"ignored")
        )
        assert feed(server, wire) == [Ping(b"p"), TextMessage("ok")]
        assert isinstance(server.error, ProtocolError)
        # The pong went out; the close waits for fail().
        assert [f.opcode for f in split_frames(server.data_to_send())] == [Opcode.PONG]
        server.fail()
        assert sent_close(server)[0] == 1002

    def test_data_to_send(self) -> None:
        client, _ = open_pair()
        assert client.data_to_send() == b""
        client.send_text("a")
        client.send_binary(b"b")
        frames = split_frames(client.data_to_send())
        assert [(f.opcode, f.payload, f.masked) for f in frames] == [(1, b"a", True), (2, b"b", True)]
        assert client.data_to_send() == b""

    @pytest.mark.parametrize("size", [125, 126, 65535, 65536, 200_000])
    @pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
    def test_every_header_size_both_ways(self, size: int, kind: type) -> None:
        # From 64 KiB on, the payload is queued apart from its header (no copy to
        # prepend it); data_to_send() still gives one whole frame.
        payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
        client, server = open_pair()
        for sender, receiver in ((client, server), (server, client)):
            data = kind(bytearray(payload))
            sender.send_binary(data)
            if kind is bytearray:
                data[0] ^= 0xFF  # changed after sending: what was sent stays
            sender.send_text("after")
            wire = sender.data_to_send()
            frames = split_frames(wire)
            assert [(f.opcode, f.payload, f.masked) for f in frames] == [
                (Opcode.BINARY, payload, sender.is_client),
                (Opcode.TEXT, b"after", sender.is_client),
            ]
            assert feed(receiver, wire) == [BinaryMessage(payload), TextMessage("after")]

    def test_server_does_not_mask(self) -> None:
        _, server = open_pair()
        server.send_text("a")
        assert server.data_to_send() == b"\x81\x01a"

    def test_fresh_mask_per_frame(self) -> None:
        # RFC 6455 §5.3: a new masking key for each frame; the pool refills past 1024 frames.
        client, server = open_pair()
        for _ in range(1100):
            client.send_ping(b"abcd")
        wire = client.data_to_send()
        masks = {wire[i + 2 : i + 6] for i in range(0, len(wire), 10)}
        assert len(masks) > 1
        assert feed(server, wire) == [Ping(b"abcd")] * 1100


class TestControlFrames:
    def test_ping_is_answered(self) -> None:
        # RFC 6455 §5.5.2: a Pong with the same payload.
        server = Connection(is_client=False)
        assert feed(server, from_client(Opcode.PING, b"hi")) == [Ping(b"hi")]
        assert server.data_to_send() == b"\x8a\x02hi"

    def test_client_pong_is_masked(self) -> None:
        client = Connection(is_client=True)
        assert feed(client, from_server(Opcode.PING, b"x" * 125)) == [Ping(b"x" * 125)]
        assert split_frames(client.data_to_send()) == [WireFrame(True, False, Opcode.PONG, True, b"x" * 125)]

    def test_no_pong_after_close_sent(self) -> None:
        server = Connection(is_client=False)
        server.send_close()
        server.data_to_send()
        assert feed(server, from_client(Opcode.PING, b"hi")) == [Ping(b"hi")]
        assert server.data_to_send() == b""

    def test_pong(self) -> None:
        client = Connection(is_client=True)
        assert feed(client, from_server(Opcode.PONG, b"")) == [Pong(b"")]
        assert client.data_to_send() == b""

    def test_send_ping_and_pong(self) -> None:
        _, server = open_pair()
        server.send_ping(b"a")
        server.send_pong(b"b")
        server.send_ping()
        assert server.data_to_send() == b"\x89\x01a\x8a\x01b\x89\x00"

    @pytest.mark.parametrize("method", ["send_ping", "send_pong"])
    def test_control_payload_limit(self, method: str) -> None:
        client, _ = open_pair()
        getattr(client, method)(b"x" * 125)
        with pytest.raises(ValueError, match="126 bytes"):
            getattr(client, method)(b"x" * 126)

    @pytest.mark.parametrize("opcode", [Opcode.CLOSE, Opcode.PING, Opcode.PONG])
    def test_control_frame_over_125_bytes(self, opcode: int) -> None:
        # RFC 6455 §5.5; refused from the header alone.
        server = Connection(is_client=False)
        assert_fails(server, from_client(opcode, b"\x03\xe8" + b"x" * 124)[:8], 1002)

    @pytest.mark.parametrize("opcode", [Opcode.CLOSE, Opcode.PING, Opcode.PONG])
    def test_fragmented_control_frame(self, opcode: int) -> None:
        client = Connection(is_client=True)
        assert_fails(client, from_server(opcode, b"", fin=False), 1002)


# ---------------------------------------------------------------- closing


class TestClosingHandshake:
    def test_client_starts(self) -> None:
        client, server = open_pair()
        client.send_close(1001, "going")
        assert client.state is State.CLOSING
        assert client.close_sent == (1001, "going")
        assert client.close_rcvd_then_sent is False
        assert pump(client, server) == [CloseReceived(1001, "going")]
        # The server may still answer earlier messages before its Close (RFC 6455 §5.5.1).
        assert server.state is State.OPEN
        assert server.data_to_send() == b""
        server.send_text("a last answer")
        server.acknowledge_close()
        assert server.state is State.CLOSED  # type: ignore[comparison-overlap]  # mypy keeps OPEN
        assert server.close_rcvd == (1001, "going")
        assert server.close_sent == (1001, "")
        assert server.close_rcvd_then_sent is True
        assert server.close_expected()  # RFC 6455 §7.1.1: the server closes TCP first
        server.acknowledge_close()  # only once
        with pytest.raises(InvalidState):
            server.send_text("too late")
        assert pump(server, client) == [TextMessage("a last answer"), CloseReceived(1001, "")]
        assert client.state is State.CLOSED  # type: ignore[comparison-overlap]  # mypy keeps CLOSING
        assert client.close_rcvd == (1001, "")
        assert not client.close_expected()  # the client waits for the server's FIN
        assert client.error is None and server.error is None

    def test_server_starts(self) -> None:
        client, server = open_pair()
        server.send_close(4000, "app")
        assert not server.close_expected()
        assert pump(server, client) == [CloseReceived(4000, "app")]
        client.acknowledge_close()
        assert client.state is State.CLOSED
        assert client.close_rcvd_then_sent is True
        assert not client.close_expected()
        assert pump(client, server) == [CloseReceived(4000, "")]
        assert server.state is State.CLOSED
        assert server.close_rcvd_then_sent is False
        assert server.close_expected()

    def test_simultaneous(self) -> None:
        client, server = open_pair()
        client.send_close(1000)
        server.send_close(1001)
        client_wire, server_wire = client.data_to_send(), server.data_to_send()
        assert feed(server, client_wire) == [CloseReceived(1000, "")]
        assert feed(client, server_wire) == [CloseReceived(1001, "")]
        assert client.data_to_send() == b"" and server.data_to_send() == b""
        assert client.state is State.CLOSED and server.state is State.CLOSED

    def test_empty_close_is_1005_and_echoed_empty(self) -> None:
        # RFC 6455 §7.1.5: no status code; §5.5.1: the echo has none either.
        client, server = open_pair()
        client.send_close(None)
        assert client.close_sent == (1005, "")
        assert pump(client, server) == [CloseReceived(1005, "")]
        server.acknowledge_close()
        assert split_frames(server.data_to_send()) == [WireFrame(True, False, Opcode.CLOSE, False, b"")]

    def test_messages_before_close_still_arrive_and_data_after_is_ignored(self) -> None:
        client, server = open_pair()
        server.send_text("last")
        server.send_close()
        wire = server.data_to_send() + from_server(Opcode.TEXT, b"after")
        assert feed(client, wire) == [TextMessage("last"), CloseReceived(1000, "")]
        assert feed(client, from_server(Opcode.TEXT, b"later")) == []

    def test_data_while_closing_is_delivered(self) -> None:
        # RFC 6455 §7.1.2: after sending Close, keep reading until the peer's Close.
        client, _ = open_pair()
        client.send_close()
        assert feed(client, from_server(Opcode.TEXT, b"still")) == [TextMessage("still")]

    def test_close_during_fragmented_message(self) -> None:
        # Autobahn 7.1.5: text fragment, Close, continuation -> clean close, echo 1000.
        server = Connection(is_client=False)
        wire = (
            from_client(Opcode.TEXT, b"fragment1", fin=False)
            + from_client(Opcode.CLOSE, b"\x03\xe8")
            + from_client(Opcode.CONT, b"fragment2", fin=True)
        )
        assert feed(server, wire) == [CloseReceived(1000, "")]
        assert server.error is None
        server.acknowledge_close()
        assert sent_close(server) == (1000, "")
        assert server.state is State.CLOSED

    @pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, *range(1007, 1015), 3000, 3999, 4000, 4999])
    def test_valid_codes(self, code: int) -> None:
        server = Connection(is_client=False)
        assert feed(server, from_client(Opcode.CLOSE, code.to_bytes(2, "big"))) == [CloseReceived(code, "")]
        server.acknowledge_close()
        assert sent_close(server) == (code, "")

    @pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535])
    def test_invalid_codes(self, code: int) -> None:
        client = Connection(is_client=True)
        assert_fails(client, from_server(Opcode.CLOSE, code.to_bytes(2, "big")), 1002)
        assert client.close_rcvd is None

    def test_one_byte_payload(self) -> None:
        assert_fails(Connection(is_client=False), from_client(Opcode.CLOSE, b"\x03"), 1002)

    def test_invalid_utf8_reason(self) -> None:
        assert_fails(
            Connection(is_client=False), from_client(Opcode.CLOSE, b"\x03\xe8\xff"), 1007, InvalidUtf8
        )

    def test_close_arguments(self) -> None:
        client, _ = open_pair()
        with pytest.raises(ValueError, match="1005"):
            client.send_close(1005)
        with pytest.raises(ValueError, match="124 bytes"):
            client.send_close(1000, "x" * 124)
        with pytest.raises(ValueError, match="needs a close code"):
            client.send_close(None, "x")
        assert client.state is State.OPEN
        assert client.data_to_send() == b""


class TestFail:
    def test_without_error_is_1011(self) -> None:
        _, server = open_pair()
        server.fail()
        assert server.state is State.CLOSED
        assert sent_close(server) == (1011, "")
        assert isinstance(server.error, ProtocolError)
        assert server.error.close_code == 1011
        assert server.close_sent == (1011, "")
        assert server.close_expected()

    def test_with_code_and_reason(self) -> None:
        client, _ = open_pair()
        client.fail(1001, "going away")
        assert sent_close(client) == (1001, "going away")
        assert client.close_expected()

    def test_uses_the_error(self) -> None:
        server = Connection(is_client=False)
        server.receive_data(from_client(Opcode.TEXT, b"\xff"))
        server.fail()
        code, reason = sent_close(server)
        assert code == 1007
        assert "UTF-8" in reason

    def test_long_reason_is_truncated(self) -> None:
        _, server = open_pair()
        server.fail(1008, "é" * 100)
        code, reason = sent_close(server)
        assert code == 1008
        assert len(reason.encode()) <= 123
        assert reason.endswith("...")

    def test_after_close_sent_sends_nothing_more(self) -> None:
        client, _ = open_pair()
        client.send_close()
        client.data_to_send()
        client.fail()
        assert client.data_to_send() == b""
        assert client.state is State.CLOSED
        client.fail()
        assert client.data_to_send() == b""

    def test_before_open(self) -> None:
        client = ClientConnection("example.com")
        client.data_to_send()
        client.fail()
        assert client.state is State.CLOSED
        assert client.data_to_send() == b""


class TestEof:
    def test_eof_closes(self) -> None:
        client, _ = open_pair()
        client.receive_eof()
        assert client.state is State.CLOSED
        assert client.eof_received
        assert client.close_expected()
        client.receive_eof()
        assert feed(client, from_server(Opcode.TEXT, b"x")) == []

    def test_eof_inside_a_message(self) -> None:
        _, server = open_pair()
        server.receive_data(from_client(Opcode.TEXT, b"abc")[:-1])
        server.receive_eof()
        assert server.events_received() == []
        assert server.state is State.CLOSED
        with pytest.raises(InvalidState):
            server.send_text("x")


# ------------------------------------------------------- protocol errors


class TestProtocolErrors:
    @pytest.mark.parametrize("bits", [0x40, 0x20, 0x10])
    def test_reserved_bits_without_extension(self, bits: int) -> None:
        frame = from_client(Opcode.TEXT, b"x")
        assert_fails(Connection(is_client=False), with_first_byte(frame, frame[0] | bits), 1002)

    @pytest.mark.parametrize("bits", [0x20, 0x10])
    def test_rsv2_rsv3_with_deflate(self, bits: int) -> None:
        frame = from_server(Opcode.TEXT, b"x")
        conn = Connection(is_client=True, deflate=DeflateParams())
        assert_fails(conn, with_first_byte(frame, frame[0] | bits), 1002)

    def test_rsv1_on_control_frame(self) -> None:
        # RFC 7692 §6: only data messages are compressed.
        conn = Connection(is_client=True, deflate=DeflateParams())
        assert_fails(conn, from_server(Opcode.PING, b"", rsv1=True), 1002)

    def test_rsv1_on_continuation(self) -> None:
        # RFC 7692 §6.1: RSV1 is set on the first frame of a message only.
        conn = Connection(is_client=True, deflate=DeflateParams())
        conn.receive_data(from_server(Opcode.TEXT, raw_deflate(b"ab"), fin=False, rsv1=True))
        assert_fails(conn, from_server(Opcode.CONT, b"\x00", rsv1=True), 1002)

    @pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
    def test_reserved_opcodes(self, opcode: int) -> None:
        assert_fails(Connection(is_client=False), from_client(opcode, b""), 1002)

    def test_unmasked_frame_from_client(self) -> None:
        # RFC 6455 §5.1.
        assert_fails(Connection(is_client=False), from_server(Opcode.TEXT, b"x"), 1002)

    def test_masked_frame_from_server(self) -> None:
        assert_fails(Connection(is_client=True), from_client(Opcode.TEXT, b"x"), 1002)

    def test_continuation_without_start(self) -> None:
        assert_fails(Connection(is_client=False), from_client(Opcode.CONT, b"x"), 1002)

    @pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY])
    def test_new_message_inside_fragmented_one(self, opcode: int) -> None:
        server = Connection(is_client=False)
        server.receive_data(from_client(Opcode.TEXT, b"a", fin=False))
        assert_fails(server, from_client(opcode, b"b"), 1002)

    def test_length_with_most_significant_bit(self) -> None:
        # RFC 6455 §5.2: the most significant bit of a 64-bit length must be 0.
        header = b"\x82\x7f" + (2**63).to_bytes(8, "big")
        assert_fails(Connection(is_client=True, max_message_size=None), header, 1002)


class TestInvalidUtf8:
    def test_single_frame(self) -> None:
        assert_fails(
            Connection(is_client=False), from_client(Opcode.TEXT, b"\xce\xba\xff"), 1007, InvalidUtf8
        )

    def test_surrogate(self) -> None:
        assert_fails(Connection(is_client=True), from_server(Opcode.TEXT, b"\xed\xa0\x80"), 1007, InvalidUtf8)

    def test_message_ends_inside_a_character(self) -> None:
        server = Connection(is_client=False)
        server.receive_data(from_client(Opcode.TEXT, b"ab", fin=False))
        assert server.error is None
        assert_fails(server, from_client(Opcode.CONT, b"\xce", fin=True), 1007, InvalidUtf8)

    def test_fails_fast_at_the_bad_fragment(self) -> None:
        # Autobahn 6.4.x: fail at the first invalid byte, before the message ends.
        client = Connection(is_client=True)
        client.receive_data(from_server(Opcode.TEXT, "κόσμε".encode(), fin=False))
        assert client.error is None
        assert_fails(client, from_server(Opcode.CONT, b"\xf4\x90\x80\x80", fin=False), 1007, InvalidUtf8)

    def test_fails_fast_inside_one_frame(self) -> None:
        wire = from_client(Opcode.TEXT, b"abc\xf4\x90\x80\x80" + b"d" * 100)
        server = Connection(is_client=False)
        # Header (6 bytes) and "abc\xf4\x90": the frame is far from complete.
        assert_fails(server, wire[:11], 1007, InvalidUtf8)

    def test_valid_character_split_across_reads(self) -> None:
        wire = from_client(Opcode.TEXT, "€".encode())
        server = Connection(is_client=False)
        assert feed(server, *(wire[i : i + 1] for i in range(len(wire)))) == [TextMessage("€")]

    def test_binary_is_not_checked(self) -> None:
        assert feed(Connection(is_client=False), from_client(Opcode.BINARY, b"\xff")) == [
            BinaryMessage(b"\xff")
        ]


class TestLimits:
    def test_invalid_limits(self) -> None:
        with pytest.raises(ValueError, match="max_message_size"):
            Connection(is_client=True, max_message_size=0)
        with pytest.raises(ValueError, match="max_frame_size"):
            Connection(is_client=True, max_frame_size=-1)

    def test_message_at_the_limit(self) -> None:
        server = Connection(is_client=False, max_message_size=10)
        assert feed(server, from_client(Opcode.BINARY, b"x" * 10)) == [BinaryMessage(b"x" * 10)]

    def test_frame_over_the_limit_fails_at_its_header(self) -> None:
        server = Connection(is_client=False, max_message_size=2**20)
        header = b"\x82\xff" + (2**40).to_bytes(8, "big") + MASK
        assert_fails(server, header, 1009, PayloadTooBig)
        assert retained_bytes(server) < 1024

    def test_max_frame_size(self) -> None:
        server = Connection(is_client=False, max_message_size=100, max_frame_size=10)
        wire = b"".join(
            from_client(Opcode.BINARY if i == 0 else Opcode.CONT, b"x" * 10, fin=i == 4) for i in range(5)
        )
        assert feed(server, wire) == [BinaryMessage(b"x" * 50)]
        assert_fails(server, from_client(Opcode.BINARY, b"x" * 11), 1009, PayloadTooBig)

    def test_fragmented_message_over_the_limit(self) -> None:
        server = Connection(is_client=False, max_message_size=100_000)
        for i in range(3):
            server.receive_data(from_client(Opcode.CONT if i else Opcode.BINARY, b"x" * 30_000, fin=False))
        assert server.error is None
        assert_fails(server, from_client(Opcode.CONT, b"x" * 30_000, fin=False), 1009, PayloadTooBig)
        # The partial message is dropped: the connection holds no large buffer after the error.
        assert retained_bytes(server) < 1024

    def test_no_limit(self) -> None:
        client = Connection(is_client=True, max_message_size=None)
        assert feed(client, from_server(Opcode.BINARY, b"x" * 70_000)) == [BinaryMessage(b"x" * 70_000)]

    def test_compressed_message_at_the_limit(self) -> None:
        server = Connection(is_client=False, max_message_size=1000, deflate=DeflateParams())
        assert feed(server, from_client(Opcode.BINARY, raw_deflate(b"a" * 1000), rsv1=True)) == [
            BinaryMessage(b"a" * 1000)
        ]
        assert_fails(
            server, from_client(Opcode.BINARY, raw_deflate(b"a" * 1001), rsv1=True), 1009, PayloadTooBig
        )

    def test_zip_bomb(self) -> None:
        # 10 MB of zeros compresses to about 10 kB: the limit applies after decompression.
        server = Connection(is_client=False, max_message_size=100_000, deflate=DeflateParams())
        bomb = raw_deflate(bytes(10_000_000))
        assert len(bomb) < 20_000
        assert_fails(server, from_client(Opcode.BINARY, bomb, rsv1=True), 1009, PayloadTooBig)
        assert retained_bytes(server) < 1024

    def test_fragmented_zip_bomb(self) -> None:
        # Each frame inflates to about 10 kB; the limit is crossed after several of them.
        server = Connection(is_client=False, max_message_size=100_000, deflate=DeflateParams())
        bomb = raw_deflate(bytes(1_000_000))
        step = len(bomb) // 100
        pieces = [bomb[i : i + step] for i in range(0, len(bomb), step)]
        server.receive_data(from_client(Opcode.BINARY, pieces[0], fin=False, rsv1=True))
        server.receive_data(b"".join(from_client(Opcode.CONT, p, fin=False) for p in pieces[1:5]))
        assert server.error is None
        wire = b"".join(from_client(Opcode.CONT, p, fin=False) for p in pieces[5:])
        assert_fails(server, wire, 1009, PayloadTooBig)
        # The partial message is dropped: the connection holds no large buffer after the error.
        assert retained_bytes(server) < 1024

    def test_compressed_with_no_limit(self) -> None:
        # max_message_size=None means no limit, for compressed messages too.
        client = Connection(is_client=True, max_message_size=None, deflate=DeflateParams())
        assert feed(client, from_server(Opcode.TEXT, raw_deflate(b"Hello"), rsv1=True)) == [
            TextMessage("Hello")
        ]
        assert client.error is None

    def test_invalid_compressed_data(self) -> None:
        server = Connection(is_client=False, deflate=DeflateParams())
        # BTYPE 11 is reserved (RFC 1951 §3.2.3).
        assert_fails(server, from_client(Opcode.BINARY, b"\xff\xff", rsv1=True), 1002)

    def test_compressed_invalid_utf8(self) -> None:
        server = Connection(is_client=False, deflate=DeflateParams())
        assert_fails(server, from_client(Opcode.TEXT, raw_deflate(b"ok\xff"), rsv1=True), 1007, InvalidUtf8)


# ---------------------------------------------------------------- sending


class TestSending:
    def test_fragmented_text(self) -> None:
        client, server = open_pair()
        # A character may be split across fragments (RFC 6455 §5.6).
        client.send_text(b"H\xc3", fin=False)
        client.send_ping(b"between")
        client.send_continuation(b"\xa9ll", fin=False)
        client.send_continuation("o!", fin=True)
        wire = client.data_to_send()
        assert [(f.fin, f.opcode, f.payload) for f in split_frames(wire)] == [
            (False, Opcode.TEXT, b"H\xc3"),
            (True, Opcode.PING, b"between"),
            (False, Opcode.CONT, b"\xa9ll"),
            (True, Opcode.CONT, b"o!"),
        ]
        assert feed(server, wire) == [Ping(b"between"), TextMessage("Héllo!")]

    def test_fragmented_binary_then_new_message(self) -> None:
        client, server = open_pair()
        client.send_binary(b"a", fin=False)
        client.send_continuation(bytearray(b"b"), fin=True)
        client.send_text(b"c")
        assert pump(client, server) == [BinaryMessage(b"ab"), TextMessage("c")]

    @pytest.mark.parametrize("method", ["send_text", "send_binary"])
    def test_new_message_while_fragmented(self, method: str) -> None:
        client, _ = open_pair()
        client.send_text("a", fin=False)
        with pytest.raises(InvalidState, match="still being sent"):
            getattr(client, method)(b"b")

    def test_continuation_without_start(self) -> None:
        client, _ = open_pair()
        with pytest.raises(InvalidState, match="no fragmented message"):
            client.send_continuation(b"x", fin=True)
        client.send_binary(b"a", fin=False)
        client.send_continuation(b"b", fin=True)
        with pytest.raises(InvalidState, match="no fragmented message"):
            client.send_continuation(b"c", fin=False)

    @pytest.mark.parametrize(
        ("method", "args"),
        [
            ("send_text", ("x",)),
            ("send_binary", (b"x",)),
            ("send_ping", ()),
            ("send_pong", ()),
            ("send_close", ()),
        ],
    )
    def test_wrong_state(self, method: str, args: tuple[object, ...]) -> None:
        connecting = ClientConnection("example.com")
        closing, _ = open_pair()
        closing.send_close()
        closed, _ = open_pair()
        closed.fail()
        for conn in (connecting, closing, closed):
            with pytest.raises(InvalidState, match=f"state {conn.state.name}"):
                getattr(conn, method)(*args)

    def test_continuation_in_wrong_state(self) -> None:
        client, _ = open_pair()
        client.send_text("a", fin=False)
        client.send_close()
        with pytest.raises(InvalidState, match="CLOSING"):
            client.send_continuation("b", fin=True)

    def test_bad_argument_is_value_error_in_any_state(self) -> None:
        client, _ = open_pair()
        client.fail()
        with pytest.raises(ValueError):
            client.send_ping(b"x" * 126)
        with pytest.raises(ValueError):
            client.send_close(999)

    def test_compressed_fragments(self) -> None:
        # RFC 7692 §6.1: RSV1 on the first frame only.
        client, server = open_pair(deflate=DeflateParams())
        client.send_text("Hello " * 10, fin=False)
        client.send_continuation("world", fin=True)
        wire = client.data_to_send()
        assert [(f.rsv1, f.opcode) for f in split_frames(wire)] == [(True, Opcode.TEXT), (False, Opcode.CONT)]
        assert feed(server, wire) == [TextMessage("Hello " * 10 + "world")]

    def test_compression_shrinks(self) -> None:
        _, server = open_pair(deflate=DeflateParams())
        server.send_binary(b"a" * 1000)
        (frame,) = split_frames(server.data_to_send())
        assert frame.rsv1
        assert len(frame.payload) < 100


# -------------------------------------------------------------- handshake

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def request_bytes(
    *, method: str = "GET", drop: Sequence[str] = (), extra: Sequence[tuple[str, str]] = ()
) -> bytes:
    base = [
        ("Host", "server.example.com"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", RFC_KEY),
        ("Sec-WebSocket-Version", "13"),
    ]
    items = [(name, value) for name, value in base if name not in drop] + list(extra)
    return build_request(Request("/chat", Headers(items), method))


def response_bytes(
    client: ClientConnection,
    *,
    status: str = "101 Switching Protocols",
    drop: Sequence[str] = (),
    extra: Sequence[tuple[str, str]] = (),
) -> bytes:
    base = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(client.key)),
    ]
    items = [(name, value) for name, value in base if name not in drop] + list(extra)
    head = f"HTTP/1.1 {status}\r\n" + "".join(f"{name}: {value}\r\n" for name, value in items) + "\r\n"
    return head.encode("latin-1")


def new_client(**kwargs: object) -> ClientConnection:
    client = ClientConnection("example.com", "/rpc", **kwargs)  # type: ignore[arg-type]
    client.data_to_send()
    return client


def server_answer(server: ServerConnection) -> tuple[int, Headers, bytes]:
    """The status, headers and body the server wrote."""
    head, _, body = server.data_to_send().partition(b"\r\n\r\n")
    response = parse_response(head)
    return response.status, response.headers, body


def receive_request(server: ServerConnection, *chunks: bytes) -> Request:
    (event,) = feed(server, *chunks)
    assert isinstance(event, RequestReceived)
    return event.request


def handshake(client: ClientConnection, server: ServerConnection) -> None:
    (event,) = pump(client, server)
    assert isinstance(event, RequestReceived)
    server.accept(event.request)
    (done,) = pump(server, client)
    assert isinstance(done, HandshakeComplete)
    assert client.state is State.OPEN and server.state is State.OPEN


class TestClientHandshake:
    def test_request(self) -> None:
        client = ClientConnection(
            "example.com:8080",
            "/rpc?x=1",
            origin="https://example.com",
            subprotocols=["chat", "superchat"],
            headers=[("Authorization", "Bearer t")],
            deflate=DeflateParams(),
        )
        assert client.state is State.CONNECTING
        head, sep, rest = client.data_to_send().partition(b"\r\n\r\n")
        assert sep and rest == b""
        request = parse_request(head)
        assert request.method == "GET"
        assert request.path == "/rpc?x=1"
        h = request.headers
        assert h.get("Host") == "example.com:8080"
        assert h.get("Upgrade") == "websocket"
        assert h.get("Connection") == "Upgrade"
        assert h.get("Sec-WebSocket-Version") == "13"
        assert len(base64.b64decode(h.get("Sec-WebSocket-Key") or "")) == 16
        assert h.get("Sec-WebSocket-Key") == client.key
        assert h.get("Origin") == "https://example.com"
        assert h.get("Sec-WebSocket-Protocol") == "chat, superchat"
        assert h.get("Sec-WebSocket-Extensions") == "permessage-deflate; client_max_window_bits"
        assert h.get("Authorization") == "Bearer t"

    def test_minimal_request(self) -> None:
        request = parse_request(ClientConnection("h").data_to_send()[:-4])
        assert request.path == "/"
        assert [name for name, _ in request.headers] == [
            "Host",
            "Upgrade",
            "Connection",
            "Sec-WebSocket-Key",
            "Sec-WebSocket-Version",
        ]

    def test_keys_differ(self) -> None:
        assert ClientConnection("h").key != ClientConnection("h").key

    def test_accepted(self) -> None:
        client = new_client()
        wire = response_bytes(client, extra=[("X-Extra", "1")])
        events = feed(client, *(wire[i : i + 1] for i in range(len(wire))))
        assert len(events) == 1 and isinstance(events[0], HandshakeComplete)
        assert events[0].response.status == 101
        assert events[0].response.headers.get("X-Extra") == "1"
        assert client.response == events[0].response
        assert client.state is State.OPEN
        assert client.subprotocol is None and client.deflate_params is None
        assert client.handshake_error is None

    def test_token_lists_are_case_insensitive(self) -> None:
        client = new_client()
        wire = response_bytes(
            client,
            drop=["Upgrade", "Connection"],
            extra=[("Upgrade", "WebSocket"), ("Connection", "keep-alive, UPGRADE")],
        )
        assert isinstance(feed(client, wire)[0], HandshakeComplete)

    def test_data_in_the_same_chunk_as_the_101(self) -> None:
        client = new_client()
        events = feed(
            client, response_bytes(client) + from_server(Opcode.TEXT, b"hi") + from_server(Opcode.PING)
        )
        assert isinstance(events[0], HandshakeComplete)
        assert events[1:] == [TextMessage("hi"), Ping(b"")]
        assert split_frames(client.data_to_send())[0].opcode == Opcode.PONG

    def test_subprotocol(self) -> None:
        client = new_client(subprotocols=["a", "b"])
        feed(client, response_bytes(client, extra=[("Sec-WebSocket-Protocol", "b")]))
        assert client.state is State.OPEN
        assert client.subprotocol == "b"

    def test_rejected(self) -> None:
        client = new_client()
        head = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\nX-Why: policy\r\n\r\n"
        assert feed(client, head + b"nope") == []
        error = client.handshake_error
        assert isinstance(error, HandshakeError)
        assert error.status == 403
        assert error.headers == [("Content-Length", "4"), ("X-Why", "policy")]
        assert error.body == b"nope"
        assert client.state is State.CLOSED
        assert client.close_expected()

    @pytest.mark.parametrize(
        ("drop", "extra", "offer", "message"),
        [
            (["Sec-WebSocket-Accept"], [("Sec-WebSocket-Accept", RFC_ACCEPT)], {}, "does not match"),
            (["Sec-WebSocket-Accept"], [], {}, "does not match"),
            ([], [("Sec-WebSocket-Accept", "x")], {}, "does not match"),
            (["Upgrade"], [], {}, "Upgrade"),
            (["Upgrade"], [("Upgrade", "h2c")], {}, "Upgrade"),
            (["Connection"], [], {}, "Connection"),
            ([], [("Sec-WebSocket-Protocol", "chat")], {}, "not offered"),
            ([], [("Sec-WebSocket-Protocol", "a, b")], {"subprotocols": ["a", "b"]}, "more than one"),
            ([], [("Sec-WebSocket-Extensions", "permessage-deflate")], {}, "not offered"),
            (
                [],
                [("Sec-WebSocket-Extensions", "x-webkit-deflate-frame")],
                {"deflate": DeflateParams()},
                "not offered",
            ),
            (
                [],
                [("Sec-WebSocket-Extensions", "permessage-deflate, permessage-deflate")],
                {"deflate": DeflateParams()},
                "not offered",
            ),
        ],
    )
    def test_invalid_101(
        self, drop: list[str], extra: list[tuple[str, str]], offer: dict[str, object], message: str
    ) -> None:
        client = new_client(**offer)
        wire = response_bytes(client, drop=drop, extra=extra)
        assert feed(client, wire + from_server(Opcode.TEXT, b"x")) == []
        error = client.handshake_error
        assert isinstance(error, HandshakeError)
        assert message in str(error)
        assert error.status == 101
        assert error.headers == list(parse_response(wire[:-4]).headers)
        assert client.state is State.CLOSED
        assert client.close_expected()

    @pytest.mark.parametrize(
        "extra",
        [
            [("Connection", "Upgrade, @")],
            [("Sec-WebSocket-Extensions", "permessage-deflate; =1")],
            [("Sec-WebSocket-Extensions", "permessage-deflate; mystery")],
        ],
    )
    def test_malformed_header_in_101_reports_status_101(self, extra: list[tuple[str, str]]) -> None:
        # HandshakeError.status is "the HTTP status of the response (client side)".
        client = new_client(deflate=DeflateParams(), subprotocols=["a"])
        wire = response_bytes(client, extra=extra)
        feed(client, wire)
        error = client.handshake_error
        assert isinstance(error, HandshakeError)
        assert client.state is State.CLOSED
        assert error.status == 101
        assert error.headers == list(parse_response(wire[:-4]).headers)

    @pytest.mark.parametrize(
        "head", [b"HTTP/1.0 101 OK", b"HTTP/1.1 1O1 OK", b"ICY 200 OK", b"HTTP/1.1", b"\xff\xfe"]
    )
    def test_malformed_status_line(self, head: bytes) -> None:
        client = new_client()
        feed(client, head + b"\r\n\r\n")
        assert isinstance(client.handshake_error, HandshakeError)
        assert client.handshake_error.status == 0
        assert client.state is State.CLOSED

    def test_head_too_large(self) -> None:
        client = new_client(max_head_size=100)
        feed(client, b"HTTP/1.1 101 Switching Protocols\r\nX: " + b"y" * 100)
        assert isinstance(client.handshake_error, HandshakeError)
        assert client.handshake_error.status == 431
        assert client.state is State.CLOSED

    def test_input_after_a_failed_handshake_is_ignored(self) -> None:
        # CLOSED without a closing handshake: later bytes are an HTTP body, never frames.
        client = new_client()
        feed(client, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 7\r\n\r\n")
        assert client.state is State.CLOSED
        assert feed(client, from_server(Opcode.TEXT, b"Hello")) == []
        assert client.error is None or isinstance(client.error, ProtocolError)

    def test_limits_are_passed_on(self) -> None:
        client = new_client(max_message_size=10, max_frame_size=5)
        feed(client, response_bytes(client))
        assert (client.max_message_size, client.max_frame_size) == (10, 5)


class TestServerHandshake:
    def test_rfc_example(self) -> None:
        # RFC 6455 §1.2 and §1.3.
        server = ServerConnection(subprotocols=["chat"])
        wire = (
            b"GET /chat HTTP/1.1\r\n"
            b"Host: server.example.com\r\n"
            b"Upgrade: websocket\r\n"
            b"Connection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Origin: http://example.com\r\n"
            b"Sec-WebSocket-Protocol: chat, superchat\r\n"
            b"Sec-WebSocket-Version: 13\r\n"
            b"\r\n"
        )
        request = receive_request(server, *(wire[i : i + 1] for i in range(len(wire))))
        assert request.path == "/chat"
        assert request.headers.get("origin") == "http://example.com"
        assert server.request == request
        server.accept(request)
        assert server.data_to_send() == (
            b"HTTP/1.1 101 Switching Protocols\r\n"
            b"Upgrade: websocket\r\n"
            b"Connection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
            b"Sec-WebSocket-Protocol: chat\r\n"
            b"\r\n"
        )
        assert server.state is State.OPEN
        assert server.subprotocol == "chat"
        assert server.response is not None and server.response.status == 101

    def test_pair(self) -> None:
        client = ClientConnection("example.com", subprotocols=["b", "a"])
        server = ServerConnection(subprotocols=["a", "b"])
        handshake(client, server)
        # The server's preference wins.
        assert client.subprotocol == server.subprotocol == "a"
        client.send_text("hi")
        assert pump(client, server) == [TextMessage("hi")]
        server.send_binary(b"yo")
        assert pump(server, client) == [BinaryMessage(b"yo")]

    def test_accept_explicit_subprotocol_and_headers(self) -> None:
        server = ServerConnection(subprotocols=["a"])
        request = receive_request(server, request_bytes(extra=[("Sec-WebSocket-Protocol", "a, b")]))
        server.accept(request, subprotocol="b", headers=[("Set-Cookie", "s=1")])
        status, headers, _ = server_answer(server)
        assert status == 101
        assert headers.get("Sec-WebSocket-Protocol") == "b"
        assert headers.get("Set-Cookie") == "s=1"

    def test_accept_subprotocol_not_offered(self) -> None:
        server = ServerConnection()
        request = receive_request(server, request_bytes(extra=[("Sec-WebSocket-Protocol", "a")]))
        with pytest.raises(ValueError, match="not offered"):
            server.accept(request, subprotocol="b")

    def test_no_common_subprotocol(self) -> None:
        server = ServerConnection(subprotocols=["x"])
        request = receive_request(server, request_bytes(extra=[("Sec-WebSocket-Protocol", "a")]))
        server.accept(request)
        assert server.subprotocol is None
        assert "Sec-WebSocket-Protocol" not in server_answer(server)[1]

    def test_accept_an_externally_parsed_request(self) -> None:
        # tether's HTTP server parses the request and hands it over.
        request = parse_request(request_bytes()[:-4])
        server = ServerConnection()
        server.accept(request)
        assert server.state is State.OPEN
        status, headers, _ = server_answer(server)
        assert status == 101
        assert headers.get("Sec-WebSocket-Accept") == RFC_ACCEPT
        assert feed(server, from_client(Opcode.TEXT, b"hi")) == [TextMessage("hi")]

    def test_early_frames_are_processed_on_accept(self) -> None:
        server = ServerConnection()
        request = receive_request(server, request_bytes() + from_client(Opcode.PING, b"1"))
        assert feed(server, from_client(Opcode.TEXT, b"2")) == []
        server.accept(request)
        assert server.events_received() == [Ping(b"1"), TextMessage("2")]
        # The pong follows the 101.
        head, _, rest = server.data_to_send().partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 ")
        assert rest == b"\x8a\x011"

    def test_too_much_early_data(self) -> None:
        server = ServerConnection()
        request = receive_request(server, request_bytes())
        server.receive_data(b"x" * 70_000)
        assert server.state is State.CLOSED
        assert isinstance(server.handshake_error, HandshakeError)
        with pytest.raises(InvalidState):
            server.accept(request)

    @pytest.mark.parametrize(
        ("drop", "extra", "status"),
        [
            (["Host"], [], 400),
            (["Sec-WebSocket-Key"], [], 400),
            (["Sec-WebSocket-Key"], [("Sec-WebSocket-Key", "not base64!")], 400),
            (["Sec-WebSocket-Key"], [("Sec-WebSocket-Key", base64.b64encode(b"x" * 15).decode())], 400),
            (["Sec-WebSocket-Key"], [("Sec-WebSocket-Key", "é")], 400),
            ([], [("Sec-WebSocket-Key", RFC_KEY)], 400),
            (["Upgrade"], [], 426),
            (["Upgrade"], [("Upgrade", "h2c")], 426),
            (["Connection"], [], 426),
            (["Connection"], [("Connection", "keep-alive")], 426),
        ],
    )
    def test_invalid_request(self, drop: list[str], extra: list[tuple[str, str]], status: int) -> None:
        server = ServerConnection()
        request = receive_request(server, request_bytes(drop=drop, extra=extra))
        with pytest.raises(HandshakeError) as info:
            server.accept(request)
        assert info.value.status == status
        assert server.handshake_error is info.value
        assert server.state is State.CLOSED
        assert server.close_expected()
        answer = server_answer(server)
        assert answer[0] == status
        assert answer[1].get("Connection") in ("close", "Upgrade")
        assert int(answer[1].get("Content-Length") or -1) == len(answer[2])
        if status == 426:
            assert answer[1].get("Upgrade") == "websocket"

    @pytest.mark.parametrize("versions", [["8"], ["13", "13"], [], ["13, 8"]])
    def test_version_not_13(self, versions: list[str]) -> None:
        # RFC 6455 §4.4: answer with the versions the server speaks.
        server = ServerConnection()
        wire = request_bytes(
            drop=["Sec-WebSocket-Version"], extra=[("Sec-WebSocket-Version", v) for v in versions]
        )
        request = receive_request(server, wire)
        with pytest.raises(HandshakeError):
            server.accept(request)
        status, headers, _ = server_answer(server)
        assert status == 426
        assert headers.get("Sec-WebSocket-Version") == "13"

    def test_method_not_get(self) -> None:
        server = ServerConnection()
        request = receive_request(server, request_bytes(method="POST"))
        with pytest.raises(HandshakeError) as info:
            server.accept(request)
        assert info.value.status == 405
        assert server_answer(server)[0] == 405

    def test_405_names_the_allowed_method(self) -> None:
        # RFC 9110 §15.5.6: a 405 response MUST carry an Allow header.
        server = ServerConnection()
        request = receive_request(server, request_bytes(method="POST"))
        with pytest.raises(HandshakeError):
            server.accept(request)
        assert server_answer(server)[1].get("Allow") == "GET"

    @pytest.mark.parametrize(
        ("head", "status"),
        [
            (b"garbage", 400),
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),  # a TLS ClientHello
            (b"GET /chat HTTP/1.0\r\nHost: x", 505),
            (b"GET /chat HTTP/1.1\r\nHost x", 400),
            (b"GET /chat HTTP/1.1\r\n folded: x", 400),
            (b"", 400),
        ],
    )
    def test_garbage_request(self, head: bytes, status: int) -> None:
        server = ServerConnection()
        assert feed(server, head + b"\r\n\r\n") == []
        assert isinstance(server.handshake_error, HandshakeError)
        assert server.handshake_error.status == status
        assert server.state is State.CLOSED
        assert server_answer(server)[0] == status

    def test_head_too_large(self) -> None:
        server = ServerConnection(max_head_size=64)
        feed(server, b"GET / HTTP/1.1\r\nX: " + b"y" * 100)
        assert isinstance(server.handshake_error, HandshakeError)
        assert server_answer(server)[0] == 431

    def test_head_over_the_limit_with_its_end_in_sight(self) -> None:
        server = ServerConnection(max_head_size=64)
        feed(server, request_bytes())
        assert isinstance(server.handshake_error, HandshakeError)
        assert server_answer(server)[0] == 431

    def test_reject(self) -> None:
        server = ServerConnection()
        request = receive_request(server, request_bytes())
        server.reject(401, b"who?", headers=[("WWW-Authenticate", "Basic"), ("Content-Type", "text/html")])
        status, headers, body = server_answer(server)
        assert (status, body) == (401, b"who?")
        assert headers.get_all("Content-Type") == ["text/html"]
        assert headers.get("Content-Length") == "4"
        assert headers.get("Connection") == "close"
        assert headers.get("WWW-Authenticate") == "Basic"
        assert server.state is State.CLOSED
        with pytest.raises(InvalidState):
            server.reject(500)
        with pytest.raises(InvalidState):
            server.accept(request)

    def test_reject_text_body(self) -> None:
        server = ServerConnection()
        feed(server, request_bytes())
        server.reject(404, "nowhere é")
        status, headers, body = server_answer(server)
        assert (status, body) == (404, "nowhere é".encode())
        assert headers.get("Content-Type") == "text/plain; charset=utf-8"

    def test_accept_twice(self) -> None:
        server = ServerConnection()
        request = receive_request(server, request_bytes())
        server.accept(request)
        with pytest.raises(InvalidState):
            server.accept(request)
        with pytest.raises(InvalidState):
            server.reject(400)

    def test_input_after_reject_is_ignored(self) -> None:
        server = ServerConnection()
        feed(server, request_bytes())
        server.reject(403)
        assert feed(server, from_client(Opcode.TEXT, b"sneaky")) == []

    def test_input_after_a_bad_request_is_ignored(self) -> None:
        server = ServerConnection()
        feed(server, b"garbage\r\n\r\n" + from_client(Opcode.TEXT, b"a"))
        assert feed(server, from_client(Opcode.TEXT, b"sneaky")) == []


class TestDeflateNegotiation:
    def test_default(self) -> None:
        client = ClientConnection("h", deflate=DeflateParams())
        server = ServerConnection(deflate=DeflateParams())
        handshake(client, server)
        assert client.deflate_params == server.deflate_params == DeflateParams()
        assert server.response is not None
        assert server.response.headers.get("Sec-WebSocket-Extensions") == "permessage-deflate"
        client.send_text("Hello")
        wire = client.data_to_send()
        assert split_frames(wire)[0].rsv1
        assert feed(server, wire) == [TextMessage("Hello")]
        server.send_text("Hello")
        wire = server.data_to_send()
        assert wire == bytes.fromhex("c107f248cdc9c90700")  # RFC 7692 §7.2.3.1
        assert feed(client, wire) == [TextMessage("Hello")]

    def test_server_declines(self) -> None:
        client = ClientConnection("h", deflate=DeflateParams())
        server = ServerConnection()
        handshake(client, server)
        assert client.deflate_params is None and server.deflate_params is None
        client.send_text("Hello")
        assert not split_frames(client.data_to_send())[0].rsv1

    def test_client_does_not_offer(self) -> None:
        client = ClientConnection("h")
        server = ServerConnection(deflate=DeflateParams())
        handshake(client, server)
        assert client.deflate_params is None and server.deflate_params is None

    def test_no_context_takeover(self) -> None:
        client = ClientConnection(
            "h", deflate=DeflateParams(client_no_context_takeover=True, server_no_context_takeover=True)
        )
        server = ServerConnection(deflate=DeflateParams())
        handshake(client, server)
        expected = DeflateParams(server_no_context_takeover=True, client_no_context_takeover=True)
        assert client.deflate_params == server.deflate_params == expected
        for _ in range(2):
            server.send_text("Hello")
            assert server.data_to_send() == bytes.fromhex("c107f248cdc9c90700")  # RFC 7692 §7.2.3.2

    def test_server_picks_first_acceptable_offer(self) -> None:
        server = ServerConnection(deflate=DeflateParams())
        offers = (
            "permessage-deflate; server_max_window_bits=7, "  # out of range
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover, "  # duplicate
            "permessage-deflate; server_no_context_takeover=1, "  # value where none is allowed
            "x-webkit-deflate-frame, "
            "permessage-deflate; server_no_context_takeover, "
            "permessage-deflate"
        )
        request = receive_request(server, request_bytes(extra=[("Sec-WebSocket-Extensions", offers)]))
        server.accept(request)
        assert server_answer(server)[1].get("Sec-WebSocket-Extensions") == (
            "permessage-deflate; server_no_context_takeover"
        )
        assert server.deflate_params == DeflateParams(server_no_context_takeover=True)

    def test_no_acceptable_offer(self) -> None:
        server = ServerConnection(deflate=DeflateParams())
        offers = "permessage-deflate; server_max_window_bits=16, permessage-deflate; foo"
        request = receive_request(server, request_bytes(extra=[("Sec-WebSocket-Extensions", offers)]))
        server.accept(request)
        assert "Sec-WebSocket-Extensions" not in server_answer(server)[1]
        assert server.deflate_params is None

    def test_malformed_extension_header_declines_compression(self) -> None:
        server = ServerConnection(deflate=DeflateParams())
        request = receive_request(
            server, request_bytes(extra=[("Sec-WebSocket-Extensions", "permessage-deflate; =")])
        )
        server.accept(request)
        assert server_answer(server)[0] == 101
        assert server.deflate_params is None

    def test_server_window_of_8_bits_is_sent_uncompressed(self) -> None:
        # zlib cannot write a 256-byte window: RFC 7692 §6 allows uncompressed messages.
        client = ClientConnection("h", deflate=DeflateParams(server_max_window_bits=8))
        server = ServerConnection(deflate=DeflateParams())
        handshake(client, server)
        assert client.deflate_params == server.deflate_params == DeflateParams(server_max_window_bits=8)
        server.send_text("Hello")
        wire = server.data_to_send()
        assert wire == b"\x81\x05Hello"
        assert feed(client, wire) == [TextMessage("Hello")]
        client.send_text("Hello")
        wire = client.data_to_send()
        assert split_frames(wire)[0].rsv1
        assert feed(server, wire) == [TextMessage("Hello")]

    def test_client_window_of_8_bits_is_sent_uncompressed(self) -> None:
        client = ClientConnection("h", deflate=DeflateParams())
        server = ServerConnection(deflate=DeflateParams(client_max_window_bits=8))
        handshake(client, server)
        assert client.deflate_params == DeflateParams(client_max_window_bits=8)
        client.send_text("Hello")
        wire = client.data_to_send()
        assert not split_frames(wire)[0].rsv1
        assert feed(server, wire) == [TextMessage("Hello")]

    def test_windows_agreed(self) -> None:
        client = ClientConnection(
            "h", deflate=DeflateParams(server_max_window_bits=10, client_max_window_bits=12)
        )
        server = ServerConnection(deflate=DeflateParams(client_max_window_bits=9))
        handshake(client, server)
        agreed = DeflateParams(server_max_window_bits=10, client_max_window_bits=9)
        assert client.deflate_params == server.deflate_params == agreed
        text = "the quick brown fox " * 200
        client.send_text(text)
        server.send_text(text)
        assert pump(client, server) == [TextMessage(text)]
        assert pump(server, client) == [TextMessage(text)]

    @pytest.mark.parametrize(
        ("offer", "answer"),
        [
            (DeflateParams(), "permessage-deflate; client_max_window_bits"),
            (DeflateParams(server_max_window_bits=10), "permessage-deflate"),
            (DeflateParams(server_max_window_bits=10), "permessage-deflate; server_max_window_bits=11"),
            (DeflateParams(client_max_window_bits=10), "permessage-deflate; client_max_window_bits=11"),
            (DeflateParams(server_no_context_takeover=True), "permessage-deflate"),
            (DeflateParams(), "permessage-deflate; server_max_window_bits=7"),
            (DeflateParams(), "permessage-deflate; server_no_context_takeover; server_no_context_takeover"),
        ],
    )
    def test_client_checks_the_answer(self, offer: DeflateParams, answer: str) -> None:
        client = new_client(deflate=offer)
        feed(client, response_bytes(client, extra=[("Sec-WebSocket-Extensions", answer)]))
        assert isinstance(client.handshake_error, HandshakeError)
        assert client.state is State.CLOSED

    def test_client_answer_with_superscript_digit(self) -> None:
        # str.isdigit() is true for superscripts, which int() refuses; latin-1 header bytes decode to them.
        digit = "\u00b9"
        client = new_client(deflate=DeflateParams())
        feed(
            client,
            response_bytes(
                client,
                extra=[("Sec-WebSocket-Extensions", f"permessage-deflate; server_max_window_bits={digit}")],
            ),
        )
        assert isinstance(client.handshake_error, HandshakeError)
        assert client.state is State.CLOSED

    def test_server_offer_with_superscript_digit(self) -> None:
        digit = "\u00b9"
        server = ServerConnection(deflate=DeflateParams())
        offer = f"permessage-deflate; client_max_window_bits={digit}"
        request = receive_request(server, request_bytes(extra=[("Sec-WebSocket-Extensions", offer)]))
        server.accept(request)  # the offer is declined, the connection accepted
        assert server.deflate_params is None


# ------------------------------------------------------------- properties

DEFLATE_VARIANTS = [
    None,
    DeflateParams(),
    DeflateParams(server_no_context_takeover=True, client_no_context_takeover=True),
    DeflateParams(server_max_window_bits=9, client_max_window_bits=9),
    DeflateParams(server_max_window_bits=8, client_max_window_bits=8),
]

message_strategy = st.one_of(
    st.tuples(st.just("text"), st.text(max_size=300)),
    st.tuples(st.just("binary"), st.binary(max_size=300)),
    st.tuples(st.just("binary"), st.sampled_from([b"a" * 2000, bytes(70_000)])),
    st.tuples(st.just("ping"), st.binary(max_size=125)),
)


@settings(max_examples=150)
@given(
    messages=st.lists(message_strategy, max_size=8),
    deflate=st.sampled_from(DEFLATE_VARIANTS),
    client_sends=st.booleans(),
    data=st.data(),
)
def test_messages_survive_any_fragmentation_and_any_split(
    messages: list[tuple[str, str | bytes]],
    deflate: DeflateParams | None,
    client_sends: bool,
    data: st.DataObject,
) -> None:
    client, server = open_pair(deflate=deflate)
    sender, receiver = (client, server) if client_sends else (server, client)
    expected: list[Event] = []
    for kind, payload in messages:
        if kind == "ping":
            assert isinstance(payload, bytes)
            sender.send_ping(payload)
            expected.append(Ping(payload))
            continue
        raw = payload.encode() if isinstance(payload, str) else payload
        cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=4), label="fragment cuts")
        pieces = split_at(raw, cuts) or [b""]
        first = sender.send_text if kind == "text" else sender.send_binary
        first(pieces[0], fin=len(pieces) == 1)
        for i, piece in enumerate(pieces[1:], 2):
            if data.draw(st.booleans(), label="ping between fragments"):
                sender.send_ping(b"mid")
                expected.append(Ping(b"mid"))
            sender.send_continuation(piece, fin=i == len(pieces))
        expected.append(TextMessage(payload) if isinstance(payload, str) else BinaryMessage(payload))
    wire = sender.data_to_send()
    splits = data.draw(st.lists(st.integers(0, len(wire)), max_size=8), label="read splits")
    events = []
    for chunk in split_at(wire, splits):
        receiver.receive_data(chunk)
        events += receiver.events_received()
    assert receiver.error is None
    assert events == expected


def check_fuzz(conn: Connection, chunks: Sequence[bytes]) -> None:
    """Only documented events come out; a violation sets error to a ProtocolError."""
    for chunk in chunks:
        conn.receive_data(chunk)
        for event in conn.events_received():
            assert isinstance(event, DATA_EVENTS)
    assert conn.error is None or isinstance(conn.error, ProtocolError)
    if conn.error is not None:
        assert conn.error.close_code in (1002, 1007, 1009)
    conn.data_to_send()
    conn.fail()
    assert conn.state is State.CLOSED


@st.composite
def frame_bytes(draw: st.DrawFn, *, masked: bool) -> bytes:
    """Frames that are often valid and sometimes not, to reach deep into the parser."""
    first = draw(
        st.sampled_from([0x81, 0x82, 0x01, 0x02, 0x00, 0x80, 0x88, 0x89, 0x8A, 0xC1, 0xC2, 0x41, 0x42])
        | st.integers(0, 255)
    )
    payload = draw(
        st.binary(max_size=200)
        | st.text(max_size=50).map(str.encode)
        | st.binary(max_size=500).map(raw_deflate)
        | st.sampled_from([b"\x03\xe8", b"\x03\xe8ok", b"\x03\xed", b"\xce", b"\xba"])
    )
    frame = encode_frame(first & 0x0F, payload, mask=MASK if masked else None)
    frame = bytes([first]) + frame[1:]
    if draw(st.integers(0, 9)) == 0:  # flip the mask bit now and then
        frame = frame[:1] + bytes([frame[1] ^ 0x80]) + frame[2:]
    return frame


@settings(max_examples=300)
@given(
    data=st.binary(max_size=2000),
    cuts=st.lists(st.integers(0, 2000), max_size=6),
    is_client=st.booleans(),
    deflate=st.sampled_from([None, DeflateParams()]),
)
def test_random_bytes_never_raise(
    data: bytes, cuts: list[int], is_client: bool, deflate: DeflateParams | None
) -> None:
    check_fuzz(
        Connection(is_client=is_client, deflate=deflate, max_message_size=10_000), split_at(data, cuts)
    )


@settings(max_examples=300)
@given(
    data=st.data(),
    is_client=st.booleans(),
    deflate=st.sampled_from([None, DeflateParams(), DeflateParams(server_no_context_takeover=True)]),
)
def test_random_frames_never_raise(
    data: st.DataObject, is_client: bool, deflate: DeflateParams | None
) -> None:
    frames = data.draw(st.lists(frame_bytes(masked=not is_client), max_size=8), label="frames")
    wire = b"".join(frames)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=6), label="read splits")
    check_fuzz(Connection(is_client=is_client, deflate=deflate, max_message_size=1000), split_at(wire, cuts))


@settings(max_examples=200)
@given(
    head=st.binary(max_size=300)
    | st.sampled_from([request_bytes(), request_bytes()[:-2], request_bytes(method="X")]),
    tail=st.binary(max_size=100),
    cuts=st.lists(st.integers(0, 400), max_size=4),
)
def test_random_handshake_bytes_never_raise(head: bytes, tail: bytes, cuts: list[int]) -> None:
    server = ServerConnection(max_head_size=256)
    for chunk in split_at(head + tail, cuts):
        server.receive_data(chunk)
        for event in server.events_received():
            if isinstance(event, RequestReceived):
                with contextlib.suppress(HandshakeError):
                    server.accept(event.request)
            else:
                assert isinstance(event, DATA_EVENTS)
    assert server.handshake_error is None or isinstance(server.handshake_error, HandshakeError)
    assert server.error is None or isinstance(server.error, ProtocolError)

    client = new_client(max_head_size=256)
    for chunk in split_at(head.replace(b"GET /chat", b"HTTP/1.1 101") + tail, cuts):
        client.receive_data(chunk)
        for event in client.events_received():
            assert isinstance(event, (HandshakeComplete, *DATA_EVENTS))
    assert client.handshake_error is None or isinstance(client.handshake_error, HandshakeError)
