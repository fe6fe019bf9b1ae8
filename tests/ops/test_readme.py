"""The README and the docs must stay true: config examples validate, key tables match the code.

Rules README.md and every page of docs/ follow (so this test can read them):
- Every fenced ```yaml block is a gateway config, valid on its own. A block preceded by
  the line `<!-- fragment -->` extends the full example (the first block of
  docs/configuration.md) and every fragment before it, reading the pages in the order of
  `PAGE_ORDER`: it is validated deep-merged onto them. A block preceded by any other
  `<!-- ... -->` line is not checked here: `<!-- not a gateway config -->` (a Kubernetes
  manifest), or a marker another test owns (`<!-- offline-config -->`: test_offline.py).
- `"<64 hex>"` is the placeholder for a key digest; each occurrence gets a distinct digest here.
- Config-key tables (first column `key` or `option`, second `default`): every key must be a
  field of the config dataclasses (or of the provider options named by the `**`type`**`
  line above the table), and a default written as a literal must equal the field's default.
- helm/README.md's values examples (the install's and the ledger's) are rendered with the
  chart and parsed by the gateway.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import re
import types
import typing
from typing import Any

import helm_python as helm
import pytest
import yaml

from gateway.config import Config, LimitsConfig, parse_config
from gateway.observe.metrics import Metrics
from providers.registry import PROVIDER_TYPES
from tests.ops.test_helm import CHART, fake_env, gateway_parse, render
from tests.support.paths import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
HELM_README = (ROOT / "helm" / "README.md").read_text(encoding="utf-8")
# The front door and every reference page, by the name tests report them under; fragments
# build on the pages before them in this order.
PAGE_ORDER = ["configuration", "providers", "routing", "cache", "governance", "operations"]
_DOCS = sorted(
    (ROOT / "docs").glob("*.md"),
    key=lambda p: (PAGE_ORDER.index(p.stem) if p.stem in PAGE_ORDER else len(PAGE_ORDER), p.name),
)
PAGES = {"README.md": README} | {f"docs/{p.name}": p.read_text(encoding="utf-8") for p in _DOCS}
FRAGMENT = "<!-- fragment -->"
NOT_CONFIG = "<!-- not a gateway config -->"
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
        marker = before[-1].strip() if before else ""
        if marker.startswith("<!--") and marker != FRAGMENT:
            continue  # not a config, or checked by the test that owns the marker
        blocks.append(
            Block(markdown[: match.start()].count("\n") + 1, text, marker == FRAGMENT)
        )
    return blocks


def with_digests(text: str, block: str = "") -> str:
    """Distinct across blocks too: fragments merge into earlier blocks, and the admin key
    must differ from every team key."""
    parts = text.split(PLACEHOLDER)
    out = parts[0]
    for i, part in enumerate(parts[1:]):
        out += hashlib.sha256(f"readme-{block}-{i}".encode()).hexdigest() + part
    return out


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


FULL_EXAMPLE = "docs/configuration.md"


def page_configs() -> list[tuple[str, dict[str, Any]]]:
    """Each checked yaml block as the config it stands for (fragments merged)."""
    configs = []
    so_far: dict[str, Any] = {}
    for page, markdown in PAGES.items():
        for i, block in enumerate(yaml_blocks(markdown)):
            data = yaml.safe_load(with_digests(block.text, f"{page}:{block.line}"))
            assert isinstance(data, dict) and set(data) <= SECTIONS, (
                f"{page} line {block.line}: a yaml block that is not a gateway config "
                f"(top-level keys {sorted(data) if isinstance(data, dict) else data!r})"
            )
            if block.fragment or (page == FULL_EXAMPLE and i == 0):
                so_far = deep_merge(so_far, data)
            configs.append((f"{page}:{block.line}", so_far if block.fragment else data))
    return configs


CONFIGS = page_configs()


def test_readme_has_its_examples() -> None:
    # The front door's, then configuration, cloud providers, routing, cost governance.
    assert len(CONFIGS) >= 5
    for page in ("README.md", FULL_EXAMPLE):
        blocks = yaml_blocks(PAGES[page])
        assert blocks and not blocks[0].fragment, f"{page} must start with a whole config"


@pytest.mark.parametrize("config", [c for _, c in CONFIGS], ids=[n for n, _ in CONFIGS])
def test_readme_config_example_is_valid(config: dict[str, Any]) -> None:
    env = {name: "dummy" for name in ENV_REF.findall(yaml.safe_dump(config))}
    parse_config(copy.deepcopy(config), env)


def test_helm_readme_quick_start_renders_a_shared_state_install() -> None:
    """The quick start's `--set` flags, as written, give a valid config on shared Redis."""
    start = HELM_README.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    values: dict[str, Any] = {}
    for assignment in re.findall(r'--set "?([^"\s]+)"?', start):
        path, _, value = assignment.partition("=")
        value = value.replace("$DIGEST", "ab" * 32)
        *parents, last = path.split(".")
        node = values
        for key in parents:
            node = node.setdefault(key, {})
        if match := re.fullmatch(r"(.+)\[0\]", last):
            node[match.group(1)] = [value]
        else:
            node[last] = None if value == "null" else yaml.safe_load(value)
    assert values["redis"] == {"enabled": True}
    with helm.Chart.load(CHART) as chart:
        rendered = render(chart, values)
    config = gateway_parse(rendered.config, fake_env(rendered.config_text))
    assert set(config.teams) == {"quickstart"}
    assert (config.cache.backend, config.limits.limits_backend) == ("redis", "redis")
    assert "WARNING" not in rendered.notes
    assert "svc/rg-rerank-gateway 8080:8080" in start and '"model": "local-bm25"' in start


