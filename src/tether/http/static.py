"""Static files from a web root: path resolution, conditional and range requests.

The request path is checked segment by segment *before* it is decoded into a
file name, so that no spelling of ".." (plain, %2e%2e, with %2f or %5c
separators, backslashes, NUL) can climb out of the root; the result is then
resolved with `os.path.realpath` and must still lie inside the root, which
catches symlinks that point out of it.

Small files are kept in memory with their encoded header block, keyed by URL
path and checked against a fresh `os.stat` on every request (device, inode,
size, mtime and ctime in nanoseconds), so a changed file is never served stale
and a hit costs two system calls and no copy.
"""

from __future__ import annotations

import mimetypes
import os
import secrets
import stat as stat_module
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tether.http.parser import Headers, HTTPError

__all__ = ["FileBody", "StaticFiles", "content_type_for", "parse_range"]

# A fixed table first, so that answers do not depend on the machine's mime.types.
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".shtml": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
    ".xml": "application/xml",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
    ".wasm": "application/wasm",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".pdf": "application/pdf",
    ".zip": "application/zip",
    ".gz": "application/gzip",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
    ".bin": "application/octet-stream",
}

SMALL_FILE = 65536  # files up to this size are read at once and may be cached
_CACHE_BYTES = 16 * 2**20
_MAX_RANGES = 16
_MAX_PATHS = 4096


def content_type_for(name: str) -> str:
    """The Content-Type for a file name; application/octet-stream when unknown."""
    ext = os.path.splitext(name)[1].lower()
    known = _TYPES.get(ext)
    if known is not None:
        return known
    guessed, _ = mimetypes.guess_type(name, strict=False)
    if guessed is None:
        return "application/octet-stream"
    return guessed + "; charset=utf-8" if guessed.startswith("text/") else guessed


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(timestamp: float) -> str:
    """Format a time as an IMF-fixdate (RFC 9110 §5.6.7), e.g. ``Sun, 06 Nov 1994 08:49:37 GMT``.

    Written out rather than with `email.utils`, whose import costs a device a megabyte.
    """
    t = time.gmtime(timestamp)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def _parse_date(value: str) -> float | None:
    import email.utils  # the three date forms of RFC 9110 §5.6.7; rare enough to load late

    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.timestamp()


def parse_range(value: str, size: int) -> list[tuple[int, int]] | None:
    """Parse a Range header for a representation of size bytes (RFC 9110 §14.2).

    Returns:
        The satisfiable ranges as (first, last) inclusive, in the order asked;
        an empty list when none is satisfiable (answer 416); None when the
        header is malformed, has another unit or too many ranges (ignore it
        and answer 200).
    """
    unit, sep, specs = value.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    ranges: list[tuple[int, int]] = []
    items = [s.strip() for s in specs.split(",") if s.strip()]
    if not items or len(items) > _MAX_RANGES:
        return None
    for item in items:
        first, dash, last = item.partition("-")
        first, last = first.strip(), last.strip()
        if not dash or not (first.isdigit() or last.isdigit()):
            return None
        if (first and not first.isdigit()) or (last and not last.isdigit()):
            return None
        if not first:  # suffix: the last N bytes
            length = int(last)
            if length == 0 or size == 0:
                continue
            ranges.append((max(0, size - length), size - 1))
            continue
        start = int(first)
        end = int(last) if last else size - 1
        if last and end < start:
            return None
        if start >= size:
            continue
        ranges.append((start, min(end, size - 1)))
    return ranges


@dataclass
class FileBody:
    """A response body read from a file: pieces of bytes and file ranges.

    Attributes:
        path: the file.
        segments: bytes to send as they are, or (offset, length) in the file.
        length: the total length in bytes.
    """

    path: str
    segments: list[bytes | tuple[int, int]]
    length: int


@dataclass
class _Entry:
    """What is known about one file; its identity is checked on every hit."""

    identity: tuple[int, int, int, int, int]
    content: bytes | None
    etag: str
    last_modified: str
    mtime: int
    content_type: str


