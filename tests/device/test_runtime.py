"""The device process in this process: boot, services, the app API, reboot (tether.device.runtime)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import shutil
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tether.device.manifest import load
from tether.device.runtime import EXIT_REBOOT, Runtime, install_app_files
from tether.errors import ConfigError, InvalidState
from tether.rpc import connect

MANIFEST = """\
name: probe
version: "0.3"
config_schema:
  - ["app", "o", {title: "App"}]
  - ["app.greeting", "s", "hello", {title: "Greeting"}]
  - ["app.token", "s", "", {title: "API token", type: password}]
"""

MAIN = """\
import asyncio

seen = {"changed": [], "ticks": 0, "init_done": 0}


def init(device):
    @device.rpc("Greet", args={"type": "object", "properties": {"name": {"type": "string"}}})
    def greet(call):
        return f"{device.config['app.greeting']}, {call.params.get('name', 'world')}"

    @device.rpc("Probe.Seen")
    def probe(call):
        return seen

    @device.rpc("Probe.CallBackend")
    async def call_backend(call):
        try:
            return await device.call("Backend.Hello")
        except Exception as exc:
            return type(exc).__name__

    def tick():
        seen["ticks"] += 1

    device.set_timer(10, tick, repeat=True)
    device.on("config.changed", lambda keys: seen["changed"].append(keys))
    device.on("init.done", lambda _: seen.__setitem__("init_done", seen["init_done"] + 1))
    device.log.info("probe init for %s", device.id)
