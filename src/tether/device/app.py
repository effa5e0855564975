"""The object an app gets: ``device``, its whole API.

An app is a Python module named by the manifest's ``entry`` (``main.py`` by
default) with a function ``init(device)``, plain or ``async``, called once when
the device starts, before its channels open (Mongoose OS' ``mgos_app_init``)::

    def init(device):
        @device.rpc("Sum", args={"type": "object",
                                 "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                                 "required": ["a", "b"]})
        def sum_(call):
            return call.params["a"] + call.params["b"]

        def tick():
            device.log.info("period is %d ms", device.config["app.period_ms"])

        device.set_timer(device.config["app.period_ms"], tick, repeat=True)
        device.on("config.changed", lambda keys: device.log.info("changed: %s", keys))
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tether.device.events import EventBus, Timers

if TYPE_CHECKING:
    from tether.config import Config
    from tether.device.manifest import Manifest
    from tether.http import App
    from tether.mqtt import Client as MqttClient
    from tether.rpc import Dispatcher
    from tether.rpc.channels import DialOut

__all__ = ["Device"]

F = TypeVar("F", bound=Callable[..., Any])


class Device:
    """A running device as its app sees it.

    Attributes:
        id: ``device.id``.
        manifest: the app's manifest (name, version…).
        config: the configuration: ``device.config["app.foo"]``, ``config.set(…)``.
        dispatcher: the RPC dispatcher every channel feeds.
        http: the HTTP app of the device's server: add routes to it in ``init``.
        log: the app's logger, at ``debug.level``.
        state_dir: the device's state directory.
        fs_root: the root of the device file system (``FS.*``).
        mqtt: the MQTT client when ``mqtt.enable``, else None (set before the channels open).
        dial_out: the dial-out RPC connection when ``rpc.ws.enable`` and a server is set, else None.
    """

    def __init__(
        self,
        *,
        manifest: Manifest,
        config: Config,
        dispatcher: Dispatcher,
        http: App,
        state_dir: Path,
        fs_root: Path,
        events: EventBus,
        timers: Timers,
        reboot: Callable[[float], None],
        commit: Callable[[], bool],
        metric: Callable[[str, float], None],
    ) -> None:
        self.manifest = manifest
        self.config = config
        self.dispatcher = dispatcher
        self.http = http
        self.state_dir = state_dir
        self.fs_root = fs_root
        self.log = logging.getLogger(manifest.name)
        self.mqtt: MqttClient | None = None
        self.dial_out: DialOut | None = None
        self._events = events
        self._timers = timers
        self._reboot = reboot
        self._commit = commit
        self._metric = metric

    @property
    def id(self) -> str:
        """``device.id`` with its placeholder filled in."""
        return self.config.device_id

    def __repr__(self) -> str:
        return f"<Device {self.id} app={self.manifest.name} {self.manifest.version}>"

    def rpc(
        self,
        name: str,
        *,
        args: dict[str, Any] | None = None,
        description: str = "",
        deadline: float | None = None,
    ) -> Callable[[F], F]:
        """Register the decorated function as the handler of RPC method name.

        The handler gets a `tether.rpc.Call` (``call.params``, ``call.user``…) and
        returns the result (or an awaitable of it), or raises
        `tether.errors.RpcError(code, message)`. args is a JSON-schema subset
        describing the params (``RPC.Describe`` shows it; bad params get 400).
        """
        return self.dispatcher.method(name, args=args, description=description, deadline=deadline)

    def set_timer(
        self, ms: float, callback: Callable[[], Any], *, repeat: bool = False, run_now: bool = False
    ) -> int:
        """Call callback() in ms milliseconds (every ms with repeat); returns an id for `clear_timer`."""
        return self._timers.set_timer(ms, callback, repeat=repeat, run_now=run_now)

    def clear_timer(self, timer_id: int) -> bool:
        """Stop a timer; False if it had already fired or was cleared."""
        return self._timers.clear_timer(timer_id)

    def on(self, event: str, callback: Callable[..., Any]) -> Callable[..., Any]:
        """Call callback(data) on every event of that name (see `tether.device.events`)."""
        return self._events.on(event, callback)

    def emit(self, event: str, data: Any = None) -> None:
        """Raise an event of the app's own; its handlers run at once."""
        self._events.emit(event, data)

    async def call(self, method: str, args: Any = None, *, timeout: float = 20.0) -> Any:
        """Call a method on the backend over the dial-out connection (``rpc.ws.server_address``).

        Raises:
            tether.errors.InvalidState: if the dial-out connection is not enabled.
            tether.errors.RpcError: the backend's error reply.
            tether.errors.Timeout: no reply in time.
        """
        from tether.errors import InvalidState

        if self.dial_out is None:
            raise InvalidState("rpc.ws is not enabled or has no server_address")
        return await self.dial_out.call(method, args, timeout=timeout)

    def metric(self, name: str, value: float) -> None:
        """Publish an app metric: value goes out with every ``Metrics.Event`` from now on, and
        the dashboard charts it beside CPU and memory. Call it again whenever it changes.

        Raises:
            ValueError: for a name that is empty, ``ts`` or over 64 characters, a value that
                is not a finite number, or a metric more than the 32 an app may publish.
        """
        self._metric(name, value)

    def commit(self) -> bool:
        """Commit the OTA update this app came with, once it is healthy (e.g. its backend
        connection is up); False if there is nothing to commit. Until then a crash or the
        commit timeout rolls the device back to the previous version."""
        return self._commit()

    def reboot(self, delay: float = 0.1) -> None:
        """Restart the app (a new process) after delay seconds, as ``Sys.Reboot``."""
        self._reboot(delay)
