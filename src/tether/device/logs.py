"""Device logging: Mongoose OS levels and line format, to stderr, a rotating file, MQTT and `tether console`.

Levels follow spec mgos-rpc.md §7: -1 none, 0 error, 1 warn, 2 info, 3 debug,
4 verbose, set by ``debug.level`` (and ``Sys.SetDebug``); ``debug.file_level``
(``"mg_rpc.c=1,main.py:=4,=3"``) overrides it for records whose ``file:line`` tag
starts with a prefix, the first match winning. Lines look as on a Mongoose OS
console: the ``file:line`` tag left-justified in 24 characters, then the message.

Where lines go:

- stderr, always;
- ``debug.log_file`` (relative to the state directory), rotated at
  ``debug.log_file_size`` bytes keeping ``debug.log_file_count`` old files;
- MQTT, when ``debug.stdout_topic`` is set and MQTT is on: QoS 0 messages
  ``<device.id> <seq> <unix time .3f> <level>|<line>``, skipped while more than
  2 KiB of them are unsent (as the firmware does);
- RPC clients that called ``Console.Subscribe`` (``tether console``): a notification
  ``Console.Event {"line", "level", "ts"}`` per line, dropped for a client whose
  connection is not keeping up.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tether.device.push import Subscribers
from tether.errors import RpcError
from tether.rpc import Call, Dispatcher, encode_request

__all__ = [
    "VERBOSE",
    "ConsoleHub",
    "MqttLogForwarder",
    "configure",
    "format_line",
    "mgos_level",
    "parse_file_levels",
    "python_level",
]

#: Mongoose OS' level 4 (verbose), below DEBUG.
VERBOSE = 5
logging.addLevelName(VERBOSE, "VERBOSE")

_PYTHON_LEVELS = {-1: logging.CRITICAL + 10, 0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO}
_PYTHON_LEVELS.update({3: logging.DEBUG, 4: VERBOSE})

#: The most console subscribers a device keeps.
MAX_SUBSCRIBERS = 16


def python_level(level: int) -> int:
    """The `logging` level of a Mongoose OS level (-1..4)."""
    if level not in _PYTHON_LEVELS:
        raise ValueError(f"invalid level {level}")
    return _PYTHON_LEVELS[level]


def mgos_level(levelno: int) -> int:
    """The Mongoose OS level (0..4) of a `logging` level."""
    if levelno >= logging.ERROR:
        return 0
    if levelno >= logging.WARNING:
        return 1
    if levelno >= logging.INFO:
        return 2
    if levelno >= logging.DEBUG:
        return 3
    return 4


def parse_file_levels(value: str) -> list[tuple[str, int]]:
    """Parse ``debug.file_level``: ``"prefix=level,…"`` into (prefix, level) pairs.

    Raises:
        ValueError: naming the bad part.
    """
    pairs: list[tuple[str, int]] = []
    for part in filter(None, (p.strip() for p in value.split(","))):
        prefix, sep, level = part.rpartition("=")
        try:
            number = int(level)
        except ValueError:
            number = 99
        if not sep or number not in _PYTHON_LEVELS:
            raise ValueError(f"debug.file_level part {part!r} is not prefix=level (-1..4)")
        pairs.append((prefix, number))
    return pairs


def format_line(record: logging.LogRecord) -> str:
    """The console line of a record: ``file:line`` in 24 columns (at least one space), the message."""
    tag = f"{record.filename}:{record.lineno}"
    message = record.getMessage()
    if record.exc_info and record.exc_info[0] is not None:
        message += "\n" + logging.Formatter().formatException(record.exc_info)
    return f"{tag[:23]:<23} {message}"


class _LineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return format_line(record)


class _LevelFilter(logging.Filter):
    """``debug.level`` with the ``debug.file_level`` overrides."""

    def __init__(self) -> None:
        super().__init__()
        self.level = logging.INFO
        self.file_levels: list[tuple[str, int]] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if self.file_levels:
            tag = f"{record.filename}:{record.lineno}"
            for prefix, level in self.file_levels:
                if tag.startswith(prefix):
                    return record.levelno >= _PYTHON_LEVELS[level]
        return record.levelno >= self.level


class ConsoleHub(logging.Handler):
    """Log lines for RPC clients: ``Console.Subscribe`` and ``Console.Event`` notifications."""

    def __init__(self, device_id: str) -> None:
        super().__init__(VERBOSE)
        self.device_id = device_id
        self._subscribers: Subscribers[int] = Subscribers("console", limit=MAX_SUBSCRIBERS)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver on loop: records logged from other threads are handed to it."""
        self._loop = loop
        self._thread = threading.get_ident()

    def register(self, dispatcher: Dispatcher) -> None:
        """Add ``Console.Subscribe {"level"?}`` to dispatcher."""

        @dispatcher.method(
            "Console.Subscribe",
            args={
                "type": "object",
                "properties": {"level": {"type": "integer", "minimum": -1, "maximum": 4}},
            },
            description="Stream log lines to this connection as Console.Event notifications.",
        )
        def subscribe(call: Call) -> None:
            if call.push is None:
                raise RpcError(400, f"channel {call.channel} cannot stream log lines")
            self._subscribers.add(call.push, call.params.get("level", 4))

    @property
    def subscribers(self) -> int:
        """How many clients receive lines now."""
        return len(self._subscribers)

    def emit(self, record: logging.LogRecord) -> None:
        if not self._subscribers:
            return
        try:
            line = format_line(record)
        except Exception:
            self.handleError(record)
            return
        level = mgos_level(record.levelno)
        if self._loop is not None and threading.get_ident() != self._thread:
            self._loop.call_soon_threadsafe(self._send, line, level, record.created)
        else:
            self._send(line, level, record.created)

    @property
    def dropped(self) -> int:
        """Lines not sent at once to a subscriber that was behind."""
        return self._subscribers.behind

    def _send(self, line: str, level: int, ts: float) -> None:
        frame = encode_request(
            "Console.Event", {"line": line, "level": level, "ts": round(ts, 3)}, src=self.device_id
        )
        # Never logs from here: a line about a line would loop.
        self._subscribers.send(frame, lambda wanted: level <= wanted)


