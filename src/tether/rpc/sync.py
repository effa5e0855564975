"""The blocking RPC client: `connect` a mos-style port, then `Client.call`.

For scripts and threaded programs::

    import tether.rpc.sync

    with tether.rpc.sync.connect("ws://192.168.4.1/rpc") as client:
        print(client.call("Sys.GetInfo"))

Theory of operation. A `Client` drives the same sans-I/O core as the asyncio client,
`tether.rpc.client.RpcClientCore`, over plain sockets and file descriptors, with no
event loop and no thread of its own: ``ws://`` and ``wss://`` over `tether.ws.sync`,
``http://`` and ``https://`` over `http.client` (one ``POST /rpc`` per call on
keep-alive connections, spec mgos-rpc.md §2.2), a serial path over its file descriptor
with `tether.rpc.serialframe` (§2.4). ``mqtt://`` is the exception: it uses
`tether.mqtt.sync.Client`, which keeps a loop thread of its own because MQTT needs
someone reading all the time.

Every method may be called from any thread, and calls from several threads run at
once. Sending is done under a lock; replies are matched to calls by id. Over HTTP
each call gets the reply to its own request (a connection per concurrent call). Over
the other links the threads waiting for replies take turns: one of them reads, hands
every reply to its caller, and when its own has come lets the next waiting thread
read (leader and followers).

Credentials (an argument, or ``user:pass@`` in a ws or http URL) answer a 401 the way
mos does: in the frame (§4, by the core) and, over HTTP, with HTTP Digest.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import secrets
import select
import ssl as ssl_module
import threading
import time
import urllib.parse
from collections import deque
from types import TracebackType
from typing import Any

from tether import tls
from tether.errors import ConnectionClosed, ProtocolError, RpcError, TetherError, Timeout
from tether.http.auth import digest_authorization, parse_auth_params
from tether.mqtt import sync as mqtt_sync
from tether.rpc.channels.mqtt import response_src
from tether.rpc.channels.serial import configure_tty
from tether.rpc.client import CallFailed, CallResult, RpcClientCore
from tether.rpc.frames import InvalidFrame
from tether.rpc.serialframe import FrameReceived, SerialFramer, encode_frame
from tether.rpc.transports import error_frame
from tether.ws import sync as ws_sync

__all__ = ["Client", "connect"]

logger = logging.getLogger("tether.rpc")

_READ_SIZE = 65536
#: The largest reply frame a serial client accepts.
_SERIAL_MAX_FRAME = 1 << 20


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


# --- links: one frame at a time ------------------------------------------------------------


class _Link:
    """Carries whole frames. A link whose replies come back with the request (HTTP)
    returns them from `send`; the others from `recv`."""

    def send(self, frame: bytes, deadline: float) -> bytes | None:
        raise NotImplementedError

    def recv(self, deadline: float) -> bytes:
        """The next frame; Timeout at the deadline, ConnectionClosed at the end."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _WebSocketLink(_Link):
    def __init__(self, ws: ws_sync.WebSocket, url: str) -> None:
        self.ws = ws
        self.url = url

    def __repr__(self) -> str:
        return f"ws {self.url}"

    def send(self, frame: bytes, deadline: float) -> None:
        self.ws.send(frame.decode("utf-8"), timeout=_remaining(deadline))

    def recv(self, deadline: float) -> bytes:
        message = self.ws.recv(timeout=_remaining(deadline))
        return message.encode("utf-8") if isinstance(message, str) else message

    def close(self) -> None:
        self.ws.close()


