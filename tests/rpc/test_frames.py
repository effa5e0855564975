"""tether.rpc.frames: parsing and emitting mg_rpc frames (spec mgos-rpc.md §1)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.errors import PayloadTooBig, ProtocolError
from tether.rpc import frames
from tether.rpc.frames import (
    MAX_FRAME_SIZE,
    FrameTooBig,
    InvalidFrame,
    InvalidId,
    InvalidJson,
    NotAnObject,
    RawJSON,
    Reply,
    Request,
    Response,
    WrongDestination,
    encode_request,
    encode_result,
    parse_frame,
    parse_result,
)


def test_request_fields() -> None:
    frame = parse_frame(
        b' {"id":1,"src":"mos","dst":"dev","tag":"t","method":"M","params":{"a":1},"auth":{"x":1}}\n'
    )
    assert frame == Request("M", {"a": 1}, 1, "1", "mos", "dev", "t", {"x": 1})
    assert isinstance(frame, Request) and not frame.is_notification
    assert "auth" not in repr(frame)  # secrets are not shown


def test_notification() -> None:
    frame = parse_frame('{"method":"M"}')
    assert isinstance(frame, Request)
    assert frame.is_notification and frame.id is None and frame.params is None


def test_args_is_a_synonym_and_params_wins() -> None:
    assert parse_frame('{"method":"M","args":[1]}').params == [1]  # type: ignore[union-attr]
    assert parse_frame('{"method":"M","args":[1],"params":[2]}').params == [2]  # type: ignore[union-attr]


def test_non_string_src_dst_tag_count_as_absent() -> None:
    frame = parse_frame('{"id":1,"method":"M","src":1,"dst":null,"tag":{}}')
    assert (frame.src, frame.dst, frame.tag) == (None, None, None)


@pytest.mark.parametrize(
    ("text", "id_json"),
    [
        ('{"id":9223372036854775807,"method":"M"}', "9223372036854775807"),
        ('{"id":18446744073709551616,"method":"M"}', "18446744073709551616"),
        ('{"id":1.50E+3,"method":"M"}', "1.50E+3"),
        ('{"id":-0,"method":"M"}', "-0"),
        ('{"id":"\\u0061bc","method":"M"}', '"\\u0061bc"'),
        ('{ "id" :  7 , "method":"M"}', "7"),
        ('{"id":1,"id":2,"method":"M"}', "2"),  # the last one wins, as in json.loads
    ],
)
def test_id_token_kept(text: str, id_json: str) -> None:
    frame = parse_frame(text)
    assert frame.id_json == id_json
    assert Reply.to(frame, device_id="d").encode().startswith(b'{"id":' + id_json.encode() + b",")  # type: ignore[arg-type]


def test_response_forms() -> None:
    assert parse_frame('{"id":1,"result":[1]}') == Response(1, "1", [1])
    ok = parse_frame('{"id":1,"src":"d","dst":"mos","error":{"code":0}}')
    assert isinstance(ok, Response) and ok.ok and ok.error_code == 0 and (ok.src, ok.dst) == ("d", "mos")
    failed = parse_frame('{"id":1,"error":{"code":404,"message":"No handler for X"}}')
    assert isinstance(failed, Response) and not failed.ok
    assert (failed.error_code, failed.error_message) == (404, "No handler for X")
    assert parse_frame('{"id":1,"error":{"code":5,"message":7}}').error_message == ""  # type: ignore[union-attr]
    assert parse_frame('{"id":1,"error":null,"result":2}') == Response(1, "1", 2)
    assert parse_frame('{"id":"a","method":""}') == Response("a", '"a"')  # empty method: a response
    assert parse_frame('{"result":null}') == Response()


@pytest.mark.parametrize("error", ['"oops"', '{"code":"5"}', '{"code":true}', "{}"])
def test_malformed_error_fails_with_minus_one(error: str) -> None:
    frame = parse_frame('{"id":1,"error":' + error + "}")
    assert isinstance(frame, Response)
    assert frame.error_code == -1 and frame.error_message.startswith("malformed error")


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"\xff{}", InvalidJson, "not valid UTF-8"),
        ('{"id":1,"method":"\ud800"}', InvalidJson, "not valid Unicode"),
        (b"", InvalidJson, "not JSON"),
        (b"{", InvalidJson, "expected a key"),
        (b'{"id" 1}', InvalidJson, "expected ':'"),
        (b'{"id":1 "method":"M"}', InvalidJson, "expected ',' or '}'"),
        (b'{"id":1,}', InvalidJson, "expected a key"),
        (b'{"id":1}x', InvalidJson, "extra data"),
        (b'{"id":NaN,"method":"M"}', InvalidJson, "NaN is not JSON"),
        (b'{"id":1,"method":"M","params":-Infinity}', InvalidJson, "not JSON"),
        (b'{"id":"\x01"}', InvalidJson, "not JSON"),
        (b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}", InvalidJson, "nested too deeply"),
        (b"[" * 5000 + b"]" * 5000, InvalidJson, "nested too deeply"),
        (b"[1] x", InvalidJson, "not JSON"),
        (b'[{"id":1,"method":"M"}]', NotAnObject, "batches are not supported"),
        (b"null", NotAnObject, "is null"),
        (b"true", NotAnObject, "is a boolean"),
        (b'"x"', NotAnObject, "is a string"),
        (b"1.5", NotAnObject, "is a number"),
        (b'{"id":true,"method":"M"}', InvalidId, "not a boolean"),
        (b'{"id":{},"method":"M"}', InvalidId, "not an object"),
        (b'{"id":[],"method":"M"}', InvalidId, "not an array"),
        (b'{"id":null,"method":"M"}', InvalidId, "not null"),
        (b'{"id":1,"method":5}', InvalidFrame, "method must be a string, not a number"),
        (b'{"id":1,"method":"x","params":' + b"1" * 5000 + b"}", InvalidJson, "not JSON"),
        (b"{}", InvalidFrame, "none of id, method, result and error"),
        (b'{"src":"mos","params":{}}', InvalidFrame, "none of"),
    ],
)
def test_invalid_frames(data: bytes | str, error: type[InvalidFrame], message: str) -> None:
    with pytest.raises(error, match=None) as caught:
        parse_frame(data, max_size=1 << 20)
    assert type(caught.value) is error
    assert message in str(caught.value)


def test_size_limit() -> None:
    frame = '{"method":"M","params":"' + "x" * (MAX_FRAME_SIZE - 26) + '"}'
    assert len(frame) == MAX_FRAME_SIZE
    assert isinstance(parse_frame(frame), Request)
    assert isinstance(parse_frame(frame.encode()), Request)
    with pytest.raises(FrameTooBig, match="4097 bytes is over the limit of 4096"):
        parse_frame(frame + " ")
    with pytest.raises(FrameTooBig):
        parse_frame(frame.encode() + b" ")
    # Text is measured in UTF-8 bytes: 2048 two-byte characters are 4096 bytes and more.
    with pytest.raises(FrameTooBig):
        parse_frame('{"method":"M","params":"' + "é" * 2040 + '"}')
    assert parse_frame(memoryview(b'{"method":"M"}'), max_size=14) == Request("M")
    assert parse_frame(bytearray('{"method":"é"}'.encode())) == Request("é")


def test_error_classes() -> None:
    assert issubclass(InvalidFrame, ProtocolError)
    assert issubclass(FrameTooBig, PayloadTooBig) and issubclass(FrameTooBig, InvalidFrame)
    for cls in (InvalidJson, NotAnObject, InvalidId, WrongDestination):
        assert issubclass(cls, InvalidFrame)
        assert cls("x").close_code == 1007
    assert FrameTooBig("x").close_code == 1009


def test_reply_field_order_and_omissions() -> None:
    request = parse_frame('{"tag":"t","dst":"dev2","src":"mos","method":"M","id":5}')
    assert isinstance(request, Request)
    assert Reply.to(request, device_id="dev", result={"b": 1, "a": [None, True]}).encode() == (
        b'{"id":5,"src":"dev2","dst":"mos","tag":"t","result":{"b":1,"a":[null,true]}}'
    )
    bare = parse_frame('{"id":"x","src":"","tag":"","method":"M"}')
    assert isinstance(bare, Request)
    assert Reply.to(bare, device_id="dev").encode() == b'{"id":"x","src":"dev","result":null}'
    error = Reply.to(bare, device_id="dev", error_code=404, error_message="No handler for M")
    assert not error.ok
    assert error.encode() == b'{"id":"x","src":"dev","error":{"code":404,"message":"No handler for M"}}'
    zero = Reply.to(bare, device_id="dev", error_code=0)
    assert zero.ok and zero.encode() == b'{"id":"x","src":"dev","error":{"code":0}}'
    assert Reply("1", "d", result=RawJSON("3.00")).encode() == b'{"id":1,"src":"d","result":3.00}'


def test_reply_text_is_utf8_and_lone_surrogates_are_escaped() -> None:
    assert Reply("1", "d", result="é€").encode() == '{"id":1,"src":"d","result":"é€"}'.encode()
    assert Reply("1", "d", result="é\ud800").encode() == b'{"id":1,"src":"d","result":"\\u00e9\\ud800"}'
    assert json.loads(Reply("1", "d", result="é\ud800").encode()) == {
        "id": 1,
        "src": "d",
        "result": "é\ud800",
    }


def test_reply_errors() -> None:
    with pytest.raises(ValueError, match="notification"):
        Reply.to(Request("M"), device_id="d")
    with pytest.raises(ValueError):
        Reply("1", "d", result=float("nan")).encode()
    with pytest.raises(TypeError):
        Reply("1", "d", result={1, 2}).encode()


def test_encode_request() -> None:
    assert encode_request("M") == b'{"method":"M"}'
    assert encode_request("Sum", {"a": 1}, id=1099511627777, src="mos") == (
        b'{"id":1099511627777,"src":"mos","method":"Sum","params":{"a":1}}'
    )
    assert encode_request("M", RawJSON("[1]"), id="q", src="s", dst="d", tag="t", auth={"realm": "RPC"}) == (
        b'{"id":"q","src":"s","dst":"d","tag":"t","method":"M","params":[1],"auth":{"realm":"RPC"}}'
    )
    assert encode_request("M", dst="d") == b'{"dst":"d","method":"M"}'
    with pytest.raises(ValueError, match="empty"):
        encode_request("")


def test_request_round_trip() -> None:
    wire = encode_request("A.B", {"x": [1, "é"]}, id=42, src="mos", dst="dev", tag="t")
    assert parse_frame(wire) == Request("A.B", {"x": [1, "é"]}, 42, "42", "mos", "dev", "t")


# Property tests: any JSON value, any bytes.

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
frame_like = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "method": st.one_of(st.sampled_from(["RPC.Ping", "RPC.List", "X"]), json_values),
        "params": json_values,
        "src": json_values,
        "dst": json_values,
        "tag": json_values,
        "result": json_values,
        "error": json_values,
    },
)


def check(data: bytes | str) -> Request | Response | None:
    try:
        return parse_frame(data, max_size=1 << 16)
    except InvalidFrame:
        return None


@given(st.one_of(json_values, frame_like))
def test_any_json_value_parses_or_is_invalid(value: Any) -> None:
    text = json.dumps(value)
    frame = check(text)
    assert frame == check(text.encode())
    if isinstance(frame, Request) and frame.id_json is not None:
        reply = Reply.to(frame, device_id="dev").encode()
        assert json.loads(reply)["id"] == value["id"]


@given(st.binary(max_size=64))
def test_any_bytes_parse_or_are_invalid(data: bytes) -> None:
    check(data)


@given(st.integers(min_value=-(2**63), max_value=2**64) | st.text())
def test_ids_echo_byte_for_byte(frame_id: int | str) -> None:
    token = json.dumps(frame_id)
    frame = parse_frame('{"id":' + token + ',"method":"M"}')
    assert isinstance(frame, Request) and frame.id == frame_id
    reply = Reply.to(frame, device_id="d").encode()
    assert reply.startswith(b'{"id":' + token.encode() + b',"src":"d"')


@pytest.mark.parametrize(
    ("src", "dst", "tag", "result"),
    [
        ("dev", None, None, None),
        ("dev", "mos", None, {"a": [1, 2.5, "é"]}),
        ("dev", "mos", 't"1', RawJSON('{"raw":true}')),
        ("d\u00e9v", "", "", "text"),
    ],
)
def test_encode_result_is_reply_encode(src: str, dst: str | None, tag: str | None, result: Any) -> None:
    expected = Reply("7", src, dst, tag, result).encode()
    for _ in range(2):  # built, then from the cache
        assert encode_result("7", src, dst, tag, result) == expected
    error = Reply("7", src, dst, tag, None, 404, "no").encode()
    assert json.loads(error) == {
        "id": 7,
        "src": src,
        **({"dst": dst} if dst else {}),
        **({"tag": tag} if tag else {}),
        "error": {"code": 404, "message": "no"},
    }


@pytest.mark.parametrize(
    "fields",
    [
        {"id": 1099511627776, "src": "tether", "method": "RPC.Ping"},
        {"id": 5, "src": "tether", "dst": "dev", "tag": "x", "method": "Sum", "params": {"a": 1}},
        {"id": -3, "src": 'a"b', "method": "\u00e9"},
    ],
)
def test_encode_request_repeated_calls(fields: dict[str, Any]) -> None:
    args = {k: v for k, v in fields.items() if k != "method"}
    for n in range(3):  # the cached addressing, with the id counting up
        args["id"] = fields["id"] + n
        frame = encode_request(fields["method"], **args)
        assert list(json.loads(frame)) == list({**fields, "id": 0})
        assert json.loads(frame) == {**fields, "id": fields["id"] + n}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ('{"id":12,"src":"dev","result":{"a":1}}', ("12", {"a": 1})),
        ('{"result":null,"id":-4}', ("-4", None)),
        ('{"id":12,"error":{"code":0},"result":1}', None),  # an error: parse_frame words it
        ('{"id":12,"method":"","result":1}', None),
        ('{"id":0,"result":1}', None),
        ('{"id":1.5,"result":1}', None),
        ('{"id":"12","result":1}', None),
        ('{"id":12}', None),
        ('{"id":12,"result":"\u00e9"}', None),
        ('{"id":12,"result":', None),
        ('{"id":12,"result":1} ', None),
        ('{"id":12,"result":NaN}', None),
        ("{", None),
        ("{" + "[" * 100000, None),  # too deep for the decoder
        ("[1]", None),
        (b'{"id":12,"result":1}', None),
    ],
)
def test_parse_result(data: str | bytes, expected: tuple[str, Any] | None) -> None:
    assert parse_result(data) == expected
    if expected is not None:
        frame = parse_frame(data)
        assert isinstance(frame, Response) and frame.ok
        assert (frame.id_json, frame.result) == expected
    assert parse_result('{"id":12,"result":1}', max_size=10) is None


@pytest.mark.parametrize(
    "text",
    [
        '{"id":1099511627776,"src":"mos","method":"RPC.Ping"}',
        '{"method":"Sum","args":[1],"dst":"dev","tag":"t","auth":{"username":"u"},"id":"x"}',
        ' {"id":1.0,"method":"Sum","src":5}',
    ],
)
def test_parsed_requests_are_whole_frozen_dataclasses(text: str) -> None:
    request = parse_frame(text)
    assert isinstance(request, Request)
    # Built without __init__ (frames._frozen): every field, in order, and still frozen.
    assert list(vars(request)) == [f.name for f in dataclasses.fields(Request)]
    assert request == Request(**vars(request))
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.method = "other"  # type: ignore[misc]


# The request fast path of the dispatcher (frames._parse_request).


def fast(text: str, max_size: int = 1 << 16) -> Request | None:
    request = frames._parse_request(text, max_size)
    if request is not None:
        assert list(vars(request)) == [f.name for f in dataclasses.fields(Request)]
    return request


@given(
    st.one_of(st.integers(min_value=1, max_value=2**70), json_values),
    frame_like,
    st.integers(min_value=1, max_value=2**64),
)
def test_the_request_fast_path_parses_as_parse_frame(frame_id: Any, rest: dict[str, Any], other: int) -> None:
    rest.pop("id", None)
    text = json.dumps({"id": frame_id, **rest}, separators=(",", ":"))
    request = fast(text)
    assert request is None or request == check(text)
    # The same frame with another id.
    again = '{"id":' + str(other) + text[len('{"id":' + json.dumps(frame_id)) :]
    request = fast(again)
    assert request is None or request == check(again)


def test_params_are_not_shared_between_calls_and_the_size_limit_holds() -> None:
    a, b = fast('{"id":1,"method":"M","params":{"a":1}}'), fast('{"id":2,"method":"M","params":{"a":1}}')
    assert a is not None and b is not None and a.params is not b.params  # a handler may change its own
    text = '{"id":1,"method":"M1"}'
    assert fast(text) is not None and fast(text, max_size=len(text) - 1) is None
    assert fast('{"id":\u0663,"src":5,"method":"M","args":"x"}') is None  # a digit, not ASCII


def test_reply_texts_are_what_replies_encode() -> None:
    for result in ("é€", "é\ud800", {"a": [1, None]}, RawJSON("3.00")):
        text = frames._result_text("1", "d", "mos", "t", result)
        assert text.encode("utf-8") == Reply("1", "d", "mos", "t", result).encode()
    for message in ("", "bad", "é\ud800"):
        text = frames._error_text("1", "d", None, None, 400, message)
        assert text.encode("utf-8") == Reply("1", "d", None, None, None, 400, message).encode()
