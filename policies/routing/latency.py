"""An online latency model per deployment: how long a call of a given size takes.

Requests fall into a few size classes by documents count and total characters (the
larger of the two decides). Each class keeps a histogram of observed latencies with
exponentially decaying weights (half-life `half_life_s`: an observation counts half
as much as a new one after that long), read at a high quantile (p90 for tier
selection, p95 for hedging).

Learning starts with the first observation. A prediction blends the prior
`base_ms + per_doc_ms * docs + per_kchar_ms * kchars` (the configured one, a default
for a known model family from `policies.routing.latency_priors`, or else `BROAD_DEFAULT`) with
the observed quantile, as a weighted geometric mean: the observations weigh as many as
they are (decayed, so stale ones count less), the prior as `weight` observations,
fading linearly to nothing as the observations reach `min_samples`. So three 400 ms
calls already outweigh a 100 ms guess. From `min_samples` (recent) observations on,
the size class's own histogram decides alone and the prediction is `confident`; a
class with too few uses all sizes pooled first.

The geometric mean because latencies are skewed: halfway between 100 ms and 400 ms
is 200 ms, a factor of two from each, not 250 ms.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from annotated_types import Ge

# Size class boundaries: a call with at most DOCS[i] documents and CHARS[i] characters
# is in class i (or a higher class if either measure is larger).
_DOC_BOUNDS = (10, 50, 200, 1000)
_CHAR_BOUNDS = (5_000, 25_000, 100_000, 500_000)
CLASSES = len(_DOC_BOUNDS) + 1

# Log-spaced histogram bins from 1 ms to ~100 s, each 15% wider than the one before.
_LOW_S = 0.001
_RATIO = 1.15
_LOG_RATIO = math.log(_RATIO)
_BINS = math.ceil(math.log(100_000) / _LOG_RATIO) + 1
# Forward decay: weights grow as 2^(age/half-life) instead of old ones shrinking;
# rescale before the exponent gets large.
_RESCALE_AT = 64.0


@dataclass
class LatencyPrior:
    """What a call is expected to take before the gateway has seen enough of them."""

    base_ms: Annotated[float, Ge(0.0)] = 100.0
    per_doc_ms: Annotated[float, Ge(0.0)] = 0.0
    per_kchar_ms: Annotated[float, Ge(0.0)] = 0.0
    # How many observations the prior is worth while there are few (see the module doc).
    weight: Annotated[float, Ge(0.0)] = 3.0

    def predict_s(self, docs: int, chars: int) -> float:
        return (self.base_ms + self.per_doc_ms * docs + self.per_kchar_ms * chars / 1000) / 1000


# The prior of a deployment that has none configured and no known model family: a
# guess of a typical hosted reranker, worth one observation, so the first calls decide.
BROAD_DEFAULT = LatencyPrior(base_ms=250.0, per_doc_ms=1.0, per_kchar_ms=1.0, weight=1.0)


@dataclass
class LatencySettings:
    half_life_s: Annotated[float, Ge(0.1)] = 60.0
    min_samples: Annotated[int, Ge(1)] = 10
    # Use the default priors of known model families (policies.routing.latency_priors) for
    # deployments without a configured latency_prior_ms.
    family_priors: bool = True


@dataclass(frozen=True, slots=True)
class Prediction:
    """A latency prediction and how much it rests on."""

    seconds: float
    samples: float  # recent (decayed) observations behind it; 0: the prior alone
    confident: bool  # at least min_samples recent observations
    broad: bool = False  # the broad default alone: nothing is known about this deployment


def size_class(docs: int, chars: int) -> int:
    return max(bisect.bisect_left(_DOC_BOUNDS, docs), bisect.bisect_left(_CHAR_BOUNDS, chars))


class DecayedHistogram:
    """Latencies in log-spaced bins; weights are relative, so quantiles need no decay."""

    __slots__ = ("bins", "count", "total")

    def __init__(self) -> None:
        self.bins = [0.0] * _BINS
        self.total = 0.0
        self.count = 0  # observations, undecayed

    def add(self, seconds: float, weight: float) -> None:
        i = (
            0
            if seconds <= _LOW_S
            else min(_BINS - 1, int(math.log(seconds / _LOW_S) / _LOG_RATIO) + 1)
        )
        self.bins[i] += weight
        self.total += weight
        self.count += 1

    def weight_at(self, current: float) -> float:
        """Observations counted with their decay: `current` is the weight of a new one."""
        return self.total / current

    def scale(self, factor: float) -> None:
        self.bins = [w * factor for w in self.bins]
        self.total *= factor

    def quantile(self, q: float) -> float | None:
        if self.total <= 0:
            return None
        target = q * self.total
        seen = 0.0
        for i, weight in enumerate(self.bins):
            if weight and seen + weight >= target:
                # Interpolate geometrically inside the bin [low, high].
                high = _LOW_S * _RATIO**i
                low = high / _RATIO if i else 0.0
                frac = (target - seen) / weight
                return low + (high - low) * frac if i == 0 else low * (high / low) ** frac
            seen += weight
        return _LOW_S * _RATIO ** (_BINS - 1)


class LatencyModel:
    def __init__(
        self,
        settings: LatencySettings,
        prior: LatencyPrior | None,
        clock: Callable[[], float],
        prior_source: str = "configured",
    ) -> None:
        """`prior` None: the broad default. `prior_source` says where it came from
        (for operators: "configured", a model family's name)."""
        self.settings = settings
        self.prior = prior or BROAD_DEFAULT
        self.prior_source = prior_source if prior is not None else "broad default"
        self.clock = clock
        self._t0 = clock()
        self._classes = [DecayedHistogram() for _ in range(CLASSES)]
        self._pooled = DecayedHistogram()

    def record(self, docs: int, chars: int, seconds: float) -> None:
        weight = self._current_weight()
        self._classes[size_class(docs, chars)].add(seconds, weight)
        self._pooled.add(seconds, weight)

    def estimate(self, docs: int, chars: int, q: float = 0.9) -> Prediction:
        """The q-quantile of a call's latency, blended with the prior while data is scarce."""
        current = self._current_weight()
        prior_s = self.prior.predict_s(docs, chars)
        histograms = (self._classes[size_class(docs, chars)], self._pooled)
        for histogram in histograms:
            n = histogram.weight_at(current)
            if n >= self.settings.min_samples and (observed := histogram.quantile(q)) is not None:
                return Prediction(observed, n, confident=True)
        # Too few of both: the most specific observations there are, with the prior.
        histogram = histograms[0] if histograms[0].count else histograms[1]
        n = histogram.weight_at(current)
        observed = histogram.quantile(q)
        if observed is None or n <= 0:
            return Prediction(prior_s, 0.0, confident=False, broad=self.prior is BROAD_DEFAULT)
        return Prediction(blend(prior_s, self._prior_weight(n), observed, n), n, confident=False)

    def predict(self, docs: int, chars: int, q: float = 0.9) -> float | None:
        """`estimate` in seconds, or None when only the broad default speaks (hedging and
        breakers need something known about the deployment)."""
        prediction = self.estimate(docs, chars, q)
        return None if prediction.broad else prediction.seconds

    def _prior_weight(self, n: float) -> float:
        return self.prior.weight * max(0.0, 1.0 - n / self.settings.min_samples)

    def _current_weight(self) -> float:
        """The weight of an observation made now (forward decay), rescaling when large."""
        age = (self.clock() - self._t0) / self.settings.half_life_s
        if age > _RESCALE_AT:
            self._rescale(2.0**-age)
            age = 0.0
        return 2.0**age

    def quantiles(self) -> dict[str, float | None]:
        """Observed p50/p90/p99 over all sizes, in milliseconds (for operators)."""
        return {
            name: None if (v := self._pooled.quantile(q)) is None else round(v * 1000, 2)
            for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
        }

    def samples(self) -> int:
        return self._pooled.count

    def describe_prior(self) -> dict[str, object]:
        """The prior in use and where it came from (for operators)."""
        p = self.prior
        return {
            "source": self.prior_source,
            "base_ms": p.base_ms,
            "per_doc_ms": p.per_doc_ms,
            "per_kchar_ms": p.per_kchar_ms,
            "weight": p.weight,
        }

    def _rescale(self, factor: float) -> None:
        for histogram in (*self._classes, self._pooled):
            histogram.scale(factor)
        self._t0 = self.clock()


def blend(prior_s: float, prior_weight: float, observed_s: float, n: float) -> float:
    """The weighted geometric mean of a prior and an observed latency."""
    if prior_weight <= 0:
        return observed_s
    low = _LOW_S / 10  # a zero latency has no logarithm
    total = prior_weight + n
    log_mean = (
        prior_weight * math.log(max(prior_s, low)) + n * math.log(max(observed_s, low))
    ) / total
    return math.exp(log_mean)
