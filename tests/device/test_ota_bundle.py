"""App bundles: make, sign, verify, unpack, and every refusal."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import re
import stat
import struct
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tether.device import bundle
from tether.device.bundle import BundleError, create_bundle, extract_bundle, generate_key, verify_bundle
from tether.errors import TetherError

MAIN = b"def init(device):\n    pass\n"


def make_app(root: Path, version: str = "1.0", files: int = 0) -> Path:
    """An app directory with the things a bundle leaves out beside the app's files."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "tether.yml").write_text(f'name: pump\nversion: "{version}"\nentry: main.py\n')
    (root / "main.py").write_bytes(MAIN)
    (root / "fs").mkdir(exist_ok=True)
    (root / "fs" / "index.html").write_text(f"<h1>pump {version}</h1>\n")
    for i in range(files):
        (root / "fs" / f"data{i:03}.txt").write_text(f"{version} {i} " * 50)
    (root / "__pycache__").mkdir(exist_ok=True)
    (root / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\x00")
    (root / ".git").mkdir(exist_ok=True)
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "helper.pyc").write_bytes(b"\x00")
    (root / "state" / "ota").mkdir(parents=True, exist_ok=True)
    (root / "state" / "ota" / "boot.json").write_text("{}")
    for name, marker in [("state2", "conf9.json"), ("state3", "app-files.json"), ("state4", "ota/slots/1")]:
        (root / name / marker).parent.mkdir(parents=True, exist_ok=True)
        (root / name / marker).write_text("{}")
    return root


APP_FILES = ["fs/index.html", "main.py", "tether.yml"]


def test_round_trip(tmp_path: Path) -> None:
    app = make_app(tmp_path / "app")
    out = app / "app.zip"  # inside the app: left out of itself
    when = datetime.datetime(2026, 11, 25, 12, 52, 27, tzinfo=datetime.timezone.utc)
    made = create_bundle(app, out, now=when)
    assert (made.name, made.version, made.platform, made.signed) == ("pump", "1.0", "tether", False)
    assert sorted(made.files) == APP_FILES
    assert made.files["main.py"] == hashlib.sha256(MAIN).hexdigest()
    assert made.build_id.startswith("20261125-125227/") and len(made.build_id) == 24
    with zipfile.ZipFile(out) as z:
        assert sorted(z.namelist()) == sorted([*APP_FILES, "manifest.json"])
        manifest = json.loads(z.read("manifest.json"))
    assert manifest == {
        "name": "pump",
        "version": "1.0",
        "build_id": made.build_id,
        "platform": "tether",
        "files": made.files,
    }
    checked = verify_bundle(out, public_key=None)
    assert checked == made
    assert checked.size == sum((app / name).stat().st_size for name in APP_FILES)
    target = tmp_path / "unpacked"
    target.mkdir()
    extract_bundle(out, target, checked)
    for name in APP_FILES:
        assert (target / name).read_bytes() == (app / name).read_bytes()
    assert json.loads((target / "manifest.json").read_bytes()) == manifest
    # The same app gives the same bundle (fixed member dates), but for the build_id.
    first = out.read_bytes()
    assert create_bundle(app, out, now=when) == made
    assert out.read_bytes() == first


def test_create_refusals(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="is not a directory"):
        create_bundle(tmp_path / "nope", tmp_path / "a.zip")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BundleError, match=r"no tether\.yml"):
        create_bundle(empty, tmp_path / "a.zip")
    app = make_app(tmp_path / "app")
    (app / "manifest.json").write_text("{}")
    with pytest.raises(BundleError, match=r"app file 'manifest\.json' clashes"):
        create_bundle(app, tmp_path / "a.zip")
    assert not (tmp_path / "a.zip").exists()
    (app / "manifest.json").unlink()
    with pytest.raises(BundleError, match="not a PEM private key"):
        create_bundle(app, tmp_path / "a.zip", private_key=b"nope")
    assert not list(tmp_path.glob("*.zip*")) and not list(tmp_path.glob(".*tmp*"))


def test_keygen_sign_verify(tmp_path: Path) -> None:
    key_file = tmp_path / "key.pem"
    public = generate_key(key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(base64.b64decode(public)) == 32
    assert bundle.public_key_of(key_file.read_bytes()) == public
    with pytest.raises(FileExistsError):
        generate_key(key_file)
    app = make_app(tmp_path / "app")
    made = create_bundle(app, tmp_path / "a.zip", private_key=key_file.read_bytes())
    assert made.signed
    with zipfile.ZipFile(tmp_path / "a.zip") as z:
        assert len(base64.b64decode(z.read("manifest.sig"))) == 64
    info = verify_bundle(tmp_path / "a.zip", public_key=public)
    assert (info.signed, info.verified) == (True, True)
    info = verify_bundle(tmp_path / "a.zip", public_key=None)
    assert (info.signed, info.verified) == (True, False)
    other = generate_key(tmp_path / "other.pem")
    with pytest.raises(BundleError, match="bad signature"):
        verify_bundle(tmp_path / "a.zip", public_key=other)


def test_raw_signature_accepted(tmp_path: Path) -> None:
    public = generate_key(tmp_path / "key.pem")
    manifest = manifest_of({"main.py": MAIN})
    signature = bundle._sign((tmp_path / "key.pem").read_bytes(), manifest)
    path = write_zip(
        tmp_path / "b.zip", {"manifest.json": manifest, "manifest.sig": signature, "main.py": MAIN}
    )
    assert verify_bundle(path, public_key=public).verified


def test_a_non_ed25519_key_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(BundleError, match="not an Ed25519 private key"):
        bundle.public_key_of(pem)


def manifest_of(members: dict[str, bytes], /, **changes: Any) -> bytes:
    manifest = {
        "name": "pump",
        "version": "1.0",
        "build_id": "20261125-125227/00000000",
        "platform": "tether",
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in members.items()},
    }
    manifest.update(changes)
    return json.dumps(manifest).encode()


