"""The gateway's configuration: one YAML file, `${ENV}` interpolation, validated at start.

Every problem is reported with the key path it concerns, all at once, so
`rerank-gateway check-config FILE` gives a reviewer the whole list.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from gateway.config.reader import ConfigError, Reader, bounded, join
from policies.breaker import BreakerSettings
from policies.budget import BudgetConfig
from policies.failover import BackoffSettings, HedgeSettings
from policies.latency import LatencyPrior, LatencySettings
from policies.limits import RequestLimits
from policies.pricing import PricingConfig
from policies.ratelimit import RateLimitConfig
from policies.retry_budget import RetryBudgetSettings
from providers.registry import PROVIDER_TYPES, MissingExtra

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
TIERS = ("pro", "fast")


def _check_digest(value: str, what: str) -> str:
    digest = value.strip().lower()
    if not _HEX64.match(digest):
        raise ValueError(
            f"{what} must be a SHA-256 hex digest of 64 characters "
            "(make one with `rerank-gateway hash-key KEY`)"
        )
    return digest


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = bounded(8080, min=0, max=65535)
    workers: int = bounded(1, min=1, max=64)
    request_timeout_s: float = bounded(30.0, min=0.01)  # default deadline of a request
    max_body_bytes: int = bounded(16 * 1024 * 1024, min=1024)
    v1_default_model: str | None = None  # used when a /v1/rerank body names no model
    drain_timeout_s: float = bounded(20.0, min=0.0)  # on SIGTERM: time to finish requests
    # /readyz answers 503 while Redis is unreachable (opt-in, for fail-closed teams);
    # otherwise a Redis outage is reported in the body and rerank_dependency_up only.
    ready_requires_redis: bool = False


@dataclass
class AuthConfig:
    mode: Literal["keys", "none"] = "keys"
    admin_key_sha256: str | None = None
    # API keys (POST /admin/keys) live in state.redis_url; each replica re-reads them on
    # a change message and at the latest every api_keys_refresh_s (see docs/teams-and-keys.md).
    api_keys_refresh_s: float = bounded(5.0, min=0.1, max=300.0)
    api_keys_prefix: str = "rerank:"

    def __post_init__(self) -> None:
        if self.admin_key_sha256 is not None:
            self.admin_key_sha256 = _check_digest(self.admin_key_sha256, "admin_key_sha256")


@dataclass
class TeamConfig:
    key_sha256: list[str] = field(default_factory=list)
    cache: Literal["shared", "isolated"] = "shared"  # isolated: cache entries of its own
    limits: RequestLimits | None = None  # over-fetch limits, overriding the model's and global
    rate_limit: RateLimitConfig | None = None
    budget: BudgetConfig | None = None
    latency_budget_ms: int | None = bounded(None, min=1)  # default for tiered aliases
    manager_key_sha256: list[str] = field(default_factory=list)  # may manage the team's keys
    models: list[str] | None = None  # the models (and aliases) it may use; None: all
    shadow_sample_rate: float | None = bounded(None, min=0.0, max=1.0)  # overrides aliases'

    def __post_init__(self) -> None:
        self.key_sha256 = [_check_digest(k, "every key_sha256 entry") for k in self.key_sha256]
        self.manager_key_sha256 = [
            _check_digest(k, "every manager_key_sha256 entry") for k in self.manager_key_sha256
        ]
        if self.models == []:
            raise ValueError("models: [] would refuse every request; leave it out to allow all")


@dataclass
class DeploymentConfig:
    provider: str
    model: str | None = None  # upstream model id; defaults to the gateway model's name
    weight: float = bounded(1.0, min=0.0)
    priority: int = 0
    max_in_flight: int | None = bounded(None, min=1)  # bulkhead: calls at once per process
    latency_prior_ms: LatencyPrior | None = None  # overrides the model's prior


@dataclass
class ShadowConfig:
    """`models.<alias>.shadow`: score a sample of requests by the other tier too, in the
    background, to measure what the tier choice trades (see docs/tiers.md)."""

    sample_rate: float = bounded(0.02, min=0.0, max=1.0)
    max_usd_per_day: float = bounded(5.0, min=0.0)  # billed to account `_shadow/<alias>`
    max_per_minute: int = bounded(60, min=1)  # shadow calls, its own rate limit
    min_ndcg: float | None = bounded(None, min=0.0, max=1.0)  # guard: stop downgrades below
    min_samples: int = bounded(30, min=1)  # samples before the guard may act
    window: int = bounded(500, min=1)  # rolling window of samples per alias, team, direction


@dataclass
class ModelConfig:
    deployments: list[DeploymentConfig] = field(default_factory=list)
    tiers: dict[str, str] | None = None
    cache_family: str | None = None  # models naming the same family share cache entries
    cache_ttl_s: float | None = bounded(None, min=1.0)  # overrides cache.ttl_s
    limits: RequestLimits | None = None  # over-fetch limits, overriding the global ones
    # Routing (see policies/failover.py); a tiered alias uses its tiers' settings.
    timeout_s: float | None = bounded(None, min=0.01)  # deadline; else server.request_timeout_s
    max_attempts: int = bounded(3, min=1, max=10)
    fallback: Literal["error", "passthrough", "local"] = "error"
    hedge: HedgeSettings = field(default_factory=HedgeSettings)
    latency_prior_ms: LatencyPrior | None = None
    latency_budget_ms: int | None = bounded(None, min=1)  # tiered alias: default budget
    shadow: ShadowConfig | None = None  # tiered alias: shadow quality evaluation

    def __post_init__(self) -> None:
        if self.limits is not None and self.limits.max_body_bytes is not None:
            raise ValueError(
                "limits.max_body_bytes cannot be set per model (the model is known only after "
                "the body is read); set it globally or per team"
            )
        if self.tiers is not None and self.deployments:
            raise ValueError("a model has either deployments or tiers, not both")
        if self.tiers is not None and (self.cache_family or self.cache_ttl_s):
            raise ValueError(
                "cache_family and cache_ttl_s belong on the models a tier names, not on the alias"
            )
        if self.tiers is None and self.shadow is not None:
            raise ValueError("shadow is for tiered aliases (it compares their two tiers)")
        if self.shadow is not None and set(self.tiers or ()) != set(TIERS):
            raise ValueError("shadow needs both tiers, pro and fast, to compare")
        if self.tiers is None and self.latency_budget_ms is not None:
            raise ValueError("latency_budget_ms is for tiered aliases; use timeout_s here")
        if self.tiers is not None and self.latency_prior_ms is not None:
            raise ValueError("latency_prior_ms belongs on the models an alias's tiers name")
        if self.tiers is None and not self.deployments:
            raise ValueError("needs deployments (a list of {provider, model}) or tiers")
        for tier in self.tiers or {}:
            if tier not in TIERS:
                raise ValueError(f"unknown tier {tier!r} (tiers are: {', '.join(TIERS)})")


@dataclass
class CacheConfig:
    backend: Literal["none", "memory", "redis", "tiered"] = "memory"
    ttl_s: float = bounded(86_400.0, min=1.0)
    max_entries: int | None = bounded(100_000, min=1)  # memory level
    max_bytes: int | None = bounded(None, min=1024)  # memory level, approximate
    key_prefix: str = "rg:s:"
    redis_timeout_s: float = bounded(0.08, min=0.001, max=5.0)
    redis_backoff_s: float = bounded(1.0, min=0.0, max=300.0)  # skip Redis after a failure
    redis_url: str | None = None  # the cache's own (evicting) Redis; default state.redis_url
    # Single flight across processes sharing Redis (backend redis or tiered).
    fleet_single_flight: bool = True
    fleet_max_wait_ms: float = bounded(2000.0, min=0.0)  # then fetch yourself
    fleet_poll_ms: float = bounded(10.0, min=1.0)

    def __post_init__(self) -> None:
        _check_redis_url(self.redis_url)
        if self.backend in ("memory", "tiered") and not (self.max_entries or self.max_bytes):
            raise ValueError(f"backend {self.backend} needs max_entries or max_bytes as a bound")


@dataclass
class RedisErrorPolicy:
    """What limits do when Redis cannot be reached: admit (open) or refuse with 503 (closed)."""

    rate_limit: Literal["open", "closed"] = "open"
    budget: Literal["open", "closed"] = "closed"


@dataclass
class LimitsConfig(RequestLimits):
    """Global over-fetch limits (models and teams override them) and where counters live."""

    max_documents: int = bounded(100, min=1, max=10_000)
    limits_backend: Literal["memory", "redis"] = "memory"  # usage reports follow it
    on_redis_error: RedisErrorPolicy = field(default_factory=RedisErrorPolicy)
    redis_prefix: str = "rerank:"
    usage_retention_days: int = bounded(400, min=1)


REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://", "redis+cluster://")


@dataclass
class SentinelConfig:
    """Redis behind Sentinel: the gateway asks the sentinels where the master is."""

    service: str  # the master's name in the sentinels' config (`sentinel monitor NAME ...`)
    sentinels: list[str] = field(default_factory=list)  # host:port of each sentinel
    password: str | None = None  # the master's (and replicas') password
    sentinel_password: str | None = None  # the sentinels' own, if they require one
    db: int = bounded(0, min=0)
    tls: bool = False

    def __post_init__(self) -> None:
        if not self.sentinels:
            raise ValueError("sentinel.sentinels needs at least one host:port")
        for address in self.sentinels:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"sentinel address {address!r} must be host:port")


@dataclass
class StateConfig:
    redis_url: str | None = None
    redis_cluster: bool = False  # redis_url names a Redis Cluster node (or use redis+cluster://)
    sentinel: SentinelConfig | None = None
    # At start, a state Redis whose maxmemory-policy may evict (anything but noeviction)
    # could drop API keys, budgets and counters: refuse to start, or warn loudly.
    on_evicting_redis: Literal["refuse", "warn"] = "refuse"

    def __post_init__(self) -> None:
        _check_redis_url(self.redis_url)
        if self.sentinel is not None:
            if self.redis_url:
                raise ValueError("give either redis_url or a sentinel block, not both")
            # Everything that asks "is there a shared Redis?" reads redis_url; the passwords
            # stay in the block (gateway.state.redis_client reads them from there).
            self.redis_url = "redis+sentinel://{}/{}/{}".format(
                ",".join(self.sentinel.sentinels), self.sentinel.service, self.sentinel.db
            )
        sentinel_url = bool(self.redis_url) and str(self.redis_url).startswith("redis+sentinel")
        if self.redis_cluster and sentinel_url:
            raise ValueError("redis_cluster and Sentinel exclude each other")


def _check_redis_url(url: str | None) -> None:
    if url and not url.startswith(REDIS_SCHEMES):
        raise ValueError("redis_url must start with " + ", ".join(REDIS_SCHEMES))


@dataclass
class RoutingConfig:
    overhead_ms: float = bounded(5.0, min=0.0)  # the gateway's own time, for tier selection
    retry_budget: RetryBudgetSettings = field(default_factory=RetryBudgetSettings)
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    backoff: BackoffSettings = field(default_factory=BackoffSettings)
    latency: LatencySettings = field(default_factory=LatencySettings)


@dataclass
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


@dataclass
class ProviderConfig:
    name: str
    type: str
    options: Any  # the provider type's options dataclass


@dataclass
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    teams: dict[str, TeamConfig] = field(default_factory=dict)
    providers: dict[str, ProviderConfig] = field(default_factory=dict)
    models: dict[str, ModelConfig] = field(default_factory=dict)
    cache: CacheConfig = field(default_factory=CacheConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    pricing: PricingConfig = field(default_factory=PricingConfig)
    state: StateConfig = field(default_factory=StateConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)


_SECTIONS: dict[str, Any] = {
    "server": ServerConfig,
    "auth": AuthConfig,
    "teams": dict[str, TeamConfig],
    "models": dict[str, ModelConfig],
    "cache": CacheConfig,
    "limits": LimitsConfig,
    "pricing": PricingConfig,
    "state": StateConfig,
    "logging": LoggingConfig,
    "routing": RoutingConfig,
}


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
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError([f"{path}: not valid YAML{where}: {problem}"]) from exc
    return parse_config(data, os.environ if env is None else env, sections)


def parse_config(
    data: Any, env: Mapping[str, str], sections: Collection[str] | None = None
) -> Config:
    """Validate an already-parsed config mapping (also used for the embedded default).

    With `sections`, the others are neither interpolated nor read: they keep defaults."""
    reader = Reader()
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(["<top level>: the config must be a mapping of sections"])
    if sections is not None:
        data = {k: v for k, v in data.items() if k in sections}
    data = _interpolate(data, "", env, reader)
    read = _read_sections(data, reader)
    config = Config(**{k: v for k, v in read.items() if v is not None})
    _shared_state_defaults(config, data)
    # Cross-section checks run on whatever was read, so one pass reports everything;
    # entries that failed to read are left out of them.
    _cross_check(config, reader, {k for k, v in read.items() if v is None})
    reader.check()
    return config


def _read_sections(data: Mapping[str, Any], reader: Reader) -> dict[str, Any]:
    sections: dict[str, Any] = {}
    for key, value in data.items():
        if key == "providers":
            sections[key] = _read_providers(value, reader)
        elif key in _SECTIONS:
            sections[key] = reader.read(_SECTIONS[key], value, key)
        else:
            known = ", ".join(sorted([*_SECTIONS, "providers"]))
            reader.problem(str(key), f"unknown section (known sections: {known})")
    for key in ("teams", "models"):
        if sections.get(key):
            sections[key] = {k: v for k, v in sections[key].items() if v is not None}
    return sections


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


def _interpolate(value: Any, path: str, env: Mapping[str, str], reader: Reader) -> Any:
    """Replace `${VAR}` and `${VAR:-default}` in string values, naming unset variables."""
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            reader.problem(path, f"environment variable {name} is not set")
            return ""

        return _ENV_REF.sub(sub, value)
    if isinstance(value, Mapping):
        return {k: _interpolate(v, join(path, str(k)), env, reader) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, join(path, i), env, reader) for i, v in enumerate(value)]
    return value


def _read_providers(data: Any, reader: Reader) -> dict[str, ProviderConfig]:
    if not isinstance(data, Mapping):
        reader.problem("providers", "must be a mapping of provider name to settings")
        return {}
    providers = {}
    for name, entry in data.items():
        path = join("providers", str(name))
        if not isinstance(entry, Mapping):
            reader.problem(path, "must be a mapping with a `type` and its settings")
            continue
        type_name = entry.get("type")
        if type_name not in PROVIDER_TYPES:
            known = ", ".join(PROVIDER_TYPES)
            reader.problem(join(path, "type"), f"must be one of {known} (got {type_name!r})")
            continue
        try:
            provider_type = PROVIDER_TYPES[str(type_name)]
        except MissingExtra as exc:
            reader.problem(join(path, "type"), str(exc))
            continue
        settings = {k: v for k, v in entry.items() if k != "type"}
        options: Any = reader.read(provider_type.options, settings, path)
        providers[str(name)] = ProviderConfig(str(name), str(type_name), options)
    return providers


def _cross_check(config: Config, reader: Reader, failed: set[str]) -> None:
    """Checks that span sections: references, key uniqueness, auth safety."""
    for name, model in config.models.items():
        for i, dep in enumerate(model.deployments):
            if dep.provider not in config.providers:
                known = ", ".join(config.providers) or "none"
                reader.problem(
                    f"models.{name}.deployments[{i}].provider",
                    f"unknown provider {dep.provider!r} (configured providers: {known})",
                )
        for tier, target in (model.tiers or {}).items():
            path = f"models.{name}.tiers.{tier}"
            if target not in config.models:
                reader.problem(path, f"unknown model {target!r}")
            elif config.models[target].tiers is not None:
                reader.problem(
                    path, f"{target!r} is itself tiered; a tier must name a model with deployments"
                )
    redis_cache = config.cache.backend in ("redis", "tiered")
    cache_redis = config.cache.redis_url or config.state.redis_url
    if redis_cache and not cache_redis and not failed & {"cache", "state"}:
        reader.problem(
            "cache.backend",
            f"`{config.cache.backend}` keeps scores in Redis but neither cache.redis_url nor "
            "state.redis_url is set; set one or use backend memory",
        )
    _check_team_access(config, reader, failed)
    _check_governance(config, reader, failed)
    default_model = config.server.v1_default_model
    if default_model is not None and default_model not in config.models:
        reader.problem("server.v1_default_model", f"unknown model {default_model!r}")
    owners: dict[str, str] = {}
    for team, team_config in config.teams.items():
        for i, digest in enumerate(team_config.key_sha256):
            if digest in owners:
                reader.problem(
                    f"teams.{team}.key_sha256[{i}]",
                    f"the same key is already given to team {owners[digest]!r}",
                )
            owners[digest] = team
    admin = config.auth.admin_key_sha256
    if admin is not None and admin in owners:
        reader.problem(
            "auth.admin_key_sha256",
            f"the admin key is also a key of team {owners[admin]!r}, which would make that "
            "team an admin; give the admin a key of its own (`rerank-gateway hash-key --new`)",
        )
    if failed & {"server", "auth", "teams"}:
        return
    if config.auth.mode == "none" and not is_loopback(config.server.host):
        reader.problem(
            "auth.mode",
            "`none` is only allowed when server.host is a loopback address "
            f"(got {config.server.host!r}); use `keys` and give each team a key",
        )
    # With state.redis_url, keys may come from the admin API instead of the file.
    if config.auth.mode == "keys" and not owners and not config.state.redis_url:
        reader.problem(
            "teams",
            "auth.mode is `keys` but no team has a key_sha256 (and without state.redis_url "
            "there are no API keys); every request would be refused",
        )


def _check_team_access(config: Config, reader: Reader, failed: set[str]) -> None:
    """Team model lists name served models; manager keys are nobody else's keys."""
    served = set(config.models)
    team_keys = {d for t in config.teams.values() for d in t.key_sha256}
    admin = config.auth.admin_key_sha256
    for team, tc in config.teams.items():
        for i, model in enumerate(tc.models or []):
            if "models" not in failed and model not in served:
                known = ", ".join(sorted(served)) or "none"
                reader.problem(
                    f"teams.{team}.models[{i}]", f"unknown model {model!r} (models: {known})"
                )
        for i, digest in enumerate(tc.manager_key_sha256):
            if digest in team_keys or digest == admin:
                reader.problem(
                    f"teams.{team}.manager_key_sha256[{i}]",
                    "a manager key must be a key of its own, not a team key or the admin key",
                )


