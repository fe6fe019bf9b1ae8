"""Config loading and validation: every problem names its key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, default_config, load_config, parse_config
from providers.cohere import CohereOptions

EXAMPLE = """\
server: {host: 127.0.0.1, port: 8080, workers: 1}
auth:
  mode: keys
  admin_key_sha256: "%(admin)s"
teams:
  search:
    key_sha256: ["%(team)s"]
providers:
  cohere-prod: {type: cohere, base_url: "https://api.cohere.com", api_key: "${COHERE_API_KEY}", timeout_s: 10}
  offline: {type: local}
models:
  rerank-v3.5:
    deployments: [{provider: cohere-prod, model: rerank-v3.5}]
  local-bm25:
    deployments: [{provider: offline}]
cache: {backend: memory}
state: {redis_url: "redis://127.0.0.1:6379/0"}
""" % {"admin": "a" * 64, "team": "b" * 64}  # noqa: UP031


def problems(data: dict, env: dict | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, env or {})
    return info.value.problems


def test_issue_example_loads(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(EXAMPLE)
    config = load_config(path, {"COHERE_API_KEY": "sk-1"})
    assert config.providers["cohere-prod"].options == CohereOptions(
        base_url="https://api.cohere.com", api_key="sk-1", timeout_s=10.0
    )
    assert config.teams["search"].key_sha256 == ["b" * 64]
    assert config.models["local-bm25"].deployments[0].provider == "offline"
    assert config.state.redis_url == "redis://127.0.0.1:6379/0"


def test_unset_environment_variable_is_named(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(EXAMPLE)
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert info.value.problems == [
        "providers.cohere-prod.api_key: environment variable COHERE_API_KEY is not set"
    ]


def test_env_default_syntax() -> None:
    data = {
        "auth": {"mode": "none"},
        "providers": {"c": {"type": "cohere", "base_url": "${URL:-http://x}"}},
    }
    assert parse_config(data, {}).providers["c"].options.base_url == "http://x"
    assert parse_config(data, {"URL": "https://y"}).providers["c"].options.base_url == "https://y"


def test_problems_name_key_paths_all_at_once() -> None:
    found = problems(
        {
            "server": {"port": "eighty", "bogus": 1},
            "auth": {"mode": "maybe"},
            "providers": {"a": {"type": "coher"}, "b": {"type": "cohere", "timeout_s": -1}},
            "sparkles": {},
        }
    )
    assert "server.port: must be an integer (got the string 'eighty')" in found
    assert any(p.startswith("server.bogus: unknown key (known keys: ") for p in found)
    assert "auth.mode: must be one of keys, none (got the string 'maybe')" in found
    assert any(p.startswith("providers.a.type: must be one of cohere") for p in found)
    assert "providers.b.timeout_s: must be at least 0.001 (got -1.0)" in found
    assert any(p.startswith("sparkles: unknown section") for p in found)


def test_cross_references_are_checked() -> None:
    found = problems(
        {
            "auth": {"mode": "none"},
            "providers": {"p": {"type": "local"}},
            "models": {
                "m": {"deployments": [{"provider": "ghost"}]},
                "alias": {"tiers": {"pro": "nothing", "turbo": "m"}},
                "empty": {},
            },
        }
    )
    assert (
        "models.m.deployments[0].provider: unknown provider 'ghost' (configured providers: p)"
        in found
    )
    assert "models.alias: unknown tier 'turbo' (tiers are: pro, fast)" in found
    assert "models.empty: needs deployments (a list of {provider, model}) or tiers" in found


def test_bad_digest_and_duplicate_keys() -> None:
    found = problems({"teams": {"a": {"key_sha256": ["abc"]}}})
    assert found[0].startswith("teams.a: every key_sha256 entry must be a SHA-256 hex digest")
    found = problems({"teams": {"a": {"key_sha256": ["c" * 64]}, "b": {"key_sha256": ["C" * 64]}}})
    assert found == ["teams.b.key_sha256[0]: the same key is already given to team 'a'"]


def test_auth_none_only_on_loopback() -> None:
    found = problems({"server": {"host": "0.0.0.0"}, "auth": {"mode": "none"}})
    assert found[0].startswith(
        "auth.mode: `none` is only allowed when server.host is a loopback address"
    )
    assert (
        parse_config({"server": {"host": "::1"}, "auth": {"mode": "none"}}, {}).auth.mode == "none"
    )


def test_keys_mode_needs_a_team() -> None:
    assert problems({})[0].startswith("teams: auth.mode is `keys` but no team has a key_sha256")


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("server:\n  port: [1,\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "not valid YAML at line" in info.value.problems[0]


def test_embedded_default_is_offline_unless_cohere_key_set() -> None:
    offline = default_config({})
    assert list(offline.models) == ["local-bm25"]
    assert offline.auth.mode == "none" and offline.server.host == "127.0.0.1"
    online = default_config({"COHERE_API_KEY": "sk"})
    assert online.providers["cohere"].options.api_key == "sk"
    assert {"rerank-v3.5", "rerank-v4.0-pro", "rerank-v4.0-fast"} <= set(online.models)


def test_team_model_lists_and_manager_keys_are_checked() -> None:
    from gateway.http.auth import hash_key

    def found(**search: object) -> list[str]:
        data = {
            "auth": {"mode": "keys", "admin_key_sha256": hash_key("admin")},
            "teams": {"search": {"key_sha256": [hash_key("team")], **search}},
            "providers": {"local": {"type": "local"}},
            "models": {"local-bm25": {"deployments": [{"provider": "local"}]}},
        }
        try:
            parse_config(data, {})
        except ConfigError as exc:
            return exc.problems
        return []

    assert found(models=["local-bm25"], manager_key_sha256=[hash_key("manager")]) == []
    assert found(models=["rerank-v9"]) == [
        "teams.search.models[0]: unknown model 'rerank-v9' (models: local-bm25)"
    ]
    assert found(models=[])[0] == (
        "teams.search: models: [] would refuse every request; leave it out to allow all"
    )
    assert found(cache="isolated", hide_cross_team_hits=False) == []
    assert found(cache="isolated", hide_cross_team_hits=True)[0] == (
        "teams.search: hide_cross_team_hits hides nothing from an isolated team (no other "
        "team's entry is ever its hit); leave it out"
    )
    for reused in ("team", "admin"):
        assert found(manager_key_sha256=[hash_key(reused)]) == [
            "teams.search.manager_key_sha256[0]: a manager key must be a key of its own, not a "
            "team key or the admin key"
        ]