def write_zip(path: Path, members: dict[str, bytes], modes: dict[str, int] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name" for the duplicate case
        for name, data in members.items():
            info = zipfile.ZipInfo(name.split("#")[0])
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (modes or {}).get(name, 0o100644) << 16
            z.writestr(info, data)
    return path


GOOD = {"main.py": MAIN, "fs/a.txt": b"a"}
OTHER_KEY = base64.b64encode(bytes(range(32))).decode()


def refusals() -> list[tuple[str, Any, str | None, str]]:
    """(case, bundle bytes or members, public key, error)."""
    good_manifest = manifest_of(GOOD)
    return [
        ("not a zip", b"hello, world", None, "b.zip is not a zip file"),
        ("no manifest", dict(GOOD), None, "bundle has no manifest.json"),
        (
            "hash mismatch",
            {"manifest.json": good_manifest, "main.py": b"evil()", "fs/a.txt": b"a"},
            None,
            "file 'main.py' does not match its hash in manifest.json",
        ),
        (
            "file not in manifest",
            {"manifest.json": good_manifest, **GOOD, "extra.py": b""},
            None,
            "file 'extra.py' is not in manifest.json",
        ),
        (
            "file missing",
            {"manifest.json": good_manifest, "main.py": MAIN},
            None,
            "file 'fs/a.txt' is in manifest.json but not in the bundle",
        ),
        (
            "parent directory",
            {"manifest.json": manifest_of({"../evil.py": b""}), "../evil.py": b""},
            None,
            "member '../evil.py' has a path that leaves the app directory",
        ),
        (
            "parent inside",
            {"manifest.json": good_manifest, **GOOD, "fs/../../evil.py": b""},
            None,
            "leaves the app directory",
        ),
        (
            "absolute",
            {"manifest.json": good_manifest, **GOOD, "/etc/passwd": b""},
            None,
            "member '/etc/passwd' has an absolute or unsafe path",
        ),
        ("backslash", {"manifest.json": good_manifest, **GOOD, "fs\\x": b""}, None, "absolute or unsafe"),
        ("drive", {"manifest.json": good_manifest, **GOOD, "C:x": b""}, None, "absolute or unsafe"),
        ("dot", {"manifest.json": good_manifest, **GOOD, "./x": b""}, None, "not a normalised relative path"),
        ("symlink", {"manifest.json": good_manifest, **GOOD, "link": b"/etc/passwd"}, None, "symbolic link"),
        (
            "duplicate",
            {"manifest.json": good_manifest, **GOOD, "main.py#2": MAIN},
            None,
            "member 'main.py' appears twice",
        ),
        (
            "unsigned",
            {"manifest.json": good_manifest, **GOOD},
            OTHER_KEY,
            "bundle is not signed (manifest.sig missing) and update.key is set",
        ),
        (
            "bad signature",
            {"manifest.json": good_manifest, "manifest.sig": base64.b64encode(bytes(64)), **GOOD},
            OTHER_KEY,
            "bad signature",
        ),
        (
            "signature not base64",
            {"manifest.json": good_manifest, "manifest.sig": b"!!", **GOOD},
            OTHER_KEY,
            "neither 64 raw bytes nor base64",
        ),
        (
            "bad update.key",
            {"manifest.json": good_manifest, "manifest.sig": bytes(64), **GOOD},
            "not-a-key",
            "update.key 'not-a-key' is not an Ed25519 public key",
        ),
        ("manifest not JSON", {"manifest.json": b"{", **GOOD}, None, "manifest.json is not valid JSON"),
        ("manifest not object", {"manifest.json": b"[]", **GOOD}, None, "manifest.json is not a JSON object"),
        (
            "no version",
            {"manifest.json": manifest_of(GOOD, version=None), **GOOD},
            None,
            "manifest.json has no string 'version'",
        ),
        (
            "platform",
            {"manifest.json": manifest_of(GOOD, platform="esp32"), **GOOD},
            None,
            "bundle platform 'esp32' is not 'tether'",
        ),
        (
            "no files",
            {"manifest.json": manifest_of(GOOD, files=None), **GOOD},
            None,
            "manifest.json has no 'files' object",
        ),
        (
            "bad digest",
            {"manifest.json": manifest_of(GOOD, files={"main.py": "abc"}), "main.py": MAIN},
            None,
            "no SHA-256 hex digest for 'main.py'",
        ),
        (
            "lists itself",
            {"manifest.json": manifest_of(GOOD, files={"manifest.json": "0" * 64}), **GOOD},
            None,
            "manifest.json lists its own member 'manifest.json'",
        ),
    ]


CASES = [case[0] for case in refusals()]


@pytest.mark.parametrize("case", CASES)
def test_refusals(tmp_path: Path, case: str) -> None:
    _, content, key, error = next(c for c in refusals() if c[0] == case)
    path = tmp_path / "b.zip"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        write_zip(path, content, {"link": 0o120777})
    with pytest.raises(BundleError) as caught:
        verify_bundle(path, public_key=key)
    assert error in str(caught.value)
    assert isinstance(caught.value, TetherError)


def test_size_limits(tmp_path: Path) -> None:
    # A zip bomb: 4 MB of zeros in a few kilobytes.
    zeros = bytes(4 * 2**20)
    path = write_zip(tmp_path / "bomb.zip", {"manifest.json": manifest_of({"z": zeros}), "z": zeros})
    assert path.stat().st_size < 20_000
    with pytest.raises(BundleError, match=r"bundle unpacks to \d+ bytes, over the limit of 1000000"):
        verify_bundle(path, public_key=None, max_size=1_000_000)
    assert verify_bundle(path, public_key=None).size == len(zeros)
    many = {f"f{i}": b"" for i in range(20)}
    path = write_zip(tmp_path / "many.zip", {"manifest.json": manifest_of(many), **many})
    with pytest.raises(BundleError, match="bundle has 21 members, over the limit of 10"):
        verify_bundle(path, public_key=None, max_files=10)
    huge_manifest = b" " * (4 * 2**20 + 1)
    path = write_zip(tmp_path / "manifest.zip", {"manifest.json": huge_manifest})
    with pytest.raises(BundleError, match=r"manifest\.json is 4194305 bytes, over the limit"):
        verify_bundle(path, public_key=None)


def test_a_member_larger_than_declared_is_refused(tmp_path: Path) -> None:
    data = b"a" * 1000
    path = write_zip(tmp_path / "lie.zip", {"manifest.json": manifest_of({"big": data}), "big": data})
    with zipfile.ZipFile(path) as z:
        local = z.getinfo("big").header_offset
    raw = bytearray(path.read_bytes())
    fields = re.escape(bytes(raw[local + 6 : local + 26]))  # flags … sizes, the same in both headers
    found = re.search(b"PK\x01\x02....(?=" + fields + b")", raw, re.DOTALL)
    assert found is not None
    central = found.start()
    # Declare 10 bytes where there are 1000: in the local header and in the central directory.
    for at in (local + 22, central + 24):
        assert struct.unpack_from("<I", raw, at)[0] == 1000
        struct.pack_into("<I", raw, at, 10)
    path.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="member 'big' is corrupt"):
        verify_bundle(path, public_key=None)


