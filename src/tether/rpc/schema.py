"""Argument descriptions: a small subset of JSON Schema, checked before a handler runs.

A handler may be registered with a description of its ``params``, for example::

    {"type": "object",
     "properties": {"a": {"type": "number"}, "b": {"type": "number", "default": 0}},
     "required": ["a"]}

Understood keywords: ``type`` (a name or a list of names among ``object``,
``array``, ``string``, ``number``, ``integer``, ``boolean``, ``null``),
``properties``, ``required``, ``additionalProperties`` (only ``false``),
``items``, ``enum``, ``minimum``, ``maximum``, ``default``, ``description``.
Other keywords are kept (``RPC.Describe`` shows them) but not checked.

`args_fmt` turns a description into the scanf-like format that mgos's
``RPC.Describe`` reports (spec mgos-rpc.md §3), e.g. ``{a: %lf, b: %lf}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["InvalidArgs", "args_fmt", "check_schema", "validate"]

_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
_FORMATS = {"number": "%lf", "integer": "%d", "boolean": "%B", "string": "%Q"}


class InvalidArgs(ValueError):
    """params do not fit the description; the message names the argument (a 400 reply)."""


def check_schema(schema: Mapping[str, Any], path: str = "args") -> None:
    """Check that a description uses the keywords above correctly.

    Raises:
        ValueError: naming the first mistake, e.g. ``args.properties.a: unknown type 'float'``.
    """
    if not isinstance(schema, Mapping):
        raise ValueError(f"{path}: a description must be a dict, not {type(schema).__name__}")
    kind = schema.get("type")
    if kind is not None:
        for name in [kind] if isinstance(kind, str) else kind:
            if name not in _TYPES:
                raise ValueError(f"{path}: unknown type {name!r}")
    properties = schema.get("properties", {})
    if not isinstance(properties, Mapping):
        raise ValueError(f"{path}: properties must be a dict")
    for name, sub in properties.items():
        check_schema(sub, f"{path}.properties.{name}")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise ValueError(f"{path}: required must be a list of names")
    if "items" in schema:
        check_schema(schema["items"], f"{path}.items")


def validate(schema: Mapping[str, Any], value: Any, path: str = "") -> Any:
    """Check value against schema and fill in the defaults of missing properties.

    Args:
        schema: a description checked by `check_schema`.
        value: the params of a call.
        path: the dotted name of value, for messages ("" for the params themselves).

    Returns:
        value, or for an object a new dict with the defaults added.

    Raises:
        InvalidArgs: with a message such as ``a is required`` or ``a must be a number``.
    """
    kind = schema.get("type")
    if kind is not None:
        kinds = [kind] if isinstance(kind, str) else list(kind)
        if not any(_is(k, value) for k in kinds):
            raise InvalidArgs(f"{path or 'params'} must be {' or '.join(_ARTICLES[k] for k in kinds)}")
    if "enum" in schema and not any(_same(value, option) for option in schema["enum"]):
        raise InvalidArgs(f"{path or 'params'} must be one of {schema['enum']!r}")
    if _is("number", value):
        if "minimum" in schema and value < schema["minimum"]:
            raise InvalidArgs(f"{path or 'params'} must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise InvalidArgs(f"{path or 'params'} must be at most {schema['maximum']}")
    if isinstance(value, dict):
        properties: Mapping[str, Any] = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in value:
                raise InvalidArgs(f"{_join(path, name)} is required")
        if schema.get("additionalProperties", True) is False:
            for name in value:
                if name not in properties:
                    raise InvalidArgs(f"{_join(path, name)} is not an argument")
        result = dict(value)
        for name, sub in properties.items():
            if name in value:
                result[name] = validate(sub, value[name], _join(path, name))
            elif "default" in sub:
                result[name] = sub["default"]
        return result
    if isinstance(value, list) and "items" in schema:
        return [validate(schema["items"], item, f"{path or 'params'}[{i}]") for i, item in enumerate(value)]
    return value


def args_fmt(schema: Mapping[str, Any] | None) -> str | None:
    """The scanf-like format mgos reports for a description (``RPC.Describe``, §3).

    Returns:
        ``{a: %lf, b: %d}`` for an object with properties (``%lf`` number, ``%d``
        integer, ``%B`` boolean, ``%Q`` string, ``%T`` anything else, nested
        objects in braces), ``%T`` for any other description, None for None.
    """
    if schema is None:
        return None
    return _fmt(schema)


def _fmt(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    properties = schema.get("properties")
    if properties and kind in (None, "object"):
        return "{" + ", ".join(f"{name}: {_fmt(sub)}" for name, sub in properties.items()) + "}"
    return _FORMATS.get(kind, "%T") if isinstance(kind, str) else "%T"


_ARTICLES = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "a boolean",
    "null": "null",
}


def _is(kind: str, value: Any) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    if isinstance(value, bool):
        return False
    if kind == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    return isinstance(value, (int, float))  # number


def _same(a: Any, b: Any) -> bool:
    # JSON equality: true is not 1.
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
