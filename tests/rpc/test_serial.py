"""tether.rpc.serialframe and tether.rpc.channels.serial: framing (spec §2.4), a device on a
pseudo-terminal driven by the client transport, pipes and stream pairs, auth and ACL."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.rpc.handlers import make_dispatcher as shared_dispatcher

from tether.errors import ConnectionClosed
from tether.rpc import Acl, CallFailed, CallResult, DigestAuth, Dispatcher, RpcClientCore
from tether.rpc.auth import digest_ha1
from tether.rpc.channels import serial as serial_channel
from tether.rpc.channels.serial import (
    Pty,
    SerialTransport,
    open_pty,
    open_serial_transport,
    serve_serial,
    serve_serial_device,
    serve_serial_streams,
)
from tether.rpc.serialframe import (
    FrameDropped,
    FrameReceived,
    SerialFramer,
    crc32_hex,
    encode_frame,
    split_metadata,
)

GET_INFO = b'{"id":5,"src":"mos","method":"Sys.GetInfo"}'
LIST = b'{"id":6,"method":"RPC.List"}'
WAIT = 5.0  # seconds any single step may take before the test fails


def feed(framer: SerialFramer, data: bytes) -> tuple[list[Any], bytes]:
    framer.receive_data(data)
    return framer.events_received(), framer.data_to_send()


# --- the framer: vectors as literal bytes ----------------------------------------------------


def test_crc_is_zlib_crc32_in_lower_case_hex() -> None:
    assert crc32_hex(GET_INFO) == "55dc4b48"  # the spec's example
    assert crc32_hex(b"") == "00000000"
    assert crc32_hex(b'{"a":"\xc3\xa9"}') == crc32_hex('{"a":"é"}'.encode())


@pytest.mark.parametrize(
    ("wrap", "crc", "wire"),
    [
        (False, False, b'\n{"id":5,"src":"mos","method":"Sys.GetInfo"}\n'),
        (False, True, b'\n{"id":5,"src":"mos","method":"Sys.GetInfo"}55dc4b48\n'),
        (True, False, b'\n"""{"id":5,"src":"mos","method":"Sys.GetInfo"}"""\n'),
        (True, True, b'\n"""{"id":5,"src":"mos","method":"Sys.GetInfo"}55dc4b48"""\n'),
    ],
)
def test_encode_and_read_back(wrap: bool, crc: bool, wire: bytes) -> None:
    assert encode_frame(GET_INFO, wrap=wrap, crc=crc) == wire
    events, _ = feed(SerialFramer(), wire)
    assert events == [FrameReceived(GET_INFO)]


def test_encode_refuses_delimiters_in_a_frame() -> None:
    with pytest.raises(ValueError, match="must not hold"):
        encode_frame(b'{"a":"""}', wrap=False, crc=False)
    with pytest.raises(ValueError, match="must not hold"):
        encode_frame(b'{"a":\n1}', wrap=False, crc=False)
    with pytest.raises(ValueError, match="must not hold"):
        SerialFramer().send_frame(b'{"a":"""}')


def test_split_metadata() -> None:
    assert split_metadata(b'junk {"a":{}}55dc4b48,x \r') == (b'{"a":{}}', b"55dc4b48,x")
    assert split_metadata(b"{}") == (b"{}", b"")
    assert split_metadata(b"no braces") is None
    assert split_metadata(b"} {") is None


def test_line_mode_without_crc_is_answered_in_line_mode() -> None:
    # Spec §11 test 10, first half: a fresh channel, a plain line.
    framer = SerialFramer()
    events, out = feed(framer, LIST + b"\n")
    assert events == [FrameReceived(LIST)] and out == b""
    framer.send_frame(b'{"id":6,"src":"dev","result":[]}')
    assert framer.data_to_send() == b'\n{"id":6,"src":"dev","result":[]}\n'
    assert (framer.wrapped, framer.crc) == (False, False)


def test_mos_request_switches_on_wrapping_and_crc_for_good() -> None:
    # Spec §11 test 10, second half: mos's framing, then replies wrapped with a valid CRC.
    framer = SerialFramer()
    feed(framer, LIST + b"\n")
    events, out = feed(framer, b'\n"""' + GET_INFO + b'55dc4b48"""\n')
    assert events == [FrameReceived(GET_INFO)]
    assert out == b"\n\n\n"  # each empty piece (around the delimiters) is answered with "\n"
    reply = b'{"id":5,"src":"dev","dst":"mos","result":null}'
    framer.send_frame(reply)
    assert framer.data_to_send() == b'\n"""' + reply + crc32_hex(reply).encode() + b'"""\n'
    # Sticky: a later plain line still gets the wrapped, checksummed form.
    events, _ = feed(framer, LIST + b"\n")
    assert events == [FrameReceived(LIST)]
    framer.send_frame(b"{}")
    assert framer.data_to_send() == b'\n"""{}00000000"""\n'.replace(b"00000000", crc32_hex(b"{}").encode())


