"""Shared by the MQTT benchmark's orchestrator and client processes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = [
    "DEFAULT_LIBS",
    "HOST",
    "LIBS",
    "LOOPS",
    "ON_LOOP",
    "PEERS",
    "REPO",
    "SCENARIOS",
    "TRANSPORTS",
    "WS_PATH",
    "Processes",
    "cpu_model",
    "cpu_seconds",
    "load_mosquitto",
    "loop_label",
    "pin_to_cpu",
    "raise_nofile",
    "read_port",
    "run_on_loop",
    "settle_malloc",
    "supports",
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

#: Libraries in the order the tables list them. "mosquitto-clients" is mosquitto_pub and
#: mosquitto_sub (C, libmosquitto): the reference for throughput, not a peer.
#: "tether-py" is tether on its pure-Python path (TETHER_NO_SPEEDUPS=1 in its processes),
#: run only when --libs names it.
LIBS = ("tether", "tether-py", "paho", "aiomqtt", "gmqtt", "mosquitto-clients")
DEFAULT_LIBS = tuple(lib for lib in LIBS if lib != "tether-py")
PEERS = ("paho", "aiomqtt", "gmqtt")
#: Which libraries run on an asyncio event loop (and so on uvloop too).
ON_LOOP = ("tether", "tether-py", "aiomqtt", "gmqtt")
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
