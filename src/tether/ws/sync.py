"""A blocking WebSocket client over a plain socket, driving the same core.

The API follows Zephyr's WebSocket client in Python form (`send_msg()`,
`recv_msg()` that reads a large message in parts) and adds plain `send()`,
`recv()` and `close()`. No event loop and no background thread: the calling
thread does the I/O. One thread may send while another receives; `close()`
from any thread wakes a blocked `recv()`.

    with tether.ws.sync.connect("ws://127.0.0.1:8765/") as ws:
        ws.send("hello")
        print(ws.recv(timeout=5))
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl as ssl_module
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Literal

from tether import tls
from tether.errors import ConnectionClosed, InvalidState, Timeout
from tether.ws.deflate import DeflateParams
from tether.ws.frames import Opcode, encode_close
from tether.ws.protocol import (
    BinaryMessage,
    ClientConnection,
    CloseReceived,
    Event,
    HandshakeComplete,
    Ping,
    Pong,
    State,
    TextMessage,
)
from tether.ws.uri import parse_uri

__all__ = ["WebSocket", "connect"]

_READ_SIZE = 65536


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class WebSocket:
    """A blocking WebSocket client connection; made by `connect()`.

    Attributes:
        subprotocol: the negotiated subprotocol, or None.
        response: the handshake response.
    """

    def __init__(self, sock: socket.socket, core: ClientConnection, close_timeout: float) -> None:
        self._sock = sock
        self._core = core
        self._close_timeout = close_timeout
        self._core_lock = threading.Lock()  # the core, and writes to the socket
        self._recv_lock = threading.Lock()  # one reader at a time
        self._events: deque[Event] = deque()
        self._part: tuple[bytes, Opcode, int] | None = None  # message being read by recv_msg
        self._closed = threading.Event()
        self.subprotocol = core.subprotocol
        self.response = core.response

    # ------------------------------------------------------------- low level

    def _write_out(self, deadline: float | None) -> None:
        """Write what the core has to send; call with _core_lock held."""
        data = memoryview(self._core.data_to_send())
        while data:
            try:
                sent = self._sock.send(data)
            except (BlockingIOError, ssl_module.SSLWantWriteError, ssl_module.SSLWantReadError):
                self._wait(deadline, write=True)
                continue
            except OSError as exc:
                self._finish()
                raise ConnectionClosed(1006, "connection lost while sending") from exc
            data = data[sent:]

    def _wait(self, deadline: float | None, *, write: bool = False) -> None:
        """Wait until the socket is ready or the deadline passes."""
        timeout = _remaining(deadline)
        if timeout == 0:
            raise Timeout("timed out")
        try:
            if write:
                ready = select.select([], [self._sock], [], timeout)[1]
            else:
                ready = select.select([self._sock], [], [], timeout)[0]
        except (ValueError, OSError) as exc:  # closed by another thread
            raise self._closed_exc() from exc
        if not ready:
            raise Timeout("timed out")

    def _after_input(self, deadline: float | None) -> None:
        """Collect the core's events and write its answers; call with _core_lock held."""
        self._events.extend(self._core.events_received())
        self._write_out(deadline)

    def _read_events(self, deadline: float | None) -> None:
        """Read from the socket until the core has events; call with _recv_lock held.

        Raises:
            ConnectionClosed: when the connection ended and no event is left.
        """
        core = self._core
        while not self._events:
            if core.error is not None and core.state is not State.CLOSED:
                # The caller has had every message before the peer's error: fail now.
                with self._core_lock:
                    core.fail()
                    with contextlib.suppress(Timeout, ConnectionClosed):
                        self._write_out(deadline)
            if self._closed.is_set() or core.state is State.CLOSED:
                self._finish()
                raise self._closed_exc()
            if not (isinstance(self._sock, ssl_module.SSLSocket) and self._sock.pending()):
                self._wait(deadline)
            try:
                data = self._sock.recv(_READ_SIZE)
            except (BlockingIOError, ssl_module.SSLWantReadError, ssl_module.SSLWantWriteError):
                continue
            except OSError:  # reset, or shut down by close() in another thread
                data = b""
            with self._core_lock:
                if data:
                    core.receive_data(data)
                else:
                    core.receive_eof()
                self._after_input(deadline)

    def _finish(self) -> None:
        """Release the socket once the connection is over."""
        if not self._closed.is_set():
            self._closed.set()
            self._sock.close()

    def _closed_exc(self) -> ConnectionClosed:
        return self._core.closed_error()

    def _next_event(self, timeout: float | None) -> Event:
        deadline = _deadline(timeout)
        if not self._recv_lock.acquire(timeout=-1 if timeout is None else timeout):
            raise Timeout("another thread is receiving")
        try:
            self._read_events(deadline)
            event = self._events.popleft()
            if type(event) is CloseReceived:
                # The caller has had every message before the Close: answer it now.
                with self._core_lock:
                    self._core.acknowledge_close()
                    with contextlib.suppress(Timeout, ConnectionClosed):
                        self._write_out(deadline)
                self._end_after_close()
            return event
        finally:
            self._recv_lock.release()

    def _end_after_close(self) -> None:
        """After the peer's Close: let the server end TCP first (RFC 6455 §7.1.1), briefly."""
        deadline = _deadline(min(self._close_timeout, 2.0))
        try:
            while not self._closed.is_set():
                self._wait(deadline)
                try:
                    if not self._sock.recv(_READ_SIZE):
                        break
                except (BlockingIOError, ssl_module.SSLWantReadError):
                    continue
        except (Timeout, ConnectionClosed, OSError):
            pass
        self._finish()

    # --------------------------------------------------------------- public

    @property
    def state(self) -> State:
        """The core's state."""
        return self._core.state

    @property
    def close_code(self) -> int | None:
        """The close code once closed (see `tether.ws.WebSocket.close_code`), else None."""
        return self._closed_exc().code if self._closed.is_set() else None

    @property
    def close_reason(self) -> str | None:
        """The close reason once closed, else None."""
        return self._closed_exc().reason if self._closed.is_set() else None

    def recv(self, timeout: float | None = None) -> str | bytes:
        """Receive the next message: str for text, bytes for binary.

        Control frames are handled on the way (pings are answered).

        Raises:
            Timeout: if no message arrives within timeout seconds.
            ConnectionClosed: once the connection is closed.
            InvalidState: if recv_msg() is in the middle of a message.
        """
        if self._part is not None:
            raise InvalidState("recv_msg() is in the middle of a message")
        deadline = _deadline(timeout)
        while True:
            event = self._next_event(_remaining(deadline))
            if type(event) is TextMessage or type(event) is BinaryMessage:
                return event.data
            if type(event) is CloseReceived:
                raise self._closed_exc()

    def recv_msg(self, max_bytes: int, timeout: float | None = None) -> tuple[bytes, Opcode, int]:
        """Receive at most max_bytes of the current message (Zephyr's websocket_recv_msg).

        Returns:
            (data, message_type, remaining): message_type is Opcode.TEXT or
            Opcode.BINARY for data (text as UTF-8 bytes), or Opcode.PING,
            Opcode.PONG or Opcode.CLOSE for a control frame (data is its
            payload); remaining is how many bytes of this message are still to
            read with further calls, 0 when it is complete.

        Raises:
            ValueError: if max_bytes < 1.
            Timeout: if nothing arrives within timeout seconds.
            ConnectionClosed: once the connection is closed and every event was read.
        """
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        if self._part is None:
            event = self._next_event(timeout)
            if isinstance(event, TextMessage):
                self._part = (event.data.encode(), Opcode.TEXT, 0)
            elif isinstance(event, BinaryMessage):
                self._part = (event.data, Opcode.BINARY, 0)
            elif isinstance(event, Ping):
                return event.payload, Opcode.PING, 0
            elif isinstance(event, Pong):
                return event.payload, Opcode.PONG, 0
            else:
                assert isinstance(event, CloseReceived)
                payload = b"" if event.code == 1005 else encode_close(event.code, event.reason)
                return payload, Opcode.CLOSE, 0
        data, kind, offset = self._part
        chunk = data[offset : offset + max_bytes]
        offset += len(chunk)
        remaining = len(data) - offset
        self._part = (data, kind, offset) if remaining else None
        return chunk, kind, remaining

    def _send(
        self, timeout: float | None, method: Callable[..., None], *args: object, **kwargs: object
    ) -> None:
        deadline = _deadline(timeout)
        with self._core_lock:
            if self._closed.is_set() or self._core.state is not State.OPEN:
                raise self._closed_exc()
            method(*args, **kwargs)
            self._write_out(deadline)

    def send(self, message: str | bytes | bytearray | memoryview, timeout: float | None = None) -> None:
        """Send a message: str as text, bytes-like as binary.

        Raises:
            ConnectionClosed: if the connection is closed or closing.
            Timeout: if the peer does not take the data within timeout seconds.
        """
        if isinstance(message, str):
            self._send(timeout, self._core.send_text, message)
        else:
            self._send(timeout, self._core.send_binary, message)

    def send_msg(
        self,
        payload: str | bytes | bytearray | memoryview,
        opcode: Opcode | int,
        final: bool = True,
        timeout: float | None = None,
    ) -> int:
        """Send one frame (Zephyr's websocket_send_msg).

        Args:
            payload: the frame's payload.
            opcode: TEXT or BINARY to start a message, CONT to continue one,
                PING, PONG or CLOSE for a control frame (a CLOSE payload is the
                two-byte code followed by the reason, or empty).
            final: False when more fragments of this message follow.
            timeout: seconds to wait for the peer to take the data.

        Returns:
            The number of payload bytes sent.

        Raises:
            ValueError: for an unknown opcode or a malformed close payload.
            InvalidState: if the fragments are out of order.
            ConnectionClosed: if the connection is closed or closing.
        """
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        opcode = Opcode(opcode)
        core = self._core
        if opcode is Opcode.TEXT:
            self._send(timeout, core.send_text, data, fin=final)
        elif opcode is Opcode.BINARY:
            self._send(timeout, core.send_binary, data, fin=final)
        elif opcode is Opcode.CONT:
            self._send(timeout, core.send_continuation, data, fin=final)
        elif opcode is Opcode.PING:
            self._send(timeout, core.send_ping, data)
        elif opcode is Opcode.PONG:
            self._send(timeout, core.send_pong, data)
        else:
            if len(data) == 1:
                raise ValueError("a close payload is empty or at least 2 bytes")
            code = int.from_bytes(data[:2], "big") if data else 1000
            self.close(code, data[2:].decode())
        return len(data)

    def ping(self, payload: bytes = b"", timeout: float | None = None) -> None:
        """Send a Ping; its Pong shows up in recv_msg() as Opcode.PONG."""
        self._send(timeout, self._core.send_ping, payload)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close with the closing handshake; safe from any thread; idempotent.

        Messages not yet read are dropped. Waits up to close_timeout for the
        peer's Close; a `recv()` blocked in another thread then raises
        ConnectionClosed. After close_timeout the connection is dropped.

        Raises:
            ValueError: if the code may not be sent or the reason is too long.
        """
        encode_close(code, reason)  # check the arguments before anything else
        if self._core_lock.acquire(timeout=self._close_timeout):
            try:
                if self._core.state is State.OPEN and not self._closed.is_set():
                    self._core.send_close(code, reason)
                    try:
                        self._write_out(_deadline(self._close_timeout))
                    except (Timeout, ConnectionClosed):
                        self._finish()
            finally:
                self._core_lock.release()
        else:
            # A send() in another thread is stuck on a peer that does not read: wake it.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)
        if self._recv_lock.acquire(timeout=self._close_timeout):
            # No reader in another thread (or it is done): read until the peer's Close.
            try:
                deadline = _deadline(self._close_timeout)
                while not self._closed.is_set():
                    self._events.clear()
                    self._read_events(deadline)
                    if any(type(e) is CloseReceived for e in self._events):
                        self._end_after_close()
            except (Timeout, ConnectionClosed):
                pass
            finally:
                self._part = None
                self._recv_lock.release()
        if not self._closed.is_set():
            # Wake a reader blocked in another thread: it sees the end of the stream.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)
            if self._recv_lock.acquire(timeout=self._close_timeout):
                self._recv_lock.release()
            self._finish()

    def __enter__(self) -> WebSocket:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def connect(
    url: str,
    *,
    timeout: float | None = 10.0,
    sock: socket.socket | None = None,
    subprotocols: Sequence[str] | None = None,
    headers: Sequence[tuple[str, str]] | dict[str, str] | None = None,
    origin: str | None = None,
    compression: Literal["deflate"] | None = None,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    max_size: int | None = 2**20,
    close_timeout: float = 10.0,
) -> WebSocket:
    """Open a blocking WebSocket connection (Zephyr's websocket_connect).

    Args:
        url: ``ws://`` or ``wss://`` URL.
        timeout: seconds for TCP, TLS and the handshake together.
        sock: an already connected socket to use instead of dialing (TLS is
            started on it for wss:// unless it is an SSLSocket already).
        subprotocols, headers, origin, compression, ssl, server_hostname,
            max_size: as for `tether.ws.connect`.
        close_timeout: seconds to wait for the closing handshake.

    Raises:
        ValueError: for an invalid URL.
        HandshakeError: if the server refuses the upgrade.
        Timeout: if the connection is not open within timeout.
        OSError: if the connection cannot be made.
    """
    uri = parse_uri(url)
    deadline = _deadline(timeout)
    core = ClientConnection(
        uri.host_header,
        uri.path,
        origin=origin,
        subprotocols=list(subprotocols or ()),
        headers=uri.request_headers(headers),
        deflate=DeflateParams() if compression == "deflate" else None,
        max_message_size=max_size,
    )
    try:
        if sock is None:
            sock = socket.create_connection((uri.host, uri.port), timeout=_remaining(deadline))
        sock.settimeout(_remaining(deadline))
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if uri.secure and not isinstance(sock, ssl_module.SSLSocket):
            ctx = ssl if ssl is not None else tls.client_context()
            sock = ctx.wrap_socket(sock, server_hostname=server_hostname or uri.host)
        sock.sendall(core.data_to_send())
        while core.state is State.CONNECTING:
            sock.settimeout(_remaining(deadline))
            data = sock.recv(_READ_SIZE)
            if not data:
                raise ConnectionClosed(1006, "connection closed during the handshake")
            core.receive_data(data)
    except TimeoutError as exc:
        if sock is not None:
            sock.close()
        raise Timeout(f"opening {url} timed out") from exc
    except BaseException:
        if sock is not None:
            sock.close()
        raise
    if core.handshake_error is not None:
        sock.close()
        raise core.handshake_error
    sock.setblocking(False)
    ws = WebSocket(sock, core, close_timeout)
    with ws._core_lock:
        # Frames that came with the handshake response.
        ws._after_input(deadline)
    ws._events = deque(e for e in ws._events if not isinstance(e, HandshakeComplete))
    return ws
