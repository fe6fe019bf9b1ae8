"""Read plain mappings (parsed YAML) into typed dataclasses, naming the key path of every error.

Supported field types: str, int, float, bool, Literal[...], X | None, list[X], dict[str, X]
and nested dataclasses. Field metadata may hold `min` and `max` bounds. A dataclass's
`__post_init__` may raise ValueError; the message is reported at that section's path.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

T = TypeVar("T")


class ConfigError(Exception):
    """One or more problems in a config, each as `path: what is wrong`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Invalid(Exception):
    pass


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _describe(value: Any) -> str:
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


class Reader:
    """Collects problems while reading; raise with `check()` once done."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path or '<top level>'}: {message}")

    def check(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)

    def read(self, cls: type[T], data: Any, path: str) -> T:
        try:
            return typing.cast(T, self._value(cls, data, path))
        except _Invalid:
            # A placeholder keeps reading going so every problem is reported at once.
            return typing.cast(T, None)

    def _value(self, tp: Any, value: Any, path: str) -> Any:
        origin = get_origin(tp)
        if origin in (Union, types.UnionType):
            options = [a for a in get_args(tp) if a is not type(None)]
            if value is None:
                return None
            if len(options) == 1:
                return self._value(options[0], value, path)
            return self._first_matching(options, value, path)
        if origin is Literal:
            allowed = get_args(tp)
            if value not in allowed:
                choices = ", ".join(str(a) for a in allowed)
                return self._fail(path, f"must be one of {choices} (got {_describe(value)})")
            return value
        if origin is list:
            if not isinstance(value, list):
                return self._fail(path, f"must be a list (got {_describe(value)})")
            (item,) = get_args(tp)
            return [self.read(item, v, join(path, i)) for i, v in enumerate(value)]
        if origin is dict:
            if not isinstance(value, Mapping):
                return self._fail(path, f"must be a mapping (got {_describe(value)})")
            _, item = get_args(tp)
            return {str(k): self.read(item, v, join(path, str(k))) for k, v in value.items()}
        if dataclasses.is_dataclass(tp):
            return self._dataclass(typing.cast(type, tp), value, path)
        return self._scalar(tp, value, path)

    def _first_matching(self, options: list[Any], value: Any, path: str) -> Any:
        for option in options:
            probe = Reader()
            result = probe.read(option, value, path)
            if not probe.problems:
                return result
        names = " or ".join(getattr(o, "__name__", str(o)) for o in options)
        return self._fail(path, f"must be {names} (got {_describe(value)})")

    def _scalar(self, tp: Any, value: Any, path: str) -> Any:
        if tp is Any:
            return value
        if tp is bool:
            if not isinstance(value, bool):
                return self._fail(path, f"must be true or false (got {_describe(value)})")
            return value
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                return self._fail(path, f"must be an integer (got {_describe(value)})")
            return value
        if tp is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return self._fail(path, f"must be a number (got {_describe(value)})")
            return float(value)
        if tp is str:
            if not isinstance(value, str):
                return self._fail(path, f"must be a string (got {_describe(value)})")
            return value
        raise TypeError(f"unsupported config type {tp!r} at {path}")

    def _dataclass(self, cls: type, value: Any, path: str) -> Any:
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            return self._fail(path, f"must be a mapping (got {_describe(value)})")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        for key in value:
            if key not in fields:
                known = ", ".join(sorted(fields)) or "none"
                self.problem(join(path, str(key)), f"unknown key (known keys: {known})")
        kwargs: dict[str, Any] = {}
        before = len(self.problems)
        for name, field in fields.items():
            fpath = join(path, name)
            if name not in value:
                if _required(field):
                    self.problem(fpath, "is required")
                continue
            result = self.read(hints[name], value[name], fpath)
            if result is not None:
                self._bounds(field, result, fpath)
            kwargs[name] = result
        if len(self.problems) > before:
            raise _Invalid
        try:
            return cls(**kwargs)
        except ValueError as exc:
            return self._fail(path, str(exc))

    def _bounds(self, field: dataclasses.Field[Any], value: Any, path: str) -> None:
        low, high = field.metadata.get("min"), field.metadata.get("max")
        if low is not None and value < low:
            self.problem(path, f"must be at least {low} (got {value!r})")
        if high is not None and value > high:
            self.problem(path, f"must be at most {high} (got {value!r})")

    def _fail(self, path: str, message: str) -> Any:
        self.problem(path, message)
        raise _Invalid


def _required(field: dataclasses.Field[Any]) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def read_dataclass(cls: type[T], data: Any, path: str = "") -> T:
    """Read one dataclass or raise ConfigError listing every problem."""
    reader = Reader()
    result = reader.read(cls, data, path)
    reader.check()
    return result


def bounded(default: Any, *, min: Any = None, max: Any = None) -> Any:
    """A dataclass field with a default and inclusive bounds checked by the reader."""
    return dataclasses.field(default=default, metadata={"min": min, "max": max})
