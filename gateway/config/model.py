"""The gateway's configuration as dataclasses: one per section, read by `loader`.

Bounds are `Annotated` constraints from annotated-types, as in the policies' and providers'
own settings dataclasses; checks that span fields raise ValueError in `__post_init__`, and
the loader reports them at that section's key path. Only this module and the loader know
pydantic: policies and providers stay plain dataclasses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

from annotated_types import Ge, Interval
from pydantic import ConfigDict, Field, GetCoreSchemaHandler, GetPydanticSchema, with_config
from pydantic_core import core_schema

from policies.money.budget import BudgetConfig
from policies.money.ledger_pg import check_schema_name
from policies.money.limits import RequestLimits
from policies.money.pricing import PricingConfig
from policies.money.ratelimit import RateLimitConfig
from policies.quality.depth import DepthSettings, TeamDepth
from policies.routing.breaker import BreakerSettings
from policies.routing.failover import BackoffSettings, HedgeSettings
from policies.routing.latency import LatencyPrior, LatencySettings
from policies.routing.retry_budget import RetryBudgetSettings
from providers.http import check_http_url
from providers.registry import installed_types

# The scales an operator may state for a deployment (providers.types has all of them).
ScoreScale = Literal["calibrated", "sigmoid", "logit"]
FallbackMode = Literal["error", "passthrough", "local"]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
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
    port: Annotated[int, Interval(ge=0, le=65535)] = 8080
    workers: Annotated[int, Interval(ge=1, le=64)] = 1
    request_timeout_s: Annotated[float, Ge(0.01)] = 30.0  # default deadline of a request
    max_body_bytes: Annotated[int, Ge(1024)] = 16 * 1024 * 1024
    v1_default_model: str | None = None  # used when a /v1/rerank body names no model
    drain_timeout_s: Annotated[float, Ge(0.0)] = 20.0  # on SIGTERM: time to finish requests
    # /readyz answers 503 while Redis is unreachable (opt-in, for fail-closed teams);
    # otherwise a Redis outage is reported in the body and rerank_dependency_up only.
    ready_requires_redis: bool = False
    # /metrics and /admin/status data on a listener of their own (see docs/observability.md);
    # the public port then answers /metrics with 404.
    metrics_port: Annotated[int, Interval(ge=0, le=65535)] | None = None
    metrics_host: str = "127.0.0.1"
    # Without a metrics port: /metrics on the public port needs this bearer token (digest).
    metrics_token_sha256: str | None = None
    # Listen queue of connections not yet accepted; the kernel caps it at net.core.somaxconn.
    backlog: Annotated[int, Interval(ge=1, le=65535)] = 2048
    # Allocations between young-generation collections (CPython's default is 700).
    gc_threshold: Annotated[int, Ge(1)] = 20_000
    # Rerank requests one process handles at once; beyond it, 503 with Retry-After at
    # once instead of a queue that grows until callers time out. None: no limit.
    max_in_flight: Annotated[int, Ge(1)] | None = None
    # The edge, on every listener (docs/security.md): a connection without a complete
    # request head this long after it opened or after its last answer is closed...
    idle_timeout_s: Annotated[float, Interval(ge=0.1, le=3600.0)] = 15.0
    # ...a head must arrive whole this soon after its first byte (else the connection
    # closes), and a body this soon after its head (else 408 and the connection closes).
    header_timeout_s: Annotated[float, Interval(ge=0.1, le=300.0)] = 5.0
    body_timeout_s: Annotated[float, Interval(ge=0.1, le=3600.0)] = 10.0
    # The request line and headers together (431 past it), and how many header lines.
    max_header_bytes: Annotated[int, Interval(ge=1024, le=1024 * 1024)] = 32 * 1024
    max_headers: Annotated[int, Interval(ge=8, le=1000)] = 100

    def __post_init__(self) -> None:
        if self.metrics_token_sha256 is not None:
            self.metrics_token_sha256 = _check_digest(
                self.metrics_token_sha256, "metrics_token_sha256"
            )


@dataclass
class AuthConfig:
    mode: Literal["keys", "none"] = "keys"
    admin_key_sha256: str | None = None
    # API keys (POST /admin/keys) live in state.redis_url; each replica re-reads them on
    # a change message and at the latest every api_keys_refresh_s (see docs/teams-and-keys.md).
    api_keys_refresh_s: Annotated[float, Interval(ge=0.1, le=300.0)] = 5.0
    # Prefix of the API key records in Redis, and of admin sessions and attempt counters.
    api_keys_prefix: str = "rerank:"
    # Live (unexpired) API keys per team; a creation beyond it gets 409 (docs/security.md).
    api_keys_per_team: Annotated[int, Interval(ge=1, le=1_000_000)] = 500
    # Keys a team's managers may create or rotate per minute (the admin and CLI: no limit).
    api_key_creations_per_minute: Annotated[int, Interval(ge=1, le=100_000)] = 20
    # Status-page sessions: they end this long after sign-in, or after this long unused.
    session_max_age_s: Annotated[float, Interval(ge=60.0, le=30 * 86_400.0)] = 8 * 3600.0
    session_idle_s: Annotated[float, Interval(ge=60.0, le=30 * 86_400.0)] = 3600.0
    # Failed status-page sign-ins per minute, from one client address and from all.
    sign_in_failures_per_minute_per_address: Annotated[int, Interval(ge=1, le=100_000)] = 5
    sign_in_failures_per_minute: Annotated[int, Interval(ge=1, le=1_000_000)] = 30

    def __post_init__(self) -> None:
        if self.admin_key_sha256 is not None:
            self.admin_key_sha256 = _check_digest(self.admin_key_sha256, "admin_key_sha256")


@dataclass
class AlertsConfig:
    """Budget alerts: a log event and metric at each threshold, and an optional webhook."""

    thresholds: list[float] = field(default_factory=lambda: [0.8, 1.0])  # fractions of a budget
    webhook_url: str | None = None  # POSTed a JSON alert once per threshold and period
    webhook_timeout_s: Annotated[float, Interval(ge=0.1, le=60.0)] = 5.0
    webhook_attempts: Annotated[int, Interval(ge=1, le=20)] = 5  # with exponential back-off

    def __post_init__(self) -> None:
        if not self.thresholds or any(not 0.0 < t <= 10.0 for t in self.thresholds):
            raise ValueError("thresholds must be fractions of the budget above 0, e.g. [0.8, 1.0]")
        self.thresholds = sorted(set(self.thresholds))
        check_http_url("webhook_url", self.webhook_url)


@dataclass
class TelemetryConfig:
    """OpenTelemetry traces; unset keys fall back to the standard OTEL_* variables."""

    otlp_endpoint: str | None = None  # off unless this or OTEL_EXPORTER_OTLP_ENDPOINT is set
    protocol: Literal["http/protobuf", "grpc"] | None = None  # default http/protobuf
    sample_ratio: Annotated[float, Interval(ge=0.0, le=1.0)] | None = None  # of new traces
    service_name: str | None = None  # default rerank-gateway
    headers: dict[str, str] = field(default_factory=dict)  # sent to the collector
    # A caller's sampled flag decides whether its request is traced (callers inside the
    # operator's own tracing); otherwise sample_ratio does (docs/security.md).
    trust_parent: bool = False


@dataclass
class TeamConfig:
    key_sha256: list[str] = field(default_factory=list)
    cache: Literal["shared", "isolated"] = "shared"  # isolated: cache entries of its own
    # Report as misses the hits on entries another team wrote (see docs/security.md);
    # None: cache.hide_cross_team_hits.
    hide_cross_team_hits: bool | None = None
    limits: RequestLimits | None = None  # over-fetch limits, overriding the model's and global
    rate_limit: RateLimitConfig | None = None
    budget: BudgetConfig | None = None
    latency_budget_ms: Annotated[int, Ge(1)] | None = None  # default for tiered aliases
    shadow_sample_rate: Annotated[float, Interval(ge=0.0, le=1.0)] | None = None  # overrides
    manager_key_sha256: list[str] = field(default_factory=list)  # may manage the team's keys
    models: list[str] | None = None  # the models (and aliases) it may use; None: all
    alerts: AlertsConfig | None = None  # budget alerts of this team; else the global ones
    # Its answer when no deployment of a model can (an outage); None: each model's own.
    fallback: FallbackMode | None = None
    depth: TeamDepth | None = None  # depth advice: advise (default) or enforce (docs/depth.md)

    def __post_init__(self) -> None:
        self.key_sha256 = [_check_digest(k, "every key_sha256 entry") for k in self.key_sha256]
        self.manager_key_sha256 = [
            _check_digest(k, "every manager_key_sha256 entry") for k in self.manager_key_sha256
        ]
        if self.models == []:
            raise ValueError("models: [] would refuse every request; leave it out to allow all")
        if self.cache == "isolated" and self.hide_cross_team_hits:
            raise ValueError(
                "hide_cross_team_hits hides nothing from an isolated team (no other team's "
                "entry is ever its hit); leave it out"
            )


@dataclass
class DeploymentConfig:
    provider: str
    model: str | None = None  # upstream model id; defaults to the gateway model's name
    weight: Annotated[float, Ge(0.0)] = 1.0
    priority: int = 0
    max_in_flight: Annotated[int, Ge(1)] | None = None  # bulkhead: calls at once per process
    latency_prior_ms: LatencyPrior | None = None  # overrides the model's prior
    # Known facts, overridden where this deployment differs (None: the known default,
    # see gateway/state/facts.py): it returns Rerank 5's relevant spans; its score scale.
    relevant_spans: bool | None = None
    score_scale: ScoreScale | None = None


@dataclass
class ShadowConfig:
    """`models.<alias>.shadow`: score a sample of requests by the other tier too, in the
    background, to measure what the tier choice trades (see docs/tiers.md)."""

    sample_rate: Annotated[float, Interval(ge=0.0, le=1.0)] = 0.02
    max_usd_per_day: Annotated[float, Ge(0.0)] = 5.0  # billed to account `_shadow/<alias>`
    max_per_minute: Annotated[int, Ge(1)] = 60  # shadow calls, its own rate limit
    min_ndcg: Annotated[float, Interval(ge=0.0, le=1.0)] | None = None  # guard: stop downgrades
    min_samples: Annotated[int, Ge(1)] = 30  # samples before the guard may act
    window: Annotated[int, Ge(1)] = 500  # rolling window of samples per alias, team, direction


@dataclass
class ModelConfig:
    deployments: list[DeploymentConfig] = field(default_factory=list)
    tiers: dict[str, str] | None = None
    cache_family: str | None = None  # models naming the same family share cache entries
    cache_ttl_s: Annotated[float, Ge(1.0)] | None = None  # overrides cache.ttl_s
    limits: RequestLimits | None = None  # over-fetch limits, overriding the global ones
    # Routing (see policies/routing/failover.py); a tiered alias uses its tiers' settings.
    timeout_s: Annotated[float, Ge(0.01)] | None = None  # deadline; else server.request_timeout_s
    max_attempts: Annotated[int, Interval(ge=1, le=10)] = 3
    fallback: FallbackMode = "error"
    hedge: HedgeSettings = field(default_factory=HedgeSettings)
    latency_prior_ms: LatencyPrior | None = None
    latency_budget_ms: Annotated[int, Ge(1)] | None = None  # tiered alias: default budget
    shadow: ShadowConfig | None = None  # tiered alias: shadow quality evaluation
    # listwise: a document's score depends on the others (no per-document cache, no
    # splitting, no coalescing); None: listwise where a deployment's model is known to be.
    scoring: Literal["pointwise", "listwise"] | None = None
    context_length: Annotated[int, Ge(1)] | None = None  # tokens; shown in GET /v1/models

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
        if self.tiers is not None and (self.scoring or self.context_length):
            raise ValueError("scoring and context_length belong on the models a tier names")
        if self.tiers is None and not self.deployments:
            raise ValueError("needs deployments (a list of {provider, model}) or tiers")
        for tier in self.tiers or {}:
            if tier not in TIERS:
                raise ValueError(f"unknown tier {tier!r} (tiers are: {', '.join(TIERS)})")


@dataclass
class CacheConfig:
    backend: Literal["none", "memory", "redis", "tiered"] = "memory"
    ttl_s: Annotated[float, Ge(1.0)] = 86_400.0
    max_entries: Annotated[int, Ge(1)] | None = 100_000  # memory level
    max_bytes: Annotated[int, Ge(1024)] | None = None  # memory level, approximate
    key_prefix: str = "rg:s:"
    redis_timeout_s: Annotated[float, Interval(ge=0.001, le=5.0)] = 0.08
    # After a Redis failure the cache skips Redis for this long.
    redis_backoff_s: Annotated[float, Interval(ge=0.0, le=300.0)] = 1.0
    # Single flight across processes sharing Redis (backend redis or tiered).
    fleet_single_flight: bool = True
    fleet_max_wait_ms: Annotated[float, Ge(0.0)] = 2000.0  # then fetch yourself
    fleet_poll_ms: Annotated[float, Ge(1.0)] = 10.0
    redis_url: str | None = None  # the cache's own (evicting) Redis; default state.redis_url
    # Every team's default for teams.<name>.hide_cross_team_hits.
    hide_cross_team_hits: bool = False

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

    max_documents: Annotated[int, Interval(ge=1, le=10_000)] = 100
    limits_backend: Literal["memory", "redis"] = "memory"  # usage reports follow it
    on_redis_error: RedisErrorPolicy = field(default_factory=RedisErrorPolicy)
    redis_prefix: str = "rerank:"
    usage_retention_days: Annotated[int, Ge(1)] = 400


REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://", "redis+cluster://")


@dataclass
class SentinelConfig:
    """Redis behind Sentinel: the gateway asks the sentinels where the master is."""

    service: str  # the master's name in the sentinels' config (`sentinel monitor NAME ...`)
    sentinels: list[str] = field(default_factory=list)  # host:port of each sentinel
    password: str | None = None  # the master's (and replicas') password
    sentinel_password: str | None = None  # the sentinels' own, if they require one
    db: Annotated[int, Ge(0)] = 0
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


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


@dataclass
class LedgerConfig:
    """The durable usage ledger in PostgreSQL (see docs/ledger.md); off when absent."""

    url: str  # postgresql://user:password@host:5432/db (put the password in ${ENV})
    schema: str = "rerank_ledger"
    flush_interval_s: Annotated[float, Interval(ge=0.01, le=10.0)] = 0.5
    batch_size: Annotated[int, Interval(ge=1, le=100_000)] = 5_000
    # Events held while PostgreSQL is slow or down; past it they are counted as dropped.
    max_buffered: Annotated[int, Interval(ge=100, le=10_000_000)] = 500_000
    timeout_s: Annotated[float, Interval(ge=0.1, le=120.0)] = 5.0
    # Whole months kept (the current one counts); None keeps them all.
    event_retention_months: Annotated[int, Ge(1)] | None = 13
    rollup_retention_months: Annotated[int, Ge(1)] | None = None
    # At exit with PostgreSQL unreachable, buffered events go to a file here (replayed at
    # the next start); None: they are counted as dropped and logged.
    spill_dir: str | None = None
    # A budget rebuild waits this long for every replica's buffered events to land first.
    rebuild_wait_s: Annotated[float, Interval(ge=0.0, le=60.0)] = 2.0

    def __post_init__(self) -> None:
        if not self.url.startswith(POSTGRES_SCHEMES):
            raise ValueError("url must start with " + " or ".join(POSTGRES_SCHEMES))
        check_schema_name(self.schema)
        if self.rebuild_wait_s < self.flush_interval_s:
            raise ValueError(
                "rebuild_wait_s must be at least flush_interval_s: a rebuild waits for every "
                "replica's buffered events to be written"
            )


@dataclass
class RoutingConfig:
    overhead_ms: Annotated[float, Ge(0.0)] = 5.0  # the gateway's own time, for tier selection
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
    """One `providers.<name>` entry: its type and that type's options dataclass."""

    name: str
    type: str
    options: Any  # the options dataclass PROVIDER_TYPES names for `type`


