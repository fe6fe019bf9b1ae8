"""The config's JSON Schema: `check-config --schema`, and the Helm chart's copy of it."""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
from typing import Any

import helm_python as helm
import jsonschema
import pytest

from gateway.config import Config
from gateway.config.schema import chart_values_schema, config_schema
from tests.ops.test_helm import CHART, render
from tests.ops.test_readme import CONFIGS

VALUES_SCHEMA = CHART / "values.schema.json"


def schema_errors(config: dict[str, Any]) -> list[tuple[list[Any], str]]:
    validator = jsonschema.Draft202012Validator(config_schema())
    return [(list(e.absolute_path), e.message) for e in validator.iter_errors(config)]


def test_check_config_schema_prints_the_schema() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--schema"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    schema = json.loads(out.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["properties"]) == {f.name for f in dataclasses.fields(Config)}
    assert schema == config_schema()


def test_check_config_without_a_file_says_what_to_give() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config"], capture_output=True, text=True
    )
    assert out.returncode == 2 and "give a config file, or --schema" in out.stderr


@pytest.mark.parametrize("config", [c for _, c in CONFIGS], ids=[f"line{n}" for n, _ in CONFIGS])
def test_readme_examples_match_the_schema(config: dict[str, Any]) -> None:
    assert schema_errors(config) == []


@pytest.mark.parametrize(
    ("config", "path"),
    [
        ({"server": {"port": "8080"}}, ["server", "port"]),
        ({"server": {"workers": 0}}, ["server", "workers"]),
        ({"cache": {"backend": "disk"}}, ["cache", "backend"]),
        ({"routing": {"breaker": {"probs": 3}}}, ["routing", "breaker"]),
        ({"sparkles": {}}, []),
        (
            {"teams": {"t": {"budget": {"on_exhausted": "panic"}}}},
            ["teams", "t", "budget"],  # budget: a mapping or null, so its anyOf fails
        ),
        # A provider entry must name its type: it picks the options.
        ({"providers": {"c": {"base_url": "https://api.cohere.com"}}}, ["providers", "c"]),
        ({"providers": {"c": {"type": "cohere", "region": "us-east-1"}}}, ["providers", "c"]),
    ],
)
def test_the_schema_refuses_what_the_gateway_refuses(
    config: dict[str, Any], path: list[Any]
) -> None:
    assert [p for p, _ in schema_errors(config)] == [path]


def test_the_chart_schema_embeds_the_generated_one() -> None:
    committed = json.loads(VALUES_SCHEMA.read_text(encoding="utf-8"))
    assert committed == chart_values_schema(copy.deepcopy(committed)), (
        "helm/rerank-gateway/values.schema.json is out of date: run "
        "`python -m gateway.config.schema helm/rerank-gateway/values.schema.json`"
    )
    jsonschema.Draft7Validator.check_schema(committed)


def test_the_chart_refuses_a_mistyped_config() -> None:
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmValuesError, match="/config/server/workers"):
            render(chart, {"config": {"server": {"workers": "2"}}})
        with pytest.raises(helm.HelmValuesError, match="/config/providers/local"):
            render(chart, {"config": {"providers": {"local": {"type": "local", "k": 1}}}})
        assert (
            render(chart, {"config": {"server": {"workers": 2}}}).config["server"]["workers"] == 2
        )
