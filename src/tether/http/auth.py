"""Authentication for routes, static files and WebSocket routes: Basic, Digest, Bearer.

Each scheme is an object with ``authenticate(request) -> str``: it returns the
user name (or token owner) and raises `HTTPError` 401 with a
``WWW-Authenticate`` challenge otherwise. Secrets are compared in constant
time (`hmac.compare_digest`) and never logged.

`DigestAuth` reads an ``htdigest`` file (``user:realm:MD5(user:realm:password)``
per line, as written by Apache's ``htdigest`` and used by Mongoose and Mongoose
OS) and speaks RFC 7616 with MD5 and qop=auth, which every browser, curl and
httpx support. Nonces carry their issue time and an HMAC of it under a secret
of this process, so they need no server state and expire after
``nonce_lifetime`` seconds (the client is then told ``stale=true`` and retries
without asking the user again).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from tether.http.parser import HTTPError

__all__ = ["Auth", "BasicAuth", "BearerAuth", "DigestAuth", "digest_authorization", "write_htdigest"]


class Auth(Protocol):
    """What an authentication scheme provides."""

    def authenticate(self, request: Any) -> str:
        """Return the authenticated user name.

        Raises:
            HTTPError: 401 with a WWW-Authenticate challenge.
        """
        ...  # pragma: no cover


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()


class BasicAuth:
    """HTTP Basic authentication (RFC 7617); use it over TLS only.

    Args:
        users: user name → password, or a function (user, password) → bool.
        realm: the protection space shown by browsers.
    """

    def __init__(self, users: Mapping[str, str] | Callable[[str, str], bool], realm: str = "tether") -> None:
        self.realm = realm
        self._check = users if callable(users) else None
        # Hashes of the passwords, so that comparisons take the same time for any length.
        self._users = {} if callable(users) else {u: _digest(p) for u, p in users.items()}

    def _challenge(self) -> HTTPError:
        return HTTPError(
            401, headers=[("WWW-Authenticate", f'Basic realm={_quote(self.realm)}, charset="UTF-8"')]
        )

    def authenticate(self, request: Any) -> str:
        """Check the Authorization header; see `Auth.authenticate`."""
        scheme, _, credentials = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            raise self._challenge()
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise self._challenge() from None
        user, sep, password = decoded.partition(":")
        if not sep:
            raise self._challenge()
        if self._check is not None:
            ok = bool(self._check(user, password))
        else:
            expected = self._users.get(user)
            # Compare against a dummy for unknown users: the same work either way.
            ok = hmac.compare_digest(expected or _digest("\x00unknown"), _digest(password))
            ok = ok and expected is not None
        if not ok:
            raise self._challenge()
        return user


class BearerAuth:
    """Bearer tokens (RFC 6750).

    Args:
        tokens: the accepted tokens, or a mapping token → user name, or a
            function token → user name or None.
        realm: the realm named in the challenge.
    """

    def __init__(
        self,
        tokens: Iterable[str] | Mapping[str, str] | Callable[[str], str | None],
        realm: str = "tether",
    ) -> None:
        self.realm = realm
        self._lookup = tokens if callable(tokens) else None
        if isinstance(tokens, Mapping):
            self._tokens = [(_digest(t), user) for t, user in tokens.items()]
        elif callable(tokens):
            self._tokens = []
        else:
            self._tokens = [(_digest(t), "bearer") for t in tokens]

    def authenticate(self, request: Any) -> str:
        """Check the Authorization header; see `Auth.authenticate`."""
        scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise HTTPError(401, headers=[("WWW-Authenticate", f"Bearer realm={_quote(self.realm)}")])
        user: str | None = None
        if self._lookup is not None:
            user = self._lookup(token)
        else:
            digest = _digest(token)
            for known, owner in self._tokens:  # every entry compared: no early exit
                if hmac.compare_digest(known, digest):
                    user = owner
        if user is None:
            # RFC 6750 §3.1: a token that was sent but is wrong.
            raise HTTPError(
                401,
                headers=[("WWW-Authenticate", f'Bearer realm={_quote(self.realm)}, error="invalid_token"')],
            )
        return user


def write_htdigest(path: str | os.PathLike[str], user: str, realm: str, password: str) -> None:
    """Add or replace user's line in an htdigest file, as Apache's ``htdigest`` does.

    Raises:
        ValueError: if user or realm contains ':' or a line break.
    """
    if any(c in user + realm for c in ":\r\n"):
        raise ValueError("user and realm must not contain ':' or line breaks")
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()
    lines = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            lines = [ln.rstrip("\n") for ln in f if not ln.startswith(f"{user}:{realm}:")]
    lines.append(f"{user}:{realm}:{ha1}")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


_DIGEST_PARAM = re.compile(r'\s*([a-zA-Z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)\s*,?')


def parse_auth_params(text: str) -> dict[str, str]:
    """Parse auth-param pairs (RFC 9110 §11.2): name=token or name="quoted"."""
    params: dict[str, str] = {}
    for match in _DIGEST_PARAM.finditer(text):
        value = match.group(2)
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[match.group(1).lower()] = value
    return params


class DigestAuth:
    """HTTP Digest authentication against an htdigest file (RFC 7616, MD5, qop=auth).

    The file is read again when it changes, so users can be added without a restart.

    Args:
        htdigest_path: the file of ``user:realm:HA1`` lines.
        realm: the realm; only lines of this realm count.
        nonce_lifetime: seconds a nonce stays valid.
        clock: a time source in seconds (for tests); time.time by default.
    """

    def __init__(
        self,
        htdigest_path: str | os.PathLike[str],
        realm: str,
        *,
        nonce_lifetime: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = os.fspath(htdigest_path)
        self.realm = realm
        self.nonce_lifetime = nonce_lifetime
        self._clock = clock
        self._secret = secrets.token_bytes(32)
        self._users: dict[str, str] = {}
        self._stamp: tuple[int, int] | None = None
        # Highest nonce count seen per nonce (replay protection), bounded.
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._load()

    def _load(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError:
            self._users, self._stamp = {}, None
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        users: dict[str, str] = {}
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                parts = line.rstrip("\r\n").split(":")
                if len(parts) == 3 and parts[1] == self.realm:
                    users[parts[0]] = parts[2].lower()
        self._users, self._stamp = users, stamp

    def _nonce(self) -> str:
        # Issue time and a random part (each challenge gets its own nonce, so nonce
        # counts of different clients never collide), signed with this process's secret.
        stamp = b"%d.%s" % (int(self._clock()), secrets.token_hex(8).encode())
        mac = hmac.new(self._secret, stamp, hashlib.sha256).hexdigest()[:32]
        return base64.b64encode(stamp + b":" + mac.encode()).decode()

    def _nonce_fresh(self, nonce: str) -> bool | None:
        """True if valid and fresh, False if valid but expired, None if forged."""
        try:
            stamp, _, mac = base64.b64decode(nonce, validate=True).partition(b":")
            issued = int(stamp.partition(b".")[0])
        except (binascii.Error, ValueError):
            return None
        expected = hmac.new(self._secret, stamp, hashlib.sha256).hexdigest()[:32].encode()
        if not hmac.compare_digest(mac, expected):
            return None
        return 0 <= self._clock() - issued <= self.nonce_lifetime

    def _challenge(self, stale: bool = False) -> HTTPError:
        value = (
            f'Digest realm={_quote(self.realm)}, qop="auth", algorithm=MD5, '
            f"nonce={_quote(self._nonce())}, opaque={_quote(self._secret[:8].hex())}"
        )
        if stale:
            value += ", stale=true"
        return HTTPError(401, headers=[("WWW-Authenticate", value)])

    def authenticate(self, request: Any) -> str:
        """Check the Authorization header; see `Auth.authenticate`."""
        scheme, _, rest = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "digest":
            raise self._challenge()
        p = parse_auth_params(rest)
        needed = ("username", "realm", "nonce", "uri", "response")
        if any(k not in p for k in needed) or p["realm"] != self.realm:
            raise self._challenge()
        if p.get("algorithm", "MD5").upper() != "MD5":
            raise self._challenge()
        # RFC 7616 §3.4.6: the uri must be the request target.
        if p["uri"] != request.target:
            raise HTTPError(400, "digest uri does not match the request target")
        fresh = self._nonce_fresh(p["nonce"])
        if fresh is None:
            raise self._challenge()
        self._load()
        ha1 = self._users.get(p["username"])
        ha2 = hashlib.md5(f"{request.method}:{p['uri']}".encode()).hexdigest()
        qop = p.get("qop")
        if qop == "auth":
            if "nc" not in p or "cnonce" not in p:
                raise self._challenge()
            expected = f"{ha1 or ''}:{p['nonce']}:{p['nc']}:{p['cnonce']}:auth:{ha2}"
        elif qop is None:
            expected = f"{ha1 or ''}:{p['nonce']}:{ha2}"  # RFC 2069 compatibility
        else:
            raise self._challenge()
        digest = hashlib.md5(expected.encode()).hexdigest()
        if not hmac.compare_digest(digest.encode(), p["response"].lower().encode()) or ha1 is None:
            raise self._challenge()
        if not fresh:
            raise self._challenge(stale=True)
        if qop == "auth" and not self._count_ok(p["nonce"], p["nc"]):
            raise self._challenge()
        return p["username"]

    def _count_ok(self, nonce: str, nc: str) -> bool:
        """Refuse a nonce count that does not grow (a replayed request)."""
        try:
            count = int(nc, 16)
        except ValueError:
            return False
        last = self._counts.get(nonce, 0)
        if count <= last:
            return False
        self._counts[nonce] = count
        self._counts.move_to_end(nonce)
        while len(self._counts) > 4096:
            self._counts.popitem(last=False)
        return True


def digest_authorization(
    user: str, password: str, challenge: Mapping[str, str], *, method: str, uri: str, nc: int
) -> str:
    """The ``Authorization`` value answering an HTTP Digest challenge (RFC 7616 §3.4; MD5,
    ``qop=auth``, as mos sends it): the client side of `DigestAuth`.

    Args:
        user, password: the credentials.
        challenge: the challenge's parameters (``realm``, ``nonce``, ``opaque``…).
        method, uri: the request's method and target.
        nc: how many requests these credentials answered with this nonce, this one included.
    """
    realm, nonce = challenge.get("realm", ""), challenge.get("nonce", "")
    count = f"{nc:08x}"
    cnonce = secrets.token_hex(8)
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    response = hashlib.md5(f"{ha1}:{nonce}:{count}:{cnonce}:auth:{ha2}".encode()).hexdigest()
    value = (
        f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'algorithm=MD5, qop=auth, nc={count}, cnonce="{cnonce}", response="{response}"'
    )
    if "opaque" in challenge:
        value += f', opaque="{challenge["opaque"]}"'
    return value
