from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path

import pytest

from tether.device import logs
from tether.errors import ConnectionClosed
from tether.rpc import Dispatcher


@pytest.fixture
def root_logger():
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield root
    root.setLevel(level)
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)


def test_levels_map_both_ways() -> None:
    assert [logs.python_level(n) for n in (0, 1, 2, 3, 4)] == [40, 30, 20, 10, logs.VERBOSE]
    assert logs.python_level(-1) > logging.CRITICAL
    assert [logs.mgos_level(n) for n in (50, 40, 30, 20, 10, 5)] == [0, 0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        logs.python_level(5)


def test_file_levels_parse() -> None:
    assert logs.parse_file_levels("mg_rpc.c=1,main.py:=4,=3") == [("mg_rpc.c", 1), ("main.py:", 4), ("", 3)]
    assert logs.parse_file_levels("") == []
    for bad in ("main.py", "main.py=9", "x=y"):
        with pytest.raises(ValueError, match=r"debug\.file_level"):
            logs.parse_file_levels(bad)


def test_line_format_is_mongoose_os_console() -> None:
    record = logging.LogRecord("app", logging.INFO, "/x/main.py", 36, "Init %s", ("done",), None)
    assert logs.format_line(record) == "main.py:36              Init done"
    record = logging.LogRecord("app", logging.INFO, "/x/" + "a" * 40 + ".py", 7, "m", (), None)
    line = logs.format_line(record)
    assert line[23] == " " and line.endswith(" m") and len(line) == 25


def test_configure_levels_file_levels_and_rotation(root_logger: logging.Logger, tmp_path: Path) -> None:
    stream = io.StringIO()
    setup = logs.configure(2, stream=stream)
    setup.add_file(tmp_path / "logs" / "device.log", max_bytes=1024, backups=2)
    try:
        check_levels_and_rotation(setup, stream, tmp_path)
    finally:
        setup.close()


def check_levels_and_rotation(setup: logs._Logging, stream: io.StringIO, tmp_path: Path) -> None:
    log = logging.getLogger("app")
    log.info("shown")
    log.debug("hidden")
    setup.set_level(2, "test_logs.py:=3")  # this file's debug lines pass, others stay at info
    log.debug("debug from the test file")
    setup.set_level(0, "")
    log.warning("below error: hidden")
    log.error("shown again")
    for i in range(100):
        log.error("line %d %s", i, "x" * 40)
    text = stream.getvalue()
    assert "shown" in text and "hidden" not in text and "debug from the test file" in text
    assert "shown again" in text and "below error" not in text
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files == ["device.log", "device.log.1", "device.log.2"]
    with pytest.raises(ValueError):
        setup.set_level(7)


async def test_console_subscribers_get_events_and_are_dropped_when_gone(root_logger: logging.Logger) -> None:
    setup = logs.configure(3, stream=io.StringIO())
    hub = logs.ConsoleHub("tether_0A1B2C")
    hub.bind(asyncio.get_running_loop())
    setup.add(hub)
    dispatcher = Dispatcher("tether_0A1B2C")
    hub.register(dispatcher)
    got: list[dict[str, object]] = []
    full: list[bytes] = []

    def push(frame: bytes) -> bool:
        got.append(json.loads(frame))
        return True

    def closed(frame: bytes) -> bool:
        raise ConnectionClosed(1006, "gone")

    def slow(frame: bytes) -> bool:
        full.append(frame)
        return False

    for pusher, params in ((push, {"level": 2}), (closed, {}), (slow, {})):
        reply = await dispatcher.handle(
            json.dumps({"id": 1, "method": "Console.Subscribe", "params": params}).encode(),
            channel="WS_in",
            push=pusher,
        )
        assert reply == b'{"id":1,"src":"tether_0A1B2C","result":null}'
    assert hub.subscribers == 3
    logging.getLogger("app").info("hello %s", "console")
    logging.getLogger("app").debug("too detailed for level 2")
    assert hub.subscribers == 2  # the closed one is forgotten
    assert [g["method"] for g in got] == ["Console.Event"]
    params = got[0]["params"]
    assert isinstance(params, dict) and params["level"] == 2 and params["line"].endswith("hello console")
    assert got[0]["src"] == "tether_0A1B2C" and "id" not in got[0]
    assert hub.dropped == 2 and len(full) == 2
    # HTTP has no way to push: a clear error.
    reply = await dispatcher.handle(b'{"id":2,"method":"Console.Subscribe"}', channel="HTTP")
    assert reply is not None and b'"code":400' in reply
    setup.close()


async def test_mqtt_forwarder_is_bounded() -> None:
    sent: list[tuple[str, bytes]] = []
    gate = asyncio.Event()

    async def publish(topic: str, payload: bytes) -> None:
        await gate.wait()
        sent.append((topic, payload))

    forwarder = logs.MqttLogForwarder(publish, "tether_0A1B2C/log", "tether_0A1B2C")
    forwarder.setFormatter(logging.Formatter())
    for i in range(100):
        forwarder.handle(logging.LogRecord("app", logging.INFO, "main.py", 1, "line %d", (i,), None))
    assert forwarder.skipped > 0  # over 2 KiB unsent: skipped, as the firmware does
    gate.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert sent and sent[0][0] == "tether_0A1B2C/log"
    assert sent[0][1].startswith(b"tether_0A1B2C 0 ") and b" 2|main.py:1" in sent[0][1]
    assert len(sent) + forwarder.skipped == 100
