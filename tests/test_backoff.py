"""tether.backoff: jittered exponential delays."""

from __future__ import annotations

import random

import pytest

from tether.backoff import Backoff


def test_doubles_up_to_the_maximum_with_jitter() -> None:
    random.seed(7)
    backoff = Backoff(1.0, 60.0)
    steps = [1, 2, 4, 8, 16, 32, 60, 60, 60]
    for step in steps:
        delay = backoff.next()
        assert step / 2 <= delay <= step
    backoff.reset()
    assert 0.5 <= backoff.next() <= 1.0


def test_delays_differ_between_devices() -> None:
    random.seed(1)
    delays = {round(Backoff(1.0, 60.0).next(), 6) for _ in range(20)}
    assert len(delays) > 1


@pytest.mark.parametrize(("minimum", "maximum", "factor"), [(0, 1, 2), (2, 1, 2), (1, 2, 0.5)])
def test_invalid(minimum: float, maximum: float, factor: float) -> None:
    with pytest.raises(ValueError):
        Backoff(minimum, maximum, factor)
