"""Masking (RFC 6455 §5.3): the compiled accelerator and the pure-Python path agree."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.ws import frames

paths = [pytest.param(frames._apply_mask_py, id="python")]
try:
    from tether._speedups import apply_mask as compiled
except ImportError:  # built without a compiler
    pass
else:
    paths.append(pytest.param(compiled, id="compiled"))


def reference(data: bytes, mask: bytes, offset: int) -> bytes:
    return bytes(b ^ mask[(i + offset) % 4] for i, b in enumerate(data))


@pytest.mark.parametrize("apply_mask", paths)
@pytest.mark.parametrize("size", [0, 1, 3, 4, 7, 8, 9, 125, 1023, 1024, 1025, 65536, 70001])
@pytest.mark.parametrize("offset", [0, 1, 2, 3, 6])
def test_sizes_and_offsets(apply_mask, size: int, offset: int) -> None:
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    mask = b"\x37\xfa\x21\x3d"  # RFC 6455 §5.7
    assert apply_mask(data, mask, offset) == reference(data, mask, offset)
    assert apply_mask(memoryview(data), mask, offset) == reference(data, mask, offset)
    assert apply_mask(bytearray(data), mask, offset) == reference(data, mask, offset)


@pytest.mark.parametrize("apply_mask", paths)
@given(data=st.binary(max_size=3000), mask=st.binary(min_size=4, max_size=4), offset=st.integers(0, 100))
def test_any_input(apply_mask, data: bytes, mask: bytes, offset: int) -> None:
    assert apply_mask(data, mask, offset) == reference(data, mask, offset)


@pytest.mark.parametrize("apply_mask", paths)
def test_is_its_own_inverse(apply_mask) -> None:
    data = bytes(range(256)) * 50
    mask = b"abcd"
    assert apply_mask(apply_mask(data, mask), mask) == data


def test_compiled_rejects_bad_arguments() -> None:
    compiled_mask = pytest.importorskip("tether._speedups").apply_mask
    with pytest.raises(ValueError):
        compiled_mask(b"abc", b"abc")
    with pytest.raises(TypeError):
        compiled_mask(b"abc")
    with pytest.raises(TypeError):
        compiled_mask("text", b"abcd")
