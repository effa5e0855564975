"""Client-side links that carry whole RPC frames, and the URL schemes that open them.

A `Transport` moves one frame at a time: a WebSocket message, an HTTP POST, an
MQTT publish, a serial line. `tether.rpc.connect` picks one by the URL's scheme
(see `open_transport`) and runs an `RpcClientCore` over it.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from tether import tls
from tether.errors import ConnectionClosed, Timeout
from tether.http.auth import digest_authorization, parse_auth_params
from tether.rpc.frames import InvalidFrame, Reply, parse_frame
from tether.rpc.frames import Request as RpcRequest
from tether.ws.client import ClientWebSocket
from tether.ws.client import connect as ws_connect
from tether.ws.protocol import State

__all__ = ["HttpTransport", "Transport", "WebSocketTransport", "error_frame", "open_transport"]


@runtime_checkable
class Transport(Protocol):
    """A client-side link that carries whole frames."""

    async def send(self, frame: bytes) -> None:
        """Send one frame.

        Raises:
            ConnectionClosed: if the link is closed.
        """
        ...

    async def recv(self) -> bytes:
        """Return the next frame.

        Raises:
            ConnectionClosed: when the link is closed.
        """
        ...

    async def close(self) -> None:
        """Close the link; a pending `recv` then raises `ConnectionClosed`."""
        ...


class WebSocketTransport:
    """Frames as WebSocket text messages (spec §2.1): the client side of ``ws://…/rpc``.

    Open it with `open`; `tether.rpc.connect` does for ``ws://`` and ``wss://``.
    """

    def __init__(self, ws: ClientWebSocket) -> None:
        self.ws = ws
        self._closed_watch: asyncio.Future[None] | None = None

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        ssl: ssl_module.SSLContext | None = None,
        timeout: float = 10.0,
        subprotocols: Sequence[str] = ("json-rpc",),
        headers: Sequence[tuple[str, str]] = (),
    ) -> WebSocketTransport:
        """Connect to url, offering subprotocols (``json-rpc``, as the firmware's client).

        Raises:
            HandshakeError: if the server refuses the upgrade.
            Timeout: if it takes longer than timeout seconds.
            OSError: if the server cannot be reached.
        """
        ws = await ws_connect(
            url, subprotocols=list(subprotocols), headers=list(headers), ssl=ssl, open_timeout=timeout
        )
        return cls(ws)

    async def send(self, frame: bytes) -> None:
        """Send a frame as one text message."""
        await self.ws.send(frame.decode("utf-8"))

    def send_nowait(self, frame: bytes) -> bool:
        """Send a frame now; on False, `drain` before sending more (see `ClientWebSocket.send_nowait`)."""
        return self.ws.send_nowait(frame.decode("utf-8"))

    async def drain(self) -> None:
        """Wait until the write buffer has room again."""
        await self.ws.drain()

    async def recv(self) -> bytes:
        """The next message, text or binary, as bytes."""
        message = await self.ws.recv()
        return message.encode("utf-8") if isinstance(message, str) else message

    async def close(self) -> None:
        """Close the connection (1000)."""
        await self.ws.close()

    def attach(self, on_frame: Callable[[str | bytes], None], on_end: Callable[[], None]) -> bool:
        """Have the connection call on_frame with each message as it arrives, instead of `recv`.

        on_frame runs in the protocol's receive path (no task wakes up for a
        message; see `tether.ws.WebSocket.set_message_handler`). When the
        connection ends, on_end is called once and `recv` takes over again: it
        raises `ConnectionClosed`.

        Returns:
            False, and nothing changes, if the connection is closed already.
        """
        ws = self.ws
        if ws.state is State.CLOSED:
            return False
        ws.set_message_handler(on_frame)
        closed = asyncio.ensure_future(ws.wait_closed())
        closed.add_done_callback(lambda _: on_end())
        self._closed_watch = closed
        return True


class _HttpConnection:
    """One keep-alive HTTP/1.1 connection: a request, then its whole response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def request(self, head: bytes, body: bytes) -> tuple[int, dict[str, str], bytes, bool]:
        """Send a request; return status, fields (lower-case names, first value), body, keep-alive."""
        self.writer.write(head + body)
        reader = self.reader
        lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ConnectionClosed(1002, f"invalid HTTP status line {lines[0][:80]!r}")
        status = int(parts[1])
        fields: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon:
                fields.setdefault(name.strip().lower(), value.strip())
        keep = fields.get("connection", "").lower() != "close" and parts[0] == "HTTP/1.1"
        if "chunked" in fields.get("transfer-encoding", "").lower():
            chunks = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass
                    break
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
            body = b"".join(chunks)
        elif "content-length" in fields:
            body = await reader.readexactly(int(fields["content-length"]))
        elif status in (204, 304) or status < 200:
            body = b""
        else:
            body = await reader.read()
            keep = False
        return status, fields, body, keep

    def close(self) -> None:
        self.writer.close()


