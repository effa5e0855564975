"""RPC over MQTT (spec §2.3) through a real mosquitto: the device channel and the client
transport, replies on ``<src>/rpc``, auth and ACL, bad input."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.mosquitto import Broker
from tests.rpc.handlers import make_dispatcher

from tether.errors import ConnectionClosed
from tether.mqtt import Client
from tether.rpc import Acl, CallFailed, CallResult, DigestAuth, Dispatcher, RpcClientCore
from tether.rpc.auth import digest_ha1
from tether.rpc.channels.mqtt import (
    MqttChannel,
    MqttTransport,
    open_mqtt_transport,
    response_src,
    serve_mqtt,
)

pytestmark = pytest.mark.integration

WAIT = 10.0  # seconds any single step may take before the test fails


@contextlib.asynccontextmanager
async def device(broker: Broker, dispatcher: Dispatcher, **kwargs: Any) -> AsyncIterator[MqttChannel]:
    async with (
        Client(broker.url("mqtt"), client_id=f"dev-{id(dispatcher)}") as client,
        MqttChannel(dispatcher, client, **kwargs) as channel,
    ):
        yield channel


@contextlib.asynccontextmanager
async def caller(broker: Broker, device_id: str, name: str = "c") -> AsyncIterator[MqttTransport]:
    transport = await open_mqtt_transport(
        f"{broker.url('mqtt')}/{device_id}", src=response_src(device_id, name), timeout=WAIT
    )
    try:
        yield transport
    finally:
        await transport.close()


async def call(
    transport: MqttTransport, core: RpcClientCore, method: str, params: Any = None
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


async def test_calls_and_replies_on_the_src_topic(mosquitto: Broker, topic: str) -> None:
    device_id = f"{topic}/tether_0A1B2C"
    dispatcher, _ = make_dispatcher(device_id)
    async with device(mosquitto, dispatcher), caller(mosquitto, device_id, "mos-1") as transport:
        assert transport.src == f"{device_id}/rpc-resp/mos-1"
        core = RpcClientCore(transport.src, dst=device_id)  # as mos: dst is the device id
        result = await call(transport, core, "Echo", {"a": [1, "é"]})
        assert isinstance(result, CallResult) and result.result == {"a": [1, "é"]}
        result = await call(transport, core, "RPC.Ping")
        assert isinstance(result, CallResult) and result.result == {"channel_info": ""}
        failed = await call(transport, core, "No.Such")
        assert isinstance(failed, CallFailed) and failed.error.code == 404
        # The reply frame itself, byte for byte, on <src>/rpc.
        await transport.send(b'{"id":1099511627777,"src":"' + transport.src.encode() + b'","method":"Fail"}')
        reply = await asyncio.wait_for(transport.recv(), WAIT)
        assert reply == (
            b'{"id":1099511627777,"src":"'
            + device_id.encode()
            + b'","dst":"'
            + transport.src.encode()
            + b'",'
            b'"error":{"code":-1,"message":"nope"}}'
        )
        assert "MqttTransport" in repr(transport)


async def test_same_results_as_the_dispatcher_directly(mosquitto: Broker, topic: str) -> None:
    device_id = f"{topic}/dev"
    dispatcher, _ = make_dispatcher(device_id)
    async with device(mosquitto, dispatcher), caller(mosquitto, device_id) as transport:
        src = json.dumps(transport.src).encode()
        for request in (
            b'{"id":1234567890123,"src":' + src + b',"method":"Echo","params":{"a":1}}',
            b'{"id":"q1","src":' + src + b',"tag":"row-4","method":"rpc.list"}',
            b'{"id":9223372036854775807,"src":' + src + b',"method":"Echo","args":[1.50e3,null]}',
            b'{"id":2,"src":' + src + b',"method":"RPC.Describe","params":{}}',
        ):
            await transport.send(request)
            got = await asyncio.wait_for(transport.recv(), WAIT)
            assert got == await dispatcher.handle(request, channel="MQTT", peer=""), request


async def test_two_callers_get_their_own_replies(mosquitto: Broker, topic: str) -> None:
    device_id = f"{topic}/dev"
    dispatcher, _ = make_dispatcher(device_id)
    async with (
        device(mosquitto, dispatcher),
        caller(mosquitto, device_id, "one") as one,
        caller(mosquitto, device_id, "two") as two,
    ):

        async def ten_calls(transport: MqttTransport, name: str) -> list[Any]:
            core = RpcClientCore(transport.src)
            ids = [core.call("Echo", [name, i]) for i in range(10)]
            await asyncio.gather(*(transport.send(frame) for frame in core.frames_to_send()))
            results: dict[int, Any] = {}
            while len(results) < len(ids):
                core.receive_frame(await asyncio.wait_for(transport.recv(), WAIT))
                for event in core.events_received():
                    assert isinstance(event, CallResult)
                    results[event.id] = event.result
            return [results[i] for i in ids]

        got_one, got_two = await asyncio.gather(ten_calls(one, "one"), ten_calls(two, "two"))
        assert got_one == [["one", i] for i in range(10)]
        assert got_two == [["two", i] for i in range(10)]
        # Nothing of the other's arrived: the next frame each gets is the answer to its next call.
        for transport in (one, two):
            await transport.send(
                b'{"id":77,"src":"' + transport.src.encode() + b'","method":"Echo","params":0}'
            )
            assert json.loads(await asyncio.wait_for(transport.recv(), WAIT))["id"] == 77


async def test_auth_and_acl(mosquitto: Broker, topic: str, tmp_path: Path) -> None:
    device_id = f"{topic}/dev"
    path = tmp_path / "htdigest"
    path.write_text(
        f"admin:RPC:{digest_ha1('admin', 'RPC', 'secret')}\nbob:RPC:{digest_ha1('bob', 'RPC', 'b0b')}\n"
    )
    acl = Acl.parse([{"method": "Config.*", "acl": "admin"}, {"method": "*", "acl": "*"}])
    dispatcher, _ = make_dispatcher(device_id, acl=acl, auth=DigestAuth(path))
    async with device(mosquitto, dispatcher), caller(mosquitto, device_id) as transport:
        failed = await call(transport, RpcClientCore(transport.src), "Config.Get")
        assert isinstance(failed, CallFailed) and failed.error.code == 401
        assert json.loads(failed.error.message)["auth_type"] == "digest"
        core = RpcClientCore(transport.src, credentials=("admin", "secret"))
        ok = await call(transport, core, "Config.Get")
        assert isinstance(ok, CallResult) and ok.result == {"user": "admin"}
        core = RpcClientCore(transport.src, credentials=("bob", "b0b"))
        denied = await call(transport, core, "Config.Get")
        assert isinstance(denied, CallFailed) and (denied.error.code, denied.error.message) == (
            403,
            "unauthorized",
        )
        ok = await call(transport, RpcClientCore(transport.src), "Echo", 1)
        assert isinstance(ok, CallResult) and ok.result == 1


async def test_bad_input_gets_no_reply_and_the_channel_keeps_serving(mosquitto: Broker, topic: str) -> None:
    device_id = f"{topic}/dev"
    dispatcher, notes = make_dispatcher(device_id)
    async with device(mosquitto, dispatcher), caller(mosquitto, device_id) as transport:
        src = json.dumps(transport.src).encode()
        for bad in (
            b'{"id":1,"src":' + src + b',"method":',  # invalid JSON
            b"\xff\xfe",  # not UTF-8
            b'[{"id":2,"src":' + src + b',"method":"RPC.List"}]',  # no batching
            b'{"id":[3],"src":' + src + b',"method":"RPC.List"}',  # wrong id type
            b'{"id":4,"method":"RPC.List"}',  # no src: nowhere to reply
            b'{"id":5,"src":' + src + b',"dst":"other","method":"RPC.List"}',  # another device
            b'{"id":6,"src":' + src + b',"method":"Echo","params":"' + b"x" * 5000 + b'"}',  # over 4096
            b'{"src":' + src + b',"method":"Note","params":"n"}',  # a notification
            b'{"method":"Note","params":"no src"}',  # a notification without src still runs
            b'{"id":7,"src":' + src + b',"result":1}',  # a response
            b"",
        ):
            await transport.send(bad)
        await transport.send(b'{"id":10,"src":' + src + b',"method":"Echo","params":"ok"}')
        reply = await asyncio.wait_for(transport.recv(), WAIT)
        assert json.loads(reply) == {"id": 10, "src": device_id, "dst": transport.src, "result": "ok"}
        assert notes == ["n", "no src"]


async def test_method_from_the_topic(mosquitto: Broker, topic: str) -> None:
    # Spec §11 test 11: {"id":8,"src":"c1"} on <id>/rpc/<Method> is answered on c1/rpc.
    device_id = f"{topic}/tether_0A1B2C"
    dispatcher, _ = make_dispatcher(device_id)
    src = f"{topic}/c1"
    async with device(mosquitto, dispatcher), Client(mosquitto.url("mqtt"), client_id=f"raw-{topic}") as raw:
        replies = raw.messages(f"{src}/rpc")
        await raw.subscribe(f"{src}/rpc", qos=1)
        await raw.publish(f"{device_id}/rpc/RPC.Ping", json.dumps({"id": 8, "src": src}), qos=1)
        message = await replies.get(WAIT)
        assert message.payload == (
            b'{"id":8,"src":"'
            + device_id.encode()
            + b'","dst":"'
            + src.encode()
            + b'","result":{"channel_info":""}}'
        )
        # The topic's method wins over the payload's; params and id come from the payload.
        await raw.publish(
            f"{device_id}/rpc/Echo",
            b'{"id":"x","src":"' + src.encode() + b'","method":"Fail","params":[2]} ',
            qos=1,
        )
        assert (await replies.get(WAIT)).payload.endswith(b'"result":[2]}')
        await raw.publish(f"{device_id}/rpc/Echo", b"{}", qos=1)  # no id, no src: runs, no reply
        await raw.publish(f"{device_id}/rpc/Echo", b"nope", qos=1)  # not a frame
        await raw.publish(f"{device_id}/rpc/Echo", b'{"id":9,"src":"' + src.encode() + b'"}', qos=1)
        assert json.loads((await replies.get(WAIT)).payload)["id"] == 9


async def test_without_wildcard_only_the_bare_topic(mosquitto: Broker, topic: str) -> None:
    device_id = f"{topic}/dev"
    dispatcher, _ = make_dispatcher(device_id)
    async with (
        device(mosquitto, dispatcher, wildcard=False) as channel,
        caller(mosquitto, device_id) as transport,
    ):
        assert channel.filter == f"{device_id}/rpc"
        result = await call(transport, RpcClientCore(transport.src), "Echo", "bare")
        assert isinstance(result, CallResult) and result.result == "bare"


async def test_serve_mqtt_ends_with_the_client(mosquitto: Broker, topic: str) -> None:
    device_id = f"{topic}/dev"
    dispatcher, _ = make_dispatcher(device_id)
    client = Client(mosquitto.url("mqtt"), client_id=f"serve-{topic}")
    await client.connect()
    server = asyncio.create_task(serve_mqtt(dispatcher, client))
    async with caller(mosquitto, device_id) as transport:
        result = await call(transport, RpcClientCore(transport.src), "Echo", 5)
        assert isinstance(result, CallResult) and result.result == 5
    await client.disconnect()
    await asyncio.wait_for(server, WAIT)


async def test_transport_errors(mosquitto: Broker, topic: str) -> None:
    with pytest.raises(ValueError, match="not mqtt"):
        await open_mqtt_transport("ws://127.0.0.1/dev", src="s", timeout=WAIT)
    with pytest.raises(ValueError, match="must not be empty"):
        await open_mqtt_transport(mosquitto.url("mqtt"), src="s", timeout=WAIT)
    with pytest.raises(ValueError, match="contains"):
        await open_mqtt_transport(f"{mosquitto.url('mqtt')}/dev", src="a/+", timeout=WAIT)
    with pytest.raises(ValueError, match="device_id"):
        MqttChannel(Dispatcher("d"), Client(mosquitto.url("mqtt")), "a/#")
    with pytest.raises(ValueError, match="qos"):
        MqttChannel(Dispatcher("d"), Client(mosquitto.url("mqtt")), qos=3)
    async with caller(mosquitto, f"{topic}/dev") as transport:
        pending = asyncio.create_task(transport.recv())
        await asyncio.sleep(0)
        await transport.close()
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(pending, WAIT)
        with pytest.raises(ConnectionClosed):
            await transport.send(b"{}")
