"""tether.rpc.acl: rpc.acl entries and how the dispatcher applies them (spec mgos-rpc.md §4)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tether.rpc import Acl, AclEntry, Dispatcher
from tether.rpc.acl import Verdict, user_allowed
from tether.rpc.auth import DigestAuth, digest_ha1, make_auth, parse_challenge

NOW = 1700000100
ACL = [
    {"method": "Config.*", "acl": "admin"},
    {"ch_type": "UART", "acl": "*"},
    {"method": "FS.*", "ch_type": "HTTP", "acl": "-*"},
    {"method": "FS.*", "acl": "+*"},
    {"method": "Sys.Reboot,OTA.*", "acl": "-guest, +op*, admin"},
    {"method": "RPC.*", "acl": "*"},
]


def test_parse_forms(tmp_path: Path) -> None:
    acl = Acl.parse(json.dumps(ACL))
    assert acl.entries[0] == AclEntry("admin", "Config.*")
    assert acl.entries[1] == AclEntry("*", None, "UART")
    assert Acl.parse(ACL).entries == acl.entries
    path = tmp_path / "acl.json"
    path.write_text(json.dumps(ACL))
    assert Acl.parse(f"@{path}").entries == acl.entries
    assert "Config.*" in repr(acl)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[", "not JSON"),
        ('{"method":"*","acl":"*"}', "array"),
        ('"*"', "array"),
        (5, "array"),
        ("[1]", "must be an object"),
        ('[{"method":"*"}]', "needs acl"),
        ('[{"acl":"*"}]', "needs acl"),
        ('[{"method":1,"acl":"*"}]', "method must be a string"),
    ],
)
def test_parse_errors(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Acl.parse(value)


@pytest.mark.parametrize(
    ("method", "channel", "index"),
    [
        ("Config.Get", "WS_in", 0),
        ("config.set", "UART", 0),  # first match wins, globs are case-insensitive
        ("Sys.GetInfo", "UART", 1),
        ("FS.Get", "HTTP", 2),
        ("FS.Get", "WS_in", 3),
        ("OTA.Begin", "MQTT", 4),
        ("RPC.List", "WS_in", 5),
        ("Sys.GetInfo", "WS_in", None),
    ],
)
def test_find(method: str, channel: str, index: int | None) -> None:
    acl = Acl.parse(ACL)
    entry = acl.find(method, channel)
    assert entry is (None if index is None else acl.entries[index])


def test_verdicts() -> None:
    assert AclEntry("*").verdict is AclEntry(" +* ").verdict is Verdict.ALLOW
    assert AclEntry("-*").verdict is Verdict.DENY
    assert AclEntry("admin").verdict is AclEntry("*,-bob").verdict is Verdict.NEED_USER


@pytest.mark.parametrize(
    ("acl", "user", "allowed"),
    [
        ("admin", "admin", True),
        ("admin", "Admin", False),  # user names are case-sensitive
        ("admin", "bob", False),
        ("-guest, +op*, admin", "operator", True),
        ("-guest, +op*, admin", "guest", False),
        ("-guest, +op*, admin", "op/x", False),
        ("-b*,*", "bob", False),
        ("-b*,*", "alice", True),
        (",, ,alice", "alice", True),
        ("", "alice", False),
        ("a?c", "abc", True),
    ],
)
def test_user_allowed(acl: str, user: str, allowed: bool) -> None:
    assert user_allowed(acl, user) is allowed
    assert AclEntry(acl, "*").allows(user) is allowed


@pytest.fixture
def auth(tmp_path: Path) -> DigestAuth:
    path = tmp_path / "htdigest"
    lines = [
        f"{u}:RPC:{digest_ha1(u, 'RPC', p)}" for u, p in [("admin", "secret"), ("guest", "g"), ("op1", "o")]
    ]
    path.write_text("\n".join(lines) + "\n")
    return DigestAuth(path)


def make(auth: DigestAuth | None, acl: Any = ACL) -> Dispatcher:
    d = Dispatcher("dev", acl=None if acl is None else Acl.parse(acl), auth=auth, clock=lambda: NOW)
    for name in ("Config.Get", "Sys.GetInfo", "Sys.Reboot", "FS.Get", "OTA.Begin"):
        d.add_handler(name, lambda call: call.user)
    return d


async def send(
    d: Dispatcher, method: str, *, channel: str = "WS_in", user: str | None = None, **frame: Any
) -> Any:
    reply = await d.handle(json.dumps({"id": 1, "method": method, **frame}), channel=channel, user=user)
    assert reply is not None
    decoded = json.loads(reply)
    return decoded.get("result", decoded.get("error"))


def auth_for(user: str, password: str) -> dict[str, Any]:
    return make_auth({"realm": "RPC", "nonce": NOW - 10}, user, password, 99)


async def test_no_acl_means_no_authentication(auth: DigestAuth) -> None:
    # §4 rule 1 (quirk): an auth file alone does not protect anything.
    d = make(auth, acl=None)
    assert await send(d, "Config.Get") is None
    assert await send(d, "Config.Get", auth={"garbage": 1}) is None
    assert await send(d, "Config.Get", user="from-channel") == "from-channel"


async def test_acl_rules(auth: DigestAuth) -> None:
    d = make(auth)
    assert await send(d, "Sys.GetInfo") == {"code": 403, "message": "unauthorized"}  # no entry
    assert await send(d, "Sys.GetInfo", channel="UART") is None  # "*" needs no user
    assert await send(d, "FS.Get", channel="HTTP") == {"code": 403, "message": "unauthorized"}  # "-*"
    assert await send(d, "FS.Get", channel="MQTT") is None  # "+*"
    challenge = await send(d, "Config.Get")
    assert challenge["code"] == 401
    assert parse_challenge(challenge["message"]) == {
        "auth_type": "digest",
        "nonce": NOW,
        "nc": 1,
        "realm": "RPC",
        "algorithm": "MD5",
    }
    assert await send(d, "Config.Get", auth=auth_for("admin", "secret")) == "admin"
    assert (await send(d, "Config.Get", auth=auth_for("admin", "nope")))["code"] == 401
    assert await send(d, "Config.Get", auth=auth_for("guest", "g")) == {
        "code": 403,
        "message": "unauthorized",
    }
    assert await send(d, "Sys.Reboot", auth=auth_for("op1", "o")) == "op1"
    assert await send(d, "OTA.Begin", auth=auth_for("guest", "g")) == {"code": 403, "message": "unauthorized"}
    assert (await send(d, "Config.Get", auth={"realm": "RPC"}))["code"] == 400


async def test_user_from_the_channel(auth: DigestAuth) -> None:
    d = make(auth)
    assert await send(d, "Config.Get", user="admin") == "admin"
    assert await send(d, "Config.Get", user="guest") == {"code": 403, "message": "unauthorized"}
    # The frame's auth comes first when auth is configured.
    assert await send(d, "Config.Get", user="guest", auth=auth_for("admin", "secret")) == "admin"


async def test_without_auth_only_channel_users(auth: DigestAuth) -> None:
    d = make(None)
    assert await send(d, "Config.Get", user="admin") == "admin"
    reply = await send(d, "Config.Get", auth=auth_for("admin", "secret"))
    assert reply["code"] == 401 and parse_challenge(reply["message"])["realm"] == "RPC"  # type: ignore[index]


async def test_notification_denied_silently(auth: DigestAuth) -> None:
    d = make(auth)
    assert await d.handle(b'{"method":"Config.Get"}', channel="WS_in") is None
