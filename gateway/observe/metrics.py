"""Prometheus metrics, one registry per app so tests and workers stay independent.

Label values are bounded: teams and models come from config (unknown names are
reported as "unknown"), deployments from config, kinds and statuses from small sets.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics import MetricWrapperBase

# Set by the parent of several workers: each writes its samples to files there.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

SHARE_BUCKETS = (0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.99, 1)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def child(metric: MetricWrapperBase, *values: str) -> Any:
    """`metric.labels(*values)`, remembered: prometheus-client's `labels()` validates and
    locks on every call (~2 µs), a handful of times per request. The label values are
    bounded (see above), so the map stays small."""
    children: dict[tuple[str, ...], Any] | None = getattr(metric, "_rg_children", None)
    if children is None:
        children = {}
        metric._rg_children = children  # type: ignore[attr-defined]
    found = children.get(values)
    if found is None:
        found = children[values] = metric.labels(*values)
    return found


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "rerank_requests", "Rerank requests answered.", ["team", "model", "status"], registry=r
        )
        self.request_duration = Histogram(
            "rerank_request_duration_seconds",
            "Time from request received to response ready.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_duration = Histogram(
            "rerank_upstream_duration_seconds",
            "Time of one upstream call, successful or not.",
            ["deployment"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "rerank_upstream_errors",
            "Failed upstream calls by kind (timeout, connect, status, malformed, auth).",
            ["deployment", "kind"],
            registry=r,
        )
        self.upstream_pool_waits = Counter(
            "rerank_upstream_pool_waits",
            "Upstream calls that found every pooled connection of their provider in use and "
            "queued for one (raise the provider's max_connections).",
            ["provider"],
            registry=r,
        )
        self.shed = Counter(
            "rerank_requests_shed",
            "Rerank requests answered 503 at once because server.max_in_flight were in flight.",
            registry=r,
        )
        self.edge_refusals = Counter(
            "rerank_edge_refusals",
            "Connections the edge refused before a route ran, by reason: header_timeout, "
            "header_too_large, body_timeout (server.*_timeout_s, server.max_header_bytes).",
            ["reason"],
            registry=r,
        )
        self.in_flight = Gauge(
            "rerank_in_flight_requests",
            "Rerank requests being handled.",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.breaker_state = Gauge(
            "rerank_breaker_state",
            "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open (the worst worker).",
            ["deployment"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.breaker_probe_at = Gauge(
            "rerank_breaker_probe_at_seconds",
            "When an open circuit breaker lets its next probe through (Unix time; 0 while "
            "not open). Outage answers say Retry-After: 1 whatever this is (the latest worker).",
            ["deployment"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.dependency_up = Gauge(
            "rerank_dependency_up",
            "1 while a shared dependency (redis) answered the last readiness check, 0 while "
            "not: the gateway still serves, degraded (the worst worker).",
            ["dependency"],
            multiprocess_mode="livemin",
            registry=r,
        )
        self.hedges = Counter(
            "rerank_hedges",
            "Hedged calls started (a second deployment, or the fast tier of an alias), by "
            "outcome: won (its answer was used), lost (cancelled), failed.",
            ["model", "outcome"],
            registry=r,
        )
        self.tier_backup_answers = Counter(
            "rerank_tier_backup_answers",
            "Requests to a tiered alias answered by the backup tier (pro was late or failed).",
            ["alias", "model"],
            registry=r,
        )
        self.tier_selections = Counter(
            "rerank_tier_selections",
            "Tier chosen for requests to a tiered alias, and why.",
            ["alias", "tier", "reason"],
            registry=r,
        )
        self.fallbacks = Counter(
            "rerank_fallbacks",
            "Requests answered by the model's fallback because every deployment failed.",
            ["model", "mode"],
            registry=r,
        )
        self.deployment_skips = Counter(
            "rerank_deployment_skips",
            "Deployments passed over by a request (breaker_open, bulkhead_full, retry_after).",
            ["deployment", "reason"],
            registry=r,
        )
        self.retry_budget_exhausted = Counter(
            "rerank_retry_budget_exhausted",
            "Requests that could not retry because the retry budget was spent.",
            ["model"],
            registry=r,
        )
        self.documents = Histogram(
            "rerank_documents_per_request",
            "Documents in each rerank request.",
            buckets=(1, 5, 10, 25, 50, 100, 200, 500, 1000, 10000),
            registry=r,
        )
        self.cache_lookups = Counter(
            "rerank_cache_lookups",
            "Requests by what the score cache did (hit, partial, miss, bypass).",
            ["result"],
            registry=r,
        )
        self.cache_documents = Counter(
            "rerank_cache_documents",
            "Documents by where their score came from (cache, coalesced, upstream).",
            ["source"],
            registry=r,
        )
        self.fleet_waits = Counter(
            "rerank_fleet_waits",
            "Flights that waited for another process's call for the same documents, by outcome "
            "(served, timed_out, holder_gone).",
            ["outcome"],
            registry=r,
        )
        self.fleet_waiting = Gauge(
            "rerank_fleet_waiting",
            "Flights now waiting for another process's call for the same documents.",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.cache_errors = Counter(
            "rerank_cache_errors",
            "Cache store operations that failed and were treated as misses.",
            ["backend"],
            registry=r,
        )

        # Cost governance (gateway.state.governance): team labels come from configured teams.
        self.overfetch = Counter(
            "rerank_overfetch",
            "Over-fetch limits enforced, by limit and action (reject, truncate).",
            ["team", "limit", "action"],
            registry=r,
        )
        self.search_units = Counter(
            "rerank_search_units",
            "Search units billed (or estimated when the upstream does not say).",
            ["team", "model", "deployment"],
            registry=r,
        )
        self.cost_usd = Counter(
            "rerank_cost_usd",
            "Cost of upstream calls in USD, from the price table.",
            ["team", "model", "deployment"],
            registry=r,
        )
        self.saved_search_units = Counter(
            "rerank_cache_saved_search_units",
            "Search units the documents answered without an upstream call would have cost.",
            ["team", "model"],
            registry=r,
        )
        self.saved_usd = Counter(
            "rerank_cache_saved_usd",
            "What those saved search units would have cost, from the price table.",
            ["team", "model"],
            registry=r,
        )
        self.ratelimit_rejections = Counter(
            "rerank_ratelimit_rejections",
            "Requests refused by a team rate limit.",
            ["team", "limit"],
            registry=r,
        )
        self.budget_rejections = Counter(
            "rerank_budget_rejections",
            "Requests refused because a team budget was used up.",
            ["team", "budget"],
            registry=r,
        )
        self.budget_downgrades = Counter(
            "rerank_budget_downgrades",
            "Requests served by the fast tier because a team budget was used up.",
            ["team", "budget"],
            registry=r,
        )
        self.governance_store_errors = Counter(
            "rerank_governance_store_errors",
            "Failed reads or writes of the limits and usage store (Redis).",
            ["store", "operation"],
            registry=r,
        )

        # The usage ledger (gateway.state.usage_ledger): events buffered per process.
        self.ledger_buffered = Gauge(
            "rerank_ledger_buffered_events",
            "Usage events held in memory, not yet written to the ledger (PostgreSQL).",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.ledger_oldest_s = Gauge(
            "rerank_ledger_oldest_event_age_seconds",
            "Age of the oldest usage event not yet written to the ledger (0: none).",
            multiprocess_mode="livemax",
            registry=r,
        )
        self.ledger_written = Counter(
            "rerank_ledger_events_written",
            "Usage events written to the ledger (a replayed event is written once).",
            registry=r,
        )
        self.ledger_dropped = Counter(
            "rerank_ledger_events_dropped",
            "Usage events the gateway could not keep: the buffer was full, or PostgreSQL was "
            "unreachable at exit with no ledger.spill_dir.",
            registry=r,
        )
        self.ledger_spilled = Counter(
            "rerank_ledger_events_spilled",
            "Usage events written to ledger.spill_dir at exit (replayed at the next start).",
            registry=r,
        )
        self.ledger_write_errors = Counter(
            "rerank_ledger_write_errors",
            "Failed batch writes to the ledger (the batch stays buffered and is retried).",
            registry=r,
        )
        self.budget_rebuilds = Counter(
            "rerank_budget_rebuilds",
            "Budget counters seeded from the ledger after the limits store lost them, by "
            "outcome (rebuilt, waited: another replica rebuilt, failed).",
            ["team", "outcome"],
            registry=r,
        )

        # Depth advice (gateway.state.depth): fleet-wide figures each worker reads back
        # from the shared store, for configured teams and models only.
        depth = ["team", "model"]
        self.depth_needed = Gauge(
            "rerank_depth_needed_documents",
            "The depth advice: how many of its first documents a team needs reranked to keep "
            "its top-k recall at the target (absent while there is no advice).",
            depth,
            multiprocess_mode="livemax",
            registry=r,
        )
        self.depth_sent = Gauge(
            "rerank_depth_sent_documents",
            "Documents a team sends per request (mean over the depth window).",
            depth,
            multiprocess_mode="livemax",
            registry=r,
        )
        self.depth_enforced = Gauge(
            "rerank_depth_enforced_documents",
            "The depth a team in enforce mode is cut to (0: not cut now).",
            depth,
            multiprocess_mode="livemax",
            registry=r,
        )
        self.depth_requests = Counter(
            "rerank_depth_requests",
            "Requests of teams in depth enforce mode, by action: cut (only the first "
            "documents reranked) or explore (full depth, to keep measuring).",
            ["team", "model", "action"],
            registry=r,
        )

        # Operator events (gateway.observe.events).
        self.operator_events = Counter(
            "rerank_operator_events",
            "Operator events logged, by event (breaker_opened, credentials_refused, "
            "budget_threshold_crossed, tier_downgraded, fallback_engaged, ...).",
            ["event"],
            registry=r,
        )
        self.breaker_transitions = Counter(
            "rerank_breaker_transitions",
            "Circuit breaker state changes per deployment, by the state entered.",
            ["deployment", "state"],
            registry=r,
        )
        self.credentials_refused = Counter(
            "rerank_credentials_refused",
            "Upstream calls whose credentials the deployment refused (401/403, expired).",
            ["deployment"],
            registry=r,
        )
        self.sign_ins = Counter(
            "rerank_admin_sign_ins",
            "Status-page sign-in attempts by outcome: ok, refused (a wrong key) or "
            "throttled (too many failures; not checked).",
            ["outcome"],
            registry=r,
        )
        for outcome in ("ok", "refused", "throttled"):  # zeros from the start, and the
            self.sign_ins.labels(outcome)  # worker's counter file made before any reader
        self.budget_alerts = Counter(
            "rerank_budget_alerts",
            "Budget thresholds crossed (once per team, budget, threshold and period).",
            ["team", "budget", "threshold"],
            registry=r,
        )
        self.alert_webhooks = Counter(
            "rerank_alert_webhooks",
            "Budget alert webhook deliveries by outcome (sent, failed, dropped).",
            ["outcome"],
            registry=r,
        )

        # Shadow quality evaluation (gateway.chain.shadow): how the served tier's ranking
        # agrees with the other tier's, per alias, team and direction (fast_vs_pro, ...).
        agreement = ["alias", "team", "direction"]
        self.shadow_ndcg = Histogram(
            "rerank_shadow_ndcg",
            "NDCG@k of the served ranking against the other tier's (k = top_n or 10).",
            agreement,
            buckets=SHARE_BUCKETS,
            registry=r,
        )
        self.shadow_overlap = Histogram(
            "rerank_shadow_overlap",
            "Share of the reference tier's top k that the served top k contains.",
            agreement,
            buckets=SHARE_BUCKETS,
            registry=r,
        )
        self.shadow_rank_correlation = Histogram(
            "rerank_shadow_rank_correlation",
            "Spearman rank correlation of the served and reference rankings.",
            agreement,
            buckets=(-0.5, 0, 0.25, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1),
            registry=r,
        )
        self.shadow_calls = Counter(
            "rerank_shadow_calls",
            "Shadow scorings by outcome: scored, skipped_cap (daily cost cap), skipped_rate "
            "(its rate limit), failed.",
            ["alias", "outcome"],
            registry=r,
        )
        self.shadow_cost_usd = Counter(
            "rerank_shadow_cost_usd",
            "What shadow scoring cost (billed to the gateway's _shadow/<alias> account).",
            ["alias"],
            registry=r,
        )
        self.shadow_guard = Gauge(
            "rerank_shadow_guard_stopped",
            "1 while an alias does not downgrade a team: fast's agreement fell below min_ndcg.",
            ["alias", "team"],
            multiprocess_mode="livemax",
            registry=r,
        )

    def samples(self, name: str) -> list[tuple[dict[str, str], float]]:
        """(labels, value) of every sample called `name`, across workers when several
        share the metrics directory (for the status page)."""
        return [
            (dict(sample.labels), float(sample.value))
            for family in self._registry().collect()
            for sample in family.samples
            if sample.name == name
        ]

    def exposition(self) -> bytes:
        """The text for /metrics: this process's registry, or all workers' files."""
        return generate_latest(self._registry())

    def _registry(self) -> CollectorRegistry:
        directory = os.environ.get(MULTIPROC_ENV)
        if not directory:
            return self.registry
        registry = CollectorRegistry()
        registry.register(_WorkerFiles(directory))
        return registry


class _WorkerFiles:
    """Every worker's samples (prometheus-client's MultiProcessCollector), but only from
    files that have been sized: a worker creating its file of a metric type leaves it
    empty for an instant (open, then truncate), and reading it then fails."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def collect(self) -> Iterable[Any]:
        files = glob.glob(os.path.join(self.directory, "*.db"))
        return multiprocess.MultiProcessCollector.merge(
            [f for f in files if _sized(f)], accumulate=True
        )


def _sized(path: str) -> bool:
    try:
        return os.path.getsize(path) > 0
    except OSError:  # gone since listed (a dead worker's live gauges)
        return False
