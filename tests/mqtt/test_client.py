"""The asyncio MQTT client against a fake broker on loopback: bad input, reconnects,
backpressure, the outbox. Real brokers are in tests/integration/test_mqtt_*.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tether.errors import (
    ConnectionClosed,
    InvalidState,
    MalformedPacket,
    PayloadTooBig,
    ProtocolError,
    Refused,
    Timeout,
)
from tether.mqtt import Client, Outbox, Properties
from tether.mqtt.packets import (
    MQTT_3_1_1,
    MQTT_5,
    ConnAck,
    Connect,
    ConnectReturnCode,
    Disconnect,
    Packet,
    PacketReader,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    ReasonCode,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    encode,
)

pytestmark = pytest.mark.timeout(30)

RC = ReasonCode


class Session:
    """One connection to the fake broker, seen from the broker."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, version: int) -> None:
        self.reader = reader
        self.writer = writer
        self.version = version
        self.packets = PacketReader(version)
        self.pending: list[Packet] = []

    async def next(self, timeout: float = 10.0) -> Packet:
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                raise EOFError("the client closed the connection")
            self.pending += self.packets.feed(data)
        return self.pending.pop(0)

    async def expect(self, kind: type[Packet]) -> Any:
        packet = await self.next()
        while isinstance(packet, PingReq):
            self.send(PingResp())
            packet = await self.next()
        assert isinstance(packet, kind), packet
        return packet

    def send(self, *packets: Packet) -> None:
        self.writer.write(b"".join(encode(p, self.version) for p in packets))

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def closed(self) -> list[Packet]:
        """Read until the client closes; return the packets it sent meanwhile."""
        seen = list(self.pending)
        self.pending.clear()
        while True:
            data = await asyncio.wait_for(self.reader.read(65536), 10)
            if not data:
                return seen
            seen += self.packets.feed(data)

    async def accept(self, session_present: bool = False, properties: Properties | None = None) -> Connect:
        connect = await self.expect(Connect)
        self.send(ConnAck(session_present, RC.SUCCESS, properties or Properties()))
        return connect


Script = Callable[[Session], Awaitable[None]]


class FakeBroker:
    """A TCP server on 127.0.0.1 that runs one script per connection, in order."""

    def __init__(self, *scripts: Script, version: int = MQTT_5) -> None:
        self.scripts = list(scripts)
        self.version = version
        self.done: list[asyncio.Future[None]] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> FakeBroker:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        if self.done:
            await asyncio.wait(self.done, timeout=5)
        self.server.close()
        for future in self.done:
            if not future.done():
                future.cancel()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"mqtt://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        future = asyncio.get_running_loop().create_future()
        self.done.append(future)
        if not self.scripts:
            writer.close()
            return
        script = self.scripts.pop(0)
        try:
            await script(Session(reader, writer, self.version))
            future.set_result(None)
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
        finally:
            writer.close()

    async def finished(self, count: int | None = None) -> None:
        """Wait for the scripts of the first count connections (all so far) to end."""
        for _ in range(200):
            if count is None or len(self.done) >= count:
                break
            await asyncio.sleep(0.01)
        for future in self.done[:count]:
            if future.cancelled():
                raise AssertionError("a broker script did not finish")
            await asyncio.wait_for(future, 10)


def client(broker: FakeBroker, **kwargs: Any) -> Client:
    kwargs.setdefault("client_id", "c1")
    kwargs.setdefault("version", broker.version)
    kwargs.setdefault("backoff_min", 0.01)
    kwargs.setdefault("backoff_max", 0.05)
    kwargs.setdefault("connect_timeout", 5)
    return Client(broker.url, **kwargs)


