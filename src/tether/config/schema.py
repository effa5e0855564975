"""The configuration schema: mos.yml ``config_schema`` entries (spec mgos-rpc.md §5.1).

A schema is the merged list of entries of every library and then the app, later
entries winning, as mgos' ``mgos_gen_config.py`` merges them. The forms:

- ``[path, type, {params}]``: a value with the zero default of its type
  (``false``, ``0``, ``0.0``, ``""``), or with type ``o`` an object;
- ``[path, type, default, {params}]``: a value with a default;
- ``[path, default]``: a new default for a value defined elsewhere (in any order);
- ``[path, "other.path", {params}]``: a copy of another entry, e.g. ``wifi.sta1``
  of ``wifi.sta``, with the params given here at its top.

Types: ``o`` object, ``b`` boolean, ``i`` int (32-bit), ``ui`` unsigned int
(32-bit), ``f`` and ``d`` floating point, ``s`` string. Parents are created as
needed. A redefined path keeps its place; the schema order is the order of first
definition. Copies are resolved when the schema is read, so a default changed
on ``wifi.sta.enable`` also shows in ``wifi.sta1.enable``. A top-level object with
the param ``abstract: true`` is only a template for copies: it has no values.
"""

from __future__ import annotations

import copy
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from tether.errors import ConfigError

__all__ = [
    "LEAF_TYPES",
    "REDACTED",
    "STANDARD_ENTRIES",
    "TYPES",
    "Leaf",
    "Schema",
    "UnknownKey",
    "convert_text",
    "convert_value",
]

logger = logging.getLogger("tether.config")

#: The value types of leaves.
LEAF_TYPES = frozenset({"b", "i", "ui", "f", "d", "s"})
#: Every schema type: the leaf types and ``o`` (object).
TYPES = LEAF_TYPES | {"o"}
#: What a set secret reads as when redacted; unset secrets read ``""``.
REDACTED = "********"

_INT_RANGES = {"i": (-(2**31), 2**31 - 1), "ui": (0, 2**32 - 1)}
_ZERO: dict[str, Any] = {"b": False, "i": 0, "ui": 0, "f": 0.0, "d": 0.0, "s": ""}
_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_TRUE_TEXT = frozenset({"1", "t", "T", "TRUE", "true", "True"})  # Go's strconv.ParseBool, as mos
_FALSE_TEXT = frozenset({"0", "f", "F", "FALSE", "false", "False"})
#: Names of leaves that hold secrets whatever their params say.
_SECRET_NAMES = frozenset({"pass", "password", "token", "secret"})
#: How deep copies of copies may go before the schema is called circular.
_MAX_COPY_DEPTH = 16

# §5.1: key parts become C identifiers in mgos, so C/C++ keywords are refused (the
# list of mgos_gen_config.py).
_RESERVED_WORDS = (
    "alignas alignof and and_eq asm auto bitand bitor bool break case catch char char16_t char32_t "
    "class compl const constexpr const_cast continue decltype default delete do double dynamic_cast "
    "else enum explicit export extern false float for friend goto if inline int long mutable "
    "namespace new noexcept not not_eq nullptr operator or or_eq private protected public register "
    "reinterpret_cast restrict return short signed sizeof static static_assert static_cast struct "
    "switch template this thread_local throw true try typedef typeid typename union unsigned using "
    "virtual void volatile wchar_t while xor xor_eq"
)
_RESERVED = frozenset(_RESERVED_WORDS.split())


class UnknownKey(ConfigError):
    """A key the schema does not have: ``Config.Get`` answers 404 ``invalid config key``."""

    def __init__(self, path: str) -> None:
        super().__init__(path, "invalid config key")


@dataclass(frozen=True)
class Leaf:
    """One value of the configuration.

    Attributes:
        path: the dotted key, e.g. ``wifi.sta.ssid``.
        type: one of ``b``, ``i``, ``ui``, ``f``, ``d``, ``s``.
        default: the level 0 value (``""`` for an unset string).
        params: the UI hints of the schema entry (``title``, ``type``, ``hide``, ``read_only``).
    """

    path: str
    type: str
    default: Any
    params: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass
class _Entry:
    path: str
    type: str  # a schema type, or the path of the entry this one copies
    default: Any
    params: dict[str, Any]