def _identity(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class StaticFiles:
    """Serve the files under a directory.

    Args:
        root: the web root.
        index: file names tried, in order, for a directory.
        directory_listing: list a directory that has no index file (off by default).
        cache_control: the Cache-Control value sent with files; None for none.
        gzip: serve file.gz instead of file when the client accepts gzip.
        ssi: treat .shtml files as Server Side Includes (handled by the caller).
        hidden: a real path for which it returns True is answered 404, as if absent (a
            device hides the files that hold credentials).

    Raises:
        ValueError: if root is not a directory.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        index: Sequence[str] = ("index.html", "index.shtml"),
        directory_listing: bool = False,
        cache_control: str | None = "no-cache",
        gzip: bool = True,
        ssi: bool = True,
        hidden: Callable[[str], bool] | None = None,
    ) -> None:
        self.root = os.path.realpath(os.fspath(root))
        self.hidden = hidden
        if not os.path.isdir(self.root):
            raise ValueError(f"web root {os.fspath(root)!r} is not a directory")
        self.index = tuple(index)
        self.directory_listing = directory_listing
        self.cache_control = cache_control
        self.gzip = gzip
        self.ssi = ssi
        self._paths: dict[str, tuple[str, str, tuple[int, int, int, int, int]]] = {}
        self._files: OrderedDict[str, _Entry] = OrderedDict()
        self._cached_bytes = 0

    # ---------------------------------------------------------------- resolution

    def inside(self, real: str) -> bool:
        """Whether a resolved path lies in the root."""
        return real == self.root or real.startswith(self.root + os.sep)

    def resolve(self, raw_path: str) -> tuple[str, os.stat_result]:
        """Map a request path (still percent-encoded, without the query) to a file.

        Returns:
            (real path, its stat) of a regular file or a directory in the root.

        Raises:
            HTTPError: 400 for undecodable input, 403 for a traversal attempt,
                404 when nothing is there (or a symlink leads out of the root).
        """
        known = self._paths.get(raw_path)
        if known is not None:
            full, real, identity = known
            try:
                st = os.stat(full)
            except (OSError, ValueError):
                st = None
            # The same file as when its real path was checked: no symlink moved.
            if st is not None and _identity(st) == identity:
                if self.hidden is not None and self.hidden(real):
                    raise HTTPError(404)
                return real, st
            del self._paths[raw_path]
        parts: list[str] = []
        for segment in raw_path.split("/"):
            if not segment:
                continue
            try:
                name = urllib.parse.unquote(segment, errors="strict")
            except UnicodeDecodeError:
                raise HTTPError(400, "path is not valid UTF-8") from None
            if name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
                raise HTTPError(403, "path leaves the web root")
            if name.lower().startswith(".ht"):  # .htdigest, .htpasswd, .htaccess
                raise HTTPError(404)
            parts.append(name)
        full = os.path.join(self.root, *parts)
        real = os.path.realpath(full)
        if not self.inside(real) or (self.hidden is not None and self.hidden(real)):
            raise HTTPError(404)
        try:
            st = os.stat(real)
        except (OSError, ValueError):
            raise HTTPError(404) from None
        if not (stat_module.S_ISREG(st.st_mode) or stat_module.S_ISDIR(st.st_mode)):
            raise HTTPError(404)
        if len(self._paths) >= _MAX_PATHS:
            self._paths.pop(next(iter(self._paths)))
        self._paths[raw_path] = (full, real, _identity(st))
        return real, st

    def _entry(self, real: str, st: os.stat_result) -> _Entry:
        """What is known of a file, from the cache when it is unchanged."""
        identity = _identity(st)
        entry = self._files.get(real)
        if entry is not None:
            if entry.identity == identity:
                return entry
            self._forget(real)
        content: bytes | None = None
        if st.st_size <= SMALL_FILE:
            try:
                with open(real, "rb") as f:
                    content = f.read(SMALL_FILE + 1)
            except OSError:
                raise HTTPError(404) from None
            if len(content) != st.st_size:  # changed while being read: read it again next time
                raise HTTPError(503, "file changed while being read")
        entry = _Entry(
            identity=identity,
            content=content,
            etag=f'"{st.st_mtime_ns:x}-{st.st_size:x}"',
            last_modified=http_date(st.st_mtime),
            mtime=int(st.st_mtime),
            content_type=content_type_for(real[:-3] if real.endswith(".gz") else real),
        )
        if content is not None:
            self._files[real] = entry
            self._cached_bytes += len(content)
            while self._cached_bytes > _CACHE_BYTES:
                self._forget(next(iter(self._files)))
        return entry

    def _forget(self, real: str) -> None:
        entry = self._files.pop(real, None)
        if entry is not None and entry.content is not None:
            self._cached_bytes -= len(entry.content)

    # ------------------------------------------------------------------ answers

    def file_response(
        self,
        method: str,
        headers: Headers,
        real: str,
        st: os.stat_result | None = None,
        *,
        content_type: str | None = None,
    ) -> tuple[int, list[tuple[str, str]], bytes | FileBody]:
        """Answer a GET or HEAD for a file: 200, 206, 304 or 416.

        Args:
            method: "GET" or "HEAD".
            headers: the request header fields.
            real: the file's resolved path.
            st: its stat, when the caller has it.
            content_type: the Content-Type, guessed from the name by default.

        Returns:
            (status, header fields, body).

        Raises:
            HTTPError: 404 if the file is not there.
        """
        vary = False
        encoding = None
        if self.gzip:
            gz = real + ".gz"
            gz_st = _stat_file(gz)
            if gz_st is not None and self.inside(os.path.realpath(gz)):
                vary = True
                if _accepts_gzip(headers.get("accept-encoding")):
                    real, st, encoding = gz, gz_st, "gzip"
        if st is None:
            st = _stat_file(real)
            if st is None:
                raise HTTPError(404)
        entry = self._entry(real, st)
        ctype = content_type or entry.content_type
        out = [("Content-Type", ctype), ("ETag", entry.etag), ("Last-Modified", entry.last_modified)]
        if self.cache_control:
            out.append(("Cache-Control", self.cache_control))
        if vary:
            out.append(("Vary", "Accept-Encoding"))
        if encoding:
            out.append(("Content-Encoding", encoding))
        # RFC 9110 §13.2.2: If-None-Match first; If-Modified-Since only without it.
        inm = headers.get("if-none-match")
        if inm is not None:
            if _etag_matches(inm, entry.etag):
                return 304, out, b""
        else:
            ims = headers.get("if-modified-since")
            if ims is not None:
                since = _parse_date(ims)
                if since is not None and entry.mtime <= since:
                    return 304, out, b""
        size = entry.identity[2]
        out.append(("Accept-Ranges", "bytes"))
        range_value = headers.get("range")
        if range_value is not None and method == "GET" and _if_range_ok(headers.get("if-range"), entry):
            ranges = parse_range(range_value, size)
            if ranges == []:
                out.append(("Content-Range", f"bytes */{size}"))
                return 416, out, b""
            if ranges:
                return self._partial(real, entry, out, ctype, ranges, size)
        if entry.content is not None:
            return 200, out, entry.content
        return 200, out, FileBody(real, [(0, size)], size)

    def _partial(
        self,
        real: str,
        entry: _Entry,
        out: list[tuple[str, str]],
        ctype: str,
        ranges: list[tuple[int, int]],
        size: int,
    ) -> tuple[int, list[tuple[str, str]], bytes | FileBody]:
        def piece(first: int, last: int) -> bytes | tuple[int, int]:
            if entry.content is not None:
                return entry.content[first : last + 1]
            return (first, last - first + 1)

        if len(ranges) == 1:
            first, last = ranges[0]
            out.append(("Content-Range", f"bytes {first}-{last}/{size}"))
            segment = piece(first, last)
            if isinstance(segment, bytes):
                return 206, out, segment
            return 206, out, FileBody(real, [segment], segment[1])
        # RFC 9110 §14.6: several ranges go in a multipart/byteranges body.
        boundary = secrets.token_hex(12)
        segments: list[bytes | tuple[int, int]] = []
        length = 0
        for first, last in ranges:
            part_head = (
                f"\r\n--{boundary}\r\nContent-Type: {ctype}\r\n"
                f"Content-Range: bytes {first}-{last}/{size}\r\n\r\n"
            ).encode("latin-1")
            segments.append(part_head)
            segments.append(piece(first, last))
            length += len(part_head) + last - first + 1
        tail = f"\r\n--{boundary}--\r\n".encode("latin-1")
        segments.append(tail)
        length += len(tail)
        out[0] = ("Content-Type", f"multipart/byteranges; boundary={boundary}")
        if entry.content is not None:
            return 206, out, b"".join(s for s in segments if isinstance(s, bytes))
        return 206, out, FileBody(real, segments, length)

    def listing(self, url_path: str, real: str) -> bytes:
        """An HTML page listing a directory, every name escaped."""
        try:
            names = sorted(os.listdir(real))
        except OSError:
            raise HTTPError(404) from None
        import html

        title = html.escape(urllib.parse.unquote(url_path))
        rows = []
        if url_path != "/":
            rows.append('<li><a href="../">../</a></li>')
        for name in names:
            if name.lower().startswith(".ht"):
                continue
            is_dir = os.path.isdir(os.path.join(real, name))
            shown = name + ("/" if is_dir else "")
            href = urllib.parse.quote(name) + ("/" if is_dir else "")
            rows.append(f'<li><a href="{html.escape(href)}">{html.escape(shown)}</a></li>')
        page = (
            f"<!DOCTYPE html>\n<html><head><meta charset=utf-8><title>Index of {title}</title></head>"
            f"<body><h1>Index of {title}</h1><ul>\n" + "\n".join(rows) + "\n</ul></body></html>\n"
        )
        return page.encode("utf-8")


def _stat_file(path: str) -> os.stat_result | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st if stat_module.S_ISREG(st.st_mode) else None


def _accepts_gzip(value: str | None) -> bool:
    """Whether Accept-Encoding allows gzip (RFC 9110 §12.5.3), q=0 meaning no."""
    if not value:
        return False
    for item in value.split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() not in ("gzip", "x-gzip", "*"):
            continue
        params = params.strip().replace(" ", "")
        if params.startswith("q="):
            try:
                return float(params[2:]) > 0
            except ValueError:
                return False
        return True
    return False


def _etag_matches(value: str, etag: str) -> bool:
    """Weak comparison for If-None-Match (RFC 9110 §13.1.2)."""
    if value.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == opaque for tag in value.split(","))


def _if_range_ok(value: str | None, entry: _Entry) -> bool:
    """Whether a Range applies under If-Range (RFC 9110 §13.1.5): strong match only."""
    if value is None:
        return True
    value = value.strip()
    if value.startswith('"') or value.startswith("W/"):
        return value == entry.etag
    since = _parse_date(value)
    return since is not None and entry.mtime == int(since)
