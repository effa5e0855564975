"""A streaming multipart/form-data parser (RFC 7578, RFC 2046 §5.1), sans I/O.

`MultipartParser.feed()` takes the body in pieces of any size and returns
events: `Part` (a part's head), `PartData` (pieces of its content) and
`PartEnd`. Only a part's head and at most the length of the delimiter are
held back, so a file part of any size streams through in bounded memory; the
caller decides where the data goes (tether's server writes file parts to a
temporary file).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from tether.http.parser import Headers, HTTPError

__all__ = ["MultipartParser", "Part", "PartData", "PartEnd", "parse_options_header"]

_PARAM = re.compile(r';\s*([^\s=;]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^;]*))?')


def parse_options_header(value: str) -> tuple[str, dict[str, str]]:
    """Split a header value such as Content-Type or Content-Disposition into its
    lowercase main value and its parameters (RFC 9110 §5.6.6).

    Parameter names are lowercased; quoted values are unquoted; an RFC 8187
    ``name*=UTF-8''...`` value replaces the plain one.
    """
    main, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for match in _PARAM.finditer(";" + rest):
        name = match.group(1).lower()
        raw = (match.group(2) or "").strip()
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        if name.endswith("*"):
            charset, _, encoded = raw.partition("'")
            _, _, encoded = encoded.partition("'")
            try:
                raw = urllib.parse.unquote(encoded, encoding=charset or "utf-8", errors="strict")
            except (LookupError, UnicodeDecodeError):
                continue
            params[name[:-1]] = raw
        else:
            params.setdefault(name, raw)
    return main.strip().lower(), params


@dataclass(frozen=True, slots=True)
class Part:
    """The head of a part.

    Attributes:
        name: the form field name (Content-Disposition's name).
        filename: the file name for a file field, else None.
        content_type: the part's Content-Type, "text/plain" by default (RFC 7578 §4.4).
        headers: all the part's header fields.
    """

    name: str
    filename: str | None
    content_type: str
    headers: Headers


@dataclass(frozen=True, slots=True)
class PartData:
    """A piece of the current part's content."""

    data: bytes


@dataclass(frozen=True, slots=True)
class PartEnd:
    """The current part is complete."""


_PREAMBLE, _HEAD, _BODY, _AFTER, _EPILOGUE = range(5)
_END = PartEnd()


class MultipartParser:
    """Parse a multipart/form-data body fed in pieces.

    Args:
        boundary: the boundary parameter of the Content-Type.
        max_head_size: the largest head of one part (413 beyond).
        max_parts: the most parts in one body (413 beyond).

    Raises:
        ValueError: if the boundary is empty or longer than 70 characters (RFC 2046 §5.1.1).
    """

    def __init__(self, boundary: str, *, max_head_size: int = 8192, max_parts: int = 1000) -> None:
        if not 1 <= len(boundary) <= 70:
            raise ValueError(f"invalid multipart boundary {boundary!r}")
        self._delimiter = b"\r\n--" + boundary.encode("latin-1")
        self._max_head_size = max_head_size
        self._max_parts = max_parts
        self._parts = 0
        # The first delimiter may start the body without a CRLF before it.
        self._buf = bytearray(b"\r\n")
        self._state = _PREAMBLE

    @property
    def complete(self) -> bool:
        """True once the closing delimiter was read."""
        return self._state == _EPILOGUE

    def feed(self, data: bytes) -> list[Part | PartData | PartEnd]:
        """Parse a piece of the body; return the events it completes.

        Raises:
            HTTPError: 400 for a malformed body, 413 for a part head or a
                number of parts over the limits.
        """
        events: list[Part | PartData | PartEnd] = []
        if self._state == _EPILOGUE:
            return events  # RFC 2046 §5.1.1: the epilogue is ignored
        buf = self._buf
        buf += data
        delimiter = self._delimiter
        while True:
            state = self._state
            if state == _PREAMBLE:
                at = buf.find(delimiter)
                if at < 0:
                    # Keep only what may be the start of a delimiter.
                    del buf[: max(0, len(buf) - len(delimiter) + 1)]
                    return events
                del buf[: at + len(delimiter)]
                self._state = _AFTER
            elif state == _AFTER:
                # After a delimiter: "--" ends the body, else optional whitespace and CRLF.
                if len(buf) < 2:
                    return events
                if buf[:2] == b"--":
                    self._state = _EPILOGUE
                    buf.clear()
                    return events
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > 256:
                        raise HTTPError(400, "malformed multipart delimiter line")
                    return events
                if buf[:end].strip(b" \t"):
                    raise HTTPError(400, "malformed multipart delimiter line")
                del buf[: end + 2]
                self._state = _HEAD
            elif state == _HEAD:
                if buf[:2] == b"\r\n":
                    head = b""
                    del buf[:2]
                else:
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        if len(buf) > self._max_head_size:
                            raise HTTPError(413, "multipart part head too large")
                        return events
                    head = bytes(buf[:end])
                    del buf[: end + 4]
                self._parts += 1
                if self._parts > self._max_parts:
                    raise HTTPError(413, "too many multipart parts")
                events.append(self._part(head))
                self._state = _BODY
            else:  # _BODY
                at = buf.find(delimiter)
                if at < 0:
                    keep = len(delimiter) - 1
                    if len(buf) > keep:
                        events.append(PartData(bytes(buf[: len(buf) - keep])))
                        del buf[: len(buf) - keep]
                    return events
                if at:
                    events.append(PartData(bytes(buf[:at])))
                del buf[: at + len(delimiter)]
                events.append(_END)
                self._state = _AFTER

    def _part(self, head: bytes) -> Part:
        fields: list[tuple[str, str]] = []
        for line in head.split(b"\r\n") if head else []:
            name, sep, value = line.partition(b":")
            if not sep or not name.strip():
                raise HTTPError(400, "malformed multipart part header")
            # RFC 7578 §5.1: field names and file names are commonly sent as raw UTF-8.
            fields.append((name.decode("latin-1").strip(), value.decode("utf-8", "replace").strip()))
        headers = Headers(fields)
        disposition, params = parse_options_header(headers.get("content-disposition") or "")
        if disposition != "form-data" or "name" not in params:
            raise HTTPError(400, "multipart part without Content-Disposition: form-data; name=...")
        filename = params.get("filename")
        return Part(params["name"], filename, headers.get("content-type", "text/plain") or "", headers)
