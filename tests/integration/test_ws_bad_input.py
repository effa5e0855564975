"""tether's asyncio WebSocket client and server against peers that misbehave.

The peers are raw sockets speaking hand-made bytes, so that nothing between the
test and tether tidies the input up. Each test checks what goes on the wire
(close frames and their codes, HTTP error responses) and what tether's
application sees (ConnectionClosed, HandshakeError), and that nothing hangs:
every test runs under one TIMEOUT.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import re
import socket
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import tether.ws
from tether.errors import (
    ConnectionClosed,
    HandshakeError,
    InvalidUtf8,
    PayloadTooBig,
    ProtocolError,
    Timeout,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TIMEOUT = 10.0  # seconds; bounds every test so that nothing can hang
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3's example key
MAX_SIZE = 1000


def run(coro: Awaitable[Any]) -> Any:
    """Run a test coroutine on a fresh event loop, bounded by TIMEOUT."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, TIMEOUT)

    return asyncio.run(bounded())


# ------------------------------------------------------------------------ frames


def encode_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    masked: bool,
    fin: bool = True,
    rsv: int = 0,
    length: int | None = None,
) -> bytes:
    """A frame as RFC 6455 §5.2 draws it, without any check: rsv is 0x40, 0x20 or 0x10."""
    length = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    mask_bit = 0x80 if masked else 0
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 2**16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def deflate(data: bytes) -> bytes:
    """Compress one message for permessage-deflate (RFC 7692 §7.2.1)."""
    compressor = zlib.compressobj(wbits=-15)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


async def read_frame(reader: asyncio.StreamReader) -> tuple[bool, int, bytes]:
    """Read one frame, unmasking it: (fin, opcode, payload)."""
    b0, b1 = await reader.readexactly(2)
    length = b1 & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    mask = await reader.readexactly(4) if b1 & 0x80 else None
    payload = await reader.readexactly(length)
    if mask is not None:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bool(b0 & 0x80), b0 & 0x0F, payload


async def read_close_code(reader: asyncio.StreamReader) -> int:
    """Read frames up to a Close frame and return its code; then expect the end of the stream."""
    while True:
        _, opcode, payload = await read_frame(reader)
        if opcode == 0x8:
            break
    assert len(payload) >= 2, payload
    await expect_eof(reader)
    return int.from_bytes(payload[:2], "big")


async def expect_eof(reader: asyncio.StreamReader) -> bytes:
    """Read to the end of the stream (a reset counts as the end); return what came."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := await reader.read(65536):
            data += chunk
    return data


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def upgrade_request(port: int, *, extensions: str | None = None) -> bytes:
    lines = [
        b"GET / HTTP/1.1",
        b"Host: 127.0.0.1:%d" % port,
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Key: " + KEY,
        b"Sec-WebSocket-Version: 13",
    ]
    if extensions is not None:
        lines.append(b"Sec-WebSocket-Extensions: " + extensions.encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"


# ---------------------------------------------------------- raw client, tether server


@contextlib.asynccontextmanager
async def raw_connection(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def raw_websocket(
    port: int, *, deflate: bool = False
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A raw client socket after a successful opening handshake."""
    async with raw_connection(port) as (reader, writer):
        writer.write(upgrade_request(port, extensions="permessage-deflate" if deflate else None))
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        assert b"\r\nSec-WebSocket-Accept: " + accept_key(KEY) + b"\r\n" in head
        assert (b"permessage-deflate" in head) == deflate
        yield reader, writer


class Recorder:
    """A tether server handler that echoes and keeps how its connections ended."""

    def __init__(self) -> None:
        self.closed: asyncio.Queue[ConnectionClosed] = asyncio.Queue()

    async def __call__(self, ws: tether.ws.ServerWebSocket) -> None:
        try:
            while True:
                await ws.send(await ws.recv())
        except ConnectionClosed as exc:
            self.closed.put_nowait(exc)
            raise


@contextlib.asynccontextmanager
async def tether_server(
    handler: Callable[[tether.ws.ServerWebSocket], Awaitable[None]], **kwargs: Any
) -> AsyncIterator[tether.ws.Server]:
    kwargs.setdefault("max_size", MAX_SIZE)
    kwargs.setdefault("ping_interval", None)
    kwargs.setdefault("close_timeout", TIMEOUT / 4)
    async with tether.ws.serve(handler, "127.0.0.1", 0, **kwargs) as server:
        yield server


