"""HTTP/1.1 wire formats (RFC 9112): request heads, chunk sizes, response heads.

Small pure functions and value types, stdlib only; `tether.http.protocol`
drives them. The parser is written by hand: a request head is located with one
``bytes.find`` and split with ``bytes.split``, so the work per request is a
handful of C-level calls instead of one Python callback per header field (see
docs/http.md for the measurements against httptools and h11).

`match_simple_head` is the fast path for the common head (a plain request line
and ordinary fields, all in the buffer): one regular expression locates and
validates it, and the fields are split only when someone reads them. Whatever it
does not accept goes to `parse_request_head`, which gives the same result for
every head both accept (tests/http/test_parser.py checks it with Hypothesis) and
says what is wrong with the others.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from http import HTTPStatus

from tether.errors import TetherError

__all__ = [
    "HTTPError",
    "Headers",
    "encode_chunk",
    "encode_response_head",
    "match_simple_head",
    "parse_chunk_size",
    "parse_request_head",
    "reason_phrase",
    "split_fields",
]

# RFC 9110 §5.6.2: token characters (methods, header names); RFC 9112 §3.2: a request
# target is printable US-ASCII (anything else must be percent-encoded); RFC 9110 §5.5:
# field values hold no control characters except HTAB.
_VERSION = re.compile(r"HTTP/[0-9]\.[0-9]")
_TOKEN_STR = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET_STR = re.compile(r"[\x21-\x7e]+")
# Field lines after the request line: token ":" value, separated by CRLF.
_FIELDS = re.compile(
    r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\x00-\x08\x0a-\x1f\x7f]*"
    r"(?:\r\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\x00-\x08\x0a-\x1f\x7f]*)*"
)
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
# The common head, as bytes, through its final CRLF CRLF: the same token, target and
# field-value characters as above, HTTP/1.0 or 1.1, every field line ending in CRLF.
# No field value holds CR or LF, so the match ends at the first CRLF CRLF of the
# buffer, as bytes.find would have found it.
_SIMPLE_HEAD = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP/1\.([01])\r\n"
    rb"((?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*)\r\n"
)

_REASONS = {status.value: status.phrase for status in HTTPStatus}


class HTTPError(TetherError):
    """An HTTP error status to answer with.

    The server core reports a malformed request with one (400, 413, 414, 431,
    501, 505); handlers raise one to answer with that status instead of 500.

    Args:
        status: the status code, e.g. 404.
        message: a short text for the response body; the reason phrase by default.
        headers: more response header fields, e.g. WWW-Authenticate.

    Attributes:
        status: the status code.
        message: the text sent as the body.
        headers: (name, value) pairs added to the response.
    """

    def __init__(self, status: int, message: str = "", headers: Sequence[tuple[str, str]] = ()) -> None:
        self.status = status
        self.message = message or reason_phrase(status)
        self.headers = list(headers)
        super().__init__(f"{status} {self.message}")


def reason_phrase(status: int) -> str:
    """The reason phrase of status (RFC 9110 §15), "" for an unknown code."""
    return _REASONS.get(status, "")


class Headers:
    """Header fields in order; names are matched without regard to case.

    Names are stored in lowercase, values as str (decoded as Latin-1, the
    only lossless choice for bytes on the wire, RFC 9110 §5.5).

    Args:
        items: (name, value) pairs.
    """

    # A head parsed by match_simple_head keeps its field lines as bytes in _block
    # until a field is read: most handlers of a REST endpoint never look.
    __slots__ = ("_block", "_list", "_map")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._list: list[tuple[str, str]] | None = [(name.lower(), value) for name, value in items]
        self._map: dict[str, str] | None = None
        self._block = b""

    @classmethod
    def _lowered(cls, items: list[tuple[str, str]]) -> Headers:
        """Wrap items whose names are already lowercase, without a copy."""
        headers = cls.__new__(cls)
        headers._list = items
        headers._map = None
        headers._block = b""
        return headers

    @classmethod
    def _unsplit(cls, block: bytes) -> Headers:
        """Wrap field lines, each ending in CRLF, checked by match_simple_head; split on first use."""
        headers = cls.__new__(cls)
        headers._list = None
        headers._map = None
        headers._block = block
        return headers

    @property
    def _items(self) -> list[tuple[str, str]]:
        items = self._list
        if items is None:
            items = self._list = split_fields(self._block[:-2].decode("latin-1")) if self._block else []
            self._block = b""
        return items

    def _index(self) -> dict[str, str]:
        mapping = self._map
        if mapping is None:
            mapping = {}
            for name, value in self._items:
                mapping.setdefault(name, value)
            self._map = mapping
        return mapping

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of the first field called name, or default."""
        return self._index().get(name.lower(), default)

    def get_all(self, name: str) -> list[str]:
        """The values of every field called name, in order."""
        lname = name.lower()
        return [value for key, value in self._items if key == lname]

    def get_list(self, name: str) -> list[str]:
        """The comma-separated elements of every field called name (RFC 9110 §5.6.1)."""
        return [part.strip() for value in self.get_all(name) for part in value.split(",") if part.strip()]

    def __getitem__(self, name: str) -> str:
        return self._index()[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index()

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __repr__(self) -> str:
        shown = [(k, "<redacted>" if k in _SECRET_HEADERS else v) for k, v in self._items]
        return f"Headers({shown!r})"


_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})


