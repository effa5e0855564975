from __future__ import annotations

import hashlib
import stat
import zipfile
from pathlib import Path
from typing import BinaryIO

import pytest

from tether.files import (
    copy_atomic,
    move_aside,
    remove_stale_temporaries,
    replace_from,
    sha256_file,
    write_atomic,
)


def test_write_atomic_replaces_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_atomic(path, b"one")
    write_atomic(path, b"two")
    assert path.read_bytes() == b"two"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_atomic(path, b"old")
    with pytest.raises(TypeError):
        write_atomic(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_copy_atomic_creates_folders(tmp_path: Path) -> None:
    source = tmp_path / "a.bin"
    source.write_bytes(bytes(range(256)) * 1000)
    target = tmp_path / "deep" / "er" / "b.bin"
    copy_atomic(source, target)
    assert target.read_bytes() == source.read_bytes()


def test_stale_temporaries_removed(tmp_path: Path) -> None:
    (tmp_path / ".conf9.json.abc123.tmp").write_text("half")
    (tmp_path / ".other.json.x.tmp").write_text("keep")
    assert [p.name for p in remove_stale_temporaries(tmp_path, "conf9.json")] == [".conf9.json.abc123.tmp"]
    assert (tmp_path / ".other.json.x.tmp").exists()


def test_replace_from_streams_into_a_file_a_library_can_seek(tmp_path: Path) -> None:
    path = tmp_path / "out.zip"
    path.write_bytes(b"old")

    def fill(file: BinaryIO) -> None:
        with zipfile.ZipFile(file, "w") as archive:
            archive.writestr("a.txt", "hello")

    replace_from(path, fill, mode=0o644)
    with zipfile.ZipFile(path) as archive:
        assert archive.read("a.txt") == b"hello"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["out.zip"]
    replace_from(str(path), lambda file: file.write(b"private"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_replace_from_keeps_the_old_file_when_fill_fails(tmp_path: Path) -> None:
    path = tmp_path / "out.zip"
    path.write_bytes(b"old")

    def fill(file: BinaryIO) -> None:
        file.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        replace_from(path, fill)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.zip"]


@pytest.mark.parametrize("size", [0, 1, 64 * 1024, 200_001])
def test_sha256_file(tmp_path: Path, size: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()
    assert sha256_file(str(tmp_path / "f")) == hashlib.sha256(data).hexdigest()
    with pytest.raises(FileNotFoundError):
        sha256_file(tmp_path / "missing")


def test_move_aside_numbers_the_names(tmp_path: Path) -> None:
    names = []
    for content in ("a", "b", "c"):
        (tmp_path / "boot.json").write_text(content)
        names.append(move_aside(tmp_path / "boot.json").name)
    assert names == ["boot.json.corrupt", "boot.json.corrupt.1", "boot.json.corrupt.2"]
    assert (tmp_path / "boot.json.corrupt.2").read_text() == "c"
    assert not (tmp_path / "boot.json").exists()
