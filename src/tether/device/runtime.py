"""The device process: configuration, services, channels and the app, wired from the config.

Theory of operation. `Runtime.start` goes through the boot of a Mongoose OS
device, in its order:

1. the manifest and the configuration schema (built-in keys + the app's);
2. the configuration levels from the state directory (a broken ``conf9.json`` is
   moved aside with a loud error: the device comes up on the lower levels), then the
   ``--set key=value`` overrides of the command line, held in memory at level 8 (a
   ``Config.Save`` keeps only what differs from them);
3. logging at ``debug.level``;
4. the device file system (the app's ``fs/`` files copied in when new or changed);
5. the dispatcher, with ``rpc.acl`` / ``rpc.auth_file``, and the built-in services
   the manifest enables;
6. the app's ``init(device)``, then the dashboard (`tether.web`) at ``/`` unless the app
   routed ``/`` itself or set a web root, or ``http.document_root`` names a folder of the
   device file system to serve instead;
7. the channels: the HTTP server with ``/rpc`` (``http.listen_addr``), MQTT when
   ``mqtt.enable``, the dial-out WebSocket when ``rpc.ws.enable`` and
   ``rpc.ws.server_address``, serial when ``rpc.uart.enable``;
8. the watchers of the network (the default route) and of WiFi.

`Runtime.wait` returns the process's exit status: 0 after SIGTERM/SIGINT,
`EXIT_REBOOT` after ``Sys.Reboot`` (the supervisor starts a new process at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import inspect
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import tether
from tether import web
from tether.config import Config, Schema
from tether.config.schema import convert_text
from tether.device import machine
from tether.device.app import Device
from tether.device.events import EventBus, Timers
from tether.device.logs import ConsoleHub, MqttLogForwarder, configure
from tether.device.manifest import Manifest
from tether.device.manifest import load as load_manifest
from tether.device.services import metrics as metrics_service
from tether.device.slots import Slots
from tether.device.supervisor import EXIT_CONFIG, EXIT_REBOOT
from tether.errors import ConfigError
from tether.files import copy_atomic, sha256_file, write_atomic
from tether.http import App
from tether.http.static import StaticFiles
from tether.rpc import Acl, DigestAuth, Dispatcher, Server
from tether.rpc.channels import OriginPolicy

__all__ = ["EXIT_CONFIG", "EXIT_REBOOT", "Runtime"]

logger = logging.getLogger("tether.device")

#: The configuration level of ``--set`` values: above the vendor levels, below the user's
#: ``conf9.json``; held in memory only, so a saved ``conf9.json`` holds what differs from them.
COMMAND_LINE_LEVEL = 8

#: Configuration keys naming files that hold credentials (see `Runtime.protected_paths`).
_PROTECTED_KEYS = (
    "rpc.auth_file",
    "rpc.acl_file",
    "http.ssl_key",
    "mqtt.ssl_key",
    "rpc.ws.ssl_client_key_file",
)

#: How often the network watcher reads the default route, in seconds.
NET_POLL = 2.0


def install_app_files(manifest: Manifest, fs_root: Path, record: Path) -> list[str]:
    """Copy the app's ``filesystem`` files into the device file system.

    A file is copied when the device has none of that name, or when the app's copy
    changed since the last install (its hash differs from the one recorded in
    record): a new app version brings its new files, and a file the user changed on
    the device stays as long as the app's copy stays the same, as Mongoose OS
    carries files over an update (spec §6).

    Returns:
        The device paths written.
    """
    try:
        installed: dict[str, str] = json.loads(record.read_text())
    except (OSError, ValueError):
        installed = {}
    written: list[str] = []
    hashes: dict[str, str] = {}
    for folder in manifest.filesystem:
        base = manifest.app_dir / folder
        if not base.is_dir():
            continue
        for source in sorted(base.rglob("*")):
            if not source.is_file() or source.is_symlink():
                continue
            relative = source.relative_to(base).as_posix()
            digest = sha256_file(source)
            hashes[relative] = digest
            target = fs_root / relative
            if not target.exists() or installed.get(relative) != digest:
                copy_atomic(source, target)
                written.append(relative)
    if hashes != installed:
        write_atomic(record, json.dumps(hashes, indent=1, sort_keys=True).encode())
    return written


def _loopback(server: Server) -> bool:
    """Whether the server's HTTP listener is reachable from this machine only."""
    import ipaddress

    host = server.listen[0] if server.listen is not None else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class Runtime:
    """One device process.

    Args:
        app_dir: the app (its manifest, entry module, ``fs/``).
        state_dir: where ``conf9.json``, the device file system and OTA state live.
        overrides: ``key=value`` settings from the command line (``--set``).
        factory_dir: the app ``tether run`` was given (OTA slot 0) when app_dir is an
            installed slot; app_dir by default.
        log_stream: where log lines go (stderr).
    """

    def __init__(
        self,
        app_dir: Path | str,
        state_dir: Path | str,
        overrides: list[str] | tuple[str, ...] = (),
        *,
        factory_dir: Path | str | None = None,
        log_stream: Any = None,
    ) -> None:
        self.app_dir = Path(app_dir).resolve()
        self.factory_dir = Path(factory_dir).resolve() if factory_dir is not None else self.app_dir
        self.state_dir = Path(state_dir).resolve()
        self.overrides = list(overrides)
        self.log_stream = log_stream
        self.started = time.monotonic()
        self.events = EventBus()
        self.timers = Timers()
        self.fs_root = self.state_dir / "fs"
        self.wifi = machine.Wifi()
        self.server: Server | None = None
        self.device: Device | None = None
        self._exit: asyncio.Future[int] | None = None
        self._reboot_handle: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._logging: Any = None
        self._mqtt: Any = None
        self._mqtt_channel: Any = None
        self._ram_min_free: int | None = None
        self._net: machine.DefaultRoute | None = None
        self._clouds: set[str] = set()
        self.slots: Slots | None = None
        self.metrics: metrics_service.MetricsHub | None = None
        self._sampler = metrics_service.SystemSampler()

    def device_path(self, value: str, key: str) -> Path:
        """A file named by configuration key (``ca.pem``, ``rpc_auth.txt``): in the device file
        system, as on a Mongoose OS device ("/x" is its root's x).

        Raises:
            ConfigError: naming key, if the path leads out of the device file system.
        """
        path = (self.fs_root / value.lstrip("/")).resolve()
        if not path.is_relative_to(self.fs_root.resolve()):
            raise ConfigError(key, f"[{key}] {value!r} is outside the device file system")
        return path

    def _file(self, key: str) -> Path | None:
        """`device_path` of the file configuration key names, None when it is unset."""
        value = self.config[key]
        return self.device_path(value, key) if value else None

    def protected_paths(self) -> set[Path]:
        """Files of the device file system that hold credentials (the htdigest and ACL files,
        TLS keys): `FS.*` hands them only to authenticated callers, HTTP never serves them."""
        paths = set()
        for key in _PROTECTED_KEYS:
            value = self.config[key]
            if value:
                with contextlib.suppress(ConfigError):
                    paths.add(self.device_path(value, key))
        acl = self.config["rpc.acl"]
        if acl.startswith("@"):
            with contextlib.suppress(ConfigError):
                paths.add(self.device_path(acl[1:], "rpc.acl"))
        return paths

    # ------------------------------------------------------------------ boot

    async def start(self) -> None:
        """Boot the device (steps 1-8 of the module docstring).

        Raises:
            ConfigError: for a broken manifest or schema, or a bad ``--set``.
            OSError: if a channel cannot start (e.g. the HTTP port is taken).
        """
        loop = asyncio.get_running_loop()
        self._exit = loop.create_future()
        # Log lines before the configuration is read (a broken manifest or conf9.json)
        # go out at the default level; the configured level applies once it is known.
        self._logging = configure(2, stream=self.log_stream)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.manifest = manifest = load_manifest(self.app_dir, cache=self.state_dir / "manifest.json")
        schema = Schema.standard()
        schema.extend(manifest.config_schema)
        self.fs_root.mkdir(exist_ok=True)
        self.config = config = Config(schema, self.state_dir, mac=machine.machine_digits())
        config.load()  # logs each problem (a file moved aside) at ERROR
        for assignment in self.overrides:
            key, sep, value = assignment.partition("=")
            if not sep:
                raise ConfigError(key, f"--set {assignment!r} is not key=value")
            key = key.strip()
            leaf = schema.leaf(key)  # UnknownKey (a ConfigError) names a mistyped key
            config.set(
                convert_text(leaf, value, secret=schema.is_secret(key)), key=key, level=COMMAND_LINE_LEVEL
            )
        self._logging.set_level(config["debug.level"], config["debug.file_level"])
        if config["debug.log_file"]:
            self._logging.add_file(
                self.device_path(config["debug.log_file"], "debug.log_file"),
                max_bytes=config["debug.log_file_size"],
                backups=config["debug.log_file_count"],
            )
        device_id = config.device_id
        self.console = ConsoleHub(device_id)
        self.console.bind(loop)
        self._logging.add(self.console)

        written = install_app_files(manifest, self.fs_root, self.state_dir / "app-files.json")
        if written:
            logger.info("installed %d app file(s) into the device file system", len(written))

        self.dispatcher = dispatcher = self._dispatcher()
        self.console.register(dispatcher)
        self.metrics = metrics = metrics_service.register(dispatcher, sample=self._sample)
        self._register_services()
        http_app = App()
        self.device = device = Device(
            manifest=manifest,
            config=config,
            dispatcher=dispatcher,
            http=http_app,
            state_dir=self.state_dir,
            fs_root=self.fs_root,
            events=self.events,
            timers=self.timers,
            reboot=self.reboot,
            commit=self.commit,
            metric=metrics.set,
        )
        await self._init_app(device)
        self._serve_pages(http_app)

        http_on = config["http.enable"] and config["rpc.enable"] and config["rpc.http_enable"]
        try:
            self.server = server = Server(
                dispatcher,
                device_id=device_id,
                http=config["http.listen_addr"] if http_on else None,
                app=http_app if http_on else None,
                ssl=self._http_ssl() if http_on else None,
                origins=OriginPolicy.parse(config["rpc.cors_origins"]),
                dial_out=self._dial_out_url(),
                dial_out_ssl=self._dial_out_ssl(),
                reconnect_min=config["rpc.ws.reconnect_interval_min"],
                reconnect_max=config["rpc.ws.reconnect_interval_max"],
                serial=config["rpc.uart.device"]
                if config["rpc.enable"] and config["rpc.uart.enable"]
                else None,
            )
        except ValueError as exc:  # a listen address or a URL that does not parse
            key = "http.listen_addr" if "listen" in str(exc) else "rpc.ws.server_address"
            raise ConfigError(key, f"[{key}] {exc}") from exc
        await server.start()
        if config["mqtt.enable"]:
            self._spawn(self._run_mqtt(self._mqtt_client()))  # the client checks the settings now
        device.dial_out = server.dial_out
        if server.http_server is not None and dispatcher.acl is None and not _loopback(server):
            logger.warning(
                "RPC on %s is open to anyone who can reach it: set rpc.acl and rpc.auth_file",
                ", ".join(server.urls),
            )
        self._spawn(self._watch())
        if config["wifi.sta.enable"] and config["wifi.sta.ssid"]:
            if self.wifi.available:
                self._spawn(self.wifi.connect(config["wifi.sta.ssid"], config["wifi.sta.pass"]))
            else:
                logger.warning("wifi.sta is enabled but WiFi management is not available here (no nmcli)")
        logger.info(
            "%s %s up as %s in %.0f ms: %s",
            manifest.name,
            manifest.version,
            device_id,
            (time.monotonic() - self.started) * 1000,
            ", ".join(server.channels) or "no RPC channel",
        )
        self.events.emit("init.done")
        if self.slots is not None:
            state = self.slots.boot_state()
            if state.is_committed and state.last_error:
                self._report_failed_update(state.active_slot, state.last_error)
            if not state.is_committed and state.commit_timeout == 0:
                self.commit()  # spec §6: a commit timeout of 0 commits once the app is up
            elif not state.is_committed:
                logger.warning(
                    "running slot %d uncommitted: commit it (OTA.Commit, tether ota commit, device.commit()) "
                    "or it is rolled back%s",
                    state.active_slot,
                    f" {state.commit_timeout} s after its first start",
                )

    def _dispatcher(self) -> Dispatcher:
        config = self.config
        acl_text = config["rpc.acl"]
        acl_file: tuple[str, str] | None = None  # (key, file name)
        if config["rpc.acl_file"]:
            if acl_text:
                raise ConfigError("rpc.acl_file", "rpc.acl and rpc.acl_file are both set")
            acl_file = ("rpc.acl_file", config["rpc.acl_file"])
        elif acl_text.startswith("@"):
            acl_file = ("rpc.acl", acl_text[1:])
        if acl_file is not None:
            key, name = acl_file
            try:
                acl_text = self.device_path(name, key).read_text()
            except OSError as exc:
                raise ConfigError(key, f"[{key}] cannot read the ACL file: {exc}") from exc
        acl = None
        if acl_text:
            try:
                acl = Acl.parse(acl_text)
            except ValueError as exc:
                raise ConfigError("rpc.acl", f"rpc.acl is not valid: {exc}") from exc
        auth = None
        if config["rpc.auth_file"]:
            auth_path = self.device_path(config["rpc.auth_file"], "rpc.auth_file")
            auth = DigestAuth(
                str(auth_path),
                config["rpc.auth_domain"] or "RPC",
                algorithm="SHA-256" if config["rpc.auth_algo"] == 1 else "MD5",
            )
        return Dispatcher(
            self.config.device_id,
            acl=acl,
            auth=auth,
            max_pending=max(1, config["rpc.max_queue_length"]),
            max_frame_size=max(1024, config["rpc.max_frame_size"]),
        )

    def _register_services(self) -> None:
        from tether.device.services import config as config_service
        from tether.device.services import fs as fs_service
        from tether.device.services import sys as sys_service

        services = self.manifest.services
        if "sys" in services and self.config["rpc.service_sys_enable"]:
            sys_service.register(
                self.dispatcher,
                info=self.info,
                reboot=self.reboot,
                cancel_reboot=self.cancel_reboot,
                set_debug=self.set_debug,
            )
        if "config" in services:
            config_service.register(
                self.dispatcher, self.config, reboot=self.reboot, changed=self.config_changed
            )
        if "fs" in services:
            fs_service.register(self.dispatcher, self.fs_root, protected=self.protected_paths)
        if "ota" in services or (self.state_dir / "ota" / "boot.json").exists():
            # An update that arrived can always be committed, even by an app whose manifest
            # no longer lists the OTA service (device.commit()).
            self.slots = Slots(self.state_dir, self.factory_dir)
        if "ota" in services:
            from tether.device.services import ota as ota_service

            assert self.slots is not None
            ota_service.register(
                self.dispatcher,
                self.slots,
                public_key=lambda: self.config["update.key"] or None,
                reboot=self.reboot,
                max_size=max(1, self.config["update.max_size"]),
                ca_file=self._file("update.ssl_ca_file"),
            )

    def _serve_pages(self, app: App) -> None:
        """``/``: the folder ``http.document_root`` of the device file system, else the dashboard."""
        root = self.config["http.document_root"]
        if root:
            # Rooted in the device file system whatever the value ("/" is its root, as on
            # a Mongoose OS device), never above it.
            folder = (self.fs_root / root.lstrip("/")).resolve()
            if not folder.is_relative_to(self.fs_root.resolve()):
                raise ConfigError("http.document_root", f"http.document_root {root!r} leaves the file system")
            try:
                app.static = StaticFiles(folder, hidden=lambda real: Path(real) in self.protected_paths())
            except ValueError as exc:
                logger.error("http.document_root not served: %s", exc)
            return
        if app.static is not None:
            return  # the app set a web root of its own
        try:
            web.mount(app)
        except ValueError as exc:
            logger.info("the dashboard is not served: %s", exc)

    def _sample(self) -> dict[str, float]:
        """``Metrics.Event``'s built-in values: the machine's and the process's, then the links
        (``net``: 1 with a default route; ``cloud``: how many cloud links are up)."""
        return {**self._sampler(), "net": float(self._net is not None), "cloud": float(len(self._clouds))}

    def _mqtt_client(self) -> Any:
        config = self.config
        from tether.mqtt import MQTT_3_1_1, Client, Will

        server = config["mqtt.server"]
        if not server:
            raise ConfigError("mqtt.server", "mqtt.enable is true but mqtt.server is empty")
        scheme = "mqtts" if config["mqtt.ssl_ca_cert"] else "mqtt"
        url = server if "://" in server else f"{scheme}://{server}"
        ssl_context = None
        if config["mqtt.ssl_ca_cert"]:
            from tether import tls

            ssl_context = tls.client_context(
                ca_file=self._file("mqtt.ssl_ca_cert"),
                cert_file=self._file("mqtt.ssl_cert"),
                key_file=self._file("mqtt.ssl_key"),
            )
        will = None
        if config["mqtt.will_topic"]:
            will = Will(
                config["mqtt.will_topic"],
                config["mqtt.will_message"].encode(),
                retain=config["mqtt.will_retain"],
            )
        try:
            return Client(
                url,
                client_id=config["mqtt.client_id"] or self.config.device_id,
                version=MQTT_3_1_1,
                keepalive=config["mqtt.keep_alive"],
                clean_start=config["mqtt.clean_session"],
                username=config["mqtt.user"] or None,
                password=config["mqtt.pass"] or None,
                will=will,
                ssl=ssl_context,
                backoff_min=config["mqtt.reconnect_timeout_min"],
                backoff_max=config["mqtt.reconnect_timeout_max"],
                on_connect=lambda client, event: self._cloud("mqtt", True),
                on_disconnect=lambda client, error: self._cloud("mqtt", False),
            )
        except ValueError as exc:
            raise ConfigError("mqtt.server", f"[mqtt.server] {exc}") from exc

    async def _run_mqtt(self, client: Any) -> None:
        """Connect to ``mqtt.server`` in the background, with backoff, until it works: a broker
        that is down delays MQTT and nothing else. Then the RPC channel and the log topic go
        over it; the client itself reconnects from then on."""
        config = self.config
        delay = max(config["mqtt.reconnect_timeout_min"], 0.1)
        while True:
            try:
                await client.connect()
            except Exception as exc:
                logger.warning("mqtt: cannot connect to %s (%s); retrying in %.0f s", client.url, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, max(config["mqtt.reconnect_timeout_max"], delay))
                client = self._mqtt_client()  # a client whose first connect failed is finished
                continue
            break
        self._mqtt = client
        assert self.device is not None
        self.device.mqtt = client
        if config["rpc.enable"] and config["rpc.mqtt.enable"]:
            from tether.rpc.channels.mqtt import MqttChannel

            self._mqtt_channel = MqttChannel(self.dispatcher, client, qos=config["rpc.mqtt.qos"])
            await self._mqtt_channel.start()
        if config["debug.stdout_topic"]:
            self._logging.add(
                MqttLogForwarder(client.publish, config["debug.stdout_topic"], self.config.device_id)
            )

    def _http_ssl(self) -> Any:
        """``http.ssl_cert``/``ssl_key`` (and ``ssl_ca_cert`` for client certificates): HTTPS and WSS."""
        cert = self._file("http.ssl_cert")
        if cert is None:
            return None
        from tether import tls

        try:
            return tls.server_context(
                cert, self._file("http.ssl_key"), client_ca_file=self._file("http.ssl_ca_cert")
            )
        except (OSError, ValueError) as exc:
            raise ConfigError("http.ssl_cert", f"[http.ssl_cert] cannot be used: {exc}") from exc

    def _dial_out_url(self) -> str | None:
        config = self.config
        if not (config["rpc.enable"] and config["rpc.ws.enable"] and config["rpc.ws.server_address"]):
            return None
        return str(config["rpc.ws.server_address"])

    def _dial_out_ssl(self) -> Any:
        url = self._dial_out_url()
        if url is None or not url.lower().startswith("wss:"):
            return None
        from tether import tls

        return tls.client_context(
            ca_file=self._file("rpc.ws.ssl_ca_file"),
            cert_file=self._file("rpc.ws.ssl_client_cert_file"),
            key_file=self._file("rpc.ws.ssl_client_key_file"),
        )

    async def _init_app(self, device: Device) -> None:
        manifest = self.manifest
        if manifest.entry is None:
            return
        path = manifest.app_dir / manifest.entry
        module_name = f"tether_app_{manifest.name.replace('-', '_').replace('.', '_')}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ConfigError("entry", f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        sys.path.insert(0, str(manifest.app_dir))
        spec.loader.exec_module(module)
        init = getattr(module, manifest.function, None)
        if init is None:
            logger.warning("%s has no %s(device); the app adds nothing", manifest.entry, manifest.function)
            return
        result = init(device)
        if inspect.isawaitable(result):
            await result

    # ------------------------------------------------------------------ running

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _cloud(self, cloud: str, up: bool) -> None:
        if up and cloud not in self._clouds:
            self._clouds.add(cloud)
            self.events.emit("cloud.connected", {"cloud": cloud})
        elif not up and cloud in self._clouds:
            self._clouds.discard(cloud)
            self.events.emit("cloud.disconnected", {"cloud": cloud})

    async def _watch(self) -> None:
        """Network events from the default route; the dial-out link's state as cloud events."""
        while True:
            route = machine.default_route()
            if route != self._net:
                if route is not None:
                    self.events.emit("net.connected", {"interface": route.interface, "ip": route.ip})
                else:
                    self.events.emit("net.disconnected", None)
                self._net = route
            if self.server is not None and self.server.dial_out is not None:
                self._cloud("rpc.ws", self.server.dial_out.connected)
            free = machine.memory().free
            if self._ram_min_free is None or free < self._ram_min_free:
                self._ram_min_free = free
            await asyncio.sleep(NET_POLL)

    def info(self) -> dict[str, Any]:
        """``Sys.GetInfo``: the spec's fields in its order, with this machine's values."""
        memory = machine.memory()
        if self._ram_min_free is None or memory.free < self._ram_min_free:
            self._ram_min_free = memory.free
        fs_size, fs_free = machine.storage(self.fs_root)
        route = machine.default_route()
        return {
            "id": self.config.device_id,
            "app": self.manifest.name,
            "fw_version": self.manifest.version,
            "fw_id": self._fw_id(),
            "mg_version": tether.__version__,
            "mg_id": f"tether {tether.__version__} python {sys.version.split()[0]}",
            "mac": machine.primary_mac() or machine.machine_digits(),
            "arch": machine.arch(),
            "uptime": int(time.monotonic() - self.started),
            "public_key": None,
            "ram_size": memory.total,
            "ram_free": memory.free,
            "ram_min_free": self._ram_min_free,
            "fs_size": fs_size,
            "fs_free": fs_free,
            "wifi": self.wifi.info(route.ip if route is not None and route.wireless else ""),
            "eth": {"ip": route.ip if route is not None and not route.wireless else ""},
        }

    def _fw_id(self) -> str:
        """A build id of the running app: the manifest's mtime and a short hash of it."""
        try:
            data = self.manifest.path.read_bytes()
            stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(self.manifest.path.stat().st_mtime))
        except OSError:
            return ""
        return f"{stamp}/{hashlib.sha256(data).hexdigest()[:8]}"

    def _report_failed_update(self, slot: int, error: str) -> None:
        """The supervisor rolled an update back (in its process): say so once, in the log and
        as the event ``ota.failed`` {"slot", "error"}."""
        reported = self.state_dir / "ota" / "failed-reported"
        with contextlib.suppress(OSError):
            if reported.read_text(encoding="utf-8") == error:
                return
        logger.error("the last update failed and was rolled back to slot %d: %s", slot, error)
        self.events.emit("ota.failed", {"slot": slot, "error": error})
        with contextlib.suppress(OSError):
            write_atomic(reported, error.encode())

    def commit(self) -> bool:
        """Commit the running OTA update; False if there is none to commit."""
        from tether.device.slots import SlotError

        if self.slots is None:
            return False
        try:
            self.slots.commit()
        except SlotError:
            return False
        logger.info("update committed: slot %d stays", self.slots.boot_state().active_slot)
        self.events.emit("ota.committed", {"slot": self.slots.boot_state().active_slot})
        return True

    def set_debug(self, level: int, file_levels: str | None) -> None:
        """``Sys.SetDebug``: the running log level (not saved)."""
        self._logging.set_level(level, file_levels)

    def config_changed(self, paths: list[str]) -> None:
        """Apply what can change live (log levels), then raise ``config.changed``."""
        if any(path.startswith("debug.") for path in paths):
            try:
                self._logging.set_level(self.config["debug.level"], self.config["debug.file_level"])
            except ValueError as exc:
                logger.error("debug.level/debug.file_level not applied: %s", exc)
        self.events.emit("config.changed", paths)

    def reboot(self, delay: float = 0.1) -> None:
        """Restart the app (a new process) after delay seconds."""
        if self._exit is None or self._exit.done():
            return
        self.cancel_reboot()
        logger.info("rebooting in %.0f ms", delay * 1000)
        self.events.emit("reboot", {"delay": delay})
        loop = asyncio.get_running_loop()
        self._reboot_handle = loop.call_later(max(delay, 0.0), self.stop, EXIT_REBOOT)

    def cancel_reboot(self) -> bool:
        """Cancel a pending `reboot`; False if none was pending."""
        handle, self._reboot_handle = self._reboot_handle, None
        if handle is None:
            return False
        handle.cancel()
        return True

    def stop(self, status: int = 0) -> None:
        """Make `wait` return status (0: stop, `EXIT_REBOOT`: start again)."""
        if self._exit is not None and not self._exit.done():
            self._exit.set_result(status)

    async def wait(self) -> int:
        """Wait for `stop` or `reboot`; return the exit status."""
        assert self._exit is not None, "start() first"
        return await self._exit

    async def close(self) -> None:
        """Stop the channels, timers and tasks; flush the log."""
        self.cancel_reboot()
        if self.metrics is not None:
            self.metrics.close()
        await self.timers.aclose()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.close()
        if self._mqtt_channel is not None:
            with contextlib.suppress(Exception):
                await self._mqtt_channel.close()
        if self._mqtt is not None:
            with contextlib.suppress(Exception):
                await self._mqtt.__aexit__(None, None, None)
        await self.events.aclose()
        if self._logging is not None:
            self._logging.close()
