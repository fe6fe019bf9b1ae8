"""Config keys of routing and tier selection: defaults and errors that name the key."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import ConfigError, parse_config
from policies.routing.failover import HedgeSettings
from policies.routing.latency import LatencyPrior


def config(**model: Any) -> dict[str, Any]:
    return {
        "auth": {"mode": "none"},
        "providers": {"up": {"type": "local"}},
        "models": {"m": {"deployments": [{"provider": "up"}], **model}},
    }


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, {})
    return info.value.problems


def test_defaults() -> None:
    parsed = parse_config(config(), {})
    model = parsed.models["m"]
    assert (model.max_attempts, model.fallback, model.timeout_s) == (3, "error", None)
    assert model.hedge == HedgeSettings(enabled=False, delay_ms=None, max_hedges=1)
    assert model.deployments[0].max_in_flight is None
    routing = parsed.routing
    assert (routing.retry_budget.ratio, routing.retry_budget.min_per_s) == (0.2, 1.0)
    assert (routing.breaker.failures, routing.breaker.cooldown_s, routing.breaker.probes) == (
        5,
        30.0,
        3,
    )
    assert routing.backoff.max_retry_after_ms == 1000.0
    assert routing.overhead_ms == 5.0


def test_full_routing_config_reads() -> None:
    data = config(
        timeout_s=2,
        max_attempts=4,
        fallback="local",
        hedge={"enabled": True, "delay_ms": 80, "max_hedges": 2},
        latency_prior_ms={"base_ms": 120, "per_doc_ms": 0.5},
    )
    data["models"]["m"]["deployments"][0].update(
        {"max_in_flight": 64, "latency_prior_ms": {"base_ms": 90, "per_kchar_ms": 2}}
    )
    data["models"]["auto"] = {"tiers": {"pro": "m", "fast": "m"}, "latency_budget_ms": 300}
    data["teams"] = {"search": {"latency_budget_ms": 250}}
    data["routing"] = {
        "overhead_ms": 3,
        "retry_budget": {"ratio": 0.1, "min_per_s": 2, "window_s": 5},
        "breaker": {
            "failures": 3,
            "error_rate": 0.3,
            "min_calls": 10,
            "window_s": 20,
            "cooldown_s": 0.05,
            "probes": 1,
        },
        "backoff": {"base_ms": 10, "max_ms": 200, "max_retry_after_ms": 2000},
        "latency": {"half_life_s": 30, "min_samples": 20},
    }
    parsed = parse_config(data, {})
    model = parsed.models["m"]
    assert model.latency_prior_ms == LatencyPrior(base_ms=120, per_doc_ms=0.5)
    assert model.deployments[0].latency_prior_ms == LatencyPrior(base_ms=90, per_kchar_ms=2)
    assert parsed.models["auto"].latency_budget_ms == 300
    assert parsed.teams["search"].latency_budget_ms == 250
    assert parsed.routing.breaker.cooldown_s == 0.05


@pytest.mark.parametrize(
    ("model", "problem"),
    [
        (
            {"fallback": "retry"},
            "models.m.fallback: must be one of error, passthrough, local (got the string 'retry')",
        ),
        ({"max_attempts": 0}, "models.m.max_attempts: must be at least 1 (got 0)"),
        ({"timeout_s": 0}, "models.m.timeout_s: must be at least 0.01 (got 0.0)"),
        ({"hedge": {"max_hedges": 5}}, "models.m.hedge.max_hedges: must be at most 3 (got 5)"),
        (
            {"hedge": {"delay": 5}},
            "models.m.hedge.delay: unknown key (known keys: delay_ms, enabled, max_hedges)",
        ),
        (
            {"latency_budget_ms": 100},
            "models.m: latency_budget_ms is for tiered aliases; use timeout_s here",
        ),
        (
            {"latency_prior_ms": {"base_ms": -1}},
            "models.m.latency_prior_ms.base_ms: must be at least 0.0 (got -1.0)",
        ),
    ],
)
def test_model_routing_errors_name_the_key(model: dict[str, Any], problem: str) -> None:
    assert problems(config(**model)) == [problem]


def test_other_routing_errors_name_the_key() -> None:
    data = config()
    data["models"]["m"]["deployments"][0]["max_in_flight"] = 0
    data["models"]["auto"] = {"tiers": {"pro": "m"}, "latency_prior_ms": {"base_ms": 1}}
    data["teams"] = {"search": {"latency_budget_ms": 0}}
    data["routing"] = {"breaker": {"error_rate": 2}, "retry_budget": {"percent": 20}}
    assert sorted(problems(data)) == [
        "models.auto: latency_prior_ms belongs on the models an alias's tiers name",
        "models.m.deployments[0].max_in_flight: must be at least 1 (got 0)",
        "routing.breaker.error_rate: must be at most 1.0 (got 2.0)",
        "routing.retry_budget.percent: unknown key (known keys: min_per_s, ratio, window_s)",
        "teams.search.latency_budget_ms: must be at least 1 (got 0)",
    ]


def test_shadow_and_family_prior_keys() -> None:
    data = config()
    data["models"]["m2"] = {"deployments": [{"provider": "up"}]}
    data["models"]["auto"] = {
        "tiers": {"pro": "m", "fast": "m2"},
        "shadow": {"sample_rate": 0.05, "min_ndcg": 0.9},
    }
    data["teams"] = {"search": {"shadow_sample_rate": 0}}
    data["routing"] = {"latency": {"family_priors": False}}
    parsed = parse_config(data, {})
    shadow = parsed.models["auto"].shadow
    assert shadow is not None
    assert (shadow.sample_rate, shadow.max_usd_per_day, shadow.min_ndcg) == (0.05, 5.0, 0.9)
    assert (shadow.max_per_minute, shadow.min_samples, shadow.window) == (60, 30, 500)
    assert parsed.teams["search"].shadow_sample_rate == 0
    assert parsed.routing.latency.family_priors is False
    assert parse_config(config(latency_prior_ms={"base_ms": 5, "weight": 0}), {}).models[
        "m"
    ].latency_prior_ms == LatencyPrior(base_ms=5, weight=0)


def test_shadow_errors_name_the_key() -> None:
    data = config(shadow={"sample_rate": 0.1})
    data["models"]["one"] = {"tiers": {"pro": "m"}, "shadow": {}}
    data["models"]["two"] = {"tiers": {"pro": "m", "fast": "m"}, "shadow": {"sample_rate": 2}}
    assert sorted(problems(data)) == [
        "models.m: shadow is for tiered aliases (it compares their two tiers)",
        "models.one: shadow needs both tiers, pro and fast, to compare",
        "models.two.shadow.sample_rate: must be at most 1.0 (got 2.0)",
    ]
