"""Frame vectors from spec/mgos-rpc.md (§1.3, §1.2, §4, §11) in tests/vectors/mgos_rpc_frames.json.

Each request goes through `Dispatcher.handle` and must give the reply byte for byte,
no reply (null), or the named exception (a frame dropped as invalid).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tether import rpc
from tether.errors import RpcError
from tether.rpc import Acl, Call, DigestAuth, Dispatcher, RawJSON

VECTORS = json.loads((Path(__file__).parent.parent / "vectors" / "mgos_rpc_frames.json").read_text())


def sum_(call: Call) -> RawJSON:
    # The seed app's Sum: two decimals, -1 on bad arguments (§9).
    params = call.params
    if not (isinstance(params, dict) and {"a", "b"} <= params.keys()):
        raise RpcError(-1, 'Bad request. Expected: {"a":N1,"b":N2}')
    return RawJSON(f"{params['a'] + params['b']:.2f}")


def set_debug(call: Call) -> None:
    if not -1 <= call.params.get("level", 0) <= 4:
        raise RpcError(400, "invalid level")
    raise RpcError(0)  # §3 quirk: success is "error":{"code":0}


def boom(call: Call) -> Any:
    raise ValueError("secret path /etc/device.key")


def not_built(call: Call) -> Any:
    raise RpcError(501, "not compiled in")


def make_dispatcher(tmp_path: Path, with_acl: bool) -> Dispatcher:
    auth_file = tmp_path / "rpc.htdigest"
    auth_file.write_text("\n".join(VECTORS["htdigest"]) + "\n")
    dispatcher = Dispatcher(
        VECTORS["device_id"],
        local_ids=["abc-tether_0A1B2C"],
        acl=Acl.parse(json.dumps(VECTORS["acl"])) if with_acl else None,
        auth=DigestAuth(auth_file, "RPC"),
        clock=lambda: VECTORS["now"],
    )
    dispatcher.add_handler("Sum", sum_, args_fmt="{a: %lf, b: %lf}")
    dispatcher.add_handler("Sys.GetInfo", lambda call: {"id": VECTORS["device_id"], "app": "vectors"})
    dispatcher.add_handler("Config.Get", lambda call: {"debug": {"level": 2}})
    dispatcher.add_handler("Sys.SetDebug", set_debug)
    dispatcher.add_handler("Boom", boom)
    dispatcher.add_handler("NotBuilt", not_built)
    return dispatcher


@pytest.mark.parametrize("case", VECTORS["cases"], ids=[c["name"] for c in VECTORS["cases"]])
async def test_vector(case: dict[str, Any], tmp_path: Path) -> None:
    dispatcher = make_dispatcher(tmp_path, case.get("acl", False))
    request = case["request"].encode()
    kwargs = {"channel": case.get("channel", "WS_in"), "peer": case.get("peer", "")}
    if "raises" in case:
        with pytest.raises(getattr(rpc, case["raises"])) as caught:
            await dispatcher.handle(request, **kwargs)
        assert type(caught.value) is getattr(rpc, case["raises"])
        return
    reply = await dispatcher.handle(request, **kwargs)
    expected = case["reply"]
    if expected is None:
        assert reply is None
        return
    assert reply == expected.encode()
    # The same request as text gives the same bytes.
    assert await dispatcher.handle(case["request"], **kwargs) == reply


def test_vectors_cover_the_error_table() -> None:
    # §1.2: every code but 418 (reboot lock-out, device runtime) and 429 (test_dispatch).
    codes = {
        json.loads(c["reply"])["error"]["code"]
        for c in VECTORS["cases"]
        if c.get("reply") and '"error"' in c["reply"]
    }
    assert codes >= {404, 400, 401, 403, 500, 501, -1, 0}


def test_vector_ids_are_unique_where_it_matters() -> None:
    names = [c["name"] for c in VECTORS["cases"]]
    assert len(names) == len(set(names))
