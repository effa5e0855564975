"""``Config.Schema``: what the dashboard's settings form is made from (tether.device.services.config)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tether.config import Config, Schema
from tether.device.services import config as config_service
from tether.rpc import Dispatcher, encode_request


async def call(dispatcher: Dispatcher, method: str, params: Any = None) -> Any:
    reply = await dispatcher.handle(encode_request(method, params, id=1), channel="WS_in")
    assert reply is not None
    frame = json.loads(reply)
    assert "error" not in frame, frame
    return frame["result"]


async def test_schema_lists_entries_marks_secrets_and_holds_no_values(tmp_path: Path) -> None:
    schema = Schema.standard()
    schema.extend(
        [
            ["app", "o", {"title": "App settings"}],
            ["app.period_ms", "i", 1000, {"title": "Sampling period"}],
            ["app.api_token", "s", "", {"title": "API token"}],
            ["app.label", "s", "pump", {"title": "Label", "read_only": True}],
        ]
    )
    config = Config(schema, tmp_path, mac="240AC40A1B2C")
    config.load()
    config.set("t0ps3cret", key="app.api_token", level=9)
    config.set("wifi-password", key="wifi.sta.pass", level=9)
    dispatcher = Dispatcher("dev")
    config_service.register(dispatcher, config, reboot=lambda delay: None, changed=lambda paths: None)

    entries = await call(dispatcher, "Config.Schema")
    by_path = {path: (kind, params) for path, kind, params in entries}
    assert [path for path, _, _ in entries] == [path for path, _, _ in schema.entries()]
    assert by_path["app"] == ("o", {"title": "App settings"})
    assert by_path["app.period_ms"] == ("i", {"title": "Sampling period"})
    assert by_path["app.label"] == ("s", {"title": "Label", "read_only": True})
    assert by_path["app.api_token"] == ("s", {"title": "API token", "secret": True})
    assert by_path["wifi.sta.pass"] == ("s", {"title": "Password", "type": "password", "secret": True})
    assert "secret" not in by_path["wifi.sta.ssid"][1]
    text = json.dumps(entries)
    assert "t0ps3cret" not in text and "wifi-password" not in text and "1000" not in text
    described = await call(dispatcher, "RPC.Describe", {"name": "Config.Schema"})
    assert "settings form" in described["description"]
