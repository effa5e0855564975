"""The application object: routes, WebSocket routes, SSI handlers, static files.

``App`` holds what to answer; `tether.http.serve` runs it. A request goes to
the first of: a WebSocket route (for an upgrade request), an HTTP route
matching path and method, the static web root (GET and HEAD), else 404 (or 405
when the path has routes for other methods).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import tempfile
import urllib.parse
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from tether.http.auth import Auth
from tether.http.multipart import MultipartParser, Part, PartData, parse_options_header
from tether.http.parser import Headers, HTTPError
from tether.http.static import StaticFiles
from tether.ws.server import Server as WsServer
from tether.ws.server import ServerWebSocket, upgrade_server

if TYPE_CHECKING:
    from tether.http.server import _HttpConnection

__all__ = ["App", "FormData", "Request", "Response", "UploadFile"]

F = TypeVar("F", bound=Callable[..., Any])
Handler = Callable[["Request"], Any]

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::(path))?\}")
_BODY_HIGH = 2**18  # pause reading when this much body waits for the handler
_BODY_LOW = 2**16


class MultiDict(Mapping[str, Any]):
    """An immutable mapping in which a name may have several values.

    ``d[name]`` and ``d.get(name)`` give the first value; `get_all` gives all.
    """

    def __init__(self, items: Iterable[tuple[str, Any]] = ()) -> None:
        self._items = list(items)
        self._first: dict[str, Any] = {}
        for key, value in self._items:
            self._first.setdefault(key, value)

    def __getitem__(self, name: str) -> Any:
        return self._first[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)

    def get_all(self, name: str) -> list[Any]:
        """Every value of name, in order."""
        return [v for k, v in self._items if k == name]

    def multi_items(self) -> list[tuple[str, Any]]:
        """All (name, value) pairs, in order."""
        return list(self._items)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._items!r})"


class UploadFile:
    """A file field of a multipart form, streamed to a temporary file.

    The temporary file is deleted when the response has been sent, unless it
    was moved away with `save()`.

    Attributes:
        filename: the client's file name, reduced to its last component;
            untrusted, never use it as a path as it is.
        content_type: the part's Content-Type.
        headers: the part's header fields.
        path: the temporary file.
        size: its size in bytes.
    """

    def __init__(self, filename: str, content_type: str, headers: Headers, path: str) -> None:
        self.filename = filename.replace("\\", "/").rsplit("/", 1)[-1]
        self.content_type = content_type
        self.headers = headers
        self.path = path
        self.size = 0
        self._moved = False

    def read(self) -> bytes:
        """The whole content (for small files)."""
        with open(self.path, "rb") as f:
            return f.read()

    def save(self, destination: str | os.PathLike[str]) -> None:
        """Move the file to destination (then it is not deleted after the response)."""
        shutil.move(self.path, os.fspath(destination))
        self.path = os.fspath(destination)
        self._moved = True

    def _discard(self) -> None:
        if not self._moved:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def __repr__(self) -> str:
        return f"UploadFile(filename={self.filename!r}, content_type={self.content_type!r}, size={self.size})"


class FormData(MultiDict):
    """Form fields: str for plain fields, `UploadFile` for file fields."""


class Request:
    """An HTTP request as a handler sees it.

    Attributes:
        method: the method, e.g. "GET".
        target: the request target as sent, e.g. "/a%20b?x=1".
        headers: the header fields (`tether.http.Headers`, case-insensitive).
        http_version: "1.1" or "1.0".
        path_params: values of the route's {name} parts, percent-decoded.
        app: the application.
        client: the peer's (host, port), or None.
        user: the authenticated user name when the route has auth, else None.
    """

    __slots__ = (
        "__weakref__",
        "_buffered",
        "_chunks",
        "_conn",
        "_continue",
        "_done",
        "_error",
        "_files",
        "_path",
        "_query",
        "_read",
        "_started",
        "_waiter",
        "app",
        "client",
        "headers",
        "http_version",
        "method",
        "path_params",
        "target",
        "user",
    )

    def __init__(
        self,
        method: str,
        target: str,
        headers: Headers,
        *,
        app: App,
        http_version: str = "1.1",
        conn: _HttpConnection | None = None,
        has_body: bool = False,
        client: Any = None,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.http_version = http_version
        self.app = app
        self.client = client
        self.path_params: dict[str, str] = {}
        self.user: str | None = None
        self._conn = conn
        self._path: str | None = None
        self._query: MultiDict | None = None
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._done = not has_body
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._started = False
        self._read: bytes | None = b"" if not has_body else None
        self._files: list[UploadFile] = []
        self._continue = has_body

    # ---------------------------------------------------------------- target

    @property
    def raw_path(self) -> str:
        """The path of the target, still percent-encoded."""
        target = self.target
        if target.startswith(("http://", "https://")):  # RFC 9112 §3.2.2 absolute-form
            target = "/" + target.split("/", 3)[3] if target.count("/") >= 3 else "/"
        return target.partition("?")[0]

    @property
    def path(self) -> str:
        """The path, percent-decoded, e.g. "/a b"."""
        if self._path is None:
            raw = self.raw_path
            self._path = urllib.parse.unquote(raw) if "%" in raw else raw
        return self._path

    @property
    def query_string(self) -> str:
        """The query, still encoded ("" when none)."""
        return self.target.partition("?")[2]

    @property
    def query(self) -> MultiDict:
        """The query parameters; ``request.query["x"]`` is the first value of x."""
        if self._query is None:
            self._query = MultiDict(urllib.parse.parse_qsl(self.query_string, keep_blank_values=True))
        return self._query

    # ------------------------------------------------------------------ body

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        self._wake()

    def _end(self) -> None:
        self._done = True
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if not self._done:
            self._error = exc
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def stream(self) -> AsyncIterator[bytes]:
        """The body in pieces as they arrive, without keeping them.

        Raises:
            HTTPError: 413 past the app's max_upload_size; 400 for a body cut short.
            InvalidState: if the body was already consumed.
        """
        from tether.errors import InvalidState

        if self._started:
            if self._read is not None:
                if self._read:
                    yield self._read
                return
            raise InvalidState("the request body was already read")
        self._started = True
        conn = self._conn
        if self._continue and conn is not None:
            self._continue = False
            conn._send_continue()
        limit = self.app.max_upload_size
        total = 0
        while True:
            if self._chunks:
                chunks, self._chunks = self._chunks, []
                self._buffered = 0
                if conn is not None:
                    conn._body_consumed()
                for chunk in chunks:
                    total += len(chunk)
                    if limit is not None and total > limit:
                        raise HTTPError(413)
                    yield chunk
                continue
            if self._error is not None:
                raise self._error
            if self._done:
                return
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def body(self) -> bytes:
        """The whole body, at most the app's max_body_size bytes.

        Raises:
            HTTPError: 413 if it is larger.
        """
        if self._read is not None:
            return self._read
        limit = self.app.max_body_size
        parts = []
        size = 0
        async for chunk in self.stream():
            size += len(chunk)
            if limit is not None and size > limit:
                raise HTTPError(413)
            parts.append(chunk)
        self._read = b"".join(parts)
        return self._read

    async def json(self) -> Any:
        """The body parsed as JSON.

        Raises:
            HTTPError: 400 if it is not valid JSON, 413 if too large.
        """
        body = await self.body()
        try:
            return json.loads(body)
        except ValueError:
            raise HTTPError(400, "invalid JSON body") from None

    async def form(self) -> FormData:
        """The body as a form: application/x-www-form-urlencoded or multipart/form-data.

        File fields are streamed to temporary files (in the app's upload_dir)
        and given as `UploadFile`; they are deleted after the response.

        Raises:
            HTTPError: 413 over the limits (nothing is left on disk), 400 for a
                malformed body, 415 for another content type.
        """
        ctype, params = parse_options_header(self.headers.get("content-type") or "")
        if ctype == "application/x-www-form-urlencoded":
            text = (await self.body()).decode("utf-8", "replace")
            return FormData(urllib.parse.parse_qsl(text, keep_blank_values=True))
        if ctype != "multipart/form-data" or not params.get("boundary"):
            raise HTTPError(415, "expected a form body")
        try:
            parser = MultipartParser(params["boundary"])
        except ValueError:
            raise HTTPError(400, "invalid multipart boundary") from None
        return await self._multipart(parser)

    async def _multipart(self, parser: MultipartParser) -> FormData:
        app = self.app
        items: list[tuple[str, Any]] = []
        field_bytes = 0
        current: Part | None = None
        chunks: list[bytes] = []
        upload: UploadFile | None = None
        fd = -1
        created: list[UploadFile] = []
        try:
            async for piece in self.stream():
                for event in parser.feed(piece):
                    if isinstance(event, Part):
                        current, chunks = event, []
                        if event.filename is not None:
                            fd, path = tempfile.mkstemp(prefix="tether-upload-", dir=app.upload_dir)
                            upload = UploadFile(event.filename, event.content_type, event.headers, path)
                            created.append(upload)
                    elif isinstance(event, PartData):
                        if upload is not None:
                            upload.size += len(event.data)
                            view = memoryview(event.data)
                            while view:
                                view = view[os.write(fd, view) :]
                        else:
                            field_bytes += len(event.data)
                            if field_bytes > app.max_form_memory:
                                raise HTTPError(413, "form fields too large")
                            chunks.append(event.data)
                    else:
                        assert current is not None
                        if upload is not None:
                            os.close(fd)
                            fd = -1
                            items.append((current.name, upload))
                            upload = None
                        else:
                            items.append((current.name, b"".join(chunks).decode("utf-8", "replace")))
                        current = None
            if not parser.complete:
                raise HTTPError(400, "multipart body ends early")
        except BaseException:
            if fd >= 0:
                os.close(fd)
            for made in created:
                made._discard()
            raise
        self._files.extend(created)
        return FormData(items)

    def _cleanup(self) -> None:
        for upload in self._files:
            upload._discard()
        self._files.clear()

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.target}>"


class Response:
    """A response with an explicit status, header fields or content type.

    Args:
        body: bytes; str (UTF-8, text/plain); dict or list (JSON); a
            `pathlib.Path` (a file, with conditional and range requests);
            an iterable or async iterable of bytes or str (streamed, chunked);
            None (no content).
        status: the status code.
        headers: more header fields, a mapping or (name, value) pairs.
        content_type: the Content-Type; by default from the body's type.
    """

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        body: Any = b"",
        status: int = 200,
        headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        content_type: str | None = None,
    ) -> None:
        self.body = body
        self.status = status
        if headers is None:
            self.headers: list[tuple[str, str]] = []
        elif isinstance(headers, Mapping):
            self.headers = list(headers.items())
        else:
            self.headers = list(headers)
        self.content_type = content_type

    def __repr__(self) -> str:
        return f"<Response {self.status}>"


class _Route:
    __slots__ = ("auth", "handler")

    def __init__(self, handler: Handler, auth: Auth | None) -> None:
        self.handler = handler
        self.auth = auth


class _WsRoute:
    __slots__ = ("auth", "server")

    def __init__(self, server: WsServer, auth: Auth | None) -> None:
        self.server = server
        self.auth = auth


def _compile(path: str) -> re.Pattern[str] | None:
    """A regex for a path with {name} or {name:path} parts; None for a fixed path."""
    if "{" not in path:
        return None
    pattern = ""
    at = 0
    for match in _PARAM.finditer(path):
        pattern += re.escape(path[at : match.start()])
        pattern += f"(?P<{match.group(1)}>.+)" if match.group(2) else f"(?P<{match.group(1)}>[^/]+)"
        at = match.end()
    pattern += re.escape(path[at:])
    return re.compile(pattern)


class App:
    """A web application: HTTP routes, WebSocket routes, SSI handlers and a web root.

    Args:
        web_root: the directory of static files, or None for none.
        ssi: process .shtml files in the web root (``#include``, ``#call``).
        directory_listing: list directories without an index file.
        index: file names served for a directory, in order.
        cache_control: the Cache-Control of static files; "no-cache" makes
            browsers revalidate (cheap: 304) so a device's updated UI shows at once.
        static_auth: authentication for the whole web root, or None.
        max_body_size: the largest body `Request.body()`/`json()`/an
            urlencoded `form()` reads into memory (413 beyond).
        max_upload_size: the largest body `stream()` or a multipart `form()`
            reads, streamed to disk (413 beyond); also the connection-level limit.
        max_form_memory: the most bytes of non-file multipart fields kept in memory.
        upload_dir: where uploads are written; the system's temp directory by default.
        ssi_max_depth: how deeply includes may nest.
    """

    def __init__(
        self,
        web_root: str | os.PathLike[str] | None = None,
        *,
        ssi: bool = True,
        directory_listing: bool = False,
        index: Sequence[str] = ("index.html", "index.shtml"),
        cache_control: str | None = "no-cache",
        static_auth: Auth | None = None,
        max_body_size: int | None = 2**20,
        max_upload_size: int | None = 2**26,
        max_form_memory: int = 2**20,
        upload_dir: str | os.PathLike[str] | None = None,
        ssi_max_depth: int = 8,
    ) -> None:
        self.static = (
            StaticFiles(
                web_root,
                index=index,
                directory_listing=directory_listing,
                cache_control=cache_control,
                ssi=ssi,
            )
            if web_root is not None
            else None
        )
        self.static_auth = static_auth
        self.max_body_size = max_body_size
        self.max_upload_size = max_upload_size
        self.max_form_memory = max_form_memory
        self.upload_dir = os.fspath(upload_dir) if upload_dir is not None else None
        self.ssi_max_depth = ssi_max_depth
        self._exact: dict[str, dict[str, _Route]] = {}
        self._patterns: list[tuple[re.Pattern[str], dict[str, _Route]]] = []
        self._pattern_index: dict[str, dict[str, _Route]] = {}
        self._ws: dict[str, _WsRoute] = {}
        self._ssi: dict[str, Callable[[Any], Any]] = {}

    # ---------------------------------------------------------------- routes

    def route(
        self, path: str, methods: Sequence[str] = ("GET",), *, auth: Auth | None = None
    ) -> Callable[[F], F]:
        """Register a handler for path and methods.

        The handler takes the `Request` and returns the response: dict/list
        (JSON), str, bytes, a `pathlib.Path`, an iterator or async iterator
        (streamed), None (204) or a `Response`. It may be sync (then it runs
        on the event loop and must be quick) or async. Raise `HTTPError` to
        answer with an error status.

        Args:
            path: "/api/cpu", or with parameters "/items/{name}" (one segment)
                and "/files/{rest:path}" (the rest of the path).
            methods: the methods; GET also answers HEAD.
            auth: a `BasicAuth`, `DigestAuth` or `BearerAuth`, or None.

        Raises:
            ValueError: if the path does not start with "/" or the route exists.
        """
        if not path.startswith("/"):
            raise ValueError(f"route path {path!r} must start with '/'")

        def decorator(handler: F) -> F:
            pattern = _compile(path)
            if pattern is None:
                table = self._exact.setdefault(path, {})
            else:
                table = self._pattern_index.get(path)  # type: ignore[assignment]
                if table is None:
                    table = self._pattern_index[path] = {}
                    self._patterns.append((pattern, table))
            for method in methods:
                method = method.upper()
                if method in table:
                    raise ValueError(f"route {method} {path} is already registered")
                table[method] = _Route(handler, auth)
            return handler

        return decorator

    def get(self, path: str, *, auth: Auth | None = None) -> Callable[[F], F]:
        """Register a GET (and HEAD) handler; see `route`."""
        return self.route(path, ("GET",), auth=auth)

    def post(self, path: str, *, auth: Auth | None = None) -> Callable[[F], F]:
        """Register a POST handler; see `route`."""
        return self.route(path, ("POST",), auth=auth)

    def put(self, path: str, *, auth: Auth | None = None) -> Callable[[F], F]:
        """Register a PUT handler; see `route`."""
        return self.route(path, ("PUT",), auth=auth)

    def patch(self, path: str, *, auth: Auth | None = None) -> Callable[[F], F]:
        """Register a PATCH handler; see `route`."""
        return self.route(path, ("PATCH",), auth=auth)

    def delete(self, path: str, *, auth: Auth | None = None) -> Callable[[F], F]:
        """Register a DELETE handler; see `route`."""
        return self.route(path, ("DELETE",), auth=auth)

    def websocket(
        self,
        path: str,
        *,
        auth: Auth | None = None,
        subprotocols: Sequence[str] = (),
        compression: Literal["deflate"] | None = "deflate",
        max_size: int | None = 2**20,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        close_timeout: float = 10.0,
        max_queue: int = 32,
        write_limit: int = 2**16,
    ) -> Callable[[F], F]:
        """Register a WebSocket handler for path (exact).

        The handler is a coroutine function taking a `tether.ws.ServerWebSocket`
        (``async for message in ws``, ``await ws.send(...)``); when it returns
        the connection closes with 1000, when it raises, with 1011.

        Args:
            path: the path, e.g. "/ws".
            auth: checked on the upgrade request.
            subprotocols, compression, max_size, ping_interval, ping_timeout,
                close_timeout, max_queue, write_limit: as for `tether.ws.serve`.

        Raises:
            ValueError: if path already has a WebSocket handler.
        """
        if path in self._ws:
            raise ValueError(f"websocket route {path} is already registered")

        def decorator(handler: F) -> F:
            server = upgrade_server(
                handler,
                subprotocols=subprotocols,
                compression=compression,
                open_timeout=None,
                max_size=max_size,
                ping_interval=ping_interval,
                ping_timeout=ping_timeout,
                close_timeout=close_timeout,
                max_queue=max_queue,
                write_limit=write_limit,
            )
            self._ws[path] = _WsRoute(server, auth)
            return handler

        return decorator

    def ssi(self, name: str) -> Callable[[F], F]:
        """Register the handler of ``<!--#call name -->`` in .shtml files.

        The handler takes the `Request` and returns the text to insert (HTML,
        inserted as it is: escape values with html.escape); sync or async.
        """

        def decorator(handler: F) -> F:
            self._ssi[name] = handler
            return handler

        return decorator

    def websockets(self, path: str) -> frozenset[ServerWebSocket]:
        """The WebSocket connections on path."""
        route = self._ws.get(path)
        return route.server.connections if route is not None else frozenset()

    def broadcast(self, path: str, message: str | bytes) -> _Sent:
        """Send message to every open WebSocket on path, without waiting.

        Works called plainly or awaited (``await app.broadcast(...)``). A
        client that does not read fast enough misses messages instead of
        making the server's memory grow.

        Returns:
            An awaitable whose value is the number of connections written to.

        Raises:
            KeyError: if path has no WebSocket route.
        """
        return _Sent(self._ws[path].server.broadcast(message))

    # -------------------------------------------------------------- dispatch

    def has_route(self, method: str, path: str) -> bool:
        """Whether a request for method and path would reach a route (not the static files)."""
        return self._match(method, path)[0] is not None

    def _match(self, method: str, path: str) -> tuple[_Route | None, dict[str, str], list[str]]:
        """The route for method and path, its parameters, and (without a route) the allowed methods."""
        table = self._exact.get(path)
        params: dict[str, str] = {}
        if table is None:
            for pattern, candidate in self._patterns:
                match = pattern.fullmatch(path)
                if match is not None:
                    table = candidate
                    params = match.groupdict()
                    break
            else:
                return None, params, []
        route = table.get(method)
        if route is None and method == "HEAD":
            route = table.get("GET")
        if route is not None:
            return route, params, []
        return None, params, sorted(set(table) | ({"HEAD"} if "GET" in table else set()))

    def _ws_servers(self) -> list[WsServer]:
        return [route.server for route in self._ws.values()]


class _Sent:
    """The result of `App.broadcast`: an int, and awaitable for symmetry with async code."""

    __slots__ = ("count",)

    def __init__(self, count: int) -> None:
        self.count = count

    def __await__(self) -> Generator[None, None, int]:
        if False:  # pragma: no cover - a generator that finishes at once
            yield
        return self.count

    def __int__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"<broadcast to {self.count}>"


_JSON_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
try:
    # json.dumps() and JSONEncoder.encode() build this C encoder anew on every call;
    # built once, it halves the cost of a small document. Without circular-reference
    # markers: a circular value ends in RecursionError, and the slow path reports it.
    from _json import encode_basestring as _encode_str
    from _json import make_encoder as _make_encoder

    _C_ENCODER: Any = _make_encoder(
        None, _JSON_ENCODER.default, _encode_str, None, ":", ",", False, False, True
    )
except ImportError:  # pragma: no cover - an interpreter without the _json accelerator
    _C_ENCODER = None


def json_bytes(value: Any) -> bytes:
    """Encode value as compact UTF-8 JSON.

    Raises:
        TypeError: for a value JSON cannot hold; ValueError for a circular one.
    """
    if _C_ENCODER is not None:
        try:
            return "".join(_C_ENCODER(value, 0)).encode("utf-8")
        except RecursionError:
            pass  # circular, or nested very deeply: let the checking encoder say which
    return _JSON_ENCODER.encode(value).encode("utf-8")


def is_path(value: object) -> bool:
    """Whether value is a file path to serve."""
    return isinstance(value, Path)
