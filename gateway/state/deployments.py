"""The routing state of one gateway process, and the decisions taken before scoring.

`DeploymentState` is built once at startup from the config: per-deployment health (breaker,
latency model, in-flight count), the retry budget, the failover executor and each
model's routing settings. Per request it resolves the model (a tiered alias picks
pro or fast from the latency budget) and the deadline. `snapshot()` is what
`GET /admin/deployments` shows. A config reload builds a new one (breakers and
latency models start afresh).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.config import Config, ModelConfig
from gateway.errors import bad_request
from gateway.observe import events, tracing
from gateway.observe.metrics import Metrics
from gateway.state.catalog import Catalog
from policies.routing.breaker import HALF_OPEN, OPEN, STATE_NAMES
from policies.routing.failover import Failover, HedgeSettings
from policies.routing.health import HealthBook
from policies.routing.latency import LatencyPrior, LatencySettings
from policies.routing.latency_priors import family_prior
from policies.routing.retry_budget import RetryBudget
from policies.routing.tier_choice import TierBackup, TierEstimate, TierSelector
from providers.types import Deployment

BUDGET_HEADER = "X-Latency-Budget-Ms"
HEDGE_QUANTILE = 0.95  # hedge when the first call is slower than 95% of its peers
TIER_QUANTILE = 0.9


@dataclass(frozen=True, slots=True)
class ModelRouting:
    """How one model with deployments is routed."""

    deployments: list[Deployment]
    max_attempts: int
    hedge: HedgeSettings
    fallback: str
    timeout_s: float | None
    listwise: bool = False  # scored together: the call is never split


@dataclass(frozen=True, slots=True)
class Resolution:
    model: str  # the concrete model to serve
    deadline: float  # time.monotonic()
    warnings: list[str]
    backup: TierBackup | None = None


class DeploymentState:
    def __init__(
        self,
        config: Config,
        catalog: Catalog,
        metrics: Metrics,
        clock: Callable[[], float] | None = None,
        stops_downgrade: Callable[[str, str], bool] = lambda alias, team: False,
    ) -> None:
        """`clock` drives breakers, the retry budget and latency decay (tests inject one);
        deadlines always use time.monotonic(). `stops_downgrade(alias, team)`: the shadow
        guard's verdict, True when the alias must not downgrade that team."""
        clock = clock or time.monotonic
        settings = config.routing
        self.metrics = metrics
        self.events = events.Events(metrics)
        self._breaker_states: dict[str, int] = {}
        self.health = HealthBook(settings.breaker, settings.latency, clock, self._breaker_changed)
        self.models: dict[str, ModelRouting] = {}
        self.aliases: dict[str, ModelConfig] = {}
        self.served_models: dict[str, list[str]] = {}  # deployment -> gateway models
        for name, model in config.models.items():
            if model.tiers is not None:
                self.aliases[name] = model
                continue
            deployments = catalog.deployments[name]
            for entry, deployment in zip(model.deployments, deployments, strict=True):
                configured = entry.latency_prior_ms or model.latency_prior_ms
                prior, source = _prior(configured, deployment.model, settings.latency)
                self.health.add(deployment.name, prior, source)
                self.served_models.setdefault(deployment.name, []).append(name)
            self.models[name] = ModelRouting(
                deployments,
                model.max_attempts,
                model.hedge,
                model.fallback,
                model.timeout_s,
                catalog.listwise(name),
            )
        self.team_budgets = {
            team: tc.latency_budget_ms
            for team, tc in config.teams.items()
            if tc.latency_budget_ms is not None
        }
        # A team's own answer in an outage, over each model's `fallback`.
        self.team_fallbacks = {
            team: tc.fallback for team, tc in config.teams.items() if tc.fallback is not None
        }
        self.server_timeout_s = config.server.request_timeout_s
        self.retry_budget = RetryBudget(settings.retry_budget, clock)
        self.failover = Failover(self.health, self.retry_budget, settings.backoff)
        self.selector = TierSelector(settings.overhead_ms / 1000.0)
        self.stops_downgrade = stops_downgrade

    def _breaker_changed(self, name: str, state: int) -> None:
        """Export the state; log and count a change (not the first state, at startup)."""
        self.metrics.breaker_state.labels(name).set(state)
        cooldown = self.health[name].breaker.cooldown_remaining() if state == OPEN else None
        probe_at = 0.0 if cooldown is None else time.time() + cooldown
        self.metrics.breaker_probe_at.labels(name).set(probe_at)
        before = self._breaker_states.get(name)
        self._breaker_states[name] = state
        if before is None or before == state:
            return
        self.metrics.breaker_transitions.labels(name, STATE_NAMES[state]).inc()
        calls, error_rate = self.health[name].breaker.recent()
        settings = self.health.breaker_settings
        if state == OPEN:
            event, level = events.BREAKER_OPENED, "warning"
            if before == HALF_OPEN:
                reason = "probe_failed"
            elif calls >= settings.min_calls and error_rate >= settings.error_rate:
                reason = "error_rate"
            else:
                reason = "consecutive_failures"
        elif state == HALF_OPEN:
            event, level, reason = events.BREAKER_HALF_OPEN, "info", "cooldown_elapsed"
        else:
            event, level, reason = events.BREAKER_CLOSED, "info", "probes_succeeded"
        self.events.emit(
            event,
            level,
            deployment=name,
            reason=reason,
            models=self.served_models.get(name, []),
            recent_calls=calls,
            recent_error_rate=round(error_rate, 4),
            cooldown_s=settings.cooldown_s if state == OPEN else None,
        )

    def fallback_modes(self) -> dict[str, str]:
        return {name: m.fallback for name, m in self.models.items()}

    def resolve(
        self,
        model: str,
        team: str,
        budget_header: str | None,
        query: str,
        texts: Sequence[str],
        elapsed_s: float,
    ) -> Resolution:
        """The concrete model and the deadline (`elapsed_s` already spent on the request)."""
        header_ms = parse_budget(budget_header)
        warnings: list[str] = []
        backup = None
        alias = self.aliases.get(model)
        if alias is not None and alias.tiers is not None:
            budget_ms = header_ms or self.team_budgets.get(team) or alias.latency_budget_ms
            docs, chars = len(texts), len(query) + sum(map(len, texts))
            choice = self.selector.choose(
                model,
                alias.tiers,
                budget_ms / 1000.0 if budget_ms else None,
                lambda m: self.estimate(m, docs, chars),
                downgrade=not self.stops_downgrade(model, team),
            )
            self.metrics.tier_selections.labels(model, choice.tier, choice.reason).inc()
            tracing.event("tier.choice", alias=model, tier=choice.tier, reason=choice.reason)
            if choice.warning:
                warnings.append(choice.warning)
                self.events.repeating(
                    events.TIER_NONE_FIT, model, alias=model, tier=choice.tier, budget_ms=budget_ms
                )
            model, backup = choice.model, choice.backup
        limit_s = self.models[model].timeout_s
        if limit_s is None and alias is not None:
            limit_s = alias.timeout_s
        if limit_s is None:
            limit_s = self.server_timeout_s
        deadline_s = min(limit_s, header_ms / 1000.0) if header_ms else limit_s
        return Resolution(model, time.monotonic() - elapsed_s + deadline_s, warnings, backup)

    def estimate(self, model: str, docs: int, chars: int) -> TierEstimate:
        """The best predicted p90 among the deployments whose breaker is not open."""
        best = TierEstimate(available=False, p90_s=float("inf"), confident=False)
        for deployment in self.models[model].deployments:
            health = self.health[deployment.name]
            if health.breaker.state == OPEN:
                continue
            p = health.latency.estimate(docs, chars, TIER_QUANTILE)
            if not best.available or p.seconds < best.p90_s:
                best = TierEstimate(True, p.seconds, p.confident)
        return best

    def typical_s(self, deployment: Deployment, docs: int, chars: int) -> float:
        """The median latency expected of a call of this size (the prior while unknown)."""
        return self.health[deployment.name].latency.estimate(docs, chars, 0.5).seconds

    def hedge_delay_s(
        self, model: ModelRouting, first: Deployment, docs: int, chars: int
    ) -> float | None:
        if not model.hedge.enabled:
            return None
        if model.hedge.delay_ms is not None:
            return model.hedge.delay_ms / 1000.0
        return self.health[first.name].latency.predict(docs, chars, HEDGE_QUANTILE)

    def usable(self, deployment: Deployment) -> bool:
        return self.health[deployment.name].usable(deployment)

    def servable(self) -> tuple[bool, list[str]]:
        """(can some model be served, the deployments whose breaker is open). A model can
        while one of its deployments' breakers is not open or it has a fallback; an alias
        can when one of its tiers can."""
        open_now = sorted(n for n, h in self.health.items() if h.breaker.state == OPEN)
        closed = set(open_now)
        can = any(
            m.fallback != "error" or any(d.name not in closed for d in m.deployments)
            for m in self.models.values()
        )
        return can or not self.models, open_now

    def snapshot(self) -> dict[str, object]:
        """Per-deployment state for operators (GET /admin/deployments)."""
        deployments: dict[str, object] = {}
        for name, health in self.health.items():
            calls, error_rate = health.breaker.recent()
            deployments[name] = {
                "models": self.served_models.get(name, []),
                "state": STATE_NAMES[health.breaker.state],
                "cooldown_remaining_s": round(health.breaker.cooldown_remaining(), 3),
                "calls": calls,
                "error_rate": round(error_rate, 4),
                "in_flight": health.in_flight,
                "latency_ms": health.latency.quantiles(),
                "latency_samples": health.latency.samples(),
                "latency_prior_ms": health.latency.describe_prior(),
            }
        return {"deployments": deployments, "retry_budget": self.retry_budget.snapshot()}


def _prior(
    configured: LatencyPrior | None, upstream_model: str, settings: LatencySettings
) -> tuple[LatencyPrior | None, str]:
    """A deployment's latency prior and where it comes from: the config, its model
    family's default, or (None) the broad default."""
    if configured is not None:
        return configured, "configured"
    family = family_prior(upstream_model) if settings.family_priors else None
    if family is not None:
        return family.prior, f"default for {family.family}"
    return None, "broad default"


def parse_budget(value: str | None) -> int | None:
    """X-Latency-Budget-Ms: a positive whole number of milliseconds, or not given."""
    if value is None:
        return None
    text = value.strip()
    # The length check comes first: int() refuses strings of thousands of digits.
    if not (text.isascii() and text.isdigit()) or len(text) > 9 or int(text) <= 0:
        rule = f"the {BUDGET_HEADER} header must be a positive whole number of milliseconds"
        error = bad_request(
            f"{rule}, at most 9 digits (got {value[:40]!r}); leave it out to use the default"
        )
        error.log_message = f"invalid request: {rule}"  # the log gets no header values
        raise error
    return int(text)
