"""Digest credentials inside frames (spec mgos-rpc.md §4 "In-frame digest").

Theory of operation. A call that the ACL (`tether.rpc.acl`) protects and that
comes without a user gets error 401 whose ``message`` is a JSON object as a
string: ``{"auth_type": "digest", "nonce": <unix s>, "nc": 1, "realm": "RPC",
"algorithm": "MD5"}``. The caller sends the same frame again (same ``id``) with
``"auth": {"realm", "username", "nonce", "cnonce", "response", "algorithm"?}``::

    HA1 = H(user ":" realm ":" password)      -- a line user:realm:HA1 of an htdigest file
    HA2 = H("dummy_method:dummy_uri")
    response = hex(H(HA1 ":" nonce ":1:" cnonce ":auth:" HA2))

Quirks kept for mos: the nonce is the bare issue time in seconds (accepted when
not in the future and less than an hour old, so a response can be replayed
within that hour), and ``nc`` is always 1. The clock is passed in (``now``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from tether.errors import RpcError

__all__ = [
    "ALGORITHMS",
    "NONCE_LIFETIME",
    "DigestAuth",
    "Htdigest",
    "challenge_message",
    "digest_ha1",
    "digest_response",
    "make_auth",
    "parse_challenge",
]

#: Hash functions by the name the challenge uses: ``rpc.auth_algo`` 0 is MD5, 1 is SHA-256.
ALGORITHMS: dict[str, Callable[[bytes], Any]] = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}

#: Seconds a nonce stays valid (§4: "< 1 h old").
NONCE_LIFETIME = 3600


def _hash(algorithm: str, text: str) -> str:
    digest: str = ALGORITHMS[algorithm](text.encode()).hexdigest()
    return digest


def digest_ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """HA1 = H(user:realm:password) in hex, as stored in an htdigest file.

    Raises:
        KeyError: if algorithm is not ``MD5`` or ``SHA-256``.
    """
    return _hash(algorithm, f"{username}:{realm}:{password}")


def digest_response(ha1: str, nonce: int | str, cnonce: int | str, algorithm: str = "MD5") -> str:
    """The ``response`` of an in-frame ``auth`` object (§4), in lower-case hex.

    Args:
        ha1: `digest_ha1` of the user's credentials.
        nonce: the nonce from the 401 challenge.
        cnonce: the caller's nonce (mos: a random 32-bit integer).
        algorithm: ``MD5`` or ``SHA-256``.
    """
    ha2 = _hash(algorithm, "dummy_method:dummy_uri")
    return _hash(algorithm, f"{ha1}:{nonce}:1:{cnonce}:auth:{ha2}")


def challenge_message(realm: str, nonce: int, algorithm: str = "MD5") -> str:
    """The ``error.message`` of a 401 reply: a JSON object as text, with the spacing mgos uses."""
    return json.dumps(
        {"auth_type": "digest", "nonce": nonce, "nc": 1, "realm": realm, "algorithm": algorithm}
    )


def parse_challenge(message: str) -> dict[str, Any] | None:
    """Read a 401 ``error.message``; returns the challenge dict, or None if it is not a digest one."""
    try:
        challenge = json.loads(message)
    except ValueError:
        return None
    if not isinstance(challenge, dict) or challenge.get("auth_type") != "digest":
        return None
    if not isinstance(challenge.get("realm"), str) or "nonce" not in challenge:
        return None
    return challenge


def make_auth(challenge: Mapping[str, Any], username: str, password: str, cnonce: int) -> dict[str, Any]:
    """Build the ``auth`` object to resend a call with after a 401 (what mos does).

    Args:
        challenge: from `parse_challenge`.
        username: the user.
        password: the user's password; it is not part of the result.
        cnonce: a fresh random 32-bit integer.

    Raises:
        ValueError: if the challenge names an algorithm other than MD5 and SHA-256.
    """
    algorithm = str(challenge.get("algorithm", "MD5")).upper()
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    realm = challenge["realm"]
    ha1 = digest_ha1(username, realm, password, algorithm)
    auth = {
        "realm": realm,
        "username": username,
        "nonce": challenge["nonce"],
        "cnonce": cnonce,
        "response": digest_response(ha1, challenge["nonce"], cnonce, algorithm),
    }
    if "algorithm" in challenge:
        auth["algorithm"] = algorithm
    return auth


class Htdigest:
    """An htdigest file (``user:realm:HA1`` per line), read again when it changes.

    Args:
        path: the file (``rpc.auth_file``).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._stamp: tuple[int, int] | None = None
        self._lines: dict[tuple[str, str], str] = {}

    def __repr__(self) -> str:
        return f"Htdigest({self.path!r})"

    def ha1(self, username: str, realm: str) -> str | None:
        """The HA1 of username in realm, in lower-case hex, or None if there is no such line.

        Raises:
            OSError: if the file cannot be read.
        """
        st = os.stat(self.path)
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            lines = {}
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    parts = line.rstrip("\r\n").split(":")
                    if len(parts) == 3:
                        lines[(parts[0], parts[1])] = parts[2].strip().lower()
            self._lines, self._stamp = lines, stamp
        return self._lines.get((username, realm))