def test_empty_and_handshake_frames_are_answered() -> None:
    framer = SerialFramer()
    assert feed(framer, b"\n") == ([], b"\n")
    assert feed(framer, b" \t\r\n") == ([], b"\n")
    assert feed(framer, b'"""\x04"""') == ([], b'\n"""\x04"""')
    # mos's whole handshake: """ 0x04 """ \n \n
    assert feed(SerialFramer(), b'"""\x04"""\n\n') == ([], b'\n"""\x04"""\n\n')
    # 0x04 only counts alone.
    events, out = feed(SerialFramer(), b"\x04\x04\n")
    assert out == b"" and events == [FrameDropped("no JSON object", b"\x04\x04")]


def test_crc_checks() -> None:
    framer = SerialFramer()
    assert feed(framer, GET_INFO + b"55dc4b49\n") == (
        [FrameDropped("bad CRC b'55dc4b49', frame's is 55dc4b48", GET_INFO)],
        b"",
    )
    assert not framer.crc
    # Metadata after the CRC, upper-case hex, 0x prefix, CRLF: all accepted.
    for line in (b"55dc4b48,a,b\n", b"55DC4B48\n", b"0x55dc4b48\n", b"55dc4b48\r\n"):
        assert feed(framer, GET_INFO + line)[0] == [FrameReceived(GET_INFO)], line
    assert framer.crc
    # Metadata shorter than 8 characters is not a CRC (as the firmware reads it).
    assert feed(SerialFramer(), GET_INFO + b"1,a,b\n")[0] == [FrameReceived(GET_INFO)]
    # 8 characters or more that are not hex: dropped.
    assert feed(SerialFramer(), GET_INFO + b"zzzzzzzz\n")[0][0].reason.startswith("bad CRC")
    # A CRC over 32 bits never matches.
    assert isinstance(feed(SerialFramer(), GET_INFO + b"155dc4b48\n")[0][0], FrameDropped)


def test_junk_before_the_frame_and_garbage_lines() -> None:
    framer = SerialFramer()
    events, out = feed(
        framer,
        b"mgos_init.c:36          Init done\n"
        b'log: {"id":1,"method":"RPC.List"}\n'
        b"\x11\x13" + LIST + b"\n"  # XON/XOFF are not data
        b"}{\n",
    )
    assert out == b""
    assert events == [
        FrameDropped("no JSON object", b"mgos_init.c:36          Init done"),
        FrameReceived(b'{"id":1,"method":"RPC.List"}'),
        FrameReceived(LIST),
        FrameDropped("no JSON object", b"}{"),
    ]
    # Invalid JSON inside braces is the dispatcher's to refuse: the framer passes it on.
    assert feed(framer, b"{nope}\n")[0] == [FrameReceived(b"{nope}")]
    # UTF-8 passes (the firmware clears its buffer on bytes >= 0x80; mos writes UTF-8).
    text = '{"id":1,"method":"E","params":"é"}'.encode()
    assert feed(framer, text + b"\n")[0] == [FrameReceived(text)]


def test_over_long_lines_are_dropped_and_the_next_line_is_read() -> None:
    framer = SerialFramer(max_frame_size=100, max_line_size=120)
    long_line = b"{" + b"x" * 200 + b"}"
    events, _ = feed(framer, long_line + b"\n" + LIST + b"\n")
    assert events == [FrameDropped("line over 120 bytes", long_line[:80]), FrameReceived(LIST)]
    # The same, arriving in pieces: the rest of the long line is not taken for a frame.
    framer = SerialFramer(max_frame_size=100, max_line_size=120)
    got = []
    for i in range(0, len(long_line), 7):
        got += feed(framer, long_line[i : i + 7])[0]
    got += feed(framer, b'"x"}"""' + LIST + b"\n")[0]
    assert got == [FrameDropped("line over 120 bytes", long_line[:80]), FrameReceived(LIST)]
    assert framer.wrapped  # the long line ended at a '"""'
    # Within the line limit but over the frame limit.
    frame = b'{"a":"' + b"y" * 100 + b'"}'
    events, _ = feed(SerialFramer(max_frame_size=100, max_line_size=120), frame + b"\n")
    assert events == [FrameDropped("frame of 108 bytes is over the limit of 100", frame[:80])]
    assert repr(SerialFramer()) == "SerialFramer(device, wrapped=False, crc=False, buffered=0)"


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_frame_size"):
        SerialFramer(max_frame_size=0)
    with pytest.raises(ValueError, match="max_line_size"):
        SerialFramer(max_line_size=0)
    assert SerialFramer(max_frame_size=10).max_line_size == 74


