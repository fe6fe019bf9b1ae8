"""The README must stay true: its config examples validate and its key tables match the code.

Rules the README follows (so this test can read it):
- Every fenced ```yaml block in README.md is a gateway config. A block preceded by the line
  `<!-- fragment -->` extends the examples above it: it is validated deep-merged onto all
  earlier blocks. Any other block must be valid on its own.
- `"<64 hex>"` is the placeholder for a key digest; each occurrence gets a distinct digest here.
- Config-key tables (first column `key` or `option`, second `default`): every key must be a
  field of the config dataclasses (or of the provider options named by the `**`type`**`
  line above the table), and a default written as a literal must equal the field's default.
- helm/README.md's values example is rendered with the chart and parsed by the gateway.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import re
import types
import typing
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from gateway.config import Config, LimitsConfig, parse_config
from gateway.observe.metrics import Metrics
from providers.registry import PROVIDER_TYPES
from tests.test_helm import CHART, fake_env, gateway_parse, render

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
HELM_README = (ROOT / "helm" / "README.md").read_text(encoding="utf-8")
PROVIDERS_DOC = (ROOT / "docs" / "providers.md").read_text(encoding="utf-8")
FRAGMENT = "<!-- fragment -->"
PLACEHOLDER = "<64 hex>"
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
SECTIONS = {f.name for f in dataclasses.fields(Config)}


@dataclasses.dataclass
class Block:
    line: int
    text: str
    fragment: bool


def yaml_blocks(markdown: str) -> list[Block]:
    blocks = []
    pattern = re.compile(r"^( *)```yaml\n(.*?)^\1```", re.S | re.M)
    for match in pattern.finditer(markdown):
        indent = len(match.group(1))
        text = "\n".join(line[indent:] for line in match.group(2).splitlines())
        before = markdown[: match.start()].rstrip("\n").splitlines()
        fragment = bool(before) and before[-1].strip() == FRAGMENT
        blocks.append(Block(markdown[: match.start()].count("\n") + 1, text, fragment))
    return blocks


def with_digests(text: str) -> str:
    parts = text.split(PLACEHOLDER)
    out = parts[0]
    for i, part in enumerate(parts[1:]):
        out += hashlib.sha256(f"readme-{i}".encode()).hexdigest() + part
    return out


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def readme_configs() -> list[tuple[int, dict[str, Any]]]:
    """Each README yaml block as the config it stands for (fragments merged)."""
    configs = []
    so_far: dict[str, Any] = {}
    for block in yaml_blocks(README):
        data = yaml.safe_load(with_digests(block.text))
        assert isinstance(data, dict) and set(data) <= SECTIONS, (
            f"README.md line {block.line}: a yaml block that is not a gateway config "
            f"(top-level keys {sorted(data) if isinstance(data, dict) else data!r})"
        )
        so_far = deep_merge(so_far, data)
        configs.append((block.line, so_far if block.fragment else data))
    return configs


CONFIGS = readme_configs()


def test_readme_has_its_examples() -> None:
    # Configuration, cloud providers, routing, cost governance.
    assert len(CONFIGS) >= 4
    assert not yaml_blocks(README)[0].fragment


@pytest.mark.parametrize("config", [c for _, c in CONFIGS], ids=[f"line{n}" for n, _ in CONFIGS])
def test_readme_config_example_is_valid(config: dict[str, Any]) -> None:
    env = {name: "dummy" for name in ENV_REF.findall(yaml.safe_dump(config))}
    parse_config(copy.deepcopy(config), env)


def test_helm_readme_values_example_renders_a_valid_config() -> None:
    (block,) = yaml_blocks(HELM_README)
    values = yaml.safe_load(block.text.replace("<digest>", "ab" * 32))
    with helm.Chart.load(CHART) as chart:
        rendered = render(chart, values)
    config = gateway_parse(rendered.config, fake_env(rendered.config_text))
    assert set(config.teams) == {"search"}
    assert config.models["rerank-v3.5"].deployments[0].provider == "cohere"
    assert config.state.redis_url is not None and config.cache.backend == "redis"


# --------------------------------------------------------------------------------------
# Config-key tables against the dataclasses

_ROW = re.compile(r"^\|(.+)\|\s*$")
_TICKED = re.compile(r"`([^`]+)`")
_PROVIDER_LINE = re.compile(r"^\*\*`(\w+)`\*\*")
# Tables whose keys are relative: the section they document.
_RELATIVE_ROOTS = {"### Over-fetch limits": LimitsConfig}


@dataclasses.dataclass
class Row:
    line: int
    keys: list[str]  # dotted paths from Config, or plain names relative to `root`
    default: str
    root: Any  # the dataclass the keys start from


def table_rows(markdown: str) -> list[Row]:
    rows: list[Row] = []
    root: Any = Config
    in_table = False
    for number, line in enumerate(markdown.splitlines(), start=1):
        if line.startswith("#"):
            root = _RELATIVE_ROOTS.get(line.strip(), Config)
        if match := _PROVIDER_LINE.match(line):
            root = PROVIDER_TYPES[match.group(1)].options
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if _ROW.match(line) else []
        if not cells:
            in_table = False
            continue
        if cells[:2] in (["key", "default"], ["option", "default"]):
            in_table = True
            continue
        if not in_table or set(cells[0]) <= set("-: "):
            continue
        keys = _TICKED.findall(cells[0].split(" (")[0]) if "`" in cells[0] else []
        rows.append(Row(number, keys, cells[1], root))
    return rows


def _unwrap(tp: Any) -> Any:
    """The dataclass (or plain type) inside Optional / list / dict."""
    while True:
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin in (typing.Union, types.UnionType):
            tp = next(a for a in args if a is not type(None))
        elif origin is list:
            tp = args[0]
        elif origin is dict:
            tp = args[1]
        else:
            return tp


def resolve(root: Any, path: str) -> dataclasses.Field[Any] | None:
    """The dataclass field a README key names; None for a wildcard (`cache.*`)."""
    parts = [p.removesuffix("[]") for p in path.split(".") if not p.startswith("<")]
    if parts[-1] == "*":
        return None
    cls, found = root, None
    for part in parts:
        assert dataclasses.is_dataclass(cls), f"{path}: {part!r} is below a plain value"
        fields = {f.name: f for f in dataclasses.fields(cls)}
        assert part in fields, f"{path}: {cls.__name__} has no field {part!r}"
        found = fields[part]
        cls = _unwrap(typing.get_type_hints(cls)[part])
    return found


def expand(row: Row) -> list[str]:
    """`routing.breaker.error_rate`, `min_calls` -> both full paths."""
    first = row.keys[0]
    prefix = first.rsplit(".", 1)[0] + "." if "." in first else ""
    return [first] + [k if "." in k else prefix + k for k in row.keys[1:]]


def _literal_defaults(cell: str) -> list[Any] | None:
    """The defaults a cell states as literals, or None when it describes one in words."""
    if cell in ("none", "required"):
        return [cell]
    tokens = _TICKED.findall(cell)
    rest = _TICKED.sub("", cell).replace(",", "").replace("/", "").strip()
    if not tokens or rest:
        return None
    values = []
    for token in tokens:
        head = token.split(".")[0]
        if "<" in token or head in SECTIONS:  # a placeholder or another key's value
            return None
        value = yaml.safe_load(token)
        values.append(value if isinstance(value, (int, float, bool, list, type(None))) else token)
    return values


def field_default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return "required"


def same(stated: Any, actual: Any) -> bool:
    if stated is None or stated == "none":
        return actual is None
    if isinstance(stated, bool) or isinstance(actual, bool):
        return stated is actual
    if isinstance(stated, (int, float)) and isinstance(actual, (int, float)):
        return float(stated) == float(actual)
    return bool(stated == actual)


ROWS = [r for r in table_rows(README) if r.keys]
# docs/providers.md documents the options of the self-hosted and hosted provider types.
DOC_ROWS = [r for r in table_rows(PROVIDERS_DOC) if r.keys]


def test_readme_key_tables_were_found() -> None:
    documented = {k for row in ROWS + DOC_ROWS for k in expand(row)}
    # One key from each table: configuration, each provider, routing, cache, limits.
    for key in ("server.drain_timeout_s", "routing.breaker.probes", "cache.redis_backoff_s"):
        assert key in documented
    assert {row.root for row in ROWS + DOC_ROWS} >= {o.options for o in PROVIDER_TYPES.values()} - {
        PROVIDER_TYPES["local"].options  # `local` has no table (options named in prose)
    }
    assert LimitsConfig in {row.root for row in ROWS}


@pytest.mark.parametrize(
    "row",
    ROWS + DOC_ROWS,
    ids=[f"line{r.line}" for r in ROWS] + [f"providers-md-line{r.line}" for r in DOC_ROWS],
)
def test_readme_key_exists_with_its_default(row: Row) -> None:
    keys = expand(row)
    fields = [resolve(row.root, key) for key in keys]
    stated = _literal_defaults(row.default)
    if stated is None or None in fields:
        return  # a default in words (`derived`, `the model's`) or a wildcard row
    if len(stated) == 1:
        stated = stated * len(fields)
    assert len(stated) == len(fields), f"line {row.line}: {len(keys)} keys, defaults {stated}"
    for key, f, value in zip(keys, fields, stated, strict=True):
        assert f is not None
        actual = field_default(f)
        assert same(value, actual), (
            f"README line {row.line}: {key} default {value!r}, code {actual!r}"
        )


# --------------------------------------------------------------------------------------
# Metrics table against gateway/observe/metrics.py


def test_readme_metrics_and_labels_match_the_registry() -> None:
    metrics = Metrics()
    labels: dict[str, tuple[str, ...]] = {}
    for collector in list(metrics.registry._collector_to_names):
        name = collector._name
        kind = collector._type
        labels[f"{name}_total" if kind == "counter" else name] = collector._labelnames
    section = README.split("| metric | labels |", 1)[1].split("\n\n", 1)[0]
    documented: set[str] = set()
    for line in section.splitlines()[2:]:
        name_cell, label_cell = [c.strip() for c in line.strip().strip("|").split("|")][:2]
        names = [n for n in _TICKED.findall(name_cell) if n.startswith("rerank_")]
        stated = _TICKED.findall(re.sub(r"\([^()]*\)", "", label_cell))
        for name in names:
            assert name in labels, f"README metric {name} is not registered"
            documented.add(name)
            if "see [" not in label_cell:
                assert tuple(stated) == labels[name], (
                    f"{name}: README {stated}, code {labels[name]}"
                )
    assert documented == set(labels), f"undocumented: {set(labels) - documented}"
