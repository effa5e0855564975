"""A device dashboard: settings by SSI and a form, CPU over REST, memory over WebSocket.

The seed tutorial of Mongoose OS, on tether.http:

- ``GET /`` serves ``www/index.shtml``; its ``<!--#call name -->`` directives
  show the current settings, filled in on the server.
- ``POST /save`` validates the form, writes the settings atomically to
  ``settings.json`` in the state directory and redirects back to the page.
- ``GET /api/cpu`` answers the machine's CPU usage as JSON (from ``/proc/stat``
  deltas, sampled every second); the page polls it every second.
- ``/ws`` is a WebSocket on which the server pushes the memory usage (from
  ``/proc/meminfo``) every second to every open page, drawn as a live chart.

Run it with::

    python examples/device_dashboard/app.py [--host 127.0.0.1] [--port 8000] [--state-dir DIR]

and open http://127.0.0.1:8000/. With ``--port 0`` the system picks a free
port; the first line on stdout always names the URL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tether.http import App, HTTPError, Request, Response, serve
from tether.ws import ServerWebSocket

WEB_ROOT = Path(__file__).resolve().parent / "www"
SETTINGS_FILE = "settings.json"
PUSH_INTERVAL = 1.0  # seconds between memory pushes and CPU samples
HISTORY = 120  # memory samples kept for pages that connect later


# ------------------------------------------------------------------ settings


@dataclass(frozen=True)
class Settings:
    """What the settings form edits."""

    device_name: str = "tether-device"
    led: bool = False
    cpu_alarm: int = 80  # per cent


def parse_settings(form: Any) -> Settings:
    """Validate the submitted form.

    Raises:
        ValueError: with a message naming the first bad field.
    """
    name = str(form.get("device_name", "")).strip()
    if not 1 <= len(name) <= 32:
        raise ValueError("device name must have 1 to 32 characters")
    if not name.isprintable():
        raise ValueError("device name must not contain control characters")
    alarm_text = str(form.get("cpu_alarm", "")).strip()
    if not alarm_text.isdigit() or not 1 <= int(alarm_text) <= 100:
        raise ValueError(f"CPU alarm {alarm_text!r} must be a whole number from 1 to 100")
    led = form.get("led")
    if led not in (None, "on"):
        raise ValueError(f"led {led!r} must be 'on' or absent")
    return Settings(device_name=name, led=led == "on", cpu_alarm=int(alarm_text))


class SettingsStore:
    """The settings, kept in a JSON file that is replaced atomically on every save."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / SETTINGS_FILE
        state_dir.mkdir(parents=True, exist_ok=True)
        self.current = self._load()

    def _load(self) -> Settings:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return parse_settings(
                {
                    "device_name": data["device_name"],
                    "cpu_alarm": str(data["cpu_alarm"]),
                    "led": "on" if data["led"] else None,
                }
            )
        except (OSError, ValueError, KeyError, TypeError):
            return Settings()  # missing or damaged: start from the defaults

    def save(self, settings: Settings) -> None:
        """Write settings to a temporary file, flush it to disk, then rename it over the old one."""
        data = json.dumps(asdict(settings), indent=2).encode("utf-8") + b"\n"
        fd, tmp = tempfile.mkstemp(prefix=".settings-", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)  # atomic: readers see the old file or the new one
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self.current = settings


# ------------------------------------------------------------- measurements


def read_cpu_times(path: str = "/proc/stat") -> tuple[int, int] | None:
    """(idle, total) jiffies of all CPUs from /proc/stat, or None where there is none."""
    try:
        with open(path, encoding="ascii") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user and nice
    return idle, total


class CpuSampler:
    """CPU usage in per cent between two samples of /proc/stat.

    Without /proc (macOS, Windows), the one-minute load average divided by the
    number of CPUs stands in, as a rough figure; without that either, None.
    """

    def __init__(self, path: str = "/proc/stat") -> None:
        self.path = path
        self._last = read_cpu_times(path)
        self.percent: float | None = None
        self.source = "proc" if self._last is not None else "loadavg"
        self.sampled_at = time.time()

    def sample(self) -> float | None:
        """Take a sample; return the usage since the previous one."""
        now = read_cpu_times(self.path)
        self.sampled_at = time.time()
        if now is not None and self._last is not None:
            idle = now[0] - self._last[0]
            total = now[1] - self._last[1]
            if total > 0:  # else too soon after the last sample: keep it as the base
                self._last = now
                self.percent = round(100.0 * (1.0 - idle / total), 1)
            return self.percent
        try:
            load = os.getloadavg()[0]
        except (OSError, AttributeError):
            self.source, self.percent = "unavailable", None
            return None
        self.source = "loadavg"
        self.percent = round(min(100.0, 100.0 * load / (os.cpu_count() or 1)), 1)
        return self.percent


