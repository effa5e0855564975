"""Shared by the benchmark's server, client and orchestrator processes."""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = [
    "HOST",
    "LIBS",
    "LOOPS",
    "MAX_SIZE",
    "Processes",
    "cpu_model",
    "cpu_seconds",
    "pin_to_cpu",
    "raise_nofile",
    "read_port",
    "run_on_loop",
    "settle_malloc",
    "tail",
    "tether_source",
    "vm_rss_kib",
]

# bench/ holds what every benchmark shares (shared.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared import (
    Processes,
    cpu_model,
    cpu_seconds,
    pin_to_cpu,
    raise_nofile,
    read_port,
    run_on_loop,
    settle_malloc,
    tail,
    tether_source,
    vm_rss_kib,
)

#: Libraries in the order the tables list them; "raw" is a plain asyncio TCP echo.
#: tether-cb is tether's callback API (tether.ws.Handler) on both sides; -py: the
#: pure-Python path (TETHER_NO_SPEEDUPS=1 in the server and the client).
LIBS = (
    "tether",
    "tether-cb",
    "tether-py",
    "tether-cb-py",
    "websockets",
    "aiohttp",
    "picows",
    "wsproto",
    "raw",
)
LOOPS = ("asyncio", "uvloop")
HOST = "127.0.0.1"
#: The largest message every library is told to accept (the 1 MiB echo needs more than defaults).
MAX_SIZE = 2**24