class _Resolved:
    """The schema as values and objects, in schema order."""

    def __init__(self) -> None:
        self.leaves: dict[str, Leaf] = {}
        self.objects: dict[str, Mapping[str, Any]] = {"": {}}
        self.children: dict[str, list[str]] = {"": []}
        self.order: dict[str, int] = {}

    def add(self, path: str, params: Mapping[str, Any], leaf: Leaf | None) -> None:
        parent = path.rpartition(".")[0]
        self.children[parent].append(path)
        if leaf is None:
            self.objects[path] = params
            self.children[path] = []
        else:
            self.order[path] = len(self.leaves)
            self.leaves[path] = Leaf(leaf.path, leaf.type, leaf.default, MappingProxyType(dict(params)))


class Schema:
    """The keys of a configuration, their types, defaults and UI hints.

    Start from `Schema.standard` (the keys of §5.5) and `extend` it with the
    ``config_schema`` of the app's mos.yml; then give it to `tether.config.Config`.
    """

    def __init__(self) -> None:
        self._entries: list[_Entry] = []
        self._index: dict[str, int] = {}
        self._overrides: dict[str, Any] = {}
        self._resolved: _Resolved | None = _Resolved()

    @classmethod
    def standard(cls) -> Schema:
        """A new schema with the standard keys of a Linux device (§5.5)."""
        schema = cls()
        schema.extend(STANDARD_ENTRIES)
        return schema

    def extend(self, entries: Iterable[Any]) -> None:
        """Merge ``config_schema`` entries; later entries win over earlier ones.

        Either every entry is merged or, on an error, none.

        Args:
            entries: a list of entries in one of the forms of the module docstring,
                as a YAML or JSON loader returns them.

        Raises:
            ConfigError: naming the first bad entry (its path, or "" when it has none):
                a malformed entry, a bad key, a default of the wrong type, a copy of
                an entry that does not exist.
        """
        if isinstance(entries, (str, bytes, Mapping)):
            raise ConfigError("", f"config_schema must be a list of entries, not {type(entries).__name__}")
        saved = (copy.deepcopy(self._entries), dict(self._index), copy.deepcopy(self._overrides))
        try:
            for entry in entries:
                self._merge(entry)
            self._resolved = None
            self._resolve()
        except ConfigError:
            self._entries, self._index, self._overrides = saved
            self._resolved = None
            self._resolve()
            raise

    def _merge(self, raw: Any) -> None:
        if not isinstance(raw, (list, tuple)) or not raw or not isinstance(raw[0], str):
            raise ConfigError("", f"config_schema entry {raw!r} is not a list starting with a path")
        path = raw[0]
        _check_path(path)
        if len(raw) == 2:
            self._overrides[path] = raw[1]
            return
        if len(raw) not in (3, 4):
            raise ConfigError(path, f"config_schema entry for {path!r} has {len(raw)} elements, not 2 to 4")
        kind, params = raw[1], raw[-1]
        if not isinstance(kind, str):
            raise ConfigError(path, f"config_schema entry for {path!r}: the type must be a string")
        if not isinstance(params, Mapping):
            raise ConfigError(path, f"config_schema entry for {path!r}: params must be an object")
        if "abstract" in params and (kind != "o" or "." in path or not isinstance(params["abstract"], bool)):
            raise ConfigError(path, f"config_schema entry for {path!r}: only top-level objects are abstract")
        if len(raw) == 4:
            if kind not in LEAF_TYPES:
                raise ConfigError(path, f"config_schema entry for {path!r}: a default needs a value type")
            default = _check_default(path, kind, raw[2])
        else:
            default = _ZERO.get(kind)
        parts = path.split(".")
        for depth in range(1, len(parts)):
            parent = ".".join(parts[:depth])
            at = self._index.get(parent)
            if at is None:
                self._append(_Entry(parent, "o", None, {}))
            elif self._entries[at].type in LEAF_TYPES:
                raise ConfigError(path, f"config_schema entry for {path!r}: {parent!r} is not an object")
        entry = _Entry(path, kind, default, dict(params))
        at = self._index.get(path)
        if at is None:
            self._append(entry)
        else:
            self._entries[at] = entry  # a redefinition keeps its place

    def _append(self, entry: _Entry) -> None:
        self._index[entry.path] = len(self._entries)
        self._entries.append(entry)

    def _resolve(self) -> _Resolved:
        if self._resolved is not None:
            return self._resolved
        resolved = _Resolved()
        children: dict[str, list[_Entry]] = {}
        for entry in self._entries:
            children.setdefault(entry.path.rpartition(".")[0], []).append(entry)
        for entry in children.get("", []):
            if not entry.params.get("abstract"):
                self._emit(entry, entry.path, entry.params, children, resolved, 0)
        for path in self._overrides:
            if path not in resolved.leaves:
                # mgos ignores these too: an app may override keys of a library it lacks.
                logger.warning("config_schema: no value %r to set the default of", path)
        self._resolved = resolved
        return resolved

    def _emit(
        self,
        entry: _Entry,
        path: str,
        params: Mapping[str, Any],
        children: Mapping[str, list[_Entry]],
        resolved: _Resolved,
        depth: int,
    ) -> None:
        if entry.type == "o":
            resolved.add(path, params, None)
            for child in children.get(entry.path, []):
                name = child.path.rpartition(".")[2]
                self._emit(child, f"{path}.{name}", child.params, children, resolved, depth)
        elif entry.type in LEAF_TYPES:
            default = entry.default
            # A copy takes the source's changed default unless it has one of its own.
            for key in (entry.path, path):
                if key in self._overrides:
                    default = _check_default(key, entry.type, self._overrides[key])
            resolved.add(path, params, Leaf(path, entry.type, default, params))
        else:
            at = self._index.get(entry.type)
            if at is None:
                raise ConfigError(path, f"config_schema entry for {path!r}: no entry {entry.type!r} to copy")
            if depth >= _MAX_COPY_DEPTH:
                raise ConfigError(path, f"config_schema entry for {path!r}: copies of copies go in a circle")
            self._emit(self._entries[at], path, params, children, resolved, depth + 1)

    # Reading.

    def paths(self) -> list[str]:
        """The paths of the values, in schema order."""
        return list(self._resolve().leaves)

    def leaves(self, path: str = "") -> list[Leaf]:
        """The values at or under path ("" for all), in schema order.

        Raises:
            UnknownKey: if path is neither a value nor an object.
        """
        resolved = self._resolve()
        if path not in resolved.leaves and path not in resolved.objects:
            raise UnknownKey(path)
        found: list[Leaf] = []
        stack = [path]
        while stack:
            top = stack.pop()
            if top in resolved.leaves:
                found.append(resolved.leaves[top])
            else:
                stack.extend(reversed(resolved.children[top]))
        return found

    def leaf(self, path: str) -> Leaf:
        """The value at path.

        Raises:
            UnknownKey: if the schema has no such key.
            ConfigError: if path is an object.
        """
        resolved = self._resolve()
        found = resolved.leaves.get(path)
        if found is not None:
            return found
        if path in resolved.objects:
            raise ConfigError(path, f"[{path}] is an object, not a value")
        raise UnknownKey(path)

    def has(self, path: str) -> bool:
        """True if path is a value or an object of the schema ("" is the root object)."""
        resolved = self._resolve()
        return path in resolved.leaves or path in resolved.objects

    def is_object(self, path: str) -> bool:
        """True if path is an object ("" is the root object)."""
        return path in self._resolve().objects

    def children(self, path: str = "") -> list[str]:
        """The paths of the values and objects directly under the object path, in schema order.

        Raises:
            UnknownKey: if path is not an object.
        """
        found = self._resolve().children.get(path)
        if found is None:
            raise UnknownKey(path)
        return list(found)

    def order(self, path: str) -> int:
        """The position of the value path in schema order (for sorting paths)."""
        return self._resolve().order[path]

    def is_secret(self, path: str) -> bool:
        """True if the value at path is a secret: redacted by `tether.config.Config.tree`,
        never logged.

        Secrets are the values whose params say ``type: password`` and those whose
        name is or ends in ``pass``, ``password``, ``token`` or ``secret`` after an
        underscore (``wifi.sta.pass``, ``mqtt.pass``, ``dash.token``), so that an
        app's own ``app.api_token`` is covered too.
        """
        found = self._resolve().leaves.get(path)
        if found is None:
            return False
        name = path.rpartition(".")[2]
        return (
            found.params.get("type") == "password"
            or name in _SECRET_NAMES
            or name.rpartition("_")[2] in _SECRET_NAMES
        )

    def entries(self) -> list[list[Any]]:
        """The resolved schema as ``[path, type, params]`` entries, the form of mgos'
        ``conf_schema.json`` that a configuration UI reads."""
        resolved = self._resolve()
        result: list[list[Any]] = []
        stack = list(reversed(resolved.children[""]))
        while stack:
            path = stack.pop()
            value = resolved.leaves.get(path)
            if value is None:
                result.append([path, "o", dict(resolved.objects[path])])
                stack.extend(reversed(resolved.children[path]))
            else:
                result.append([path, value.type, dict(value.params)])
        return result

    def __repr__(self) -> str:
        return f"<Schema with {len(self._resolve().leaves)} values>"


