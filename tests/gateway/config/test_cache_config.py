"""Cache configuration: defaults, and mistakes reported at their key path."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config

BASE = {
    "auth": {"mode": "none"},
    "providers": {"c": {"type": "cohere"}},
    "models": {"m": {"deployments": [{"provider": "c"}]}},
}


def problems(**sections: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, **sections}, {})
    return info.value.problems


def test_defaults() -> None:
    cache = parse_config(BASE, {}).cache
    assert (cache.backend, cache.ttl_s, cache.max_entries, cache.max_bytes) == (
        "memory",
        86_400.0,
        100_000,
        None,
    )
    assert (cache.key_prefix, cache.redis_timeout_s) == ("rg:s:", 0.08)


def test_redis_backends_need_a_redis_url() -> None:
    for backend in ("redis", "tiered"):
        found = problems(cache={"backend": backend})
        assert found == [
            f"cache.backend: `{backend}` keeps scores in Redis but neither cache.redis_url nor "
            "state.redis_url is set; set one or use backend memory"
        ]
    ok = parse_config(
        {**BASE, "cache": {"backend": "redis"}, "state": {"redis_url": "redis://h:6379/0"}}, {}
    )
    assert ok.cache.backend == "redis"
    own = parse_config({**BASE, "cache": {"backend": "redis", "redis_url": "redis://c:6379/1"}}, {})
    assert (own.cache.redis_url, own.state.redis_url) == ("redis://c:6379/1", None)
    assert problems(cache={"backend": "redis", "redis_url": "http://c"}) == [
        "cache: redis_url must start with redis://, rediss://, unix://, redis+sentinel://, "
        "redis+cluster://"
    ]


def test_bad_cache_values_are_named() -> None:
    found = problems(
        cache={"backend": "disk", "ttl_s": 0, "redis_timeout_s": 10, "bogus": 1},
        teams={"t": {"cache": "private"}},
    )
    assert (
        "cache.backend: must be one of none, memory, redis, tiered (got the string 'disk')" in found
    )
    assert "cache.ttl_s: must be at least 1.0 (got 0.0)" in found
    assert "cache.redis_timeout_s: must be at most 5.0 (got 10.0)" in found
    assert any(p.startswith("cache.bogus: unknown key") for p in found)
    assert "teams.t.cache: must be one of shared, isolated (got the string 'private')" in found


def test_memory_cache_needs_a_bound() -> None:
    assert problems(cache={"max_entries": None}) == [
        "cache: backend memory needs max_entries or max_bytes as a bound"
    ]
    assert parse_config({**BASE, "cache": {"max_entries": None, "max_bytes": 2**20}}, {})


def test_cache_keys_on_models() -> None:
    models = {
        "m": {"deployments": [{"provider": "c"}], "cache_family": "fam", "cache_ttl_s": 60},
        "alias": {"tiers": {"pro": "m"}, "cache_family": "x"},
    }
    found = problems(models=models)
    assert found == [
        "models.alias: cache_family and cache_ttl_s belong on the models a tier names, not on the alias"
    ]
    del models["alias"]
    model = parse_config({**BASE, "models": models}, {}).models["m"]
    assert (model.cache_family, model.cache_ttl_s) == ("fam", 60.0)
