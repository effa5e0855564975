"""The compiled frame scanner and join_mask agree with the pure-Python parser, which is the reference.

Skipped as a whole when tether._speedups is not built (or TETHER_NO_SPEEDUPS is set):
the pure-Python path is what every other test in tests/ws then runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.ws import frames, protocol
from tether.ws.frames import Opcode
from tether.ws.protocol import BinaryMessage, Connection, TextMessage

speedups = pytest.importorskip("tether._speedups")
if os.environ.get("TETHER_NO_SPEEDUPS") or frames.scan_frames is None:
    pytest.skip("the compiled accelerator is off", allow_module_level=True)

MASK = b"\x01\x02\x03\x04"


def frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True, rsv1: bool = False) -> bytes:
    return frames.encode_frame(opcode, payload, fin=fin, rsv1=rsv1, mask=MASK if masked else None)


@pytest.fixture
def pure_python(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(frames, "scan_frames", None)
    monkeypatch.setattr(protocol, "join_mask", frames._join_mask_py)
    yield


def unmasked(wire: bytes) -> list[tuple[int, bytes]]:
    """The (first byte, payload) of each frame the connection wrote; client masks are random."""
    out = []
    pos = 0
    while pos < len(wire):
        b0, length = wire[pos], wire[pos + 1] & 0x7F
        assert length < 126  # only control frames are written back here
        masked = wire[pos + 1] & 0x80
        start = pos + 2 + (4 if masked else 0)
        payload = wire[start : start + length]
        if masked:
            payload = frames._apply_mask_py(payload, wire[pos + 2 : pos + 6])
        out.append((b0, payload))
        pos = start + length
    return out


def outcome(is_client: bool, chunks: list[bytes], max_size: int) -> tuple[object, ...]:
    conn = Connection(is_client=is_client, max_message_size=max_size)
    for chunk in chunks:
        conn.receive_data(chunk)
    error = conn.error
    failure = (type(error), str(error), error.close_code) if error else None
    return conn.events_received(), failure, unmasked(conn.data_to_send())


def both_ways(is_client: bool, chunks: list[bytes], max_size: int = 2**20) -> tuple[object, object]:
    compiled = outcome(is_client, chunks, max_size)
    saved = frames.scan_frames, protocol.join_mask
    frames.scan_frames, protocol.join_mask = None, frames._join_mask_py
    try:
        python = outcome(is_client, chunks, max_size)
    finally:
        frames.scan_frames, protocol.join_mask = saved
    return compiled, python


payloads = st.one_of(
    st.binary(max_size=140),
    st.text(max_size=60).map(str.encode),
    st.sampled_from([b"\xff", b"abc\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc3\xa9"]),
    # Large payloads (extended lengths, pieces across reads): made, not drawn byte by byte.
    st.integers(min_value=65530, max_value=65540).map(lambda n: (bytes(range(256)) * 257)[:n]),
)
frame_specs = st.tuples(
    st.sampled_from([0x0, 0x1, 0x2, 0x3, 0x8, 0x9, 0xA]),
    payloads,
    st.booleans(),  # fin
    st.booleans(),  # masked as the side expects, or not
    st.booleans(),  # rsv1
)


@settings(max_examples=300, deadline=None)
@given(
    is_client=st.booleans(),
    specs=st.lists(frame_specs, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=70000), max_size=4),
    max_size=st.sampled_from([10, 125, 2**20]),
)
def test_same_events_errors_and_output_as_python(
    is_client: bool, specs: list[tuple[int, bytes, bool, bool, bool]], cuts: list[int], max_size: int
) -> None:
    wire = b""
    for opcode, payload, fin, right_mask, rsv1 in specs:
        if opcode >= 8:
            payload = payload[:125]
        masked = (not is_client) == right_mask
        wire += frame(opcode, payload, fin=fin, masked=masked, rsv1=rsv1)
    points = sorted({c for c in cuts if c < len(wire)})
    chunks = [wire[a:b] for a, b in zip([0, *points], [*points, len(wire)], strict=True)]
    compiled, python = both_ways(is_client, chunks, max_size)
    assert compiled == python


def test_many_small_frames_in_one_read() -> None:
    wire = b"".join(frame(Opcode.TEXT if i % 2 else Opcode.BINARY, f"#{i}".encode()) for i in range(100))
    compiled, python = both_ways(False, [wire])
    assert compiled == python
    events = compiled[0]  # type: ignore[index]
    assert events[:2] == [BinaryMessage(b"#0"), TextMessage("#1")]


def test_scan_stops_at_what_it_does_not_take() -> None:
    events: list[object] = []
    wire = frame(Opcode.TEXT, b"ok") + frame(Opcode.PING, b"") + frame(Opcode.TEXT, b"later")
    pos = speedups.ws_scan(wire, 0, True, 125, events, TextMessage, BinaryMessage)
    assert (pos, events) == (len(frame(Opcode.TEXT, b"ok")), [TextMessage("ok")])
    # Invalid UTF-8, an unmasked frame where masks are expected, a payload over fast_max,
    # an incomplete frame: left for the Python parser.
    for wire in (
        frame(Opcode.TEXT, b"\xff"),
        frame(Opcode.TEXT, b"x", masked=False),
        frame(Opcode.BINARY, b"x" * 11),
        frame(Opcode.BINARY, b"x" * 5)[:-1],
    ):
        assert speedups.ws_scan(wire, 0, True, 10, [], TextMessage, BinaryMessage) == 0
    # The frames after pos only.
    both = frame(Opcode.BINARY, b"a") + frame(Opcode.BINARY, b"b")
    events = []
    assert speedups.ws_scan(both, 7, True, 125, events, TextMessage, BinaryMessage) == len(both)
    assert events == [BinaryMessage(b"b")]


def test_scan_and_join_mask_refuse_bad_arguments() -> None:
    scan = speedups.ws_scan
    with pytest.raises(TypeError):
        scan(b"", 0, True, 125, [], TextMessage)
    with pytest.raises(TypeError):
        scan(bytearray(), 0, True, 125, [], TextMessage, BinaryMessage)
    with pytest.raises(TypeError):
        scan(b"", 0, True, 125, (), TextMessage, BinaryMessage)
    with pytest.raises(ValueError, match="pos"):
        scan(b"ab", 3, True, 125, [], TextMessage, BinaryMessage)
    with pytest.raises(TypeError, match="type"):
        scan(b"", 0, True, 125, [], "TextMessage", BinaryMessage)
    with pytest.raises(AttributeError):
        scan(b"", 0, True, 125, [], int, BinaryMessage)
    with pytest.raises(TypeError):
        speedups.join_mask([b"a"])
    with pytest.raises(ValueError, match="4 bytes"):
        speedups.join_mask([b"a"], b"abc")
    with pytest.raises(TypeError):
        speedups.join_mask([b"a", 1], MASK)
    with pytest.raises(TypeError):
        speedups.join_mask(1, MASK)


@given(parts=st.lists(st.binary(max_size=40), max_size=6), mask=st.binary(min_size=4, max_size=4))
def test_join_mask_is_join_then_mask(parts: list[bytes], mask: bytes) -> None:
    views = [memoryview(p) for p in parts]
    assert speedups.join_mask(views, mask) == frames._join_mask_py(parts, mask)
