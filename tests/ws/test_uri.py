"""WebSocket URIs (RFC 6455 §3): tether.ws.uri."""

from __future__ import annotations

import pytest

from tether.ws.uri import WebSocketURI, for_logs, parse_uri, without_userinfo


@pytest.mark.parametrize(
    ("uri", "parsed"),
    [
        ("ws://example.com", WebSocketURI(False, "example.com", 80, "/")),
        ("wss://example.com", WebSocketURI(True, "example.com", 443, "/")),
        ("ws://example.com/", WebSocketURI(False, "example.com", 80, "/")),
        ("ws://Example.COM:8080/rpc", WebSocketURI(False, "example.com", 8080, "/rpc")),
        ("wss://example.com:443/a/b?x=1&y=%20", WebSocketURI(True, "example.com", 443, "/a/b?x=1&y=%20")),
        ("ws://example.com?x=1", WebSocketURI(False, "example.com", 80, "/?x=1")),
        ("ws://example.com:/", WebSocketURI(False, "example.com", 80, "/")),
        ("ws://127.0.0.1:9001", WebSocketURI(False, "127.0.0.1", 9001, "/")),
        ("ws://[::1]:9001/x", WebSocketURI(False, "::1", 9001, "/x")),
        ("wss://[2001:db8::1]", WebSocketURI(True, "2001:db8::1", 443, "/")),
        ("ws://user@h", WebSocketURI(False, "h", 80, "/", "user", None)),
        ("ws://user:pw@h", WebSocketURI(False, "h", 80, "/", "user", "pw")),
        ("ws://us%40er:p%3Aw%20@h", WebSocketURI(False, "h", 80, "/", "us@er", "p:w ")),
        ("ws://user:@h", WebSocketURI(False, "h", 80, "/", "user", "")),
    ],
)
def test_parse(uri: str, parsed: WebSocketURI) -> None:
    assert parse_uri(uri) == parsed


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("http://example.com", "not a ws:// or wss:// URI"),
        ("example.com", "not a ws:// or wss:// URI"),
        ("WSX://example.com", "not a ws:// or wss:// URI"),
        ("", "not a ws:// or wss:// URI"),
        ("ws://example.com/#frag", "has a fragment"),
        ("ws://example.com/#", "has a fragment"),
        ("ws:///path", "has no host"),
        ("ws://:80/", "has no host"),
        ("ws://example.com:port/", "invalid port"),
        ("ws://example.com:65536/", "invalid port"),
        ("ws://example.com:-1/", "invalid port"),
    ],
)
def test_invalid(uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_uri(uri)


def test_port_zero_is_not_the_default_port() -> None:
    # Port 0 cannot be connected to; it must not silently become 80.
    with pytest.raises(ValueError, match="invalid port"):
        parse_uri("ws://example.com:0/")


def test_scheme_is_case_insensitive() -> None:
    # RFC 3986 §3.1.
    assert parse_uri("WSS://example.com").secure


@pytest.mark.parametrize(
    ("uri", "host_header"),
    [
        ("ws://h", "h"),
        ("ws://h:80", "h"),
        ("ws://h:443", "h:443"),
        ("wss://h:443", "h"),
        ("wss://h:80", "h:80"),
        ("ws://h:8080", "h:8080"),
        ("ws://[::1]", "[::1]"),
        ("ws://[::1]:8080", "[::1]:8080"),
    ],
)
def test_host_header(uri: str, host_header: str) -> None:
    # RFC 9110 §7.2: the port only when it is not the scheme's default.
    assert parse_uri(uri).host_header == host_header


@pytest.mark.parametrize(
    ("uri", "auth"),
    [
        ("ws://h", None),
        ("ws://Aladdin:open%20sesame@h", "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),  # RFC 7617 §2
        ("ws://user@h", "Basic dXNlcjo="),
        ("ws://%C3%A9:%C3%A9@h", "Basic w6k6w6k="),  # UTF-8, RFC 7617 §2.1
    ],
)
def test_basic_auth(uri: str, auth: str | None) -> None:
    assert parse_uri(uri).basic_auth() == auth


def test_repr_hides_the_password() -> None:
    text = repr(parse_uri("wss://user:hunter2@example.com/"))
    assert "hunter2" not in text
    assert "user" in text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mqtt://user:pw@host:1883", "mqtt://host:1883"),
        ("wss://token@example.com/rpc?x=1", "wss://example.com/rpc?x=1"),
        ("ws://host/a@b", "ws://host/a@b"),
        ("http://host", "http://host"),
    ],
)
def test_without_userinfo(url: str, shown: str) -> None:
    assert without_userinfo(url) == shown


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("wss://user:pw@backend/rpc?token=abc", "wss://backend/rpc?…"),
        ("wss://backend?token=abc", "wss://backend?…"),
        ("ws://host/rpc", "ws://host/rpc"),
    ],
)
def test_for_logs(url: str, shown: str) -> None:
    assert for_logs(url) == shown
