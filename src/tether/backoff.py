"""Reconnect delays: jittered exponential backoff, as Mongoose OS' ``reconnect_interval_*``."""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Delays that double from `minimum` up to `maximum`, with jitter.

    Each delay is drawn uniformly from the upper half of the current step, so
    devices that lost their backend together do not return together.

    Args:
        minimum: the first step, in seconds.
        maximum: the largest step, in seconds.
        factor: how much each step grows.

    Raises:
        ValueError: if minimum is not positive, maximum < minimum, or factor < 1.
    """

    def __init__(self, minimum: float = 1.0, maximum: float = 60.0, factor: float = 2.0) -> None:
        if minimum <= 0 or maximum < minimum or factor < 1:
            raise ValueError(f"invalid backoff {minimum=} {maximum=} {factor=}")
        self.minimum = minimum
        self.maximum = maximum
        self.factor = factor
        self._step = minimum

    def next(self) -> float:
        """Return the next delay and grow the step."""
        step = self._step
        self._step = min(self.maximum, step * self.factor)
        return step / 2 + random.uniform(0, step / 2)

    def reset(self) -> None:
        """Start again from `minimum`, after a connection that worked."""
        self._step = self.minimum
