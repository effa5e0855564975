"""The fast path of request parsing against the general one.

`match_simple_head` (with `ServerConnection._simple_head` and the lazy
`Headers`) must give what `parse_request_head` and `_check_head` give for every
head it accepts, and leave every other head, malformed ones included, to them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.http.parser import Headers, match_simple_head, parse_request_head, split_fields
from tether.http.protocol import EndOfMessage, InvalidRequest, RequestReceived, ServerConnection, State

WRK = b"GET /api/json HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"


@contextmanager
def general_only() -> Iterator[None]:
    """Run the core without its fast path."""
    with mock.patch("tether.http.protocol.match_simple_head", lambda buf, size: None):
        yield


def core_state(conn: ServerConnection) -> tuple[object, ...]:
    return (
        conn.request_state,
        conn.response_state,
        conn.keep_alive,
        conn.buffered,
        conn._head_only,
        conn._expect,
        conn._chunked,
        conn._remaining,
        conn.error,
    )


def run(data: bytes, limits: dict[str, int], chunks: list[int]) -> tuple[list[object], tuple[object, ...]]:
    """Feed data in pieces, then answer the request if one came; the events and final state."""
    conn = ServerConnection(**limits)
    events: list[object] = []
    at = 0
    for size in [*chunks, len(data)]:
        conn.receive_data(data[at : at + size])
        at += size
        events += conn.events_received()
    if conn.request_state is State.DONE and conn.response_state is State.IDLE:
        conn.common_headers = b"Date: d\r\n"
        conn.respond(200, (("Content-Type", "application/json"),), b"{}")
        events.append(conn.data_to_send())
        events += conn.events_received()
    return events, core_state(conn)


def assert_same(data: bytes, limits: dict[str, int] | None = None, chunks: list[int] | None = None) -> None:
    limits = limits or {}
    chunks = chunks or []
    fast = run(data, limits, chunks)
    with general_only():
        general = run(data, limits, chunks)
    assert fast == general
    # Field values read from a lazy Headers are the ones the general parser gives.
    for got, want in zip(fast[0], general[0], strict=True):
        if isinstance(got, RequestReceived):
            assert isinstance(want, RequestReceived)
            assert list(got.headers) == list(want.headers)
            assert repr(got.headers) == repr(want.headers)


names = st.sampled_from(
    [
        "Host",
        "host",
        "HOST",
        "Content-Length",
        "content-length",
        "Transfer-Encoding",
        "Connection",
        "CONNECTION",
        "Expect",
        "Upgrade",
        "Hostname",
        "X-Host",
        "User-Agent",
        "Cookie",
        "X Y",
        " Host",
        "",
        "Hōst",
    ]
)
separators = st.sampled_from([":", ": ", ":\t", " :", ":  "])
values = st.sampled_from(
    [
        "x",
        "127.0.0.1:8000",
        " padded \t",
        "",
        "0",
        "5",
        "1, 1",
        "chunked",
        "gzip, chunked",
        "close",
        "keep-alive",
        "Upgrade",
        "100-continue",
        "websocket",
        "a\x00b",
        "a\rb",
        "a\nb",
        "é",
        "a\x7fb",
        "a\tb",
    ]
)
field_lines = st.builds(lambda n, s, v: n + s + v, names, separators, values)
methods = st.sampled_from(
    ["GET", "HEAD", "POST", "DELETE", "OPTIONS", "M-SEARCH", "get", "G ET", "", "GET\x00"]
)
targets = st.sampled_from(
    ["/", "/api/json", "/a?b=1", "/%41%2f", "http://h/x", "*", "/a b", "/\x7f", "/é", "", "/" + "a" * 40]
)
versions = st.sampled_from(
    ["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.2", "http/1.1", "HTTP/1.1 ", "HTTP/11"]
)
line_ends = st.sampled_from(["\r\n", "\r\n", "\r\n", "\n", "\r", "\r\n "])


@st.composite
def request_heads(draw: st.DrawFn) -> bytes:
    line = f"{draw(methods)} {draw(targets)} {draw(versions)}"
    lines = [line, *draw(st.lists(field_lines, max_size=6))]
    text = draw(st.sampled_from(["", "\r\n", "\r\n\r\n"]))
    for item in lines:
        text += item + draw(line_ends)
    text += draw(st.sampled_from(["\r\n", "\r\n", "", "\n"]))
    text += draw(st.sampled_from(["", "hello", "GET / HTTP/1.1\r\nHost: y\r\n\r\n"]))
    return text.encode("latin-1", "replace") if draw(st.booleans()) else text.encode("utf-8")


limits = st.fixed_dictionaries(
    {},
    optional={
        "max_head_size": st.integers(0, 80),
        "max_request_line": st.integers(0, 40),
        "max_headers": st.integers(0, 4),
        "max_body_size": st.integers(0, 8),
    },
)


@given(request_heads(), limits, st.lists(st.integers(0, 30), max_size=3))
def test_fast_path_gives_the_general_result(data: bytes, limits: dict[str, int], chunks: list[int]) -> None:
    assert_same(data, limits, chunks)


@given(st.binary(max_size=120), limits)
def test_fast_path_on_any_bytes(data: bytes, limits: dict[str, int]) -> None:
    assert_same(data, limits)


@given(request_heads())
def test_a_matched_head_parses_the_same(data: bytes) -> None:
    match = match_simple_head(data, 16384)
    if match is None:
        return
    method, target, minor, block = match.groups()
    head = data[: match.end() - 4]
    version = "1.1" if minor == b"1" else "1.0"
    fields = split_fields(block[:-2].decode("latin-1")) if block else []
    assert parse_request_head(head) == (method.decode(), target.decode(), version, fields)
    assert Headers._unsplit(block) == Headers._lowered(fields)


@pytest.mark.parametrize(
    "data",
    [
        WRK,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nhOsT: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        b"GET / HTTP/1.1\r\nHostname: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-Host: x\r\nhost: y\r\nX-A: \t b \t\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nExpect: nothing\r\n\r\n",
        b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\nHost: x\n\n",
        b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        b"GET /\xe9 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \xe9\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n",
        WRK + WRK,
    ],
)
def test_cases(data: bytes) -> None:
    assert_same(data)


@pytest.mark.parametrize("size", [40, 45, 46, 47, 48, 60])
def test_head_size_limit_at_the_edge(size: int) -> None:
    assert_same(WRK, {"max_head_size": size})  # the head is 47 bytes without its CRLF CRLF


@pytest.mark.parametrize("size", [20, 22, 23, 24, 30])
def test_request_line_limit_at_the_edge(size: int) -> None:
    assert_same(WRK, {"max_request_line": size})  # the request line is 23 bytes


@pytest.mark.parametrize("count", [0, 1, 2])
def test_field_count_limit_at_the_edge(count: int) -> None:
    assert_same(b"GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n\r\n", {"max_headers": count})


def test_plain_request_event() -> None:
    conn = ServerConnection()
    conn.receive_data(WRK)
    event, end = conn.events_received()
    assert event == RequestReceived("GET", "/api/json", Headers([("Host", "127.0.0.1:8000")]))
    assert end == EndOfMessage()
    assert isinstance(event, RequestReceived)
    assert event.headers.get("host") == "127.0.0.1:8000"
    assert len(event.headers) == 1 and "HOST" in event.headers and event.headers["Host"] == "127.0.0.1:8000"
    with pytest.raises(AttributeError):
        event.method = "POST"  # type: ignore[misc]


def test_lazy_headers_are_split_once() -> None:
    headers = Headers._unsplit(b"Host: x\r\nCookie: secret\r\nA: 1\r\nA: 2\r\n")
    assert repr(headers) == "Headers([('host', 'x'), ('cookie', '<redacted>'), ('a', '1'), ('a', '2')])"
    assert headers.get_all("a") == ["1", "2"] and headers.get_list("A") == ["1", "2"]
    assert headers._block == b""
    assert list(Headers._unsplit(b"")) == []


def test_slow_head_takes_the_general_path() -> None:
    # A head arriving in pieces is located from where the last search stopped.
    conn = ServerConnection()
    for byte in WRK[:-1]:
        conn.receive_data(bytes([byte]))
        assert conn.events_received() == []
    conn.receive_data(WRK[-1:])
    assert [type(e) for e in conn.events_received()] == [RequestReceived, EndOfMessage]


def test_respond_fast_path_matches_the_general_one() -> None:
    outputs = []
    for fields in ((("Content-Type", "text/plain"),), [("Content-Type", "text/plain")]):
        for _ in range(2):  # the second time from the cache of heads
            conn = ServerConnection()
            conn.common_headers = b"Date: d\r\n"
            conn.receive_data(WRK)
            conn.events_received()
            conn.respond(200, fields, b"hi")
            outputs.append(conn.data_to_send())
            assert conn.request_state is State.IDLE and conn.response_state is State.IDLE
            assert conn.request is None
    assert (
        outputs
        == [b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: d\r\nContent-Length: 2\r\n\r\nhi"] * 4
    )


def test_respond_fast_path_refuses_bad_fields() -> None:
    conn = ServerConnection()
    conn.receive_data(WRK)
    conn.events_received()
    with pytest.raises(ValueError):
        conn.respond(200, (("X", "a\r\nb"),), b"hi")
    # Unhashable fields cannot be looked up in the cache: the general path takes them.
    conn.respond(200, (("X", ["y"]),), b"hi")  # type: ignore[arg-type]
    assert conn.data_to_send().startswith(b"HTTP/1.1 200 OK\r\nX: ['y']\r\n")


def test_invalid_request_is_reported_once() -> None:
    conn = ServerConnection()
    conn.receive_data(b"GET / HTTP/1.1\r\n\r\n")
    assert conn.events_received() == [InvalidRequest(400, "missing or repeated Host header field")]
