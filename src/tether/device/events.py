"""Events and timers of a device: Mongoose OS' ``mgos_event_*`` and ``mgos_set_timer`` in asyncio.

Every callback runs on the device's one event loop, as in Mongoose OS, where all
callbacks run on the main loop (spec mgos-rpc.md §8). A callback may be a plain
function or a coroutine function; a coroutine runs as a task of its own. A
callback that raises is logged and does not stop the others.

Event names used by the runtime (``data`` in brackets):

- ``init.done``: the app's ``init`` returned;
- ``config.changed`` [the changed key paths];
- ``net.connected`` / ``net.disconnected`` [``{"interface", "ip"}``]: the machine's
  default route appeared or went away;
- ``cloud.connected`` / ``cloud.disconnected`` [``{"cloud": "mqtt" | "rpc.ws"}``];
- ``reboot`` [``{"delay": seconds}``]: the app is about to restart;
- ``ota.committed`` [``{"slot"}``]: ``device.commit()`` kept the update;
- ``ota.failed`` [``{"slot", "error"}``]: at the first start after the supervisor rolled
  an update back (it crashed, or was not committed in time).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

__all__ = ["EventBus", "Timers"]

logger = logging.getLogger("tether.device")

Callback = Callable[..., Any]


def _run(callback: Callback, args: tuple[Any, ...], what: str, tasks: set[asyncio.Task[Any]]) -> None:
    try:
        result = callback(*args)
    except Exception:
        logger.exception("%s raised", what)
        return
    if inspect.isawaitable(result):

        async def finish() -> None:
            try:
                await result
            except Exception:
                logger.exception("%s raised", what)

        task = asyncio.get_running_loop().create_task(finish())
        tasks.add(task)
        task.add_done_callback(tasks.discard)


class EventBus:
    """Named events with handlers: ``on(name, fn)``, ``emit(name, data)``.

    ``"*"`` subscribes to every event; such a handler gets ``(name, data)``, others
    get ``(data)``.
    """

    def __init__(self) -> None:
        self._handlers: dict[str, list[Callback]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def on(self, name: str, callback: Callback) -> Callback:
        """Call callback(data) for every event called name (``"*"``: callback(name, data))."""
        if not name:
            raise ValueError("event name is empty")
        self._handlers.setdefault(name, []).append(callback)
        return callback

    def off(self, name: str, callback: Callback) -> bool:
        """Remove a handler added with `on`; False if it was not there."""
        handlers = self._handlers.get(name, [])
        if callback in handlers:
            handlers.remove(callback)
            return True
        return False

    def emit(self, name: str, data: Any = None) -> None:
        """Call the handlers of name, in the order they were added, then the ``"*"`` ones.

        Must be called on the event loop's thread.
        """
        for callback in list(self._handlers.get(name, ())):
            _run(callback, (data,), f"handler of event {name!r}", self._tasks)
        for callback in list(self._handlers.get("*", ())):
            _run(callback, (name, data), f"handler of event {name!r}", self._tasks)

    async def aclose(self) -> None:
        """Cancel the coroutines handlers started and wait for them."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class Timers:
    """``set_timer(ms, fn, repeat=…)`` → id, ``clear_timer(id)``, on the running loop."""

    def __init__(self) -> None:
        self._handles: dict[int, asyncio.TimerHandle | None] = {}
        self._next_id = 1
        self._tasks: set[asyncio.Task[Any]] = set()

    def set_timer(self, ms: float, callback: Callback, *, repeat: bool = False, run_now: bool = False) -> int:
        """Call callback() after ms milliseconds; every ms with repeat; also at once with run_now.

        Returns:
            The timer's id (never 0), for `clear_timer`.

        Raises:
            ValueError: if ms is negative, or zero with repeat.
        """
        if ms < 0 or (repeat and ms == 0):
            raise ValueError(f"timer period {ms} ms is not allowed")
        loop = asyncio.get_running_loop()
        timer_id = self._next_id
        self._next_id += 1
        name = getattr(callback, "__qualname__", repr(callback))

        def fire() -> None:
            if timer_id not in self._handles:
                return
            if repeat:
                self._handles[timer_id] = loop.call_later(ms / 1000, fire)
            else:
                del self._handles[timer_id]
            _run(callback, (), f"timer {timer_id} ({name})", self._tasks)

        self._handles[timer_id] = loop.call_later(ms / 1000, fire)
        if run_now:
            loop.call_soon(_run, callback, (), f"timer {timer_id} ({name})", self._tasks)
        return timer_id

    def clear_timer(self, timer_id: int) -> bool:
        """Stop a timer; False if there is no such timer (any more)."""
        handle = self._handles.pop(timer_id, None)
        if handle is None:
            return False
        handle.cancel()
        return True

    def __len__(self) -> int:
        return len(self._handles)

    async def aclose(self) -> None:
        """Stop every timer and cancel the coroutines they started."""
        for handle in self._handles.values():
            if handle is not None:
                handle.cancel()
        self._handles.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