def test_client_framer_writes_like_mos_and_answers_nothing() -> None:
    framer = SerialFramer(client=True)
    framer.send_frame(GET_INFO)
    assert framer.data_to_send() == b'\n"""' + GET_INFO + b'55dc4b48"""\n'
    events, out = feed(framer, b'\n\n"""\x04"""\n\n"""{"id":5,"result":1}"""\n')
    assert events == [FrameReceived(b'{"id":5,"result":1}')] and out == b""
    assert "client" in repr(framer)


def test_line_breaks_in_a_frame_become_spaces() -> None:
    framer = SerialFramer()
    framer.send_frame(b'{"id":1,\r\n"result":\n3.00}')
    assert framer.data_to_send() == b'\n{"id":1, "result": 3.00}\n'


STREAM = (
    b"boot log\r\n"
    b'"""\x04"""\n\n'
    b'\n"""' + GET_INFO + b'55dc4b48"""\n'
    b"\x11" + LIST + b"1,x\r\n"
    b"{" + b"z" * 150 + b"}\n"
    b'""' + GET_INFO + b"ffffffff\n"
    b" \n"
    b'{"id":"\xc3\xa9","method":"E"}'
)


def _run(chunks: list[bytes], **kwargs: Any) -> tuple[list[Any], bytes, tuple[bool, bool]]:
    framer = SerialFramer(max_frame_size=100, max_line_size=120, **kwargs)
    events: list[Any] = []
    out = b""
    for chunk in chunks:
        framer.receive_data(chunk)
        events += framer.events_received()
        out += framer.data_to_send()
    return events, out, (framer.wrapped, framer.crc)


def test_split_at_every_byte_gives_the_same_events() -> None:
    whole = _run([STREAM])
    assert [type(e).__name__ for e in whole[0]] == [
        "FrameDropped",
        "FrameReceived",
        "FrameReceived",
        "FrameDropped",
        "FrameDropped",
    ]
    assert whole[2] == (True, True)
    for at in range(len(STREAM) + 1):
        assert _run([STREAM[:at], STREAM[at:]]) == whole, at
    assert _run([STREAM[i : i + 1] for i in range(len(STREAM))]) == whole


@given(st.binary(max_size=400), st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_any_bytes_split_anywhere(data: bytes, cuts: list[int]) -> None:
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]
    assert _run(chunks) == _run([data])
    assert _run(chunks, client=True) == _run([data], client=True)


@given(st.lists(st.sampled_from([b"\n", b'"""', b"\x04", b"{}", b'"', b" ", b"x" * 60, b"00000000"])))
def test_delimiter_soup_split_anywhere(parts: list[bytes]) -> None:
    data = b"".join(parts)
    assert _run(list(parts)) == _run([data])
    assert _run([data[i : i + 1] for i in range(len(data))]) == _run([data])


# --- a device on a pseudo-terminal ------------------------------------------------------------


FAIL_MESSAGE = 'Bad request. Expected: {"a":N1,"b":N2}'


def make_dispatcher(**kwargs: Any) -> tuple[Dispatcher, list[Any]]:
    return shared_dispatcher(fail_message=FAIL_MESSAGE, **kwargs)


@contextlib.asynccontextmanager
async def pty_device(dispatcher: Dispatcher) -> AsyncIterator[Pty]:
    with open_pty() as pty:
        task = asyncio.create_task(serve_serial(dispatcher, pty.master))
        try:
            yield pty
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def client(pty: Pty) -> AsyncIterator[SerialTransport]:
    transport = await open_serial_transport(f"serial://{pty.path}", timeout=WAIT)
    try:
        yield transport
    finally:
        await transport.close()


