"""The score cache layer: answers what it knows, sends only the rest upstream.

Scores are per (query, document) pair, so a request is split: documents whose score is
cached are answered from the store, the others go inward (through `Flights`, which
shares in-flight documents between concurrent requests) and are stored on the way out.
`X-Cache` says what happened: `hit` (nothing sent upstream), `partial`, `miss`, or
`bypass` (cache off, `Cache-Control: no-store`, or a model whose scores depend on the
batch). Stores hold digests and scores only (see `policies.cache`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.chain.coalesce import Flights
from gateway.chain.job import Scored, ScoreJob, Scorer
from gateway.config import Config
from gateway.observe import tracing
from gateway.observe.logs import ThrottledWarning
from gateway.observe.metrics import Metrics
from gateway.state.catalog import Catalog
from gateway.state.governance import Governance
from policies.cache import KeySpace, MemoryStore, RedisStore, ScoreStore, TieredStore

_LOG_INTERVAL_S = 30.0


@dataclass(frozen=True)
class CacheSettings:
    """Per-model and per-team cache decisions, resolved once at startup."""

    families: dict[str, str]  # model -> family whose entries it shares
    ttl_s: dict[str, float]  # model -> how long its scores are kept
    isolated_teams: frozenset[str]  # teams whose entries nobody else sees
    uncacheable: frozenset[str]  # models whose scores depend on the whole batch

    @classmethod
    def from_config(cls, config: Config, catalog: Catalog) -> CacheSettings:
        models = {name: m for name, m in config.models.items() if name in catalog.deployments}
        return cls(
            families={name: m.cache_family or name for name, m in models.items()},
            ttl_s={name: m.cache_ttl_s or config.cache.ttl_s for name, m in models.items()},
            isolated_teams=frozenset(
                name for name, team in config.teams.items() if team.cache == "isolated"
            ),
            uncacheable=frozenset(name for name in models if catalog.batch_relative(name)),
        )


class CacheLayer:
    def __init__(
        self,
        inner: Scorer,
        store: ScoreStore | None,
        settings: CacheSettings,
        metrics: Metrics,
        governance: Governance | None = None,
    ) -> None:
        self.inner = inner
        self.governance = governance
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.keys = KeySpace(settings.families)
        self.flights = Flights(inner)
        # Metric children bound once, not looked up per request.
        self._lookups = {
            r: metrics.cache_lookups.labels(r) for r in ("hit", "partial", "miss", "bypass")
        }
        self._documents = {
            s: metrics.cache_documents.labels(s) for s in ("cache", "coalesced", "upstream")
        }

    async def score(self, job: ScoreJob) -> Scored:
        ctx = job.ctx
        store = self.store
        if (
            store is None
            or ctx.model in self.settings.uncacheable
            or "no-store" in ctx.cache_control
        ):
            return await self._bypass(job)
        scope = ctx.team if ctx.team in self.settings.isolated_teams else ""
        keys = self.keys.document_keys(
            ctx.model, scope, job.query, job.max_tokens_per_doc, job.documents
        )
        ttl_s = self.settings.ttl_s[ctx.model]
        fresh = "no-cache" in ctx.cache_control  # skip reading, still store what comes back
        found: list[float | None] = (
            [None] * len(keys) if fresh else await store.get_many(keys, ttl_s)
        )
        missing = [i for i, score in enumerate(found) if score is None]
        if not missing:
            await self._record(job, cached=len(keys), upstream=0, sent=())
            return Scored([s for s in found if s is not None], 0)

        async def write(written: Sequence[bytes], scores: Sequence[float]) -> None:
            await store.set_many(written, scores, ttl_s)

        # Keyed by digest, so a document repeated within the request is sent once.
        wanted = {keys[i]: job.documents[i] for i in missing}
        fetched = await self.flights.fetch(job, wanted, join=not fresh, write=write)
        scores = [fetched.scores[keys[i]] if s is None else s for i, s in enumerate(found)]
        upstream = sum(1 for i in missing if keys[i] in fetched.sent)
        sent = [wanted[key] for key in fetched.sent]
        await self._record(job, len(keys) - len(missing), upstream, sent)
        return Scored(scores, fetched.search_units)

    async def _bypass(self, job: ScoreJob) -> Scored:
        scored = await self.inner.score(job)
        job.ctx.cache_status = "bypass"
        tracing.event("cache.lookup", status="bypass", documents=len(job.documents))
        self._lookups["bypass"].inc()
        self._documents["upstream"].inc(len(job.documents))
        return scored

    async def _record(self, job: ScoreJob, cached: int, upstream: int, sent: Sequence[str]) -> None:
        """Count one answered lookup; `upstream` counts positions, `sent` holds the unique
        documents this request itself sent upstream."""
        total = len(job.documents)
        status = "hit" if upstream == 0 else "miss" if upstream == total else "partial"
        job.ctx.cache_status = status
        tracing.event(
            "cache.lookup", status=status, documents=total, cached=cached, upstream=upstream
        )
        self._lookups[status].inc()
        for source, count in (
            ("cache", cached),
            ("coalesced", total - cached - upstream),
            ("upstream", upstream),
        ):
            if count:
                self._documents[source].inc(count)
        if self.governance is None:
            return
        # The same estimate the governor reserves with, so savings and spend add up.
        rules = self.governance.rules
        saved = rules.estimate(job.query, job.documents, job.max_tokens_per_doc) - rules.estimate(
            job.query, sent, job.max_tokens_per_doc
        )
        if saved > 0:  # counted in metrics and usage reports, in units and dollars
            await self.governance.usage.record_saved(job.ctx.team, job.ctx.model, saved)


class ErrorReporter:
    """Counts every store failure; logs at most one warning per interval."""

    def __init__(
        self,
        metrics: Metrics,
        interval_s: float = _LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.warn = ThrottledWarning("cache_unavailable", interval_s, clock)

    def __call__(self, backend: str, exc: BaseException) -> None:
        self.metrics.cache_errors.labels(backend).inc()
        self.warn(
            backend=backend,
            error=exc.__class__.__name__,
            detail=str(exc)[:200],
            effect="treated as misses; retried after cache.redis_backoff_s",
        )


def build_store(config: Config, metrics: Metrics) -> ScoreStore | None:
    """The store `cache.backend` names, or None when caching is off."""
    cache = config.cache
    if cache.backend == "none":
        return None
    if cache.backend == "memory":
        return MemoryStore(cache.max_entries, cache.max_bytes)
    assert config.state.redis_url  # enforced by the config's cross-check
    client = aioredis.Redis.from_url(
        config.state.redis_url,
        socket_timeout=cache.redis_timeout_s,
        socket_connect_timeout=cache.redis_timeout_s,
        retry=Retry(NoBackoff(), 0),  # a failed call is a miss; retries would only add latency
    )
    shared = RedisStore(
        client,
        key_prefix=cache.key_prefix,
        timeout_s=cache.redis_timeout_s,
        backoff_s=cache.redis_backoff_s,
        on_error=ErrorReporter(metrics),
    )
    if cache.backend == "redis":
        return shared
    return TieredStore(MemoryStore(cache.max_entries, cache.max_bytes), shared)
