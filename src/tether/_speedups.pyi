from collections.abc import Sequence
from typing import Any

def apply_mask(data: bytes | bytearray | memoryview, mask: bytes, offset: int = 0) -> bytes: ...
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