def convert_value(leaf: Leaf, value: Any, *, secret: bool = False) -> Any:
    """A JSON value for leaf checked and converted to its type (§5.2).

    An int is accepted for ``f``/``d``; ``null`` for a string means unset (``""``).

    Args:
        leaf: the schema value.
        value: what a file or a ``Config.Set`` holds for it.
        secret: True to keep the value out of the error message.

    Raises:
        ConfigError: with mgos' message, e.g. ``[debug.level] is not a number``,
            ``[debug.level] failed to parse [1.5]``, ``[a.b] is not a boolean``.
    """
    path, kind = leaf.path, leaf.type
    if kind == "b":
        if isinstance(value, bool):
            return value
        raise ConfigError(path, f"[{path}] is not a boolean")
    if kind == "s":
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        raise ConfigError(path, f"[{path}] is not a string")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(path, f"[{path}] is not a number")
    shown = REDACTED if secret else value
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        if isinstance(value, float) or not low <= value <= high:
            # mgos reads ints with strtol: "1.5" stops at the dot.
            raise ConfigError(path, f"[{path}] failed to parse [{shown}]")
        return value
    try:
        number = float(value)
    except OverflowError:
        raise ConfigError(path, f"[{path}] failed to parse [{shown}]") from None
    if not math.isfinite(number):
        raise ConfigError(path, f"[{path}] failed to parse [{shown}]")
    return number


