"""One handler set for the RPC channel tests: the same methods behind every channel.

``make_dispatcher()`` registers, in this order (``RPC.List`` answers most recent first):

- ``Sum`` ``{a, b}``: both numbers required (``args``, ``description``); the sum written
  with two decimals (``RawJSON``), as the seed app's ``Sum``;
- ``Echo`` (async): the params back;
- ``Note``: appends its params to the returned list (a notification target);
- ``Config.Get``: ``{"user": call.user}`` (for the ACL tests);
- ``Fail``: raises ``RpcError(-1, fail_message)``.
"""

from __future__ import annotations

from typing import Any

from tether.rpc import Call, Dispatcher, RawJSON, RpcError

DEVICE_ID = "tether_0A1B2C"

SUM_ARGS = {
    "type": "object",
    "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
    "required": ["a", "b"],
}


def make_dispatcher(
    device_id: str = DEVICE_ID, *, fail_message: str = "nope", **dispatcher_kwargs: Any
) -> tuple[Dispatcher, list[Any]]:
    """The shared handler set on a new `Dispatcher(device_id, **dispatcher_kwargs)`; returns
    the dispatcher and the list ``Note`` appends to."""
    dispatcher = Dispatcher(device_id, **dispatcher_kwargs)
    notes: list[Any] = []

    @dispatcher.method("Sum", args=SUM_ARGS, description="Adds two numbers.")
    def sum_(call: Call) -> Any:
        return RawJSON(f"{call.params['a'] + call.params['b']:.2f}")

    @dispatcher.method("Echo")
    async def echo(call: Call) -> Any:
        return call.params

    @dispatcher.method("Note")
    def note(call: Call) -> None:
        notes.append(call.params)

    @dispatcher.method("Config.Get")
    def config_get(call: Call) -> Any:
        return {"user": call.user}

    @dispatcher.method("Fail")
    def fail(call: Call) -> None:
        raise RpcError(-1, fail_message)

    return dispatcher, notes
