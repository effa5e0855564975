"""Shared test settings: Hypothesis runs the same examples on every run (STYLE.md: deterministic)."""

from __future__ import annotations

from hypothesis import settings

# derandomize: the same examples every run; deadline=None: no timing thresholds.
settings.register_profile("tether", derandomize=True, deadline=None, database=None)
settings.load_profile("tether")
