"""tether.config.levels: levels, conf_acl, placeholders, set/assign, load problems, save (§5.2, §5.3)."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from tether.config import REDACTED, Config, ConfigError, Schema, UnknownKey, check_access, expand_placeholders

MAC = "240AC40A1B2C"


def make(state_dir: Path | None, *entries: list[Any]) -> Config:
    schema = Schema.standard()
    schema.extend([["app.name", "s", {}], ["app.ratio", "d", 0.5, {}], ["app.count", "ui", 1, {}], *entries])
    return Config(schema, state_dir, mac=MAC)


def write(path: Path, document: Any) -> None:
    path.write_text(document if isinstance(document, str) else json.dumps(document))


# Reading.


def test_defaults_and_lookups() -> None:
    config = make(None)
    assert config.load() == []
    assert config.get("debug.level") == 2 == config["debug.level"]
    assert config.get("mqtt.reconnect_timeout_max") == 60.0
    assert config.get("rpc.uart") == {
        "enable": False,
        "device": "",
        "baud_rate": 115200,
        "fc_enable": False,
        "wait_for_start_frame": True,
    }
    tree = config.tree()
    assert list(tree)[:5] == ["device", "conf_acl", "sys", "debug", "rpc"]
    assert tree["app"] == {"name": "", "ratio": 0.5, "count": 1}
    assert config.get() == tree == config.get("")
    for key in ("no.such", "debug.level.x", "debug.", "app.name.x"):
        with pytest.raises(UnknownKey) as caught:
            config.get(key)
        assert (caught.value.path, str(caught.value)) == (key, "invalid config key")
    for level in (-1, 10, True):
        with pytest.raises(ValueError, match="level"):
            config.get("debug.level", level=level)


def test_mac_must_be_12_hex_digits() -> None:
    assert Config(Schema.standard(), None, mac="240ac40a1b2c").mac == MAC
    for bad in ("", "24:0A:C4:0A:1B:2C", "240AC40A1B2", "240AC40A1B2G"):
        with pytest.raises(ValueError, match="mac"):
            Config(Schema.standard(), None, mac=bad)


def test_placeholders() -> None:
    config = make(None)
    assert config.device_id == "tether_0A1B2C" == config.get("device.id")
    assert config.get("wifi.ap.ssid") == "Tether_??????"  # §5.2: expanded at use, not in storage
    config.set({"debug": {"stdout_topic": "??????/log", "stderr_topic": "x/??"}, "app": {"name": "a??"}})
    assert (config["debug.stdout_topic"], config["debug.stderr_topic"]) == ("0A1B2C/log", "x/2C")
    assert config.get("app.name") == "a??"
    assert config.layer(9)["debug.stdout_topic"] == "??????/log"  # stored unexpanded
    config.set({"device": {"id": "dev_???"}})
    assert config.device_id == "dev_???"  # odd count: left as it is
    config.set({"device": {"id": "dev_????"}})
    assert config.set(config.tree()) == []  # the expanded id sent back keeps the placeholders
    assert config.layer(9)["device.id"] == "dev_????"
    assert config.set({"device": {"id": "dev_1B2D"}}) == ["device.id"]
    assert config.layer(9)["device.id"] == "dev_1B2D"
    assert Config(Schema.standard(), None).device_id == "tether_000000"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("esp32_??????", "esp32_0A1B2C"),
        ("??", "2C"),
        ("?a?", "2aC"),
        ("?", "?"),
        ("???", "???"),
        ("?" * 12, MAC),
        ("?" * 14, "?" * 14),
        ("plain", "plain"),
    ],
)
def test_expand_placeholders(text: str, expected: str) -> None:
    assert expand_placeholders(text, MAC) == expected


def test_redaction() -> None:
    config = make(None, ["app.api_token", "s", {}])
    config.set({"wifi": {"sta": {"pass": "hunter22"}}, "app": {"api_token": "t0k"}})
    tree = config.tree(redact=True)
    assert tree["wifi"]["sta"]["pass"] == REDACTED
    assert tree["app"]["api_token"] == REDACTED
    assert tree["mqtt"]["pass"] == ""  # unset stays ""
    assert tree["wifi"]["sta"]["ssid"] == ""
    assert config.get("wifi.sta.pass", redact=True) == REDACTED
    assert config.get("wifi.sta.pass") == "hunter22"
    assert "hunter22" not in repr(config) and "t0k" not in repr(config)
    assert repr(config) == "<Config 'tether_0A1B2C' in None>"


def test_repr_without_a_device_id(tmp_path: Path) -> None:
    schema = Schema()
    schema.extend([["a.b", "i", {}]])
    assert repr(Config(schema, tmp_path)) == f"<Config '?' in {tmp_path}>"


def test_dumps() -> None:
    config = make(None)
    assert config.dumps(config.get("mqtt.reconnect_timeout_min")) == "2.000000"
    assert config.dumps(config.get("app")) == '{"name":"","ratio":0.500000,"count":1}'
    assert (
        config.dumps({"s": 'é"\n', "b": True, "n": None, "e": {}}) == '{"s":"é\\"\\n","b":true,"n":"","e":{}}'
    )
    text = config.dumps(config.tree())
    assert "null" not in text and '"reconnect_timeout_max":60.000000' in text
    assert json.loads(text) == config.tree()
    with pytest.raises(TypeError, match="list"):
        config.dumps([1])


# Changing.


def test_set_applies_and_reports_changes() -> None:
    config = make(None)
    changed = config.set(
        {"app": {"count": 5, "name": "x"}, "debug": {"level": 2}, "zzz": 1, "wifi": {"q": 1}}
    )
    assert changed == ["app.name", "app.count"]  # debug.level 2 is no change; schema order
    assert config["app.count"] == 5
    assert config.set({"app": {"count": 5}}) == []
    assert config.set(7, key="app.count") == ["app.count"]
    assert config.set({"ratio": 1}, key="app") == ["app.ratio"]
    assert config["app.ratio"] == 1.0
    assert config.set("", key="app.name") == ["app.name"]
    assert config.set(None, key="app.name") == []  # null for a string is unset too
    assert config.set({"debug.level": 4}) == []  # a dotted name inside a tree is no key
    assert config.set({"": 1, "debug": {}}) == []


def test_set_checks_everything_first() -> None:
    config = make(None)
    with pytest.raises(ConfigError) as caught:
        config.set({"app": {"count": 9, "name": "y"}, "debug": {"level": "x"}})
    assert (caught.value.path, str(caught.value)) == ("debug.level", "[debug.level] is not a number")
    assert config["app.count"] == 1 and config["app.name"] == ""
    assert config.layer(9) == {}
    cases = [
        ({"debug": {"level": 1.5}}, "[debug.level] failed to parse [1.5]"),
        ({"rpc": {"enable": 1}}, "[rpc.enable] is not a boolean"),
        ({"app": {"name": 3}}, "[app.name] is not a string"),
        ({"app": {"count": -1}}, "[app.count] failed to parse [-1]"),
        ({"debug": 3}, "[debug] is not an object"),
        ({"debug": {"level": {"a": 1}}}, "[debug.level] is not a number"),
        ([1], "the config is not an object"),
    ]
    for value, message in cases:
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            config.set(value)
    with pytest.raises(ConfigError, match=r"\[wifi.sta\] is not an object"):
        config.set("x", key="wifi.sta")
    with pytest.raises(UnknownKey):
        config.set(1, key="no.such")
    for level in (0, 10):
        with pytest.raises(ValueError, match="level"):
            config.set({}, level=level)
    assert config.layer(9) == {}


def test_set_keeps_a_secret_sent_back_redacted() -> None:
    config = make(None)
    config.set({"wifi": {"sta": {"pass": "hunter22", "ssid": "home"}}})
    tree = config.tree(redact=True)
    tree["wifi"]["sta"]["ssid"] = "work"
    assert config.set(tree, keep_redacted=True) == ["wifi.sta.ssid"]
    assert config["wifi.sta.pass"] == "hunter22"
    assert config.set(REDACTED, key="wifi.sta.pass") == ["wifi.sta.pass"]  # without the flag, a value
    assert config["wifi.sta.pass"] == REDACTED


def test_assign() -> None:
    config = make(None)
    assert config.assign("debug.level", "3") == ["debug.level"]
    assert config["debug.level"] == 3
    assert config.assign_all([("mqtt.enable", "true"), ("app.ratio", "2"), ("wifi.sta.ssid", "a=b")]) == [
        "mqtt.enable",
        "wifi.sta.ssid",
        "app.ratio",
    ]
    assert (config["mqtt.enable"], config["app.ratio"], config["wifi.sta.ssid"]) == (True, 2.0, "a=b")
    with pytest.raises(UnknownKey) as unknown:
        config.assign("debug.levle", "3")
    assert unknown.value.path == "debug.levle"
    with pytest.raises(ConfigError, match=r"\[debug\] is an object"):
        config.assign("debug", "3")
    before = config.layer(9)
    with pytest.raises(ConfigError, match=r"\[debug.level\] failed to parse \[x\]"):
        config.assign_all([("app.name", "changed"), ("debug.level", "x")])
    with pytest.raises(UnknownKey):
        config.assign_all([("app.name", "changed"), ("zzz", "1")])
    assert config.layer(9) == before


def test_levels(tmp_path: Path) -> None:
    write(tmp_path / "conf1.json", {"debug": {"level": 1}, "app": {"name": "vendor1"}})
    write(tmp_path / "conf5.json", {"app": {"name": "vendor5", "count": 5}})
    write(tmp_path / "conf9.json", {"app": {"count": 9}})
    config = make(tmp_path)
    assert config.load() == []
    assert (config["debug.level"], config["app.name"], config["app.count"]) == (1, "vendor5", 9)
    assert config.get("app", level=0) == {"name": "", "ratio": 0.5, "count": 1}
    assert config.get("app", level=4) == {"name": "vendor1", "ratio": 0.5, "count": 1}
    assert config.get("app.count", level=8) == 5
    assert config.layer(5) == {"app.name": "vendor5", "app.count": 5}
    assert config.layer(0)["debug.level"] == 2
    # A change below an override does not change the running value.
    assert config.set({"app": {"count": 6}}, level=5) == []
    assert config.get("app.count", level=5) == 6
    assert config.set({"app": {"name": "vendor5b"}}, level=5) == ["app.name"]
    assert config.save(level=5) == tmp_path / "conf5.json"
    assert json.loads((tmp_path / "conf5.json").read_text()) == {"app": {"name": "vendor5b", "count": 6}}
    # Values equal to the levels below are left out of the file.
    config.set({"app": {"count": 6}, "debug": {"level": 3}})
    config.save()
    assert json.loads((tmp_path / "conf9.json").read_text()) == {"debug": {"level": 3}}


def test_conf_acl_of_lower_levels_filters_loading(tmp_path: Path) -> None:
    write(tmp_path / "conf1.json", {"conf_acl": "wifi.*,debug.level"})
    write(
        tmp_path / "conf9.json", {"debug": {"level": 4, "udp_log_level": 1}, "wifi": {"sta": {"ssid": "x"}}}
    )
    config = make(tmp_path)
    assert config.load() == []
    assert (config["debug.level"], config["debug.udp_log_level"], config["wifi.sta.ssid"]) == (4, 3, "x")
    # Config.Set uses the running ACL: denied keys are skipped, silently.
    assert config.set({"app": {"name": "n"}, "debug": {"level": 1}}) == ["debug.level"]
    assert config["app.name"] == ""
    with pytest.raises(ConfigError, match="may not be changed"):
        config.assign("app.name", "n")
    # conf_acl itself is now denied, so level 9 cannot unlock it.
    assert config.set({"conf_acl": "*"}) == []


def test_a_level_may_lock_what_is_above_it(tmp_path: Path) -> None:
    write(tmp_path / "conf3.json", {"conf_acl": "-debug.*,*", "debug": {"level": 0}})
    write(tmp_path / "conf4.json", {"debug": {"level": 4}, "app": {"name": "four"}})
    config = make(tmp_path)
    assert config.load() == []
    assert (config["debug.level"], config["app.name"]) == (0, "four")


@pytest.mark.parametrize(
    ("acl", "key", "allowed"),
    [
        ("*", "wifi.sta.ssid", True),
        ("", "wifi.sta.ssid", False),
        ("wifi.*,debug.level", "wifi.sta.ssid", True),
        ("wifi.*,debug.level", "debug.level", True),
        ("wifi.*,debug.level", "debug.levels", False),
        ("wifi.*,debug.level", "mqtt.pass", False),
        ("-debug.*,*", "debug.level", False),
        ("-debug.*,*", "mqtt.enable", True),
        ("+mqtt.*,-*", "mqtt.enable", True),
        ("+mqtt.*,-*", "wifi.ap.ssid", False),
        ("debug.?evel", "debug.level", True),
        ("DEBUG.LEVEL", "debug.level", True),
        ("mqtt.*|wifi.*", "wifi.ap.ssid", True),
        ("a.**", "a.b.c", True),
        (" wifi.* , debug.level ", "debug.level", True),
        ("wifi", "wifi.sta.ssid", False),
    ],
)
def test_check_access(acl: str, key: str, allowed: bool) -> None:
    assert check_access(acl, key) is allowed


# Loading problems.


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "invalid JSON"),
        (b"\xff\xfe{}", "invalid JSON"),
        ("[1, 2]", "the config is not an object"),
        ('"text"', "the config is not an object"),
        ('{"debug": {"level": "x"}}', "[debug.level] is not a number"),
        ('{"debug": 3}', "[debug] is not an object"),
        ('{"wifi": {"sta": {"pass": 1234}}}', "[wifi.sta.pass] is not a string"),
        ("[" * 100_000, "invalid JSON"),
    ],
)
def test_a_bad_user_file_costs_its_level_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str | bytes, reason: str
) -> None:
    write(tmp_path / "conf1.json", {"app": {"name": "vendor"}})
    bad = tmp_path / "conf9.json"
    if isinstance(content, bytes):
        bad.write_bytes(content)
    else:
        bad.write_text(content)
    config = make(tmp_path)
    with caplog.at_level(logging.ERROR, logger="tether.config"):
        problems = config.load()
    assert problems == [f"{bad}: {reason}; moved to conf9.json.corrupt"]
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("tether.config", logging.ERROR, f"configuration file skipped: {problems[0]}")
    ]
    assert config["app.name"] == "vendor" and config["debug.level"] == 2
    assert not bad.exists()
    aside = tmp_path / "conf9.json.corrupt"
    assert aside.read_bytes() == (content if isinstance(content, bytes) else content.encode())
    assert "1234" not in problems[0]


def test_a_second_bad_file_gets_a_numbered_name(tmp_path: Path) -> None:
    (tmp_path / "conf9.json.corrupt").write_text("first")
    (tmp_path / "conf9.json.corrupt.1").write_text("second")
    (tmp_path / "conf9.json").write_text("third")
    config = make(tmp_path)
    assert config.load() == [f"{tmp_path / 'conf9.json'}: invalid JSON; moved to conf9.json.corrupt.2"]
    assert (tmp_path / "conf9.json.corrupt.2").read_text() == "third"
    assert (tmp_path / "conf9.json.corrupt").read_text() == "first"


def test_a_bad_vendor_file_is_skipped_too(tmp_path: Path) -> None:
    (tmp_path / "conf2.json").write_text("{")
    write(tmp_path / "conf9.json", {"debug": {"level": 3}})
    config = make(tmp_path)
    assert config.load() == [f"{tmp_path / 'conf2.json'}: invalid JSON; moved to conf2.json.corrupt"]
    assert config["debug.level"] == 3


def test_an_unreadable_file_is_reported_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "conf9.json").mkdir()
    config = make(tmp_path)
    [problem] = config.load()
    assert problem.startswith(f"{tmp_path / 'conf9.json'}: cannot read it: ")
    assert (tmp_path / "conf9.json").is_dir()


def test_a_file_that_cannot_be_moved_aside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "conf9.json").write_text("{")

    def refuse(src: Any, dst: Any) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "rename", refuse)
    config = make(tmp_path)
    assert config.load() == [
        f"{tmp_path / 'conf9.json'}: invalid JSON; cannot move it aside: Permission denied"
    ]


def test_unknown_keys_in_a_file_are_ignored(tmp_path: Path) -> None:
    write(tmp_path / "conf9.json", {"zzz": {"a": 1}, "debug": {"level": 3, "nope": True}})
    config = make(tmp_path)
    assert config.load() == []
    assert config.layer(9) == {"debug.level": 3}


def test_load_starts_afresh(tmp_path: Path) -> None:
    config = make(tmp_path)
    config.set({"debug": {"level": 4}})
    assert config.load() == []
    assert config["debug.level"] == 2


# One-boot files.


def test_try_once(tmp_path: Path) -> None:
    config = make(tmp_path)
    config.set({"debug": {"level": 3}})
    config.save()
    config.set({"debug": {"level": 4}})
    assert config.save(try_once=True) == tmp_path / "conf9.json.try"
    assert json.loads((tmp_path / "conf9.json").read_text()) == {"debug": {"level": 3}}
    # The next load uses the .try and deletes it; the one after goes back.
    again = make(tmp_path)
    assert again.load() == []
    assert again["debug.level"] == 4
    assert not (tmp_path / "conf9.json.try").exists()
    assert again.load() == [] and again["debug.level"] == 3


def test_a_normal_save_deletes_a_stale_try(tmp_path: Path) -> None:
    config = make(tmp_path)
    config.set({"debug": {"level": 4}})
    config.save(try_once=True)
    config.save()
    assert not (tmp_path / "conf9.json.try").exists()


def test_a_bad_try_falls_back_to_the_plain_file(tmp_path: Path) -> None:
    write(tmp_path / "conf9.json", {"debug": {"level": 3}})
    (tmp_path / "conf9.json.try").write_text('{"debug": {"level": true}}')
    config = make(tmp_path)
    assert config.load() == [
        f"{tmp_path / 'conf9.json.try'}: [debug.level] is not a number; moved to conf9.json.try.corrupt"
    ]
    assert config["debug.level"] == 3


# Saving.


def test_save_writes_pretty_json_of_the_difference(tmp_path: Path) -> None:
    config = make(tmp_path / "state")
    assert config.save() == tmp_path / "state" / "conf9.json"  # the directory is made
    assert (tmp_path / "state" / "conf9.json").read_text() == "{}\n"
    config.set({"mqtt": {"reconnect_timeout_min": 3}, "debug": {"level": 3}, "wifi": {"sta": {"pass": "p"}}})
    path = config.save()
    assert path.read_text() == (
        "{\n"
        '  "debug": {\n'
        '    "level": 3\n'
        "  },\n"
        '  "mqtt": {\n'
        '    "reconnect_timeout_min": 3.000000\n'
        "  },\n"
        '  "wifi": {\n'
        '    "sta": {\n'
        '      "pass": "p"\n'
        "    }\n"
        "  }\n"
        "}\n"
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds secrets
    assert sorted(p.name for p in path.parent.iterdir()) == ["conf9.json"]  # no temporary left
    loaded = make(tmp_path / "state")
    assert loaded.load() == []
    assert loaded.tree() == config.tree()


def test_save_failures() -> None:
    with pytest.raises(ConfigError, match="no state directory") as caught:
        make(None).save()
    assert caught.value.path == ""
    with pytest.raises(ValueError, match="level"):
        make(None).save(level=0)


def test_save_into_a_file_fails_cleanly(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    config = make(tmp_path / "file")
    with pytest.raises(ConfigError, match="cannot write"):
        config.save()
