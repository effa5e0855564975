from __future__ import annotations

import pytest

from tether.device.push import Subscribers
from tether.errors import ConnectionClosed, RpcError


def test_bounded_filtered_and_slow_or_closed_subscribers_dropped() -> None:
    subscribers: Subscribers[int] = Subscribers("console", limit=3, max_behind=3)
    got: list[bytes] = []
    behind: list[bytes] = []

    def fast(frame: bytes) -> bool:
        got.append(frame)
        return True

    def slow(frame: bytes) -> bool:
        behind.append(frame)
        return False  # queued over the high-water mark: the reader is not keeping up

    def closed(frame: bytes) -> bool:
        raise ConnectionClosed(1006, "gone")

    subscribers.add(fast, 2)
    subscribers.add(slow, 4)
    subscribers.add(closed, 4)
    with pytest.raises(RpcError) as info:
        subscribers.add(lambda frame: True, 0)
    assert (info.value.code, info.value.message) == (429, "too many console subscribers")
    subscribers.add(fast, 3)  # again: a new value, not a new subscriber
    subscribers.send(b"debug", lambda wanted: wanted >= 3)
    assert len(subscribers) == 2 and got == [b"debug"]  # the closed one is forgotten
    subscribers.send(b"verbose", lambda wanted: wanted >= 4)
    assert got == [b"debug"] and len(subscribers) == 2
    subscribers.send(b"info")
    assert len(subscribers) == 1 and subscribers.dropped == 1 and subscribers.behind == 3
    assert behind == [b"debug", b"verbose", b"info"]  # then no more frames pile up for it
    subscribers.clear()
    assert len(subscribers) == 0


def test_a_subscriber_that_catches_up_starts_over() -> None:
    subscribers: Subscribers[None] = Subscribers("metrics", max_behind=2)
    answers = iter([False, True, False, True])
    subscribers.add(lambda frame: next(answers), None)
    for _ in range(4):
        subscribers.send(b"x")
    assert len(subscribers) == 1 and subscribers.dropped == 0 and subscribers.behind == 2