# --- basics -------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [MQTT_3_1_1, MQTT_5])
async def test_publish_subscribe_every_qos(version: int) -> None:
    async def script(s: Session) -> None:
        connect = await s.accept()
        assert connect.client_id == "c1"
        sub = await s.expect(Subscribe)
        s.send(SubAck(sub.packet_id, (RC(2),)))
        for qos in (0, 1, 2):
            publish = await s.expect(Publish)
            assert (publish.topic, publish.payload, publish.qos) == ("t", bytes([qos]), qos)
            if qos == 1:
                s.send(PubAck(publish.packet_id))
            elif qos == 2:
                s.send(PubRec(publish.packet_id))
                s.send(PubComp((await s.expect(PubRel)).packet_id))
        s.send(Publish("in/x", b"q1", 1, packet_id=7), Publish("in/y", b"q2", 2, packet_id=8))
        assert (await s.expect(PubAck)).packet_id == 7
        assert (await s.expect(PubRec)).packet_id == 8
        s.send(PubRel(8))
        assert (await s.expect(PubComp)).packet_id == 8
        await s.expect(Disconnect)

    async with FakeBroker(script, version=version) as broker, client(broker) as c:
        messages = c.messages("in/#")
        assert await c.subscribe("in/#", qos=2) == (2,)
        for qos in (0, 1, 2):
            assert await c.publish("t", bytes([qos]), qos) == 0
        first, second = await messages.get(5), await messages.get(5)
        assert (first.topic, first.payload, second.topic, second.payload) == ("in/x", b"q1", "in/y", b"q2")
    await broker.finished()


async def test_messages_go_to_every_matching_stream_and_others_to_on_message() -> None:
    async def script(s: Session) -> None:
        await s.accept()
        s.send(Publish("a/1", b"x"), Publish("b/1", b"y"))
        await s.expect(Disconnect)

    others: list[str] = []
    async with FakeBroker(script) as broker:
        c = client(broker, on_message=lambda m: others.append(m.topic))
        a = c.messages("a/+")
        everything = c.messages()
        async with c:
            assert (await a.get(5)).topic == "a/1"
            assert [(await everything.get(5)).topic for _ in range(2)] == ["a/1", "b/1"]
        assert others == []  # every message had a stream
        with pytest.raises(StopAsyncIteration):
            await a.get(5)
    await broker.finished()


async def test_refused_connection_is_permanent() -> None:
    async def script(s: Session) -> None:
        await s.expect(Connect)
        s.send(ConnAck(False, RC.BAD_USER_NAME_OR_PASSWORD))

    async with FakeBroker(script) as broker:
        c = client(broker)
        with pytest.raises(Refused, match="bad user name or password") as info:
            await c.connect()
        assert info.value.reason_code == 0x86
        with pytest.raises(Refused):
            await c.publish("t", b"x", 1)


async def test_refused_v4_return_code() -> None:
    async def script(s: Session) -> None:
        await s.expect(Connect)
        s.send(ConnAck(False, ConnectReturnCode.NOT_AUTHORIZED))

    async with FakeBroker(script, version=MQTT_3_1_1) as broker:
        with pytest.raises(Refused, match="not authorized") as info:
            await client(broker).connect()
        assert info.value.reason_code == 5


async def test_no_connack_times_out() -> None:
    async def script(s: Session) -> None:
        await s.expect(Connect)
        await asyncio.sleep(5)

    async with FakeBroker(script) as broker:
        with pytest.raises(Timeout, match="timed out"):
            await client(broker, connect_timeout=0.2).connect()


async def test_refused_subscription_and_publish() -> None:
    async def script(s: Session) -> None:
        await s.accept()
        sub = await s.expect(Subscribe)
        s.send(SubAck(sub.packet_id, (RC.GRANTED_QOS_1, RC.NOT_AUTHORIZED)))
        publish = await s.expect(Publish)
        s.send(PubAck(publish.packet_id, RC.NOT_AUTHORIZED))
        unsub = await s.expect(Unsubscribe)
        s.send(UnsubAck(unsub.packet_id, (RC.SUCCESS,)))
        await s.expect(Disconnect)

    async with FakeBroker(script) as broker, client(broker) as c:
        with pytest.raises(Refused, match="'secret/#': not authorized") as info:
            await c.subscribe([("ok/#", 1), ("secret/#", 1)])
        assert info.value.reason_code == 0x87
        with pytest.raises(Refused, match="publish refused: not authorized"):
            await c.publish("secret/x", b"", 1)
        await c.unsubscribe("ok/#")
    await broker.finished()


