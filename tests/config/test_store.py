"""tether.config.store: mgos JSON, atomic writes that survive SIGKILL, moving bad files aside."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tether.config import Config, Schema
from tether.config.store import encode, move_aside, remove_stale_temporaries, write_atomic


@pytest.mark.parametrize(
    ("value", "compact"),
    [
        (2.0, "2.000000"),
        (-0.5, "-0.500000"),
        (3, "3"),
        (True, "true"),
        (None, '""'),
        ("", '""'),
        ('a"b\\c\n\u00e9', '"a\\"b\\\\c\\n\u00e9"'),
        ({}, "{}"),
        ({"b": 1, "a": {"x": 1.5, "y": ""}}, '{"b":1,"a":{"x":1.500000,"y":""}}'),
    ],
)
def test_encode_compact(value: Any, compact: str) -> None:
    assert encode(value) == compact


def test_encode_pretty() -> None:
    assert encode({"a": {"b": 1, "c": {}}, "d": 2.5}, indent=2) == (
        '{\n  "a": {\n    "b": 1,\n    "c": {}\n  },\n  "d": 2.500000\n}'
    )
    assert encode({"a": 1}, indent=4) == '{\n    "a": 1\n}'


@pytest.mark.parametrize("value", [[1], b"x", object()])
def test_encode_refuses_what_no_config_holds(value: Any) -> None:
    with pytest.raises(TypeError, match="a configuration holds no"):
        encode({"a": value})


def test_write_atomic_replaces(tmp_path: Path) -> None:
    path = tmp_path / "conf9.json"
    write_atomic(path, b"one")
    write_atomic(path, b"two")
    assert path.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["conf9.json"]


def test_write_atomic_leaves_the_old_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "conf9.json"
    path.write_bytes(b"old")

    def fail(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space"):
        write_atomic(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["conf9.json"]


def test_move_aside(tmp_path: Path) -> None:
    names = []
    for n in range(3):
        path = tmp_path / "conf9.json"
        path.write_text(str(n))
        names.append(move_aside(path).name)
    assert names == ["conf9.json.corrupt", "conf9.json.corrupt.1", "conf9.json.corrupt.2"]
    assert (tmp_path / "conf9.json.corrupt.2").read_text() == "2"


def test_move_aside_gives_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Path, "exists", lambda self: True)
    with pytest.raises(FileExistsError, match="no free name"):
        move_aside(tmp_path / "conf9.json")


def test_remove_stale_temporaries(tmp_path: Path) -> None:
    for name in (".conf9.json.abc.tmp", ".conf9.json.try.x.tmp", ".conf1.json.y.tmp", "conf9.json", "x.tmp"):
        (tmp_path / name).write_text("")
    removed = remove_stale_temporaries(tmp_path, "conf9.json")
    assert [p.name for p in removed] == [".conf9.json.abc.tmp", ".conf9.json.try.x.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".conf1.json.y.tmp", "conf9.json", "x.tmp"]


def test_load_removes_what_a_crashed_save_left(tmp_path: Path) -> None:
    (tmp_path / ".conf9.json.k3j4.tmp").write_text('{"debug": {"lev')
    config = Config(Schema.standard(), tmp_path)
    assert config.load() == []
    assert list(tmp_path.iterdir()) == []


# A child process saves version after version and is killed with SIGKILL: somewhere in the
# middle (big values make a write long, so that the kill often lands inside one), or
# paused in its n-th os.fsync: odd calls fsync the temporary file before os.replace,
# even ones the directory after it. The file must then hold one whole version.
CHILD = textwrap.dedent(
    """
    import os
    import sys
    from pathlib import Path
    from tether.config import Config, Schema

    pause_at = int(sys.argv[2])
    calls = 0
    fsync = os.fsync

    def pausing_fsync(fd):
        global calls
        calls += 1
        if calls == pause_at:
            print("paused", flush=True)
            sys.stdin.readline()  # until the parent kills this process
        fsync(fd)

    os.fsync = pausing_fsync
    schema = Schema()
    schema.extend([["app.n", "i", {}], ["app.blob", "s", {}]])
    config = Config(schema, Path(sys.argv[1]))
    for n in range(1, 10_000):
        config.set({"app": {"n": n, "blob": chr(97 + n % 26) * (n % 5 * 200_000)}})
        config.save()
        print(n, flush=True)
    """
)


def version(n: int) -> dict[str, Any]:
    app: dict[str, Any] = {"n": n}
    if n % 5:
        app["blob"] = chr(97 + n % 26) * (n % 5 * 200_000)
    return {"app": app}


def kill_while_saving(state: Path, lines: int, pause_at: int = 0) -> list[str]:
    """Run the child until it printed lines lines, kill it with SIGKILL; returns the lines."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(state), str(pause_at)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        return [child.stdout.readline() for _ in range(lines)]
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        for pipe in (child.stdin, child.stdout):
            assert pipe is not None
            pipe.close()


def check_state(state: Path) -> int:
    """The version the file holds; it must be whole, and load cleanly."""
    document = json.loads((state / "conf9.json").read_text())
    n: int = document["app"]["n"]
    assert document == version(n)
    schema = Schema()
    schema.extend([["app.n", "i", {}], ["app.blob", "s", {}]])
    config = Config(schema, state)
    assert config.load() == []
    assert config["app.n"] == n
    assert sorted(p.name for p in state.iterdir()) == ["conf9.json"]  # the temporary is gone
    return n


@pytest.mark.timeout(120)
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_a_save_killed_with_sigkill_leaves_a_whole_file(tmp_path: Path) -> None:
    for kill_after in (1, 2, 3, 5, 8, 13):
        state = tmp_path / f"free{kill_after}"
        state.mkdir()
        lines = kill_while_saving(state, kill_after)
        assert lines[-1] == f"{kill_after}\n", lines
        assert check_state(state) >= kill_after


@pytest.mark.timeout(120)
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
@pytest.mark.parametrize(
    ("pause_at", "expected"),
    [(5, 2), (6, 3)],  # third save: before os.replace the second version, after it the third
)
def test_a_save_killed_before_or_after_the_rename(tmp_path: Path, pause_at: int, expected: int) -> None:
    lines = kill_while_saving(tmp_path, 3, pause_at)
    assert lines == ["1\n", "2\n", "paused\n"]
    temporaries = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(temporaries) == (1 if pause_at % 2 else 0)
    assert check_state(tmp_path) == expected
