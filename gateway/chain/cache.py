"""The score cache layer: answers what it knows, sends only the rest upstream.

Scores are per (query, document) pair, so a request is split: documents whose score is
cached are answered from the store, the others go inward (through `Flights`, which
shares in-flight documents between concurrent requests) and are stored on the way out.
Keys name `Facts.model`, the model that scores the job: a layer that serves another
model runs this layer again with new facts, so scores never land under another model.
`X-Cache` says what happened: `hit` (nothing sent upstream), `partial`, `miss`, or
`bypass` (cache off, `Cache-Control: no-store`, a listwise model, whose scores depend on
the batch, or a request for relevant spans, which the stores do not hold). A bypassed
job is neither split nor coalesced: it goes inward whole. Stores hold digests and
scores only (see `policies.cache`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gateway.chain.coalesce import Fleet, Flights
from gateway.chain.job import Scored, ScoreJob, Scorer
from gateway.observe import tracing
from gateway.observe.metrics import Metrics
from gateway.state.score_cache import CacheSettings
from gateway.state.usage import Payer
from policies.cache import KeySpace, ScoreStore


class Savings(Protocol):
    """Told, per answered lookup, which documents the request itself sent upstream; the
    rest were saved by the cache (or by a concurrent request's call)."""

    async def saved(
        self,
        payer: Payer,
        model: str,
        query: str,
        documents: Sequence[str],
        sent: Sequence[str],
        max_tokens_per_doc: int | None,
        hits: int,
    ) -> None: ...


class CacheLayer:
    def __init__(
        self,
        inner: Scorer,
        store: ScoreStore | None,
        settings: CacheSettings,
        metrics: Metrics,
        savings: Savings | None = None,
        fleet: Fleet | None = None,
    ) -> None:
        self.inner = inner
        self.savings = savings
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.keys = KeySpace(settings.families, slot_tag=settings.slot_tagged)
        self.fleet = fleet
        self.flights = Flights(inner, fleet)
        # Metric children bound once, not looked up per request.
        self._lookups = {
            r: metrics.cache_lookups.labels(r) for r in ("hit", "partial", "miss", "bypass")
        }
        self._documents = {
            s: metrics.cache_documents.labels(s) for s in ("cache", "coalesced", "upstream")
        }

    async def score(self, job: ScoreJob) -> Scored:
        facts = job.facts
        store = self.store
        if (
            store is None
            or facts.model in self.settings.uncacheable
            or job.spans is not None
            or "no-store" in facts.cache_control
        ):
            return await self._bypass(job)
        scope = facts.team if facts.team in self.settings.isolated_teams else ""
        keys = self.keys.document_keys(
            facts.model, scope, job.query, job.max_tokens_per_doc, job.documents
        )
        ttl_s = self.settings.ttl_s[facts.model]
        fresh = "no-cache" in facts.cache_control  # skip reading, still store what comes back
        found: list[float | None] = (
            [None] * len(keys) if fresh else await store.get_many(keys, ttl_s)
        )
        misses = found.count(None)
        if not misses:
            await self._record(job, cached=len(keys), upstream=0, sent=())
            return Scored([s for s in found if s is not None], 0)

        async def write(
            written: Sequence[bytes], scores: Sequence[float], lease: bytes | None
        ) -> None:
            if lease is not None and self.fleet is not None:  # leases come from the fleet
                await self.fleet.store.set_many(written, scores, ttl_s, lease)
            else:
                await store.set_many(written, scores, ttl_s)

        # Keyed by digest, so a document repeated within the request is sent once. A full
        # miss (the usual case) is mapped in C.
        if misses == len(keys):
            wanted = dict(zip(keys, job.documents, strict=True))
        else:
            wanted = {
                k: doc for k, doc, s in zip(keys, job.documents, found, strict=True) if s is None
            }
        fetched = await self.flights.fetch(job, wanted, join=not fresh, write=write)
        if misses == len(keys):
            scores = list(map(fetched.scores.__getitem__, keys))
        else:
            scores = [
                fetched.scores[k] if s is None else s for k, s in zip(keys, found, strict=True)
            ]
        # Positions this request sent upstream itself: all missing ones unless it joined
        # other requests' flights for some.
        upstream, sent = misses, list(wanted.values())
        if len(fetched.sent) < len(wanted):
            upstream = sum(
                1 for k, s in zip(keys, found, strict=True) if s is None and k in fetched.sent
            )
            sent = [wanted[key] for key in fetched.sent]
        await self._record(job, len(keys) - misses, upstream, sent)
        return Scored(scores, fetched.search_units, fetched.tokens, fetched.calls)

    async def _bypass(self, job: ScoreJob) -> Scored:
        scored = await self.inner.score(job)
        job.report.cache_status = "bypass"
        tracing.event("cache.lookup", status="bypass", documents=len(job.documents))
        self._lookups["bypass"].inc()
        self._documents["upstream"].inc(len(job.documents))
        return scored

    async def _record(self, job: ScoreJob, cached: int, upstream: int, sent: Sequence[str]) -> None:
        """Count one answered lookup; `upstream` counts positions, `sent` holds the unique
        documents this request itself sent upstream."""
        total = len(job.documents)
        status = "hit" if upstream == 0 else "miss" if upstream == total else "partial"
        job.report.cache_status = status
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
        if len(sent) < total and self.savings is not None:
            facts = job.facts
            await self.savings.saved(
                facts.payer,
                facts.model,
                job.query,
                job.documents,
                sent,
                job.max_tokens_per_doc,
                hits=total - upstream,
            )
