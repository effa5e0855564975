"""App bundles: the zip files an over-the-air update carries (spec mgos-rpc.md §6).

A bundle is a zip of an app directory plus ``manifest.json``::

    {"name": "pump", "version": "1.2.0", "build_id": "20261125-125227/3fa9c1d2",
     "platform": "tether", "files": {"tether.yml": "<sha256 hex>", "main.py": "…", …}}

and, when it is signed, ``manifest.sig``: the base64 Ed25519 signature of the exact
bytes of ``manifest.json``. The file hashes tie every other member to the manifest,
so the signature covers the whole app.

Make one with `create_bundle` (``tether bundle``), check one with `verify_bundle`,
and unpack a checked one with `extract_bundle`, which hashes every byte again as it
writes. `generate_key` makes a signing key (``tether bundle keygen``); its public
half, base64 of the raw 32 bytes, goes in the device's ``update.key``.

Signatures need the ``cryptography`` package. Without it a device that has a key
refuses every bundle: an update is never accepted unchecked.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
import os
import re
import stat
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from tether.device.manifest import load as load_manifest
from tether.errors import ConfigError, TetherError
from tether.files import fsync_directory, replace_from, sha256_file

__all__ = [
    "MANIFEST",
    "MAX_FILES",
    "MAX_UNPACKED_SIZE",
    "PLATFORM",
    "SIGNATURE",
    "BundleError",
    "BundleInfo",
    "create_bundle",
    "extract_bundle",
    "generate_key",
    "public_key_of",
    "verify_bundle",
]

#: The member that describes a bundle.
MANIFEST = "manifest.json"
#: The member that holds the signature of `MANIFEST`.
SIGNATURE = "manifest.sig"
#: The ``platform`` of a tether bundle.
PLATFORM = "tether"
#: The default bound on the unpacked size of a bundle, in bytes.
MAX_UNPACKED_SIZE = 256 * 2**20
#: The default bound on the number of members of a bundle.
MAX_FILES = 10_000

#: Bounds on the manifest and signature members, read into memory whole.
_MAX_MANIFEST_SIZE = 4 * 2**20
_MAX_SIGNATURE_SIZE = 1024

# Directories `create_bundle` leaves out, by name, and files by suffix.
_SKIP_DIRS = frozenset(
    [".git", ".hg", ".svn", "__pycache__", ".venv", ".pytest_cache", ".mypy_cache", ".ruff_cache"]
)
_SKIP_SUFFIXES = (".pyc", ".pyo")

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_CHUNK = 64 * 1024


class BundleError(TetherError):
    """A bundle cannot be made, or a device must refuse it; the message says why."""


@dataclass(frozen=True)
class BundleInfo:
    """What a checked bundle holds.

    Attributes:
        name: the app's name.
        version: the app's version.
        build_id: when and from what it was built, e.g. ``20261125-125227/3fa9c1d2``.
        platform: always `PLATFORM`.
        files: each app file's path (``/``-separated, relative) and its SHA-256 in hex.
        signed: True when the bundle carries a signature.
        verified: True when that signature was checked against a public key.
        size: the app files' total size in bytes.
    """

    name: str
    version: str
    build_id: str
    platform: str
    files: Mapping[str, str] = field(repr=False)
    signed: bool = False
    verified: bool = False
    size: int = 0


# Making bundles.


def _app_name_version(app_dir: Path) -> tuple[str, str]:
    """The ``name`` and ``version`` of the app in app_dir, from its manifest."""
    try:
        manifest = load_manifest(app_dir)
    except ConfigError as exc:
        raise BundleError(str(exc)) from exc
    return manifest.name, manifest.version


def _is_state_dir(path: Path) -> bool:
    """Whether path looks like a device state directory (``--state-dir`` inside the app)."""
    return (
        (path / "app-files.json").is_file()
        or (path / "conf9.json").is_file()
        or (path / "ota" / "boot.json").is_file()
        or (path / "ota" / "slots").is_dir()
    )


def _app_files(app_dir: Path, skip: Path | None) -> Iterator[tuple[str, Path]]:
    """Each file to bundle as (relative posix path, path), in sorted order."""
    for root, dirs, files in os.walk(app_dir):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not _is_state_dir(here / d))
        for name in sorted(files):
            path = here / name
            if name.endswith(_SKIP_SUFFIXES) or (skip is not None and path.resolve() == skip):
                continue
            yield path.relative_to(app_dir).as_posix(), path


def create_bundle(
    app_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    private_key: bytes | None = None,
    now: datetime.datetime | None = None,
) -> BundleInfo:
    """Write a bundle of the app in app_dir to output, signed when a key is given.

    Leaves out ``__pycache__``, version control directories, compiled files, device
    state directories and output itself. The file is written atomically.

    Args:
        app_dir: the app: ``tether.yml`` (or ``mos.yml``) with ``name`` and ``version``,
            its modules, ``fs/``…
        output: the zip to write.
        private_key: a PEM Ed25519 private key (`generate_key`) to sign with.
        now: the build time in the ``build_id``; the current UTC time by default.

    Returns:
        What the bundle holds.

    Raises:
        BundleError: if the app has no manifest, a file is named like a bundle member
            the manifest uses, or the key is not an Ed25519 private key.
        OSError: if a file cannot be read or output cannot be written.
    """
    root = Path(app_dir)
    if not root.is_dir():
        raise BundleError(f"app directory {str(root)!r} is not a directory")
    name, version = _app_name_version(root)
    out = Path(output)
    members = list(_app_files(root, out.resolve()))
    files = {rel: sha256_file(path) for rel, path in members}
    for reserved in (MANIFEST, SIGNATURE):
        if reserved in files:
            raise BundleError(f"app file {reserved!r} clashes with the bundle's own {reserved!r}")
    when = (now or datetime.datetime.now(datetime.timezone.utc)).astimezone(datetime.timezone.utc)
    table = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    manifest = {
        "name": name,
        "version": version,
        "build_id": f"{when:%Y%m%d-%H%M%S}/{table[:8]}",
        "platform": PLATFORM,
        "files": files,
    }
    manifest_bytes = json.dumps(manifest, indent=1, sort_keys=True).encode() + b"\n"
    signature = None if private_key is None else _sign(private_key, manifest_bytes)

    def write(file: BinaryIO) -> None:
        with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
            _add(bundle, MANIFEST, manifest_bytes)
            if signature is not None:
                _add(bundle, SIGNATURE, base64.b64encode(signature) + b"\n")
            for rel, path in members:
                # A fixed date and mode: the same app gives the same members.
                info = zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o100644 << 16
                with path.open("rb") as src, bundle.open(info, "w") as dst:
                    while chunk := src.read(_CHUNK):
                        dst.write(chunk)

    # Readable by all: a bundle holds no secret and is served to devices.
    replace_from(out, write, mode=0o644)
    size = sum(path.stat().st_size for _, path in members)
    return BundleInfo(
        name, version, str(manifest["build_id"]), PLATFORM, files, signature is not None, False, size
    )


def _add(bundle: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o100644 << 16
    bundle.writestr(info, data)


# Keys and signatures (Ed25519, RFC 8032).


def _crypto_missing() -> BundleError:
    return BundleError("cannot check signatures: the cryptography package is not installed")


def _load_private_key(private_key: bytes) -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    except ImportError:
        raise _crypto_missing() from None
    try:
        key = serialization.load_pem_private_key(private_key, password=None)
    except (ValueError, TypeError) as exc:
        raise BundleError(f"the signing key is not a PEM private key without a password: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"the signing key is a {type(key).__name__}, not an Ed25519 private key")
    return key


def _sign(private_key: bytes, data: bytes) -> bytes:
    signature: bytes = _load_private_key(private_key).sign(data)
    return signature


def public_key_of(private_key: bytes) -> str:
    """The public key of a PEM Ed25519 private key, as ``update.key`` takes it.

    Returns:
        Base64 of the raw 32-byte public key.

    Raises:
        BundleError: if private_key is not a PEM Ed25519 private key, or the
            ``cryptography`` package is missing.
    """
    key = _load_private_key(private_key)
    from cryptography.hazmat.primitives import serialization

    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def generate_key(path: str | os.PathLike[str]) -> str:
    """Write a new Ed25519 private key to path (PEM, mode 0600) and return its public key.

    Args:
        path: where to write the key; it must not exist.

    Returns:
        The public key for ``update.key``: base64 of the raw 32 bytes.

    Raises:
        BundleError: if the ``cryptography`` package is missing.
        FileExistsError: if path exists (a key is never overwritten).
    """
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    except ImportError:
        raise _crypto_missing() from None
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    return public_key_of(pem)


def _check_signature(public_key: str, manifest: bytes, signature: bytes) -> None:
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError:
        raise _crypto_missing() from None
    try:
        raw_key = base64.b64decode(public_key, validate=True)
        key = Ed25519PublicKey.from_public_bytes(raw_key)
    except (binascii.Error, ValueError):
        raise BundleError(
            f"update.key {public_key!r} is not an Ed25519 public key (base64 of 32 bytes)"
        ) from None
    raw = signature
    if len(raw) != 64:  # else base64 text, as `create_bundle` writes it
        try:
            raw = base64.b64decode(signature.strip(), validate=True)
        except binascii.Error:
            raise BundleError(f"{SIGNATURE} is neither 64 raw bytes nor base64") from None
    try:
        key.verify(raw, manifest)
    except InvalidSignature:
        raise BundleError(f"bad signature: {SIGNATURE} does not match update.key") from None


# Checking and unpacking bundles.


def _check_name(info: zipfile.ZipInfo) -> str:
    """The member's path, normalised; raises BundleError for anything but a plain relative path."""
    name = info.filename
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise BundleError(f"member {name!r} is a symbolic link")
    if "\\" in name or "\x00" in name or name.startswith("/") or re.match(r"[A-Za-z]:", name):
        raise BundleError(f"member {name!r} has an absolute or unsafe path")
    path = PurePosixPath(name)
    if ".." in path.parts:
        raise BundleError(f"member {name!r} has a path that leaves the app directory")
    if path.as_posix() != name.rstrip("/") or path.as_posix() == ".":
        raise BundleError(f"member {name!r} is not a normalised relative path")
    return path.as_posix()


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise BundleError(f"{path.name} is not a zip file") from None