class _HttpLink(_Link):
    """Frame mode over keep-alive connections: an idle one is reused, or a new one opened,
    so that concurrent calls each have their own (§2.2)."""

    def __init__(
        self, url: str, credentials: tuple[str, str] | None, ssl: ssl_module.SSLContext | None, timeout: float
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        self.url = url
        self.secure = parts.scheme == "https"
        if not parts.hostname:
            raise ValueError(f"URL {url!r} has no host")
        self.host = parts.hostname
        self.port = parts.port or (443 if self.secure else 80)
        self.target = (parts.path or "/rpc") + (f"?{parts.query}" if parts.query else "")
        self.credentials = credentials
        self.ssl = (ssl or tls.client_context()) if self.secure else None
        self.timeout = timeout
        self._lock = threading.Lock()
        self._idle: list[http.client.HTTPConnection] = []
        self._challenge: dict[str, str] | None = None
        self._nc = 0
        self._closed = False

    def __repr__(self) -> str:
        return f"http {self.url}"

    def _open(self, deadline: float) -> http.client.HTTPConnection:
        """A new connection, connected within the client's timeout (and the call's)."""
        timeout = min(self.timeout, _remaining(deadline))
        conn = (
            http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.ssl)
            if self.secure
            else http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        )
        try:
            conn.connect()
        except TimeoutError as exc:
            raise Timeout(f"connecting to {self.host}:{self.port} timed out") from exc
        except OSError as exc:
            raise ConnectionClosed(1006, f"HTTP request to {self.url} failed: {exc}") from exc
        return conn

    def _authorization(self) -> str | None:
        """An HTTP Digest Authorization (RFC 7616, MD5, qop=auth), as mos sends it."""
        with self._lock:
            challenge, credentials = self._challenge, self.credentials
            if challenge is None or credentials is None:
                return None
            self._nc += 1
            nc = self._nc
        user, password = credentials
        return digest_authorization(user, password, challenge, method="POST", uri=self.target, nc=nc)

    def _post(self, frame: bytes, deadline: float) -> tuple[int, str, bytes]:
        if _remaining(deadline) == 0:
            raise Timeout(f"no time left to post to {self.url}")
        headers = {"Content-Type": "application/json", "Connection": "keep-alive"}
        authorization = self._authorization()
        if authorization is not None:
            headers["Authorization"] = authorization
        for attempt in (0, 1):
            with self._lock:
                if self._closed:
                    raise ConnectionClosed(1000, "client closed")
                conn = self._idle.pop() if self._idle else None
            reused = conn is not None
            if conn is None:
                conn = self._open(deadline)
            try:
                if conn.sock is not None:  # the call's time, not the connect timeout
                    conn.sock.settimeout(_remaining(deadline))
                conn.request("POST", self.target, body=frame, headers=headers)
                response = conn.getresponse()
                body = response.read()
            except TimeoutError as exc:
                conn.close()
                raise Timeout(f"no HTTP response from {self.host}:{self.port} in time") from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if reused and attempt == 0:
                    continue  # the server closed an idle connection: once more on a new one
                raise ConnectionClosed(1006, f"HTTP request to {self.url} failed: {exc}") from exc
            except BaseException:
                conn.close()
                raise
            with self._lock:
                keep = not response.will_close and not self._closed
                if keep:
                    self._idle.append(conn)
            if not keep:
                conn.close()
            return response.status, response.getheader("WWW-Authenticate", ""), body
        raise AssertionError("unreachable")  # pragma: no cover

    def send(self, frame: bytes, deadline: float) -> bytes | None:
        status, challenge, body = self._post(frame, deadline)
        if status == 401 and self.credentials is not None:
            scheme, _, rest = challenge.partition(" ")
            if scheme.lower() == "digest":
                with self._lock:
                    self._challenge = parse_auth_params(rest)
                    self._nc = 0
                status, challenge, body = self._post(frame, deadline)
        if status == 200:
            return body.strip() or None
        # Another status fails the call with it as the code (as the asyncio client does).
        return error_frame(frame, status, body)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class _SerialLink(_Link):
    """Frames as mos writes them (``\\n\"\"\"<frame><crc>\"\"\"\\n``) on a tty's file
    descriptor; replies read with `SerialFramer`, lines that are no frames skipped."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path
        self._framer = SerialFramer(client=True, max_frame_size=_SERIAL_MAX_FRAME)
        self._frames: deque[bytes] = deque()
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._closed: ConnectionClosed | None = None

    def __repr__(self) -> str:
        return f"serial {self.path}"

    def _wait(self, deadline: float, *, write: bool) -> None:
        watched = ([self._wake_r], [self.fd]) if write else ([self.fd, self._wake_r], [])
        readable, writable, _ = select.select(*watched, [], _remaining(deadline))
        if self._closed is not None or self._wake_r in readable:
            raise ConnectionClosed(1000, "serial line closed")
        if not readable and not writable:
            raise Timeout(f"serial line {self.path} timed out")

    def send(self, frame: bytes, deadline: float) -> None:
        # Line breaks, which valid JSON holds only as whitespace, would end the frame.
        data = memoryview(encode_frame(frame.replace(b"\n", b" "), wrap=True, crc=True))
        with self._write_lock:
            while data:
                if self._closed is not None:
                    raise self._closed
                try:
                    written = os.write(self.fd, data)
                except BlockingIOError:
                    self._wait(deadline, write=True)
                    continue
                except OSError as exc:
                    raise ConnectionClosed(1006, f"writing to {self.path} failed: {exc}") from exc
                data = data[written:]

    def recv(self, deadline: float) -> bytes:
        with self._read_lock:
            while not self._frames:
                if self._closed is not None:
                    raise self._closed
                try:
                    data = os.read(self.fd, _READ_SIZE)
                except BlockingIOError:
                    self._wait(deadline, write=False)
                    continue
                except OSError as exc:  # EIO: a pseudo-terminal's other side is closed
                    raise ConnectionClosed(1006, f"reading {self.path} failed: {exc}") from exc
                if not data:
                    raise ConnectionClosed(1006, f"serial line {self.path} closed by the other side")
                self._framer.receive_data(data)
                for event in self._framer.events_received():
                    if isinstance(event, FrameReceived):
                        self._frames.append(event.frame)
                    else:
                        logger.debug("serial: skipped %s: %r", event.reason, event.data)
            return self._frames.popleft()

    def close(self) -> None:
        if self._closed is not None:
            return
        self._closed = ConnectionClosed(1000, "serial line closed")
        os.write(self._wake_w, b"x")  # wakes a reader or writer blocked in select()
        with self._write_lock, self._read_lock:
            for fd in (self.fd, self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)


class _MqttLink(_Link):
    """mos over MQTT (§2.3): publish QoS 1 to ``<device_id>/rpc``, replies on ``<src>/rpc``."""

    def __init__(self, client: mqtt_sync.Client, stream: mqtt_sync.MessageStream, device_id: str) -> None:
        self.client = client
        self.stream = stream
        self.device_id = device_id

    def __repr__(self) -> str:
        return f"mqtt {self.device_id}"

    def send(self, frame: bytes, deadline: float) -> None:
        try:
            self.client.publish(f"{self.device_id}/rpc", frame, qos=1, timeout=_remaining(deadline))
        except (Timeout, ConnectionClosed):
            raise
        except TetherError as exc:
            raise ConnectionClosed(1006, f"MQTT publish failed: {exc}") from exc

    def recv(self, deadline: float) -> bytes:
        try:
            return self.stream.get(timeout=_remaining(deadline)).payload
        except StopIteration:
            raise ConnectionClosed(1000, "MQTT connection closed") from None
        except (Timeout, ConnectionClosed):
            raise
        except TetherError as exc:
            raise ConnectionClosed(1006, f"MQTT connection lost: {exc}") from exc

    def close(self) -> None:
        self.stream.close()
        self.client.disconnect()


# --- the client ------------------------------------------------------------------------------


class Client:
    """A blocking RPC client over one link; made by `connect`.

    Use it as a context manager, or call `close`. Every method is safe from any thread.

    Args:
        link: the open link.
        src: this client's id, the ``src`` of its frames.
        dst: the ``dst`` of calls, None to leave it out.
        credentials: (user, password) to answer an in-frame 401 challenge with.
        timeout: the default seconds a call waits for its reply.
        max_pending: calls that may wait at once; one more fails the oldest with 429.
    """

    def __init__(
        self,
        link: _Link,
        *,
        src: str = "tether",
        dst: str | None = None,
        credentials: tuple[str, str] | None = None,
        timeout: float = 20.0,
        max_pending: int = 25,
    ) -> None:
        self.timeout = timeout
        self.core = RpcClientCore(src, dst=dst, credentials=credentials, max_pending=max_pending)
        self._link = link
        self._lock = threading.Lock()  # the core, the waiters and the reader's turn
        self._changed = threading.Condition(self._lock)
        self._waiting: set[int] = set()
        self._results: dict[int, tuple[bool, Any]] = {}
        self._reading = False
        self._closed: ConnectionClosed | None = None
        self._link_closed = False

    def __repr__(self) -> str:
        return f"Client({self._link!r}, src={self.core.src!r})"

    def call(self, method: str, args: Any = None, *, timeout: float | None = None) -> Any:
        """Call method with args and return its result.

        Args:
            method: e.g. ``Sys.GetInfo``.
            args: the ``params``, any JSON value; None for none.
            timeout: seconds to wait for the reply; None for the client's default.

        Returns:
            The ``result`` (None for ``null``, or for the ``"error":{"code":0}`` quirk).

        Raises:
            RpcError: for an error reply (``.code``, ``.message``), 429 if evicted from the queue.
            Timeout: if no reply came in time; the client goes on serving other calls.
            ConnectionClosed: if the link is closed.
            ValueError, TypeError: if args cannot be JSON.
        """
        seconds = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + seconds
        with self._lock:
            if self._closed is not None:
                raise self._closed
            call_id = self.core.call(method, args)
            self._waiting.add(call_id)
            self._deliver()  # the 429 of the call it evicted, if any
            frames = self.core.frames_to_send()
        try:
            try:
                self._send(frames, deadline)
            except Timeout as exc:
                raise Timeout(f"call of {method} timed out after {seconds} s") from exc
            return self._wait(call_id, method, seconds, deadline)
        finally:
            with self._lock:
                self._waiting.discard(call_id)
                self._results.pop(call_id, None)
                self.core.cancel(call_id)

    def notify(self, method: str, args: Any = None) -> None:
        """Send a notification: the method runs, nothing comes back.

        Raises:
            ConnectionClosed: if the link is closed.
            Timeout: if the frame cannot be sent within the client's timeout.
        """
        with self._lock:
            if self._closed is not None:
                raise self._closed
            self.core.notify(method, args)
            frames = self.core.frames_to_send()
        self._send(frames, time.monotonic() + self.timeout)

    def close(self) -> None:
        """Close the link; calls still waiting fail with `ConnectionClosed`. Idempotent."""
        with self._lock:
            if self._closed is None:
                self._closed = ConnectionClosed(1000, "client closed")
            self._changed.notify_all()
            if self._link_closed:
                return
            self._link_closed = True
        with contextlib.suppress(TetherError, OSError):
            self._link.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # Internals.

    def _send(self, frames: list[bytes], deadline: float) -> None:
        for frame in frames:
            reply = self._link.send(frame, deadline)
            if reply is not None:
                self._receive(reply, deadline)

    def _receive(self, frame: bytes, deadline: float) -> None:
        """Feed a frame to the core, hand out what it settled, send its digest retry."""
        with self._lock:
            try:
                self.core.receive_frame(frame)
            except InvalidFrame as exc:
                logger.info("ignoring an invalid frame: %s", exc)
                return
            self._deliver()
            resend = self.core.frames_to_send()  # §4: the digest retry of a 401
        self._send(resend, deadline)

    def _deliver(self) -> None:
        """Move the core's events to the waiting callers; call with the lock held."""
        for event in self.core.events_received():
            if isinstance(event, CallResult):
                if event.id in self._waiting:
                    self._results[event.id] = (True, event.result)
            elif isinstance(event, CallFailed):
                if event.id in self._waiting:
                    self._results[event.id] = (False, event.error)
            else:
                logger.debug("ignoring a request from the peer: %r", event.request)
        self._changed.notify_all()

    def _wait(self, call_id: int, method: str, seconds: float, deadline: float) -> Any:
        while True:
            with self._lock:
                while True:
                    if call_id in self._results:
                        ok, value = self._results.pop(call_id)
                        if ok:
                            return value
                        assert isinstance(value, RpcError)
                        raise value
                    if self._closed is not None:
                        raise self._closed
                    if isinstance(self._link, _HttpLink):
                        # The response to the POST is in: the device sent no reply frame.
                        raise ProtocolError(f"no reply to the call of {method} in the HTTP response")
                    remaining = _remaining(deadline)
                    if remaining <= 0:
                        raise Timeout(f"call of {method} timed out after {seconds} s")
                    if not self._reading:
                        self._reading = True  # this thread's turn to read
                        break
                    self._changed.wait(remaining)
            try:
                frame = self._link.recv(deadline)
                self._receive(frame, deadline)
            except Timeout:
                pass  # the loop raises it, unless the reply came meanwhile
            except ConnectionClosed as exc:
                with self._lock:
                    if self._closed is None:
                        self._closed = exc
            finally:
                with self._lock:
                    self._reading = False
                    self._changed.notify_all()  # the next waiting thread reads