def test_helm_readme_values_example_renders_a_valid_config() -> None:
    block = next(b for b in yaml_blocks(HELM_README) if "config:" in b.text)
    values = yaml.safe_load(block.text.replace("<digest>", "ab" * 32))
    with helm.Chart.load(CHART) as chart:
        rendered = render(chart, values)
    config = gateway_parse(rendered.config, fake_env(rendered.config_text))
    assert set(config.teams) == {"search"}
    assert config.models["rerank-v3.5"].deployments[0].provider == "cohere"
    assert config.state.redis_url is not None and config.cache.backend == "redis"


def test_helm_readme_ledger_example_renders_a_ledger() -> None:
    block = next(b for b in yaml_blocks(HELM_README) if b.text.startswith("ledger:"))
    values = yaml.safe_load(block.text)
    with helm.Chart.load(CHART) as chart:
        rendered = render(chart, values)
    env = fake_env(rendered.config_text)
    config = gateway_parse(rendered.config, env)
    assert config.ledger is not None and env["LEDGER_PASSWORD"] in config.ledger.url
    assert rendered.pod_spec["initContainers"][0]["name"] == "ledger-migrate"


# --------------------------------------------------------------------------------------
# Config-key tables against the dataclasses

_ROW = re.compile(r"^\|(.+)\|\s*$")
_TICKED = re.compile(r"`([^`]+)`")
_PROVIDER_LINE = re.compile(r"^\*\*`(\w+)`\*\*")
# Tables whose keys are relative: the section they document.
_RELATIVE_ROOTS = {"## Over-fetch limits": LimitsConfig}


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


PAGE_ROWS = [(page, r) for page, text in PAGES.items() for r in table_rows(text) if r.keys]
ROWS = [r for _, r in PAGE_ROWS]


def test_readme_key_tables_were_found() -> None:
    documented = {k for row in ROWS for k in expand(row)}
    # One key from each table: configuration, each provider, routing, cache, limits.
    for key in ("server.drain_timeout_s", "routing.breaker.probes", "cache.redis_backoff_s"):
        assert key in documented
    assert {row.root for row in ROWS} >= {o.options for o in PROVIDER_TYPES.values()} - {
        PROVIDER_TYPES["local"].options  # `local` has no table (options named in prose)
    }
    assert LimitsConfig in {row.root for row in ROWS}


@pytest.mark.parametrize("row", ROWS, ids=[f"{page}:{r.line}" for page, r in PAGE_ROWS])
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
            f"line {row.line}: {key} default {value!r}, code {actual!r}"
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
    # Every page's metrics table (features may document theirs on their own page).
    sections = [
        "| metric | labels |" + table.split("\n\n", 1)[0]
        for text in PAGES.values()
        for table in text.split("| metric | labels |")[1:]
    ]
    documented: set[str] = set()
    for line in (row for section in sections for row in section.splitlines()[2:]):
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
