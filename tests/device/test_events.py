from __future__ import annotations

import asyncio
import logging

import pytest

from tether.device.events import EventBus, Timers


async def test_events_in_order_with_star_and_errors(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    seen: list[object] = []
    done = asyncio.Event()

    def boom(data: object) -> None:
        raise RuntimeError("handler bug")

    async def later(data: object) -> None:
        seen.append(("async", data))
        done.set()

    bus.on("config.changed", lambda data: seen.append(("first", data)))
    bus.on("config.changed", boom)
    bus.on("config.changed", later)
    bus.on("*", lambda name, data: seen.append(("star", name)))
    with caplog.at_level(logging.ERROR, "tether.device"):
        bus.emit("config.changed", ["debug.level"])
        await done.wait()
    assert seen == [("first", ["debug.level"]), ("star", "config.changed"), ("async", ["debug.level"])]
    assert "handler of event 'config.changed' raised" in caplog.text
    assert bus.off("config.changed", boom) and not bus.off("config.changed", boom)
    with pytest.raises(ValueError):
        bus.on("", print)
    await bus.aclose()


async def test_timers_once_repeat_clear_and_run_now() -> None:
    timers = Timers()
    fired: list[str] = []
    three = asyncio.Event()

    def tick() -> None:
        fired.append("repeat")
        if fired.count("repeat") == 3:
            three.set()

    once = timers.set_timer(1, lambda: fired.append("once"))
    repeat = timers.set_timer(1, tick, repeat=True, run_now=True)
    never = timers.set_timer(60_000, lambda: fired.append("never"))
    assert 0 not in (once, repeat, never) and len({once, repeat, never}) == 3
    assert timers.clear_timer(never)
    await three.wait()
    assert timers.clear_timer(repeat)
    assert not timers.clear_timer(once)  # fired already
    assert "once" in fired and "never" not in fired and len(timers) == 0
    with pytest.raises(ValueError):
        timers.set_timer(0, tick, repeat=True)
    with pytest.raises(ValueError):
        timers.set_timer(-1, tick)
    await timers.aclose()