class HttpTransport:
    """Frames as HTTP POSTs (spec §2.2 frame mode): the client side of ``http://…/rpc``.

    Each `send` posts one frame on a keep-alive connection (a few are opened for
    concurrent calls) and queues the reply frame for `recv`. A 401 is answered with
    HTTP Digest (RFC 7616, MD5, qop=auth) when credentials are given, as mos does;
    the challenge is then reused for later requests with a growing nonce count.
    Any other status than 200 is turned into an error reply for the frame's id
    (``error.code`` = the status), so that the call fails with `RpcError`.

    Args:
        url: ``http://host[:port]/path`` or ``https://…``.
        credentials: (user, password) for HTTP Digest.
        ssl: an SSLContext for https (default: `tether.tls.client_context()`).
        timeout: seconds to open a connection.
        max_connections: connections used at once.
    """

    def __init__(
        self,
        url: str,
        *,
        credentials: tuple[str, str] | None = None,
        ssl: ssl_module.SSLContext | None = None,
        timeout: float = 10.0,
        max_connections: int = 8,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http:// or https:// URL: {url!r}")
        self.secure = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.secure else 80)
        self.target = (parts.path or "/rpc") + (f"?{parts.query}" if parts.query else "")
        host = f"[{self.host}]" if ":" in self.host else self.host
        default_port = 443 if self.secure else 80
        self.host_header = host if self.port == default_port else f"{host}:{self.port}"
        self.credentials = credentials
        self._ssl = ssl
        self.timeout = timeout
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_HttpConnection] = []
        self._received: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._challenge: dict[str, str] | None = None
        self._nc = 0
        self._closed = False

    def __repr__(self) -> str:
        user = None if self.credentials is None else self.credentials[0]
        return f"HttpTransport({self.host_header!r}, target={self.target!r}, user={user!r})"

    async def _open(self) -> _HttpConnection:
        context: ssl_module.SSLContext | None = None
        if self.secure:
            context = self._ssl if self._ssl is not None else tls.client_context()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, ssl=context), self.timeout
            )
        except asyncio.TimeoutError as exc:
            raise Timeout(f"connecting to {self.host}:{self.port} timed out after {self.timeout} s") from exc
        return _HttpConnection(reader, writer)

    def _authorization(self) -> str | None:
        challenge, credentials = self._challenge, self.credentials
        if challenge is None or credentials is None:
            return None
        user, password = credentials
        self._nc += 1
        return digest_authorization(user, password, challenge, method="POST", uri=self.target, nc=self._nc)

    async def _post(self, frame: bytes) -> tuple[int, dict[str, str], bytes]:
        head = (
            f"POST {self.target} HTTP/1.1\r\nHost: {self.host_header}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(frame)}\r\n"
        )
        authorization = self._authorization()
        if authorization is not None:
            head += f"Authorization: {authorization}\r\n"
        data = (head + "\r\n").encode("utf-8")
        for attempt in (0, 1):
            reused = bool(self._idle)
            conn = self._idle.pop() if reused else await self._open()
            try:
                status, fields, body, keep = await conn.request(data, frame)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                conn.close()
                if reused and attempt == 0:
                    continue  # the server closed an idle connection: once more on a new one
                raise ConnectionClosed(1006, f"HTTP request failed: {exc}") from exc
            except BaseException:
                conn.close()
                raise
            if keep and not self._closed:
                self._idle.append(conn)
            else:
                conn.close()
            return status, fields, body
        raise AssertionError("unreachable")  # pragma: no cover

    async def send(self, frame: bytes) -> None:
        """Post frame and queue the reply frame for `recv` (nothing for a notification).

        Raises:
            ConnectionClosed: if the transport is closed or the server cannot be reached.
        """
        if self._closed:
            raise ConnectionClosed(1000, "transport closed")
        async with self._slots:
            status, fields, body = await self._post(frame)
            if status == 401 and self.credentials is not None:
                challenge = fields.get("www-authenticate", "")
                scheme, _, rest = challenge.partition(" ")
                if scheme.lower() == "digest":
                    self._challenge = parse_auth_params(rest)
                    self._nc = 0
                    status, fields, body = await self._post(frame)
        if status == 200:
            if body.strip():
                self._received.put_nowait(body.strip())
            return
        self._received.put_nowait(error_frame(frame, status, body))

    async def recv(self) -> bytes:
        """The next reply frame.

        Raises:
            ConnectionClosed: once the transport is closed.
        """
        frame = await self._received.get()
        if frame is None:
            self._received.put_nowait(None)
            raise ConnectionClosed(1000, "transport closed")
        return frame

    async def close(self) -> None:
        """Close the idle connections; `recv` then raises `ConnectionClosed`."""
        self._closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()
        self._received.put_nowait(None)


