"""The running configuration: levels over the schema's defaults (spec mgos-rpc.md §5.2).

Theory of operation. Level 0 is the schema's defaults. Levels 1 to 8 are vendor
overlays (``conf1.json`` … ``conf8.json``) and level 9 is the user's
(``conf9.json``), all sparse and optional, in the state directory. A value reads
from the highest level that holds it. Each level is kept in memory as a flat map
from dotted key to typed value; a file is read into one at `Config.load`, a
change goes into one through `Config.set` (or `Config.assign`), and
`Config.save` writes one back holding only what differs from the levels below.

``conf_acl`` (comma globs on dotted keys, ``+``/``-`` prefixes, first match wins,
no match denies; default ``*``) says which keys may change: level N is loaded
under the ``conf_acl`` of the levels below N, and a `Config.set` under the
running one. Denied keys are skipped silently, as unknown keys are.

A level file that cannot be used (not JSON, not an object, a value of the wrong
type) costs only its own level: the device runs on the others, `Config.load`
reports the problem and logs it at ERROR on the ``tether.config`` logger, and the
file is renamed to ``<name>.corrupt`` so that nothing is lost. A one-boot
``confN.json.try`` is read instead of ``confN.json`` and deleted once read.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tether.config.schema import REDACTED, Schema, UnknownKey, convert_text, convert_value
from tether.config.store import (
    encode,
    fsync_directory,
    move_aside,
    remove_stale_temporaries,
    write_atomic,
)
from tether.errors import ConfigError

__all__ = ["LEVELS", "USER_LEVEL", "Config", "check_access", "expand_placeholders"]

logger = logging.getLogger("tether.config")

#: The level of ``conf9.json``, where `Config.set` and `Config.save` go by default.
USER_LEVEL = 9
#: Every level: 0 the schema's defaults, 1-8 vendor files, 9 the user's file.
LEVELS = range(USER_LEVEL + 1)
_MAC = re.compile(r"[0-9A-Fa-f]{12}")


def check_access(acl: str, key: str) -> bool:
    """True if a ``conf_acl`` lets key change (§5.2).

    The ACL is a comma list of globs on dotted keys (``*`` and ``**`` any run,
    ``?`` one character, ``|`` alternatives, case-insensitive), each optionally
    prefixed with ``+`` (allow) or ``-`` (deny); the first glob matching the whole
    key decides, and no match denies. ``"wifi.*,debug.level"`` allows those only;
    ``"-debug.*,*"`` everything but ``debug``.
    """
    for raw in acl.split(","):
        entry = raw.strip()
        allow = True
        if entry[:1] in ("+", "-"):
            allow, entry = entry[0] == "+", entry[1:]
        if entry and _acl_pattern(entry).fullmatch(key):
            return allow
    return False


def _acl_pattern(entry: str) -> re.Pattern[str]:
    alternatives = []
    for glob in entry.split("|"):
        parts = re.split(r"(\*\*|\*|\?)", glob)
        alternatives.append(
            "".join({"**": ".*", "*": "[^/]*", "?": "."}.get(part, re.escape(part)) for part in parts)
        )
    return re.compile("|".join(alternatives), re.IGNORECASE)


def expand_placeholders(text: str, mac: str) -> str:
    """Replace each ``?`` in text with a digit of mac, from the right, if their count is
    even and at most 12 (§5.2): ``tether_??????`` and ``240AC40A1B2C`` give ``tether_0A1B2C``.

    ``device.id`` and the ``debug.*_topic`` values read expanded; ``wifi.ap.ssid``
    is stored and read as written, and its user expands it with this function.
    """
    count = text.count("?")
    if count == 0 or count % 2 or count > len(mac):
        return text
    digits = iter(mac[len(mac) - count :])
    return "".join(next(digits) if char == "?" else char for char in text)


def _expands(path: str) -> bool:
    return path == "device.id" or (path.startswith("debug.") and path.endswith("_topic"))


def _check_level(level: int, lowest: int) -> None:
    if isinstance(level, bool) or not isinstance(level, int) or not lowest <= level <= USER_LEVEL:
        raise ValueError(f"level {level!r} is not between {lowest} and {USER_LEVEL}")


class Config:
    """A device's configuration: the schema's values across levels 0 to 9.

    Args:
        schema: the keys, types and defaults; complete it before making the config.
        state_dir: the directory of the level files; None for a configuration
            that lives in memory only (`save` then fails).
        mac: the device's MAC address, 12 hex digits, for the ``?`` placeholders.

    Raises:
        ValueError: if mac is not 12 hex digits.
    """

    def __init__(self, schema: Schema, state_dir: Path | None, *, mac: str = "000000000000") -> None:
        if not _MAC.fullmatch(mac):
            raise ValueError(f"mac {mac!r} is not 12 hex digits")
        self.schema = schema
        self.state_dir = None if state_dir is None else Path(state_dir)
        self.mac = mac.upper()
        self._levels: list[dict[str, Any]] = [{} for _ in LEVELS]

    # Loading.

    def load(self) -> list[str]:
        """Read levels 1 to 9 from the state directory, replacing what they held.

        A missing file is an empty level. A file that cannot be used is skipped,
        logged and moved aside (module docstring).

        Returns:
            One message per skipped file, naming the file and the reason, e.g.
            ``/var/lib/dev/conf9.json: [debug.level] is not a number; moved to
            conf9.json.corrupt``; empty when all went well.
        """
        self._levels = [{} for _ in LEVELS]
        problems: list[str] = []
        if self.state_dir is None:
            return problems
        for level in LEVELS[1:]:
            plain = self.state_dir / f"conf{level}.json"
            once = plain.with_name(plain.name + ".try")
            for name in (plain.name, once.name):
                remove_stale_temporaries(self.state_dir, name)
            acl = self._acl(level - 1)
            values = self._read(once, acl, problems)
            if values is not None:
                once.unlink()  # §5.2: a one-boot config is deleted once loaded
                fsync_directory(self.state_dir)
            else:
                values = self._read(plain, acl, problems)
            self._levels[level] = values or {}
        return problems

    def _read(self, path: Path, acl: str, problems: list[str]) -> dict[str, Any] | None:
        """The values of a level file; None if it is missing or unusable (then reported)."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._report(problems, f"{path}: cannot read it: {exc.strerror or exc}")
            return None
        try:
            document = json.loads(data)
            values: dict[str, Any] = {}
            self._walk(document, "", acl, False, values)
            return values
        except (ValueError, RecursionError):
            reason = "invalid JSON"
        except ConfigError as exc:
            reason = str(exc)
        try:
            aside = move_aside(path)
        except OSError as exc:
            self._report(problems, f"{path}: {reason}; cannot move it aside: {exc.strerror or exc}")
        else:
            self._report(problems, f"{path}: {reason}; moved to {aside.name}")
        return None

    @staticmethod
    def _report(problems: list[str], problem: str) -> None:
        logger.error("configuration file skipped: %s", problem)
        problems.append(problem)

    # Reading.

    def get(self, key: str | None = None, *, level: int | None = None, redact: bool = False) -> Any:
        """The value or subtree at key.

        Args:
            key: a dotted key of a value or an object; None or "" for the whole tree.
            level: read levels 0 to this one only (``Config.Get``'s ``level``); None for all.
            redact: read set secrets as ``"********"``.

        Returns:
            A bool, int, float or str (``""`` when unset), or for an object a dict
            of its keys in schema order. ``device.id`` and ``debug.*_topic`` read
            with their placeholders filled in.

        Raises:
            UnknownKey: (a `ConfigError`, message ``invalid config key``) if the
                schema has no such key.
            ValueError: if level is not between 0 and 9.
        """
        top = USER_LEVEL if level is None else level
        _check_level(top, 0)
        path = key or ""
        if not self.schema.has(path):
            raise UnknownKey(path)
        return self._subtree(path, top, redact)

    def __getitem__(self, key: str) -> Any:
        """``config["debug.level"]`` is ``config.get("debug.level")``."""
        return self.get(key)

    def tree(self, *, redact: bool = False, level: int | None = None) -> dict[str, Any]:
        """The whole configuration as nested dicts in schema order (see `get`)."""
        tree: dict[str, Any] = self.get(level=level, redact=redact)
        return tree

    def layer(self, level: int) -> dict[str, Any]:
        """The values level itself holds, by dotted key (a copy; level 0: every default).

        Raises:
            ValueError: if level is not between 0 and 9.
        """
        _check_level(level, 0)
        if level == 0:
            return {leaf.path: leaf.default for leaf in self.schema.leaves()}
        return dict(self._levels[level])

    @property
    def device_id(self) -> str:
        """``device.id`` with its placeholders filled in, e.g. ``tether_0A1B2C``."""
        value: str = self.get("device.id")
        return value

    def dumps(self, value: Any) -> str:
        """Compact JSON of a value from `get` the way mgos emits configuration (§5.2):
        floats with six decimals (``2.000000``), unset strings ``""``, never ``null``."""
        return encode(value)

    def _raw(self, path: str, level: int) -> Any:
        for n in range(level, 0, -1):
            values = self._levels[n]
            if path in values:
                return values[path]
        return self.schema.leaf(path).default

    def _subtree(self, path: str, level: int, redact: bool) -> Any:
        if self.schema.is_object(path):
            return {
                child.rpartition(".")[2]: self._subtree(child, level, redact)
                for child in self.schema.children(path)
            }
        value = self._raw(path, level)
        if _expands(path):
            return expand_placeholders(value, self.mac)
        if redact and value != "" and self.schema.is_secret(path):
            return REDACTED
        return value

    def _acl(self, level: int) -> str:
        """The ``conf_acl`` of levels 0 to level ("*" when the schema has none)."""
        if not self.schema.has("conf_acl") or self.schema.is_object("conf_acl"):
            return "*"
        acl: str = self._raw("conf_acl", level)
        return acl

    # Changing.

    def set(
        self, value: Any, *, key: str | None = None, level: int = USER_LEVEL, keep_redacted: bool = False
    ) -> list[str]:
        """Change values at a level, as ``Config.Set`` does (§5.3).

        Every value is checked before any is applied: on an error nothing changes.
        Keys the schema lacks and keys the running ``conf_acl`` denies are skipped,
        and so is a ``device.id`` or ``debug.*_topic`` equal to what it reads now
        with its placeholders filled in (a tree read and sent back keeps them).

        Args:
            value: a (partial) tree of the whole configuration, or with key of that
                subtree, or the value itself when key names a value.
            key: the dotted key value applies to; None for the root.
            level: the level to change, 1 to 9.
            keep_redacted: leave a secret unchanged when value gives it as
                ``"********"`` (a tree read with ``redact=True`` and sent back).

        Returns:
            The keys whose running value changed, in schema order.

        Raises:
            UnknownKey: if key is not in the schema.
            ConfigError: naming the first wrong value with mgos' message, e.g.
                ``[debug.level] is not a number``.
            ValueError: if level is not between 1 and 9.
        """
        _check_level(level, 1)
        path = key or ""
        if not self.schema.has(path):
            raise UnknownKey(path)
        changes: dict[str, Any] = {}
        self._walk(value, path, self._acl(USER_LEVEL), keep_redacted, changes)
        return self._apply(level, changes)

    def assign(self, key: str, text: str) -> list[str]:
        """Set one value at level 9 from text, as ``--set key=value`` on a command line.

        Same as `assign_all` with one pair.
        """
        return self.assign_all([(key, text)])

    def assign_all(self, pairs: Iterable[tuple[str, str]]) -> list[str]:
        """Set values at level 9 from text, converted to each key's type as mos config-set
        converts them (§5.4); all or none.

        Unlike `set`, an unknown or denied key is an error: a person typed it.

        Returns:
            The keys whose running value changed, in schema order.

        Raises:
            UnknownKey: for a key the schema lacks.
            ConfigError: for an object's key, a key ``conf_acl`` denies, or text that
                does not convert (``[debug.level] failed to parse [x]``).
        """
        acl = self._acl(USER_LEVEL)
        changes: dict[str, Any] = {}
        for key, text in pairs:
            leaf = self.schema.leaf(key)
            if not check_access(acl, key):
                raise ConfigError(key, f"[{key}] may not be changed: conf_acl is {acl!r}")
            changes[key] = convert_text(leaf, text, secret=self.schema.is_secret(key))
        return self._apply(USER_LEVEL, changes)

    def _walk(self, value: Any, path: str, acl: str, keep_redacted: bool, changes: dict[str, Any]) -> None:
        """Check value at path and add its values to changes, skipping unknown and denied keys."""
        if self.schema.is_object(path):
            if not isinstance(value, Mapping):
                raise ConfigError(
                    path, f"[{path}] is not an object" if path else "the config is not an object"
                )
            for name, item in value.items():
                child = f"{path}.{name}" if path else str(name)
                if isinstance(name, str) and name and "." not in name and self.schema.has(child):
                    self._walk(item, child, acl, keep_redacted, changes)
            return
        if not check_access(acl, path):
            logger.debug("conf_acl %r skips %s", acl, path)
            return
        secret = self.schema.is_secret(path)
        if keep_redacted and secret and value == REDACTED:
            return
        if _expands(path) and value == self._subtree(path, USER_LEVEL, False) != self._raw(path, USER_LEVEL):
            return  # the expanded value read and sent back: keep the placeholders
        changes[path] = convert_value(self.schema.leaf(path), value, secret=secret)

    def _apply(self, level: int, changes: Mapping[str, Any]) -> list[str]:
        before = {path: self._raw(path, USER_LEVEL) for path in changes}
        self._levels[level].update(changes)
        changed = [path for path in changes if self._raw(path, USER_LEVEL) != before[path]]
        changed.sort(key=self.schema.order)
        return changed

    # Saving.

    def save(self, *, level: int = USER_LEVEL, try_once: bool = False) -> Path:
        """Write a level's file: the values that differ from the levels below, pretty JSON,
        replaced atomically (§5.3).

        Args:
            level: the level to save, 1 to 9.
            try_once: write ``confN.json.try``, read at the next load only; a normal
                save deletes a stale one.

        Returns:
            The path written.

        Raises:
            ConfigError: if there is no state directory or the file cannot be
                written (the old file is then untouched).
            ValueError: if level is not between 1 and 9.
        """
        _check_level(level, 1)
        if self.state_dir is None:
            raise ConfigError("", "no state directory to save the configuration in")
        plain = self.state_dir / f"conf{level}.json"
        once = plain.with_name(plain.name + ".try")
        target = once if try_once else plain
        diff: dict[str, Any] = {}
        for leaf in self.schema.leaves():
            value = self._raw(leaf.path, level)
            if value != self._raw(leaf.path, level - 1):
                *parents, name = leaf.path.split(".")
                node = diff
                for part in parents:
                    node = node.setdefault(part, {})
                node[name] = value
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(target, (encode(diff, indent=2) + "\n").encode())
            if not try_once and once.exists():
                once.unlink()
                fsync_directory(self.state_dir)
        except OSError as exc:
            raise ConfigError("", f"cannot write {target}: {exc.strerror or exc}") from exc
        return target

    def __repr__(self) -> str:
        try:
            device_id = self.device_id
        except ConfigError:
            device_id = "?"
        return f"<Config {device_id!r} in {self.state_dir}>"
