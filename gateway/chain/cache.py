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

A team with `hide_cross_team_hits` shares entries like any team but is told only what its
own traffic could teach it. Beside each shared entry it keeps a copy of its own
(`KeySpace.seen_keys`, read in the same round trip); a document without one counts as a
miss for it. When every such document has a shared entry, nothing is sent upstream: the
scores are replayed through the budget and dispatch layers, which answer them as a call
(rate limited, billed the estimate, from a deployment, after its typical latency). When
some have none, all of them are sent upstream, so the call, its bill and its timing are
real. Either way the team's own copies are written. Such a team joins no other request's
flight (in this process or across processes), since a joined flight is a hit too. Teams
without the setting pay nothing for it on a hit (the set membership the isolated check
cost before) and one function call on a miss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, cast

from gateway.chain.coalesce import Fleet, Flights, Writer
from gateway.chain.job import Scored, ScoreJob, Scorer
from gateway.observe import tracing
from gateway.observe.metrics import Metrics
from gateway.state.score_cache import CacheSettings
from gateway.state.usage import Payer
from policies.cache import KeySpace, ScoreStore

# How a team uses the shared entries.
SHARED, ISOLATED, PRIVATE = "shared", "isolated", "private"

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
        # How each team uses the shared entries: teams in `_modes` as it says, the others
        # `_default_mode`. Checked with `in` first: teams without a mode of their own pay
        # what the isolated check cost before (a set membership, not a call).
        self._modes = {team: ISOLATED for team in settings.isolated_teams}
        self._modes.update((team, PRIVATE) for team in settings.private_teams)
        self._default_mode = SHARED
        if settings.private_default:
            self._default_mode = PRIVATE
            self._modes.update((t, SHARED) for t in settings.known_teams if t not in self._modes)
        self._moded = frozenset(self._modes)
        # Metric children bound once, not looked up per request.
        self._lookups = {
            r: metrics.cache_lookups.labels(r) for r in ("hit", "partial", "miss", "bypass")
        }
        self._documents = {
            s: metrics.cache_documents.labels(s)
            for s in ("cache", "coalesced", "upstream", "replayed")
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
        team = facts.team
        mode = self._modes[team] if team in self._moded else self._default_mode
        scope = team if mode is ISOLATED else ""
        keys = self.keys.document_keys(
            facts.model, scope, job.query, job.max_tokens_per_doc, job.documents
        )
        ttl_s = self.settings.ttl_s[facts.model]
        fresh = "no-cache" in facts.cache_control  # skip reading, still store what comes back
        if mode is PRIVATE:
            return await self._private(job, store, keys, ttl_s, fresh)
        found: list[float | None] = (
            [None] * len(keys) if fresh else await store.get_many(keys, ttl_s)
        )
        misses = found.count(None)
        if not misses:
            await self._record(job, cached=len(keys), upstream=0, sent=())
            # No None in it (no misses), and the store's list is this request's own.
            return Scored(cast(list[float], found), 0)
        write = self._writer(store, ttl_s)
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

    async def _private(
        self, job: ScoreJob, store: ScoreStore, keys: list[bytes], ttl_s: float, fresh: bool
    ) -> Scored:
        """A team told only what its own traffic could teach it (see the module's text)."""
        seen = self.keys.seen_keys(job.facts.team, keys)
        count = len(keys)
        found = [None] * 2 * count if fresh else await store.get_many(seen + keys, ttl_s)
        own, shared = found[:count], found[count:]
        known = count - own.count(None)
        if known == count:
            await self._record(job, cached=count, upstream=0, sent=())
            return Scored([s for s in own if s is not None], 0)
        copies = dict(zip(keys, seen, strict=True))
        unseen = {k: doc for k, doc, s in zip(keys, job.documents, own, strict=True) if s is None}
        stored = {k: s for k, s in zip(keys, shared, strict=True) if s is not None}
        positions = count - known  # every unseen position counts as sent, from its view
        if unseen.keys() <= stored.keys():  # all scored before, by others: replay them
            replay = job.replaying(list(unseen.values()), [stored[k] for k in unseen])
            usage = await self.inner.score(replay)
            job.report.add_upstream(replay.report)
            await store.set_many([copies[k] for k in unseen], usage.scores, ttl_s)
            fetched_scores = dict(zip(unseen, usage.scores, strict=True))
            replayed = positions
        else:
            write = self._writer(store, ttl_s, copies)
            fetched = await self.flights.fetch(job, unseen, join=False, write=write, alone=True)
            fetched_scores = fetched.scores
            usage = Scored([], fetched.search_units, fetched.tokens, fetched.calls)
            replayed = 0
        scores = [
            s if s is not None else fetched_scores[k] for k, s in zip(keys, own, strict=True)
        ]
        await self._record(job, known, positions, list(unseen.values()), replayed)
        return Scored(scores, usage.search_units, usage.tokens, usage.calls)

    def _writer(
        self, store: ScoreStore, ttl_s: float, copies: dict[bytes, bytes] | None = None
    ) -> Writer:
        """How a flight stores its scores: with its fleet lease dropped in the same round
        trip, and with a private team's own copies (`copies`: shared key -> its copy)."""

        async def write(
            written: Sequence[bytes], scores: Sequence[float], lease: bytes | None
        ) -> None:
            if copies is not None:
                written = [*written, *(copies[k] for k in written)]
                scores = [*scores, *scores]
            if lease is not None and self.fleet is not None:  # leases come from the fleet
                await self.fleet.store.set_many(written, scores, ttl_s, lease)
            else:
                await store.set_many(written, scores, ttl_s)

        return write

    async def _bypass(self, job: ScoreJob) -> Scored:
        scored = await self.inner.score(job)
        job.report.cache_status = "bypass"
        tracing.event("cache.lookup", status="bypass", documents=len(job.documents))
        self._lookups["bypass"].inc()
        self._documents["upstream"].inc(len(job.documents))
        return scored

    async def _record(
        self, job: ScoreJob, cached: int, upstream: int, sent: Sequence[str], replayed: int = 0
    ) -> None:
        """Count one answered lookup; `upstream` counts positions, `sent` holds the unique
        documents this request itself sent upstream; `replayed` of the `upstream` positions
        were answered from other teams' entries (for a team that must not know)."""
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
            ("upstream", upstream - replayed),
            ("replayed", replayed),
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