async def test_invalid_topics_are_refused_before_sending() -> None:
    async def script(s: Session) -> None:
        await s.accept()
        packets = await s.closed()
        assert packets == [Disconnect()]

    async with FakeBroker(script) as broker, client(broker) as c:
        for bad in ("a/#", "a/+", "", "a\x00b"):
            with pytest.raises(ValueError):
                await c.publish(bad, b"x", 1)
        for bad in ("a/#/b", "a+", "", "$share/g"):
            with pytest.raises(ValueError):
                await c.subscribe(bad)
        with pytest.raises(ValueError):
            c.messages("a#")
        with pytest.raises(ValueError):
            await c.publish("t", b"", 3)
    await broker.finished()


# --- bad input from the server --------------------------------------------------------------------


@pytest.mark.parametrize("version", [MQTT_3_1_1, MQTT_5])
@pytest.mark.parametrize(
    ("raw", "error", "code"),
    [
        pytest.param(b"\x30\xff\xff\xff\xff\x01", MalformedPacket, 0x81, id="remaining-length-5-bytes"),
        pytest.param(b"\x30\x80\x00", MalformedPacket, 0x81, id="remaining-length-not-minimal"),
        pytest.param(b"\x30\x05\x00\x02\xc3\x28x", MalformedPacket, 0x81, id="invalid-utf8-topic"),
        pytest.param(b"\x30\x04\x00\x02a#", ProtocolError, 0x90, id="wildcard-in-topic"),
        pytest.param(b"\x00\x00", MalformedPacket, 0x81, id="reserved-packet-type"),
        pytest.param(b"\x60\x02\x00\x01", MalformedPacket, 0x81, id="bad-fixed-header-flags"),
        pytest.param(b"\x36\x05\x00\x01t\x00\x01", MalformedPacket, 0x81, id="publish-qos-3"),
        pytest.param(b"\x30\xff\xff\x3f", PayloadTooBig, 0x95, id="packet-over-max-size"),
        pytest.param(b"\x20\x02\x00\x00", ProtocolError, 0x82, id="second-connack"),
        pytest.param(b"\x82\x06\x00\x01\x00\x01t\x00", ProtocolError, 0x82, id="server-sends-subscribe"),
        pytest.param(b"\xc0\x00", ProtocolError, 0x82, id="server-sends-pingreq"),
        pytest.param(b"\x70\x02\x00\x01", ProtocolError, 0x82, id="pubcomp-before-pubrec"),
    ],
)
async def test_bad_input_ends_in_a_precise_error(version: int, raw: bytes, error: type, code: int) -> None:
    if version == MQTT_5:
        # The same packets with the property length 5.0 adds.
        raw = {
            b"\x82\x06\x00\x01\x00\x01t\x00": b"\x82\x07\x00\x01\x00\x00\x01t\x00",
            b"\x20\x02\x00\x00": b"\x20\x03\x00\x00\x00",
            b"\x30\x04\x00\x02a#": b"\x30\x05\x00\x02a#\x00",
        }.get(raw, raw)
    seen: list[Packet] = []

    async def script(s: Session) -> None:
        await s.accept()
        first = await s.expect(Publish)
        raw_sent = b"p\x02" + first.packet_id.to_bytes(2, "big") if raw.startswith(b"p") else raw
        s.send_raw(raw_sent)
        seen.extend(await s.closed())

    async with FakeBroker(script, version=version) as broker:
        c = client(broker, reconnect=False, max_packet_size=4096)
        await c.connect()
        with pytest.raises(error) as info:
            await c.publish("t", b"x", qos=2)
        assert type(info.value) is error
        assert info.value.reason_code == code
        await broker.finished()
        expected = [Disconnect(RC(code))] if version == MQTT_5 else []
        assert seen == expected
        with pytest.raises(error):
            await c.publish("t", b"again", qos=1)
        await c.disconnect()