def _read_small(bundle: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    if info.file_size > limit:
        raise BundleError(f"{info.filename} is {info.file_size} bytes, over the limit of {limit}")
    try:
        return bundle.read(info)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
        raise BundleError(f"member {info.filename!r} is corrupt: {exc}") from None


def _parse_manifest(data: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise BundleError(f"{MANIFEST} is not valid JSON") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{MANIFEST} is not a JSON object")
    for key in ("name", "version", "build_id", "platform"):
        if not isinstance(manifest.get(key), str):
            raise BundleError(f"{MANIFEST} has no string {key!r}")
    if manifest["platform"] != PLATFORM:
        raise BundleError(f"bundle platform {manifest['platform']!r} is not {PLATFORM!r}")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise BundleError(f"{MANIFEST} has no 'files' object")
    for name, digest in files.items():
        if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
            raise BundleError(f"{MANIFEST} has no SHA-256 hex digest for {name!r}")
    return manifest


def _members(bundle: zipfile.ZipFile, max_size: int, max_files: int) -> dict[str, zipfile.ZipInfo]:
    """The members by normalised name, after the checks that need no decompression."""
    infos = bundle.infolist()
    if len(infos) > max_files:
        raise BundleError(f"bundle has {len(infos)} members, over the limit of {max_files}")
    # Declared sizes bound what zipfile decompresses (it stops there and checks the
    # CRC), so their sum bounds the unpacked size: a zip bomb stops here.
    total = sum(info.file_size for info in infos)
    if total > max_size:
        raise BundleError(f"bundle unpacks to {total} bytes, over the limit of {max_size}")
    members: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = _check_name(info)
        if info.is_dir():
            continue
        if name in members:
            raise BundleError(f"member {name!r} appears twice")
        members[name] = info
    return members


def verify_bundle(
    path: str | os.PathLike[str],
    *,
    public_key: str | None,
    max_size: int = MAX_UNPACKED_SIZE,
    max_files: int = MAX_FILES,
) -> BundleInfo:
    """Check a bundle completely: structure, limits, every file's hash, the signature.

    Args:
        path: the zip file.
        public_key: ``update.key``: base64 of a raw Ed25519 public key; when set, the
            bundle must carry a signature it verifies. None accepts unsigned bundles.
        max_size: the largest unpacked size accepted, in bytes.
        max_files: the most members accepted.

    Returns:
        What the bundle holds; pass it to `extract_bundle`.

    Raises:
        BundleError: naming the first problem found: not a zip, no manifest, a hash
            mismatch (naming the file), a file the manifest does not list or a listed
            file missing, an unsafe member path or a symbolic link, no signature while
            a key is set, a bad signature, a limit exceeded.
    """
    bundle_path = Path(path)
    with _open_zip(bundle_path) as bundle:
        members = _members(bundle, max_size, max_files)
        if MANIFEST not in members:
            raise BundleError(f"bundle has no {MANIFEST}")
        manifest_bytes = _read_small(bundle, members[MANIFEST], _MAX_MANIFEST_SIZE)
        signature = None
        if SIGNATURE in members:
            signature = _read_small(bundle, members[SIGNATURE], _MAX_SIGNATURE_SIZE)
        # The signature first: nothing else of an unsigned bundle is worth reading.
        if public_key is not None:
            if signature is None:
                raise BundleError(f"bundle is not signed ({SIGNATURE} missing) and update.key is set")
            _check_signature(public_key, manifest_bytes, signature)
        manifest = _parse_manifest(manifest_bytes)
        files: dict[str, str] = manifest["files"]
        for name in files:
            if name in (MANIFEST, SIGNATURE):
                raise BundleError(f"{MANIFEST} lists its own member {name!r}")
            if name not in members:
                raise BundleError(f"file {name!r} is in {MANIFEST} but not in the bundle")
        size = 0
        for name, info in members.items():
            if name in (MANIFEST, SIGNATURE):
                continue
            if name not in files:
                raise BundleError(f"file {name!r} is not in {MANIFEST}")
            if _hash_member(bundle, info) != files[name]:
                raise BundleError(f"file {name!r} does not match its hash in {MANIFEST}")
            size += info.file_size
    return BundleInfo(
        manifest["name"],
        manifest["version"],
        manifest["build_id"],
        PLATFORM,
        dict(files),
        signature is not None,
        public_key is not None,
        size,
    )


def _hash_member(bundle: zipfile.ZipFile, info: zipfile.ZipInfo, copy_to: Any = None) -> str:
    """The SHA-256 of a member's bytes, also written to copy_to (a binary file) if given."""
    digest = hashlib.sha256()
    try:
        with bundle.open(info) as member:
            while chunk := member.read(_CHUNK):
                digest.update(chunk)
                if copy_to is not None:
                    copy_to.write(chunk)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
        raise BundleError(f"member {info.filename!r} is corrupt: {exc}") from None
    return digest.hexdigest()


def extract_bundle(
    path: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    info: BundleInfo,
    *,
    max_size: int = MAX_UNPACKED_SIZE,
    max_files: int = MAX_FILES,
) -> None:
    """Unpack a bundle `verify_bundle` accepted into the empty directory destination.

    Every file is hashed again as it is written and fsynced, and so is every
    directory: when this returns, destination holds exactly the files of info.
    ``manifest.json`` (and ``manifest.sig``) are unpacked beside the app files.

    Args:
        path: the zip file.
        destination: an empty directory.
        info: what `verify_bundle` returned for path.
        max_size: the limit given to `verify_bundle`.
        max_files: the limit given to `verify_bundle`.

    Raises:
        BundleError: if the bundle changed since it was verified.
        OSError: if a file cannot be written.
    """
    target = Path(destination)
    directories = {target}
    with _open_zip(Path(path)) as bundle:
        members = _members(bundle, max_size, max_files)
        expected = set(info.files)
        if not expected <= members.keys() or not members.keys() - {MANIFEST, SIGNATURE} <= expected:
            raise BundleError("bundle changed since it was verified: its members differ")
        for name, member in members.items():
            out = target / name
            if out.parent not in directories:
                out.parent.mkdir(parents=True, exist_ok=True)
                directories.update([out.parent, *out.parent.parents])
            with out.open("xb") as f:
                digest = _hash_member(bundle, member, f)
                f.flush()
                os.fsync(f.fileno())
            if name in info.files and digest != info.files[name]:
                raise BundleError(f"file {name!r} does not match its hash in {MANIFEST}")
    for directory in directories:
        if directory == target or target in directory.parents:
            fsync_directory(directory)
