"""The page's MD5 and SHA-256 (static/digest.js) against hashlib, run by Node when it is installed.

The browser tests sign in with both algorithms; these vectors cover the lengths
around the 64-byte block boundary and the pure-JS SHA-256 that a page without
WebCrypto (plain HTTP on a LAN address) uses.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from importlib.resources import files

import pytest

from tether.rpc.auth import digest_ha1, digest_response

TEXTS = ["", "abc", "a" * 55, "a" * 56, "a" * 63, "a" * 64, "a" * 65, "x" * 1000, "héllo wörld ✓"]

SCRIPT = """
import { md5, sha256, digest, digestHa1, digestResponse } from %(module)s;
const texts = %(texts)s;
const encoder = new TextEncoder();
const out = {
  md5: texts.map((t) => md5(encoder.encode(t))),
  sha256: texts.map((t) => sha256(encoder.encode(t))),
  webcrypto: await digest("SHA-256", texts[1]),
  response: await digestResponse("MD5", await digestHa1("MD5", "admin", "RPC", "secret"), 1700000000, 12345),
  response256: await digestResponse(
    "SHA-256", await digestHa1("SHA-256", "admin", "RPC", "secret"), 1700000000, 7),
};
let refused = "";
try { await digest("SHA-1", "x"); } catch (error) { refused = error.message; }
out.refused = refused;
console.log(JSON.stringify(out));
"""


def test_digests_match_hashlib_and_the_spec_vector() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (Debian: apt-get install nodejs)")
    module = files("tether.web").joinpath("static", "digest.js")
    script = SCRIPT % {"module": json.dumps(f"file://{module}"), "texts": json.dumps(TEXTS)}
    result = subprocess.run(
        [node, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["md5"] == [hashlib.md5(t.encode()).hexdigest() for t in TEXTS]
    assert out["sha256"] == [hashlib.sha256(t.encode()).hexdigest() for t in TEXTS]
    assert out["webcrypto"] == hashlib.sha256(b"abc").hexdigest()
    assert out["response"] == "4dc7072db857c6822275e4bddf7176b0"  # mgos-rpc.md §4
    ha1 = digest_ha1("admin", "RPC", "secret", "SHA-256")
    assert out["response256"] == digest_response(ha1, 1700000000, 7, "SHA-256")
    assert out["refused"] == 'unsupported digest algorithm "SHA-1"'
