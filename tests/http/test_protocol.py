"""The sans-I/O HTTP/1.1 server core: framing, keep-alive, pipelining, limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.errors import InvalidState
from tether.http.parser import (
    Headers,
    HTTPError,
    encode_chunk,
    encode_response_head,
    parse_chunk_size,
    parse_request_head,
)
from tether.http.protocol import Data, EndOfMessage, InvalidRequest, RequestReceived, ServerConnection, State

GET = b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\n"


def feed(conn: ServerConnection, data: bytes) -> list[object]:
    conn.receive_data(data)
    return conn.events_received()


def body_of(events: list[object]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Data))


def test_get_and_respond_in_one_write() -> None:
    conn = ServerConnection()
    events = feed(conn, GET)
    assert isinstance(events[0], RequestReceived) and events[1] == EndOfMessage()
    req = events[0]
    assert (req.method, req.target, req.http_version, req.keep_alive, req.has_body) == (
        "GET",
        "/a?b=1",
        "1.1",
        True,
        False,
    )
    assert req.headers.get("HOST") == "x"
    conn.common_headers = b"Date: d\r\n"
    conn.respond(200, [("Content-Type", "text/plain")], b"hi")
    out = conn.data_to_send()
    assert out == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: d\r\nContent-Length: 2\r\n\r\nhi"
    assert conn.request_state is State.IDLE and conn.response_state is State.IDLE
    assert conn.data_to_send() == b""


def test_pipelined_requests_wait_for_the_response() -> None:
    conn = ServerConnection()
    events = feed(conn, GET + GET.replace(b"/a", b"/second"))
    assert [type(e) for e in events] == [RequestReceived, EndOfMessage]
    assert conn.events_received() == []  # the second waits for the first response
    assert conn.buffered > 0
    conn.respond(200)
    events = conn.events_received()
    assert events[0].target == "/second?b=1"


def test_content_length_body_in_pieces() -> None:
    conn = ServerConnection()
    events = feed(conn, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab")
    assert events[0].content_length == 5 and body_of(events) == b"ab"
    assert conn.request_state is State.BODY
    events = feed(conn, b"cdeGET")
    assert body_of(events) == b"cde" and events[-1] == EndOfMessage()
    assert conn.buffered == 3


def test_chunked_body_with_extensions_and_trailers() -> None:
    conn = ServerConnection()
    wire = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    wire += b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n"
    events = []
    for i in range(len(wire)):  # byte by byte
        events += feed(conn, wire[i : i + 1])
    assert body_of(events) == b"hello world"
    assert events[-1] == EndOfMessage() and conn.request_state is State.DONE


@given(st.lists(st.binary(min_size=1, max_size=50), max_size=5), st.integers(1, 30))
def test_chunked_any_split(chunks: list[bytes], step: int) -> None:
    wire = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    wire += b"".join(encode_chunk(c) for c in chunks) + b"0\r\n\r\n"
    conn = ServerConnection()
    events = []
    for i in range(0, len(wire), step):
        events += feed(conn, wire[i : i + step])
    assert body_of(events) == b"".join(chunks)
    assert events[-1] == EndOfMessage()


@given(st.binary(max_size=300))
def test_any_bytes_never_raise(data: bytes) -> None:
    conn = ServerConnection(max_head_size=200, max_request_line=100)
    events = feed(conn, data)
    assert all(isinstance(e, (RequestReceived, Data, EndOfMessage, InvalidRequest)) for e in events)


@pytest.mark.parametrize(
    ("wire", "status"),
    [
        (b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n", 400),
        (b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"GET / FOO/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\nY: z\r\n\r\n", 400),  # bare LF
        (b"GET / HTTP/1.1\r\nHost: x\x00\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n", 413),
        (b"GET / HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n", 417),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", 400),
    ],
)
def test_malformed_requests(wire: bytes, status: int) -> None:
    conn = ServerConnection(max_body_size=1000)
    events = feed(conn, wire)
    assert isinstance(events[-1], InvalidRequest) and events[-1].status == status
    assert conn.request_state is State.ERROR and not conn.keep_alive
    assert conn.events_received() == []
    if not any(isinstance(e, RequestReceived) for e in events):
        conn.respond(status, body=b"bad")
        assert conn.must_close and b"Connection: close" in conn.data_to_send()


def test_head_limits() -> None:
    conn = ServerConnection(max_head_size=100, max_request_line=50)
    assert [e.status for e in feed(conn, b"GET /" + b"a" * 60)] == [414]
    conn = ServerConnection(max_head_size=100, max_request_line=50)
    events = feed(conn, b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 100)
    assert [e.status for e in events] == [431]
    conn = ServerConnection(max_head_size=100)
    events = feed(conn, b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 100 + b"\r\n\r\n")
    assert events[0].status == 431
    conn = ServerConnection(max_headers=2)
    assert feed(conn, b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\n\r\n")[0].status == 431
    conn = ServerConnection(max_body_size=10)
    events = feed(
        conn, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n"
    )
    assert events[-1].status == 413


def test_http10_keep_alive_and_close() -> None:
    conn = ServerConnection()
    events = feed(conn, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert events[0].keep_alive
    conn.respond(200, body=b"x")
    assert b"Connection: keep-alive" in conn.data_to_send()
    events = feed(conn, b"GET / HTTP/1.0\r\n\r\n")
    assert not events[0].keep_alive
    conn.start_response(200)  # no length: delimited by the close (RFC 9112 §6.3)
    conn.send_data(b"abc")
    conn.end_response()
    out = conn.data_to_send()
    assert b"Transfer-Encoding" not in out and out.endswith(b"\r\n\r\nabc") and conn.must_close


def test_connection_close_and_leading_crlf() -> None:
    conn = ServerConnection()
    events = feed(conn, b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert not events[0].keep_alive
    conn.respond(204)
    out = conn.data_to_send()
    assert b"Content-Length" not in out and b"Connection: close" in out and conn.must_close


def test_chunked_response_and_head() -> None:
    conn = ServerConnection()
    feed(conn, GET)
    conn.start_response(200, [("Content-Type", "text/plain")])
    conn.send_data(b"ab")
    conn.send_data(b"")
    conn.end_response()
    out = conn.data_to_send()
    assert b"Transfer-Encoding: chunked\r\n" in out and out.endswith(b"\r\n\r\n2\r\nab\r\n0\r\n\r\n")
    feed(conn, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.respond(200, body=b"12345")
    out = conn.data_to_send()
    assert b"Content-Length: 5" in out and out.endswith(b"\r\n\r\n")
    feed(conn, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.start_response(200)
    conn.send_data(b"x")
    conn.end_response()
    assert conn.data_to_send().endswith(b"chunked\r\n\r\n")
    assert conn.request_state is State.IDLE


def test_content_length_response_and_sendfile_accounting() -> None:
    conn = ServerConnection()
    feed(conn, GET)
    conn.start_response(200, content_length=4)
    conn.send_data(b"ab")
    with pytest.raises(ValueError):
        conn.send_data(b"abc")
    conn.body_sent(2)
    with pytest.raises(ValueError):
        conn.body_sent(1)
    conn.end_response()
    assert conn.response_state is State.IDLE
    feed(conn, GET)
    conn.start_response(200, content_length=4)
    conn.end_response()  # short: must close
    assert conn.must_close


def test_expect_continue() -> None:
    conn = ServerConnection()
    events = feed(conn, b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert events[0].expect_continue
    conn.send_continue()
    assert conn.data_to_send() == b"HTTP/1.1 100 Continue\r\n\r\n"
    conn.send_continue()
    assert conn.data_to_send() == b""
    events = feed(conn, b"abc")
    assert body_of(events) == b"abc"
    # A final answer before the body: the connection cannot be reused.
    conn.respond(200)
    conn.data_to_send()
    events = feed(conn, b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    conn.respond(413)
    assert conn.must_close and b"Connection: close" in conn.data_to_send()


def test_state_errors_and_detach() -> None:
    conn = ServerConnection()
    with pytest.raises(InvalidState):
        conn.send_data(b"x")
    with pytest.raises(InvalidState):
        conn.end_response()
    with pytest.raises(InvalidState):
        conn.detach()
    feed(conn, b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x00")
    assert conn.request is not None and conn.request.upgrade == "websocket"
    assert conn.detach() == b"\x81\x00"
    assert conn.request_state is State.SWITCHED
    conn = ServerConnection()
    feed(conn, GET)
    conn.respond(200)
    feed(conn, GET)
    conn.start_response(200)
    with pytest.raises(InvalidState):
        conn.respond(200)
    with pytest.raises(ValueError):
        ServerConnection().respond(200, [("X", "a\r\nInjected: 1")])


def test_eof() -> None:
    conn = ServerConnection()
    conn.receive_eof()
    assert conn.events_received() == [] and conn.request_state is State.CLOSED
    conn = ServerConnection()
    feed(conn, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab")
    conn.receive_eof()
    assert conn.events_received()[-1].status == 400
    conn = ServerConnection()
    feed(conn, GET + b"GET / HT")
    conn.receive_eof()
    conn.respond(200)
    assert conn.events_received() == [] and conn.request_state is State.CLOSED
    conn = ServerConnection()
    conn.close()
    assert conn.request_state is State.CLOSED and not conn.keep_alive


def test_wire_helpers() -> None:
    assert parse_request_head(b"GET / HTTP/1.0") == ("GET", "/", "1.0", [])
    assert parse_request_head(b"GET / HTTP/1.1\r\nA:  b \t\r\nC:")[3] == [("a", "b"), ("c", "")]
    assert parse_chunk_size(b"1aF ; x=y") == 0x1AF
    with pytest.raises(HTTPError):
        parse_chunk_size(b"-1")
    assert encode_chunk(b"") == b""
    assert encode_response_head(599, []) == b"HTTP/1.1 599 \r\n\r\n"
    error = HTTPError(404)
    assert (error.status, error.message, str(error)) == (404, "Not Found", "404 Not Found")
    headers = Headers([("A", "1"), ("Authorization", "secret"), ("a", "2")])
    assert headers["a"] == "1" and headers.get_all("A") == ["1", "2"] and "A" in headers and 3 not in headers
    assert "secret" not in repr(headers) and len(headers) == 3 and next(iter(headers)) == ("a", "1")
    assert Headers([("X", "a, b"), ("x", "c")]).get_list("x") == ["a", "b", "c"]
    assert headers == Headers(list(headers)) and headers != 1


def test_remaining_limits_and_paths() -> None:
    # A request line longer than its limit inside a head that is not complete yet.
    conn = ServerConnection(max_head_size=1000, max_request_line=50)
    assert [e.status for e in feed(conn, b"GET /" + b"a" * 1100)] == [414]
    conn = ServerConnection(max_head_size=1000, max_request_line=50)
    assert [e.status for e in feed(conn, b"GET /" + b"a" * 60 + b" HTTP/1.1\r\nHost: x\r\n\r\n")] == [414]
    chunked = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    conn = ServerConnection()
    assert feed(conn, chunked + b"1" * 2000)[-1].status == 400
    conn = ServerConnection(max_head_size=100)
    assert feed(conn, chunked + b"0\r\nX: " + b"a" * 200)[-1].status == 431
    # A large body goes out as a second piece, not copied onto the head.
    conn = ServerConnection()
    feed(conn, GET)
    conn.respond(200, body=b"x" * 70000)
    assert len(conn.data_to_send()) > 70000
    # 204/304 streamed: no length, no body; HTTP/1.0 keep-alive on a stream.
    feed(conn, GET)
    conn.start_response(304)
    conn.send_data(b"ignored")
    conn.end_response()
    assert b"Content-Length" not in conn.data_to_send()
    feed(conn, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    conn.start_response(200, content_length=1)
    conn.send_data(b"x")
    conn.end_response()
    assert b"Connection: keep-alive" in conn.data_to_send()
    conn.start_response(200)
    with pytest.raises(InvalidState):
        conn.body_sent(1)
    # close() in the middle of a cycle: the connection ends after the response.
    conn = ServerConnection()
    feed(conn, GET)
    conn.close()
    conn.respond(200)
    assert conn.must_close
