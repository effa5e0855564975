"""The compiled MQTT packet splitter agrees with the pure-Python one, which is the reference.

Skipped as a whole when tether._speedups is not built, is an older build without
split_packets, or TETHER_NO_SPEEDUPS is set: the pure-Python path is what the other tests
in tests/mqtt then run.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.errors import ProtocolError
from tether.mqtt import packets
from tether.mqtt.packets import MQTT_3_1_1, MQTT_5, Properties, PubAck, Publish, encode
from tether.mqtt.protocol import Message

speedups = pytest.importorskip("tether._speedups")
if os.environ.get("TETHER_NO_SPEEDUPS") or not hasattr(speedups, "split_packets"):
    pytest.skip("the compiled MQTT splitter is off", allow_module_level=True)

compiled = speedups.split_packets
reference = packets._split_packets_py

KNOWN = {"a/b": "a/b", "sensors/\u00e9t\u00e9": "sensors/\u00e9t\u00e9", "": ""}
NAMES = {topic.encode(): topic for topic in KNOWN}
TOPICS = st.sampled_from(["a/b"] * 3 + ["sensors/\u00e9t\u00e9"] * 2 + ["other/topic", "x" * 200])


@st.composite
def wire_packets(draw: st.DrawFn, version: int) -> bytes:
    """One packet's bytes: mostly PUBLISH (valid or with a broken body), sometimes others."""
    kind = draw(st.sampled_from(["publish"] * 8 + ["ack", "raw", "header"]))
    if kind == "publish":
        topic = draw(TOPICS)
        props = Properties(content_type="x") if version == MQTT_5 and draw(st.booleans()) else Properties()
        qos = draw(st.sampled_from([0, 0, 0, 0, 1, 2]))
        packet = Publish(
            topic, draw(st.binary(max_size=300)), qos, draw(st.booleans()), False, qos or None, props
        )
        wire = encode(packet, version)
        if draw(st.integers(0, 3)):
            return wire
        # The same fixed header over a body that may not decode: the splitter only frames.
        body = draw(st.binary(min_size=len(wire) - 2, max_size=len(wire) - 2))
        return wire[:2] + body if len(wire) < 129 else wire
    if kind == "ack":
        return encode(PubAck(draw(st.integers(1, 0xFFFF))), version)
    if kind == "header":
        # Any first byte and remaining length bytes: reserved types, bad flags, lengths
        # longer than four bytes or not in their shortest form.
        return draw(st.binary(min_size=1, max_size=6))
    return draw(st.binary(max_size=20))


@st.composite
def buffers(draw: st.DrawFn) -> tuple[bytes, int, int, int]:
    version = draw(st.sampled_from([MQTT_3_1_1, MQTT_5]))
    data = b"".join(draw(st.lists(wire_packets(version), max_size=8)))
    data = data[: draw(st.integers(0, len(data)))]  # a partial packet at the end
    at = draw(st.sampled_from([0, 0, 0, draw(st.integers(0, len(data)))]))
    max_size = draw(st.sampled_from([2, 5, 40, 300] + [packets.DEFAULT_MAX_SIZE] * 4))
    return data, at, max_size, version


def split_both(data: Any, at: int, max_size: int, version: int, names: Any, message: Any) -> Any:
    expected = reference(data, at, max_size, version, names, message)
    got = compiled(data, at, max_size, version, names, message)
    assert got == expected
    assert [type(item) for item in got[0]] == [type(item) for item in expected[0]]
    return got


@settings(max_examples=1500)
@given(case=buffers(), with_names=st.booleans())
def test_compiled_agrees_with_the_reference(case: tuple[bytes, int, int, int], with_names: bool) -> None:
    data, at, max_size, version = case
    names = NAMES if with_names else None
    items, offset, malformed = split_both(data, at, max_size, version, names, Message)
    for kind in (bytes, bytearray, memoryview):
        assert compiled(kind(data), at, max_size, version, names, Message) == (items, offset, malformed)
    if malformed:
        # The error is the one the fixed header decoder gives at that offset.
        with pytest.raises(ProtocolError):
            packets._decode_fixed_header(memoryview(data), offset, max_size, version)


@settings(max_examples=300)
@given(data=st.binary(max_size=200), at=st.integers(0, 10), version=st.sampled_from([4, 5]))
def test_any_bytes(data: bytes, at: int, version: int) -> None:
    split_both(data, min(at, len(data)), 64, version, NAMES, Message)


@pytest.mark.parametrize("version", [MQTT_3_1_1, MQTT_5])
def test_messages_are_whole_frozen_messages(version: int) -> None:
    wire = encode(Publish("a/b", b"payload", retain=True), version) + encode(Publish("a/b", b""), version)
    items, offset, malformed = compiled(wire, 0, 1000, version, NAMES, Message)
    assert items == [Message("a/b", b"payload", 0, True), Message("a/b", b"", 0, False)]
    assert (offset, malformed) == (len(wire), False)
    first = items[0]
    assert hash(first) == hash(Message("a/b", b"payload", 0, True))
    assert first.properties is Message("a/b", b"").properties
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.topic = "c"


def test_a_callable_that_is_not_a_slotted_class_is_called() -> None:
    wire = encode(Publish("a/b", b"p", retain=True), MQTT_5)
    calls: list[tuple[Any, ...]] = []

    def make(*args: Any) -> tuple[Any, ...]:
        calls.append(args)
        return args

    assert compiled(wire, 0, 100, MQTT_5, NAMES, make) == ([("a/b", b"p", 0, True)], len(wire), False)
    assert calls == [("a/b", b"p", 0, True)]

    @dataclasses.dataclass
    class Plain:  # has a __dict__: called, not copied
        topic: str
        payload: bytes
        qos: int
        retain: bool

    assert compiled(wire, 0, 100, MQTT_5, NAMES, Plain) == ([Plain("a/b", b"p", 0, True)], len(wire), False)
    # Back to Message: its template is made again.
    assert compiled(wire, 0, 100, MQTT_5, NAMES, Message)[0] == [Message("a/b", b"p", 0, True)]


def test_a_topic_mapped_to_none_is_not_known() -> None:
    wire = encode(Publish("a/b", b"p"), MQTT_5)
    assert split_both(wire, 0, 100, MQTT_5, {b"a/b": None}, Message)[0] == [(0x30, 2, len(wire))]


def test_errors_from_the_message_class_propagate() -> None:
    wire = encode(Publish("a/b", b"p"), MQTT_5)

    def fail(*args: Any) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        compiled(wire, 0, 100, MQTT_5, NAMES, fail)


def test_bad_arguments() -> None:
    with pytest.raises(TypeError):
        compiled(b"", 0, 10)
    with pytest.raises(TypeError):
        compiled(b"", 0, 10, 5, [], Message)
    with pytest.raises(TypeError):
        compiled("text", 0, 10, 5)
    with pytest.raises(ValueError, match="-1"):
        compiled(b"", -1, 10, 5)
    assert compiled(b"\x30\x00", 5, 10, 5) == ([], 5, False)
