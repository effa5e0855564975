"""The opening handshake's HTTP heads (RFC 6455 §4, RFC 9110, RFC 9112): tether.ws.handshake."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.errors import HandshakeError
from tether.ws.handshake import (
    GUID,
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

# RFC 6455 §1.2 and §1.3.
RFC_REQUEST = (
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
RFC_RESPONSE = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    b"Sec-WebSocket-Protocol: chat\r\n"
    b"\r\n"
)


def assert_request_round_trip(request: Request, wire: bytes) -> None:
    assert build_request(request) == wire
    assert parse_request(wire[:-4]) == request


def assert_response_round_trip(response: Response, wire: bytes) -> None:
    assert build_response(response) == wire
    assert parse_response(wire[:-4]) == response


class TestRfcExamples:
    def test_accept_key(self) -> None:
        assert GUID == "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

    def test_request(self) -> None:
        headers = Headers(
            [
                ("Host", "server.example.com"),
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Origin", "http://example.com"),
                ("Sec-WebSocket-Protocol", "chat, superchat"),
                ("Sec-WebSocket-Version", "13"),
            ]
        )
        assert_request_round_trip(Request("/chat", headers), RFC_REQUEST)

    def test_response(self) -> None:
        headers = Headers(
            [
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
                ("Sec-WebSocket-Protocol", "chat"),
            ]
        )
        assert_response_round_trip(Response(101, headers, "Switching Protocols"), RFC_RESPONSE)


class TestHeaders:
    def test_lookup_ignores_case(self) -> None:
        h = Headers([("Sec-WebSocket-Protocol", "a"), ("X", "1"), ("sec-websocket-protocol", "b")])
        assert h.get("SEC-WEBSOCKET-PROTOCOL") == "a"
        assert h.get_all("sec-WebSocket-Protocol") == ["a", "b"]
        assert h.get("missing") is None
        assert h.get("missing", "d") == "d"
        assert h.get_all("missing") == []
        assert "x" in h
        assert "y" not in h
        assert 1 not in h
        assert len(h) == 3
        assert list(h) == [("Sec-WebSocket-Protocol", "a"), ("X", "1"), ("sec-websocket-protocol", "b")]

    def test_empty_value_is_present(self) -> None:
        assert "X" in Headers([("X", "")])

    def test_add(self) -> None:
        h = Headers()
        h.add("X-A", "1")
        h.add("X-A", "two words\tand a tab")
        assert h.get_all("x-a") == ["1", "two words\tand a tab"]

    @pytest.mark.parametrize("name", ["", "a b", "a:b", "é", "a\r\nb"])
    def test_add_refuses_a_non_token_name(self, name: str) -> None:
        with pytest.raises(ValueError, match="not a token"):
            Headers().add(name, "v")

    @pytest.mark.parametrize("value", ["a\rb", "a\nb", "a\x00b", "x\r\nSet-Cookie: y"])
    def test_add_refuses_header_injection(self, value: str) -> None:
        with pytest.raises(ValueError, match="CR, LF or NUL"):
            Headers().add("X", value)

    def test_equality(self) -> None:
        assert Headers([("A", "1")]) == Headers([("A", "1")])
        assert Headers([("A", "1")]) != Headers([("a", "1")])
        assert Headers() != []

    def test_repr_redacts_secrets(self) -> None:
        h = Headers(
            [
                ("Authorization", "Basic c2VjcmV0"),
                ("Proxy-Authorization", "Basic c2VjcmV0"),
                ("cookie", "session=secret"),
                ("Set-Cookie", "session=secret"),
                ("Host", "example.com"),
            ]
        )
        text = repr(h)
        assert "secret" not in text and "c2VjcmV0" not in text
        assert text.count("<redacted>") == 4
        assert "example.com" in text


class TestKeys:
    @pytest.mark.parametrize(
        ("key", "valid"),
        [
            ("dGhlIHNhbXBsZSBub25jZQ==", True),
            ("AAAAAAAAAAAAAAAAAAAAAA==", True),
            ("dGhlIHNhbXBsZSBub25jZQ", False),  # no padding
            ("dGhlIHNhbXBsZSBub25jZQ==AA", False),
            ("AAAAAAAAAAAAAAAAAAAA", False),  # 15 bytes
            ("AAAAAAAAAAAAAAAAAAAAAAA=", False),  # 17 bytes
            ("dGhlIHNhbXBsZSBub25jZQ!=", False),
            ("", False),
            ("é" * 24, False),
        ],
    )
    def test_is_valid_key(self, key: str, valid: bool) -> None:
        assert is_valid_key(key) is valid


class TestParseRequest:
    def test_fields(self) -> None:
        request = parse_request(b"GET /a?b=c HTTP/1.1\r\nHost:  x \t\r\nX-Empty:\r\nX-Latin: caf\xe9")
        assert request.method == "GET"
        assert request.path == "/a?b=c"
        assert list(request.headers) == [("Host", "x"), ("X-Empty", ""), ("X-Latin", "café")]

    def test_no_fields(self) -> None:
        assert parse_request(b"OPTIONS * HTTP/1.1") == Request("*", Headers(), "OPTIONS")

    @pytest.mark.parametrize(
        "head",
        [
            b"",
            b"GET",
            b"GET /",
            b"GET  / HTTP/1.1",
            b"GET / HTTP/1.1 extra",
            b"G(T / HTTP/1.1",
            b"GET /\x7f HTTP/1.1",
            b"GET /\xc3\xa9 HTTP/1.1",
            b"GET / HTTP/1.1\r\nno colon",
            b"GET / HTTP/1.1\r\n: empty name",
            b"GET / HTTP/1.1\r\nbad name: x",
            b"GET / HTTP/1.1\r\n folded: x",
            b"GET / HTTP/1.1\r\nHost: a\rb",
            b"GET / HTTP/1.1\r\nHost: a\nb",
            b"GET / HTTP/1.1\r\nHost: a\x00b",
            b"GET / HTTP/1.1\r\n",
        ],
    )
    def test_malformed(self, head: bytes) -> None:
        with pytest.raises(HandshakeError) as info:
            parse_request(head)
        assert info.value.status == 400

    @pytest.mark.parametrize("version", [b"HTTP/1.0", b"HTTP/2.0", b"http/1.1", b"HTTP/1.1x"])
    def test_unsupported_version(self, version: bytes) -> None:
        with pytest.raises(HandshakeError, match="unsupported HTTP version") as info:
            parse_request(b"GET / " + version)
        assert info.value.status == 505

    def test_too_many_fields(self) -> None:
        head = b"GET / HTTP/1.1" + b"\r\nX: y" * 4
        assert len(parse_request(head, max_headers=4).headers) == 4
        with pytest.raises(HandshakeError) as info:
            parse_request(head, max_headers=3)
        assert info.value.status == 431


class TestParseResponse:
    def test_fields(self) -> None:
        response = parse_response(b"HTTP/1.1 404 Not  Found here\r\nA: 1")
        assert response == Response(404, Headers([("A", "1")]), "Not  Found here")

    def test_no_reason(self) -> None:
        assert parse_response(b"HTTP/1.1 101") == Response(101, Headers(), "")
        assert parse_response(b"HTTP/1.1 101 ") == Response(101, Headers(), "")

    @pytest.mark.parametrize(
        "head",
        [
            b"",
            b"HTTP/1.1",
            b"HTTP/1.0 101 OK",
            b"HTTP/1.1 10 OK",
            b"HTTP/1.1 1011 OK",
            b"HTTP/1.1 abc OK",
            b"ICY 200 OK",
        ],
    )
    def test_malformed_status_line(self, head: bytes) -> None:
        with pytest.raises(HandshakeError, match="invalid status line") as info:
            parse_response(head)
        assert info.value.status == 0

    def test_malformed_field(self) -> None:
        with pytest.raises(HandshakeError, match="invalid header line"):
            parse_response(b"HTTP/1.1 101 OK\r\nno colon")

    def test_too_many_fields(self) -> None:
        with pytest.raises(HandshakeError) as info:
            parse_response(b"HTTP/1.1 101 OK" + b"\r\nX: y" * 129)
        assert info.value.status == 431


class TestBuild:
    def test_request_method(self) -> None:
        assert (
            build_request(Request("/", Headers([("Host", "h")]), "POST"))
            == b"POST / HTTP/1.1\r\nHost: h\r\n\r\n"
        )

    @pytest.mark.parametrize(
        ("status", "line"),
        [
            (101, b"HTTP/1.1 101 Switching Protocols"),
            (400, b"HTTP/1.1 400 Bad Request"),
            (426, b"HTTP/1.1 426 Upgrade Required"),
            (431, b"HTTP/1.1 431 Request Header Fields Too Large"),
            (599, b"HTTP/1.1 599 "),
        ],
    )
    def test_response_reasons(self, status: int, line: bytes) -> None:
        assert build_response(Response(status, Headers())) == line + b"\r\n\r\n"

    def test_response_with_reason_and_body(self) -> None:
        response = Response(403, Headers([("Content-Length", "2")]), "Go Away", b"no")
        assert build_response(response) == b"HTTP/1.1 403 Go Away\r\nContent-Length: 2\r\n\r\nno"

    def test_latin1_values(self) -> None:
        assert_request_round_trip(
            Request("/", Headers([("X", "café")])), b"GET / HTTP/1.1\r\nX: caf\xe9\r\n\r\n"
        )

    @given(
        path=st.from_regex(r"/[!-~]{0,20}", fullmatch=True),
        fields=st.lists(
            st.tuples(
                st.from_regex(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,10}", fullmatch=True),
                st.from_regex(r"([!-~\x80-\xff]([ \t!-~\x80-\xff]{0,10}[!-~\x80-\xff])?)?", fullmatch=True),
            ),
            max_size=5,
        ),
    )
    def test_request_round_trip(self, path: str, fields: list[tuple[str, str]]) -> None:
        request = Request(path, Headers(fields))
        assert parse_request(build_request(request)[:-4]) == request


class TestTokenList:
    @pytest.mark.parametrize(
        ("values", "tokens"),
        [
            ([], []),
            (["Upgrade"], ["Upgrade"]),
            (["keep-alive, Upgrade"], ["keep-alive", "Upgrade"]),
            (["a,b", " c ,\td "], ["a", "b", "c", "d"]),
            ([",,a, ,"], ["a"]),  # RFC 9110 §5.6.1: empty elements are ignored
            ([""], []),
        ],
    )
    def test_parse(self, values: list[str], tokens: list[str]) -> None:
        assert parse_token_list(values) == tokens

    @pytest.mark.parametrize("value", ["a b", "a;b", '"a"', "é", "a/b"])
    def test_invalid(self, value: str) -> None:
        with pytest.raises(HandshakeError, match="invalid token"):
            parse_token_list([value])


class TestExtensionHeader:
    @pytest.mark.parametrize(
        ("values", "parsed"),
        [
            ([], []),
            (["permessage-deflate"], [("permessage-deflate", [])]),
            (
                ["permessage-deflate; client_max_window_bits; server_max_window_bits=10"],
                [
                    (
                        "permessage-deflate",
                        [("client_max_window_bits", None), ("server_max_window_bits", "10")],
                    )
                ],
            ),
            (
                ["permessage-deflate ;server_max_window_bits = 10 , x-webkit-deflate-frame"],
                [("permessage-deflate", [("server_max_window_bits", "10")]), ("x-webkit-deflate-frame", [])],
            ),
            (["a", "b; c"], [("a", []), ("b", [("c", None)])]),
            ([", a ,, "], [("a", [])]),
            # RFC 6455 §9.1: a quoted value must be a token once unquoted.
            (['a; b="10"'], [("a", [("b", "10")])]),
            (['a; b="1\\0"'], [("a", [("b", "10")])]),
            (['a; b="xy"; c'], [("a", [("b", "xy"), ("c", None)])]),
        ],
    )
    def test_parse(self, values: list[str], parsed: list[tuple[str, list[tuple[str, str | None]]]]) -> None:
        assert parse_extension_header(values) == parsed

    @pytest.mark.parametrize(
        "value",
        [
            "; a",
            "a b",
            "é",
            "a; =1",
            "a; b=",
            "a; b c",
            "a; b=1 2",
            'a; b="x,y"',
            'a; b="x y"',
            'a; b=""',
            "a; é=1",
        ],
    )
    def test_malformed(self, value: str) -> None:
        with pytest.raises(HandshakeError, match="invalid extension"):
            parse_extension_header([value])

    @pytest.mark.parametrize("value", ["a; b=x@y", "a; b=\u00b9"])
    def test_unquoted_value_must_be_a_token(self, value: str) -> None:
        # RFC 6455 §9.1: extension-param = token [ "=" (token | quoted-string) ].
        with pytest.raises(HandshakeError, match="invalid extension"):
            parse_extension_header([value])

    def test_comma_inside_quotes_does_not_split(self) -> None:
        # The whole quoted string is one parameter value (and then not a token).
        with pytest.raises(HandshakeError, match='b="1,2"'):
            parse_extension_header(['a; b="1,2", c'])
        with pytest.raises(HandshakeError, match='b="1;2"'):
            parse_extension_header(['a; b="1;2"'])
