"""The streaming multipart/form-data parser."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.http.multipart import MultipartParser, Part, PartData, PartEnd, parse_options_header
from tether.http.parser import HTTPError

BODY = (
    b"preamble\r\n--XyZ\r\n"
    b'Content-Disposition: form-data; name="field"\r\n\r\n'
    b"value\r\n"
    b"--XyZ  \r\n"
    b'Content-Disposition: form-data; name="file"; filename="a\\"b.txt"\r\n'
    b"Content-Type: text/csv\r\n\r\n"
    b"1,2\r\n3,4\r\n--X\r\n"
    b"--XyZ--\r\nepilogue"
)


def parse(body: bytes, step: int) -> list[tuple[str, str | None, str, bytes]]:
    parser = MultipartParser("XyZ")
    parts: list[tuple[str, str | None, str, bytes]] = []
    current: Part | None = None
    data = b""
    for i in range(0, len(body), step):
        for event in parser.feed(body[i : i + step]):
            if isinstance(event, Part):
                current, data = event, b""
            elif isinstance(event, PartData):
                data += event.data
            else:
                assert isinstance(event, PartEnd) and current is not None
                parts.append((current.name, current.filename, current.content_type, data))
    assert parser.complete
    return parts


@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_parts(step: int) -> None:
    assert parse(BODY, step) == [
        ("field", None, "text/plain", b"value"),
        ("file", 'a"b.txt', "text/csv", b"1,2\r\n3,4\r\n--X"),
    ]


@given(st.binary(max_size=200), st.integers(1, 50))
def test_any_content_any_split(content: bytes, step: int) -> None:
    body = b'--XyZ\r\nContent-Disposition: form-data; name="f"\r\n\r\n' + content + b"\r\n--XyZ--\r\n"
    if b"\r\n--XyZ" in b"\r\n" + content:
        return
    assert parse(body, step) == [("f", None, "text/plain", content)]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"--XyZ\r\nContent-Type: x\r\n\r\nv\r\n--XyZ--", 400),  # no Content-Disposition
        (b"--XyZ\r\nbroken\r\n\r\nv\r\n--XyZ--", 400),
        (b"--XyZ junk\r\n", 400),
        (b"--XyZ" + b" " * 300, 400),
        (b"--XyZ\r\n" + b"A: b\r\n" * 2000, 413),
    ],
)
def test_malformed(body: bytes, status: int) -> None:
    with pytest.raises(HTTPError) as info:
        MultipartParser("XyZ").feed(body)
    assert info.value.status == status


def test_limits_and_options() -> None:
    parser = MultipartParser("b", max_parts=1)
    part = b'\r\n--b\r\nContent-Disposition: form-data; name="x"\r\n\r\nv'
    with pytest.raises(HTTPError):
        parser.feed(part + part)
    with pytest.raises(ValueError):
        MultipartParser("")
    with pytest.raises(HTTPError):
        MultipartParser("b").feed(b"--b\r\n\r\n")  # a part with no head at all is refused
    assert MultipartParser("b").feed(b"--b--") == []
    done = MultipartParser("b")
    done.feed(b"--b--\r\n")
    assert done.feed(b"more") == []
    assert parse_options_header('form-data; name="a;b"; filename*=UTF-8\'\'%C3%A9.txt; filename="e.txt"') == (
        "form-data",
        {"name": "a;b", "filename": "é.txt"},
    )
    assert parse_options_header("text/plain; charset*=bogus''%41")[1] == {}
    assert parse_options_header("Multipart/Form-Data; Boundary=abc") == (
        "multipart/form-data",
        {"boundary": "abc"},
    )
