"""tether.rpc.Server's MQTT channel (spec §2.3) through a real mosquitto, called by the asyncio
client and by the blocking client `tether.rpc.sync`; the server leaves the caller's client up."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tests.integration.mosquitto import Broker
from tests.rpc.handlers import make_dispatcher

import tether.rpc as rpc
import tether.rpc.sync as rpc_sync
from tether.errors import RpcError
from tether.mqtt import Client

pytestmark = pytest.mark.integration

WAIT = 10.0  # seconds any single step may take before the test fails


def blocking_calls(url: str) -> list[Any]:
    outcomes: list[Any] = []
    with rpc_sync.connect(url, timeout=WAIT) as client:
        outcomes.append(client.call("Sum", {"a": 1, "b": 2}))
        outcomes.append(client.call("RPC.Ping"))
        try:
            client.call("Fail")
        except RpcError as exc:
            outcomes.append((exc.code, exc.message))
        client.notify("Note", "sync")
        outcomes.append(client.call("Echo", ["after the note"]))
    return outcomes


async def test_server_serves_rpc_on_the_callers_mqtt_client(mosquitto: Broker) -> None:
    device_id = "tether_server_mqtt"
    dispatcher, notes = make_dispatcher(device_id)
    async with Client(mosquitto.url("mqtt"), client_id="server-mqtt-device") as client:
        server = rpc.Server(dispatcher, http=None, mqtt=client)
        async with server:
            assert server.mqtt_channel is not None
            assert server.mqtt_channel.filter == f"{device_id}/rpc/#"
            url = f"{mosquitto.url('mqtt')}/{device_id}"
            async with rpc.connect(url, timeout=WAIT) as caller:
                assert await caller.call("Sum", {"a": 2, "b": 3}) == 5
                assert await caller.call("RPC.Ping") == {"channel_info": ""}
            outcomes = await asyncio.to_thread(blocking_calls, url)
            assert outcomes == [3, {"channel_info": ""}, (-1, "nope"), ["after the note"]]
            assert notes == ["sync"]
            # The device id may come as an argument when the URL names none.
            with rpc_sync.connect(mosquitto.url("mqtt"), device_id=device_id, timeout=WAIT) as blocking:
                assert await asyncio.to_thread(blocking.call, "Sum", {"a": 0, "b": 1}) == 1
        assert server.mqtt_channel is None
        assert client.is_connected  # the caller's client is the caller's to close
