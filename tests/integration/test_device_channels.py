"""A device with MQTT and the dial-out WebSocket on, from its configuration alone (issue: device runtime).

The device (tether.device.runtime in this process) talks to a real mosquitto and
dials a test backend: RPC arrives over MQTT and over the dial-out link, the app
calls the backend, cloud events fire, and log lines go to ``debug.stdout_topic``.
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
from tests.device.test_runtime import write_app
from tests.integration.mosquitto import Broker

import tether.rpc as rpc
import tether.ws as ws
from tether.device.machine import default_route
from tether.device.runtime import Runtime
from tether.mqtt import Client

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

WAIT = 15.0


class Backend:
    """A dial-out target: records requests' replies, answers Backend.Hello."""

    def __init__(self) -> None:
        self.connections: asyncio.Queue[Any] = asyncio.Queue()
        self.replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.subprotocols: list[str | None] = []

    async def handler(self, connection: Any) -> None:
        self.subprotocols.append(connection.subprotocol)
        await self.connections.put(connection)
        async for message in connection:
            frame = json.loads(message)
            if frame.get("method") == "Backend.Hello":
                reply = {"id": frame["id"], "src": "backend", "dst": frame["src"], "result": "hello, device"}
                await connection.send(json.dumps(reply))
            elif "method" not in frame:
                await self.replies.put(frame)


async def test_mqtt_and_dial_out_from_configuration(mosquitto: Broker, tmp_path: Path) -> None:
    backend = Backend()
    events: list[tuple[str, Any]] = []
    async with ws.serve(backend.handler, "127.0.0.1", 0, subprotocols=["json-rpc"]) as server:
        runtime = Runtime(
            write_app(tmp_path / "app"),
            tmp_path / "state",
            [
                "http.enable=false",
                "mqtt.enable=true",
                f"mqtt.server=127.0.0.1:{mosquitto.port('mqtt')}",
                "debug.stdout_topic=tether_log_test/log",
                f"rpc.ws.server_address=ws://127.0.0.1:{server.port}/rpc",
            ],
            log_stream=io.StringIO(),
        )
        runtime.events.on("*", lambda name, data: events.append((name, data)))
        try:
            async with (
                Client(mosquitto.url("mqtt"), client_id="log-reader") as reader,
                reader.messages("tether_log_test/log") as logs,
            ):
                await reader.subscribe("tether_log_test/log")
                await runtime.start()
                device_id = runtime.config.device_id
                assert runtime.server is not None and runtime.server.http_port is None

                # RPC over MQTT, as `tether call --port mqtt://BROKER/DEVICE_ID` does it.
                async with rpc.connect(f"{mosquitto.url('mqtt')}/{device_id}", timeout=WAIT) as caller:
                    assert await caller.call("Greet", {"name": "mqtt"}) == "hello, mqtt"
                    info = await caller.call("Sys.GetInfo")
                    assert info["id"] == device_id

                # The backend calls the device over the dial-out link...
                link = await asyncio.wait_for(backend.connections.get(), WAIT)
                assert backend.subprotocols == ["json-rpc"]
                await link.send(
                    json.dumps({"id": 7, "src": "srv", "method": "Greet", "params": {"name": "srv"}})
                )
                reply = await asyncio.wait_for(backend.replies.get(), WAIT)
                assert (reply["id"], reply["dst"], reply["src"], reply["result"]) == (
                    7,
                    "srv",
                    device_id,
                    "hello, srv",
                )

                # ...and the app calls the backend over it.
                async with rpc.connect(f"{mosquitto.url('mqtt')}/{device_id}", timeout=WAIT) as caller:
                    assert await caller.call("Probe.CallBackend") == "hello, device"

                # Log lines reach the MQTT topic in the firmware's shape.
                runtime.device.log.info("a line for MQTT")  # type: ignore[union-attr]
                async with asyncio.timeout(WAIT):
                    async for message in logs:
                        if b"a line for MQTT" in message.payload:
                            break
                fields = message.payload.decode().split(" ", 3)
                assert fields[0] == device_id and fields[1].isdigit() and fields[3].startswith("2|")

                for _ in range(int(WAIT / 0.05)):
                    clouds = {data["cloud"] for name, data in events if name == "cloud.connected"}
                    if clouds == {"mqtt", "rpc.ws"}:
                        break
                    await asyncio.sleep(0.05)
                assert clouds == {"mqtt", "rpc.ws"}
                assert ("init.done", None) in events
                if default_route() is not None:
                    assert any(name == "net.connected" for name, _ in events)  # the default route
        finally:
            await runtime.close()
