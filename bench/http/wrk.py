"""Run wrk and read its report: requests/s and latency percentiles."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_PERCENTILE = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)\s*$", re.MULTILINE)
_TOTAL = re.compile(r"^\s*(\d+) requests in ", re.MULTILINE)
_NON_2XX = re.compile(r"^\s*Non-2xx or 3xx responses:\s+(\d+)\s*$", re.MULTILINE)
_SOCKET_ERRORS = re.compile(
    r"^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)\s*$", re.MULTILINE
)


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run reports; latencies in milliseconds."""

    requests_per_s: float
    requests: int
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int


def parse_wrk(text: str) -> WrkResult:
    """Parse the output of ``wrk --latency``.

    Raises:
        ValueError: if the output lacks the rate or the latency distribution.
    """
    rate = _RATE.search(text)
    total = _TOTAL.search(text)
    percentiles = {int(p): float(v) * _UNITS[unit] for p, v, unit in _PERCENTILE.findall(text)}
    if rate is None or total is None or 99 not in percentiles or 50 not in percentiles:
        raise ValueError(f"not the output of wrk --latency: {text[-300:]!r}")
    non_2xx = _NON_2XX.search(text)
    errors = _SOCKET_ERRORS.search(text)
    return WrkResult(
        requests_per_s=float(rate.group(1)),
        requests=int(total.group(1)),
        p50_ms=percentiles[50],
        p99_ms=percentiles[99],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )


def pinned(cpu: int | None) -> Callable[[], None] | None:
    """A preexec_fn that pins the child to cpu (None: no pinning)."""
    if cpu is None:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, {cpu})

    return pin


def run_wrk(
    url: str, *, connections: int, duration: int, cpu: int | None, wrk: str = "wrk", timeout: float = 60.0
) -> WrkResult:
    """Run ``wrk -t1 -cN -dDs --latency url`` pinned to cpu and parse its report.

    wrk takes whole seconds only.

    Raises:
        RuntimeError: if wrk fails or prints no report.
    """
    argv = [wrk, "-t1", f"-c{connections}", f"-d{duration}s", "--latency", url]
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=duration + timeout,
        preexec_fn=pinned(cpu),
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with {proc.returncode}: {(proc.stderr + proc.stdout).strip()[-200:]}")
    try:
        return parse_wrk(proc.stdout)
    except ValueError as exc:
        raise RuntimeError(str(exc)) from None