def convert_text(leaf: Leaf, text: str, *, secret: bool = False) -> Any:
    """Text from a command line (``key=value``) converted to leaf's type, as mos config-set
    converts it (§5.4): strings as they are, ``true``/``false`` (also ``1``/``0``, ``t``/``f``)
    for booleans, decimal numbers.

    Raises:
        ConfigError: ``[k] is not a boolean`` or ``[k] failed to parse [text]``.
    """
    path, kind = leaf.path, leaf.type
    if kind == "s":
        return text
    if kind == "b":
        if text in _TRUE_TEXT or text in _FALSE_TEXT:
            return text in _TRUE_TEXT
        raise ConfigError(path, f"[{path}] is not a boolean")
    shown = REDACTED if secret else text
    if kind in _INT_RANGES:
        if not _INT_TEXT.fullmatch(text):
            raise ConfigError(path, f"[{path}] failed to parse [{shown}]")
        return convert_value(leaf, int(text), secret=secret)
    if not _FLOAT_TEXT.fullmatch(text):
        raise ConfigError(path, f"[{path}] failed to parse [{shown}]")
    return convert_value(leaf, float(text), secret=secret)


def _check_path(path: str) -> None:
    for part in path.split("."):
        if not _PART.fullmatch(part):
            raise ConfigError(path, f"config key {path!r}: {part!r} is not a name")
        if part in _RESERVED:
            raise ConfigError(path, f"config key {path!r}: {part!r} is a C/C++ keyword")


def _check_default(path: str, kind: str, default: Any) -> Any:
    """The default of a schema entry, checked like mgos_gen_config.py does (an int is
    fine for a float); the message names the type, never the value (it may be a secret)."""
    try:
        return convert_value(Leaf(path, kind, None), default, secret=True)
    except ConfigError:
        message = f"config_schema entry for {path!r}: a {type(default).__name__} default for type {kind!r}"
        raise ConfigError(path, message) from None


def _title(text: str) -> dict[str, Any]:
    return {"title": text}


