"""Metrics pushed to subscribers (tether.device.services.metrics), and device.metric() in a runtime."""

from __future__ import annotations

import asyncio
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tether.device.machine import Memory
from tether.device.runtime import Runtime
from tether.device.services import metrics
from tether.errors import ConnectionClosed, RpcError
from tether.rpc import Dispatcher, Request, connect, encode_request

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def write_proc(root: Path, *, busy: int, idle: int, ticks: int, rss_pages: int) -> None:
    (root / "self").mkdir(parents=True, exist_ok=True)
    # user nice system idle iowait irq softirq steal guest guest_nice
    (root / "stat").write_text(f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 1 2 3 4\nintr 5\n")
    fields = ["S", *["0"] * 10, str(ticks), "0", *["0"] * 30]  # fields 3.. of proc(5): utime is 14th
    (root / "self" / "stat").write_text(f"42 (tether (dev) x) {' '.join(fields)}\n")
    (root / "self" / "statm").write_text(f"1000 {rss_pages} 10 1 0 50 0\n")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_system_sampler_gives_deltas_since_the_last_call(tmp_path: Path) -> None:
    write_proc(tmp_path, busy=100, idle=900, ticks=0, rss_pages=300)
    clock = Clock()
    sampler = metrics.SystemSampler(tmp_path, memory=lambda: Memory(1000, 250), clock=clock)
    write_proc(tmp_path, busy=150, idle=1050, ticks=TICK // 2, rss_pages=400)
    clock.now += 2.0
    assert sampler() == {"cpu": 25.0, "mem": 75.0, "proc_cpu": 25.0, "proc_rss": 400.0 * PAGE}
    clock.now += 1.0  # nothing moved: no CPU used
    assert sampler() == {"cpu": 0.0, "mem": 75.0, "proc_cpu": 0.0, "proc_rss": 400.0 * PAGE}


def test_system_sampler_leaves_out_what_it_cannot_read(tmp_path: Path) -> None:
    sampler = metrics.SystemSampler(tmp_path / "none", memory=lambda: Memory(0, 0))
    assert sampler() == {}
    (tmp_path / "self").mkdir()
    (tmp_path / "stat").write_text("cpu  1 x 3 4\n")
    (tmp_path / "self" / "stat").write_text("42 no parenthesis\n")
    (tmp_path / "self" / "statm").write_text("1000 many\n")
    sampler = metrics.SystemSampler(tmp_path, memory=lambda: Memory(0, 0))
    assert sampler() == {}
    (tmp_path / "stat").write_text("intr 5\n")
    assert sampler() == {}


def test_the_real_machine_is_sampled() -> None:
    sampler = metrics.SystemSampler()
    sample = sampler()
    assert set(sample) == {"cpu", "mem", "proc_cpu", "proc_rss"}
    assert 0 <= sample["cpu"] <= 100 and 0 < sample["mem"] <= 100 and sample["proc_rss"] > 0


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("", 1, "empty, reserved"),
        ("ts", 1, "empty, reserved"),
        ("x" * 65, 1, "longer than 64"),
        ("queue", True, "not a finite number"),
        ("queue", "3", "not a finite number"),
        ("queue", float("nan"), "not a finite number"),
        ("queue", float("inf"), "not a finite number"),
    ],
)
def test_set_refuses_bad_metrics(name: str, value: Any, message: str) -> None:
    hub = metrics.register(Dispatcher("dev"), sample=dict)
    with pytest.raises(ValueError, match=message):
        hub.set(name, value)


def test_set_bounds_the_number_of_app_metrics() -> None:
    hub = metrics.register(Dispatcher("dev"), sample=dict)
    for n in range(metrics.MAX_APP_METRICS):
        hub.set(f"m{n}", n)
    hub.set("m0", 1.5)  # an update is not one more
    with pytest.raises(ValueError, match="one more than the 32"):
        hub.set("extra", 1)
    assert hub.event()["m0"] == 1.5


def test_period_must_be_positive() -> None:
    with pytest.raises(ValueError, match="period must be positive, not 0"):
        metrics.register(Dispatcher("dev"), sample=dict, period=0)


class Subscriber:
    """A connection's push: records events; may be slow (False) or closed (raises)."""

    def __init__(self, behaviour: str = "ok") -> None:
        self.behaviour = behaviour
        self.events: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()

    def __call__(self, frame: bytes) -> bool:
        if self.behaviour == "closed":
            raise ConnectionClosed(1006, "gone")
        if self.behaviour == "broken":
            raise OSError("broken pipe")
        message = json.loads(frame)
        assert message["method"] == "Metrics.Event" and message["src"] == "dev" and "id" not in message
        self.events.append(message["params"])
        self.arrived.set()
        return self.behaviour != "slow"

    async def next(self) -> dict[str, Any]:
        self.arrived.clear()
        await asyncio.wait_for(self.arrived.wait(), 10)
        return self.events[-1]