def parse_request_head(
    head: bytes | bytearray, *, max_headers: int = 100
) -> tuple[str, str, str, list[tuple[str, str]]]:
    """Parse a request head (RFC 9112 §2.1), the bytes before its final CRLF CRLF.

    Returns:
        (method, target, version, fields): version is "1.1" or "1.0"; field
        names are lowercase; values are Latin-1 decoded, without surrounding
        whitespace.

    Raises:
        HTTPError: 400 for a malformed head, 431 for more than max_headers
            fields, 505 for an HTTP version other than 1.x.
    """
    # Decoded once, then str operations only. The regexes below admit no control
    # character but HTAB in values, so a bare CR or LF (RFC 9112 §2.2 tolerates a lone
    # LF as a line end; accepting it invites request smuggling through intermediaries
    # that disagree) or a NUL anywhere makes the head malformed.
    text = head.decode("latin-1")
    line_end = text.find("\r\n")
    first = text if line_end < 0 else text[:line_end]
    parts = first.split(" ")
    if len(parts) != 3:
        raise HTTPError(400, "malformed request line")
    method, target, version = parts
    if version == "HTTP/1.1":
        version = "1.1"
    elif version == "HTTP/1.0":
        version = "1.0"
    elif _VERSION.fullmatch(version):
        raise HTTPError(505)
    else:
        raise HTTPError(400, "malformed request line")
    if _TOKEN_STR.fullmatch(method) is None or _TARGET_STR.fullmatch(target) is None:
        raise HTTPError(400, "malformed request line")
    if line_end < 0:
        return method, target, version, []
    # RFC 9112 §5.1: no whitespace between name and colon; §5.2: obs-fold (a line
    # starting with whitespace) is rejected, as the name must be a token.
    if _FIELDS.fullmatch(text, line_end + 2) is None:
        raise HTTPError(400, "malformed header field")
    fields = split_fields(text[line_end + 2 :])
    if len(fields) > max_headers:
        raise HTTPError(431, f"more than {max_headers} header fields")
    return method, target, version, fields


def split_fields(text: str) -> list[tuple[str, str]]:
    """Split field lines (RFC 9112 §5) already checked as token ":" value, joined by CRLF.

    Returns:
        (name, value) pairs: names lowercase, values without surrounding whitespace.
    """
    fields = []
    for line in text.split("\r\n"):
        name, _, value = line.partition(":")
        fields.append((name.lower(), value.strip(" \t")))
    return fields


def match_simple_head(buf: bytes | bytearray, max_head_size: int) -> re.Match[bytes] | None:
    """Match the common request head at the start of buf, through its final CRLF CRLF.

    The fast path of request parsing: a request line and field lines that
    `parse_request_head` would accept, of HTTP/1.0 or 1.1, no longer than
    max_head_size (without the final CRLF CRLF), complete in buf.

    Returns:
        The match, whose end() is the offset after the head and whose groups
        are method, target, minor version (b"0" or b"1") and the field lines,
        each ending in CRLF. None when the head is not such a head, or is
        incomplete: then parse it with `parse_request_head`, which says what is
        wrong. Check the request line and field count limits on the match.
    """
    return _SIMPLE_HEAD.match(buf, 0, max_head_size + 4)


def parse_chunk_size(line: bytes | bytearray) -> int:
    """Parse a chunk-size line without its CRLF (RFC 9112 §7.1); extensions are ignored.

    Raises:
        HTTPError: 400 if the size is not 1 to 16 hex digits.
    """
    size, _, _ = line.partition(b";")  # RFC 9112 §7.1.1: unknown chunk extensions are ignored
    size = size.rstrip(b" \t")
    if _HEX.fullmatch(size) is None:
        raise HTTPError(400, "invalid chunk size")
    return int(size, 16)


def encode_chunk(data: bytes | bytearray | memoryview) -> bytes:
    """Frame data as one chunk (RFC 9112 §7.1); empty data gives no bytes, not the last chunk."""
    if not data:
        return b""
    return b"%x\r\n%b\r\n" % (len(data), bytes(data))


def encode_response_head(status: int, headers: Iterable[tuple[str, str]], extra: bytes = b"") -> bytes:
    """Encode a status line and header fields (RFC 9112 §4), then extra raw field lines.

    Raises:
        ValueError: if a field name or value holds CR, LF or NUL (header injection).
    """
    lines = [f"{name}: {value}" for name, value in headers]
    text = "\r\n".join(lines)
    if lines:
        if text.count("\n") != len(lines) - 1 or text.count("\r") != len(lines) - 1 or "\x00" in text:
            raise ValueError("header field contains CR, LF or NUL")
        text += "\r\n"
    return b"HTTP/1.1 %d %b\r\n%b%b\r\n" % (
        status,
        _REASONS.get(status, "").encode("ascii"),
        text.encode("latin-1"),
        extra,
    )