async def call(
    transport: Any, core: RpcClientCore, method: str, params: Any = None
) -> CallResult | CallFailed:
    """One call through the client core and a transport, with the core's 401 retry."""
    call_id = core.call(method, params)
    while True:
        for frame in core.frames_to_send():
            await transport.send(frame)
        for event in core.events_received():
            assert isinstance(event, (CallResult, CallFailed))
            if event.id == call_id:
                return event
        core.receive_frame(await asyncio.wait_for(transport.recv(), WAIT))


async def test_calls_over_a_pseudo_terminal() -> None:
    dispatcher, _ = make_dispatcher()
    async with pty_device(dispatcher) as pty, client(pty) as transport:
        core = RpcClientCore("mos")
        result = await call(transport, core, "Sum", {"a": 1, "b": 2})
        assert isinstance(result, CallResult) and result.result == 3.0
        result = await call(transport, core, "RPC.Ping")
        assert isinstance(result, CallResult) and result.result == {"channel_info": "UART0"}
        failed = await call(transport, core, "No.Such")
        assert isinstance(failed, CallFailed) and failed.error.code == 404
        assert failed.error.message == "No handler for No.Such"
        big = {"data": "é" * 1500}  # a 3 kB UTF-8 frame each way
        result = await call(transport, core, "Echo", big)
        assert isinstance(result, CallResult) and result.result == big
        assert "SerialTransport" in repr(transport)


REQUESTS = [
    b'{"id":1234567890123,"src":"mos","method":"Sum","params":{"a":1,"b":2}}',
    b'{"id":7,"src":"mos","method":"Foo.Bar"}',
    b'{"id":"q1","src":"ui","tag":"row-4","method":"RPC.Ping"}',
    b'{"id":3,"method":"rpc.list"}',
    b'{"id":4,"src":"mos","method":"Sum","params":{"a":1}}',
    b'{"id":5,"src":"mos","method":"Fail"}',
    b'{"id":9223372036854775807,"src":"mos","method":"Echo","args":[1,"\xc3\xa9",null]}',
    b'{"id":2,"src":"mos","dst":"tether_0A1B2C","method":"RPC.Describe","params":{"name":"Sum"}}',
]


async def test_same_results_as_the_dispatcher_directly() -> None:
    dispatcher, _ = make_dispatcher()
    async with pty_device(dispatcher) as pty, client(pty) as transport:
        for request in REQUESTS:
            await transport.send(request)
            got = await asyncio.wait_for(transport.recv(), WAIT)
            assert got == await dispatcher.handle(request, channel="UART", peer="UART0"), request


async def test_bad_input_gets_no_reply_and_the_device_keeps_serving() -> None:
    dispatcher, notes = make_dispatcher()
    async with pty_device(dispatcher) as pty, client(pty) as transport:
        for bad in (
            b'{"id":1,"method":',  # invalid JSON
            b"[" + LIST + b"]",  # no batching
            b'{"id":true,"method":"RPC.List"}',  # wrong id type
            b'{"id":2,"dst":"other","method":"RPC.List"}',  # not this device
            b'{"method":"Note","params":1}',  # a notification
            b'{"id":3,"result":1}',  # a response
            b'{"id":4,"method":"Echo","params":"' + b"x" * 5000 + b'"}',  # over 4096
        ):
            await transport.send(bad)
        await transport.send(b'{"id":10,"method":"Echo","params":"ok"}')
        assert (
            await asyncio.wait_for(transport.recv(), WAIT) == b'{"id":10,"src":"tether_0A1B2C","result":"ok"}'
        )
        assert notes == [1]


def wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def raw_exchange(fd: int, data: bytes, until: Callable[[bytes], bool]) -> bytes:
    """Write data to fd and read until until(what was read) holds."""
    loop = asyncio.get_running_loop()
    os.write(fd, data)
    got = b""
    while not until(got):
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, wake, ready)
        try:
            await asyncio.wait_for(ready, WAIT)
        finally:
            loop.remove_reader(fd)
        got += os.read(fd, 65536)
    return got


