"""The server side of an HTTP/1.1 connection, sans I/O (RFC 9110, RFC 9112).

Theory of operation: a connection carries a sequence of *cycles*, each one
request and one response. `ServerConnection` tracks two states, one per
direction. The request side goes IDLE (waiting for a head) → BODY (reading the
body, if any) → DONE; the response side goes IDLE → SENDING (a streamed
response) → IDLE again, or to CLOSED when the connection must close after it.
When the response ends and the request is DONE, a keep-alive connection starts
the next cycle by itself.

Pipelining (RFC 9112 §9.3) falls out of this: bytes of the next request that
arrive while a response is pending stay in the buffer, unparsed, until that
response ends; so requests are answered in order, one at a time, and the
front end bounds the buffer by pausing reading.

The front end feeds bytes with `receive_data()`, takes `events_received()`
(`RequestReceived`, `Data`, `EndOfMessage`, `InvalidRequest`), answers with
`respond()` (one write: head and body) or `start_response()`/`send_data()`/
`end_response()` (streamed, chunked when the length is unknown), and writes
`data_to_send()`. A peer's malformed input never raises: the core reports
`InvalidRequest` with the status to answer (400, 413, 414, 431, 501, 505),
stops parsing, and makes the next response close the connection.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass

from tether.errors import InvalidState
from tether.http.parser import (
    Headers,
    HTTPError,
    encode_chunk,
    encode_response_head,
    match_simple_head,
    parse_chunk_size,
    parse_request_head,
    split_fields,
)

__all__ = [
    "Data",
    "EndOfMessage",
    "InvalidRequest",
    "RequestReceived",
    "ServerConnection",
    "State",
]


#: Encoded status lines and fields by (status, fields); see ServerConnection._encode_head.
_HEAD_CACHE: dict[tuple[int, tuple[tuple[str, str], ...]], bytes] = {}
_HEAD_CACHE_SIZE = 256


class State(enum.Enum):
    """The state of one direction of a connection."""

    IDLE = "idle"  # request: waiting for a head; response: none started
    BODY = "body"  # request: reading the body
    SENDING = "sending"  # response: a streamed response is in progress
    DONE = "done"  # request: fully read, waiting for the response to end
    ERROR = "error"  # request: malformed; nothing more is parsed
    SWITCHED = "switched"  # the connection was handed to another protocol (101)
    CLOSED = "closed"  # no more requests on this connection


# The states as module globals: on Python 3.11 `State.IDLE` is a descriptor lookup on
# the enum class (0.1 µs), and the request path tests the states a dozen times.
_IDLE, _BODY, _SENDING, _DONE, _ERROR, _SWITCHED, _CLOSED = (
    State.IDLE,
    State.BODY,
    State.SENDING,
    State.DONE,
    State.ERROR,
    State.SWITCHED,
    State.CLOSED,
)


@dataclass(frozen=True)  # not slots: see _plain_request
class RequestReceived:
    """A request head arrived.

    Attributes:
        method: the method, e.g. "GET".
        target: the request target as sent, e.g. "/a%20b?x=1".
        headers: the header fields.
        http_version: "1.1" or "1.0".
        keep_alive: whether the client allows another request on this connection.
        expect_continue: whether the client waits for 100 Continue before the body.
        upgrade: the Upgrade field when Connection lists "upgrade", else None.
        has_body: whether a body follows (Data events, then EndOfMessage).
        content_length: the body length when announced, None when chunked or absent.
    """

    method: str
    target: str
    headers: Headers
    http_version: str = "1.1"
    keep_alive: bool = True
    expect_continue: bool = False
    upgrade: str | None = None
    has_body: bool = False
    content_length: int | None = None


@dataclass(frozen=True, slots=True)
class Data:
    """A piece of the request body, chunk framing removed."""

    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    """The request body is complete (trailer fields, if any, are dropped)."""


@dataclass(frozen=True, slots=True)
class InvalidRequest:
    """The request is malformed or over a limit; answer status and close.

    Attributes:
        status: the status to answer with (400, 413, 414, 431, 501, 505, 417).
        message: what was wrong, for the log and the response body.
    """

    status: int
    message: str


Event = RequestReceived | Data | EndOfMessage | InvalidRequest

_new = object.__new__
#: The fields of the common request: HTTP/1.1, keep-alive, no body.
_PLAIN_REQUEST = {
    "http_version": "1.1",
    "keep_alive": True,
    "expect_continue": False,
    "upgrade": None,
    "has_body": False,
    "content_length": None,
}


def _plain_request(method: str, target: str, headers: Headers) -> RequestReceived:
    """RequestReceived(method, target, headers), with the other fields at their defaults.

    A frozen dataclass's __init__ sets each field through object.__setattr__ (a
    microsecond for nine fields, a tenth of a request's time in the core); filling
    the new instance's __dict__ directly gives the same object in a third of that.
    """
    event = _new(RequestReceived)
    fields = event.__dict__
    fields.update(_PLAIN_REQUEST)
    fields["method"] = method
    fields["target"] = target
    fields["headers"] = headers
    return event


_END = EndOfMessage()
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# RFC 9110 §6.4.1: these responses have no content, whatever the method.
_NO_BODY_STATUS = frozenset({204, 304})
_SPECIAL = frozenset({"content-length", "transfer-encoding", "connection", "host", "expect", "upgrade"})
# Field lines (each ending in CRLF) with exactly one of the _SPECIAL fields, Host: a
# plain request. Names are tokens, so the line starts after CRLF are the names' starts.
_HOST_ONLY = re.compile(
    rb"(?:(?!(?:content-length|transfer-encoding|connection|host|expect|upgrade):)[^\r]*\r\n)*"
    rb"host:[^\r]*\r\n"
    rb"(?:(?!(?:content-length|transfer-encoding|connection|host|expect|upgrade):)[^\r]*\r\n)*",
    re.IGNORECASE,
).fullmatch
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")}

# Chunked body sub-states (RFC 9112 §7.1).
_SIZE, _CHUNK, _CHUNK_END, _TRAILER = range(4)
_MAX_CHUNK_LINE = 1024


class ServerConnection:
    """An HTTP/1.1 server connection: bytes in, requests out; responses in, bytes out.

    Args:
        max_head_size: the largest request head (request line and fields) in
            bytes; beyond it the request is refused with 431.
        max_request_line: the longest request line; beyond it, 414 (RFC 9112 §3).
        max_headers: the most header fields in one request (431 beyond).
        max_body_size: the largest request body in bytes, announced or
            received (413 beyond); None for no limit.
    """

    def __init__(
        self,
        *,
        max_head_size: int = 16384,
        max_request_line: int = 8192,
        max_headers: int = 100,
        max_body_size: int | None = 2**20,
    ) -> None:
        self.max_head_size = max_head_size
        self.max_request_line = max_request_line
        self.max_headers = max_headers
        self.max_body_size = max_body_size
        self.request_state = _IDLE
        self.response_state = _IDLE
        self.error: InvalidRequest | None = None
        self.request: RequestReceived | None = None
        #: Raw field lines ("Name: value\\r\\n") added to every response, e.g. Date and Server.
        self.common_headers = b""
        self._buf = bytearray()
        self._scanned = 0  # where to resume looking for the end of a head
        self._eof = False
        self._out: list[bytes] = []
        self._keep_alive = True
        self._head_only = False
        self._expect = False
        self._remaining = 0  # body bytes left (Content-Length) or in this chunk
        self._received = 0  # body bytes received so far (chunked)
        self._chunked = False
        self._chunk_state = _SIZE
        self._send_chunked = False
        self._send_remaining: int | None = None
        self._send_keep_alive = False
        self._head_only_response = False

    # ------------------------------------------------------------------ input

    @property
    def buffered(self) -> int:
        """Bytes received but not parsed yet (a pipelined request, say)."""
        return len(self._buf)

    def receive_data(self, data: bytes | bytearray) -> None:
        """Feed bytes from the peer; then call `events_received()`."""
        self._buf += data

    def receive_eof(self) -> None:
        """Tell the core that the peer closed its side."""
        self._eof = True

    def events_received(self) -> list[Event]:
        """Parse what the current state allows and return the events, oldest first."""
        if not self._buf and not self._eof:
            return []  # nothing to parse in any state
        events: list[Event] = []
        while True:
            state = self.request_state
            if state is _IDLE:
                if self.response_state is not _IDLE or not self._parse_head(events):
                    break
            elif state is _BODY:
                if not (self._parse_chunked(events) if self._chunked else self._parse_body(events)):
                    break
            else:
                break
        if self._eof and self.request_state is _BODY:
            self._fail(events, HTTPError(400, "connection closed inside the request body"))
        elif self._eof and self.request_state is _IDLE and self.response_state is _IDLE:
            self.request_state = _CLOSED  # no head can complete any more
        return events

    def _fail(self, events: list[Event], error: HTTPError) -> None:
        self.request_state = _ERROR
        self._keep_alive = False
        self.error = InvalidRequest(error.status, error.message)
        events.append(self.error)

    def _parse_head(self, events: list[Event]) -> bool:
        buf = self._buf
        if not buf:
            return False
        # The fast path, tried once per head (not on every piece of a slow one, which
        # _scanned remembers): a common head, complete in the buffer, within the limits.
        if not self._scanned:
            match = match_simple_head(buf, self.max_head_size)
            if (
                match is not None
                and match.start(4) - 2 <= self.max_request_line
                and match.group(4).count(b"\r\n") <= self.max_headers
            ):
                return self._simple_head(match, events)
        # RFC 9112 §2.2: ignore empty lines before the request line.
        while buf[:2] == b"\r\n":
            del buf[:2]
        end = buf.find(b"\r\n\r\n", self._scanned)
        if end < 0:
            self._scanned = max(0, len(buf) - 3)
            if len(buf) > self.max_head_size:
                line_end = buf.find(b"\r\n", 0, self.max_request_line + 2)
                if line_end < 0:
                    self._fail(events, HTTPError(414))
                else:
                    self._fail(events, HTTPError(431))
            elif len(buf) > self.max_request_line and buf.find(b"\r\n", 0, self.max_request_line + 2) < 0:
                self._fail(events, HTTPError(414))
            return False
        self._scanned = 0
        if end > self.max_head_size:
            self._fail(events, HTTPError(431))
            return False
        try:
            line_end = buf.find(b"\r\n", 0, end)
            if (line_end if line_end >= 0 else end) > self.max_request_line:
                raise HTTPError(414)
            method, target, version, fields = parse_request_head(buf[:end], max_headers=self.max_headers)
            del buf[: end + 4]
            request = self._check_head(method, target, version, fields)
        except HTTPError as exc:
            self._fail(events, exc)
            return False
        self._accept(request, events)
        return True

    def _simple_head(self, match: re.Match[bytes], events: list[Event]) -> bool:
        """Take a head matched by match_simple_head: as _parse_head would, in fewer steps."""
        method_bytes, target_bytes, minor, block = match.groups()
        del self._buf[: match.end()]
        method = _METHODS.get(method_bytes) or method_bytes.decode("ascii")
        target = target_bytes.decode("ascii")
        if minor == b"1" and _HOST_ONLY(block) is not None:
            # RFC 9112 §3.2, §6, §9.3: one Host and no field that changes framing or
            # connection handling: keep-alive, no body. The fields are split when read.
            self._keep_alive = True
            self._head_only = method == "HEAD"
            self._expect = False
            self._chunked = False
            self._remaining = 0
            request = _plain_request(method, target, Headers._unsplit(block))
            self.request = request
            self.request_state = _DONE
            events.append(request)
            events.append(_END)
            return True
        fields = split_fields(block[:-2].decode("latin-1")) if block else []
        try:
            request = self._check_head(method, target, "1.1" if minor == b"1" else "1.0", fields)
        except HTTPError as exc:
            self._fail(events, exc)
            return False
        self._accept(request, events)
        return True

    def _accept(self, request: RequestReceived, events: list[Event]) -> None:
        self.request = request
        events.append(request)
        if request.has_body:
            self.request_state = _BODY
        else:
            self.request_state = _DONE
            events.append(_END)

    def _check_head(
        self, method: str, target: str, version: str, fields: list[tuple[str, str]]
    ) -> RequestReceived:
        """Work out framing and connection handling from the fields (RFC 9112 §6, §9)."""
        lengths: list[str] = []
        codings: list[str] = []
        connection: list[str] = []
        hosts = 0
        expect: str | None = None
        upgrade: str | None = None
        for name, value in fields:
            if name in _SPECIAL:
                if name == "content-length":
                    lengths.extend(v.strip() for v in value.split(","))
                elif name == "transfer-encoding":
                    codings.extend(v.strip().lower() for v in value.split(",") if v.strip())
                elif name == "connection":
                    connection.extend(v.strip().lower() for v in value.split(","))
                elif name == "host":
                    hosts += 1
                elif name == "expect":
                    expect = value.strip().lower()
                else:
                    upgrade = value
        # RFC 9112 §3.2: exactly one Host field in an HTTP/1.1 request.
        if version == "1.1" and hosts != 1:
            raise HTTPError(400, "missing or repeated Host header field")
        if version == "1.1":
            keep_alive = "close" not in connection
        else:
            keep_alive = "keep-alive" in connection and "close" not in connection
        content_length: int | None = None
        chunked = False
        if codings:
            # RFC 9112 §6.1: a Content-Length beside Transfer-Encoding is a smuggling
            # attempt or a broken intermediary; refuse it rather than guess.
            if lengths or version == "1.0":
                raise HTTPError(400, "Transfer-Encoding with Content-Length or in HTTP/1.0")
            if codings != ["chunked"]:
                # RFC 9112 §6.1: an unknown coding is 501; chunked not last is 400.
                raise HTTPError(501 if codings[-1] == "chunked" or "chunked" not in codings else 400)
            chunked = True
        elif lengths:
            if len(set(lengths)) != 1 or not lengths[0].isdigit() or not lengths[0].isascii():
                raise HTTPError(400, "invalid Content-Length")
            content_length = int(lengths[0])
            if self.max_body_size is not None and content_length > self.max_body_size:
                raise HTTPError(413)
        expect_continue = False
        if expect is not None:
            # RFC 9110 §10.1.1: 100-continue is the only expectation defined.
            if expect != "100-continue":
                raise HTTPError(417)
            expect_continue = version == "1.1"
        has_body = chunked or bool(content_length)
        self._chunked = chunked
        self._chunk_state = _SIZE
        self._remaining = content_length or 0
        self._received = 0
        self._keep_alive = keep_alive
        self._head_only = method == "HEAD"
        self._expect = expect_continue and has_body
        return RequestReceived(
            method,
            target,
            Headers._lowered(fields),
            version,
            keep_alive,
            self._expect,
            upgrade if "upgrade" in connection else None,
            has_body,
            content_length,
        )

    def _parse_body(self, events: list[Event]) -> bool:
        buf = self._buf
        if not buf:
            return False
        self._expect = False  # RFC 9110 §10.1.1: the body started; 100 is pointless now
        if len(buf) <= self._remaining:
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[: self._remaining])
            del buf[: self._remaining]
        self._remaining -= len(data)
        events.append(Data(data))
        if not self._remaining:
            self.request_state = _DONE
            events.append(_END)
        return True

    def _parse_chunked(self, events: list[Event]) -> bool:
        buf = self._buf
        state = self._chunk_state
        try:
            if state == _SIZE:
                end = buf.find(b"\r\n", 0, _MAX_CHUNK_LINE)
                if end < 0:
                    if len(buf) >= _MAX_CHUNK_LINE:
                        raise HTTPError(400, "chunk size line too long")
                    return False
                size = parse_chunk_size(buf[:end])
                del buf[: end + 2]
                self._expect = False
                self._received += size
                if self.max_body_size is not None and self._received > self.max_body_size:
                    raise HTTPError(413)
                self._remaining = size
                self._chunk_state = _CHUNK if size else _TRAILER
                self._scanned = 0
                return True
            if state == _CHUNK:
                if not buf:
                    return False
                take = min(self._remaining, len(buf))
                data = bytes(buf[:take])
                del buf[:take]
                self._remaining -= take
                events.append(Data(data))
                if not self._remaining:
                    self._chunk_state = _CHUNK_END
                return True
            if state == _CHUNK_END:
                if len(buf) < 2:
                    return False
                if buf[:2] != b"\r\n":
                    raise HTTPError(400, "chunk data not followed by CRLF")
                del buf[:2]
                self._chunk_state = _SIZE
                return True
            # RFC 9112 §7.1.2: trailer fields, up to an empty line; dropped.
            if buf[:2] == b"\r\n":
                del buf[:2]
                self.request_state = _DONE
                events.append(_END)
                return True
            end = buf.find(b"\r\n\r\n", self._scanned)
            if end < 0:
                self._scanned = max(0, len(buf) - 3)
                if len(buf) > self.max_head_size:
                    raise HTTPError(431, "trailer section too large")
                return False
            self._scanned = 0
            del buf[: end + 4]
            self.request_state = _DONE
            events.append(_END)
            return True
        except HTTPError as exc:
            self._fail(events, exc)
            return False

    # ----------------------------------------------------------------- output

    def data_to_send(self) -> bytes:
        """The bytes to write to the peer, and forget them."""
        out = self._out
        if not out:
            return b""
        self._out = []
        return out[0] if len(out) == 1 else b"".join(out)

    @property
    def must_close(self) -> bool:
        """True when the connection must be closed once data_to_send() is written."""
        return self.response_state is _CLOSED

    @property
    def keep_alive(self) -> bool:
        """Whether the connection may carry another request after the current response."""
        return self._keep_alive and self.request_state is not _ERROR

    def send_continue(self) -> None:
        """Send 100 Continue if the client waits for it (RFC 9110 §10.1.1); else nothing.

        Call it when the application starts reading the body.
        """
        if self._expect and self.response_state is _IDLE and self.request_state is _BODY:
            self._expect = False
            self._out.append(_CONTINUE)

    def _framing(self, status: int, close: bool) -> tuple[bool, bool]:
        """Whether the response has no body on the wire, and whether to keep the connection."""
        if self.response_state is not _IDLE:
            raise InvalidState(f"a response was already started ({self.response_state.value})")
        no_body = self._head_only or status in _NO_BODY_STATUS
        # A body not read to its end leaves the connection out of step: close it.
        keep = self._keep_alive and not close and self.request_state is _DONE
        return no_body, keep

    def respond(
        self,
        status: int,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        *,
        close: bool = False,
        content_length: int | None = None,
    ) -> None:
        """Send a whole response: head and body in one piece.

        Content-Length and Connection are added here. The body is left out for
        HEAD, 204 and 304 (RFC 9110 §9.3.2, §6.4.1).

        Args:
            status: the status code (200 and up).
            headers: the other header fields.
            body: the content.
            close: close the connection after this response.
            content_length: the length to announce instead of len(body), for a
                HEAD request answered without reading the content.

        Raises:
            InvalidState: if a response was already started.
            ValueError: if a header field holds CR, LF or NUL.
        """
        if (
            status == 200
            and not close
            and self.request_state is _DONE
            and self.response_state is _IDLE
            and self._keep_alive
            and not self._head_only
            and self.request is not None
            and self.request.http_version == "1.1"
            and content_length is None
            and 0 < len(body) <= 65536
            and type(headers) is tuple
        ):
            # The common answer (a small body to an HTTP/1.1 keep-alive request), as the
            # general path below would build it, in one piece: one write.
            try:
                cached = _HEAD_CACHE.get((200, headers))
            except TypeError:  # not pairs of str: the general path says what is wrong
                cached = None
            if cached is not None:
                self._out.append(
                    b"%b%bContent-Length: %d\r\n\r\n%b" % (cached, self.common_headers, len(body), body)
                )
                self.request_state = _IDLE  # the next cycle, as _finish(True) does
                self.request = None
                self._expect = False
                return
        no_body, keep = self._framing(status, close)
        extra = self.common_headers
        if status not in _NO_BODY_STATUS:
            length = len(body) if content_length is None else content_length
            extra += b"Content-Length: %d\r\n" % length
        if not keep:
            extra += b"Connection: close\r\n"
        elif self.request is not None and self.request.http_version == "1.0":
            extra += b"Connection: keep-alive\r\n"
        head = self._encode_head(status, headers, extra)
        if no_body or not body:
            self._out.append(head)
        elif len(body) <= 65536:
            self._out.append(head + body)  # one write: Nagle never holds a small response back
        else:
            self._out.append(head)
            self._out.append(body)
        self._finish(keep)

    def _encode_head(self, status: int, headers: Sequence[tuple[str, str]], extra: bytes) -> bytes:
        """encode_response_head, with the status line and fields of recent responses cached.

        A device answers with few distinct heads (JSON, a page, a redirect), so
        their checked and encoded form is kept; only the per-response fields
        (extra: Date, Content-Length, Connection) are added each time.
        """
        try:
            key = (status, tuple(headers))
            cached = _HEAD_CACHE.get(key)
        except TypeError:  # a field that is not a pair of str: let the encoder say what is wrong
            return encode_response_head(status, headers, extra)
        if cached is None:
            cached = encode_response_head(status, headers)[:-2]  # without the blank line
            if len(_HEAD_CACHE) >= _HEAD_CACHE_SIZE:
                _HEAD_CACHE.clear()
            _HEAD_CACHE[key] = cached
        return cached + extra + b"\r\n"

    def start_response(
        self,
        status: int,
        headers: Sequence[tuple[str, str]] = (),
        *,
        content_length: int | None = None,
        close: bool = False,
    ) -> None:
        """Start a streamed response; then `send_data()` and `end_response()`.

        Without content_length the body is chunked (RFC 9112 §7.1), or
        delimited by closing the connection for an HTTP/1.0 client.

        Raises:
            InvalidState: if a response was already started.
            ValueError: if a header field holds CR, LF or NUL.
        """
        no_body, keep = self._framing(status, close)
        extra = self.common_headers
        self._send_chunked = False
        self._send_remaining = content_length
        if status in _NO_BODY_STATUS:
            self._send_remaining = 0
        elif content_length is not None:
            extra += b"Content-Length: %d\r\n" % content_length
        elif self.request is None or self.request.http_version == "1.1":
            extra += b"Transfer-Encoding: chunked\r\n"
            self._send_chunked = True
        else:
            keep = False  # RFC 9112 §6.3: the end of the body is the end of the connection
        if not keep:
            extra += b"Connection: close\r\n"
        elif self.request is not None and self.request.http_version == "1.0":
            extra += b"Connection: keep-alive\r\n"
        self._out.append(encode_response_head(status, headers, extra))
        self.response_state = _SENDING
        self._send_keep_alive = keep
        self._head_only_response = no_body

    def send_data(self, data: bytes | bytearray | memoryview) -> None:
        """Send a piece of the streamed response body.

        Raises:
            InvalidState: if no streamed response is in progress.
            ValueError: if data goes past the announced Content-Length.
        """
        if self.response_state is not _SENDING:
            raise InvalidState("no streamed response in progress")
        if self._head_only_response or not data:
            return
        if self._send_chunked:
            self._out.append(encode_chunk(data))
            return
        if self._send_remaining is not None:
            if len(data) > self._send_remaining:
                raise ValueError(f"{len(data)} bytes exceed the {self._send_remaining} announced")
            self._send_remaining -= len(data)
        self._out.append(bytes(data))

    def body_sent(self, count: int) -> None:
        """Count body bytes the caller wrote itself (with sendfile) after data_to_send().

        Only for a response started with a content_length.

        Raises:
            InvalidState: if no such response is in progress.
            ValueError: if count goes past the announced Content-Length.
        """
        if self.response_state is not _SENDING or self._send_remaining is None or self._send_chunked:
            raise InvalidState("no streamed response with a Content-Length in progress")
        if count > self._send_remaining:
            raise ValueError(f"{count} bytes exceed the {self._send_remaining} announced")
        self._send_remaining -= count

    def end_response(self) -> None:
        """End the streamed response.

        A response shorter than its Content-Length cannot be mended: the
        connection is closed after it, so the client sees it truncated.

        Raises:
            InvalidState: if no streamed response is in progress.
        """
        if self.response_state is not _SENDING:
            raise InvalidState("no streamed response in progress")
        keep = self._send_keep_alive
        if self._head_only_response:
            pass
        elif self._send_chunked:
            self._out.append(b"0\r\n\r\n")
        elif self._send_remaining:
            keep = False
        self._finish(keep)

    def _finish(self, keep: bool) -> None:
        if keep and self.request_state is _DONE:
            # The next cycle (RFC 9112 §9.3): parse whatever is buffered.
            self.request_state = _IDLE
            self.response_state = _IDLE
            self.request = None
            self._expect = False
        else:
            self.response_state = _CLOSED
            if self.request_state is not _ERROR:
                self.request_state = _CLOSED

    def detach(self) -> bytes:
        """Hand the connection to another protocol after an upgrade (RFC 9110 §7.8).

        Returns:
            The bytes received after the request, which belong to the new protocol.

        Raises:
            InvalidState: unless the request was read completely and no
                response was started.
        """
        if self.request_state is not _DONE or self.response_state is not _IDLE:
            raise InvalidState("cannot switch protocols in this state")
        self.request_state = self.response_state = _SWITCHED
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def close(self) -> None:
        """Stop parsing requests, e.g. when the server shuts down or a timeout fired."""
        self._keep_alive = False
        if self.request_state is _IDLE:
            self.request_state = _CLOSED
