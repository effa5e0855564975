"""The app manifest: ``tether.yml``, or a Mongoose OS ``mos.yml`` as it is.

A manifest names the app and its version, adds entries to the configuration
schema (in ``mos.yml``'s ``config_schema`` form), says which built-in services
run, where the app's Python entry point is and which folder holds the files of
the device file system::

    name: pump
    version: "1.2"
    description: A pump controller
    entry: main.py            # a module with init(device); "main.py:setup" names another function
    services: [sys, config, fs, ota]
    filesystem: [fs]          # folders copied into the device file system
    config_schema:
      - ["app", "o", {title: "App settings"}]
      - ["app.period_ms", "i", 1000, {title: "Sampling period"}]

A ``mos.yml`` has no ``name`` (the folder's name is used) and no ``entry`` (a
``main.py`` beside it is used when present); its ``libs``, ``sources``, ``tags``
and build keys are kept in `Manifest.extra` and otherwise ignored: they describe a
firmware build, which a tether app does not have.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.errors import ConfigError
from tether.files import write_atomic

__all__ = ["MANIFEST_NAMES", "SERVICES", "Manifest", "load"]

#: The file names a manifest is read from, in order of preference.
MANIFEST_NAMES = ("tether.yml", "tether.yaml", "mos.yml")

#: The built-in services an app may enable; all of them when the manifest says nothing.
SERVICES = ("sys", "config", "fs", "ota")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_KNOWN_KEYS = {"name", "version", "description", "entry", "services", "filesystem", "config_schema"}


@dataclass(frozen=True)
class Manifest:
    """An app manifest, checked.

    Attributes:
        app_dir: the folder the manifest was read from.
        path: the manifest file.
        name: the app's name (``Sys.GetInfo.app``).
        version: its version (``Sys.GetInfo.fw_version``).
        description: one line about it.
        entry: the Python file of the entry point, relative to app_dir, or None.
        function: the function of the entry module called with the device (``init``).
        services: the enabled built-in services, a subset of `SERVICES`.
        filesystem: folders (relative to app_dir) whose files go into the device file system.
        config_schema: the app's schema entries, in ``mos.yml`` form.
        extra: every other top-level key, as read.
    """

    app_dir: Path
    path: Path
    name: str
    version: str
    description: str = ""
    entry: str | None = None
    function: str = "init"
    services: tuple[str, ...] = SERVICES
    filesystem: tuple[str, ...] = ()
    config_schema: list[list[Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def find(app_dir: Path) -> Path:
    """The manifest file of app_dir.

    Raises:
        ConfigError: if there is none.
    """
    for name in MANIFEST_NAMES:
        candidate = app_dir / name
        if candidate.is_file():
            return candidate
    raise ConfigError("", f"no {' or '.join(MANIFEST_NAMES)} in {app_dir}")


def _read(path: Path, cache: Path | None) -> Any:
    """The manifest's YAML as data, from cache when the cache was made from the same bytes.

    The cache (JSON, with the SHA-256 of the YAML it came from) spares a device process
    the YAML parser: a megabyte of memory and some milliseconds at every start.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError("", f"{path}: cannot read the manifest: {exc}") from exc
    digest = hashlib.sha256(raw).hexdigest()
    if cache is not None:
        try:
            cached = json.loads(cache.read_bytes())
            if cached.get("sha256") == digest:
                return cached["data"]
        except (OSError, ValueError, AttributeError, KeyError):
            pass  # no cache yet, or a broken one: read the YAML
    import yaml  # here, not at the top: see above

    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError("", f"{path}: cannot read the manifest: {exc}") from exc
    if cache is not None:
        # Only an optimisation: what JSON cannot hold (a YAML date) is parsed at every start.
        with contextlib.suppress(OSError, TypeError, ValueError):
            write_atomic(cache, json.dumps({"sha256": digest, "data": data}).encode())
    return data


def load(app_dir: Path | str, *, cache: Path | None = None) -> Manifest:
    """Read and check the manifest of the app in app_dir.

    Args:
        app_dir: the app's folder.
        cache: a JSON file that keeps the parsed manifest between starts (a device's
            state directory holds one); None to parse the YAML every time.

    Raises:
        ConfigError: naming the file and the key, if the manifest is missing, is not
            YAML, or has a value of the wrong kind.
    """
    app_dir = Path(app_dir)
    path = find(app_dir)
    data = _read(path, cache)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("", f"{path}: the manifest is not a mapping")

    def text(key: str, default: str) -> str:
        value = data.get(key, default)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # version: 1.0 in mos.yml is a YAML float
        if not isinstance(value, str):
            raise ConfigError(key, f"{path}: {key} is not a string")
        return value

    def strings(key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = data.get(key)
        if value is None:
            return default
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ConfigError(key, f"{path}: {key} is not a list of strings")
        return tuple(value)

    name = text("name", app_dir.resolve().name)
    if not _NAME.match(name):
        raise ConfigError("name", f"{path}: name {name!r} is not a valid app name")
    version = text("version", "0.0.0")
    entry_value = data.get("entry")
    function = "init"
    if entry_value is None:
        entry = "main.py" if (app_dir / "main.py").is_file() else None
    elif isinstance(entry_value, str):
        entry, _, function = entry_value.partition(":")
        function = function or "init"
        if not function.isidentifier():
            raise ConfigError("entry", f"{path}: entry function {function!r} is not a Python name")
        candidate = (app_dir / entry).resolve()
        if not candidate.is_relative_to(app_dir.resolve()) or candidate.suffix != ".py":
            raise ConfigError("entry", f"{path}: entry {entry!r} is not a .py file inside the app")
        if not candidate.is_file():
            raise ConfigError("entry", f"{path}: entry {entry!r} does not exist")
    else:
        raise ConfigError("entry", f"{path}: entry is not a string")
    services = strings("services", SERVICES)
    unknown = sorted(set(services) - set(SERVICES))
    if unknown:
        raise ConfigError("services", f"{path}: unknown services {unknown}; known: {list(SERVICES)}")
    filesystem = strings("filesystem", ("fs",) if (app_dir / "fs").is_dir() else ())
    for folder in filesystem:
        resolved = (app_dir / folder).resolve()
        if not resolved.is_relative_to(app_dir.resolve()):
            raise ConfigError("filesystem", f"{path}: filesystem folder {folder!r} is outside the app")
    schema = data.get("config_schema") or []
    if not isinstance(schema, list) or not all(isinstance(entry, list) for entry in schema):
        raise ConfigError("config_schema", f"{path}: config_schema is not a list of lists")
    return Manifest(
        app_dir=app_dir,
        path=path,
        name=name,
        version=version,
        description=text("description", ""),
        entry=entry,
        function=function,
        services=services,
        filesystem=filesystem,
        config_schema=schema,
        extra={key: value for key, value in data.items() if key not in _KNOWN_KEYS},
    )