def _check_governance(config: Config, reader: Reader, failed: set[str]) -> None:
    """Limits backend needs Redis; prices name configured models and providers."""
    if (
        config.limits.limits_backend == "redis"
        and not config.state.redis_url
        and "state" not in failed
    ):
        reader.problem("limits.limits_backend", "`redis` needs state.redis_url")
    if "models" in failed or "providers" in failed:
        return
    for model, price in config.pricing.models.items():
        path = f"pricing.models.{model}"
        if model not in config.models:
            reader.problem(path, f"unknown model {model!r}")
            continue
        used = {d.provider for d in config.models[model].deployments}
        for provider in price.providers:
            if provider not in used:
                reader.problem(
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


# Cohere's hosted rerank models, served by the embedded default when COHERE_API_KEY is set.
COHERE_MODELS = (
    "rerank-v5.0-pro",
    "rerank-v5.0-fast",
    "rerank-v4.0-pro",
    "rerank-v4.0-fast",
    "rerank-v3.5",
    "rerank-english-v3.0",
    "rerank-multilingual-v3.0",
)
LOCAL_MODEL = "local-bm25"


def default_config_data(env: Mapping[str, str]) -> dict[str, Any]:
    """The embedded default: loopback, no auth, the offline ranker, Cohere if a key is set."""
    data: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 8080, "v1_default_model": LOCAL_MODEL},
        "auth": {"mode": "none"},
        "providers": {"local": {"type": "local"}},
        "models": {LOCAL_MODEL: {"deployments": [{"provider": "local"}]}},
        "cache": {"backend": "memory"},
    }
    if env.get("COHERE_API_KEY"):
        data["providers"]["cohere"] = {"type": "cohere", "api_key": "${COHERE_API_KEY}"}
        for model in COHERE_MODELS:
            data["models"][model] = {"deployments": [{"provider": "cohere"}]}
    return data


def load_or_default(path: str | None, sections: Collection[str] | None = None) -> Config:
    """The config file at `path`, or the embedded default when there is none."""
    return load_config(path, sections=sections) if path else default_config()


def default_config(env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    return parse_config(default_config_data(env), env)