_SECRET = {"type": "password"}

#: The standard keys of a Linux device (§5.5), as ``config_schema`` entries.
STANDARD_ENTRIES: Sequence[list[Any]] = (
    ["device", "o", _title("Device settings")],
    ["device.id", "s", "tether_??????", _title("Device ID; each ? becomes a digit of the MAC address")],
    ["device.license", "s", {**_title("License key"), **_SECRET}],
    ["device.mac", "s", _title("MAC address, 12 hex digits")],
    ["device.public_key", "s", _title("Public key")],
    ["device.sn", "s", _title("Serial number")],
    ["conf_acl", "s", "*", _title("Keys configuration levels above may change (comma list of globs)")],
    ["sys", "o", _title("System settings")],
    ["sys.tz_spec", "s", _title("Time zone (TZ spec)")],
    ["sys.wdt_timeout", "i", 30, _title("Watchdog timeout, seconds")],
    ["debug", "o", _title("Debug settings")],
    ["debug.level", "i", 2, _title("Log level: -1 none, 0 error, 1 warning, 2 info, 3 debug, 4 verbose")],
    ["debug.file_level", "s", _title("Log levels by source file, e.g. mg_rpc.c=1,=3")],
    ["debug.event_level", "i", 2, _title("Highest level forwarded as log events")],
    ["debug.stdout_topic", "s", _title("MQTT topic for the standard output")],
    ["debug.stderr_topic", "s", _title("MQTT topic for the standard error")],
    ["debug.udp_log_addr", "s", _title("Send logs over UDP to this ip:port")],
    ["debug.udp_log_level", "i", 3, _title("Highest level sent over UDP")],
    ["debug.log_file", "s", "", _title("Log to this file")],
    ["debug.log_file_size", "i", 1048576, _title("Rotate the log file at this size, bytes")],
    ["debug.log_file_count", "i", 3, _title("Log files kept")],
    ["rpc", "o", _title("RPC settings")],
    ["rpc.enable", "b", True, _title("Enable RPC")],
    ["rpc.http_enable", "b", True, _title("Serve RPC over HTTP")],
    ["rpc.service_sys_enable", "b", True, _title("Enable the Sys.* service")],
    ["rpc.max_frame_size", "i", 4096, _title("Largest frame, bytes")],
    ["rpc.max_queue_length", "i", 25, _title("Calls waiting for a channel")],
    ["rpc.max_non_persistent_channels", "i", 20, _title("Non-persistent channels open at once")],
    ["rpc.default_out_channel_idle_close_timeout", "i", 10, _title("Close idle outbound channels, s")],
    ["rpc.acl", "s", _title("ACL: JSON text or @file")],
    ["rpc.acl_file", "s", _title("ACL file (deprecated)")],
    ["rpc.auth_domain", "s", "RPC", _title("Realm of in-frame authentication")],
    ["rpc.auth_file", "s", _title("htdigest file of in-frame authentication")],
    ["rpc.auth_algo", "i", 0, _title("Digest algorithm: 0 MD5, 1 SHA-256")],
    [
        "rpc.cors_origins",
        "s",
        "",
        _title("Web origins that may call besides the device's own (comma list; * for any)"),
    ],
    ["rpc.ws", "o", _title("RPC over an outbound WebSocket")],
    ["rpc.ws.enable", "b", True, _title("Enable")],
    ["rpc.ws.server_address", "s", _title("ws:// or wss:// address to dial")],
    ["rpc.ws.reconnect_interval_min", "i", 1, _title("Shortest reconnect delay, s")],
    ["rpc.ws.reconnect_interval_max", "i", 60, _title("Longest reconnect delay, s")],
    ["rpc.ws.ssl_ca_file", "s", _title("TLS CA file")],
    ["rpc.ws.ssl_client_cert_file", "s", _title("TLS client certificate file")],
    ["rpc.ws.ssl_client_key_file", "s", _title("TLS client key file")],
    ["rpc.uart", "o", _title("RPC over a serial port")],
    ["rpc.uart.enable", "b", False, _title("Enable")],
    ["rpc.uart.device", "s", "", _title("Serial device path")],
    ["rpc.uart.baud_rate", "i", 115200, _title("Baud rate")],
    ["rpc.uart.fc_enable", "b", False, _title("Hardware flow control")],
    ["rpc.uart.wait_for_start_frame", "b", True, _title("Wait for the peer's start frame")],
    ["rpc.mqtt", "o", _title("RPC over MQTT")],
    ["rpc.mqtt.enable", "b", True, _title("Enable")],
    ["rpc.mqtt.pub_topic", "s", "%.*s/rpc", _title("Topic of replies (%.*s: the caller)")],
    ["rpc.mqtt.sub_topic", "s", "%.*s/rpc", _title("Topic of requests (%.*s: device.id)")],
    ["rpc.mqtt.sub_wc", "b", True, _title("Also subscribe to <topic>/#")],
    ["rpc.mqtt.qos", "i", 1, _title("QoS")],
    ["http", "o", _title("HTTP server")],
    ["http.enable", "b", True, _title("Enable")],
    [
        "http.listen_addr",
        "s",
        "127.0.0.1:8000",
        _title("Port or address:port to listen on; a bare port listens on every interface"),
    ],
    ["http.document_root", "s", "", _title("Serve files from this directory")],
    ["http.ssl_cert", "s", _title("TLS certificate file")],
    ["http.ssl_key", "s", _title("TLS key file")],
    ["http.ssl_ca_cert", "s", _title("TLS CA file for client certificates")],
    ["mqtt", "o", _title("MQTT client")],
    ["mqtt.enable", "b", False, _title("Enable")],
    ["mqtt.server", "s", "", _title("Broker, host:port")],
    ["mqtt.client_id", "s", "", _title("Client id; device.id if empty")],
    ["mqtt.user", "s", _title("User")],
    ["mqtt.pass", "s", {**_title("Password"), **_SECRET}],
    ["mqtt.ssl_cert", "s", _title("TLS client certificate file")],
    ["mqtt.ssl_key", "s", _title("TLS client key file")],
    ["mqtt.ssl_ca_cert", "s", _title("TLS CA file")],
    ["mqtt.clean_session", "b", True, _title("Clean session")],
    ["mqtt.keep_alive", "i", 60, _title("Keep-alive, s")],
    ["mqtt.will_topic", "s", _title("Will topic")],
    ["mqtt.will_message", "s", _title("Will message")],
    ["mqtt.will_retain", "b", False, _title("Retain the will")],
    ["mqtt.reconnect_timeout_min", "d", 2.0, _title("Shortest reconnect delay, s")],
    ["mqtt.reconnect_timeout_max", "d", 60.0, _title("Longest reconnect delay, s")],
    ["wifi", "o", _title("Wi-Fi")],
    ["wifi.ap", "o", _title("Access point")],
    ["wifi.ap.enable", "b", False, _title("Enable")],
    ["wifi.ap.ssid", "s", "Tether_??????", _title("SSID; each ? becomes a digit of the MAC address")],
    ["wifi.ap.pass", "s", "", {**_title("Password"), **_SECRET}],
    ["wifi.ap.ip", "s", "192.168.4.1", _title("IP address")],
    ["wifi.sta", "o", _title("Station")],
    ["wifi.sta.enable", "b", False, _title("Connect to a Wi-Fi network")],
    ["wifi.sta.ssid", "s", _title("SSID")],
    ["wifi.sta.pass", "s", {**_title("Password"), **_SECRET}],
    ["wifi.sta.ip", "s", _title("Static IP address (empty for DHCP)")],
    ["wifi.sta.netmask", "s", _title("Netmask")],
    ["wifi.sta.gw", "s", _title("Gateway")],
    ["update", "o", _title("Firmware updates")],
    [
        "update.key",
        "s",
        "",
        _title("Public key that signs updates (base64 Ed25519); empty: unsigned accepted"),
    ],
    ["update.max_size", "i", 64 * 1024 * 1024, _title("Largest update bundle, bytes")],
    ["update.ssl_ca_file", "s", "", _title("CA bundle (PEM) for OTA.Update over https; empty: certifi's")],
    ["dash", "o", _title("Dashboard backend")],
    ["dash.enable", "b", False, _title("Enable")],
    ["dash.token", "s", {**_title("Access token"), **_SECRET}],
    ["dash.server", "s", _title("wss:// address of the backend")],
)