async def test_keepalive_timeout_closes_and_reconnects() -> None:
    async def silent(s: Session) -> None:
        await s.accept(properties=Properties(server_keep_alive=1))
        assert isinstance(await s.next(), PingReq)  # and never answer
        assert await s.closed() == [Disconnect(RC.KEEP_ALIVE_TIMEOUT)]

    async def healthy(s: Session) -> None:
        await s.accept(session_present=True)
        await s.expect(Disconnect)

    connections: list[bool] = []
    async with FakeBroker(silent, healthy) as broker:
        c = client(broker, keepalive=1, on_connect=lambda _c, e: connections.append(e.session_present))
        async with c:
            await broker.finished(1)
            await c.wait_connected(5)
            for _ in range(100):
                if len(connections) == 2:
                    break
                await asyncio.sleep(0.01)
        assert connections == [False, True]
    await broker.finished()


# --- reconnect and session -----------------------------------------------------------------------


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


async def test_reconnect_after_lost_connection_and_failed_try() -> None:
    async def dropped(s: Session) -> None:
        await s.accept()  # then the connection closes

    async def no_connack(s: Session) -> None:
        await s.expect(Connect)  # and close before CONNACK: that try fails

    async def healthy(s: Session) -> None:
        connect = await s.accept(session_present=True)
        assert not connect.clean_start  # later connects resume the session
        await s.expect(Disconnect)

    lost: list[BaseException | None] = []
    async with FakeBroker(dropped, no_connack, healthy) as broker:
        c = client(broker, on_disconnect=lambda _c, error: lost.append(error))
        await c.connect()
        await _until(lambda: len(broker.done) == 3 and c.is_connected)
        # Connected again: no task and no timer wait for the next loss.
        await _until(lambda: c._reconnect_task is None)
        assert c._reconnect_handle is None
        assert len(lost) == 1 and isinstance(lost[0], ConnectionClosed)
        await c.disconnect()
    await broker.finished()


async def test_disconnect_during_backoff_stops_reconnecting() -> None:
    async def dropped(s: Session) -> None:
        await s.accept()

    async with FakeBroker(dropped) as broker:
        c = client(broker, backoff_min=60, backoff_max=60)
        await c.connect()
        await _until(lambda: c._reconnect_handle is not None)
        assert not c.is_connected
        await c.disconnect()
        assert c._reconnect_handle is None and c._reconnect_task is None
        with pytest.raises(InvalidState):
            await c.publish("t", b"x")
        assert len(broker.done) == 1
    await broker.finished()


async def test_disconnect_while_reconnecting_cancels_the_try() -> None:
    entered = asyncio.Event()

    async def dropped(s: Session) -> None:
        await s.accept()

    async def stalled(s: Session) -> None:
        await s.expect(Connect)
        entered.set()
        with contextlib.suppress(EOFError):
            await s.closed()  # no CONNACK; the client gives up when disconnected

    async with FakeBroker(dropped, stalled) as broker:
        c = client(broker, connect_timeout=30)
        await c.connect()
        await asyncio.wait_for(entered.wait(), 10)
        assert c._reconnect_task is not None
        await c.disconnect()
        assert c._reconnect_task is None and not c.is_connected
    await broker.finished()


async def test_permanent_refusal_during_reconnect_ends_the_client() -> None:
    async def dropped(s: Session) -> None:
        await s.accept()

    async def refused(s: Session) -> None:
        await s.expect(Connect)
        s.send(ConnAck(False, RC.NOT_AUTHORIZED))

    async with FakeBroker(dropped, refused) as broker:
        c = client(broker)
        stream = c.messages()
        await c.connect()
        with pytest.raises(Refused, match="not authorized"):
            await stream.get(10)
        with pytest.raises(Refused):
            await c.publish("t", b"x", 1)
        assert c._reconnect_task is None and c._reconnect_handle is None
        await c.disconnect()
    await broker.finished()


async def test_reconnect_resumes_session_and_resends_unacknowledged() -> None:
    async def first(s: Session) -> None:
        connect = await s.accept()
        assert connect.clean_start and connect.properties.session_expiry_interval == 60
        publish = await s.expect(Publish)
        assert publish.qos == 1  # and drop the connection without PUBACK

    async def second(s: Session) -> None:
        connect = await s.accept(session_present=True)
        assert not connect.clean_start
        again = await s.expect(Publish)
        assert (again.payload, again.dup) == (b"once", True)
        s.send(PubAck(again.packet_id))
        await s.expect(Disconnect)

    async with FakeBroker(first, second) as broker, client(broker, session_expiry=60) as c:
        assert await c.publish("t", b"once", 1) == 0
    await broker.finished()


