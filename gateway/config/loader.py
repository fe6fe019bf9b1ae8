"""Reading a config: YAML without duplicate keys, `${ENV}` interpolation, pydantic validation.

Every problem is reported with the key path it concerns, all at once, so
`rerank-gateway check-config FILE` gives a reviewer the whole list: YAML's duplicate keys,
unset variables, pydantic's errors, and then the cross-section checks (`checks`), run on
the config without the entries that had errors.

pydantic reads the `Config` dataclasses in strict mode (no "8080" -> 8080, but an int is a
valid float). Strict mode takes a mapping for a dataclass only from JSON, so the parsed YAML
(plain mappings, lists and scalars once checked here) is handed to pydantic as JSON.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import typing
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from gateway.config.checks import cross_check
from gateway.config.errors import ConfigError, Problems, describe, join, validation_problems
from gateway.config.model import Config
from providers.registry import PROVIDER_TYPES, MissingExtra, installed_types

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_JSON_SCALARS = (str, int, float, bool, type(None))
_HINTS = typing.get_type_hints(Config)
_SECTIONS = {f.name for f in dataclasses.fields(Config)}
# Sections of named entries (teams, providers, models): one bad entry leaves the others in.
_ENTRY_SECTIONS = {name for name in _SECTIONS if typing.get_origin(_HINTS[name]) is dict}


def load_config(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    sections: Collection[str] | None = None,
) -> Config:
    """Read, interpolate and validate a config file; raise ConfigError naming each problem.

    `sections`: read only these (a tool that needs Redis only reads no provider secrets)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config file ({exc.strerror})"]) from exc
    try:
        data, duplicates = read_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError([f"{path}: not valid YAML{where}: {problem}"]) from exc
    try:
        config = parse_config(data, os.environ if env is None else env, sections)
    except ConfigError as exc:
        raise ConfigError(duplicates + exc.problems) from None
    if duplicates:
        raise ConfigError(duplicates)
    return config


class DuplicateKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML's safe loader (libyaml's when there) that also lists duplicate mapping keys.

    YAML keeps the last of two equal keys silently, so a second `teams:` block would replace
    the first; this names each duplicate instead. It looks at the node tree before building
    the document, where key lines are known and merge keys (`<<`) are still apart.
    """

    def load_checked(self) -> tuple[Any, list[str]]:
        """The document, and one problem per duplicate key."""
        node = self.get_single_node()
        if node is None:
            return None, []
        duplicates = Problems()
        _find_duplicates(node, "", duplicates, set())
        return self.construct_document(node), list(duplicates)


def read_yaml(text: str) -> tuple[Any, list[str]]:
    loader = DuplicateKeyLoader(text)
    try:
        return loader.load_checked()
    finally:
        loader.dispose()


def _find_duplicates(node: yaml.Node, path: str, found: Problems, seen: set[int]) -> None:
    if id(node) in seen:  # an alias: its node was looked at where its anchor is
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is None or key == "<<":  # complex keys and merges: nothing to compare
                continue
            line = key_node.start_mark.line + 1
            if key in lines:
                first = f" (first at line {lines[key]})" if lines[key] != line else ""
                found.add(path, f"duplicate key {key!r} at line {line}{first}")
            else:
                lines[key] = line
            _find_duplicates(value_node, join(path, key), found, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _find_duplicates(item, join(path, i), found, seen)


def parse_config(
    data: Any, env: Mapping[str, str], sections: Collection[str] | None = None
) -> Config:
    """Validate an already-parsed config mapping (also used for the embedded default).

    With `sections`, the others are neither interpolated nor read: they keep defaults."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(["<top level>: the config must be a mapping of sections"])
    problems = Problems()
    if sections is not None:
        data = {k: v for k, v in data.items() if k in sections}
    # An empty section (`cache:` with everything below commented out) means its defaults.
    data = _plain({k: v for k, v in data.items() if v is not None}, "", env, problems)
    data = _without_missing_extras(data, problems)
    config, failed = _validate(data, problems)
    if config is not None:
        _shared_state_defaults(config, data)
        cross_check(config, problems, failed)
    problems.check()
    assert config is not None  # no problem at all: the first validation passed
    return config


def _plain(value: Any, path: str, env: Mapping[str, str], problems: Problems) -> Any:
    """`value` with `${VAR}` / `${VAR:-default}` replaced in strings and keys as strings.

    Names unset variables, and values JSON has no form for (a YAML date, a set).
    """
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.add(path, f"environment variable {name} is not set")
            return ""

        return _ENV_REF.sub(sub, value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, join(path, str(k)), env, problems) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, join(path, i), env, problems) for i, v in enumerate(value)]
    if not isinstance(value, _JSON_SCALARS):
        problems.add(path, f"must be a plain value (got {describe(value)}); quote it for a string")
        return str(value)  # reported once: the text stands in for the rest of the checks
    return value


def _without_missing_extras(data: dict[str, Any], problems: Problems) -> dict[str, Any]:
    """Providers whose type needs an extra that is not installed: a problem naming it."""
    providers = data.get("providers")
    if not isinstance(providers, dict):
        return data
    kept = {}
    for name, entry in providers.items():
        type_name = entry.get("type") if isinstance(entry, dict) else None
        if isinstance(type_name, str) and type_name in PROVIDER_TYPES:
            try:
                PROVIDER_TYPES[type_name]
            except MissingExtra as exc:
                problems.add(f"providers.{name}.type", str(exc))
                continue
        kept[name] = entry
    return {**data, "providers": kept}


def _shared_state_defaults(config: Config, data: Mapping[str, Any]) -> None:
    """With a shared Redis, every piece of shared state lives there unless the file says
    otherwise: several replicas or workers then enforce one set of limits, not one each."""
    if not config.state.redis_url:
        return
    if "backend" not in _mapping(data.get("cache")):
        config.cache.backend = "redis"
    if "limits_backend" not in _mapping(data.get("limits")):
        config.limits.limits_backend = "redis"  # rate limits, budgets and usage records


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _validate(data: dict[str, Any], problems: Problems) -> tuple[Config | None, set[str]]:
    """The config, or on errors the config without what they concern, and failed sections."""
    adapter = config_adapter()
    try:
        return adapter.validate_json(json.dumps(data)), set()
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        problems.extend(validation_problems(errors))
    rest, failed = dict(data), set()
    for error in errors:
        section, *below = (str(k) for k in error["loc"] or ("",))
        entries = rest.get(section)
        if section in _ENTRY_SECTIONS and below and isinstance(entries, dict):
            rest[section] = {k: v for k, v in entries.items() if k != below[0]}
        else:
            rest.pop(section, None)
            if section in _SECTIONS:
                failed.add(section)
    try:
        return adapter.validate_json(json.dumps(rest)), failed
    except ValidationError:  # what remains should be valid; if not, skip the cross-checks
        return None, failed


def config_adapter() -> TypeAdapter[Config]:
    """The validator of `Config`, for the provider types registered now."""
    return _adapter(tuple((name, t.options) for name, t in installed_types().items()))


@functools.cache
def _adapter(_provider_types: tuple[tuple[str, type], ...]) -> TypeAdapter[Config]:
    # Keyed by the registry, so a provider type registered later gets a validator knowing it.
    return TypeAdapter(Config)
