"""The ``Metrics.*`` service: CPU, memory and app metrics pushed to subscribers (tether's own).

Theory of operation. A client (the dashboard) calls ``Metrics.Subscribe {}`` on a
connection that carries notifications (WebSocket, dial-out, serial: the call has
a `tether.rpc.Call.push`). From then on, every ``period`` seconds, while at least
one client is subscribed, the hub takes one sample and pushes it to each of them
as a notification::

    {"src": "<device.id>", "method": "Metrics.Event",
     "params": {"ts": 1700000000.123, "cpu": 12.5, "mem": 43.1, ..., "queue": 3}}

``ts`` is the Unix time of the sample; the other keys are the sampler's (by default
`SystemSampler`: ``cpu`` and ``mem`` of the machine in percent, ``proc_cpu`` of the
device process in percent of one core, ``proc_rss`` in bytes) followed by the
values the app set with `MetricsHub.set` (``device.metric(name, value)``).

A subscriber whose connection does not keep up loses events (its ``push`` returns
False), never replies; one whose connection closed is forgotten. With no subscriber
left the timer stops, so an unwatched device samples nothing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

from tether.device import machine
from tether.device.push import Subscribers
from tether.errors import RpcError
from tether.rpc import Call, Dispatcher, encode_request

__all__ = ["MAX_APP_METRICS", "MAX_SUBSCRIBERS", "MetricsHub", "SystemSampler", "register"]

logger = logging.getLogger("tether.device")

#: The most clients that receive metrics at once; one more gets 429.
MAX_SUBSCRIBERS = 16

#: The most app metrics a device publishes, so that an event stays a small frame.
MAX_APP_METRICS = 32

#: The longest name of an app metric.
_MAX_NAME = 64


def _cpu_times(text: str) -> tuple[int, int] | None:
    """(busy, total) jiffies from the ``cpu`` line of ``/proc/stat``, None if it has none."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            try:
                values = [int(value) for value in fields[1:]]
            except ValueError:
                return None
            # user nice system idle iowait irq softirq steal (guest time is counted in user).
            values = values[:8]
            if len(values) < 4:
                return None
            idle = values[3] + (values[4] if len(values) > 4 else 0)
            total = sum(values)
            return total - idle, total
    return None


def _process_ticks(text: str) -> int | None:
    """utime + stime of a ``/proc/<pid>/stat`` line, in clock ticks; None if it does not parse."""
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    _, sep, rest = text.rpartition(")")
    fields = rest.split()
    if not sep or len(fields) < 13:
        return None
    try:
        return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    except ValueError:
        return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None