async def assert_serves(port: int) -> None:
    """The server still answers a well-behaved client."""
    async with tether.ws.connect(f"ws://127.0.0.1:{port}/", ping_interval=None) as ws:
        await ws.send("still serving")
        assert await ws.recv() == "still serving"


# Frames that break the protocol, built for either direction: masked=True is right from a
# client, masked=False from a server. Each case gives the frames and the close code due.
Frames = Callable[[bool], bytes]


def frame(opcode: int, payload: bytes = b"", **kwargs: Any) -> Frames:
    return lambda masked: encode_frame(opcode, payload, masked=masked, **kwargs)


def frames(*parts: Frames) -> Frames:
    return lambda masked: b"".join(part(masked) for part in parts)


def wrongly_masked(opcode: int, payload: bytes) -> Frames:
    return lambda masked: encode_frame(opcode, payload, masked=not masked)


VIOLATIONS = [
    pytest.param(frame(0x1, b"hi", rsv=0x40), id="rsv1-without-deflate"),
    pytest.param(frame(0x1, b"hi", rsv=0x20), id="rsv2"),
    pytest.param(frame(0x2, b"hi", rsv=0x10), id="rsv3"),
    pytest.param(wrongly_masked(0x1, b"hi"), id="wrong-masking"),
    pytest.param(frame(0x3, b"hi"), id="reserved-data-opcode-3"),
    pytest.param(frame(0x7), id="reserved-data-opcode-7"),
    pytest.param(frame(0xB), id="reserved-control-opcode-b"),
    pytest.param(frame(0xF, b"x"), id="reserved-control-opcode-f"),
    pytest.param(frame(0x9, b"x", fin=False), id="fragmented-ping"),
    pytest.param(frame(0x9, b"x" * 126), id="ping-over-125"),
    pytest.param(frame(0x0, b"orphan"), id="continuation-without-start"),
    pytest.param(frames(frame(0x1, b"a", fin=False), frame(0x1, b"b")), id="text-inside-fragmented"),
    pytest.param(frames(frame(0x2, b"a", fin=False), frame(0x9), frame(0x2, b"b")), id="binary-inside"),
    pytest.param(frame(0x8, b"\x03"), id="close-payload-1-byte"),
    pytest.param(frame(0x8, struct.pack("!H", 999)), id="close-code-999"),
    pytest.param(frame(0x8, struct.pack("!H", 1005)), id="close-code-1005"),
    pytest.param(frame(0x8, struct.pack("!H", 1006)), id="close-code-1006"),
    pytest.param(frame(0x8, struct.pack("!H", 5000)), id="close-code-5000"),
    pytest.param(frame(0x2, length=2**63), id="length-msb-set"),
]

BAD_UTF8 = [
    pytest.param(frame(0x1, b"\xff"), id="single-frame"),
    pytest.param(frame(0x1, b"caf\xc3"), id="truncated-at-end"),
    pytest.param(frame(0x1, b"\xed\xa0\x80"), id="surrogate"),
    pytest.param(frame(0x1, b"\xc0\xaf"), id="overlong"),
    pytest.param(frames(frame(0x1, b"ok ", fin=False), frame(0x0, b"\xfe")), id="in-continuation"),
    pytest.param(frames(frame(0x1, b"caf\xc3", fin=False), frame(0x0, b"")), id="truncated-fragments"),
    pytest.param(frame(0x8, struct.pack("!H", 1000) + b"\xff"), id="close-reason"),
]

OVERSIZED = [
    pytest.param(frame(0x2, b"x" * (MAX_SIZE + 1)), id="one-frame"),
    pytest.param(frame(0x1, b"x" * (MAX_SIZE + 1)), id="one-text-frame"),
    pytest.param(frame(0x2, b"", length=2**40), id="huge-length-header-only"),
    pytest.param(frames(frame(0x2, b"x" * 600, fin=False), frame(0x0, b"x" * 401)), id="fragments-add-up"),
]