def read_memory(path: str = "/proc/meminfo") -> dict[str, Any]:
    """Memory in use from /proc/meminfo: total and used MiB and per cent (None without /proc)."""
    fields: dict[str, int] = {}
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                name, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    fields[name] = int(parts[0])  # kB
    except OSError:
        pass
    total = fields.get("MemTotal")
    available = fields.get("MemAvailable", fields.get("MemFree"))
    if not total or available is None:
        return {"time": time.time(), "used_mib": None, "total_mib": None, "percent": None}
    used = total - available
    return {
        "time": round(time.time(), 3),
        "used_mib": round(used / 1024, 1),
        "total_mib": round(total / 1024, 1),
        "percent": round(100.0 * used / total, 1),
    }


# -------------------------------------------------------------------- the app


class Dashboard:
    """The application and the state behind it.

    Attributes:
        app: the `tether.http.App` to serve.
        store: the settings.
        cpu: the CPU sampler behind /api/cpu.
        history: the recent memory samples, oldest first.
    """

    def __init__(self, state_dir: Path) -> None:
        self.app = app = App(web_root=WEB_ROOT, max_body_size=16 * 1024)
        self.store = store = SettingsStore(state_dir)
        self.cpu = cpu = CpuSampler()
        self.history: list[dict[str, Any]] = []

        @app.ssi("device_name")
        def ssi_device_name(request: Request) -> str:
            return html.escape(store.current.device_name)

        @app.ssi("cpu_alarm")
        def ssi_cpu_alarm(request: Request) -> str:
            return str(store.current.cpu_alarm)

        @app.ssi("led_checked")
        def ssi_led_checked(request: Request) -> str:
            return "checked" if store.current.led else ""

        @app.ssi("led_state")
        def ssi_led_state(request: Request) -> str:
            return "on" if store.current.led else "off"

        @app.ssi("saved")
        def ssi_saved(request: Request) -> str:
            if request.query.get("saved") == "1":
                return '<p class="notice" role="status" id="saved">Settings saved.</p>'
            return ""

        @app.post("/save")
        async def save(request: Request) -> Response:
            form = await request.form()
            try:
                settings = parse_settings(form)
            except ValueError as exc:
                raise HTTPError(400, str(exc)) from None
            store.save(settings)
            # RFC 9110 §15.4.4: 303 See Other makes the browser GET the page again.
            return Response(b"", status=303, headers={"Location": "/?saved=1"})

        @app.get("/api/cpu")
        def api_cpu(request: Request) -> dict[str, Any]:
            return {
                "cpu": cpu.percent,
                "source": cpu.source,
                "time": round(cpu.sampled_at, 3),
                "cpus": os.cpu_count(),
            }

        @app.get("/api/settings")
        def api_settings(request: Request) -> dict[str, Any]:
            return asdict(store.current)

        @app.websocket("/ws")
        async def ws(websocket: ServerWebSocket) -> None:
            # A page that connects gets the recent history at once, then every push.
            await websocket.send(json.dumps({"type": "history", "samples": self.history}))
            async for _message in websocket:
                pass  # the page sends nothing; this waits until it goes away

    def sample(self) -> None:
        """Sample CPU and memory once; push the memory sample to every open page."""
        self.cpu.sample()
        memory = read_memory()
        self.history.append(memory)
        del self.history[:-HISTORY]
        self.app.broadcast("/ws", json.dumps({"type": "memory", **memory}))

    async def sample_forever(self) -> None:
        """Sample every PUSH_INTERVAL seconds until cancelled."""
        while True:
            self.sample()
            await asyncio.sleep(PUSH_INTERVAL)


async def run(host: str, port: int, state_dir: Path) -> None:
    """Serve the dashboard until SIGINT or SIGTERM."""
    dashboard = Dashboard(state_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C raises instead
            loop.add_signal_handler(sig, stop.set)
    async with serve(dashboard.app, host, port) as server:
        sampler = asyncio.create_task(dashboard.sample_forever())
        shown = f"[{host}]" if ":" in host else host
        print(f"device dashboard on http://{shown}:{server.port}/ (state in {state_dir})", flush=True)
        try:
            await stop.wait()
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
    print("device dashboard stopped", flush=True)


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "tether-device-dashboard"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="tether device dashboard example")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where settings.json is kept (default $XDG_STATE_HOME/tether-device-dashboard)",
    )
    args = parser.parse_args(argv)
    state_dir = args.state_dir if args.state_dir is not None else default_state_dir()
    try:
        asyncio.run(run(args.host, args.port, state_dir))
    except OSError as exc:
        print(f"device dashboard: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