class DigestAuth:
    """Checks in-frame digest credentials against an htdigest file (§4).

    Args:
        htdigest: the file (``rpc.auth_file``), or an `Htdigest`.
        realm: ``rpc.auth_domain``.
        algorithm: ``MD5`` (``rpc.auth_algo`` 0) or ``SHA-256`` (1); the file's HA1
            values must use the same hash.
        nonce_lifetime: seconds a nonce stays valid.
    """

    def __init__(
        self,
        htdigest: str | os.PathLike[str] | Htdigest,
        realm: str = "RPC",
        *,
        algorithm: str = "MD5",
        nonce_lifetime: float = NONCE_LIFETIME,
    ) -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {sorted(ALGORITHMS)}, not {algorithm!r}")
        self.htdigest = htdigest if isinstance(htdigest, Htdigest) else Htdigest(htdigest)
        self.realm = realm
        self.algorithm = algorithm
        self.nonce_lifetime = nonce_lifetime

    def __repr__(self) -> str:
        return f"DigestAuth({self.htdigest!r}, realm={self.realm!r}, algorithm={self.algorithm!r})"

    def challenge(self, now: float) -> RpcError:
        """The 401 error to answer a call that needs a user and has none."""
        return RpcError(401, challenge_message(self.realm, int(now), self.algorithm))

    def authenticate(self, auth: Any, now: float) -> str:
        """Check a frame's ``auth`` object and return the user it proves.

        Args:
            auth: the ``auth`` value of the request frame.
            now: the current Unix time in seconds.

        Returns:
            The user name.

        Raises:
            RpcError: 400 ``bad request`` if auth is incomplete or names another realm
                or algorithm; 401 (a fresh challenge) if the nonce is stale or from the
                future, the user is unknown or the response is wrong; 500 ``failed to
                open password file`` if the htdigest file cannot be read.
        """
        fields = _auth_fields(auth)
        if fields is None or fields[0] != self.realm:
            raise RpcError(400, "bad request")
        realm, username, nonce, cnonce, response, algorithm = fields
        if algorithm is not None and algorithm.upper() != self.algorithm:
            raise RpcError(400, "bad request")
        if not 0 <= now - nonce < self.nonce_lifetime:
            raise self.challenge(now)
        try:
            ha1 = self.htdigest.ha1(username, realm)
        except OSError:
            raise RpcError(500, "failed to open password file") from None
        known = ha1 is not None
        # Compare even for an unknown user, so that it takes as long as a wrong password.
        expected = digest_response(ha1 or "", nonce, cnonce, self.algorithm)
        if not hmac.compare_digest(expected.encode(), response.lower().encode()) or not known:
            raise self.challenge(now)
        return username


def _auth_fields(auth: Any) -> tuple[str, str, int, str, str, str | None] | None:
    """realm, username, nonce, cnonce, response and algorithm of an auth object, or None."""
    if not isinstance(auth, dict):
        return None
    realm, username, nonce, cnonce, response, algorithm = (
        auth.get(name) for name in ("realm", "username", "nonce", "cnonce", "response", "algorithm")
    )
    if not (isinstance(realm, str) and isinstance(username, str) and isinstance(response, str)):
        return None
    if isinstance(nonce, bool) or not isinstance(nonce, int):
        return None
    if isinstance(cnonce, bool) or not isinstance(cnonce, (int, str)):
        return None
    if algorithm is not None and not isinstance(algorithm, str):
        return None
    return realm, username, nonce, str(cnonce), response, algorithm
