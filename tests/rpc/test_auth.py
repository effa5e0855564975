"""tether.rpc.auth: in-frame digest credentials and htdigest files (spec mgos-rpc.md §4)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tether.errors import RpcError
from tether.rpc.auth import (
    DigestAuth,
    Htdigest,
    challenge_message,
    digest_ha1,
    digest_response,
    make_auth,
    parse_challenge,
)

NOW = 1700000100


def test_worked_example() -> None:
    # §4 test vector: admin/RPC/secret, nonce 1700000000, cnonce 12345.
    ha1 = digest_ha1("admin", "RPC", "secret")
    assert ha1 == "cf685a4a101de8b1eec42ddc7c7efcf0"
    assert digest_response(ha1, 1700000000, 12345) == "4dc7072db857c6822275e4bddf7176b0"
    auth = make_auth({"realm": "RPC", "nonce": 1700000000}, "admin", "secret", 12345)
    assert auth == {
        "realm": "RPC",
        "username": "admin",
        "nonce": 1700000000,
        "cnonce": 12345,
        "response": "4dc7072db857c6822275e4bddf7176b0",
    }


def test_challenge_text() -> None:
    # §4: the message is a JSON object as a string, in this order and spacing.
    assert challenge_message("RPC", 1700000000) == (
        '{"auth_type": "digest", "nonce": 1700000000, "nc": 1, "realm": "RPC", "algorithm": "MD5"}'
    )
    assert parse_challenge(challenge_message("RPC", 5, "SHA-256")) == {
        "auth_type": "digest",
        "nonce": 5,
        "nc": 1,
        "realm": "RPC",
        "algorithm": "SHA-256",
    }
    for text in ("nope", "[]", '{"auth_type":"basic"}', '{"auth_type":"digest","nonce":1}'):
        assert parse_challenge(text) is None


def test_make_auth_algorithms() -> None:
    auth = make_auth({"realm": "R", "nonce": 9, "algorithm": "sha-256"}, "u", "p", 1)
    ha1 = digest_ha1("u", "R", "p", "SHA-256")
    assert len(ha1) == 64
    assert auth["algorithm"] == "SHA-256"
    assert auth["response"] == digest_response(ha1, 9, 1, "SHA-256")
    with pytest.raises(ValueError, match="unsupported"):
        make_auth({"realm": "R", "nonce": 9, "algorithm": "SHA-512-256"}, "u", "p", 1)


@pytest.fixture
def auth(tmp_path: Path) -> DigestAuth:
    path = tmp_path / "htdigest"
    path.write_text(
        "# a comment line is ignored\n"
        f"admin:RPC:{digest_ha1('admin', 'RPC', 'secret').upper()}\n"
        f"admin:Other:{digest_ha1('admin', 'Other', 'x')}\r\n"
        f"bob:RPC:{digest_ha1('bob', 'RPC', 'hunter2')}"
    )
    return DigestAuth(path, "RPC")


def creds(
    user: str = "admin", password: str = "secret", nonce: Any = 1700000000, **extra: Any
) -> dict[str, Any]:
    return {**make_auth({"realm": "RPC", "nonce": nonce}, user, password, 12345), **extra}


def test_authenticate(auth: DigestAuth) -> None:
    assert auth.authenticate(creds(), NOW) == "admin"
    assert auth.authenticate(creds("bob", "hunter2"), NOW) == "bob"
    assert auth.authenticate(creds(algorithm="md5"), NOW) == "admin"
    assert (
        auth.authenticate(
            creds(cnonce="abc")
            | {"response": digest_response(digest_ha1("admin", "RPC", "secret"), 1700000000, "abc")},
            NOW,
        )
        == "admin"
    )
    upper = creds()
    upper["response"] = upper["response"].upper()
    assert auth.authenticate(upper, NOW) == "admin"
    assert "secret" not in repr(auth)


@pytest.mark.parametrize(
    ("auth_object", "now"),
    [
        (creds(password="wrong"), NOW),
        (creds(user="eve", password="x"), NOW),
        (creds(nonce=NOW - 3600), NOW),  # an hour old
        (creds(nonce=NOW + 1), NOW),  # from the future
        (creds(response="é"), NOW),
    ],
)
def test_401_gives_a_fresh_challenge(auth: DigestAuth, auth_object: Any, now: int) -> None:
    with pytest.raises(RpcError) as caught:
        auth.authenticate(auth_object, now)
    assert caught.value.code == 401
    assert json.loads(caught.value.message)["nonce"] == now


def test_nonce_lifetime_edges(auth: DigestAuth) -> None:
    assert auth.authenticate(creds(nonce=NOW - 3599), NOW) == "admin"
    assert auth.authenticate(creds(nonce=NOW), NOW + 0.5) == "admin"


@pytest.mark.parametrize(
    "auth_object",
    [
        None,
        "admin:secret",
        {"realm": "RPC"},
        creds(realm="Other"),
        creds(algorithm="SHA-256"),
        creds(algorithm=1),
        creds(nonce="1700000000"),
        creds(nonce=True),
        creds(cnonce=1.5),
        creds(cnonce=False),
        creds(response=5),
        creds(username=None),
    ],
)
def test_400_bad_request(auth: DigestAuth, auth_object: Any) -> None:
    with pytest.raises(RpcError) as caught:
        auth.authenticate(auth_object, NOW)
    assert (caught.value.code, caught.value.message) == (400, "bad request")


def test_unreadable_file_is_500(tmp_path: Path) -> None:
    auth = DigestAuth(tmp_path / "missing", "RPC")
    with pytest.raises(RpcError) as caught:
        auth.authenticate(creds(), NOW)
    assert (caught.value.code, caught.value.message) == (500, "failed to open password file")


def test_sha256(tmp_path: Path) -> None:
    path = tmp_path / "htdigest"
    path.write_text(f"admin:RPC:{digest_ha1('admin', 'RPC', 'secret', 'SHA-256')}\n")
    auth = DigestAuth(Htdigest(path), algorithm="SHA-256")
    challenge = parse_challenge(auth.challenge(NOW).message)
    assert challenge is not None and challenge["algorithm"] == "SHA-256"
    assert auth.authenticate(make_auth(challenge, "admin", "secret", 7), NOW) == "admin"
    with pytest.raises(ValueError, match="algorithm"):
        DigestAuth(path, algorithm="SHA-1")


def test_htdigest_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "htdigest"
    path.write_text("a:RPC:00\n")
    htdigest = Htdigest(path)
    assert htdigest.ha1("a", "RPC") == "00"
    assert htdigest.ha1("a", "RPC") == "00"  # cached
    assert htdigest.ha1("b", "RPC") is None
    path.write_text("a:RPC:00\nb:RPC:11\n")
    os.utime(path, ns=(1, 1))
    assert htdigest.ha1("b", "RPC") == "11"
    assert repr(htdigest) == f"Htdigest({str(path)!r})"
