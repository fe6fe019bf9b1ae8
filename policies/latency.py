"""An online latency model per deployment: how long a call of a given size takes.

Requests fall into a few size classes by documents count and total characters (the
larger of the two decides). Each class keeps a histogram of observed latencies with
exponentially decaying weights (half-life `half_life_s`: an observation counts half
as much as a new one after that long), read at a high quantile (p90 for tier
selection, p95 for hedging). Until a class has `min_samples` observations, the
deployment's observations of all sizes pooled are used; until those are enough too,
the configured prior `base_ms + per_doc_ms * docs + per_kchar_ms * kchars`, or
nothing ("unknown") when no prior is configured.
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

    def predict_s(self, docs: int, chars: int) -> float:
        return (self.base_ms + self.per_doc_ms * docs + self.per_kchar_ms * chars / 1000) / 1000


@dataclass
class LatencySettings:
    half_life_s: Annotated[float, Ge(0.1)] = 60.0
    min_samples: Annotated[int, Ge(1)] = 10


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
    ) -> None:
        self.settings = settings
        self.prior = prior
        self.clock = clock
        self._t0 = clock()
        self._classes = [DecayedHistogram() for _ in range(CLASSES)]
        self._pooled = DecayedHistogram()

    def record(self, docs: int, chars: int, seconds: float) -> None:
        age = (self.clock() - self._t0) / self.settings.half_life_s
        if age > _RESCALE_AT:
            self._rescale(2.0**-age)
            age = 0.0
        weight = 2.0**age
        self._classes[size_class(docs, chars)].add(seconds, weight)
        self._pooled.add(seconds, weight)

    def predict(self, docs: int, chars: int, q: float = 0.9) -> float | None:
        """The q-quantile of a call's latency in seconds, or None when unknown."""
        for histogram in (self._classes[size_class(docs, chars)], self._pooled):
            if histogram.count >= self.settings.min_samples:
                return histogram.quantile(q)
        return self.prior.predict_s(docs, chars) if self.prior is not None else None

    def quantiles(self) -> dict[str, float | None]:
        """Observed p50/p90/p99 over all sizes, in milliseconds (for operators)."""
        return {
            name: None if (v := self._pooled.quantile(q)) is None else round(v * 1000, 2)
            for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
        }

    def samples(self) -> int:
        return self._pooled.count

    def _rescale(self, factor: float) -> None:
        for histogram in (*self._classes, self._pooled):
            histogram.scale(factor)
        self._t0 = self.clock()
