"""Checks that span sections of a validated config: references, key uniqueness, auth safety.

They run on whatever part of the config was valid (entries with problems are left out, and
`failed` names the sections that could not be read at all), so one pass reports everything.
"""

from __future__ import annotations

import ipaddress

from gateway.config.errors import Problems
from gateway.config.model import Config, ModelConfig
from policies.model_version import cohere_version

# Provider types whose request can carry Cohere's `relevant_spans` (Cohere's schema).
SPAN_TYPES = ("cohere", "azure")


def cross_check(config: Config, problems: Problems, failed: set[str]) -> None:
    """Checks that span sections: references, key uniqueness, auth safety."""
    for name, model in config.models.items():
        for i, dep in enumerate(model.deployments):
            if dep.provider not in config.providers:
                known = ", ".join(config.providers) or "none"
                problems.add(
                    f"models.{name}.deployments[{i}].provider",
                    f"unknown provider {dep.provider!r} (configured providers: {known})",
                )
            elif dep.relevant_spans and config.providers[dep.provider].type not in SPAN_TYPES:
                problems.add(
                    f"models.{name}.deployments[{i}].relevant_spans",
                    f"provider type {config.providers[dep.provider].type} has no relevant_spans "
                    f"in its API (types that do: {', '.join(SPAN_TYPES)})",
                )
        for tier, target in (model.tiers or {}).items():
            path = f"models.{name}.tiers.{tier}"
            if target not in config.models:
                problems.add(path, f"unknown model {target!r}")
            elif config.models[target].tiers is not None:
                problems.add(
                    path, f"{target!r} is itself tiered; a tier must name a model with deployments"
                )
        _check_one_version(name, model, problems)
    redis_cache = config.cache.backend in ("redis", "tiered")
    cache_redis = config.cache.redis_url or config.state.redis_url
    if redis_cache and not cache_redis and not failed & {"cache", "state"}:
        problems.add(
            "cache.backend",
            f"`{config.cache.backend}` keeps scores in Redis but neither cache.redis_url nor "
            "state.redis_url is set; set one or use backend memory",
        )
    _check_team_access(config, problems, failed)
    _check_governance(config, problems, failed)
    default_model = config.server.v1_default_model
    if default_model is not None and default_model not in config.models:
        problems.add("server.v1_default_model", f"unknown model {default_model!r}")
    owners: dict[str, str] = {}
    for team, team_config in config.teams.items():
        for i, digest in enumerate(team_config.key_sha256):
            if digest in owners:
                problems.add(
                    f"teams.{team}.key_sha256[{i}]",
                    f"the same key is already given to team {owners[digest]!r}",
                )
            owners[digest] = team
    admin = config.auth.admin_key_sha256
    if admin is not None and admin in owners:
        problems.add(
            "auth.admin_key_sha256",
            f"the admin key is also a key of team {owners[admin]!r}, which would make that "
            "team an admin; give the admin a key of its own (`rerank-gateway hash-key --new`)",
        )
    if failed & {"server", "auth", "teams"}:
        return
    if config.auth.mode == "none" and not is_loopback(config.server.host):
        problems.add(
            "auth.mode",
            "`none` is only allowed when server.host is a loopback address "
            f"(got {config.server.host!r}); use `keys` and give each team a key",
        )
    # With state.redis_url, keys may come from the admin API instead of the file.
    if config.auth.mode == "keys" and not owners and not config.state.redis_url:
        problems.add(
            "teams",
            "auth.mode is `keys` but no team has a key_sha256 (and without state.redis_url "
            "there are no API keys); every request would be refused",
        )


def _check_team_access(config: Config, problems: Problems, failed: set[str]) -> None:
    """Team model lists name served models; manager keys are nobody else's keys."""
    served = set(config.models)
    team_keys = {d for t in config.teams.values() for d in t.key_sha256}
    admin = config.auth.admin_key_sha256
    for team, tc in config.teams.items():
        for i, model in enumerate(tc.models or []):
            if "models" not in failed and model not in served:
                known = ", ".join(sorted(served)) or "none"
                problems.add(
                    f"teams.{team}.models[{i}]", f"unknown model {model!r} (models: {known})"
                )
        for i, digest in enumerate(tc.manager_key_sha256):
            if digest in team_keys or digest == admin:
                problems.add(
                    f"teams.{team}.manager_key_sha256[{i}]",
                    "a manager key must be a key of its own, not a team key or the admin key",
                )


def _check_one_version(name: str, model: ModelConfig, problems: Problems) -> None:
    """A model's deployments serve one Cohere version: scores of two versions (v3.5, v4,
    v5's calibrated ones) are not comparable, and the model's cache entries are shared."""
    found: dict[str, str] = {}
    for dep in model.deployments:
        version = cohere_version(dep.model or name)
        if version is not None:
            found.setdefault(version, dep.model or name)
    if len(found) > 1:
        listed = ", ".join(f"{upstream!r} ({version})" for version, upstream in found.items())
        problems.add(
            f"models.{name}.deployments",
            f"the deployments serve different model versions: {listed}; their scores are not "
            "comparable and would share cache entries. Make one model per version (join them "
            "with tiers or fallback)",
        )


def _check_governance(config: Config, problems: Problems, failed: set[str]) -> None:
    """Limits backend needs Redis; prices name configured models and providers."""
    if (
        config.limits.limits_backend == "redis"
        and not config.state.redis_url
        and "state" not in failed
    ):
        problems.add("limits.limits_backend", "`redis` needs state.redis_url")
    if "models" in failed or "providers" in failed:
        return
    for model, price in config.pricing.models.items():
        path = f"pricing.models.{model}"
        if model not in config.models:
            problems.add(path, f"unknown model {model!r}")
            continue
        used = {d.provider for d in config.models[model].deployments}
        for provider in price.providers:
            if provider not in used:
                problems.add(
                    f"{path}.providers.{provider}",
                    f"model {model!r} has no deployment on provider {provider!r}",
                )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