# With permessage-deflate agreed.
DEFLATE_CASES = [
    pytest.param(frame(0x2, deflate(b"\x00" * 2**20), rsv=0x40), 1009, id="bomb"),
    pytest.param(
        frames(
            frame(0x2, deflate(b"\x00" * 1200)[:4], rsv=0x40, fin=False),
            frame(0x0, deflate(b"\x00" * 1200)[4:]),
        ),
        1009,
        id="bomb-in-fragments",
    ),
    pytest.param(frame(0x1, deflate(b"caf\xff"), rsv=0x40), 1007, id="bad-utf8"),
    pytest.param(frame(0x2, b"\xff\xff\xff\xff", rsv=0x40), 1002, id="corrupt-deflate"),
    pytest.param(
        frames(frame(0x2, deflate(b"a"), rsv=0x40, fin=False), frame(0x0, b"", rsv=0x40)),
        1002,
        id="rsv1-on-continuation",
    ),
    pytest.param(frame(0x9, b"", rsv=0x40), 1002, id="rsv1-on-ping"),
]

CAUSES = {1002: ProtocolError, 1007: InvalidUtf8, 1009: PayloadTooBig}


async def server_fails_with(data: Frames, code: int, *, deflate: bool = False) -> None:
    """Send data to a tether server; expect a Close frame with code, and that it goes on serving."""
    recorder = Recorder()
    async with tether_server(recorder, compression="deflate" if deflate else None) as server:
        async with raw_websocket(server.port, deflate=deflate) as (reader, writer):
            writer.write(data(True))
            assert await read_close_code(reader) == code
        exc = await recorder.closed.get()
        assert exc.code == code
        assert isinstance(exc.__cause__, CAUSES[code])
        assert exc.__cause__.close_code == code
        await assert_serves(server.port)


@pytest.mark.parametrize("data", OVERSIZED)
def test_server_closes_oversized_message_with_1009(data: Frames) -> None:
    run(server_fails_with(data, 1009))


@pytest.mark.parametrize("data", BAD_UTF8)
def test_server_closes_invalid_utf8_with_1007(data: Frames) -> None:
    run(server_fails_with(data, 1007))


@pytest.mark.parametrize("data", VIOLATIONS)
def test_server_closes_protocol_violation_with_1002(data: Frames) -> None:
    run(server_fails_with(data, 1002))


@pytest.mark.parametrize(("data", "code"), DEFLATE_CASES)
def test_server_compressed_input(data: Frames, code: int) -> None:
    run(server_fails_with(data, code, deflate=True))


def test_server_accepts_message_at_the_limit_and_utf8_split_across_fragments() -> None:
    """The counterparts of the failures above: right at the edge, still fine."""

    async def main() -> None:
        async with (
            tether_server(Recorder(), compression=None) as server,
            raw_websocket(server.port) as (reader, writer),
        ):
            writer.write(encode_frame(0x2, b"x" * MAX_SIZE, masked=True))
            assert await read_frame(reader) == (True, 0x2, b"x" * MAX_SIZE)
            # "é" is b"\xc3\xa9": split it between two fragments, a Ping in between.
            writer.write(encode_frame(0x1, b"caf\xc3", masked=True, fin=False))
            writer.write(encode_frame(0x9, b"p", masked=True))
            writer.write(encode_frame(0x0, b"\xa9", masked=True))
            assert await read_frame(reader) == (True, 0xA, b"p")
            assert await read_frame(reader) == (True, 0x1, "café".encode())

    run(main())


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"GARBAGE\r\n\r\n", id="one-word"),
        pytest.param(b"\x00\x01\x02\xff\r\n\r\n", id="binary"),
        pytest.param(b"GET /\r\n\r\n", id="no-version"),
        pytest.param(b"GET / HTTP/1.1\r\nHost localhost\r\n\r\n", id="header-without-colon"),
        pytest.param(b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n", id="space-in-name"),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n",
            id="bad-key",
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n",
            id="no-host",
        ),
    ],
)
def test_server_answers_handshake_garbage_with_400(head: bytes) -> None:
    async def main() -> None:
        async with tether_server(Recorder()) as server:
            async with raw_connection(server.port) as (reader, writer):
                writer.write(head)
                answer = await expect_eof(reader)
            assert answer.startswith(b"HTTP/1.1 400 "), answer
            await assert_serves(server.port)

    run(main())


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param(b"", id="nothing"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n", id="half-a-head"),
    ],
)
def test_server_cuts_off_client_after_open_timeout(sent: bytes) -> None:
    async def main() -> None:
        async with tether_server(Recorder(), open_timeout=0.1) as server:
            async with raw_connection(server.port) as (reader, writer):
                writer.write(sent)
                assert await expect_eof(reader) == b""
            await assert_serves(server.port)

    run(main())


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_server_peer_vanishes_mid_frame(reset: bool) -> None:
    async def main() -> None:
        recorder = Recorder()
        async with tether_server(recorder) as server:
            async with raw_websocket(server.port) as (reader, writer):
                writer.write(encode_frame(0x1, b"hello", masked=True))
                assert await read_frame(reader) == (True, 0x1, b"hello")
                writer.write(encode_frame(0x2, b"x" * 500, masked=True)[:100])
                await writer.drain()
                if reset:
                    # SO_LINGER with a zero timeout: close() sends RST.
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            exc = await recorder.closed.get()
            assert exc.code == 1006
            await assert_serves(server.port)

    run(main())


