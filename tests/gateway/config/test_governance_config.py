"""The governance config keys: defaults and validation naming each key path."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import ConfigError, parse_config
from tests.conftest import gateway_config


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(data, {})
    return exc.value.problems


def base() -> dict[str, Any]:
    return gateway_config({"cohere-a": "http://127.0.0.1:1"})


def test_defaults() -> None:
    config = parse_config(base(), {})
    assert config.limits.max_documents == 100
    assert (config.limits.overfetch, config.limits.long_documents) == (None, None)  # = reject
    assert config.limits.limits_backend == "memory"
    assert (config.limits.on_redis_error.rate_limit, config.limits.on_redis_error.budget) == (
        "open",
        "closed",
    )
    assert config.pricing.chunk_tokens == 500 and config.pricing.tokens_per_char == 0.25
    assert config.teams["search"].rate_limit is None and config.teams["search"].budget is None


def test_full_governance_config_reads() -> None:
    data = base()
    data["teams"]["search"].update(
        limits={"max_documents": 50, "overfetch": "truncate", "max_body_bytes": 4096},
        rate_limit={"requests_per_minute": 600, "search_units_per_minute": 1000},
        budget={"usd_per_day": 20, "usd_per_month": 400, "on_exhausted": "downgrade"},
    )
    data["models"]["rerank-v3.5"]["limits"] = {"max_document_tokens": 4096}
    data["limits"] = {
        "max_documents": 200,
        "limits_backend": "redis",
        "on_redis_error": {"rate_limit": "closed", "budget": "open"},
        "redis_prefix": "rg:",
    }
    data["state"] = {"redis_url": "redis://127.0.0.1:6379/0"}
    data["pricing"] = {
        "models": {"rerank-v3.5": {"usd_per_1k_units": 1.8, "providers": {"cohere-a": 1.7}}}
    }
    config = parse_config(data, {})
    team = config.teams["search"]
    assert team.limits is not None and team.limits.overfetch == "truncate"
    assert team.rate_limit is not None and team.rate_limit.search_units_per_minute == 1000
    assert team.budget is not None and team.budget.on_exhausted == "downgrade"
    assert config.pricing.models["rerank-v3.5"].providers == {"cohere-a": 1.7}


def test_problems_name_their_keys() -> None:
    data = base()
    data["teams"]["search"].update(rate_limit={}, budget={"on_exhausted": "panic"})
    data["teams"]["ads"]["limits"] = {"max_documents": 0, "overfetch": "drop"}
    data["models"]["rerank-v3.5"]["limits"] = {"max_body_bytes": 4096}
    data["limits"] = {"limits_backend": "redis", "on_redis_error": {"budget": "ajar"}}
    data["pricing"] = {"tokens_per_char": 0}
    found = problems(data)
    expected = [
        "teams.search.rate_limit: set requests_per_minute and/or search_units_per_minute",
        "teams.search.budget.on_exhausted: must be one of reject, downgrade (got the string 'panic')",
        "teams.ads.limits.max_documents: must be at least 1 (got 0)",
        "teams.ads.limits.overfetch: must be one of reject, truncate (got the string 'drop')",
        "models.rerank-v3.5: limits.max_body_bytes cannot be set per model (the model is known "
        "only after the body is read); set it globally or per team",
        "limits.on_redis_error.budget: must be one of open, closed (got the string 'ajar')",
        "pricing.tokens_per_char: must be at least 0.01 (got 0.0)",
    ]
    for line in expected:
        assert line in found
    data = base()
    data["pricing"] = {
        "models": {"nope": {"usd_per_1k_units": 1}, "local-bm25": {"providers": {"cohere-a": 1.0}}}
    }
    assert problems(data) == [
        "pricing.models.nope: unknown model 'nope'",
        "pricing.models.local-bm25.providers.cohere-a: model 'local-bm25' has no deployment on "
        "provider 'cohere-a'",
    ]
    # limits failed to read above, so its backend was not cross-checked; with a valid section:
    data = base()
    data["limits"] = {"limits_backend": "redis"}
    assert problems(data) == ["limits.limits_backend: `redis` needs state.redis_url"]
    data["teams"]["search"]["budget"] = {}
    assert "teams.search.budget: set usd_per_day and/or usd_per_month" in problems(data)


def test_readme_governance_example_is_valid() -> None:
    import yaml

    from tests.support.paths import ROOT

    readme = (ROOT / "docs" / "governance.md").read_text()
    start = readme.index("```yaml", readme.index("# Cost governance")) + len("```yaml")
    data = yaml.safe_load(readme[start : readme.index("```", start)].replace("<64 hex>", "a" * 64))
    data["providers"] = {"cohere-prod": {"type": "cohere", "api_key": "k"}}
    config = parse_config(data, {})
    assert config.teams["search"].budget is not None
    assert config.limits.limits_backend == "redis"
