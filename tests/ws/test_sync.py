"""The blocking client, against tether's asyncio server running in a thread."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Iterator

import pytest

import tether.tls
import tether.ws as ws
from tether.errors import ConnectionClosed, HandshakeError, InvalidState, Timeout
from tether.ws import sync
from tether.ws.frames import Opcode
from tether.ws.handshake import accept_key


class ServerThread:
    """A tether echo server on 127.0.0.1 in a thread with its own loop."""

    def __init__(self, handler=None, **kwargs) -> None:
        self.handler = handler or self.echo
        self.kwargs = kwargs
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop: asyncio.Event | None = None
        self.port = 0
        self.thread = threading.Thread(target=lambda: asyncio.run(self.main()), daemon=True)

    @staticmethod
    async def echo(conn) -> None:
        async for message in conn:
            await conn.send(message)

    async def main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        async with ws.serve(self.handler, "127.0.0.1", 0, **self.kwargs) as server:
            self.port = server.port
            self.ready.set()
            await self.stop.wait()

    def __enter__(self) -> ServerThread:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.loop is not None and self.stop is not None
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(15)
        assert not self.thread.is_alive()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"


@pytest.fixture
def server() -> Iterator[ServerThread]:
    with ServerThread() as srv:
        yield srv


@pytest.mark.parametrize("compression", [None, "deflate"])
def test_send_recv(server: ServerThread, compression) -> None:
    with sync.connect(server.url, compression=compression, timeout=5) as conn:
        conn.send("hello")
        assert conn.recv(timeout=5) == "hello"
        conn.send(b"\x00\xff" * 1000)
        assert conn.recv(timeout=5) == b"\x00\xff" * 1000
    assert conn.close_code == 1000


def test_recv_msg_reads_a_message_in_parts(server: ServerThread) -> None:
    with sync.connect(server.url, timeout=5, max_size=2**21) as conn:
        payload = bytes(range(256)) * 4000
        conn.send(payload)
        got = b""
        sizes = []
        while True:
            data, kind, remaining = conn.recv_msg(100_000, timeout=5)
            assert kind is Opcode.BINARY
            got += data
            sizes.append(len(data))
            assert remaining == len(payload) - len(got)
            if not remaining:
                break
        assert got == payload
        assert sizes == [100_000] * 10 + [24_000]
        with pytest.raises(ValueError):
            conn.recv_msg(0)


def test_recv_msg_text_and_control(server: ServerThread) -> None:
    with sync.connect(server.url, timeout=5) as conn:
        conn.send("héllo")
        assert conn.recv_msg(3, timeout=5) == ("hé".encode(), Opcode.TEXT, 3)
        with pytest.raises(InvalidState):
            conn.recv()
        assert conn.recv_msg(10, timeout=5) == (b"llo", Opcode.TEXT, 0)
        conn.ping(b"abc")
        assert conn.recv_msg(10, timeout=5) == (b"abc", Opcode.PONG, 0)


def test_send_msg_fragments_and_controls(server: ServerThread) -> None:
    with sync.connect(server.url, timeout=5) as conn:
        assert conn.send_msg("ab", Opcode.TEXT, final=False) == 2
        with pytest.raises(InvalidState):
            conn.send_msg(b"x", Opcode.BINARY)
        conn.send_msg(b"cd", Opcode.CONT, final=True)
        assert conn.recv(timeout=5) == "abcd"
        conn.send_msg(b"pp", Opcode.PING)
        conn.send_msg(b"", Opcode.PONG)
        assert conn.recv_msg(10, timeout=5) == (b"pp", Opcode.PONG, 0)
        with pytest.raises(ValueError):
            conn.send_msg(b"x", Opcode.CLOSE)
        conn.send_msg((4000).to_bytes(2, "big") + b"bye", Opcode.CLOSE)
    assert conn.close_code == 4000
    assert conn.close_reason == ""  # the server echoes the code only


def test_recv_timeout(server: ServerThread) -> None:
    with sync.connect(server.url, timeout=5) as conn:
        started = time.monotonic()
        with pytest.raises(Timeout):
            conn.recv(timeout=0.05)
        assert isinstance(Timeout("x"), TimeoutError)
        assert time.monotonic() - started < 5
        conn.send("still works")
        assert conn.recv(timeout=5) == "still works"


def test_close_from_another_thread_wakes_recv(server: ServerThread) -> None:
    conn = sync.connect(server.url, timeout=5)
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            conn.recv()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    conn.close(1000, "bye")
    thread.join(10)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], ConnectionClosed)
    assert errors[0].code == 1000
    with pytest.raises(ConnectionClosed):
        conn.send("after close")
    conn.close()  # idempotent


def test_server_closes(server: ServerThread) -> None:
    async def closer(conn) -> None:
        await conn.close(4001, "go away")

    with ServerThread(closer) as srv, sync.connect(srv.url, timeout=5) as conn:
        with pytest.raises(ConnectionClosed) as info:
            conn.recv(timeout=5)
        assert (info.value.code, info.value.reason) == (4001, "go away")
        with pytest.raises(ConnectionClosed):
            conn.recv(timeout=5)  # and again


def test_recv_msg_reports_close(server: ServerThread) -> None:
    async def closer(conn) -> None:
        await conn.close(1001, "bye")

    with ServerThread(closer) as srv, sync.connect(srv.url, timeout=5) as conn:
        assert conn.recv_msg(100, timeout=5) == (b"\x03\xe9bye", Opcode.CLOSE, 0)
        with pytest.raises(ConnectionClosed):
            conn.recv_msg(100, timeout=5)


def test_connect_over_given_socket(server: ServerThread) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port))
    with sync.connect(server.url, sock=sock, timeout=5) as conn:
        conn.send("via my socket")
        assert conn.recv(timeout=5) == "via my socket"


def test_handshake_refused() -> None:
    def refuse(request):
        return ws.Response(403, ws.Headers([("X-Why", "no")]), body=b"forbidden")

    with ServerThread(process_request=refuse) as srv:
        with pytest.raises(HandshakeError) as info:
            sync.connect(srv.url, timeout=5)
        assert info.value.status == 403
        assert ("X-Why", "no") in info.value.headers


def test_peer_vanishes_gives_1006() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def fake_server() -> None:
        conn, _ = listener.accept()
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(4096)
        key = next(
            line.split(b": ")[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key")
        )
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: "
            + accept_key(key.decode()).encode()
            + b"\r\n\r\n"
            + b"\x82\x7e\x01\x00"
            + b"x" * 10  # a 256-byte frame cut short
        )
        conn.close()

    thread = threading.Thread(target=fake_server)
    thread.start()
    try:
        with sync.connect(f"ws://127.0.0.1:{port}/", timeout=5) as conn:
            with pytest.raises(ConnectionClosed) as info:
                conn.recv(timeout=5)
            assert info.value.code == 1006
    finally:
        thread.join(5)
        listener.close()


def test_connect_timeout() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        with pytest.raises(Timeout):
            sync.connect(f"ws://127.0.0.1:{listener.getsockname()[1]}/", timeout=0.2)
    finally:
        listener.close()


def test_invalid_url() -> None:
    with pytest.raises(ValueError):
        sync.connect("http://example.com/")


def test_wss_with_test_ca(pki) -> None:
    server_ctx = tether.tls.server_context(pki["cert"], pki["key"])
    with ServerThread(ssl=server_ctx) as srv:
        ctx = tether.tls.client_context(ca_file=pki["ca"])
        url = f"wss://127.0.0.1:{srv.port}/"
        with sync.connect(url, ssl=ctx, timeout=5, max_size=2**21) as conn:
            conn.send("secret")
            assert conn.recv(timeout=5) == "secret"
            conn.send(b"\x05" * 2**20)  # many TLS records: data pending inside the SSL object
            assert conn.recv(timeout=5) == b"\x05" * 2**20
        assert conn.close_code == 1000


def test_wss_without_the_ca_fails_verification(pki) -> None:
    server_ctx = tether.tls.server_context(pki["cert"], pki["key"])
    with ServerThread(ssl=server_ctx) as srv, pytest.raises(ssl.SSLCertVerificationError):
        sync.connect(f"wss://127.0.0.1:{srv.port}/", timeout=5)


def test_close_from_another_thread_wakes_a_blocked_send() -> None:
    """A peer that never reads: send() blocks; close() elsewhere ends it, no hang."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []

    def fake_server() -> None:
        conn, _ = listener.accept()
        accepted.append(conn)
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(4096)
        lines = head.split(b"\r\n")
        key = next(v.split(b": ")[1] for v in lines if v.lower().startswith(b"sec-websocket-key"))
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(key.decode()).encode() + b"\r\n\r\n"
        )
        # ... and never reads again.

    thread = threading.Thread(target=fake_server)
    thread.start()
    conn = sync.connect(f"ws://127.0.0.1:{port}/", timeout=5, close_timeout=0.5)
    thread.join(5)
    errors: list[BaseException] = []

    def sender() -> None:
        try:
            for _ in range(10_000):
                conn.send(b"x" * 65536)
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=sender)
    writer.start()
    try:
        started = time.monotonic()
        while writer.is_alive() and time.monotonic() - started < 0.5:
            writer.join(0.05)  # let the kernel buffers fill up
        assert writer.is_alive(), "the peer should have stopped taking data"
        conn.close()
        writer.join(10)
        assert not writer.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], ConnectionClosed)
    finally:
        for sock in accepted:
            sock.close()
        listener.close()
