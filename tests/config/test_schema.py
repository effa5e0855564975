"""tether.config.schema: config_schema entry forms, standard keys, conversions (mgos-rpc.md §5.1, §5.5)."""

from __future__ import annotations

import logging
import math
import re
from typing import Any

import pytest

from tether.config import ConfigError, Leaf, Schema, UnknownKey
from tether.config.schema import REDACTED, STANDARD_ENTRIES, convert_text, convert_value


def make(*entries: list[Any]) -> Schema:
    schema = Schema()
    schema.extend(list(entries))
    return schema


def test_the_standard_keys() -> None:
    schema = Schema.standard()
    expected = {
        "device.id": ("s", "tether_??????"),
        "conf_acl": ("s", "*"),
        "sys.wdt_timeout": ("i", 30),
        "debug.level": ("i", 2),
        "debug.log_file_size": ("i", 1048576),
        "rpc.max_frame_size": ("i", 4096),
        "rpc.auth_domain": ("s", "RPC"),
        "rpc.ws.reconnect_interval_max": ("i", 60),
        "rpc.uart.baud_rate": ("i", 115200),
        "rpc.mqtt.pub_topic": ("s", "%.*s/rpc"),
        "http.listen_addr": ("s", "127.0.0.1:8000"),
        "mqtt.enable": ("b", False),
        "mqtt.reconnect_timeout_min": ("d", 2.0),
        "wifi.ap.ssid": ("s", "Tether_??????"),
        "wifi.ap.ip": ("s", "192.168.4.1"),
        "wifi.sta.pass": ("s", ""),
        "update.max_size": ("i", 64 * 1024 * 1024),
        "dash.enable": ("b", False),
    }
    for path, (kind, default) in expected.items():
        leaf = schema.leaf(path)
        assert (leaf.type, leaf.default) == (kind, default), path
    assert schema.paths()[:3] == ["device.id", "device.license", "device.mac"]
    assert schema.leaf("debug.level").params["title"].startswith("Log level")
    assert Schema.standard() is not schema  # a new one each time
    assert len(schema.paths()) == sum(1 for e in STANDARD_ENTRIES if e[1] != "o")
    assert repr(schema) == f"<Schema with {len(schema.paths())} values>"


def test_secrets() -> None:
    schema = Schema.standard()
    schema.extend(
        [
            ["app.api_token", "s", {}],
            ["app.pin", "i", {"type": "password"}],
            ["app.name", "s", {}],
            ["app.passage", "s", {}],
        ]
    )
    secrets = {p for p in schema.paths() if schema.is_secret(p)}
    assert secrets == {
        "device.license",
        "mqtt.pass",
        "wifi.ap.pass",
        "wifi.sta.pass",
        "dash.token",
        "app.api_token",
        "app.pin",
    }
    assert not schema.is_secret("no.such")


def test_entry_forms() -> None:
    schema = make(
        ["foo", "o", {"title": "Foo settings"}],
        ["foo.bar.name", "s", "Fred", {"title": "Name"}],
        ["foo.num", "i", {}],
        ["foo.ratio", "d", 1, {}],
        ["foo.on", "b", {}],
        ["foo.count", "ui", 7, {}],
        ["foo.f", "f", {}],
    )
    assert schema.paths() == ["foo.bar.name", "foo.num", "foo.ratio", "foo.on", "foo.count", "foo.f"]
    assert schema.leaf("foo.bar.name") == Leaf("foo.bar.name", "s", "Fred")
    assert schema.leaf("foo.num").default == 0
    assert schema.leaf("foo.ratio").default == 1.0
    assert isinstance(schema.leaf("foo.ratio").default, float)
    assert schema.leaf("foo.on").default is False
    assert schema.leaf("foo.f").default == 0.0
    assert schema.is_object("foo") and schema.is_object("foo.bar") and schema.is_object("")
    assert not schema.is_object("foo.num")
    assert schema.children("foo") == ["foo.bar", "foo.num", "foo.ratio", "foo.on", "foo.count", "foo.f"]
    assert schema.entries()[:3] == [
        ["foo", "o", {"title": "Foo settings"}],
        ["foo.bar", "o", {}],
        ["foo.bar.name", "s", {"title": "Name"}],
    ]
    assert [leaf.path for leaf in schema.leaves("foo.bar")] == ["foo.bar.name"]
    assert schema.leaves("foo.num") == [schema.leaf("foo.num")]


def test_later_entries_win_and_keep_their_place() -> None:
    schema = make(["a.x", "i", 1, {}], ["a.y", "s", {}], ["a.x", "s", "one", {"title": "X"}])
    assert schema.paths() == ["a.x", "a.y"]
    assert schema.leaf("a.x") == Leaf("a.x", "s", "one")
    assert schema.leaf("a.x").params == {"title": "X"}


def test_default_overrides_in_any_order() -> None:
    schema = make(["a.x", 5], ["a.x", "i", 1, {}], ["a.d", "d", {}], ["a.d", 3])
    assert schema.leaf("a.x").default == 5
    assert schema.leaf("a.d").default == 3.0
    schema.extend([["a.x", 6]])
    assert schema.leaf("a.x").default == 6


