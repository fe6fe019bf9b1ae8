"""Shadow quality evaluation of a tiered alias: how far the tier that served a request
ranks from the other tier, and whether a team's downgrades still agree with pro.

A shadow sample is one request scored by both tiers: the served scores (what the
caller got) and the reference scores (the other tier, scored in the background). Three
plain measures compare them, at k = the request's `top_n`, or 10:

- NDCG@k of the served ranking, with the reference tier's scores as the gains:
  DCG = sum over the served top k of gain(doc) / log2(rank + 1), divided by the DCG of
  the reference's own top k. 1.0: the served top k is what the reference would have
  put first (in the right order); swapping two near-equal documents costs little,
  missing the reference's best one costs a lot. Gains are the reference's relevance
  scores, clipped at 0; when they are all 0 there is nothing to get wrong (1.0).
- Top-k overlap: the share of the reference's top k that the served top k contains.
- Rank correlation: Spearman's rho between the two full rankings (1: same order,
  0: unrelated, -1: reversed).

Rankings sort by score, highest first, ties by position, as the answer does.

`ShadowBook` keeps rolling windows of these per (alias, team, direction), where the
direction names the served tier and the reference (`fast_vs_pro`: fast served, pro the
reference). The quality guard of an alias with `min_ndcg` watches how fast's ranking
agrees with pro's for each team, from samples in either direction: once its rolling
mean falls below `min_ndcg` over at least `min_samples`, that team's requests are no
longer downgraded to fast; it resumes when the mean recovers (pro-served samples keep
measuring it meanwhile).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

DEFAULT_K = 10
DEFAULT_WINDOW = 500
FAST_VS_PRO, PRO_VS_FAST = "fast_vs_pro", "pro_vs_fast"


def ranking(scores: Sequence[float]) -> list[int]:
    """Document positions, best first; equal scores keep their order (as the answer)."""
    return sorted(range(len(scores)), key=scores.__getitem__, reverse=True)


def ndcg_at_k(served: Sequence[float], reference: Sequence[float], k: int) -> float:
    """NDCG@k of the ranking by `served`, with `reference` scores as the gains."""
    gains = [max(0.0, g) for g in reference]
    ideal = _dcg(ranking(reference), gains, k)
    if ideal <= 0:
        return 1.0
    return _dcg(ranking(served), gains, k) / ideal


def top_k_overlap(served: Sequence[float], reference: Sequence[float], k: int) -> float:
    """The share of the reference's top k found in the served top k."""
    k = min(k, len(reference))
    if k == 0:
        return 1.0
    return len(set(ranking(served)[:k]) & set(ranking(reference)[:k])) / k


def rank_correlation(served: Sequence[float], reference: Sequence[float]) -> float:
    """Spearman's rho of the two rankings (rankings are permutations: no ties)."""
    n = len(served)
    if n < 2:
        return 1.0
    rank_served, rank_reference = _ranks(served), _ranks(reference)
    squared = sum((a - b) ** 2 for a, b in zip(rank_served, rank_reference, strict=True))
    return 1.0 - 6.0 * squared / (n * (n * n - 1))


def _dcg(order: Sequence[int], gains: Sequence[float], k: int) -> float:
    return sum(gains[doc] / math.log2(rank + 2) for rank, doc in enumerate(order[:k]))


def _ranks(scores: Sequence[float]) -> list[int]:
    ranks = [0] * len(scores)
    for rank, doc in enumerate(ranking(scores)):
        ranks[doc] = rank
    return ranks


@dataclass(frozen=True, slots=True)
class Agreement:
    """One shadow sample's measures."""

    k: int
    ndcg: float
    overlap: float
    rank_correlation: float


def compare(served: Sequence[float], reference: Sequence[float], top_n: int | None) -> Agreement:
    k = top_n or DEFAULT_K
    return Agreement(
        k,
        ndcg_at_k(served, reference, k),
        top_k_overlap(served, reference, k),
        rank_correlation(served, reference),
    )