async def test_spec_serial_vectors_on_the_wire() -> None:
    # Spec §11 test 10 byte for byte, through a real pseudo-terminal.
    dispatcher, _ = make_dispatcher()
    async with pty_device(dispatcher) as pty:
        fd = os.open(pty.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            got = await raw_exchange(fd, LIST + b"\n", lambda b: b.endswith(b"]}\n"))
            assert got.startswith(b'\n{"id":6,"src":"tether_0A1B2C","result":["Fail","Config.Get",')
            assert got.count(b"\n") == 2
            got = await raw_exchange(fd, b"\n", lambda b: len(b) == 1)
            assert got == b"\n"
            got = await raw_exchange(fd, b'"""\x04"""', lambda b: b.endswith(b'\x04"""'))
            assert got == b'\n"""\x04"""'
            got = await raw_exchange(
                fd, b'\n"""' + GET_INFO[:-1] + b',"params":null}XXXXXXXX"""\n', lambda b: len(b) == 3
            )
            assert got == b"\n\n\n"  # bad CRC: silence, bar the empty pieces' answers
            got = await raw_exchange(
                fd, b'\n"""' + GET_INFO + b'55dc4b48"""\n', lambda b: b.endswith(b'"""\n')
            )
            reply = (
                b'{"id":5,"src":"tether_0A1B2C","dst":"mos",'
                b'"error":{"code":404,"message":"No handler for Sys.GetInfo"}}'
            )
            assert got == b'\n\n\n\n"""' + reply + crc32_hex(reply).encode() + b'"""\n'
        finally:
            os.close(fd)


async def test_clients_come_and_go() -> None:
    dispatcher, _ = make_dispatcher()
    async with pty_device(dispatcher) as pty:
        for _ in range(3):
            async with client(pty) as transport:
                result = await call(transport, RpcClientCore("mos"), "Echo", [1])
                assert isinstance(result, CallResult) and result.result == [1]


async def test_transport_close_ends_a_pending_recv() -> None:
    dispatcher, _ = make_dispatcher()
    async with pty_device(dispatcher) as pty, client(pty) as transport:
        pending = asyncio.create_task(transport.recv())
        await asyncio.sleep(0)
        await transport.close()
        with pytest.raises(ConnectionClosed) as caught:
            await asyncio.wait_for(pending, WAIT)
        assert caught.value.code == 1000
        with pytest.raises(ConnectionClosed):
            await transport.send(LIST)
        with pytest.raises(ConnectionClosed):
            await transport.recv()


async def test_transport_sees_the_device_go_away() -> None:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    os.close(slave)
    transport = await open_serial_transport(path, timeout=WAIT)
    try:
        os.close(master)  # the slave now reads EIO (Linux) or end of file
        with pytest.raises(ConnectionClosed) as caught:
            await asyncio.wait_for(transport.recv(), WAIT)
        assert caught.value.code == 1006
    finally:
        await transport.close()


async def test_open_errors() -> None:
    with pytest.raises(ValueError, match="no serial device"):
        await open_serial_transport("serial://", timeout=WAIT)
    with pytest.raises(FileNotFoundError):
        await open_serial_transport("/dev/no-such-tty-here", timeout=WAIT)
    with open_pty() as pty, pytest.raises(ValueError, match="baud rate 12345"):
        await open_serial_transport(pty.path, baudrate=12345, timeout=WAIT)


# --- auth and ACL ------------------------------------------------------------------------------


def auth_dispatcher(tmp_path: Path) -> Dispatcher:
    path = tmp_path / "htdigest"
    path.write_text(
        f"admin:RPC:{digest_ha1('admin', 'RPC', 'secret')}\nbob:RPC:{digest_ha1('bob', 'RPC', 'b0b')}\n"
    )
    acl = Acl.parse([{"method": "Config.*", "acl": "admin"}, {"method": "*", "acl": "*"}])
    return make_dispatcher(acl=acl, auth=DigestAuth(path))[0]


async def test_auth_and_acl(tmp_path: Path) -> None:
    dispatcher = auth_dispatcher(tmp_path)
    async with pty_device(dispatcher) as pty, client(pty) as transport:
        failed = await call(transport, RpcClientCore("mos"), "Config.Get")
        assert isinstance(failed, CallFailed) and failed.error.code == 401
        challenge = json.loads(failed.error.message)
        assert challenge["auth_type"] == "digest" and challenge["realm"] == "RPC"
        ok = await call(transport, RpcClientCore("mos", credentials=("admin", "secret")), "Config.Get")
        assert ok == CallResult(ok.id, {"user": "admin"})
        wrong = await call(transport, RpcClientCore("mos", credentials=("admin", "nope")), "Config.Get")
        assert isinstance(wrong, CallFailed) and wrong.error.code == 401
        denied = await call(transport, RpcClientCore("mos", credentials=("bob", "b0b")), "Config.Get")
        assert isinstance(denied, CallFailed) and denied.error.code == 403
        assert denied.error.message == "unauthorized"
        open_ = await call(transport, RpcClientCore("mos"), "Echo", "hi")
        assert isinstance(open_, CallResult) and open_.result == "hi"


async def test_acl_by_channel_type(tmp_path: Path) -> None:
    acl = Acl.parse([{"ch_type": "UART", "acl": "-*"}, {"method": "*", "acl": "*"}])
    dispatcher, _ = make_dispatcher(acl=acl)
    async with pty_device(dispatcher) as pty, client(pty) as transport:
        denied = await call(transport, RpcClientCore("mos"), "Echo", 1)
        assert isinstance(denied, CallFailed) and denied.error.code == 403


# --- pipes (stdin/stdout), stream pairs, pyserial --------------------------------------------


async def test_serve_over_pipes_until_end_of_input() -> None:
    dispatcher, _ = make_dispatcher()
    gate = asyncio.Event()

    @dispatcher.method("Slow")
    async def slow(call: Any) -> str:
        await gate.wait()
        return "done"

    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    try:
        os.write(in_w, b'{"id":1,"method":"Slow"}\n' + LIST + b"\n")
        os.close(in_w)
        in_w = -1
        server = asyncio.create_task(serve_serial(dispatcher, in_r, out_w))
        await asyncio.sleep(0)
        gate.set()
        await asyncio.wait_for(server, WAIT)  # returns at end of input, calls answered
        assert os.get_blocking(in_r) and os.get_blocking(out_w)  # restored
        os.close(out_w)
        out_w = -1
        replies = b""
        while chunk := os.read(out_r, 65536):
            replies += chunk
        lines = [line for line in replies.split(b"\n") if line]
        assert sorted(json.loads(line)["id"] for line in lines) == [1, 6]
        assert b'{"id":1,"src":"tether_0A1B2C","result":"done"}' in lines
    finally:
        for fd in (in_r, in_w, out_r, out_w):
            if fd >= 0:
                os.close(fd)


async def test_serve_over_a_stream_pair() -> None:
    dispatcher, _ = make_dispatcher()
    ours, theirs = socket.socketpair()
    with theirs:
        reader, writer = await asyncio.open_connection(sock=ours)
        server = asyncio.create_task(serve_serial_streams(dispatcher, reader, writer, peer="socket"))
        peer_reader, peer_writer = await asyncio.open_connection(sock=theirs.dup())
        peer_writer.write(b'{"id":1,"method":"RPC.Ping"}\n')
        line = await asyncio.wait_for(peer_reader.readuntil(b"}\n"), WAIT)
        assert line == b'\n{"id":1,"src":"tether_0A1B2C","result":{"channel_info":"socket"}}\n'
        peer_writer.write_eof()
        await asyncio.wait_for(server, WAIT)
        assert await asyncio.wait_for(peer_reader.read(), WAIT) == b""
        peer_writer.close()
        await peer_writer.wait_closed()


async def test_serial_device_without_pyserial(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "serial", None)
    dispatcher, _ = make_dispatcher()
    with pytest.raises(ImportError, match=r"pip install 'tether\[serial\]'"):
        await serve_serial_device(dispatcher, "/dev/ttyUSB0")
    with pytest.raises(ValueError, match="flow_control"):
        await serve_serial_device(dispatcher, "/dev/ttyUSB0", flow_control="dtr")


async def test_serial_device_with_pyserial(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("serial", reason="pyserial is not installed (pip install 'tether[serial]')")
    dispatcher, _ = make_dispatcher()
    master, slave = os.openpty()
    path = os.ttyname(slave)
    # pyserial flushes the port when it opens it: write only once it has.
    opened = asyncio.Event()
    serve = serial_channel.serve_serial

    async def serve_and_tell(*args: Any, **kwargs: Any) -> None:
        opened.set()
        await serve(*args, **kwargs)

    monkeypatch.setattr(serial_channel, "serve_serial", serve_and_tell)
    server = asyncio.create_task(serve_serial_device(dispatcher, path, baudrate=9600))
    await asyncio.wait_for(opened.wait(), WAIT)
    # The client end is the master: a transport over its descriptor.
    transport = SerialTransport(serial_channel._FdLink(master, master, owned=(master,)), "master")
    try:
        result = await call(transport, RpcClientCore("mos"), "Echo", {"via": "pyserial"})
        assert isinstance(result, CallResult) and result.result == {"via": "pyserial"}
    finally:
        await transport.close()
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
        os.close(slave)