def test_an_override_of_a_missing_key_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    # mgos ignores them: the seed app overrides debug.mg_mgr_hexdump_file, which tether lacks.
    with caplog.at_level(logging.WARNING, logger="tether.config"):
        schema = make(["a.x", "i", {}], ["debug.mg_mgr_hexdump_file", "-"])
    assert schema.paths() == ["a.x"]
    assert "debug.mg_mgr_hexdump_file" in caplog.text


def test_copies() -> None:
    schema = Schema.standard()
    schema.extend(
        [
            ["wifi.sta1", "wifi.sta", {"title": "Second station"}],
            ["wifi.sta.enable", True],  # after the copy: the copy still follows
            ["wifi.sta1.ssid", "backup"],  # an override of the copy only
            ["wifi.sta.dns", "s", "1.1.1.1", {}],  # a new key of the source shows in the copy
            ["app.level", "debug.level", {"title": "Copied leaf"}],
        ]
    )
    assert schema.children("wifi.sta1") == [f"wifi.sta1.{k}" for k in schema_keys(schema, "wifi.sta")]
    assert schema.leaf("wifi.sta1.enable").default is True
    assert schema.leaf("wifi.sta.ssid").default == ""
    assert schema.leaf("wifi.sta1.ssid").default == "backup"
    assert schema.leaf("wifi.sta1.dns").default == "1.1.1.1"
    assert schema.leaf("wifi.sta1.pass").params["type"] == "password"
    assert schema.is_secret("wifi.sta1.pass")
    assert ["wifi.sta1", "o", {"title": "Second station"}] in schema.entries()
    assert schema.leaf("app.level") == Leaf("app.level", "i", 2)
    assert schema.leaf("app.level").params == {"title": "Copied leaf"}


def schema_keys(schema: Schema, path: str) -> list[str]:
    return [child.rpartition(".")[2] for child in schema.children(path)]


def test_copies_of_copies_and_abstract_templates() -> None:
    schema = make(
        ["tpl", "o", {"abstract": True}],
        ["tpl.port", "i", 80, {}],
        ["a", "tpl", {}],
        ["b", "a", {}],
        ["b.port", 81],
    )
    assert schema.paths() == ["a.port", "b.port"]  # the template has no values itself
    assert schema.leaf("b.port").default == 81
    assert not schema.has("tpl") and not schema.has("tpl.port")


@pytest.mark.parametrize(
    ("entry", "path", "message"),
    [
        ("not a list", "", "not a list"),
        ([], "", "not a list"),
        ([1, "i", {}], "", "not a list"),
        (["a.x"], "a.x", "1 elements"),
        (["a.x", "i", 1, {}, 5], "a.x", "5 elements"),
        (["a.x", 3, {}], "a.x", "type must be a string"),
        (["a.x", "i", "params"], "a.x", "params must be an object"),
        (["a.x", "i", "3", {}], "a.x", "a str default for type 'i'"),
        (["a.x", "b", 1, {}], "a.x", "a int default for type 'b'"),
        (["a.x", "i", True, {}], "a.x", "a bool default for type 'i'"),
        (["a.x", "ui", -1, {}], "a.x", "a int default for type 'ui'"),
        (["a.x", "i", 1.5, {}], "a.x", "a float default for type 'i'"),
        (["a.x", "o", 1, {}], "a.x", "needs a value type"),
        (["a.x", "no.such", {}], "a.x", "no entry 'no.such' to copy"),
        (["a.class", "i", {}], "a.class", "'class' is a C/C++ keyword"),
        (["a..b", "i", {}], "a..b", "'' is not a name"),
        (["a.1b", "i", {}], "a.1b", "'1b' is not a name"),
        (["a.x-y", "i", {}], "a.x-y", "'x-y' is not a name"),
        (["a.x", "o", {"abstract": True}], "a.x", "only top-level objects are abstract"),
        (["a", "i", {"abstract": True}], "a", "only top-level objects are abstract"),
        (["a", "o", {"abstract": "yes"}], "a", "only top-level objects are abstract"),
        (["leaf.x", "i", {}], "leaf.x", "'leaf' is not an object"),
        (["leaf", "s"], "leaf", "a str default for type 'i'"),
    ],
)
def test_bad_entries(entry: Any, path: str, message: str) -> None:
    schema = make(["leaf", "i", 1, {}], ["a.ok", "i", 1, {}])
    before = schema.entries()
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        schema.extend([["a.fresh", "s", {}], entry])
    assert caught.value.path == path
    assert schema.entries() == before  # nothing merged
    assert schema.leaf("leaf").default == 1


def test_bad_entry_messages_never_show_the_default() -> None:
    with pytest.raises(ConfigError) as caught:
        make(["wifi.sta.pass", "s", {}], ["wifi.sta.pass", 12345678])
    assert "12345678" not in str(caught.value)


