"""tether.rpc.dispatch: handler lookup, descriptions, limits, errors (spec mgos-rpc.md §1.1, §3)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.errors import RpcError
from tether.rpc import Call, Dispatcher, InvalidFrame, Request, WrongDestination
from tether.rpc.dispatch import DEADLINE_EXCEEDED

SUM_ARGS = {
    "type": "object",
    "properties": {"a": {"type": "number"}, "b": {"type": "number", "default": 10}},
    "required": ["a"],
}


async def call(dispatcher: Dispatcher, method: str, params: Any = None, **frame: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": 1, "method": method, **frame}
    if params is not None:
        body["params"] = params
    reply = await dispatcher.handle(json.dumps(body), channel=frame.pop("channel", "WS_in"), peer="p:1")
    assert reply is not None
    decoded: dict[str, Any] = json.loads(reply)
    return decoded


def result(reply: dict[str, Any]) -> Any:
    assert "error" not in reply, reply
    return reply["result"]


def error(reply: dict[str, Any]) -> tuple[int, str]:
    return reply["error"]["code"], reply["error"].get("message", "")


async def test_globs_and_last_registration_first() -> None:
    d = Dispatcher("dev")
    d.add_handler("Sys.GetInfo", lambda c: "exact")
    d.add_handler("Sys.*", lambda c: "star")
    d.add_handler("FS.?et", lambda c: "question")
    d.add_handler("a/**", lambda c: "any")
    d.add_handler("x.a,x.b|x.c", lambda c: "alternatives")
    d.add_handler("Sys.Reboot", lambda c: "later exact")
    assert result(await call(d, "Sys.GetInfo")) == "star"  # the glob came later
    assert result(await call(d, "sys.reboot")) == "later exact"
    assert result(await call(d, "SYS.anything")) == "star"
    assert error(await call(d, "Sys.a/b")) == (404, "No handler for Sys.a/b")  # * stops at /
    assert result(await call(d, "fs.get")) == result(await call(d, "FS.Set")) == "question"
    assert error(await call(d, "FS.Gett"))[0] == 404
    assert result(await call(d, "a/b/c.d")) == "any"
    assert [result(await call(d, m)) for m in ("x.a", "x.b", "X.C")] == ["alternatives"] * 3
    assert d.lookup("nothing") is None


async def test_registering_a_name_again_replaces_it() -> None:
    d = Dispatcher("dev")
    d.add_handler("M", lambda c: 1)
    d.add_handler("Other", lambda c: 0)
    d.add_handler("m", lambda c: 2)
    assert result(await call(d, "M")) == 2
    assert result(await call(d, "RPC.List")) == ["m", "Other", "RPC.List", "RPC.Describe", "RPC.Ping"]
    d.add_handler("G.*", lambda c: 3)
    d.add_handler("g.*", lambda c: 4)
    assert result(await call(d, "G.x")) == 4
    assert d.remove_handler("G.*") and d.remove_handler("M")
    assert not d.remove_handler("M")
    assert error(await call(d, "G.x"))[0] == 404
    with pytest.raises(ValueError, match="name"):
        d.add_handler("", lambda c: None)


async def test_descriptions() -> None:
    d = Dispatcher("dev")

    @d.method("Sum", args=SUM_ARGS, description="Adds two numbers.")
    def sum_(call: Call) -> float:
        return float(call.params["a"] + call.params["b"])

    assert sum_(Call({"a": 1, "b": 2}, Request("Sum"), "WS_in")) == 3.0  # the decorator returns it
    assert result(await call(d, "RPC.Describe", {"name": "sum"})) == {
        "name": "Sum",
        "args_fmt": "{a: %lf, b: %lf}",
        "args": SUM_ARGS,
        "description": "Adds two numbers.",
    }
    d.add_handler("Raw", lambda c: None)
    assert result(await call(d, "RPC.Describe", {"name": "Raw"})) == {"name": "Raw", "args_fmt": None}
    d.add_handler("Fmt.*", lambda c: None, args=SUM_ARGS, args_fmt="{a: %d}")
    assert result(await call(d, "RPC.Describe", {"name": "fmt.*"}))["args_fmt"] == "{a: %d}"
    assert error(await call(d, "RPC.Describe", {"name": "Fmt.x"})) == (404, "name not found")
    assert error(await call(d, "RPC.Describe", {"name": 5})) == (400, "name must be a string")
    assert error(await call(d, "RPC.Describe")) == (400, "name is required")
    assert [h.name for h in d.handlers()] == ["Fmt.*", "Raw", "Sum", "RPC.List", "RPC.Describe", "RPC.Ping"]
    with pytest.raises(ValueError, match="unknown type 'float'"):
        d.add_handler("Bad", lambda c: None, args={"type": "float"})


async def test_params_checked_against_the_description() -> None:
    d = Dispatcher("dev")
    d.add_handler("Sum", lambda c: c.params, args=SUM_ARGS)
    assert result(await call(d, "Sum", {"a": 1})) == {"a": 1, "b": 10}
    assert result(await call(d, "Sum", {"a": 1, "b": 2, "c": 3})) == {"a": 1, "b": 2, "c": 3}
    assert error(await call(d, "Sum", {"b": 1})) == (400, "a is required")
    assert error(await call(d, "Sum")) == (400, "a is required")  # absent params are {}
    assert error(await call(d, "Sum", {"a": "1"})) == (400, "a must be a number")
    assert error(await call(d, "Sum", [1])) == (400, "params must be an object")
    d.add_handler("Any", lambda c: c.params)
    assert result(await call(d, "Any")) == {}
    assert result(await call(d, "Any", [1, "x"])) == [1, "x"]


async def test_sync_async_and_blocking_handlers() -> None:
    d = Dispatcher("dev")

    async def slow(call: Call) -> str:
        await asyncio.sleep(0)
        return f"async {call.method} on {call.channel} from {call.peer}"

    d.add_handler("Async", slow)
    d.add_handler("Sync", lambda c: "sync")
    d.add_handler("Blocking", lambda c: "thread", blocking=True)
    assert result(await call(d, "async")) == "async async on WS_in from p:1"
    assert result(await call(d, "Sync")) == "sync"
    assert result(await call(d, "Blocking")) == "thread"
    unlimited = Dispatcher("dev", deadline=None)
    unlimited.add_handler("Async", slow)
    assert result(await call(unlimited, "Async")).startswith("async")


async def test_rpc_error_from_handler() -> None:
    d = Dispatcher("dev")

    def fail(call: Call) -> None:
        raise RpcError(-1, "Bad request")

    async def fail_async(call: Call) -> None:
        raise RpcError(418, "shutting down in 50 ms")

    d.add_handler("Fail", fail)
    d.add_handler("FailAsync", fail_async)
    d.add_handler("FailThread", fail, blocking=True)
    assert error(await call(d, "Fail")) == (-1, "Bad request")
    assert error(await call(d, "FailAsync")) == (418, "shutting down in 50 ms")
    assert error(await call(d, "FailThread")) == (-1, "Bad request")


async def test_handler_that_raises_gives_500_without_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    d = Dispatcher("dev")

    async def crash(call: Call) -> None:
        raise KeyError("/etc/secret.key")

    async def own_timeout(call: Call) -> None:
        raise TimeoutError("upstream")

    d.add_handler("Crash", crash)
    d.add_handler("Timeout", own_timeout)
    d.add_handler("CrashThread", lambda c: 1 / 0, blocking=True)
    with caplog.at_level(logging.ERROR, "tether.rpc"):
        for method in ("Crash", "Timeout", "CrashThread"):
            reply = await d.handle(json.dumps({"id": 1, "method": method}), channel="WS_in")
            assert reply == b'{"id":1,"src":"dev","error":{"code":500,"message":"internal error"}}'
    # The cause is logged on the device, with its traceback.
    assert "secret.key" in caplog.text and "Traceback" in caplog.text
    assert d.pending == 0


async def test_result_that_is_not_json_gives_500() -> None:
    d = Dispatcher("dev")
    d.add_handler("Set", lambda c: {1, 2})
    d.add_handler("NaN", lambda c: float("nan"))
    assert error(await call(d, "Set", tag="t", src="s")) == (500, "internal error")
    assert await d.handle(b'{"id":2,"src":"s","tag":"t","method":"NaN"}', channel="WS_in") == (
        b'{"id":2,"src":"dev","dst":"s","tag":"t","error":{"code":500,"message":"internal error"}}'
    )


async def test_deadline() -> None:
    d = Dispatcher("dev", deadline=0.001)
    never = asyncio.Event()
    cancelled = []

    async def hang(call: Call) -> None:
        try:
            await never.wait()
        finally:
            cancelled.append(call.method)

    d.add_handler("Hang", hang)
    d.add_handler("HangLonger", hang, deadline=0.002)
    assert error(await call(d, "Hang")) == (DEADLINE_EXCEEDED, "deadline exceeded")
    assert error(await call(d, "HangLonger")) == (DEADLINE_EXCEEDED, "deadline exceeded")
    assert cancelled == ["Hang", "HangLonger"]  # the handler was cancelled
    assert d.pending == 0
    assert result(await call(d, "RPC.Ping")) == {"channel_info": "p:1"}  # still serving


async def test_flood_beyond_the_queue_gets_429() -> None:
    d = Dispatcher("dev", max_pending=3, deadline=None)
    release = asyncio.Event()

    async def wait(call: Call) -> int:
        await release.wait()
        return 1

    d.add_handler("Wait", wait)
    d.add_handler("Fast", lambda c: "fast")
    tasks = [asyncio.ensure_future(call(d, "Wait")) for _ in range(3)]
    while d.pending < 3:
        await asyncio.sleep(0)
    assert error(await call(d, "Wait")) == (429, "Request queue overflow")
    assert error(await call(d, "Fast")) == (429, "Request queue overflow")
    assert error(await call(d, "Nope"))[0] == 404  # cheap answers still come
    assert await d.handle(b'{"method":"Wait"}', channel="WS_in") is None  # a notification is dropped
    release.set()
    assert [result(r) for r in await asyncio.gather(*tasks)] == [1, 1, 1]
    assert d.pending == 0
    assert result(await call(d, "Fast")) == "fast"
    with pytest.raises(ValueError, match="max_pending"):
        Dispatcher("dev", max_pending=0)


async def test_notifications_run_but_get_no_reply() -> None:
    d = Dispatcher("dev")
    seen = []

    def note(call: Call) -> str:
        seen.append(call.params)
        return "ignored"

    def fail(call: Call) -> None:
        raise RpcError(400, "bad")

    d.add_handler("Note", note)
    d.add_handler("Fail", fail)
    assert await d.handle(b'{"method":"Note","params":{"x":1}}', channel="UART") is None
    assert await d.handle(b'{"method":"Fail"}', channel="UART") is None
    assert await d.handle(b'{"method":"No.Such"}', channel="UART") is None
    assert seen == [{"x": 1}]


async def test_destination_and_responses() -> None:
    d = Dispatcher("dev", local_ids=["alias"])
    assert result(await call(d, "RPC.Ping", dst="alias"))["channel_info"] == "p:1"
    assert (await call(d, "RPC.Ping", dst="alias"))["src"] == "alias"
    assert (await call(d, "RPC.Ping", dst=""))["src"] == "dev"
    with pytest.raises(WrongDestination):
        await d.handle(b'{"id":1,"dst":"other","method":"RPC.Ping"}', channel="WS_in")
    with pytest.raises(WrongDestination):
        await d.handle(b'{"dst":"other","method":"RPC.Ping"}', channel="WS_in")
    assert await d.handle(b'{"id":1,"result":2}', channel="WS_in") is None
    assert await d.dispatch(Request("RPC.Ping"), channel="WS_in") is None


async def test_frame_size_limit() -> None:
    d = Dispatcher("dev", max_frame_size=20)
    with pytest.raises(InvalidFrame):
        await d.handle(b'{"id":1,"method":"RPC.Ping"}', channel="WS_in")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=10,
)
frames = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "method": st.sampled_from(["RPC.Ping", "RPC.List", "RPC.Describe", "Sum", "X"]) | json_values,
        "params": json_values,
        "args": json_values,
        "src": json_values,
        "dst": st.sampled_from(["dev", "other"]) | json_values,
        "tag": json_values,
        "auth": json_values,
    },
)


@given(json_values.map(json.dumps) | frames.map(json.dumps) | st.binary(max_size=40))
def test_any_input_gives_a_reply_or_a_documented_error(data: bytes | str) -> None:
    d = Dispatcher("dev")
    d.add_handler("Sum", lambda c: c.params["a"] + c.params["b"], args=SUM_ARGS)

    async def main() -> bytes | None:
        return await d.handle(data, channel="WS_in")

    try:
        reply = asyncio.run(main())
    except InvalidFrame:
        return
    assert reply is None or isinstance(json.loads(reply), dict)


async def test_pending_counts_a_handler_until_it_ends() -> None:
    d = Dispatcher("dev")
    gate = asyncio.Event()

    async def waits(call: Call) -> str:
        await gate.wait()
        return "done"

    def returns_awaitable(call: Call) -> Any:
        return waits(call)  # a plain function whose result is awaited, with the deadline

    d.add_handler("Waits", waits)
    d.add_handler("Plain", returns_awaitable)
    d.add_handler("Sync", lambda c: d.pending)
    assert result(await call(d, "Sync")) == 1  # counted while it runs
    assert d.pending == 0
    running = [asyncio.ensure_future(call(d, name)) for name in ("Waits", "Plain")]
    await asyncio.sleep(0)
    assert d.pending == 2
    gate.set()
    assert [result(r) for r in await asyncio.gather(*running)] == ["done", "done"]
    assert d.pending == 0


async def test_sync_handler_failures_leave_nothing_pending(caplog: pytest.LogCaptureFixture) -> None:
    d = Dispatcher("dev")

    def fails(call: Call) -> None:
        raise ValueError("boom")

    def refuses(call: Call) -> None:
        raise RpcError(418, "teapot")

    d.add_handler("Fails", fails)
    d.add_handler("Refuses", refuses)
    with caplog.at_level(logging.ERROR, "tether.rpc"):
        assert (await call(d, "Fails"))["error"] == {"code": 500, "message": "internal error"}
    assert (await call(d, "Refuses"))["error"] == {"code": 418, "message": "teapot"}
    assert await d.handle('{"method":"Fails"}', channel="WS_in") is None  # a notification
    assert d.pending == 0


async def test_the_call_a_handler_gets_is_a_whole_frozen_dataclass() -> None:
    import dataclasses

    d = Dispatcher("dev")
    got: list[Call] = []
    d.add_handler("Keep", got.append)
    reply = await d.handle(
        b'{"id":7,"src":"me","method":"Keep","params":{"a":1}}', channel="WS_in", peer="p:1"
    )
    assert reply == b'{"id":7,"src":"dev","dst":"me","result":null}'
    (received,) = got
    # Built without __init__ (frames._frozen): every field, in order, and still frozen.
    assert list(vars(received)) == [f.name for f in dataclasses.fields(Call)]
    assert received == Call({"a": 1}, received.request, "WS_in", "p:1", None, None)
    assert received.method == "Keep" and received.request.id_json == "7"
    with pytest.raises(dataclasses.FrozenInstanceError):
        received.peer = "other"  # type: ignore[misc]