@pytest.mark.parametrize("hook", [False, True], ids=["accept-at-once", "process-request"])
@pytest.mark.parametrize("then_close", [False, True], ids=["message", "message-and-close"])
def test_server_handles_frames_sent_with_the_handshake_request(hook: bool, then_close: bool) -> None:
    """Frames in the same segment as the request (RFC 6455 §4.1 says wait, but the core buffers them)."""

    async def allow(request: tether.ws.Request) -> None:
        return None

    async def main() -> None:
        recorder = Recorder()
        async with tether_server(recorder, process_request=allow if hook else None) as server:
            async with raw_connection(server.port) as (reader, writer):
                data = upgrade_request(server.port) + encode_frame(0x1, b"early", masked=True)
                if then_close:
                    data += encode_frame(0x8, struct.pack("!H", 1000), masked=True)
                writer.write(data)
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 101 ")
                # Bounded apart, so that a failure here does not eat the whole TIMEOUT.
                assert await asyncio.wait_for(read_frame(reader), TIMEOUT / 5) == (True, 0x1, b"early")
                if then_close:
                    assert await read_close_code(reader) == 1000
            if then_close:
                assert (await recorder.closed.get()).code == 1000

    run(main())


@pytest.mark.parametrize("how", ["client-leaves", "open-timeout"])
def test_server_cancels_process_request_when_connection_is_lost(how: str) -> None:
    """A pending process_request is cancelled when its connection ends, so it cannot leak or stall close."""

    async def main() -> None:
        entered = asyncio.Event()
        cancelled = asyncio.Event()
        never = asyncio.Event()

        async def hook(request: tether.ws.Request) -> None:
            entered.set()
            try:
                await never.wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

        async with tether_server(Recorder(), process_request=hook, open_timeout=0.1) as server:
            try:
                async with raw_connection(server.port) as (reader, writer):
                    writer.write(upgrade_request(server.port))
                    await entered.wait()
                    if how == "open-timeout":
                        assert await expect_eof(reader) == b""
                # Bounded apart, so that a failure here does not eat the whole TIMEOUT.
                await asyncio.wait_for(cancelled.wait(), TIMEOUT / 5)
            finally:
                never.set()  # else the server's shutdown waits for the hook

    run(main())


def test_server_answers_close_without_code() -> None:
    async def main() -> None:
        recorder = Recorder()
        async with tether_server(recorder) as server:
            async with raw_websocket(server.port) as (reader, writer):
                writer.write(encode_frame(0x8, b"", masked=True))
                assert await read_frame(reader) == (True, 0x8, b"")  # RFC 6455 §5.5.1: nothing to echo
                assert await expect_eof(reader) == b""
            exc = await recorder.closed.get()
            assert (exc.code, exc.reason) == (1005, "")

    run(main())


@pytest.mark.parametrize("side", ["server", "client"])
def test_keepalive_fails_connection_when_peer_never_answers_pings(side: str) -> None:
    """No Pong within ping_timeout: Close 1011 on the wire, ConnectionClosed(1011) for the application."""

    async def pings_then_close(reader: asyncio.StreamReader) -> int:
        pings = 0
        while True:
            _, opcode, payload = await read_frame(reader)
            if opcode == 0x9:
                pings += 1
                continue
            assert opcode == 0x8
            assert pings >= 1
            await expect_eof(reader)
            return int.from_bytes(payload[:2], "big")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        if side == "server":
            recorder = Recorder()
            async with tether_server(recorder, ping_interval=0.05, ping_timeout=0.05) as server:
                async with raw_websocket(server.port) as (reader, _):
                    assert await pings_then_close(reader) == 1011
                exc = await recorder.closed.get()
                assert exc.code == 1011
        else:
            wire_code: asyncio.Future[int] = loop.create_future()

            async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await accept(reader, writer)
                wire_code.set_result(await pings_then_close(reader))

            async with raw_server(script) as url:
                ws = await tether_client(url, ping_interval=0.05, ping_timeout=0.05)
                with pytest.raises(ConnectionClosed) as info:
                    await ws.recv()
                assert info.value.code == 1011
                assert await wire_code == 1011

    run(main())