async def test_lost_session_restores_subscriptions_and_pending_requests() -> None:
    async def first(s: Session) -> None:
        await s.accept()
        sub = await s.expect(Subscribe)
        s.send(SubAck(sub.packet_id, (RC(1),)))
        await s.expect(Subscribe)  # the second subscribe gets no answer: connection drops

    async def second(s: Session) -> None:
        await s.accept(session_present=False)
        filters = set()
        for _ in range(2):
            sub = await s.expect(Subscribe)
            filters.add(sub.subscriptions[0].filter)
            s.send(SubAck(sub.packet_id, (RC(1),)))
        assert filters == {"a/#", "b/#"}
        s.send(Publish("a/x", b"after", 1, packet_id=3))
        await s.expect(PubAck)
        await s.expect(Disconnect)

    async with FakeBroker(first, second) as broker, client(broker) as c:
        messages = c.messages()
        await c.subscribe("a/#", qos=1)
        assert await c.subscribe("b/#", qos=1) == (1,)
        assert (await messages.get(5)).payload == b"after"
    await broker.finished()


async def test_publishes_while_disconnected_wait_for_the_connection() -> None:
    released = asyncio.Event()

    async def first(s: Session) -> None:
        await s.accept()

    async def second(s: Session) -> None:
        await released.wait()
        await s.accept()
        got = [await s.expect(Publish) for _ in range(2)]
        assert [(p.payload, p.qos) for p in got] == [(b"q1", 1), (b"q0", 0)]
        s.send(PubAck(got[0].packet_id))
        await s.expect(Disconnect)

    async with FakeBroker(first, second) as broker, client(broker) as c:
        await broker.finished(1)
        for _ in range(200):
            if not c.is_connected:
                break
            await asyncio.sleep(0.01)
        q1 = asyncio.ensure_future(c.publish("t", b"q1", 1))
        await asyncio.sleep(0)
        q0 = asyncio.ensure_future(c.publish("t", b"q0", 0))
        await asyncio.sleep(0.05)
        assert not q1.done() and not q0.done()
        released.set()
        assert await q1 == 0
        assert await q0 == 0
    await broker.finished()


async def test_disconnect_fails_what_is_pending() -> None:
    async def script(s: Session) -> None:
        await s.accept()
        await s.expect(Publish)
        await s.expect(Disconnect)

    async with FakeBroker(script) as broker:
        c = client(broker)
        await c.connect()
        pending = asyncio.ensure_future(c.publish("t", b"x", 1))
        stream = c.messages()
        await asyncio.sleep(0.05)
        await c.disconnect()
        with pytest.raises(ConnectionClosed):
            await pending
        with pytest.raises(StopAsyncIteration):
            await stream.get(1)
        with pytest.raises(InvalidState):
            await c.publish("t")
        await c.disconnect()  # twice is fine
    await broker.finished()


# --- backpressure --------------------------------------------------------------------------------


async def test_full_stream_stops_reading_until_read() -> None:
    count = 64  # of 64 KiB each: more than the socket buffers hold

    async def script(s: Session) -> None:
        await s.accept()
        for i in range(count):
            s.send(Publish("t", str(i).encode().ljust(2**16)))
            await s.writer.drain()
        await s.expect(Disconnect)

    async with FakeBroker(script) as broker:
        c = client(broker)
        stream = c.messages(max_queue=4)
        await c.connect()
        await asyncio.sleep(0.1)
        assert 4 <= len(stream) < count  # reading paused near the bound
        got = [int((await stream.get(5)).payload.rstrip()) for _ in range(count)]
        assert got == list(range(count))
        await c.disconnect()
    await broker.finished()


async def test_publish_waits_for_a_send_slot_and_keeps_order() -> None:
    async def script(s: Session) -> None:
        await s.accept(properties=Properties(receive_maximum=2))
        seen = []
        while len(seen) < 20:
            publish = await s.expect(Publish)
            seen.append(int(publish.payload))
            s.send(PubAck(publish.packet_id))
        assert seen == list(range(20))
        await s.expect(Disconnect)

    async with FakeBroker(script) as broker, client(broker, max_pending=3) as c:
        await asyncio.gather(*(c.publish("t", str(i).encode(), 1) for i in range(20)))
    await broker.finished()


