"""tether.rpc.schema and tether.rpc.patterns: argument descriptions and globs."""

from __future__ import annotations

from typing import Any

import pytest

from tether.rpc.patterns import compile_glob, is_glob, match_glob
from tether.rpc.schema import InvalidArgs, args_fmt, check_schema, validate

SCHEMA = {
    "type": "object",
    "properties": {
        "n": {"type": "integer", "minimum": 0, "maximum": 9},
        "x": {"type": "number"},
        "s": {"type": "string", "enum": ["a", "b"]},
        "f": {"type": "boolean", "default": False},
        "o": {"type": "object", "properties": {"k": {"type": ["string", "null"]}}, "required": ["k"]},
        "l": {"type": "array", "items": {"type": "integer"}},
        "any": {},
    },
    "required": ["n"],
}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"n": 1}, {"n": 1, "f": False}),
        ({"n": 2.0, "x": 1.5, "s": "a", "f": True}, {"n": 2.0, "x": 1.5, "s": "a", "f": True}),
        (
            {"n": 0, "o": {"k": None}, "l": [1, 2], "any": [{}]},
            {"n": 0, "o": {"k": None}, "l": [1, 2], "any": [{}], "f": False},
        ),
    ],
)
def test_valid(value: Any, expected: Any) -> None:
    assert validate(SCHEMA, value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "params must be an object"),
        ({}, "n is required"),
        ({"n": True}, "n must be an integer"),
        ({"n": 1.5}, "n must be an integer"),
        ({"n": -1}, "n must be at least 0"),
        ({"n": 10}, "n must be at most 9"),
        ({"n": 1, "x": "1"}, "x must be a number"),
        ({"n": 1, "s": "c"}, "s must be one of ['a', 'b']"),
        ({"n": 1, "f": 1}, "f must be a boolean"),
        ({"n": 1, "o": {}}, "o.k is required"),
        ({"n": 1, "o": {"k": 1}}, "o.k must be a string or null"),
        ({"n": 1, "l": [1, "2"]}, "l[1] must be an integer"),
        ({"n": 1, "l": {}}, "l must be an array"),
    ],
)
def test_invalid(value: Any, message: str) -> None:
    with pytest.raises(InvalidArgs) as caught:
        validate(SCHEMA, value)
    assert str(caught.value) == message


def test_other_keywords() -> None:
    assert validate({"enum": [True]}, True) is True
    with pytest.raises(InvalidArgs, match="one of"):
        validate({"enum": [1]}, True)
    with pytest.raises(InvalidArgs, match="one of"):
        validate({"enum": [True]}, 1)
    strict = {"type": "object", "properties": {"a": {}}, "additionalProperties": False}
    assert validate(strict, {"a": 1}) == {"a": 1}
    with pytest.raises(InvalidArgs, match="b is not an argument"):
        validate(strict, {"b": 1})
    assert validate({"items": {"type": "string"}}, ["a"]) == ["a"]
    with pytest.raises(InvalidArgs, match=r"params\[0\] must be a string"):
        validate({"items": {"type": "string"}}, [1])
    assert validate({"type": "null"}, None) is None
    assert validate({"minimum": 1}, "x") == "x"


def test_args_fmt() -> None:
    assert args_fmt(None) is None
    assert args_fmt({"properties": {"a": {"type": "number"}, "b": {"type": "number"}}}) == "{a: %lf, b: %lf}"
    assert args_fmt(SCHEMA) == "{n: %d, x: %lf, s: %Q, f: %B, o: {k: %T}, l: %T, any: %T}"
    assert args_fmt({"type": "array"}) == "%T"
    assert args_fmt({"type": "object"}) == "%T"


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ([], "must be a dict"),
        ({"type": "float"}, "unknown type 'float'"),
        ({"type": ["string", "int"]}, "unknown type 'int'"),
        ({"properties": []}, "properties must be a dict"),
        ({"properties": {"a": {"type": "x"}}}, r"args.properties.a: unknown type"),
        ({"required": "a"}, "required must be a list"),
        ({"items": {"type": "x"}}, r"args.items: unknown type"),
    ],
)
def test_check_schema(schema: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_schema(schema)


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        ("Sys.GetInfo", "sys.getinfo", True),
        ("Sys.*", "Sys.A.B", True),
        ("Sys.*", "Sys.a/b", False),
        ("**", "a/b/c", True),
        ("a**z", "a/z", True),
        ("F?", "Fx", True),
        ("F?", "F", False),
        ("A,B|C", "c", True),
        ("A,B|C", "AB", False),
        ("a.b", "aXb", False),  # . is literal
        ("a+(b)", "a+(b)", True),
    ],
)
def test_globs(pattern: str, text: str, matches: bool) -> None:
    assert match_glob(pattern, text) is matches


def test_glob_helpers() -> None:
    assert is_glob("a*") and is_glob("a,b") and not is_glob("Sys.GetInfo")
    assert not match_glob("admin", "Admin", ignore_case=False)
    assert compile_glob("x") is compile_glob("x")
