"""Shared by the MQTT benchmark's orchestrator and client processes."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import resource
import sys
from collections.abc import Coroutine
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

T = TypeVar("T")

#: Libraries in the order the tables list them. "mosquitto-clients" is mosquitto_pub and
#: mosquitto_sub (C, libmosquitto): the reference for throughput, not a peer.
LIBS = ("tether", "paho", "aiomqtt", "gmqtt", "mosquitto-clients")
PEERS = ("paho", "aiomqtt", "gmqtt")
#: Which libraries run on an asyncio event loop (and so on uvloop too).
ON_LOOP = ("tether", "aiomqtt", "gmqtt")
LOOPS = ("asyncio", "uvloop")
SCENARIOS = ("q0", "q1", "rr", "mem")
TRANSPORTS = ("tcp", "ws")
HOST = "127.0.0.1"
WS_PATH = "/mqtt"
REPO = Path(__file__).resolve().parents[2]


def supports(lib: str, scenario: str, transport: str) -> bool:
    """Whether lib can run scenario over transport (gmqtt and mosquitto's clients have no
    WebSocket; mosquitto's clients only run the throughput scenarios)."""
    if lib in ("gmqtt", "mosquitto-clients") and transport == "ws":
        return False
    return not (lib == "mosquitto-clients" and scenario not in ("q0", "q1"))


def loop_label(lib: str, loop: str) -> str:
    """The loop a lib really runs on: its own threads (paho) or none (C) when not on asyncio."""
    if lib == "paho":
        return "thread"
    if lib == "mosquitto-clients":
        return "C"
    return loop


def load_mosquitto() -> ModuleType:
    """tests/integration/mosquitto.py (the broker fixture), imported by path."""
    name = "tether_bench_mosquitto"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "tests" / "integration" / "mosquitto.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def pin_to_cpu(cpu: int) -> None:
    """Run this process on one CPU only, when the machine has it."""
    if cpu < 0:
        return
    if cpu in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {cpu})
    else:
        print(f"warning: CPU {cpu} not available; not pinning", file=sys.stderr)


def raise_nofile(want: int = 65536) -> None:
    """Raise the soft open-file limit towards want (at most the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def run_on_loop(loop: str, main: Coroutine[Any, Any, T]) -> T:
    """Run main on a fresh event loop of the given kind ("asyncio" or "uvloop")."""
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    if loop == "asyncio":
        return asyncio.run(main)
    main.close()
    raise ValueError(f"unknown loop {loop!r}")


def settle_malloc() -> None:
    """Put glibc's malloc past its mmap threshold the same way in every process
    (see bench/README.md, WebSocket section)."""
    block = bytearray(2**20)
    del block


def vm_rss_kib(pid: int | str = "self") -> int:
    """The resident set size of process pid, in KiB, from /proc/pid/status."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")