class MqttLogForwarder(logging.Handler):
    """Log lines published at QoS 0 on a topic (``debug.stdout_topic``), bounded to 2 KiB unsent."""

    LIMIT = 2048

    def __init__(self, publish: Callable[[str, bytes], Any], topic: str, device_id: str) -> None:
        super().__init__(VERBOSE)
        self._publish = publish
        self.topic = topic
        self.device_id = device_id
        self._seq = 0
        self._unsent = 0
        self._tasks: set[asyncio.Future[Any]] = set()
        self.skipped = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("tether.mqtt"):
            return  # the MQTT client's own lines would feed themselves
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # another thread: only the loop's thread publishes
        payload = (
            f"{self.device_id} {self._seq} {record.created:.3f} {mgos_level(record.levelno)}|"
            f"{format_line(record)}"
        ).encode()
        self._seq += 1
        if self._unsent + len(payload) > self.LIMIT:
            self.skipped += 1
            return
        self._unsent += len(payload)
        task = loop.create_task(self._send(payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, payload: bytes) -> None:
        try:
            await self._publish(self.topic, payload)
        except Exception:
            self.skipped += 1
        finally:
            self._unsent -= len(payload)


class _Logging:
    """What `configure` set up, to change levels later (``Sys.SetDebug``, ``config.changed``)."""

    def __init__(self, level_filter: _LevelFilter, handlers: list[logging.Handler]) -> None:
        self.level_filter = level_filter
        self.handlers = handlers
        self._root_level = logging.getLogger().level

    def set_level(self, level: int, file_levels: str | None = None) -> None:
        """Apply ``debug.level`` (-1..4) and, when given, ``debug.file_level``.

        Raises:
            ValueError: for a level outside -1..4 or a bad file_level.
        """
        python = python_level(level)
        pairs = parse_file_levels(file_levels) if file_levels is not None else None
        self.level_filter.level = python
        if pairs is not None:
            self.level_filter.file_levels = pairs
        root = logging.getLogger()
        lowest = min([python, *(_PYTHON_LEVELS[lvl] for _, lvl in self.level_filter.file_levels)])
        root.setLevel(lowest)

    def add(self, handler: logging.Handler) -> None:
        """Send lines to one more handler, with the same format and levels."""
        handler.setFormatter(_LineFormatter())
        handler.addFilter(self.level_filter)
        logging.getLogger().addHandler(handler)
        self.handlers.append(handler)

    def add_file(self, path: Path, *, max_bytes: int = 1 << 20, backups: int = 3) -> None:
        """Also write lines to path, rotated at max_bytes keeping backups old files.

        Raises:
            OSError: if the file cannot be opened.
        """
        import logging.handlers  # a device without a log file doesn't load it

        path.parent.mkdir(parents=True, exist_ok=True)
        self.add(
            logging.handlers.RotatingFileHandler(
                path, maxBytes=max(max_bytes, 1024), backupCount=max(backups, 0), encoding="utf-8"
            )
        )

    def remove(self, handler: logging.Handler) -> None:
        """Stop sending lines to handler."""
        if handler in self.handlers:
            self.handlers.remove(handler)
        logging.getLogger().removeHandler(handler)

    def close(self) -> None:
        """Remove and close every handler `configure` and `add` installed; the root level as before."""
        for handler in list(self.handlers):
            self.remove(handler)
            handler.close()
        logging.getLogger().setLevel(self._root_level)


def configure(level: int, *, file_levels: str = "", stream: Any = None) -> _Logging:
    """Install the device's console handler on the root logger.

    Args:
        level: ``debug.level`` (-1..4).
        file_levels: ``debug.file_level``.
        stream: where console lines go (stderr).

    Returns:
        A handle to change levels and add handlers (a file, the console hub, MQTT).

    Raises:
        ValueError: for a bad level or file_level.
    """
    level_filter = _LevelFilter()
    setup = _Logging(level_filter, [])
    setup.add(logging.StreamHandler(stream if stream is not None else sys.stderr))
    setup.set_level(level, file_levels)
    logging.captureWarnings(True)
    return setup
