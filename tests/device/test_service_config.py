"""tether.device.services.config: Config.Get/Set/Save through the dispatcher (mgos-rpc.md §5.3, §11, §12)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tether.config import Config, Schema
from tether.device.services.config import register
from tether.rpc import Dispatcher

DEVICE_ID = "tether_0A1B2C"


class Device:
    """A dispatcher with the Config service on a config in a state directory."""

    def __init__(self, state_dir: Path | None) -> None:
        schema = Schema.standard()
        schema.extend([["app.ratio", "d", 0.5, {}]])
        self.config = Config(schema, state_dir, mac="240AC40A1B2C")
        assert self.config.load() == []
        self.dispatcher = Dispatcher(self.config.device_id)
        self.reboots: list[float] = []
        self.changes: list[list[str]] = []
        register(self.dispatcher, self.config, reboot=self.reboots.append, changed=self.changes.append)

    async def raw(self, frame: str | bytes, user: str | None = None) -> bytes:
        reply = await self.dispatcher.handle(frame, channel="WS_in", user=user)
        assert reply is not None
        return reply

    async def call(self, method: str, params: Any = None, user: str | None = None) -> dict[str, Any]:
        frame: dict[str, Any] = {"id": 1, "src": "mos", "method": method}
        if params is not None:
            frame["params"] = params
        reply: dict[str, Any] = json.loads(await self.raw(json.dumps(frame), user))
        return reply


@pytest.fixture
def device(tmp_path: Path) -> Device:
    return Device(tmp_path)


def error(reply: dict[str, Any]) -> tuple[int, str]:
    assert "result" not in reply, reply
    return reply["error"]["code"], reply["error"]["message"]


async def test_item_5_set_without_save_then_get(device: Device, tmp_path: Path) -> None:
    reply = await device.raw(
        b'{"id":1099511627777,"src":"mos","method":"Config.Set","params":{"config":{"debug":{"level":3}}}}'
    )
    assert reply == b'{"id":1099511627777,"src":"tether_0A1B2C","dst":"mos","result":{"saved":false}}'
    assert device.changes == [["debug.level"]]
    assert not (tmp_path / "conf9.json").exists()
    reply = await device.raw(b'{"id":2,"src":"mos","method":"Config.Get","params":{"key":"debug.level"}}')
    assert reply == b'{"id":2,"src":"tether_0A1B2C","dst":"mos","result":3}'


async def test_item_5_errors_and_ignored_keys(device: Device) -> None:
    reply = await device.call("Config.Set", {"config": {"debug": {"level": "x"}}})
    assert error(reply) == (400, "invalid config value: [debug.level] is not a number")
    reply = await device.call("Config.Set", {"config": {"debug": {"level": 1.5}}})
    assert error(reply) == (400, "invalid config value: [debug.level] failed to parse [1.5]")
    assert device.config["debug.level"] == 2
    assert (await device.call("Config.Set", {"config": {"zzz": 1}}))["result"] == {"saved": False}
    assert device.changes == []  # nothing changed, nobody told
    assert (await device.call("Config.Set", {"key": "debug.level", "value": 4}))["result"] == {"saved": False}
    assert device.config["debug.level"] == 4
    assert device.changes == [["debug.level"]]
    assert error(await device.call("Config.Get", {"key": "no.such"})) == (404, "invalid config key")
    assert error(await device.call("Config.Set", {"key": "no.such", "value": 1})) == (
        404,
        "invalid config key",
    )
    reply = await device.raw(b'{"id":3,"src":"mos","method":"Config.Get","params":{"key":"wifi.sta.ssid"}}')
    assert reply == b'{"id":3,"src":"tether_0A1B2C","dst":"mos","result":""}'


async def test_set_params_errors(device: Device) -> None:
    assert error(await device.call("Config.Set")) == (400, "value is required")
    assert error(await device.call("Config.Set", {"key": "debug.level"})) == (400, "value is required")
    reply = await device.call("Config.Set", {"config": {"debug": {"level": 3}}, "level": 0})
    assert error(reply) == (400, "not allowed")
    reply = await device.call("Config.Set", {"config": {}, "level": 10})
    assert error(reply) == (400, "level 10 is not between 1 and 9")
    assert error(await device.call("Config.Get", {"level": -1})) == (400, "level -1 is not between 0 and 9")
    assert error(await device.call("Config.Set", {"config": {}, "save": "yes"}))[0] == 400
    assert (
        error(await device.call("Config.Set", {"config": 5}))[1]
        == "invalid config value: the config is not an object"
    )


async def test_item_6_save(device: Device, tmp_path: Path) -> None:
    reply = await device.call("Config.Set", {"config": {"debug": {"level": 3}}, "save": True})
    assert reply["result"] == {"saved": True}
    assert json.loads((tmp_path / "conf9.json").read_text()) == {"debug": {"level": 3}}
    assert device.reboots == []
    reply = await device.call(
        "Config.Set", {"config": {"debug": {"level": 4}}, "save": True, "try_once": True}
    )
    assert reply["result"] == {"saved": True}
    assert json.loads((tmp_path / "conf9.json.try").read_text()) == {"debug": {"level": 4}}
    assert json.loads((tmp_path / "conf9.json").read_text()) == {"debug": {"level": 3}}
    assert (await device.call("Config.Save", {"reboot": False}))["result"] == {"saved": True}
    assert json.loads((tmp_path / "conf9.json").read_text()) == {"debug": {"level": 4}}
    assert not (tmp_path / "conf9.json.try").exists()
    assert device.reboots == []


async def test_item_6_mos_config_set_no_reboot(device: Device, tmp_path: Path) -> None:
    # mos config-set debug.level=3 --no-reboot: Config.Get, then exactly this frame, and no Config.Save.
    reply = await device.raw(b'{"id":1234567890123,"src":"mos","method":"Config.Get"}')
    assert reply.startswith(b'{"id":1234567890123,"src":"tether_0A1B2C","dst":"mos","result":{"device":')
    frame = (
        b'{"src":"mos","id":1234567890124,"method":"Config.Set",'
        b'"params":{"config":{"debug":{"level":3}},"save":true}}'
    )
    reply = await device.raw(frame)
    assert reply == b'{"id":1234567890124,"src":"tether_0A1B2C","dst":"mos","result":{"saved":true}}'
    assert (tmp_path / "conf9.json").read_text() == '{\n  "debug": {\n    "level": 3\n  }\n}\n'


async def test_reboot_after_saving(device: Device) -> None:
    reply = await device.call("Config.Set", {"config": {"debug": {"level": 3}}, "save": True, "reboot": True})
    assert reply["result"] == {"saved": True}
    assert device.reboots == [0.5]
    await device.call("Config.Set", {"config": {"debug": {"level": 2}}, "reboot": True})  # no save, no reboot
    assert device.reboots == [0.5]
    assert (await device.call("Config.Save", {"reboot": True, "try_once": True}))["result"] == {"saved": True}
    assert device.reboots == [0.5, 0.5]


async def test_save_failure() -> None:
    device = Device(None)
    reply = await device.call("Config.Save")
    assert error(reply) == (-1, "error saving config: no state directory to save the configuration in")
    reply = await device.call("Config.Set", {"config": {"debug": {"level": 3}}, "save": True})
    assert error(reply)[0] == -1
    assert device.config["debug.level"] == 3  # the running config changed; only the file failed
    assert device.reboots == []


async def test_vendor_levels(device: Device, tmp_path: Path) -> None:
    await device.call("Config.Set", {"config": {"debug": {"level": 3}}})
    reply = await device.call("Config.Set", {"config": {"app": {"ratio": 2}}, "level": 5, "save": True})
    assert reply["result"] == {"saved": True}
    assert json.loads((tmp_path / "conf5.json").read_text()) == {"app": {"ratio": 2.0}}
    assert not (tmp_path / "conf9.json").exists()
    assert (await device.call("Config.Get", {"key": "debug.level", "level": 8}))["result"] == 2
    assert (await device.call("Config.Get", {"key": "app.ratio", "level": 0}))["result"] == 0.5
    reply = await device.raw(b'{"id":4,"method":"Config.Get","params":{"key":"app","level":5}}')
    assert reply == b'{"id":4,"src":"tether_0A1B2C","result":{"ratio":2.000000}}'


async def test_get_whole_tree(device: Device) -> None:
    reply = await device.raw(b'{"id":5,"src":"mos","method":"Config.Get"}')
    assert b'"mqtt":{"enable":false,' in reply
    assert b'"reconnect_timeout_min":2.000000,"reconnect_timeout_max":60.000000}' in reply
    assert b'"device":{"id":"tether_0A1B2C",' in reply
    assert b"null" not in reply and b'": ' not in reply and b", " not in reply
    result = json.loads(reply)["result"]
    assert result == device.config.tree(redact=True)
    assert list(result)[:3] == ["device", "conf_acl", "sys"]


async def test_secrets_only_in_clear_to_a_user(device: Device, tmp_path: Path) -> None:
    await device.call("Config.Set", {"config": {"wifi": {"sta": {"pass": "hunter22", "ssid": "home"}}}})
    anonymous = await device.call("Config.Get")
    assert anonymous["result"]["wifi"]["sta"]["pass"] == "********"
    assert anonymous["result"]["mqtt"]["pass"] == ""
    assert (await device.call("Config.Get", {"key": "wifi.sta.pass"}))["result"] == "********"
    assert (await device.call("Config.Get", {"key": "wifi.sta.pass"}, user="admin"))["result"] == "hunter22"
    admin = await device.call("Config.Get", user="admin")
    assert admin["result"]["wifi"]["sta"]["pass"] == "hunter22"
    # A whole tree read anonymously and written back keeps the secret.
    tree = anonymous["result"]
    tree["wifi"]["sta"]["ssid"] = "work"
    reply = await device.call("Config.Set", {"config": tree, "save": True})
    assert reply["result"] == {"saved": True}
    assert device.changes[-1] == ["wifi.sta.ssid"]
    assert device.config["wifi.sta.pass"] == "hunter22"
    saved = json.loads((tmp_path / "conf9.json").read_text())
    assert saved == {"wifi": {"sta": {"ssid": "work", "pass": "hunter22"}}}


async def test_descriptions(device: Device) -> None:
    reply = await device.call("RPC.Describe", {"name": "Config.Set"})
    assert reply["result"]["args_fmt"] == (
        "{config: %M, key: %Q, value: %M, level: %d, save: %B, try_once: %B, reboot: %B}"
    )
    names = (await device.call("RPC.List"))["result"]
    assert names[:3] == ["Config.Save", "Config.Set", "Config.Get"]


async def test_notifications_get_no_reply(device: Device) -> None:
    frame = b'{"src":"mos","method":"Config.Set","params":{"config":{"debug":{"level":3}}}}'
    assert await device.dispatcher.handle(frame, channel="WS_in") is None
    assert device.config["debug.level"] == 3