@dataclass
class Window:
    """The last `size` samples of one (alias, team, direction), and how many ever."""

    size: int
    samples: int = 0
    recent: deque[Agreement] = field(default_factory=deque)

    def add(self, agreement: Agreement) -> None:
        self.samples += 1
        self.recent.append(agreement)
        while len(self.recent) > self.size:
            self.recent.popleft()

    def mean_ndcg(self) -> float | None:
        return _mean(a.ndcg for a in self.recent)

    def summary(self) -> dict[str, object]:
        ndcgs = sorted(a.ndcg for a in self.recent)
        return {
            "samples": self.samples,
            "window": len(self.recent),
            "ndcg_mean": _round(_mean(ndcgs)),
            "ndcg_p10": _round(ndcgs[int(0.1 * (len(ndcgs) - 1))] if ndcgs else None),
            "overlap_mean": _round(_mean(a.overlap for a in self.recent)),
            "rank_correlation_mean": _round(_mean(a.rank_correlation for a in self.recent)),
            "k_mean": _round(_mean(a.k for a in self.recent)),
        }


@dataclass(frozen=True, slots=True)
class GuardSettings:
    min_ndcg: float
    min_samples: int


class ShadowBook:
    """Rolling agreement per (alias, team, direction) and each alias's quality guard."""

    def __init__(self, windows: Mapping[str, int], guards: Mapping[str, GuardSettings]) -> None:
        self.windows = dict(windows)  # alias -> samples kept per window
        self.guards = dict(guards)  # alias -> its guard, for aliases with min_ndcg
        self._windows: dict[tuple[str, str, str], Window] = {}
        # Fast's ranking against pro's, whichever tier served: what the guard watches.
        self._fast_quality: dict[tuple[str, str], Window] = {}
        self._stopped: set[tuple[str, str]] = set()

    def record(
        self, alias: str, team: str, direction: str, served: Agreement, fast: Agreement
    ) -> bool | None:
        """Add a sample: `served` against the reference, `fast` fast's ranking against
        pro's. Returns the guard's new state for (alias, team) when it changed."""
        size = self.windows.get(alias, DEFAULT_WINDOW)
        self._windows.setdefault((alias, team, direction), Window(size)).add(served)
        quality = self._fast_quality.setdefault((alias, team), Window(size))
        quality.add(fast)
        return self._update_guard(alias, team, quality)

    def stops_downgrade(self, alias: str, team: str) -> bool:
        """True when `team`'s requests to `alias` must not be downgraded to fast."""
        return (alias, team) in self._stopped

    def _update_guard(self, alias: str, team: str, quality: Window) -> bool | None:
        guard = self.guards.get(alias)
        if guard is None or len(quality.recent) < guard.min_samples:
            return None
        mean = quality.mean_ndcg()
        stop = mean is not None and mean < guard.min_ndcg
        was = (alias, team) in self._stopped
        if stop == was:
            return None
        if stop:
            self._stopped.add((alias, team))
        else:
            self._stopped.discard((alias, team))
        return stop

    def report(self, aliases: Iterable[str]) -> dict[str, dict[str, object]]:
        """Per alias: per team, each direction's summary and the guard's state."""
        out: dict[str, dict[str, object]] = {}
        for alias in aliases:
            teams: dict[str, dict[str, object]] = {}
            for (a, team, direction), window in sorted(self._windows.items()):
                if a == alias:
                    teams.setdefault(team, {})[direction] = window.summary()
            guard = self.guards.get(alias)
            for (a, team), quality in sorted(self._fast_quality.items()):
                if a != alias:
                    continue
                entry = teams.setdefault(team, {})
                entry["fast_quality"] = quality.summary()
                if guard is not None:
                    entry["downgrades"] = "stopped" if self.stops_downgrade(a, team) else "allowed"
            out[alias] = {"teams": teams}
        return out


def _mean(values: Iterable[float]) -> float | None:
    items = list(values)
    return sum(items) / len(items) if items else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
