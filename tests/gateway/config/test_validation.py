"""How a config file is validated: duplicate keys, strict types, every problem at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, load_config, parse_config
from tests.gateway.config.test_config import EXAMPLE

LOOPBACK = {"auth": {"mode": "none"}, "providers": {"p": {"type": "local"}}}


def file_problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env or {"COHERE_API_KEY": "sk"})
    return info.value.problems


def problems(data: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, env or {})
    return info.value.problems


# --------------------------------------------------------------------------------------
# Duplicate keys: YAML keeps the last one silently, the gateway refuses both


def test_a_second_section_block_is_refused(tmp_path: Path) -> None:
    text = EXAMPLE + 'teams:\n  other:\n    key_sha256: ["' + "c" * 64 + '"]\n'
    lines = text.splitlines()
    first = lines.index("teams:") + 1
    second = len(lines) - 2
    assert file_problems(tmp_path, text) == [
        f"<top level>: duplicate key 'teams' at line {second} (first at line {first})"
    ]


def test_a_repeated_model_name_is_refused(tmp_path: Path) -> None:
    text = EXAMPLE.replace(
        "  local-bm25:\n", "  rerank-v3.5:\n    deployments: [{provider: offline}]\n  local-bm25:\n"
    )
    first = text.splitlines().index("  rerank-v3.5:") + 1
    assert file_problems(tmp_path, text) == [
        f"models: duplicate key 'rerank-v3.5' at line {first + 2} (first at line {first})"
    ]


def test_duplicates_inside_list_items_name_the_item(tmp_path: Path) -> None:
    text = EXAMPLE.replace(
        "deployments: [{provider: offline}]", "deployments: [{provider: offline, provider: x}]"
    )
    found = file_problems(tmp_path, text)
    assert found[0] == "models.local-bm25.deployments[0]: duplicate key 'provider' at line 15"
    # The rest of the checks see what YAML kept: the last value.
    assert found[1].startswith("models.local-bm25.deployments[0].provider: unknown provider 'x'")


def test_anchors_and_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    text = EXAMPLE.replace(
        "  local-bm25:\n    deployments: [{provider: offline}]\n",
        "  local-bm25: &bm25\n    deployments: [{provider: offline}]\n"
        "  local-bm25-b:\n    <<: *bm25\n    deployments: [{provider: offline, weight: 2}]\n",
    )
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    config = load_config(path, {"COHERE_API_KEY": "sk"})
    assert config.models["local-bm25-b"].deployments[0].weight == 2.0


# --------------------------------------------------------------------------------------
# Strict types: no coercion of strings to numbers or of numbers to booleans


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"server": {"port": "8080"}}, "server.port: must be an integer (got the string '8080')"),
        ({"server": {"port": True}}, "server.port: must be an integer (got a boolean)"),
        ({"server": {"workers": 1.5}}, "server.workers: must be an integer (got the number 1.5)"),
        ({"server": {"host": 127}}, "server.host: must be a string (got the number 127)"),
        (
            {"cache": {"ttl_s": "60"}},
            "cache.ttl_s: must be a number (got the string '60')",
        ),
        (
            {"routing": {"breaker": {"error_rate": False}}},
            "routing.breaker.error_rate: must be a number (got a boolean)",
        ),
        (
            {"models": {"m": {"deployments": [{"provider": "p"}], "hedge": {"enabled": 1}}}},
            "models.m.hedge.enabled: must be true or false (got the number 1)",
        ),
        (
            {"teams": {"t": {"key_sha256": "c" * 64}}},
            "teams.t.key_sha256: must be a list (got the string '" + "c" * 64 + "')",
        ),
        (
            {"models": {"m": {"deployments": {"provider": "p"}}}},
            "models.m.deployments: must be a list (got a mapping)",
        ),
    ],
)
def test_values_of_the_wrong_type_are_refused(section: dict[str, Any], problem: str) -> None:
    assert problem in problems({**LOOPBACK, **section})


def test_an_integer_is_a_valid_number() -> None:
    config = parse_config({**LOOPBACK, "server": {"request_timeout_s": 5}}, {})
    assert config.server.request_timeout_s == 5.0
    assert isinstance(config.server.request_timeout_s, float)


def test_interpolated_values_stay_strings() -> None:
    # `${PORT}` becomes the string "8080": a port must be written as a number.
    found = problems({**LOOPBACK, "server": {"port": "${PORT}"}}, {"PORT": "8080"})
    assert found == ["server.port: must be an integer (got the string '8080')"]


def test_yaml_values_without_a_json_form_are_refused(tmp_path: Path) -> None:
    text = EXAMPLE.replace(
        "cache: {backend: memory}", "cache: {backend: memory, key_prefix: 2026-01-01}"
    )
    assert file_problems(tmp_path, text) == [
        "cache.key_prefix: must be a plain value (got date); quote it for a string"
    ]


def test_an_empty_section_means_its_defaults(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(EXAMPLE.replace("cache: {backend: memory}", "cache:\n  # backend: memory"))
    # The default: with state.redis_url set (as in the example), the shared Redis.
    assert load_config(path, {"COHERE_API_KEY": "sk"}).cache.backend == "redis"


# --------------------------------------------------------------------------------------
# Every problem at once, each at its key path


ALL_WRONG = """\
server: {workers: 0}
auth: {mode: keys}
teams:
  search: {key_sha256: ["%(team)s"]}