def error_frame(request: bytes, status: int, body: bytes) -> bytes:
    """An error reply to request for an HTTP status other than 200."""
    try:
        parsed = parse_frame(request, max_size=len(request))
    except InvalidFrame:
        return b"{}"
    if not isinstance(parsed, RpcRequest) or parsed.id_json is None:
        return b"{}"
    if status == 401:
        message = "authentication required"
    else:
        message = body.decode("utf-8", "replace").strip() or f"HTTP status {status}"
    return Reply(parsed.id_json, "", error_code=status, error_message=message).encode()


def _is_path(url: str) -> bool:
    return "://" not in url


async def open_transport(
    url: str,
    *,
    src: str,
    credentials: tuple[str, str] | None = None,
    ssl: ssl_module.SSLContext | None = None,
    timeout: float = 10.0,
) -> Transport:
    """Open a client transport for a mos-style port.

    ========================================  ==============================================
    ``ws://host/rpc``, ``wss://…``            `WebSocketTransport`
    ``http://host/rpc``, ``https://…``        `HttpTransport` (frame mode)
    ``mqtt://broker[:port]/<device_id>``,     ``tether.rpc.channels.mqtt.open_mqtt_transport``
    ``mqtts://…``, ``mqtt+ws[s]://…``
    ``serial:///dev/ttyUSB0``, a device path  ``tether.rpc.channels.serial.open_serial_transport``
    ========================================  ==============================================

    Args:
        url: the port; credentials are not taken from it here (see `tether.rpc.connect`).
        src: the client's id, which the MQTT transport subscribes for replies.
        credentials: (user, password) for HTTP Digest.
        ssl: an SSLContext for the secure schemes.
        timeout: seconds to connect.

    Raises:
        ValueError: for an unknown scheme.
    """
    if _is_path(url) or url.startswith("serial://"):
        from tether.rpc.channels.serial import open_serial_transport

        path = url[len("serial://") :] if url.startswith("serial://") else url
        return await open_serial_transport(path, timeout=timeout)
    scheme = url.partition("://")[0].lower()
    if scheme in ("ws", "wss"):
        return await WebSocketTransport.open(url, ssl=ssl, timeout=timeout)
    if scheme in ("http", "https"):
        return HttpTransport(url, credentials=credentials, ssl=ssl, timeout=timeout)
    if scheme in ("mqtt", "mqtts", "mqtt+ws", "mqtt+wss"):
        from tether.rpc.channels.mqtt import open_mqtt_transport

        return await open_mqtt_transport(url, src=src, ssl=ssl, timeout=timeout)
    raise ValueError(f"unknown RPC port scheme {scheme!r} in {url!r}")
