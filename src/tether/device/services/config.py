"""The ``Config.*`` RPC service: ``Config.Get``, ``Config.Set``, ``Config.Save`` (spec mgos-rpc.md §5.3).

Plus tether's ``Config.Schema``: the schema's entries, what a settings form is made
from (``[path, type, params]`` in schema order, ``"secret": true`` in the params of
secrets; types and titles only, never values).

Replies follow mgos: the configuration as compact JSON in schema order with
floats written with six decimals, unset strings ``""``; ``Config.Set`` and
``Config.Save`` always answer ``{"saved": bool}`` (mos needs a ``result``, §12).

Secrets differ from mgos, on purpose. mgos returns ``wifi.sta.pass``,
``mqtt.pass``, ``dash.token`` and the like in clear to whoever may call
``Config.Get`` and leaves their protection to the RPC ACL. tether is secure by
default: ``Config.Get`` shows a set secret in clear only to an authenticated
caller (one the ACL made log in, ``Call.user`` not None) and as ``"********"``
to anyone else; an unset secret reads ``""`` either way. A ``Config.Set`` that
sends the placeholder back for a secret (a tree read and written back whole)
leaves that secret unchanged. To read secrets remotely, require a user for
``Config.*`` in ``rpc.acl`` (§4), e.g.
``[{"method":"Config.*","acl":"admin"},{"method":"*","acl":"*"}]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tether.config import Config, ConfigError, UnknownKey
from tether.rpc import Call, Dispatcher, RawJSON, RpcError

__all__ = ["REBOOT_DELAY", "register"]

#: Seconds between a ``reboot: true`` reply and the restart (§5.3: 500 ms).
REBOOT_DELAY = 0.5

_GET_ARGS = {
    "type": "object",
    "properties": {
        "key": {"type": "string", "description": "dotted key of a value or subtree; all if absent"},
        "level": {"type": "integer", "description": "read levels 0 to this one only"},
    },
}
_SET_ARGS = {
    "type": "object",
    "properties": {
        "config": {"description": "the (partial) tree to apply"},
        "key": {"type": "string", "description": "the dotted key config or value applies to"},
        "value": {"description": "synonym of config"},
        "level": {"type": "integer", "description": "the level to change, 1 to 9 (default 9)"},
        "save": {"type": "boolean", "description": "write the level's file"},
        "try_once": {"type": "boolean", "description": "write confN.json.try, used at the next start only"},
        "reboot": {"type": "boolean", "description": "restart after saving"},
    },
}
_SAVE_ARGS = {
    "type": "object",
    "properties": {
        "try_once": {"type": "boolean", "description": "write conf9.json.try, used at the next start only"},
        "reboot": {"type": "boolean", "description": "restart after saving"},
    },
}


def register(
    dispatcher: Dispatcher,
    config: Config,
    *,
    reboot: Callable[[float], None],
    changed: Callable[[list[str]], None],
) -> None:
    """Register ``Config.Get``, ``Config.Set``, ``Config.Save`` and ``Config.Schema`` on dispatcher.

    Args:
        dispatcher: where the methods go.
        config: the device's running configuration, loaded.
        reboot: called with the delay in seconds (0.5) when a caller asks for a
            restart after saving; it schedules the restart and returns at once.
        changed: called with the keys whose running value a ``Config.Set`` changed
            (never with an empty list), so that services can re-read them.
    """

    def get(call: Call) -> RawJSON:
        level = _level(call.params["level"], lowest=0) if "level" in call.params else None
        try:
            value = config.get(call.params.get("key") or None, level=level, redact=call.user is None)
        except UnknownKey:
            raise RpcError(404, "invalid config key") from None
        return RawJSON(config.dumps(value))

    def set_(call: Call) -> dict[str, bool]:
        params = call.params
        value = params.get("config")
        if value is None:
            value = params.get("value")
        if value is None:
            raise RpcError(400, "value is required")
        level = _level(params.get("level", 9), lowest=1)
        try:
            paths = config.set(value, key=params.get("key") or None, level=level, keep_redacted=True)
        except UnknownKey:
            raise RpcError(404, "invalid config key") from None
        except ConfigError as exc:
            raise RpcError(400, f"invalid config value: {exc}") from None
        if paths:
            changed(paths)
        if not params.get("save"):
            return {"saved": False}
        _save(config, level, bool(params.get("try_once")))
        if params.get("reboot"):
            reboot(REBOOT_DELAY)
        return {"saved": True}

    def save(call: Call) -> dict[str, bool]:
        _save(config, 9, bool(call.params.get("try_once")))
        if call.params.get("reboot"):
            reboot(REBOOT_DELAY)
        return {"saved": True}

    def schema(call: Call) -> list[list[Any]]:
        entries = config.schema.entries()
        for entry in entries:
            if entry[1] != "o" and config.schema.is_secret(entry[0]):
                entry[2]["secret"] = True
        return entries

    # Registered first, so that RPC.List (latest first) still starts with Save, Set, Get.
    dispatcher.add_handler(
        "Config.Schema",
        schema,
        args={"type": "object", "properties": {}},
        description="The schema as [path, type, params] entries, secrets marked, for a settings form.",
    )
    dispatcher.add_handler(
        "Config.Get",
        get,
        args=_GET_ARGS,
        args_fmt="{key: %Q, level: %d}",
        description="The configuration, or the value or subtree at key.",
    )
    dispatcher.add_handler(
        "Config.Set",
        set_,
        args=_SET_ARGS,
        args_fmt="{config: %M, key: %Q, value: %M, level: %d, save: %B, try_once: %B, reboot: %B}",
        description="Change the running configuration; save and restart if asked.",
    )
    dispatcher.add_handler(
        "Config.Save",
        save,
        args=_SAVE_ARGS,
        args_fmt="{try_once: %B, reboot: %B}",
        description="Save the running configuration to conf9.json; restart if asked.",
    )


def _level(value: Any, *, lowest: int) -> int:
    """The ``level`` param as an int; 400 when it is out of range (0 for Config.Set: ``not allowed``)."""
    level = int(value)
    if lowest == 1 and level == 0:
        raise RpcError(400, "not allowed")  # §5.3: level 0 is the schema's defaults
    if not lowest <= level <= 9:
        raise RpcError(400, f"level {level} is not between {lowest} and 9")
    return level


def _save(config: Config, level: int, try_once: bool) -> None:
    try:
        config.save(level=level, try_once=try_once)
    except ConfigError as exc:
        raise RpcError(-1, f"error saving config: {exc}") from None
