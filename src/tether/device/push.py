"""Connections that asked for frames pushed to them: `tether console`'s log lines, the dashboard's metrics.

A handler of ``Console.Subscribe`` or ``Metrics.Subscribe`` adds the caller's
`tether.rpc.Call.push`; the device then sends it notifications. Bounded twice:
at most ``limit`` subscribers (429 beyond), and a subscriber whose connection
does not keep up is dropped: a push returns False when the connection's send
buffer is over its high-water mark (the frame is still queued), so after
``max_behind`` such pushes in a row the subscriber is forgotten and no more frames
pile up for it. A closed connection is forgotten at its first push.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from tether.errors import RpcError

__all__ = ["Subscribers"]

T = TypeVar("T")

Push = Callable[[bytes], bool]


class Subscribers(Generic[T]):
    """Subscribed connections, each with a value of the subscriber's (e.g. the log level it wants).

    Args:
        what: names the subscribers in the 429 message (``console``, ``metrics``).
        limit: the most subscribers at once.
        max_behind: pushes in a row a slow subscriber may fall behind before it is dropped.
    """

    def __init__(self, what: str, *, limit: int = 16, max_behind: int = 64) -> None:
        self.what = what
        self.limit = limit
        self.max_behind = max_behind
        self._subscribers: dict[Push, tuple[T, int]] = {}
        #: Frames not sent at once (the connection was behind), in all.
        self.behind = 0
        #: Subscribers dropped for falling behind.
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._subscribers)

    def add(self, push: Push, value: T) -> None:
        """Subscribe push (again: with a new value).

        Raises:
            RpcError: 429 when ``limit`` others are subscribed.
        """
        if push not in self._subscribers and len(self._subscribers) >= self.limit:
            raise RpcError(429, f"too many {self.what} subscribers")
        self._subscribers[push] = (value, 0)

    def send(self, frame: bytes, wants: Callable[[T], bool] | None = None) -> None:
        """Push frame to every subscriber (whose value wants says yes to)."""
        for push, (value, behind) in list(self._subscribers.items()):
            if wants is not None and not wants(value):
                continue
            try:
                sent = push(frame)
            except Exception:  # ConnectionClosed, or a broken channel: forget it
                del self._subscribers[push]
                continue
            if sent:
                if behind:
                    self._subscribers[push] = (value, 0)
                continue
            self.behind += 1
            if behind + 1 >= self.max_behind:
                del self._subscribers[push]
                self.dropped += 1
            else:
                self._subscribers[push] = (value, behind + 1)

    def clear(self) -> None:
        """Forget every subscriber."""
        self._subscribers.clear()
