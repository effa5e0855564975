"""The FS.* service through `Dispatcher.handle`: mos's frames (spec §11 item 9), paths, uploads."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tether.device.services.fs import register
from tether.rpc import Dispatcher

DEVICE = "tether_0A1B2C"


def make(root: Path, **options: Any) -> Dispatcher:
    dispatcher = Dispatcher(DEVICE)
    register(dispatcher, root, **options)
    return dispatcher


async def reply(dispatcher: Dispatcher, method: str, params: Any = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"id": 1, "src": "mos", "method": method}
    if params is not None:
        frame["params"] = params
    answer = await dispatcher.handle(json.dumps(frame), channel="WS_in")
    assert answer is not None
    decoded: dict[str, Any] = json.loads(answer)
    return decoded


async def ok(dispatcher: Dispatcher, method: str, params: Any = None) -> Any:
    answer = await reply(dispatcher, method, params)
    assert "error" not in answer, answer
    return answer["result"]


async def error(dispatcher: Dispatcher, method: str, params: Any = None) -> tuple[int, str]:
    answer = await reply(dispatcher, method, params)
    assert "result" not in answer, answer
    return answer["error"]["code"], answer["error"].get("message", "")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


async def eventually(predicate: Callable[[], bool]) -> None:
    """Poll predicate on the loop (bounded): for the upload idle timer."""
    for _ in range(2000):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the condition never came true")


async def test_the_mos_session_of_spec_11_item_9(tmp_path: Path) -> None:
    dispatcher = make(tmp_path)
    src = f'"src":"{DEVICE}","dst":"mos"'
    session = [
        (
            '{"id":1,"src":"mos","method":"FS.Put","params":'
            '{"filename":"t.txt","offset":0,"append":false,"data":"aGVsbG8="}}',
            f'{{"id":1,{src},"result":null}}',
        ),
        (
            '{"id":2,"src":"mos","method":"FS.Put","params":'
            '{"filename":"t.txt","offset":5,"append":true,"data":"IHdvcmxk"}}',
            f'{{"id":2,{src},"result":null}}',
        ),
        (
            '{"id":3,"src":"mos","method":"FS.Get","params":{"filename":"t.txt","offset":0,"len":512}}',
            f'{{"id":3,{src},"result":{{"data":"aGVsbG8gd29ybGQ=","left":0}}}}',
        ),
        (
            '{"id":4,"src":"mos","method":"FS.Get","params":{"filename":"t.txt","offset":6,"len":3}}',
            f'{{"id":4,{src},"result":{{"data":"d29y","left":2}}}}',
        ),
        (
            '{"id":5,"src":"mos","method":"FS.ListExt","params":{"path":"/"}}',
            f'{{"id":5,{src},"result":[{{"name":"t.txt","size":11}}]}}',
        ),
        ('{"id":6,"src":"mos","method":"FS.List"}', f'{{"id":6,{src},"result":["t.txt"]}}'),
        (
            '{"id":7,"src":"mos","method":"FS.Remove","params":{"filename":"t.txt"}}',
            f'{{"id":7,{src},"result":null}}',
        ),
        (
            '{"id":8,"src":"mos","method":"FS.Get","params":{"filename":"t.txt","offset":0,"len":512}}',
            f'{{"id":8,{src},"error":{{"code":400,"message":"failed to open file \\"t.txt\\""}}}}',
        ),
    ]
    for frame, expected in session:
        assert await dispatcher.handle(frame, channel="WS_in") == expected.encode()
    assert os.listdir(tmp_path) == []


async def test_get_reads_chunks_and_clamps_like_the_firmware(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"0123456789")
    dispatcher = make(tmp_path)
    assert await ok(dispatcher, "FS.Get", {"filename": "/f"}) == {"data": b64(b"0123456789"), "left": 0}
    assert await ok(dispatcher, "FS.Get", {"filename": "f", "offset": 8, "len": 5}) == {
        "data": b64(b"89"),
        "left": 0,
    }
    assert await ok(dispatcher, "FS.Get", {"filename": "f", "offset": 50}) == {"data": "", "left": 0}
    assert await ok(dispatcher, "FS.Get", {"filename": "f", "len": 0}) == {"data": "", "left": 10}


@pytest.mark.parametrize(
    ("method", "params", "code", "message"),
    [
        ("FS.Get", {}, 400, "filename is required"),
        ("FS.Get", [1, 2], 400, "filename is required"),
        ("FS.Get", {"filename": "f", "offset": -1}, 400, "illegal offset"),
        ("FS.Get", {"filename": "f", "offset": "1"}, 400, "illegal offset"),
        ("FS.Get", {"filename": "f", "len": "all"}, 400, "illegal len 'all'"),
        ("FS.Get", {"filename": "missing"}, 400, 'failed to open file "missing"'),
        ("FS.Get", {"filename": "d"}, 400, 'failed to open file "d"'),
        ("FS.Put", {"data": ""}, 400, "filename is required"),
        ("FS.Put", {"filename": "x", "data": "!!"}, 400, 'data for "x" is not valid base64'),
        ("FS.Put", {"filename": "x", "data": 5}, 400, "data must be a base64 string"),
        ("FS.Put", {"filename": "x", "size": -1}, 400, "illegal size -1"),
        ("FS.Put", {"filename": "x", "offset": 1.5}, 400, "illegal offset"),
        ("FS.Put", {"filename": "f/x", "data": ""}, 400, 'failed to open file "f/x"'),
        ("FS.Put", {"filename": "f/x", "offset": 0, "data": ""}, 400, 'failed to open file "f/x"'),
        ("FS.Put", {"filename": "d", "data": ""}, 400, 'failed to open file "d"'),
        ("FS.Put", {"filename": "/", "data": ""}, 400, 'failed to open file "/"'),
        (
            "FS.Put",
            {"filename": "x", "offset": 3, "append": True, "data": ""},
            400,
            'failed to open file "x"',
        ),
        ("FS.Put", {"filename": "f", "offset": 3, "append": True, "data": ""}, 400, "illegal offset"),
        ("FS.Remove", {}, 400, "filename is required"),
        ("FS.Remove", {"filename": "missing"}, 500, "remove failed"),
        ("FS.Remove", {"filename": "d"}, 500, "remove failed"),
        ("FS.Remove", {"filename": "/"}, 400, 'illegal path "/"'),
        ("FS.Rename", {"src": "f"}, 400, "src and dst are required"),
        ("FS.Rename", {"src": "missing", "dst": "g"}, 500, "rename failed"),
        ("FS.Rename", {"src": "", "dst": "g"}, 400, 'illegal path ""'),
        ("FS.Mkdir", {}, 400, "path is required"),
        ("FS.Mkdir", {"path": "f"}, 500, "mkdir failed"),
        ("FS.Rmdir", {"path": 3}, 400, "path is required"),
        ("FS.Rmdir", {"path": "missing"}, 500, "rmdir failed"),
        ("FS.Rmdir", {"path": "/"}, 400, 'illegal path "/"'),
        ("FS.List", {"path": 7}, 400, "illegal path 7"),
    ],
)
async def test_errors(tmp_path: Path, method: str, params: Any, code: int, message: str) -> None:
    (tmp_path / "f").write_bytes(b"0123456789")
    (tmp_path / "d").mkdir()
    dispatcher = make(tmp_path)
    assert await error(dispatcher, method, params) == (code, message)
    assert (tmp_path / "f").read_bytes() == b"0123456789"
    assert sorted(os.listdir(tmp_path)) == ["d", "f"]


EVIL = [
    "../x",
    "/../x",
    "a/../../x",
    "..",
    "a/..",
    "./../x",
    "x\0y",
    "a" * 256,
    "d/" + "é" * 128,
    ".x.part",
    "d/.f.part",
    "out/x",
    "out",
    "link",
    "d/up/x",
]


@pytest.fixture
def evil_root(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    root.mkdir()
    (root / "d").mkdir()
    (root / "out").symlink_to(outside)
    (root / "link").symlink_to(outside / "secret")
    (root / "d" / "up").symlink_to("../..")
    return root, outside


@pytest.mark.parametrize("path", EVIL)
async def test_paths_cannot_leave_the_root(evil_root: tuple[Path, Path], path: str) -> None:
    root, outside = evil_root
    dispatcher = make(root)
    illegal = (400, f'illegal path "{path}"')
    data = b64(b"pwned")
    assert await error(dispatcher, "FS.Get", {"filename": path}) == illegal
    assert await error(dispatcher, "FS.Put", {"filename": path, "data": data}) == illegal
    assert await error(dispatcher, "FS.Put", {"filename": path, "offset": 0, "data": data}) == illegal
    assert await error(dispatcher, "FS.Remove", {"filename": path}) == illegal
    assert await error(dispatcher, "FS.Rename", {"src": path, "dst": "y"}) == illegal
    assert await error(dispatcher, "FS.Rename", {"src": "d", "dst": path}) == illegal
    assert await error(dispatcher, "FS.Mkdir", {"path": path}) == illegal
    assert await error(dispatcher, "FS.Rmdir", {"path": path}) == illegal
    assert await error(dispatcher, "FS.List", {"path": path}) == illegal
    assert await error(dispatcher, "FS.ListExt", {"path": path}) == illegal
    assert sorted(os.listdir(outside)) == ["secret"]
    assert (outside / "secret").read_bytes() == b"secret"
    assert sorted(os.listdir(root)) == ["d", "link", "out"]


async def test_listings_skip_symlinks_out_of_the_root_and_follow_those_inside(
    evil_root: tuple[Path, Path],
) -> None:
    root, _ = evil_root
    (root / "d" / "f").write_bytes(b"abc")
    (root / "inside").symlink_to("d/f")
    dispatcher = make(root)
    assert await ok(dispatcher, "FS.List") == ["d", "inside", "link", "out"]
    assert await ok(dispatcher, "FS.ListExt", {"path": "/"}) == [
        {"name": "d", "size": 0},
        {"name": "inside", "size": 3},
    ]
    assert await ok(dispatcher, "FS.Get", {"filename": "inside"}) == {"data": b64(b"abc"), "left": 0}
    assert await ok(dispatcher, "FS.List", {"path": "/nothing/here"}) == []


async def test_longest_names_work_with_a_hashed_part_file(tmp_path: Path) -> None:
    dispatcher = make(tmp_path, upload_idle=3600)
    name = "n" * 255
    await ok(dispatcher, "FS.Put", {"filename": name, "offset": 0, "append": False, "data": b64(b"ab")})
    [part] = os.listdir(tmp_path)
    assert part.startswith(".") and part.endswith(".part") and len(part) < 255
    await ok(dispatcher, "FS.Put", {"filename": name, "offset": 2, "append": True, "data": b64(b"c")})
    assert await ok(dispatcher, "FS.Get", {"filename": name}) == {"data": b64(b"abc"), "left": 0}
    assert os.listdir(tmp_path) == [name]


async def test_chunked_put_with_size_lands_at_the_last_byte(tmp_path: Path) -> None:
    dispatcher = make(tmp_path, upload_idle=3600)
    (tmp_path / "f").write_bytes(b"old")
    chunks = [b"aaaa", b"bbbb", b"cc"]
    offset = 0
    for i, chunk in enumerate(chunks):
        params = {"filename": "f", "offset": offset, "append": i > 0, "data": b64(chunk), "size": 10}
        assert await ok(dispatcher, "FS.Put", params) is None
        offset += len(chunk)
        if i < len(chunks) - 1:
            assert (tmp_path / "f").read_bytes() == b"old"
            assert sorted(os.listdir(tmp_path)) == [".f.part", "f"]
            assert await ok(dispatcher, "FS.List") == ["f"]
    assert os.listdir(tmp_path) == ["f"]
    assert (tmp_path / "f").read_bytes() == b"aaaabbbbcc"


async def test_chunked_put_without_size_lands_when_idle(tmp_path: Path) -> None:
    dispatcher = make(tmp_path / "fs", upload_idle=0.05)
    root = tmp_path / "fs"
    await ok(dispatcher, "FS.Put", {"filename": "f", "offset": 0, "append": False, "data": b64(b"abc")})
    await ok(dispatcher, "FS.Put", {"filename": "f", "offset": 3, "append": True, "data": b64(b"def")})
    assert os.listdir(root) == [".f.part"]
    await eventually(lambda: (root / "f").exists())
    assert os.listdir(root) == ["f"]
    assert (root / "f").read_bytes() == b"abcdef"


async def test_a_mos_upload_completes_when_another_call_touches_the_file(tmp_path: Path) -> None:
    dispatcher = make(tmp_path, upload_idle=3600)
    (tmp_path / "sub").mkdir()
    await ok(dispatcher, "FS.Put", {"filename": "sub/f", "offset": 0, "append": False, "data": b64(b"12")})
    assert await ok(dispatcher, "FS.ListExt", {"path": "sub"}) == [{"name": "f", "size": 2}]
    await ok(dispatcher, "FS.Put", {"filename": "g", "offset": 0, "append": False, "data": b64(b"34")})
    assert await ok(dispatcher, "FS.Get", {"filename": "g"}) == {"data": b64(b"34"), "left": 0}
    await ok(dispatcher, "FS.Put", {"filename": "h", "offset": 0, "append": False, "data": b64(b"56")})
    await ok(dispatcher, "FS.Rename", {"src": "h", "dst": "sub/h"})
    assert (tmp_path / "sub" / "h").read_bytes() == b"56"
    assert sorted(os.listdir(tmp_path)) == ["g", "sub"]


async def test_an_interrupted_upload_with_size_never_lands(tmp_path: Path) -> None:
    dispatcher = make(tmp_path, upload_idle=0.05)
    (tmp_path / "old").write_bytes(b"previous")
    for name in ("new", "old"):
        params = {"filename": name, "offset": 0, "append": False, "data": b64(b"half"), "size": 8}
        await ok(dispatcher, "FS.Put", params)
        assert await ok(dispatcher, "FS.List") == ["old"]
        assert await ok(dispatcher, "FS.ListExt") == [{"name": "old", "size": 8}]
        assert await error(dispatcher, "FS.Get", {"filename": "new"}) == (400, 'failed to open file "new"')
    assert sorted(os.listdir(tmp_path)) == [".new.part", ".old.part", "old"]
    await eventually(lambda: os.listdir(tmp_path) == ["old"])
    assert (tmp_path / "old").read_bytes() == b"previous"
    late = {"filename": "new", "offset": 4, "append": True, "data": b64(b"more"), "size": 8}
    assert await error(dispatcher, "FS.Put", late) == (400, 'failed to open file "new"')


async def test_a_wrong_offset_leaves_the_upload_as_it_was(tmp_path: Path) -> None:
    dispatcher = make(tmp_path, upload_idle=3600)
    await ok(dispatcher, "FS.Put", {"filename": "f", "offset": 0, "append": False, "data": b64(b"abc")})
    for offset in (2, 4, 100):
        params = {"filename": "f", "offset": offset, "append": True, "data": b64(b"x")}
        assert await error(dispatcher, "FS.Put", params) == (400, "illegal offset")
    await ok(dispatcher, "FS.Put", {"filename": "f", "offset": 3, "append": True, "data": b64(b"d")})
    assert await ok(dispatcher, "FS.Get", {"filename": "f"}) == {"data": b64(b"abcd"), "left": 0}


async def test_a_restarted_upload_drops_the_unfinished_one(tmp_path: Path) -> None:
    dispatcher = make(tmp_path, upload_idle=3600)
    await ok(dispatcher, "FS.Put", {"filename": "f", "offset": 0, "append": False, "data": b64(b"first")})
    await ok(dispatcher, "FS.Put", {"filename": "f", "offset": 0, "append": False, "data": b64(b"2nd")})
    assert os.listdir(tmp_path) == [".f.part"]
    assert await ok(dispatcher, "FS.Get", {"filename": "f"}) == {"data": b64(b"2nd"), "left": 0}


async def test_a_mos_upload_goes_on_after_its_idle_time_ran_out(tmp_path: Path) -> None:
    dispatcher = make(tmp_path, upload_idle=0.05)
    await ok(dispatcher, "FS.Put", {"filename": "f", "offset": 0, "append": False, "data": b64(b"hello")})
    await eventually(lambda: (tmp_path / "f").exists())
    await ok(dispatcher, "FS.Put", {"filename": "f", "offset": 5, "append": True, "data": b64(b" world")})
    assert (tmp_path / "f").read_bytes() == b"hello"
    assert await ok(dispatcher, "FS.Get", {"filename": "f"}) == {"data": b64(b"hello world"), "left": 0}


async def test_single_puts_write_the_whole_file_at_once(tmp_path: Path) -> None:
    dispatcher = make(tmp_path, upload_idle=3600)
    await ok(dispatcher, "FS.Put", {"filename": "a", "data": b64(b"one")})
    await ok(dispatcher, "FS.Put", {"filename": "a", "append": True, "data": b64(b"two")})
    await ok(
        dispatcher, "FS.Put", {"filename": "b", "offset": 0, "append": False, "data": b64(b"xy"), "size": 2}
    )
    await ok(dispatcher, "FS.Put", {"filename": "c", "append": True, "data": b64(b"new")})
    await ok(dispatcher, "FS.Put", {"filename": "e", "offset": 0, "data": "", "size": 0})
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "c", "e"]
    assert [(tmp_path / n).read_bytes() for n in "abce"] == [b"onetwo", b"xy", b"new", b""]
    # Without offset, append continues an upload going on; no append replaces it.
    await ok(dispatcher, "FS.Put", {"filename": "d", "offset": 0, "append": False, "data": b64(b"12")})
    await ok(dispatcher, "FS.Put", {"filename": "d", "append": True, "data": b64(b"34")})
    assert await ok(dispatcher, "FS.Get", {"filename": "d"}) == {"data": b64(b"1234"), "left": 0}
    await ok(dispatcher, "FS.Put", {"filename": "d", "offset": 0, "append": False, "data": b64(b"56")})
    await ok(dispatcher, "FS.Put", {"filename": "d", "data": b64(b"78")})
    assert os.listdir(tmp_path).count(".d.part") == 0
    assert (tmp_path / "d").read_bytes() == b"78"


async def test_files_over_the_limit_are_refused_and_their_part_removed(tmp_path: Path) -> None:
    dispatcher = make(tmp_path, max_file_size=10, upload_idle=3600)
    over = (400, 'file "f" is over the limit of 10 bytes')
    assert await error(dispatcher, "FS.Put", {"filename": "f", "data": b64(b"x" * 11)}) == over
    assert await error(dispatcher, "FS.Put", {"filename": "f", "offset": 0, "data": "", "size": 11}) == over
    await ok(dispatcher, "FS.Put", {"filename": "f", "offset": 0, "append": False, "data": b64(b"x" * 8)})
    params = {"filename": "f", "offset": 8, "append": True, "data": b64(b"yyy")}
    assert await error(dispatcher, "FS.Put", params) == over
    assert os.listdir(tmp_path) == []
    sized = {"filename": "g", "offset": 0, "append": False, "data": b64(b"x" * 4), "size": 5}
    await ok(dispatcher, "FS.Put", sized)
    params = {"filename": "g", "offset": 4, "append": True, "data": b64(b"yy"), "size": 5}
    assert await error(dispatcher, "FS.Put", params) == (400, 'data for "g" is over its size of 5 bytes')
    assert os.listdir(tmp_path) == []


async def test_remove_drops_an_upload(tmp_path: Path) -> None:
    dispatcher = make(tmp_path, upload_idle=3600)
    await ok(dispatcher, "FS.Put", {"filename": "f", "offset": 0, "append": False, "data": b64(b"abc")})
    assert await ok(dispatcher, "FS.Remove", {"filename": "f"}) is None
    assert os.listdir(tmp_path) == []
    assert await error(dispatcher, "FS.Remove", {"filename": "f"}) == (500, "remove failed")


async def test_put_makes_the_directories_above_the_file(tmp_path: Path) -> None:
    dispatcher = make(tmp_path, upload_idle=3600)
    await ok(dispatcher, "FS.Put", {"filename": "a/b/f", "data": b64(b"1")})
    params = {"filename": "/c/d/g", "offset": 0, "append": False, "data": b64(b"2"), "size": 1}
    await ok(dispatcher, "FS.Put", params)
    params = {"filename": "e/h", "offset": 0, "append": False, "data": b64(b"3")}
    await ok(dispatcher, "FS.Put", params)
    assert [(tmp_path / p).read_bytes() for p in ("a/b/f", "c/d/g")] == [b"1", b"2"]
    assert await ok(dispatcher, "FS.ListExt", {"path": "e"}) == [{"name": "h", "size": 1}]


async def test_directories(tmp_path: Path) -> None:
    dispatcher = make(tmp_path, upload_idle=3600)
    assert await ok(dispatcher, "FS.Mkdir", {"path": "/a/b"}) is None
    assert await ok(dispatcher, "FS.Mkdir", {"path": "a/b"}) is None
    await ok(dispatcher, "FS.Put", {"filename": "a/b/f", "data": b64(b"1")})
    assert await ok(dispatcher, "FS.List", {"path": "a"}) == ["b"]
    assert await error(dispatcher, "FS.Rmdir", {"path": "a"}) == (500, "rmdir failed")
    await ok(dispatcher, "FS.Rename", {"src": "a/b", "dst": "c"})
    assert await ok(dispatcher, "FS.List") == ["a", "c"]
    assert await ok(dispatcher, "FS.Rmdir", {"path": "a"}) is None
    # A sized upload under a directory being removed goes with it.
    params = {"filename": "c/g", "offset": 0, "append": False, "data": b64(b"x"), "size": 2}
    await ok(dispatcher, "FS.Put", params)
    await ok(dispatcher, "FS.Remove", {"filename": "c/f"})
    assert await ok(dispatcher, "FS.Rmdir", {"path": "c"}) is None
    assert os.listdir(tmp_path) == []


def test_register_removes_leftover_part_files(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in (".a.part", "sub/.b.part", ".hidden", "c.part", "sub/keep"):
        (tmp_path / name).write_bytes(b"x")
    make(tmp_path)
    assert sorted(os.listdir(tmp_path)) == [".hidden", "c.part", "sub"]
    assert os.listdir(tmp_path / "sub") == ["keep"]


def test_register_makes_the_root_and_checks_its_limits(tmp_path: Path) -> None:
    make(tmp_path / "new" / "root")
    assert (tmp_path / "new" / "root").is_dir()
    with pytest.raises(ValueError, match="max_file_size"):
        make(tmp_path, max_file_size=-1)
    with pytest.raises(ValueError, match="upload_idle"):
        make(tmp_path, upload_idle=0)


async def test_rpc_describe_shows_the_firmware_formats(tmp_path: Path) -> None:
    dispatcher = make(tmp_path)
    described = await ok(dispatcher, "RPC.Describe", {"name": "FS.Get"})
    assert described["args_fmt"] == "{filename: %Q, offset: %ld, len: %ld}"
    assert [m for m in await ok(dispatcher, "RPC.List") if m.startswith("FS.")] == [
        "FS.Rmdir",
        "FS.Mkdir",
        "FS.Rename",
        "FS.Remove",
        "FS.Put",
        "FS.Get",
        "FS.ListExt",
        "FS.List",
    ]