# --- the outbox ---------------------------------------------------------------------------------------


async def test_outbox_keeps_publishes_across_a_crash(tmp_path: Path) -> None:
    store = tmp_path / "outbox.sqlite"
    got: list[bytes] = []

    async def crashing(s: Session) -> None:
        await s.accept()
        publishes = [await s.expect(Publish) for _ in range(3)]
        s.send(PubRec(publishes[1].packet_id))
        await s.expect(PubRel)  # and never PUBCOMP

    async def after_restart(s: Session) -> None:
        connect = await s.accept(session_present=True)
        assert connect.client_id == "c1" and not connect.clean_start
        while len(got) < 3:
            packet = await s.expect((Publish, PubRel))  # type: ignore[arg-type]
            if isinstance(packet, PubRel):
                got.append(b"released")
                s.send(PubComp(packet.packet_id))
            else:
                got.append(packet.payload)
                s.send(PubAck(packet.packet_id))
        await s.expect(Disconnect)

    async with FakeBroker(crashing, after_restart) as broker:
        first = client(broker, store=store, session_expiry=600, reconnect=False)
        await first.connect()
        tasks = [
            asyncio.ensure_future(first.publish("t", b"one", 1)),
            asyncio.ensure_future(first.publish("t", b"two", 2)),
            asyncio.ensure_future(first.publish("t", b"three", 1)),
        ]
        await broker.finished(1)
        # A crash: the process dies without DISCONNECT; the file is all that is left.
        for task in tasks:
            task.cancel()
        assert [e.topic for e in Outbox(store).entries()] == ["t", "t", "t"]
        first._link.abort()  # type: ignore[union-attr]
        await asyncio.sleep(0.05)
        await first.disconnect()

        with Outbox(store) as outbox:
            entries = outbox.entries()
            assert [(e.qos, e.released) for e in entries] == [(1, False), (2, True), (1, False)]
            assert outbox.client_id == "c1" and outbox.sequence == 3

        second = client(broker, client_id=None, store=store, clean_start=False, session_expiry=600)
        async with second:
            for _ in range(200):
                if len(Outbox(store)) == 0:
                    break
                await asyncio.sleep(0.01)
    assert sorted(got) == [b"one", b"released", b"three"]
    assert len(Outbox(store)) == 0


async def test_outbox_belongs_to_one_client(tmp_path: Path) -> None:
    store = Outbox(tmp_path / "o.sqlite")
    store.claim("first")
    with pytest.raises(ValueError, match="belongs to client 'first'"):
        Client("mqtt://127.0.0.1:1", client_id="second", store=store)._open_session()
    store.close()


async def test_full_outbox_makes_publish_wait(tmp_path: Path) -> None:
    released = asyncio.Event()

    async def script(s: Session) -> None:
        await s.accept()
        first = await s.expect(Publish)
        await released.wait()
        s.send(PubAck(first.packet_id))
        second = await s.expect(Publish)
        s.send(PubAck(second.packet_id))
        await s.expect(Disconnect)

    store = Outbox(tmp_path / "o.sqlite", max_messages=1)
    async with FakeBroker(script) as broker, client(broker, store=store) as c:
        one = asyncio.ensure_future(c.publish("t", b"1", 1))
        two = asyncio.ensure_future(c.publish("t", b"2", 1))
        await asyncio.sleep(0.05)
        assert len(store) == 1 and not two.done()
        released.set()
        await asyncio.gather(one, two)
    store.close()
    await broker.finished()


# --- request / response ---------------------------------------------------------------------------


async def test_request_response_round_trip() -> None:
    async def script(s: Session) -> None:
        await s.accept()
        sub = await s.expect(Subscribe)
        response_topic = sub.subscriptions[0].filter
        s.send(SubAck(sub.packet_id, (RC(1),)))
        request = await s.expect(Publish)
        assert request.properties.response_topic == response_topic
        s.send(PubAck(request.packet_id))
        s.send(Publish(response_topic, b"pong", 0, properties=Properties(correlation_data=b"wrong")))
        s.send(
            Publish(
                response_topic,
                b"pong",
                0,
                properties=Properties(correlation_data=request.properties.correlation_data),
            )
        )
        await s.expect(Disconnect)

    async with FakeBroker(script) as broker, client(broker) as c:
        response = await c.request("svc/ping", b"ping", timeout=5)
        assert response.payload == b"pong"
    await broker.finished()