# --- connecting ------------------------------------------------------------------------------


def _split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """Take ``user:pass@`` out of a ws or http URL."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    stripped = urllib.parse.urlunsplit(parts._replace(netloc=hostport))
    return stripped, (urllib.parse.unquote(user), urllib.parse.unquote(password))


def _open_serial(path: str) -> _SerialLink:
    if not path:
        raise ValueError("no serial device path given")
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        if os.isatty(fd):
            configure_tty(fd, 115200)  # mos: 115200 8N1, obeying the device's XON/XOFF
        return _SerialLink(fd, path)
    except BaseException:
        os.close(fd)
        raise


def _open_mqtt(
    url: str, device_id: str | None, ssl: ssl_module.SSLContext | None, timeout: float
) -> tuple[_MqttLink, str, str]:
    parts = urllib.parse.urlsplit(url)
    path_id = urllib.parse.unquote(parts.path[1:])  # mos: the path after its first '/'
    if path_id and device_id is not None and path_id != device_id:
        raise ValueError(f"device_id {device_id!r} is not the device id {path_id!r} of {url!r}")
    device_id = path_id or device_id
    if not device_id:
        raise ValueError(f"no device id in {url!r}: use mqtt://broker/<device_id> or device_id=")
    if "+" in device_id or "#" in device_id or "\0" in device_id:
        raise ValueError(f"device id {device_id!r} contains '+', '#' or NUL")
    src = response_src(device_id)
    client = mqtt_sync.Client(
        f"{parts.scheme.lower()}://{parts.netloc}",
        client_id=f"tether-{secrets.token_hex(4)}",
        ssl=ssl,
        reconnect=False,
        connect_timeout=timeout,
        timeout=timeout,
    )
    try:
        client.connect()
        stream = client.messages(f"{src}/rpc")
        client.subscribe(f"{src}/rpc", qos=1)
    except BaseException:
        client.disconnect()
        raise
    return _MqttLink(client, stream, device_id), src, device_id


def connect(
    port: str,
    *,
    credentials: tuple[str, str] | None = None,
    timeout: float = 20.0,
    ssl: ssl_module.SSLContext | None = None,
    device_id: str | None = None,
) -> Client:
    """Connect a blocking `Client` to a device, as ``mos --port PORT`` does.

    ====================================  ===========================================
    ``ws://host/rpc``, ``wss://…``        a WebSocket (`tether.ws.sync`)
    ``http://host/rpc``, ``https://…``    ``POST`` per call (frame mode, §2.2)
    ``mqtt://broker[:port]/<device_id>``  publish and subscribe (§2.3), ``mqtts://``
    ``/dev/ttyUSB0``, ``serial://PATH``   a serial line, 115200 8N1 (§2.4)
    ====================================  ===========================================

    Args:
        port: the port; ``user:pass@`` in a ws or http URL gives the credentials.
        credentials: (user, password) for in-frame digest (§4) and HTTP Digest.
        timeout: seconds to connect, and the default seconds a call waits.
        ssl: an SSLContext for wss://, https://, mqtts://.
        device_id: the ``dst`` of the calls (a hub routes by it); over MQTT the device
            id when the URL has none. None to leave ``dst`` out (the device at the port).

    Returns:
        The client; ``with connect(...) as client:`` closes it.

    Raises:
        ValueError: for an unknown scheme or a bad URL.
        HandshakeError, Refused, Timeout, OSError: if the connection cannot be made.
    """
    src, dst = "tether", device_id
    link: _Link
    if "://" not in port or port.startswith("serial://"):
        link = _open_serial(port.removeprefix("serial://"))
    else:
        scheme = port.partition("://")[0].lower()
        if scheme in ("ws", "wss", "http", "https"):
            port, url_credentials = _split_credentials(port)
            if credentials is None:
                credentials = url_credentials
        if scheme in ("ws", "wss"):
            ws = ws_sync.connect(port, timeout=timeout, subprotocols=["json-rpc"], ssl=ssl)
            link = _WebSocketLink(ws, port)
        elif scheme in ("http", "https"):
            link = _HttpLink(port, credentials, ssl, timeout)
        elif scheme in ("mqtt", "mqtts"):
            link, src, dst = _open_mqtt(port, device_id, ssl, timeout)
        else:
            raise ValueError(f"unknown RPC port scheme {scheme!r} in {port!r}")
    return Client(link, src=src, dst=dst, credentials=credentials, timeout=timeout)