def test_server_send_blocks_while_peer_does_not_read() -> None:
    """A handler writing to a client that never reads waits in send() with bounded memory."""
    write_limit = 2**14
    message = b"x" * 2**13
    frame_size = len(message) + 4  # 2-byte header and 2-byte length, unmasked

    async def main() -> None:
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[tether.ws.ServerWebSocket] = loop.create_future()
        done = asyncio.Event()

        async def handler(ws: tether.ws.ServerWebSocket) -> None:
            opened.set_result(ws)
            await done.wait()

        async with tether_server(handler, compression=None, write_limit=write_limit, max_size=None) as server:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, ("127.0.0.1", server.port))
                await loop.sock_sendall(sock, upgrade_request(server.port))
                head = b""
                while not head.endswith(b"\r\n\r\n"):  # byte by byte: read nothing past the head
                    head += await loop.sock_recv(sock, 1)
                assert head.startswith(b"HTTP/1.1 101 ")
                ws = await opened
                transport = ws._transport
                assert transport is not None

                sent = 0
                while True:
                    # Far more than the kernel's buffers hold: 64 MiB.
                    assert sent < 2**26 // len(message), "send() never blocked"
                    task = asyncio.ensure_future(ws.send(message))
                    # A send that need not wait finishes in its first step.
                    finished, _ = await asyncio.wait({task}, timeout=0.2)
                    assert transport.get_write_buffer_size() <= write_limit + frame_size
                    if not finished:
                        break
                    task.result()
                    sent += 1
                assert sent > 0
                # Blocked, with the buffer bounded; it stays so while the peer does not read.
                finished, _ = await asyncio.wait({task}, timeout=0.2)
                assert not finished
                assert transport.get_write_buffer_size() <= write_limit + frame_size

                # Once the peer reads, send() returns.
                async def drain_socket() -> None:
                    while await loop.sock_recv(sock, 2**16):
                        pass

                reading = asyncio.ensure_future(drain_socket())
                try:
                    await task
                    await ws.send(message)
                finally:
                    reading.cancel()
            finally:
                sock.close()
                done.set()
            with pytest.raises(ConnectionClosed):
                await ws.recv()

    run(main())


