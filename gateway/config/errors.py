"""Config problems as `key.path[i]: what to change`, one line each, pydantic's errors included.

pydantic names a problem by its `loc` tuple and a generic message; users get the key path
they wrote (`models.m.deployments[0].weight`) and a sentence that says what the value must
be and what it was. The type at the path (found by walking `Config`'s type hints along the
`loc`) supplies what pydantic's message lacks: the known keys next to an unknown one, and
the choices of a Literal.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Union

from pydantic_core import ErrorDetails

from gateway.config.model import Config, ProviderConfig
from providers.registry import PROVIDER_TYPES, installed_types

TOP = "<top level>"


class ConfigError(Exception):
    """One or more problems in a config, each as `path: what is wrong`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def problem(path: str, message: str) -> str:
    return f"{path or TOP}: {message}"


class Problems(list[str]):
    """Problems collected while reading, so that all of them are reported at once."""

    def add(self, path: str, message: str) -> None:
        self.append(problem(path, message))

    def check(self) -> None:
        if self:
            raise ConfigError(list(self))


def describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


def validation_problems(errors: list[ErrorDetails]) -> list[str]:
    """One line per error of a `Config` validation (pydantic's `ValidationError.errors()`)."""
    return [_line(error) for error in errors]


def _line(error: ErrorDetails) -> str:
    path, here, parent = _walk(error["loc"])
    kind, got, ctx = error["type"], error["input"], error.get("ctx", {})
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        known = ", ".join(_fields(parent)) or "none"
        if parent is Config:
            return problem(path, f"unknown section (known sections: {known})")
        return problem(path, f"unknown key (known keys: {known})")
    if kind == "value_error":  # a __post_init__ check, named at its dataclass's path
        return problem(path, str(ctx["error"]))
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return _provider_type(path, got)
    if kind == "literal_error":
        choices = ", ".join(str(a) for a in typing.get_args(here))
        return problem(path, f"must be one of {choices} (got {describe(got)})")
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        # As the field holds it: a float field given 0 reports 0.0.
        shown = float(got) if isinstance(ctx[key], float) else got
        return problem(path, f"must be {words} {ctx[key]} (got {shown!r})")
    if kind in _MUST_BE:
        return problem(path, f"must be {_MUST_BE[kind]} (got {describe(got)})")
    if kind == "missing":
        return problem(path, "is required")
    return problem(path, error["msg"][:1].lower() + error["msg"][1:])


_BOUNDS = {
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "more than"),
    "less_than_equal": ("le", "at most"),
    "less_than": ("lt", "less than"),
}
_MUST_BE = {
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "dataclass_type": "a mapping",
}


def _provider_type(path: str, entry: Any) -> str:
    known = ", ".join(PROVIDER_TYPES)
    if not isinstance(entry, Mapping):
        return problem(
            path, f"must be a mapping with a `type` and its settings (got {describe(entry)})"
        )
    if "type" not in entry:
        return problem(join(path, "type"), f"is required (one of {known})")
    return problem(join(path, "type"), f"must be one of {known} (got {describe(entry['type'])})")


def _walk(loc: tuple[int | str, ...]) -> tuple[str, Any, Any]:
    """The key path of `loc`, the type found there and the type holding it."""
    path, parent = "", None
    here: Any = Config
    for key in loc:
        here = _bare(here)
        if here is ProviderConfig and isinstance(key, str) and key in installed_types():
            # pydantic puts the `type` a provider entry was read as into `loc`; the user's
            # path has no such step.
            here = installed_types()[key].options
            continue
        if key == "[key]":  # a problem with a mapping key itself, not its value
            break
        parent, path = here, join(path, key)
        here = _child(here, key)
    return path, _bare(here), parent


def _child(tp: Any, key: int | str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return typing.get_type_hints(tp).get(str(key), Any)
    if origin is dict:
        return typing.get_args(tp)[1]
    if origin is list:
        return typing.get_args(tp)[0]
    return Any


def _bare(tp: Any) -> Any:
    """`X | None` as X (the None case cannot be what failed)."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(options) == 1:
            return options[0]
    return tp


def _fields(cls: Any) -> list[str]:
    if not dataclasses.is_dataclass(cls):
        return []
    return sorted(f.name for f in dataclasses.fields(cls) if f.init)