def test_extract_rechecks_hashes(tmp_path: Path) -> None:
    app = make_app(tmp_path / "app")
    info = create_bundle(app, tmp_path / "a.zip")
    create_bundle(make_app(tmp_path / "app2", version="2.0"), tmp_path / "b.zip")
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(BundleError, match=r"does not match its hash in manifest\.json"):
        extract_bundle(tmp_path / "b.zip", target, info)
    changed = write_zip(tmp_path / "c.zip", {"manifest.json": b"{}", "x": b""})
    with pytest.raises(BundleError, match="members differ"):
        extract_bundle(changed, tmp_path / "out2", info)


def test_without_cryptography_a_key_refuses_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "key.pem"
    public = generate_key(key_file)
    app = make_app(tmp_path / "app")
    create_bundle(app, tmp_path / "a.zip", private_key=key_file.read_bytes())
    for name in [n for n in sys.modules if n == "cryptography" or n.startswith("cryptography.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "cryptography", None)
    missing = "cannot check signatures: the cryptography package is not installed"
    with pytest.raises(BundleError, match=missing):
        verify_bundle(tmp_path / "a.zip", public_key=public)
    assert not verify_bundle(tmp_path / "a.zip", public_key=None).verified
    with pytest.raises(BundleError, match=missing):
        generate_key(tmp_path / "new.pem")
    with pytest.raises(BundleError, match=missing):
        create_bundle(app, tmp_path / "b.zip", private_key=key_file.read_bytes())


def test_the_bundle_is_replaced_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(tmp_path / "app")
    out = tmp_path / "out" / "app.zip"
    out.parent.mkdir()
    create_bundle(app, out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644  # no secret in it: served to devices
    before = out.read_bytes()

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("tether.device.bundle._add", disk_full)
    with pytest.raises(OSError, match="No space left"):
        create_bundle(app, out)
    assert out.read_bytes() == before
    assert [p.name for p in out.parent.iterdir()] == ["app.zip"]
