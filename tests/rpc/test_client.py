"""tether.rpc.client: the sans-I/O client core, also back to back with a Dispatcher."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from tether.errors import RpcError
from tether.rpc import (
    Acl,
    CallFailed,
    CallResult,
    DigestAuth,
    Dispatcher,
    InvalidJson,
    RawJSON,
    Request,
    RequestReceived,
    RpcClientCore,
)
from tether.rpc.auth import challenge_message, digest_ha1


def test_ids_and_frames() -> None:
    core = RpcClientCore("mos", rng=random.Random(1))
    first = core.call("Sys.GetInfo")
    second = core.call("Sum", {"a": 1}, dst="dev", tag="t")
    assert 2**40 <= first < 2**41 and second == first + 1
    assert core.frames_to_send() == [
        f'{{"id":{first},"src":"mos","method":"Sys.GetInfo"}}'.encode(),
        f'{{"id":{second},"src":"mos","dst":"dev","tag":"t","method":"Sum","params":{{"a":1}}}}'.encode(),
    ]
    assert core.frames_to_send() == []
    assert core.pending == 2
    assert "mos" in repr(core)


def test_matching() -> None:
    core = RpcClientCore(None, dst="dev")
    a, b, c = core.call("A"), core.call("B"), core.call("C")
    assert json.loads(core.frames_to_send()[0]) == {"id": a, "dst": "dev", "method": "A"}
    core.receive_frame(f'{{"id":{b},"result":{{"x":1}}}}')
    core.receive_frame(f'{{"id":{a},"error":{{"code":404,"message":"No handler for A"}}}}')
    core.receive_frame(f'{{"id":{c},"error":{{"code":0}}}}')  # mos: code 0 is success
    core.receive_frame(f'{{"id":{c},"result":1}}')  # already answered: ignored
    core.receive_frame('{"id":"other","result":1}')
    core.receive_frame('{"result":1}')
    events = core.events_received()
    assert events == [CallResult(b, {"x": 1}), CallFailed(a, RpcError(0)), CallResult(c, None)]
    failed = events[1]
    assert isinstance(failed, CallFailed)
    assert (failed.error.code, failed.error.message) == (404, "No handler for A")
    assert core.events_received() == [] and core.pending == 0
    with pytest.raises(InvalidJson):
        core.receive_frame(b"{")


def test_malformed_error_and_requests() -> None:
    core = RpcClientCore()
    a = core.call("A")
    core.receive_frame(f'{{"id":{a},"error":"boom"}}')
    core.receive_frame('{"id":5,"src":"backend","method":"Sys.GetInfo"}')
    failed, request = core.events_received()
    assert isinstance(failed, CallFailed) and failed.error.code == -1
    assert request == RequestReceived(Request("Sys.GetInfo", None, 5, "5", "backend"))


def test_queue_evicts_the_oldest_and_cancel() -> None:
    core = RpcClientCore(max_pending=2)
    a, b, c = core.call("A"), core.call("B"), core.call("C")
    [evicted] = core.events_received()
    assert evicted == CallFailed(a, RpcError(0))
    assert isinstance(evicted, CallFailed)
    assert (evicted.error.code, evicted.error.message) == (429, "Request queue overflow")
    assert core.cancel(b) and not core.cancel(b) and not core.cancel(a)
    core.receive_frame(f'{{"id":{b},"result":1}}')
    assert core.events_received() == [] and core.pending == 1
    assert c
    with pytest.raises(ValueError, match="max_pending"):
        RpcClientCore(max_pending=0)


def test_notify() -> None:
    core = RpcClientCore("s", dst="d")
    core.notify("Log", {"x": 1})
    core.notify("Log", dst="e")
    assert core.frames_to_send() == [
        b'{"src":"s","dst":"d","method":"Log","params":{"x":1}}',
        b'{"src":"s","dst":"e","method":"Log"}',
    ]
    assert core.pending == 0


@pytest.mark.parametrize(
    "message",
    ["", "not json", challenge_message("RPC", 1).replace("MD5", "SHA-512")],
)
def test_401_that_cannot_be_answered_fails(message: str) -> None:
    core = RpcClientCore(credentials=("admin", "secret"))
    a = core.call("A")
    core.frames_to_send()
    core.receive_frame(json.dumps({"id": a, "error": {"code": 401, "message": message}}))
    assert core.frames_to_send() == []
    [failed] = core.events_received()
    assert isinstance(failed, CallFailed) and failed.error.code == 401


# Back to back: the client core wired to a dispatcher, no sockets.


async def exchange(core: RpcClientCore, dispatcher: Dispatcher) -> list[Any]:
    while frames := core.frames_to_send():
        for frame in frames:
            reply = await dispatcher.handle(frame, channel="WS_in")
            if reply is not None:
                core.receive_frame(reply)
    return core.events_received()


@pytest.fixture
def device(tmp_path: Path) -> Dispatcher:
    path = tmp_path / "htdigest"
    path.write_text(f"admin:RPC:{digest_ha1('admin', 'RPC', 'secret')}\n")
    acl = Acl.parse([{"method": "Config.*", "acl": "admin"}, {"method": "*", "acl": "*"}])
    d = Dispatcher("dev", acl=acl, auth=DigestAuth(path), clock=lambda: 1700000100)
    d.add_handler("Config.Get", lambda call: {"user": call.user})
    return d


async def test_digest_retry_back_to_back(device: Dispatcher) -> None:
    core = RpcClientCore("mos", credentials=("admin", "secret"), rng=random.Random(7))
    a = core.call("Config.Get")
    assert await exchange(core, device) == [CallResult(a, {"user": "admin"})]
    b = core.call("RPC.Ping")
    assert await exchange(core, device) == [CallResult(b, {"channel_info": ""})]


async def test_wrong_password_fails_after_one_retry(device: Dispatcher) -> None:
    core = RpcClientCore("mos", credentials=("admin", "wrong"))
    a = core.call("Config.Get")
    [failed] = await exchange(core, device)
    assert isinstance(failed, CallFailed) and failed.id == a and failed.error.code == 401


async def test_no_credentials_gets_401(device: Dispatcher) -> None:
    core = RpcClientCore("mos")
    core.call("Config.Get")
    [failed] = await exchange(core, device)
    assert isinstance(failed, CallFailed) and failed.error.code == 401


def test_receive_result_is_the_fast_path_of_receive_frame() -> None:
    core = RpcClientCore("mos", rng=random.Random(1))
    call_id = core.call("Sum", {"a": 1})
    other = core.call("Sum", {"a": 2})
    assert core.receive_result(f'{{"id":{call_id},"src":"dev","result":3}}') == (call_id, 3)
    assert core.pending == 1 and core.events_received() == []
    # Once matched, the call is done: the same reply again matches nothing.
    assert core.receive_result(f'{{"id":{call_id},"result":3}}') is None
    core.receive_frame(f'{{"id":{call_id},"result":3}}')
    assert core.events_received() == []
    # Anything but a success for a waiting call changes nothing: receive_frame takes it.
    for frame in (
        f'{{"id":{other},"error":{{"code":400,"message":"bad"}}}}',
        f'{{"id":{other},"method":"X"}}',
        f' {{"id":{other},"result":4}}',
        f'{{"id":"{other}","result":4}}',
        "{nope",
        f'{{"id":{other},"result":4}}'.encode(),
    ):
        assert core.receive_result(frame) is None
        assert core.pending == 1
    core.receive_frame(f'{{"id":{other},"result":4}}'.encode())
    assert core.events_received() == [CallResult(other, 4)]


# start_call: the frame's text for a front end that sends it itself (RpcClient over a WebSocket).


@pytest.mark.parametrize("src", ["mos", None, "é"])
@pytest.mark.parametrize(
    ("method", "params", "dst"),
    [
        ("RPC.Ping", None, None),
        ("Sum", {"a": 1}, "dev"),
        ("Sum", RawJSON("[1,2]"), None),
        ("Echo", "é€", None),
        ("Echo", "é\ud800", "dev"),  # a lone surrogate: escaped as encode_request does
        ("Méthode", [1, None], "dév"),
    ],
)
def test_start_call_text_is_what_call_queues(
    src: str | None, method: str, params: Any, dst: str | None
) -> None:
    queued, started = RpcClientCore(src, rng=random.Random(3)), RpcClientCore(src, rng=random.Random(3))
    for _ in range(2):  # the second time from the template
        call_id = queued.call(method, params, dst=dst)
        [frame] = queued.frames_to_send()
        assert started.start_call(method, params, dst=dst) == (call_id, frame.decode("utf-8"))
    assert started.frames_to_send() == [] and started.pending == 2
    assert started.receive_result(f'{{"id":{call_id},"result":1}}') == (call_id, 1)


def test_start_call_uses_the_default_dst_and_follows_src() -> None:
    core = RpcClientCore("a", dst="dev")
    first, text = core.start_call("M")
    assert text == f'{{"id":{first},"src":"a","dst":"dev","method":"M"}}'
    core.src = "b"
    second, text = core.start_call("M")
    assert text == f'{{"id":{second},"src":"b","dst":"dev","method":"M"}}'
    assert core.src == "b" and "src='b'" in repr(core)


def test_start_call_errors_leave_nothing_behind() -> None:
    core = RpcClientCore()
    with pytest.raises(ValueError, match="empty"):
        core.start_call("")
    with pytest.raises(TypeError):
        core.start_call("M", {1, 2})
    with pytest.raises(ValueError):
        core.start_call("M", float("nan"))
    assert core.pending == 0
    call_id, _ = core.start_call("M")
    assert call_id == core.call("M") - 1  # no id was used up


def test_start_call_evicts_the_oldest_and_templates_are_bounded() -> None:
    core = RpcClientCore(max_pending=2)
    a, _ = core.start_call("A")
    core.start_call("B")
    core.start_call("C")
    [evicted] = core.events_received()
    assert isinstance(evicted, CallFailed) and evicted.id == a and evicted.error.code == 429
    for n in range(300):
        core.start_call(f"M{n}", dst="dev" if n % 2 else None)
    assert 0 < len(core._templates) <= 256


def test_only_the_id_text_of_a_call_matches_it() -> None:
    core = RpcClientCore()
    call_id = core.call("M")
    for frame in (
        f'{{"id":{call_id}.0,"result":1}}',
        f'{{"id":"{call_id}","result":1}}',
        '{"id":-1,"result":1}',
    ):
        core.receive_frame(frame)
    core.receive_frame(f'{{"id":{call_id},"error":{{"code":400,"message":"bad"}}}}')
    [failed] = core.events_received()
    assert isinstance(failed, CallFailed) and failed.id == call_id and core.pending == 0


async def test_a_retried_call_is_forgotten_however_it_ends(device: Dispatcher) -> None:
    core = RpcClientCore("mos", credentials=("admin", "secret"), rng=random.Random(7))
    a, text = core.start_call("Config.Get")
    reply = await device.handle(text, channel="WS_in")
    assert reply is not None
    core.receive_frame(reply)  # 401: sent again with auth
    [retry] = core.frames_to_send()
    assert core._retried == {a}
    reply = await device.handle(retry, channel="WS_in")
    assert reply is not None and core.receive_result(reply.decode()) == (a, {"user": "admin"})
    assert not core._retried
    b = core.call("Config.Get")
    reply = await device.handle(core.frames_to_send()[0], channel="WS_in")
    assert reply is not None
    core.receive_frame(reply)
    assert core._retried == {b} and core.cancel(b) and not core._retried
    # Evicted by the queue while its retry waits.
    core.max_pending = 1
    c = core.call("Config.Get")
    challenge = json.dumps(challenge_message("RPC", 1))
    core.receive_frame(f'{{"id":{c},"error":{{"code":401,"message":{challenge}}}}}')
    assert core._retried == {c}
    core.call("X")
    assert not core._retried and [e.id for e in core.events_received()] == [c]
