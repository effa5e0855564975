from collections.abc import Callable, Sequence
from typing import Any

def apply_mask(data: bytes | bytearray | memoryview, mask: bytes, offset: int = 0) -> bytes: ...
def split_packets(
    buf: bytes | bytearray | memoryview,
    at: int,
    max_size: int,
    version: int,
    names: dict[bytes, str] | None = None,
    message: Callable[[str, bytes, int, bool], Any] | None = None,
    /,
) -> tuple[list[Any], int, bool]: ...
def ws_scan(
    data: bytes,
    pos: int,
    masked: bool,
    fast_max: int,
    events: list[Any],
    text_cls: type,
    binary_cls: type,
    /,
) -> int: ...
def join_mask(parts: Sequence[bytes | bytearray | memoryview], mask: bytes, /) -> bytes: ...
