"""The WebSocket opening handshake (RFC 6455 §4): HTTP/1.1 heads, parsed and built.

Pure functions and small value types; `tether.ws.protocol` drives them. A server
that parsed the HTTP request itself (tether's HTTP server) builds a `Request`
and hands it to `ServerConnection.accept()`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from tether.errors import HandshakeError

__all__ = [
    "GUID",
    "Headers",
    "Request",
    "Response",
    "accept_key",
    "build_request",
    "build_response",
    "parse_extension_header",
    "parse_request",
    "parse_response",
    "parse_token_list",
]

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3

_STATUS_REASONS = {
    101: "Switching Protocols",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

# RFC 9110 §5.6.2 token characters, and header field value characters.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN_STR = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(rb"[\x09\x20-\x7e\x80-\xff]*")


class Headers:
    """HTTP header fields in order, looked up without regard to case.

    Args:
        items: (name, value) pairs.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items = list(items)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of the first field called name, or default."""
        lname = name.lower()
        for key, value in self._items:
            if key.lower() == lname:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        """The values of every field called name, in order."""
        lname = name.lower()
        return [value for key, value in self._items if key.lower() == lname]

    def add(self, name: str, value: str) -> None:
        """Append a field.

        Raises:
            ValueError: if the name is not a token or the value holds CR, LF or NUL.
        """
        if not _TOKEN_STR.fullmatch(name):
            raise ValueError(f"header name {name!r} is not a token")
        if any(c in value for c in "\r\n\x00"):
            raise ValueError(f"header value {value!r} contains CR, LF or NUL")
        self._items.append((name, value))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __repr__(self) -> str:
        shown = [(k, "<redacted>" if k.lower() in _SECRET_HEADERS else v) for k, v in self._items]
        return f"Headers({shown!r})"


_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})


@dataclass(frozen=True)
class Request:
    """An HTTP request head.

    Attributes:
        path: the request target, e.g. "/rpc?x=1".
        headers: the header fields.
        method: the method; a WebSocket upgrade must be "GET".
    """

    path: str
    headers: Headers
    method: str = "GET"


@dataclass(frozen=True)
class Response:
    """An HTTP response head, and the body when the handshake failed.

    Attributes:
        status: the status code, 101 on success.
        headers: the header fields.
        reason: the reason phrase.
        body: the body of a failed handshake, when one came with the head.
    """

    status: int
    headers: Headers
    reason: str = ""
    body: bytes = field(default=b"", repr=False)


def accept_key(key: str) -> str:
    """Compute Sec-WebSocket-Accept from Sec-WebSocket-Key (RFC 6455 §4.2.2)."""
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def is_valid_key(key: str) -> bool:
    """Whether key is base64 of 16 bytes (RFC 6455 §4.1)."""
    try:
        return len(base64.b64decode(key.encode("ascii"), validate=True)) == 16
    except (binascii.Error, UnicodeEncodeError):
        return False


def _parse_head(head: bytes, max_headers: int) -> tuple[bytes, list[tuple[str, str]]]:
    """Split a head (without its final CRLF CRLF) into its first line and fields."""
    lines = head.split(b"\r\n")
    if len(lines) - 1 > max_headers:
        raise HandshakeError(f"more than {max_headers} header fields", status=431)
    items: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            raise HandshakeError(f"invalid header line {line[:80]!r}")
        value = value.strip(b" \t")
        if not _VALUE.fullmatch(value):
            raise HandshakeError(f"invalid value in header {name.decode()!r}")
        items.append((name.decode("ascii"), value.decode("latin-1")))
    return lines[0], items


def parse_request(head: bytes, *, max_headers: int = 128) -> Request:
    """Parse a request head (RFC 9112 §3), the bytes before CRLF CRLF.

    Raises:
        HandshakeError: status 400 for a malformed head, 431 for too many fields.
    """
    first, items = _parse_head(head, max_headers)
    parts = first.split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1]:
        raise HandshakeError(f"invalid request line {first[:80]!r}")
    method, target, version = parts
    if version != b"HTTP/1.1":
        raise HandshakeError(f"unsupported HTTP version {version[:16]!r}", status=505)
    if not all(0x21 <= c <= 0x7E for c in target):
        raise HandshakeError("invalid request target")
    return Request(target.decode("ascii"), Headers(items), method.decode("ascii"))


def parse_response(head: bytes, *, max_headers: int = 128) -> Response:
    """Parse a response head (RFC 9112 §4), the bytes before CRLF CRLF.

    Raises:
        HandshakeError: if the head is malformed.
    """
    first, items = _parse_head(head, max_headers)
    parts = first.split(b" ", 2)
    if len(parts) < 2 or parts[0] != b"HTTP/1.1" or not re.fullmatch(rb"[0-9]{3}", parts[1]):
        raise HandshakeError(f"invalid status line {first[:80]!r}", status=0)
    reason = parts[2].decode("latin-1") if len(parts) == 3 else ""
    return Response(int(parts[1]), Headers(items), reason)


def _encode_head(first: str, headers: Iterable[tuple[str, str]]) -> bytes:
    lines = [first]
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def build_request(request: Request) -> bytes:
    """Encode a request head."""
    return _encode_head(f"{request.method} {request.path} HTTP/1.1", request.headers)


def build_response(response: Response) -> bytes:
    """Encode a response head followed by its body."""
    reason = response.reason or _STATUS_REASONS.get(response.status, "")
    return _encode_head(f"HTTP/1.1 {response.status} {reason}", response.headers) + response.body


def parse_token_list(values: Sequence[str]) -> list[str]:
    """Parse comma-separated tokens, as in Connection or Sec-WebSocket-Protocol.

    Raises:
        HandshakeError: if an element is not a token.
    """
    tokens: list[str] = []
    for value in values:
        for item in value.split(","):
            item = item.strip(" \t")
            if not item:
                continue  # RFC 9110 §5.6.1: empty list elements are ignored
            if not _TOKEN_STR.fullmatch(item):
                raise HandshakeError(f"invalid token {item!r}")
            tokens.append(item)
    return tokens


_EXT_PARAM = re.compile(r'\s*([^\s=;,"]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^\s;,"]+))?\s*')


def parse_extension_header(values: Sequence[str]) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Parse Sec-WebSocket-Extensions (RFC 6455 §9.1).

    Returns:
        [(extension name, [(param name, value or None), ...]), ...] in order.

    Raises:
        HandshakeError: if the header is malformed.
    """
    result: list[tuple[str, list[tuple[str, str | None]]]] = []
    for value in values:
        for element in _split_outside_quotes(value, ","):
            if not element.strip():
                continue
            parts = _split_outside_quotes(element, ";")
            name = parts[0].strip()
            if not _TOKEN_STR.fullmatch(name):
                raise HandshakeError(f"invalid extension {element.strip()!r}")
            params: list[tuple[str, str | None]] = []
            for part in parts[1:]:
                match = _EXT_PARAM.fullmatch(part)
                if match is None or not _TOKEN_STR.fullmatch(match.group(1)):
                    raise HandshakeError(f"invalid extension parameter {part.strip()!r}")
                raw = match.group(2)
                if raw is not None:
                    if raw.startswith('"'):
                        raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
                    # RFC 6455 §9.1: values are tokens, quoted or not.
                    if not _TOKEN_STR.fullmatch(raw):
                        raise HandshakeError(f"invalid extension parameter {part.strip()!r}")
                params.append((match.group(1), raw))
            result.append((name, params))
    return result


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    start = 0
    quoted = escaped = False
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == sep and not quoted:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts
