from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tether.files import copy_atomic, remove_stale_temporaries, write_atomic


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