def _providers_schema(_source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
    """`providers.<name>` mappings read as the options dataclass their `type` picks.

    Built from PROVIDER_TYPES when the validator is built, so a registered type is known.
    """
    options: Any = Union[tuple(t.options for t in installed_types().values())]  # noqa: UP007
    entries = handler.generate_schema(dict[str, Annotated[options, Field(discriminator="type")]])
    return core_schema.no_info_after_validator_function(_named, entries)


def _named(entries: dict[str, Any]) -> dict[str, ProviderConfig]:
    return {name: ProviderConfig(name, o.type, o) for name, o in entries.items()}


Providers = Annotated[dict[str, ProviderConfig], GetPydanticSchema(_providers_schema)]


# Parsed YAML is read strictly ("8080" is not a port) and unknown keys are errors; nested
# dataclasses (those of policies/ and providers/ too) inherit this from Config.
@with_config(ConfigDict(strict=True, extra="forbid"))
@dataclass
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    teams: dict[str, TeamConfig] = field(default_factory=dict)
    providers: Providers = field(default_factory=dict)
    models: dict[str, ModelConfig] = field(default_factory=dict)
    cache: CacheConfig = field(default_factory=CacheConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    pricing: PricingConfig = field(default_factory=PricingConfig)
    state: StateConfig = field(default_factory=StateConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    ledger: LedgerConfig | None = None
    depth: DepthSettings = field(default_factory=DepthSettings)
