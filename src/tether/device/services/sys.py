"""The ``Sys.*`` service: ``Sys.GetInfo``, ``Sys.Reboot``, ``Sys.SetDebug`` (spec mgos-rpc.md §3)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tether.errors import RpcError
from tether.rpc import Call, Dispatcher

__all__ = ["register"]


def register(
    dispatcher: Dispatcher,
    *,
    info: Callable[[], dict[str, Any]],
    reboot: Callable[[float], None],
    cancel_reboot: Callable[[], bool],
    set_debug: Callable[[int, str | None], None],
) -> None:
    """Add the ``Sys.*`` methods to dispatcher.

    Args:
        dispatcher: where to register them.
        info: returns ``Sys.GetInfo``'s result, its fields in the spec's order.
        reboot: restarts the app after the given seconds.
        cancel_reboot: cancels a pending restart; False if none was pending.
        set_debug: applies a log level (-1..4) and, if not None, ``debug.file_level``;
            raises ValueError for a bad one.
    """

    @dispatcher.method("Sys.GetInfo", description="Device id, app, version, memory, storage, network.")
    def get_info(call: Call) -> dict[str, Any]:
        return info()

    @dispatcher.method(
        "Sys.Reboot",
        args={
            "type": "object",
            "properties": {"delay_ms": {"type": "integer"}, "abort": {"type": "boolean"}},
        },
        description="Restart the app after delay_ms (100); abort cancels a pending restart.",
    )
    def reboot_(call: Call) -> None:
        if call.params.get("abort"):
            cancel_reboot()
            return
        delay_ms = call.params.get("delay_ms", 100)
        if delay_ms < 0:
            raise RpcError(400, "invalid delay_ms")
        reboot(delay_ms / 1000)

    @dispatcher.method(
        "Sys.SetDebug",
        args={
            "type": "object",
            "properties": {
                "level": {"type": "integer"},
                "file_level": {"type": "string"},
                "udp_log_addr": {"type": "string"},
            },
        },
        description="Set the log level (-1..4) and debug.file_level of the running app.",
    )
    def set_debug_(call: Call) -> None:
        if call.params.get("udp_log_addr"):
            raise RpcError(400, "udp logging is not available")
        level = call.params.get("level")
        if level is None:
            raise RpcError(400, "invalid level")
        try:
            set_debug(level, call.params.get("file_level"))
        except ValueError:
            raise RpcError(400, "invalid level") from None
        # §3 quirk: success is "error": {"code": 0}; mos prints null.
        raise RpcError(0)
