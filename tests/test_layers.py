"""Imports follow the layers of DESIGN.md: arrows point down only.

Every module under src/tether is read with ast (never imported), so the check also
covers imports inside functions and under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"

# Bottom up. A module may import its own entry and the entries of lower layers, nothing
# beside or above it. An entry names a package (with everything under it) or a module.
# Add new packages here in the same change that creates them.
LAYERS: list[tuple[str, ...]] = [
    # shared, stdlib only
    ("tether", "tether.errors", "tether.backoff", "tether.tls", "tether.files", "tether._speedups"),
    # protocol cores and their I/O front ends; MQTT runs over WebSocket and the HTTP
    # server upgrades to it, so WebSocket sits below them
    ("tether.ws",),
    ("tether.mqtt", "tether.http"),
    # RPC over the protocols; configuration (stdlib); dashboard assets (served by tether.http)
    ("tether.rpc", "tether.config", "tether.web"),
    # device runtime
    ("tether.device",),
    # hub, command line, test kit
    ("tether.hub", "tether.cli", "tether.testing"),
    # python -m tether
    ("tether.__main__",),
]

# Protocol cores: bytes in, events out; no sockets, no event loop, no clock.
CORE_MODULES = [
    "tether.errors",
    "tether.ws.frames",
    "tether.ws.protocol",
    "tether.ws.handshake",
    "tether.ws.deflate",
    "tether.ws.uri",
    "tether.mqtt.packets",
    "tether.mqtt.protocol",
    "tether.http.parser",
    "tether.http.protocol",
    "tether.http.multipart",
    "tether.rpc.frames",
    "tether.rpc.patterns",
    "tether.rpc.schema",
    "tether.rpc.acl",
    "tether.rpc.auth",
    "tether.rpc.client",
    "tether.rpc.serialframe",
]
CORE_FORBIDDEN = {"asyncio", "socket", "ssl", "threading", "time", "selectors"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted((SRC / "tether").rglob("*.py"))}


def imports(name: str) -> set[str]:
    """Absolute names of every module that name imports."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            # from tether import tls imports the module tether.tls.
            found.update(f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES)
    return found


def layer_entry(name: str) -> tuple[int, str] | None:
    """The layer and entry a tether module belongs to (the longest matching entry)."""
    best: tuple[int, str] | None = None
    for level, entries in enumerate(LAYERS):
        for entry in entries:
            # The root entry "tether" is the package's __init__ only.
            matches = name == entry or (entry != "tether" and name.startswith(entry + "."))
            if matches and (best is None or len(entry) > len(best[1])):
                best = (level, entry)
    return best


def test_the_table_works() -> None:
    assert layer_entry("tether.ws.protocol") == (1, "tether.ws")
    assert layer_entry("tether") == (0, "tether")
    assert layer_entry("tether.unknown") is None
    assert "tether.ws.protocol" in imports("tether.ws.client")


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_has_a_layer(name: str) -> None:
    assert layer_entry(name) is not None, f"add {name} (or its package) to LAYERS"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_upward_or_sideways_import(name: str) -> None:
    own = layer_entry(name)
    assert own is not None
    bad = []
    for target in sorted(imports(name)):
        if target != "tether" and not target.startswith("tether."):
            continue
        other = layer_entry(target)
        if other is None:
            bad.append(f"{target} (not in LAYERS)")
        elif other[1] != own[1] and other[0] >= own[0]:
            bad.append(f"{target} (layer {other[0]}, {other[1]})")
    assert not bad, f"{name} (layer {own[0]}, {own[1]}) imports {', '.join(bad)}"


@pytest.mark.parametrize("name", CORE_MODULES)
def test_core_does_no_io(name: str) -> None:
    used = {target.partition(".")[0] for target in imports(name)}
    assert not used & CORE_FORBIDDEN, f"core module {name} imports {sorted(used & CORE_FORBIDDEN)}"


def test_errors_import_nothing_from_tether() -> None:
    assert not {t for t in imports("tether.errors") if t == "tether" or t.startswith("tether.")}


def test_ws_stays_below_the_layers_above_it() -> None:
    above = ("tether.rpc", "tether.config", "tether.device", "tether.web", "tether.hub", "tether.cli")
    beside = ("tether.mqtt", "tether.http")
    for name in (n for n in MODULES if n == "tether.ws" or n.startswith("tether.ws.")):
        for target in imports(name):
            assert not target.startswith(above + beside), f"{name} imports {target}"