class SystemSampler:
    """The default sampler: this machine's CPU and memory, and the device process's own.

    Each call returns the values since the previous call (the first call: since the
    sampler was made). A value that cannot be read here (no ``/proc``) is left out.

    Args:
        proc: the proc file system.
        memory: returns the machine's memory (`tether.device.machine.memory`).
        clock: monotonic seconds, for the process's CPU share.
    """

    def __init__(
        self,
        proc: Path | str = "/proc",
        *,
        memory: Callable[[], machine.Memory] = machine.memory,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.proc = Path(proc)
        self._memory = memory
        self._clock = clock
        self._ticks_per_second = os.sysconf("SC_CLK_TCK")
        self._page_size = os.sysconf("SC_PAGE_SIZE")
        self._cpu = self._read_cpu()
        self._process = self._read_process()

    def _read_cpu(self) -> tuple[int, int] | None:
        text = _read(self.proc / "stat")
        return None if text is None else _cpu_times(text)

    def _read_process(self) -> tuple[int, float] | None:
        text = _read(self.proc / "self" / "stat")
        ticks = None if text is None else _process_ticks(text)
        return None if ticks is None else (ticks, self._clock())

    def __call__(self) -> dict[str, float]:
        """Sample now: ``cpu``, ``mem``, ``proc_cpu`` (percent) and ``proc_rss`` (bytes)."""
        sample: dict[str, float] = {}
        cpu, self._cpu = self._cpu, self._read_cpu()
        if cpu is not None and self._cpu is not None:
            busy, total = self._cpu[0] - cpu[0], self._cpu[1] - cpu[1]
            sample["cpu"] = round(100.0 * busy / total, 1) if total > 0 else 0.0
        memory = self._memory()
        if memory.total > 0:
            sample["mem"] = round(100.0 * (memory.total - memory.free) / memory.total, 1)
        process, self._process = self._process, self._read_process()
        if process is not None and self._process is not None:
            seconds = self._process[1] - process[1]
            used = (self._process[0] - process[0]) / self._ticks_per_second
            sample["proc_cpu"] = round(100.0 * used / seconds, 1) if seconds > 0 else 0.0
        statm = _read(self.proc / "self" / "statm")
        fields = statm.split() if statm is not None else []
        if len(fields) >= 2 and fields[1].isdigit():
            sample["proc_rss"] = float(int(fields[1]) * self._page_size)
        return sample


class MetricsHub:
    """The subscribers of ``Metrics.Subscribe``, the app's metrics and the sampling timer.

    Made by `register`; the runtime closes it when the device stops.

    Args:
        device_id: the ``src`` of the events.
        sample: returns the built-in metrics (see `SystemSampler`).
        period: seconds between two events.
    """

    def __init__(self, device_id: str, sample: Callable[[], dict[str, float]], period: float) -> None:
        if not period > 0:
            raise ValueError(f"period must be positive, not {period}")
        self.device_id = device_id
        self.period = period
        self._sample = sample
        self._app: dict[str, float] = {}
        self._subscribers: Subscribers[None] = Subscribers("metrics", limit=MAX_SUBSCRIBERS)
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def subscribers(self) -> int:
        """How many clients receive events now."""
        return len(self._subscribers)

    @property
    def dropped(self) -> int:
        """Events not sent at once to a subscriber that was behind."""
        return self._subscribers.behind

    @property
    def running(self) -> bool:
        """Whether the sampling timer is set (only while someone is subscribed)."""
        return self._timer is not None

    def set(self, name: str, value: float) -> None:
        """Publish an app metric: value goes out with every event from now on.

        Args:
            name: a short name (``queue``, ``temp_c``); not ``ts`` nor one of the
                sampler's names.
            value: a finite number.

        Raises:
            ValueError: for an empty, reserved or over-long name, a value that is not a
                finite number, or one metric more than `MAX_APP_METRICS`.
        """
        if not name or len(name) > _MAX_NAME or name == "ts":
            raise ValueError(f"metric name {name!r} is empty, reserved or longer than {_MAX_NAME}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"metric {name!r} value {value!r} is not a finite number")
        if name not in self._app and len(self._app) >= MAX_APP_METRICS:
            raise ValueError(f"metric {name!r} is one more than the {MAX_APP_METRICS} an app may publish")
        self._app[name] = float(value)

    def subscribe(self, push: Callable[[bytes], bool]) -> None:
        """Send events to push from now on (the handler of ``Metrics.Subscribe``).

        Raises:
            RpcError: 429 when `MAX_SUBSCRIBERS` are already subscribed.
            RuntimeError: if no event loop runs in this thread.
        """
        if self._closed:
            raise RpcError(503, "the device is stopping")
        self._subscribers.add(push, None)
        if self._timer is None:
            self._call_sampler()  # the start of the first event's interval (CPU is a delta)
            self._timer = asyncio.get_running_loop().call_later(self.period, self._tick)

    def _call_sampler(self) -> dict[str, float]:
        try:
            return self._sample()
        except Exception:
            logger.exception("the metrics sampler failed")
            return {}

    def event(self) -> dict[str, float]:
        """One sample now: ``ts``, the sampler's values, then the app's."""
        return {"ts": round(time.time(), 3), **self._call_sampler(), **self._app}

    def _tick(self) -> None:
        self._timer = None
        if not self._subscribers or self._closed:
            return
        self._subscribers.send(encode_request("Metrics.Event", self.event(), src=self.device_id))
        if self._subscribers:
            self._timer = asyncio.get_running_loop().call_later(self.period, self._tick)

    def close(self) -> None:
        """Stop the timer and forget every subscriber; later subscriptions get 503."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._subscribers.clear()


def register(
    dispatcher: Dispatcher, *, sample: Callable[[], dict[str, float]], period: float = 1.0
) -> MetricsHub:
    """Add ``Metrics.Subscribe`` to dispatcher (see the module docstring).

    Args:
        dispatcher: where to register it; its ``device_id`` is the events' ``src``.
        sample: returns the built-in metrics by name (e.g. a `SystemSampler`); called on
            the event loop when the first client subscribes (to start the interval of
            values that are deltas) and then once per period while someone is
            subscribed, so it must be quick.
        period: seconds between two events.

    Returns:
        The hub: ``hub.set(name, value)`` publishes an app metric; ``hub.close()`` stops it.

    Raises:
        ValueError: if period is not positive.
    """
    hub = MetricsHub(dispatcher.device_id, sample, period)

    @dispatcher.method(
        "Metrics.Subscribe",
        args={"type": "object", "properties": {}},
        description="Stream CPU, memory and app metrics to this connection as Metrics.Event notifications.",
    )
    def subscribe(call: Call) -> dict[str, float]:
        if call.push is None:
            raise RpcError(400, f"channel {call.channel} cannot stream metrics")
        hub.subscribe(call.push)
        return {"period": hub.period}

    return hub