def test_server_pauses_reading_when_queue_is_full() -> None:
    """A handler that does not read makes the server stop reading, and then the client's send() wait."""
    max_queue = 4
    size = 2**16
    messages_per_read = 256 * 1024 // size + 1  # asyncio reads at most 256 KiB at a time

    async def main() -> None:
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[tether.ws.ServerWebSocket] = loop.create_future()
        release = asyncio.Event()
        received: list[bytes] = []

        async def handler(ws: tether.ws.ServerWebSocket) -> None:
            opened.set_result(ws)
            await release.wait()
            async for message in ws:
                assert isinstance(message, bytes)
                received.append(message)

        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited by accepted sockets
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(listener.close)  # the server closes it too; once more does no harm
            server = await stack.enter_async_context(
                tether_server(handler, sock=listener, compression=None, max_queue=max_queue, max_size=None)
            )
            url = f"ws://127.0.0.1:{server.port}/"
            async with tether.ws.connect(
                url, compression=None, ping_interval=None, write_limit=size
            ) as client:
                ws = await opened
                transport = ws._transport
                assert transport is not None
                sent = 0
                while True:
                    assert sent < 2**26 // size, "send() never blocked"
                    task = asyncio.ensure_future(client.send(sent.to_bytes(4, "big") * (size // 4)))
                    finished, _ = await asyncio.wait({task}, timeout=0.2)
                    assert len(ws._messages or ()) <= max_queue + messages_per_read
                    if not finished:
                        break
                    task.result()
                    sent += 1
                sent += 1  # the pending one
                assert not transport.is_reading()
                assert len(ws._messages or ()) <= max_queue + messages_per_read

                release.set()
                await task
                await client.close()
        assert [m[:4] for m in received] == [i.to_bytes(4, "big") for i in range(sent)]

    run(main())


# ---------------------------------------------------------- raw server, tether client


@contextlib.asynccontextmanager
async def raw_server(
    script: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    """A raw server running script on each connection; yield its ws:// URL."""
    errors: list[BaseException] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await script(reader, writer)
        except Exception as exc:
            errors.append(exc)
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    async with server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    if errors:
        raise errors[0]


async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, extra: bytes = b"") -> bytes:
    """Answer a client's opening handshake with 101; return its request head."""
    head = await reader.readuntil(b"\r\n\r\n")
    match = re.search(rb"(?im)^sec-websocket-key:[ \t]*(\S+)", head)
    assert match is not None
    writer.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(match.group(1)) + b"\r\n" + extra + b"\r\n"
    )
    return head


def tether_client(url: str, **kwargs: Any) -> tether.ws.connect:
    kwargs.setdefault("max_size", MAX_SIZE)
    kwargs.setdefault("ping_interval", None)
    kwargs.setdefault("close_timeout", TIMEOUT / 4)
    kwargs.setdefault("open_timeout", TIMEOUT / 2)
    return tether.ws.connect(url, **kwargs)


async def client_fails_with(data: Frames, code: int, *, deflate: bool = False) -> None:
    """Send data to a tether client; expect a Close frame with code and ConnectionClosed(code)."""
    loop = asyncio.get_running_loop()
    wire_code: asyncio.Future[int] = loop.create_future()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept(reader, writer, b"Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else b"")
        writer.write(data(False))
        wire_code.set_result(await read_close_code(reader))

    async with raw_server(script) as url:
        ws = await tether_client(url, compression="deflate" if deflate else None)
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
        assert await wire_code == code
        assert info.value.code == code
        assert isinstance(info.value.__cause__, CAUSES[code])
        assert ws.close_code == code
        await ws.close()


@pytest.mark.parametrize("data", OVERSIZED)
def test_client_closes_oversized_message_with_1009(data: Frames) -> None:
    run(client_fails_with(data, 1009))


@pytest.mark.parametrize("data", BAD_UTF8)
def test_client_closes_invalid_utf8_with_1007(data: Frames) -> None:
    run(client_fails_with(data, 1007))


@pytest.mark.parametrize("data", VIOLATIONS)
def test_client_closes_protocol_violation_with_1002(data: Frames) -> None:
    run(client_fails_with(data, 1002))


@pytest.mark.parametrize(("data", "code"), DEFLATE_CASES)
def test_client_compressed_input(data: Frames, code: int) -> None:
    run(client_fails_with(data, code, deflate=True))


def test_client_reads_messages_sent_before_a_violation() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept(reader, writer)
        writer.write(encode_frame(0x1, b"first", masked=False) + encode_frame(0x3, b"", masked=False))
        await read_close_code(reader)

    async def main() -> None:
        async with raw_server(script) as url:
            ws = await tether_client(url)
            assert await ws.recv() == "first"
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.code == 1002
            await ws.close()

    run(main())


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"garbage\r\n\r\n", id="garbage"),
        pytest.param(b"HTTP/1.0 101 Switching Protocols\r\n\r\n", id="http-1.0"),
        pytest.param(b"HTTP/1.1 1O1 Switching Protocols\r\n\r\n", id="bad-status"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", id="200"),
        pytest.param(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(b"not the key") + b"\r\n\r\n",
            id="wrong-accept",
        ),
        pytest.param(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: {accept}\r\n\r\n",
            id="no-upgrade",
        ),
        pytest.param(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: chat\r\n\r\n",
            id="unoffered-subprotocol",
        ),
        pytest.param(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: x-webkit-deflate-frame\r\n\r\n",
            id="unoffered-extension",
        ),
        pytest.param(b"HTTP/1.1 101 Switching Protocols\r\nBad Header\r\n\r\n", id="bad-header"),
    ],
)
def test_client_raises_handshake_error_on_bad_answer(answer: bytes) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        match = re.search(rb"(?im)^sec-websocket-key:[ \t]*(\S+)", head)
        assert match is not None
        writer.write(answer.replace(b"{accept}", accept_key(match.group(1))))
        await expect_eof(reader)

    async def main() -> None:
        async with raw_server(script) as url:
            with pytest.raises(HandshakeError):
                await tether_client(url)

    run(main())


def test_client_raises_handshake_error_with_status_and_headers_on_403() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nX-Reason: bad token\r\n"
            b"Content-Length: 7\r\n\r\ngo away"
        )
        await expect_eof(reader)

    async def main() -> None:
        async with raw_server(script) as url:
            with pytest.raises(HandshakeError) as info:
                await tether_client(url)
        assert info.value.status == 403
        assert ("X-Reason", "bad token") in info.value.headers
        assert ("Content-Type", "text/plain") in info.value.headers
        assert b"go away".startswith(info.value.body)

    run(main())