async def subscribe(dispatcher: Dispatcher, push: Any) -> dict[str, Any]:
    reply = await dispatcher.handle(encode_request("Metrics.Subscribe", {}, id=1), channel="WS_in", push=push)
    assert reply is not None
    return dict(json.loads(reply))


async def test_subscribers_get_events_with_app_metrics() -> None:
    dispatcher = Dispatcher("dev")
    samples = iter(range(100))
    hub = metrics.register(dispatcher, sample=lambda: {"cpu": float(next(samples))}, period=0.01)
    assert not hub.running
    hub.set("queue", 3)
    first, slow = Subscriber(), Subscriber("slow")
    assert (await subscribe(dispatcher, first))["result"] == {"period": 0.01}
    assert hub.running
    await subscribe(dispatcher, slow)
    await subscribe(dispatcher, first)  # again: still one subscription
    assert hub.subscribers == 2
    event = await first.next()
    assert list(event) == ["ts", "cpu", "queue"] and event["queue"] == 3.0
    assert event["cpu"] >= 1  # sample 0 began the interval when the first client came
    hub.set("queue", 4)
    assert (await first.next())["queue"] == 4.0
    await slow.next()
    assert hub.dropped >= 1 and hub.subscribers == 2  # a slow reader loses events, stays subscribed
    hub.close()
    assert not hub.running and hub.subscribers == 0
    reply = await subscribe(dispatcher, Subscriber())
    assert reply["error"] == {"code": 503, "message": "the device is stopping"}


async def test_closed_connections_are_forgotten_and_the_timer_stops() -> None:
    dispatcher = Dispatcher("dev")
    calls = {"n": 0}
    ticked = asyncio.Event()

    def sample() -> dict[str, float]:
        calls["n"] += 1
        if calls["n"] == 2:  # the first tick (call 1 began the interval)
            ticked.set()
        return {}

    hub = metrics.register(dispatcher, sample=sample, period=0.01)
    await subscribe(dispatcher, Subscriber("closed"))
    await subscribe(dispatcher, Subscriber("broken"))
    assert hub.subscribers == 2 and hub.running
    await asyncio.wait_for(ticked.wait(), 10)
    # The tick that found both connections gone ran to its end before this line.
    assert hub.subscribers == 0 and not hub.running
    watcher = Subscriber()
    await subscribe(dispatcher, watcher)  # a new client starts the timer again
    assert hub.running
    assert list(await watcher.next()) == ["ts"]
    hub.close()


async def test_subscribe_needs_a_push_channel_and_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    dispatcher = Dispatcher("dev")

    def broken() -> dict[str, float]:
        raise RuntimeError("sensor gone")

    hub = metrics.register(dispatcher, sample=broken, period=0.01)
    reply = await dispatcher.handle(encode_request("Metrics.Subscribe", {}, id=1), channel="HTTP")
    assert reply is not None
    assert json.loads(reply)["error"] == {"code": 400, "message": "channel HTTP cannot stream metrics"}
    for _ in range(metrics.MAX_SUBSCRIBERS):
        assert "result" in await subscribe(dispatcher, Subscriber())
    reply_429 = await subscribe(dispatcher, Subscriber())
    assert reply_429["error"] == {"code": 429, "message": "too many metrics subscribers"}
    hub.set("level", 2)
    assert set(hub.event()) == {"ts", "level"}  # the sampler failed: the app's values still go out
    assert "the metrics sampler failed" in caplog.text
    hub.close()


MANIFEST = 'name: metered\nversion: "1.0"\n'
MAIN = """
def init(device):
    device.metric("queue", 7)

    @device.rpc("Queue.Set")
    def set_queue(call):
        device.metric("queue", call.params["n"])
"""


async def test_a_device_pushes_cpu_memory_and_app_metrics(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "tether.yml").write_text(MANIFEST)
    (app / "main.py").write_text(MAIN)
    runtime = Runtime(app, tmp_path / "state", ["http.listen_addr=127.0.0.1:0"], log_stream=io.StringIO())
    await runtime.start()
    try:
        assert runtime.server is not None and runtime.metrics is not None
        events: asyncio.Queue[Any] = asyncio.Queue()

        def on_request(request: Request) -> None:
            if request.method == "Metrics.Event":
                events.put_nowait(request.params)

        url = f"ws://127.0.0.1:{runtime.server.http_port}/rpc"
        async with connect(url, on_request=on_request) as client:
            assert await client.call("Metrics.Subscribe") == {"period": 1.0}
            event = await asyncio.wait_for(events.get(), 10)
            assert {"ts", "cpu", "mem", "proc_cpu", "proc_rss", "net", "cloud", "queue"} <= set(event)
            assert event["queue"] == 7 and event["cloud"] == 0
            await client.call("Queue.Set", {"n": 8})
            while (event := await asyncio.wait_for(events.get(), 10))["queue"] != 8:
                pass
            with pytest.raises(RpcError) as info:
                await client.call("Queue.Set", {"n": "x"})  # the app's ValueError
            assert info.value.code == 500
    finally:
        await runtime.close()
    assert runtime.metrics.subscribers == 0 and not runtime.metrics.running