def test_the_entries_must_be_a_list() -> None:
    for bad in ("a", {"a": 1}, b"x"):
        with pytest.raises(ConfigError, match="must be a list of entries"):
            Schema().extend(bad)  # type: ignore[arg-type]


def test_circular_copies() -> None:
    with pytest.raises(ConfigError, match="in a circle"):
        make(["one", "two", {}], ["two", "one", {}])


def test_lookups() -> None:
    schema = make(["a.x", "i", {}])
    with pytest.raises(UnknownKey) as unknown:
        schema.leaf("a.y")
    assert (unknown.value.path, str(unknown.value)) == ("a.y", "invalid config key")
    assert isinstance(unknown.value, ConfigError)
    with pytest.raises(ConfigError, match=r"\[a\] is an object"):
        schema.leaf("a")
    with pytest.raises(UnknownKey):
        schema.leaves("b")
    with pytest.raises(UnknownKey):
        schema.children("a.x")
    assert schema.has("a") and schema.has("a.x") and schema.has("") and not schema.has("a.y")
    assert schema.order("a.x") == 0


LEAVES = {kind: Leaf("k", kind, None) for kind in ("b", "i", "ui", "f", "d", "s")}


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("b", True, True),
        ("b", False, False),
        ("i", -(2**31), -(2**31)),
        ("i", 2**31 - 1, 2**31 - 1),
        ("ui", 0, 0),
        ("ui", 2**32 - 1, 2**32 - 1),
        ("d", 1, 1.0),
        ("f", 2.5, 2.5),
        ("s", "x", "x"),
        ("s", "", ""),
        ("s", None, ""),
    ],
)
def test_convert_value(kind: str, value: Any, expected: Any) -> None:
    converted = convert_value(LEAVES[kind], value)
    assert converted == expected and type(converted) is type(expected)


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        ("b", 1, "[k] is not a boolean"),
        ("b", "true", "[k] is not a boolean"),
        ("b", None, "[k] is not a boolean"),
        ("i", "3", "[k] is not a number"),
        ("i", True, "[k] is not a number"),
        ("i", None, "[k] is not a number"),
        ("i", {"a": 1}, "[k] is not a number"),
        ("i", 1.5, "[k] failed to parse [1.5]"),
        ("i", 3.0, "[k] failed to parse [3.0]"),
        ("i", 2**31, f"[k] failed to parse [{2**31}]"),
        ("ui", -1, "[k] failed to parse [-1]"),
        ("ui", 2**32, f"[k] failed to parse [{2**32}]"),
        ("d", "1", "[k] is not a number"),
        ("d", math.inf, "[k] failed to parse [inf]"),
        ("d", math.nan, "[k] failed to parse [nan]"),
        ("d", 10**400, f"[k] failed to parse [{10**400}]"),
        ("s", 3, "[k] is not a string"),
        ("s", ["x"], "[k] is not a string"),
    ],
)
def test_convert_value_errors(kind: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        convert_value(LEAVES[kind], value)
    assert (str(caught.value), caught.value.path) == (message, "k")


def test_a_secret_value_stays_out_of_messages() -> None:
    message = re.escape(f"[k] failed to parse [{REDACTED}]")
    with pytest.raises(ConfigError, match=message):
        convert_value(LEAVES["i"], 1.5, secret=True)
    with pytest.raises(ConfigError, match=message):
        convert_text(LEAVES["i"], "x", secret=True)


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        ("s", " a b ", " a b "),
        ("s", "", ""),
        ("b", "true", True),
        ("b", "True", True),
        ("b", "1", True),
        ("b", "t", True),
        ("b", "false", False),
        ("b", "F", False),
        ("b", "0", False),
        ("i", "3", 3),
        ("i", "-12", -12),
        ("i", "+7", 7),
        ("ui", "4294967295", 2**32 - 1),
        ("d", "2", 2.0),
        ("d", "-1.5e3", -1500.0),
        ("f", ".5", 0.5),
    ],
)
def test_convert_text(kind: str, text: str, expected: Any) -> None:
    converted = convert_text(LEAVES[kind], text)
    assert converted == expected and type(converted) is type(expected)


@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [
        ("b", "yes", "[k] is not a boolean"),
        ("b", "", "[k] is not a boolean"),
        ("i", "1.5", "[k] failed to parse [1.5]"),
        ("i", "x", "[k] failed to parse [x]"),
        ("i", " 3", "[k] failed to parse [ 3]"),
        ("i", "1_000", "[k] failed to parse [1_000]"),
        ("i", "99999999999", "[k] failed to parse [99999999999]"),
        ("ui", "-1", "[k] failed to parse [-1]"),
        ("d", "nan", "[k] failed to parse [nan]"),
        ("d", "inf", "[k] failed to parse [inf]"),
        ("d", "1e999", "[k] failed to parse [inf]"),
        ("d", "", "[k] failed to parse []"),
    ],
)
def test_convert_text_errors(kind: str, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        convert_text(LEAVES[kind], text)
    assert str(caught.value) == message