"""


def write_app(path: Path) -> Path:
    path.mkdir()
    (path / "tether.yml").write_text(MANIFEST)
    (path / "main.py").write_text(MAIN)
    (path / "fs").mkdir()
    (path / "fs" / "index.html").write_text("<p>probe</p>")
    return path


@contextlib.asynccontextmanager
async def running(tmp_path: Path) -> AsyncIterator[Runtime]:
    runtime = Runtime(
        write_app(tmp_path / "app"),
        tmp_path / "state",
        ["http.listen_addr=127.0.0.1:0", "app.greeting=hi"],
        log_stream=io.StringIO(),
    )
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.close()


def url(runtime: Runtime) -> str:
    assert runtime.server is not None
    return f"ws://127.0.0.1:{runtime.server.http_port}/rpc"


async def test_sys_get_info_has_the_spec_fields_in_order(tmp_path: Path) -> None:
    async with running(tmp_path) as runtime:
        await _test_sys_get_info_has_the_spec_fields_in_order(runtime)


async def _test_sys_get_info_has_the_spec_fields_in_order(runtime: Runtime) -> None:
    async with connect(url(runtime)) as client:
        info = await client.call("Sys.GetInfo")
        device_id = await client.call("Config.Get", {"key": "device.id"})
    assert list(info)[:16] == [
        "id", "app", "fw_version", "fw_id", "mg_version", "mg_id", "mac", "arch", "uptime",
        "public_key", "ram_size", "ram_free", "ram_min_free", "fs_size", "fs_free", "wifi",
    ]  # fmt: skip
    assert info["id"] == device_id and device_id.startswith("tether_") and "?" not in device_id
    assert (info["app"], info["fw_version"]) == ("probe", "0.3")
    assert len(info["mac"]) == 12 and int(info["mac"], 16) >= 0 and info["mac"] == info["mac"].upper()
    assert isinstance(info["uptime"], int) and info["uptime"] >= 0
    for key in ("ram_size", "ram_free", "ram_min_free", "fs_size", "fs_free"):
        assert isinstance(info[key], int) and info[key] > 0, key
    assert info["ram_min_free"] <= info["ram_free"] <= info["ram_size"]
    assert set(info["wifi"]) >= {"sta_ip", "ap_ip", "status", "ssid"}
    assert info["wifi"]["status"] in {"disconnected", "connecting", "connected", "got ip"}
    if shutil.which("nmcli") is None:  # this machine: WiFi is not managed, and GetInfo says so
        assert info["wifi"]["note"] == "WiFi management is not available here (no nmcli)"


async def test_mos_frames_over_the_websocket(tmp_path: Path) -> None:
    async with running(tmp_path) as runtime:
        await _test_mos_frames_over_the_websocket(runtime)


async def _test_mos_frames_over_the_websocket(runtime: Runtime) -> None:
    from tether.ws import connect as ws_connect

    async with ws_connect(url(runtime), subprotocols=["clubby.cesanta.com"]) as ws:
        assert ws.subprotocol == "clubby.cesanta.com"
        await ws.send('{"src":"mos","id":1099511627777,"method":"RPC.Ping"}\n')
        reply = json.loads(await ws.recv())
        assert reply["id"] == 1099511627777 and reply["dst"] == "mos"
        assert reply["src"] == runtime.config.device_id and isinstance(reply["result"]["channel_info"], str)
        await ws.send('{"id":2,"src":"mos","method":"RPC.List"}')
        methods = json.loads(await ws.recv())["result"]
    for name in ("Sys.GetInfo", "Sys.Reboot", "Sys.SetDebug", "Config.Get", "Config.Set", "Config.Save",
                 "FS.List", "FS.Get", "FS.Put", "Greet", "Console.Subscribe"):  # fmt: skip
        assert name in methods, name


async def test_app_api_rpc_timers_events_and_set_overrides(tmp_path: Path) -> None:
    async with running(tmp_path) as runtime:
        await _test_app_api_rpc_timers_events_and_set_overrides(runtime)


async def _test_app_api_rpc_timers_events_and_set_overrides(runtime: Runtime) -> None:
    async with connect(url(runtime)) as client:
        assert await client.call("Greet", {"name": "Ada"}) == "hi, Ada"  # --set at level 8
        for _ in range(200):
            seen = await client.call("Probe.Seen")
            if seen["ticks"] >= 2:
                break
            await asyncio.sleep(0.01)
        assert seen["ticks"] >= 2 and seen["init_done"] == 1
        result = await client.call("Config.Set", {"config": {"app": {"greeting": "hey"}}, "save": True})
        assert result == {"saved": True}
        assert (await client.call("Probe.Seen"))["changed"] == [["app.greeting"]]
        assert await client.call("Greet") == "hey, world"
        assert await client.call("Probe.CallBackend") == InvalidState.__name__  # no dial-out configured
    saved = json.loads((runtime.state_dir / "conf9.json").read_text())
    assert saved == {"app": {"greeting": "hey"}}  # not the --set values (level 8)
    assert (runtime.fs_root / "index.html").read_text() == "<p>probe</p>"
    assert runtime.device is not None and repr(runtime.device).startswith("<Device tether_")


async def test_secrets_redacted_for_anonymous_callers(tmp_path: Path) -> None:
    async with running(tmp_path) as runtime:
        await _test_secrets_redacted_for_anonymous_callers(runtime)


async def _test_secrets_redacted_for_anonymous_callers(runtime: Runtime) -> None:
    async with connect(url(runtime)) as client:
        await client.call("Config.Set", {"config": {"app": {"token": "s3cret"}}})
        assert await client.call("Config.Get", {"key": "app.token"}) == "********"
        tree = await client.call("Config.Get")
        assert "s3cret" not in json.dumps(tree)
    assert runtime.config["app.token"] == "s3cret"


async def test_set_debug_and_reboot(tmp_path: Path) -> None:
    async with running(tmp_path) as runtime:
        await _test_set_debug_and_reboot(runtime)


async def _test_set_debug_and_reboot(runtime: Runtime) -> None:
    root = logging.getLogger()
    async with connect(url(runtime)) as client:
        assert await client.call("Sys.SetDebug", {"level": 3}) is None
        assert root.getEffectiveLevel() == logging.DEBUG
        with pytest.raises(Exception, match="invalid level"):
            await client.call("Sys.SetDebug", {"level": 9})
        with pytest.raises(Exception, match="invalid delay_ms"):
            await client.call("Sys.Reboot", {"delay_ms": -1})
        assert await client.call("Sys.Reboot", {"delay_ms": 60_000}) is None
        assert await client.call("Sys.Reboot", {"abort": True}) is None
        assert await client.call("Sys.Reboot", {"delay_ms": 1}) is None
    assert await asyncio.wait_for(runtime.wait(), 10) == EXIT_REBOOT


async def test_config_set_with_reboot_restarts(tmp_path: Path) -> None:
    async with running(tmp_path) as runtime:
        await _test_config_set_with_reboot_restarts(runtime)


async def _test_config_set_with_reboot_restarts(runtime: Runtime) -> None:
    async with connect(url(runtime)) as client:
        result = await client.call(
            "Config.Set", {"config": {"debug": {"level": 3}}, "save": True, "reboot": True}
        )
        assert result == {"saved": True}
    assert await asyncio.wait_for(runtime.wait(), 10) == EXIT_REBOOT


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["nope.key=1"], "nope.key"),
        (["debug.level=loud"], "debug.level"),
        (["debug.level"], "debug.level"),
        (["debug.log_file=../../outside.log"], "debug.log_file"),
        (["rpc.auth_file=/../../etc/passwd"], "rpc.auth_file"),
        (["http.listen_addr=nowhere"], "http.listen_addr"),
        (["mqtt.enable=true"], "mqtt.server"),
    ],
)
async def test_bad_overrides_name_the_key(tmp_path: Path, overrides: list[str], key: str) -> None:
    runtime = Runtime(write_app(tmp_path / "app"), tmp_path / "state", overrides, log_stream=io.StringIO())
    try:
        with pytest.raises(ConfigError) as info:
            await runtime.start()
        assert info.value.path == key
    finally:
        await runtime.close()


def test_app_files_installed_when_new_or_changed(tmp_path: Path) -> None:
    app = write_app(tmp_path / "app")
    (app / "fs" / "sub").mkdir()
    (app / "fs" / "sub" / "a.txt").write_text("one")
    fs_root, record = tmp_path / "fs", tmp_path / "record.json"
    manifest = load(app)
    assert sorted(install_app_files(manifest, fs_root, record)) == ["index.html", "sub/a.txt"]
    (fs_root / "index.html").write_text("edited on the device")
    assert install_app_files(manifest, fs_root, record) == []  # the user's edit stays
    (app / "fs" / "index.html").write_text("<p>new version</p>")
    assert install_app_files(manifest, fs_root, record) == ["index.html"]  # a new app file wins
    assert (fs_root / "index.html").read_text() == "<p>new version</p>"
    assert json.loads(record.read_text())["sub/a.txt"]


def test_template_app_loads(tmp_path: Path) -> None:
    from tether.cli.run import create_app

    app = create_app("demo", tmp_path)
    manifest = load(app)
    assert (manifest.name, manifest.entry, manifest.filesystem) == ("demo", "main.py", ("fs",))
    assert "{name}" not in (app / "main.py").read_text()
    with pytest.raises(FileExistsError):
        create_app("demo", tmp_path)
    with pytest.raises(ValueError):
        create_app("../evil", tmp_path)
    compile((app / "main.py").read_text(), "main.py", "exec")
    assert textwrap.dedent((app / "fs" / "index.html").read_text()).count("demo") >= 1


async def test_acl_and_auth_file_from_the_configuration(tmp_path: Path) -> None:
    """rpc.acl and rpc.auth_file (an htdigest file on the device FS) protect every channel;
    Config.Get shows secrets to the authenticated user only."""
    import hashlib

    from tether.errors import RpcError

    app = write_app(tmp_path / "app")
    ha1 = hashlib.md5(b"admin:RPC:secret").hexdigest()
    (app / "fs" / "rpc_auth.txt").write_text(
        f"admin:RPC:{ha1}\nbob:RPC:{hashlib.md5(b'bob:RPC:pw').hexdigest()}\n"
    )
    acl = '[{"method":"Config.*","acl":"admin"},{"method":"FS.Put","acl":"admin"},{"method":"*","acl":"*"}]'
    runtime = Runtime(
        app,
        tmp_path / "state",
        ["http.listen_addr=127.0.0.1:0", f"rpc.acl={acl}", "rpc.auth_file=rpc_auth.txt", "app.token=t0k"],
        log_stream=io.StringIO(),
    )
    await runtime.start()
    try:
        async with connect(url(runtime)) as anonymous:
            assert (await anonymous.call("Sys.GetInfo"))["app"] == "probe"
            with pytest.raises(RpcError) as info:
                await anonymous.call("Config.Get")
            assert info.value.code == 401 and json.loads(info.value.message)["realm"] == "RPC"
        async with connect(url(runtime), credentials=("bob", "pw")) as bob:
            with pytest.raises(RpcError) as info:
                await bob.call("Config.Get")
            assert info.value.code == 403
        async with connect(url(runtime), credentials=("admin", "secret")) as admin:
            assert await admin.call("Config.Get", {"key": "app.token"}) == "t0k"
        http_url = url(runtime).replace("ws://", "http://")
        async with connect(http_url, credentials=("admin", "secret")) as admin:
            assert await admin.call("Config.Get", {"key": "app.greeting"}) == "hello"
            # FS.Put needs admin (the ACL): admin may replace the credentials file...
            data = base64.b64encode((app / "fs" / "rpc_auth.txt").read_bytes()).decode()
            assert await admin.call("FS.Put", {"filename": "rpc_auth.txt", "data": data}) is None
        async with connect(url(runtime)) as anonymous:
            # ...but no one unauthenticated reads or sees it, though FS.Get and FS.List are open.
            with pytest.raises(RpcError) as info:
                await anonymous.call("FS.Get", {"filename": "/rpc_auth.txt"})
            assert info.value.code == 403
            assert "rpc_auth.txt" not in await anonymous.call("FS.List")
            assert "index.html" in await anonymous.call("FS.List")
    finally:
        await runtime.close()


async def test_a_broker_that_is_down_delays_mqtt_and_nothing_else(tmp_path: Path) -> None:
    from tests.integration.mosquitto import free_ports

    port = free_ports(1)[0]  # nobody listens there
    stream = io.StringIO()
    runtime = Runtime(
        write_app(tmp_path / "app"),
        tmp_path / "state",
        ["http.listen_addr=127.0.0.1:0", "mqtt.enable=true", f"mqtt.server=127.0.0.1:{port}"],
        log_stream=stream,
    )
    await runtime.start()
    try:
        async with connect(url(runtime)) as client:
            assert (await client.call("Sys.GetInfo"))["app"] == "probe"
        for _ in range(200):
            if "mqtt: cannot connect" in stream.getvalue():
                break
            await asyncio.sleep(0.01)
        assert "mqtt: cannot connect" in stream.getvalue()
        assert runtime.device is not None and runtime.device.mqtt is None
    finally:
        await runtime.close()


async def test_document_root_hides_credentials(tmp_path: Path) -> None:
    import httpx

    app = write_app(tmp_path / "app")
    (app / "fs" / "rpc_auth.txt").write_text("admin:RPC:0123\n")
    runtime = Runtime(
        app,
        tmp_path / "state",
        ["http.listen_addr=127.0.0.1:0", "http.document_root=/", "rpc.auth_file=rpc_auth.txt"],
        log_stream=io.StringIO(),
    )
    await runtime.start()
    try:
        base = url(runtime).replace("ws://", "http://").removesuffix("/rpc")
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{base}/index.html")).text == "<p>probe</p>"
            assert (await http.get(f"{base}/rpc_auth.txt")).status_code == 404
    finally:
        await runtime.close()


async def test_https_from_http_ssl_settings(tmp_path: Path, pki: dict[str, Path]) -> None:
    from tether import tls

    app = write_app(tmp_path / "app")
    shutil.copy(pki["cert"], app / "fs" / "cert.pem")
    shutil.copy(pki["key"], app / "fs" / "key.pem")
    runtime = Runtime(
        app,
        tmp_path / "state",
        ["http.listen_addr=127.0.0.1:0", "http.ssl_cert=cert.pem", "http.ssl_key=key.pem"],
        log_stream=io.StringIO(),
    )
    await runtime.start()
    try:
        assert runtime.server is not None
        wss = f"wss://127.0.0.1:{runtime.server.http_port}/rpc"
        assert runtime.server.urls[0] == wss
        async with connect(wss, ssl=tls.client_context(ca_file=pki["ca"])) as client:
            assert (await client.call("Sys.GetInfo"))["app"] == "probe"
        async with connect(
            url(runtime).replace("ws://", "wss://"), ssl=tls.client_context(ca_file=pki["ca"])
        ):
            pass
        assert "key.pem" not in await _list_anonymously(runtime)  # a TLS key is a credential
    finally:
        await runtime.close()


async def _list_anonymously(runtime: Runtime) -> list[str]:
    from tether import tls

    assert runtime.server is not None
    wss = f"wss://127.0.0.1:{runtime.server.http_port}/rpc"
    async with connect(wss, ssl=tls.client_context(verify=False)) as client:
        names: list[str] = await client.call("FS.List")
    return names


@pytest.mark.parametrize("setting", ["rpc.acl_file=acl.json", "rpc.acl=@/acl.json"])
async def test_acl_from_a_file_of_the_device_fs(tmp_path: Path, setting: str) -> None:
    from tether.errors import RpcError

    app = write_app(tmp_path / "app")
    (app / "fs" / "acl.json").write_text('[{"method":"Sys.Reboot","acl":"-*"},{"method":"*","acl":"*"}]')
    runtime = Runtime(
        app, tmp_path / "state", ["http.listen_addr=127.0.0.1:0", setting], log_stream=io.StringIO()
    )
    await runtime.start()
    try:
        async with connect(url(runtime)) as client:
            with pytest.raises(RpcError) as info:
                await client.call("Sys.Reboot")
            assert info.value.code == 403
            assert "acl.json" not in await client.call("FS.List")  # an ACL file is protected too
    finally:
        await runtime.close()