async def test_request_needs_v5() -> None:
    with pytest.raises(InvalidState, match="MQTT 5"):
        await Client("mqtt://127.0.0.1:1", version=MQTT_3_1_1).request("t")


async def test_bad_urls() -> None:
    for url in ("http://x", "mqtt://", "tcp://x:1"):
        with pytest.raises(ValueError):
            Client(url)
    with pytest.raises(ValueError, match="ssl given"):
        import ssl

        Client("mqtt://x", ssl=ssl.create_default_context())
    c = Client("ws://u%40x:p%3A@host/mqtt?x=1")
    assert (c.host, c.port, c.path, c.scheme) == ("host", 80, "/mqtt?x=1", "ws")
    assert c._core_args is not None
    assert c._core_args["username"] == "u@x" and c._core_args["password"] == b"p:"


async def test_callbacks_that_fail_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def script(s: Session) -> None:
        await s.accept()
        s.send(Publish("t", b"x"))
        await s.expect(Disconnect)

    def broken(message: object) -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, "tether.mqtt"):
        async with FakeBroker(script) as broker, client(broker, on_message=broken):
            for _ in range(100):
                if "callback" in caplog.text:
                    break
                await asyncio.sleep(0.01)
    assert "boom" in caplog.text
    with contextlib.suppress(Exception):
        await broker.finished()


async def test_on_disconnect_sees_every_lost_connection() -> None:
    async def script(s: Session) -> None:
        await s.accept()
        await s.expect(Disconnect)

    seen: list[object] = []
    async with FakeBroker(script) as broker:
        c = client(broker, on_disconnect=lambda _c, error: seen.append(error))
        await c.connect()
        await c.disconnect()
    assert seen == [None]  # a disconnect of the client's own is clean


def test_the_password_of_a_url_stays_out_of_errors_and_logs() -> None:
    from tether.mqtt import Client

    with pytest.raises(ValueError) as info:
        Client("mqtt://user:s3cret@/no-host")
    assert "s3cret" not in str(info.value) and "mqtt:///no-host" in str(info.value)
    client = Client("mqtt://user:s3cret@127.0.0.1:1")
    assert client._shown_url == "mqtt://127.0.0.1:1"


async def test_a_burst_of_qos0_publishes_is_written_while_it_is_made() -> None:
    count = 600  # of 8 KiB each: more than the socket buffers hold

    async def script(s: Session) -> None:
        await s.accept()
        for i in range(count):
            publish = await s.expect(Publish)
            assert int(publish.payload.rstrip()) == i
        await s.expect(Disconnect)

    async with FakeBroker(script) as broker, client(broker, write_limit=2**12) as c:
        await c.publish("t", b"0".ljust(2**13))
        # The rest without yielding to the loop unless the write buffer is full: the burst
        # goes out in writes of 64 KiB, not all at the end of the turn.
        for i in range(1, count):
            await c.publish("t", str(i).encode().ljust(2**13))
            assert c.session.bytes_to_send < 2**16 + 2**14
    await broker.finished()


async def test_closed_streams_and_unknown_filters() -> None:
    async def script(s: Session) -> None:
        await s.accept()
        unsubscribe = await s.expect(Unsubscribe)
        s.send(UnsubAck(unsubscribe.packet_id, (RC.NO_SUBSCRIPTION_EXISTED,)))
        s.send(Publish("a", b"1"))
        await s.expect(Disconnect)

    async with FakeBroker(script) as broker, client(broker) as c:
        async with c.messages("a") as closed:
            pass
        everything = c.messages()
        await c.unsubscribe("never/subscribed")  # 0x11 is not a refusal
        assert (await everything.get(5)).payload == b"1"
        assert len(closed) == 0
        closed.close()  # a second close is harmless
    await broker.finished()
