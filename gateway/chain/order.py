"""The scoring chain, declared once: the layers a job passes through, outermost first.

    fallback -> tier race -> downgrade -> cache (+ coalescing) -> budget -> dispatch

Why each layer sits where it does:

- **fallback** is outermost: it answers (first-stage order or the offline ranker) when
  nothing inside could, and since it is outside the cache a degraded answer is never
  stored as a score.
- **tier race** starts an alias's fast tier when pro runs late. Each tier is a job of its
  own with facts naming its model, so everything inside sees one model per job.
- **downgrade** catches the ledger's `Downgrade` signal (a team over budget, an alias
  with a fast tier) and runs the layers below again with the fast tier's facts. It must
  sit outside the cache: the cache then looks up and stores under the model that
  actually scores, never fast scores under the pro model's keys.
- **cache** answers the documents it knows and sends only the rest inward; identical
  concurrent misses share one call (coalescing is private to it: `chain.coalesce`).
  It sits outside the budget so that cache hits are neither rate limited nor billed.
- **budget** reserves once per job for what goes upstream and settles afterwards; outside
  dispatch, so retries, hedges and failover inside are never rate limited twice.
- **dispatch** is terminal: it owns attempt order, retries, hedges and circuit breakers
  across the model's deployments.

`build_layers` folds `LAYERS` around dispatch; the app's wiring takes the outermost layer
as the pipeline's scorer and `SHADOW_ENTRY` as shadow scoring's, and nothing else knows
the order.

`Entries` says where a request's job enters: a job that names no alias (so no tier to
race or downgrade to) of a (team, model) whose fallback is `error` enters at the cache,
below three layers that could only pass it on. Decided once per (team, model) and kept,
so a request pays one dictionary lookup instead of three layers' checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.chain.budget import BudgetLayer
from gateway.chain.cache import CacheLayer
from gateway.chain.coalesce import Fleet
from gateway.chain.dispatch import Dispatch
from gateway.chain.downgrade import DowngradeLayer
from gateway.chain.fallback import ERROR, Fallback
from gateway.chain.job import Facts, Scorer
from gateway.chain.tier_race import TierRace
from gateway.errors import SCRUB_PATTERNS, Scrubber
from gateway.observe.metrics import Metrics
from gateway.state.accounts import Accounts
from gateway.state.deployments import DeploymentState
from gateway.state.score_cache import CacheSettings
from gateway.state.usage import UsageRecorder
from policies.cache import RedisBase, ScoreStore, TieredStore
from policies.money.billing import BillingRules


@dataclass(frozen=True)
class ChainParts:
    """What the layers are built from (one gateway's state)."""

    metrics: Metrics
    deployments: DeploymentState
    accounts: Accounts
    usage: UsageRecorder  # what the cache saved is recorded as usage
    rules: BillingRules  # estimates for upstreams that report no usage
    cache_store: ScoreStore | None
    cache_settings: CacheSettings
    scrub: Scrubber = SCRUB_PATTERNS  # what of an upstream's error text a caller may read


@dataclass(frozen=True)
class Layer:
    name: str
    build: Callable[[Scorer, ChainParts], Scorer]


def _cache(inner: Scorer, parts: ChainParts) -> Scorer:
    return CacheLayer(
        inner, parts.cache_store, parts.cache_settings, parts.metrics, parts.usage, _fleet(parts)
    )


def _fleet(parts: ChainParts) -> Fleet | None:
    """Single flight across processes, when the store is shared and it is on."""
    store, settings = parts.cache_store, parts.cache_settings
    if settings.fleet_wait_s is None or not isinstance(store, (RedisBase, TieredStore)):
        return None
    return Fleet(store, settings.fleet_wait_s, settings.fleet_poll_s, parts.metrics)


LAYERS: tuple[Layer, ...] = (
    Layer(
        "fallback",
        lambda inner, p: Fallback(
            inner, p.deployments.fallback_modes(), p.metrics, p.deployments.team_fallbacks
        ),
    ),
    Layer("tier_race", lambda inner, p: TierRace(inner, p.metrics)),
    Layer("downgrade", lambda inner, p: DowngradeLayer(inner, p.accounts)),
    Layer("cache", _cache),
    Layer("budget", lambda inner, p: BudgetLayer(inner, p.accounts)),
)


# Shadow scoring (gateway.chain.shadow) enters here: below the tier race, since a shadow
# job has its model chosen already, and through the cache and the budget like any job.
SHADOW_ENTRY = "downgrade"


def build_layers(parts: ChainParts) -> dict[str, Scorer]:
    """Each layer by name, wrapping all those after it (one set of instances)."""
    scorer: Scorer = Dispatch(
        parts.deployments, parts.metrics, billing=parts.rules, scrub=parts.scrub
    )
    built: dict[str, Scorer] = {"dispatch": scorer}
    for layer in reversed(LAYERS):
        scorer = layer.build(scorer, parts)
        built[layer.name] = scorer
    return built


# Where a job that no layer above it can act on enters (see `Entries`).
DIRECT_ENTRY = "cache"


class Entries:
    """Where each job enters the chain built by `build_layers` (see the module's text).

    What each skipped layer would have done with such a job, so skipping it changes
    nothing: the fallback answers only when its mode (the team's, else the model's) is
    not `error`, and that mode is read from the fallback layer itself; the tier race acts
    only on a job with a tier backup; the downgrade only on a job that names an alias
    (the team account raises its signal for those only)."""

    def __init__(self, built: dict[str, Scorer]) -> None:
        self.full = built[LAYERS[0].name]
        self.direct = built[DIRECT_ENTRY]
        fallback = built["fallback"]
        assert isinstance(fallback, Fallback)
        self._fallback = fallback
        self._by_pair: dict[tuple[str, str], Scorer] = {}

    def scorer(self, facts: Facts) -> Scorer:
        if facts.alias is not None or facts.backup is not None:
            return self.full  # a tier race or a downgrade may act on it
        pair = (facts.team, facts.model)
        found = self._by_pair.get(pair)
        if found is None:  # once per (team, model): teams and models are few
            fallback = self._fallback
            mode = fallback.team_modes.get(facts.team) or fallback.modes.get(facts.model, ERROR)
            found = self._by_pair[pair] = self.full if mode != ERROR else self.direct
        return found
