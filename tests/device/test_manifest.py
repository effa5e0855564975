from __future__ import annotations

from pathlib import Path

import pytest

from tether.device import manifest
from tether.errors import ConfigError

SEED_MOS_YML = """\
author: mongoose-os
description: A Mongoose OS app skeleton
version: 1.0

libs_version: ${mos.version}
modules_version: ${mos.version}
mongoose_os_version: ${mos.version}

tags:
  - c

sources:
  - src

filesystem:
  - fs

config_schema:
  - ["debug.level", 3]
  - ["debug.mg_mgr_hexdump_file", "-"]
  - ["wifi.sta.enable", true]
  - ["wifi.sta.ssid", "Curiosity"]
  - ["wifi.sta.pass", "not-the-real-one"]

libs:
  - origin: https://github.com/mongoose-os-libs/boards
  - origin: https://github.com/mongoose-os-libs/ca-bundle
  - origin: https://github.com/mongoose-os-libs/http-server
  - origin: https://github.com/mongoose-os-libs/rpc-service-config
  - origin: https://github.com/mongoose-os-libs/rpc-ws
  - origin: https://github.com/mongoose-os-libs/wifi

manifest_version: 2017-09-29
"""


def test_seed_mos_yml_loads_as_it_is(tmp_path: Path) -> None:
    app = tmp_path / "websocket-mgos-test"
    (app / "fs").mkdir(parents=True)
    (app / "mos.yml").write_text(SEED_MOS_YML)
    m = manifest.load(app)
    assert (m.name, m.version, m.description) == ("websocket-mgos-test", "1.0", "A Mongoose OS app skeleton")
    assert m.entry is None  # a C app: no main.py
    assert m.filesystem == ("fs",)
    assert m.services == manifest.SERVICES
    assert m.config_schema[0] == ["debug.level", 3]
    assert m.extra["tags"] == ["c"] and "libs" in m.extra


def test_tether_yml_is_preferred_and_entry_function(tmp_path: Path) -> None:
    (tmp_path / "mos.yml").write_text("name: old\n")
    (tmp_path / "tether.yml").write_text("name: pump\nversion: '2.1'\nentry: app.py:setup\nservices: [sys]\n")
    (tmp_path / "app.py").write_text("def setup(device): pass\n")
    m = manifest.load(tmp_path)
    assert (m.name, m.version, m.entry, m.function, m.services) == (
        "pump",
        "2.1",
        "app.py",
        "setup",
        ("sys",),
    )
    assert m.path.name == "tether.yml"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("- a list\n", ""),
        ("name: 'bad name!'\n", "name"),
        ("name: x\nentry: ../outside.py\n", "entry"),
        ("name: x\nentry: missing.py\n", "entry"),
        ("name: x\nentry: main.py:not-a-name\n", "entry"),
        ("name: x\nservices: [sys, telnet]\n", "services"),
        ("name: x\nfilesystem: [../etc]\n", "filesystem"),
        ("name: x\nconfig_schema: {a: 1}\n", "config_schema"),
        ("name: x\nversion: [1]\n", "version"),
        ("name: [unclosed\n", ""),
    ],
)
def test_bad_manifests_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    (tmp_path / "main.py").write_text("")
    (tmp_path / "tether.yml").write_text(text)
    with pytest.raises(ConfigError) as info:
        manifest.load(tmp_path)
    assert info.value.path == key
    assert "tether.yml" in str(info.value)


def test_no_manifest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no tether\.yml"):
        manifest.load(tmp_path)


def test_cache_spares_the_yaml_parser_and_follows_changes(tmp_path: Path) -> None:
    import json

    app, cache = tmp_path / "app", tmp_path / "state" / "manifest.json"
    app.mkdir()
    cache.parent.mkdir()
    (app / "tether.yml").write_text("name: pump\nversion: '1.0'\n")
    assert manifest.load(app, cache=cache).version == "1.0"
    cached = json.loads(cache.read_text())
    assert cached["data"] == {"name": "pump", "version": "1.0"} and len(cached["sha256"]) == 64
    cached["data"]["version"] = "from the cache"
    cache.write_text(json.dumps(cached))
    assert manifest.load(app, cache=cache).version == "from the cache"  # same bytes: no YAML read
    (app / "tether.yml").write_text("name: pump\nversion: '2.0'\n")
    assert manifest.load(app, cache=cache).version == "2.0"  # changed: read again, cache renewed
    cache.write_text("{broken")
    assert manifest.load(app, cache=cache).version == "2.0"
    assert json.loads(cache.read_text())["data"]["version"] == "2.0"