def test_client_times_out_on_a_server_that_never_answers() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\n")  # and never the rest
        await expect_eof(reader)

    async def main() -> None:
        async with raw_server(script) as url:
            with pytest.raises(Timeout):
                await tether_client(url, open_timeout=0.1)

    run(main())


def test_client_server_vanishes_during_handshake() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")

    async def main() -> None:
        async with raw_server(script) as url:
            with pytest.raises(ConnectionClosed) as info:
                await tether_client(url)
        assert info.value.code == 1006

    run(main())


@pytest.mark.parametrize("waiting", [False, True], ids=["recv-after", "recv-waiting"])
def test_client_server_vanishes_mid_frame(waiting: bool) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        go_on = asyncio.Event()
        gone: asyncio.Future[None] = loop.create_future()

        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await accept(reader, writer)
            writer.write(encode_frame(0x1, b"hello", masked=False))
            await go_on.wait()
            writer.write(encode_frame(0x2, b"x" * 500, masked=False)[:100])
            await writer.drain()
            writer.close()
            gone.set_result(None)

        async with raw_server(script) as url:
            ws = await tether_client(url)
            assert await ws.recv() == "hello"
            unanswered = await ws.ping()
            if waiting:
                pending = asyncio.ensure_future(ws.recv())
                go_on.set()
            else:
                go_on.set()
                await gone
                await ws.wait_closed()
                pending = asyncio.ensure_future(ws.recv())
            with pytest.raises(ConnectionClosed) as info:
                await pending
            assert info.value.code == 1006
            assert ws.close_code == 1006
            with pytest.raises(ConnectionClosed):
                await unanswered
            with pytest.raises(ConnectionClosed):
                await ws.send("anyone?")
            await ws.close()

    run(main())


def test_client_reads_frames_sent_with_the_handshake_response() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept(reader, writer)  # buffered: goes out with what follows
        writer.write(encode_frame(0x1, b"early", masked=False) + encode_frame(0x8, b"\x03\xe8", masked=False))
        assert await read_frame(reader) == (True, 0x8, b"\x03\xe8")
        # Returning closes the TCP connection, as a server does first (RFC 6455 §7.1.1).

    async def main() -> None:
        async with raw_server(script) as url:
            ws = await tether_client(url)
            assert await ws.recv() == "early"
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.code == 1000

    run(main())


def test_client_close_returns_when_server_never_answers() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept(reader, writer)
        assert await read_frame(reader) == (True, 0x8, struct.pack("!H", 4000) + b"bye")
        await expect_eof(reader)  # never answers; the client gives up and closes

    async def main() -> None:
        async with raw_server(script) as url:
            ws = await tether_client(url, close_timeout=0.1)
            await ws.close(4000, "bye")
            assert ws.close_code == 1006  # no Close frame came back
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.code == 1006

    run(main())


def test_client_drops_tcp_when_server_keeps_it_after_closing_handshake() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept(reader, writer)
        writer.write(encode_frame(0x8, struct.pack("!H", 4001) + b"done", masked=False))
        assert await read_frame(reader) == (True, 0x8, struct.pack("!H", 4001))  # RFC 6455 §5.5.1 echo
        await expect_eof(reader)  # the server should close TCP first; it doesn't, so the client does

    async def main() -> None:
        async with raw_server(script) as url:
            ws = await tether_client(url, close_timeout=0.1)
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert (info.value.code, info.value.reason) == (4001, "done")
            await ws.wait_closed()
            assert ws.close_code == 4001

    run(main())