providers:
  cohere-prod: {type: cohere, api_key: "${COHERE_KEY}", retries: 2}
  br: {type: bedrock, region: mars}
  offline: {type: local}
models:
  local-bm25:
    deployments: [{provider: ghost}]
routing: {breaker: {probes: '3'}}
cache: {backend: disk}
cache: {backend: memory}
""" % {"team": "b" * 64}  # noqa: UP031


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    assert file_problems(tmp_path, ALL_WRONG, env={}) == [
        "<top level>: duplicate key 'cache' at line 14 (first at line 13)",
        "providers.cohere-prod.api_key: environment variable COHERE_KEY is not set",
        "server.workers: must be at least 1 (got 0)",
        "providers.cohere-prod.retries: unknown key (known keys: api_key, base_url, "
        "forward_priority, max_connections, path, timeout_s, type)",
        "providers.br: region must be an AWS region like us-east-1 (got 'mars')",
        "routing.breaker.probes: must be an integer (got the string '3')",
        # The cross-section checks still run on what was valid.
        "models.local-bm25.deployments[0].provider: unknown provider 'ghost' "
        "(configured providers: offline)",
    ]


def test_unknown_provider_type_names_the_types() -> None:
    found = problems({**LOOPBACK, "providers": {"a": {"type": "coher"}, "b": {"base_url": "x"}}})
    assert found == [
        "providers.a.type: must be one of cohere, azure, tei, vllm, infinity, jina, voyage, nim, azure_semantic, pinecone, mixedbread, llamacpp, openai_rerank, local, bedrock, oci, vertex, onnx (got the string 'coher')",
        "providers.b.type: is required (one of cohere, azure, tei, vllm, infinity, jina, voyage, nim, azure_semantic, pinecone, mixedbread, llamacpp, openai_rerank, local, bedrock, oci, vertex, onnx)",
    ]


def test_unknown_section_and_keys_list_what_is_known() -> None:
    found = problems({**LOOPBACK, "sever": {}, "server": {"prot": 1}})
    assert (
        "server.prot: unknown key (known keys: backlog, body_timeout_s, drain_timeout_s, gc_threshold, header_timeout_s, host, idle_timeout_s, max_body_bytes, max_header_bytes, max_headers, max_in_flight, metrics_host, metrics_port, metrics_token_sha256, port, ready_requires_redis, request_timeout_s, v1_default_model, workers)"
        in found
    )
    assert (
        "sever: unknown section (known sections: alerts, auth, cache, depth, ledger, limits, logging, models, pricing, providers, routing, server, state, teams, telemetry)"
        in found
    )


def test_a_bad_entry_leaves_the_others_in_for_the_cross_checks() -> None:
    found = problems(
        {
            **LOOPBACK,
            "models": {
                "broken": {"deployments": [{"provider": "p", "weight": -1}]},
                "good": {"deployments": [{"provider": "nowhere"}]},
            },
        }
    )
    assert found == [
        "models.broken.deployments[0].weight: must be at least 0.0 (got -1.0)",
        "models.good.deployments[0].provider: unknown provider 'nowhere' (configured providers: p)",
    ]
