"""Depth advice: how many of its candidates a team really needs reranked, measured from
its own traffic, and (opt-in) sending only those.

The reranker's top k of a request is the answer the team uses; the caller's position of
each of those documents says how deep in its list the team had to go to find it. Taken
over many requests, the share of top-k documents found among the first d positions is the
recall@k the team would have had, had it sent only its first d documents. That needs no
labels, only one assumption: the caller's order is its first stage's order, so "its
first d documents" is what a smaller fetch would have returned (see docs/depth.md).

What is counted, per team, model and time bucket (string fields, so the same counters
sum in a Redis hash and in a `Counter`):

- `r` requests, `n:<m>` requests that sent m documents (after over-fetch limits);
- for the requests whose top k was measured: `m` their number, `k:<m>` the top-k
  documents of requests of m documents, `p:<j>` top-k documents whose position falls in
  ladder bucket j (positions LADDER[j-1] to LADDER[j] - 1); `xr`, `xk`, `xp:<j>` the same
  for the explored sample of an enforcing team (requests reranked at full depth on purpose);
- text sizes of one request in SAMPLE_EVERY: `ss` requests, `sd` documents, `sc` their
  characters, `sq` query characters times documents (query tokens bill once per document
  for token prices), `sb` documents billed (chunks counted apart).

From these, `advise` gives per team and model: recall at every depth of the ladder with a
Wilson interval, the smallest depth whose lower bound reaches the target recall, what the
team sends (mean, p90), what the cut saves (priced with the deployment's real price: search
units per 100 documents with chunking, tokens and the rest linearly) and in latency, and,
before any of it, whether the order carries a signal at all: a chi-square test of the
top-k positions against what a random order would put in each bucket. A team whose
positions look random is told so, not given a depth.

`Enforcer` is the opt-in decision per request: rerank only the first d documents (never
fewer than top_n), except a random share explored at full depth, whose recall at d is what
`drifted` watches. Nothing here does I/O; the stores are `policies.quality.depth_store` and
`policies.quality.redis_depth`, the wiring `gateway.state.depth`.
"""

from __future__ import annotations

import math
import random
import statistics
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Interval, Lt

from policies.money.billing import DOCUMENTS_PER_UNIT, BillingRules
from policies.money.pricing import FREE, REQUEST, SEARCH_UNITS, TOKENS, Price

# Depths at which recall is measured; the last covers every list a request may send.
LADDER = (10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000, 2000, 5000, 10000)
SAMPLE_EVERY = 32  # text sizes (for prices and latency) of one request in this many
DAY_S = 86_400.0
MIN_SPAN_S = 60.0  # per-day figures from less than this are scaled from this

Mode = Literal["advise", "enforce"]
ADVISE: Mode = "advise"
ENFORCE: Mode = "enforce"
# The status of an advice.
ADVICE, NO_SIGNAL, INSUFFICIENT = "advice", "no_order_signal", "insufficient_data"


@dataclass
class DepthSettings:
    """The `depth:` section: measurement for every team, and the defaults of `teams.<t>.depth`."""

    enabled: bool = True
    target_recall: Annotated[float, Interval(ge=0.5, lt=1.0)] = 0.99
    k: Annotated[int, Interval(ge=1, le=1000)] = 10  # top k measured when a request has no top_n
    explore_share: Annotated[float, Interval(ge=0.0, le=1.0)] = 0.05
    confidence: Annotated[float, Interval(ge=0.5, lt=1.0)] = 0.95  # of the recall interval
    min_requests: Annotated[int, Ge(1)] = 50  # measured requests before any advice
    order_alpha: Annotated[float, Gt(0.0), Lt(0.5)] = 0.01  # "no order signal" below this
    window_hours: Annotated[float, Interval(ge=0.01, le=744.0)] = 24.0
    bucket_minutes: Annotated[float, Interval(ge=0.1, le=1440.0)] = 60.0
    flush_s: Annotated[float, Interval(ge=0.05, le=300.0)] = 5.0  # counts to the shared store
    refresh_s: Annotated[float, Interval(ge=0.1, le=3600.0)] = 30.0  # advice, gauges, depths
    redis_prefix: str | None = None  # the depth keys' prefix; default limits.redis_prefix

    def __post_init__(self) -> None:
        if self.bucket_minutes > self.window_hours * 60:
            raise ValueError("bucket_minutes must not exceed window_hours (a window holds buckets)")

    @property
    def window_s(self) -> float:
        return self.window_hours * 3600.0

    @property
    def bucket_s(self) -> float:
        return self.bucket_minutes * 60.0


@dataclass
class TeamDepth:
    """`teams.<t>.depth`: advise (the default) or enforce, and the team's own figures."""

    mode: Mode = ADVISE
    target_recall: Annotated[float, Interval(ge=0.5, lt=1.0)] | None = None
    explore_share: Annotated[float, Interval(ge=0.0, le=1.0)] | None = None
    k: Annotated[int, Interval(ge=1, le=1000)] | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """One team's settings, its own over the section's."""

    mode: Mode
    target: float
    explore_share: float
    k: int

    @staticmethod
    def of(settings: DepthSettings, team: TeamDepth | None) -> Rule:
        own = team or TeamDepth()
        return Rule(
            own.mode,
            settings.target_recall if own.target_recall is None else own.target_recall,
            settings.explore_share if own.explore_share is None else own.explore_share,
            settings.k if own.k is None else own.k,
        )


# --------------------------------------------------------------------------- request path


def ranking(scores: Sequence[float]) -> list[int]:
    """Document positions, best first; equal scores keep their order (as the answer)."""
    return sorted(range(len(scores)), key=scores.__getitem__, reverse=True)


@dataclass(frozen=True, slots=True)
class Plan:
    """What depth does to one request: rerank only the first `cut` documents (None: all),
    and whether its top k is measured (`explored`: at full depth on purpose, in place of
    a cut at the enforced depth: the sample drift is watched on)."""

    cut: int | None = None
    measured: bool = True
    explored: bool = False
    header: str | None = None  # X-Rerank-Depth
    warning: str | None = None  # for meta.warnings


MEASURE = Plan()
IGNORE = Plan(measured=False)  # depth measurement is off


class Tally:
    """One team and model's requests since the last flush, kept as they came: the request
    pays for an append, the counting happens off the request path (`fold`)."""

    __slots__ = ("records", "seen", "sizes")

    def __init__(self) -> None:
        # (documents sent, top-k positions or None when not measured, explored)
        self.records: list[tuple[int, list[int] | None, bool]] = []
        self.sizes: Counter[str] = Counter()
        self.seen = 0

    def add(self, documents: int, top: list[int] | None, explored: bool) -> bool:
        """Record one request; True when its text sizes should be sampled too."""
        self.records.append((documents, top, explored))
        self.seen += 1
        return self.seen % SAMPLE_EVERY == 1

    def sample(
        self, rules: BillingRules, query: str, texts: Sequence[str], max_tokens: int | None
    ) -> None:
        m = len(texts)
        sizes = self.sizes
        sizes["ss"] += 1
        sizes["sd"] += m
        sizes["sc"] += sum(map(len, texts))
        sizes["sq"] += len(query) * m
        sizes["sb"] += rules.billed_documents(query, texts, max_tokens)

    def take(self) -> Counter[str]:
        """The counters of everything recorded since the last take, and start afresh."""
        counts = fold(self.records)
        counts.update(self.sizes)
        self.records, self.sizes = [], Counter()
        return counts


def fold(records: Iterable[tuple[int, list[int] | None, bool]]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for documents, top, explored in records:
        counts["r"] += 1
        counts[f"n:{documents}"] += 1
        if top is None:
            continue
        counts["m"] += 1
        counts[f"k:{documents}"] += len(top)
        buckets = [bisect_right(LADDER, p) for p in top]
        counts.update(f"p:{j}" for j in buckets)
        if explored:
            counts["xr"] += 1
            counts["xk"] += len(top)
            counts.update(f"xp:{j}" for j in buckets)
    return counts


class Enforcer:
    """Enforce mode for one team and model at depth `depth`, the advice of the last
    refresh. `rng` returns floats in [0, 1) (tests seed it)."""

    __slots__ = ("depth", "explore_share", "model", "rng", "team")

    def __init__(
        self,
        team: str,
        model: str,
        depth: int,
        explore_share: float,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.team, self.model, self.depth = team, model, depth
        self.explore_share = explore_share
        self.rng = rng

    def plan(self, documents: int, top_n: int | None) -> Plan:
        cut = self.depth if top_n is None or top_n < self.depth else top_n
        if cut >= documents:
            return MEASURE  # the whole list is within the depth: nothing to cut
        if self.rng() < self.explore_share:
            # Measured at full depth. It watches for drift when it stands for a request
            # cut at the enforced depth (a larger top_n was cut at top_n instead).
            return Plan(
                explored=cut == self.depth, header=f"{documents}/{documents}; explore"
            )
        return Plan(
            cut,
            measured=False,
            header=f"{cut}/{documents}",
            warning=(
                f"depth enforce mode of team '{self.team}' for model '{self.model}': only "
                f"the first {cut} of {documents} documents were reranked (depth {self.depth} "
                f"keeps the measured top-k recall at its target); documents {cut}-"
                f"{documents - 1} follow the reranked ones in your order, with the lowest "
                "relevance_score of the answer (0.0, or the lowest reranked score if below)"
            ),
        )


def complete(scores: list[float], documents: int) -> tuple[list[float], list[int]]:
    """The scores of all `documents` and their ranking, when only the first len(scores)
    were reranked: the rest follow in the caller's order, at a score no reranked one is
    below (ties rank by position, so the reranked come first)."""
    order = ranking(scores)
    reranked = len(scores)
    if reranked >= documents:
        return scores, order
    floor = min(0.0, min(scores, default=0.0))
    return scores + [floor] * (documents - reranked), order + list(range(reranked, documents))


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True, slots=True)
class Window:
    """The counters of one team and model over the window, read back into numbers."""

    requests: int
    sizes: dict[int, int]  # documents sent -> requests
    topk: dict[int, int]  # documents sent -> top-k documents measured
    positions: list[int]  # top-k documents per ladder bucket
    measured: int  # requests whose top k was measured
    explored: int  # of those, explored at full depth by an enforcing team
    explored_topk: int
    explored_positions: list[int]
    sample: dict[str, int]  # ss, sd, sc, sq, sb
    span_s: float  # how long the counts cover

    @staticmethod
    def of(counts: Mapping[str, int], span_s: float) -> Window:
        sizes: dict[int, int] = {}
        topk: dict[int, int] = {}
        positions = [0] * len(LADDER)
        explored = [0] * len(LADDER)
        for name, value in counts.items():
            kind, _, arg = name.partition(":")
            if kind == "n":
                sizes[int(arg)] = value
            elif kind == "k":
                topk[int(arg)] = value
            elif kind == "p":
                positions[int(arg)] = value
            elif kind == "xp":
                explored[int(arg)] = value
        return Window(
            requests=counts.get("r", 0),
            sizes=sizes,
            topk=topk,
            positions=positions,
            measured=counts.get("m", 0),
            explored=counts.get("xr", 0),
            explored_topk=counts.get("xk", 0),
            explored_positions=explored,
            sample={k: counts.get(k, 0) for k in ("ss", "sd", "sc", "sq", "sb")},
            span_s=span_s,
        )


def wilson(hits: int, total: int, z: float) -> tuple[float, float]:
    """The Wilson score interval of a proportion hits/total."""
    if total <= 0:
        return 0.0, 1.0
    p = hits / total
    z2 = z * z
    denominator = 1 + z2 / total
    centre = (p + z2 / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def z_score(confidence: float) -> float:
    """The normal quantile of a two-sided interval at `confidence`."""
    return statistics.NormalDist().inv_cdf((1 + confidence) / 2)


def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for a chi-square variable with `df` degrees of freedom: the regularized
    upper incomplete gamma function Q(df/2, x/2) (series below a+1, continued fraction
    above, as in Numerical Recipes; no scipy on the gateway's dependencies)."""
    if x <= 0 or df <= 0:
        return 1.0
    a, y = df / 2.0, x / 2.0
    log_front = a * math.log(y) - y - math.lgamma(a)
    if y < a + 1:
        term = total = 1.0 / a
        n = a
        for _ in range(1000):
            n += 1
            term *= y / n
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(log_front))
    tiny = 1e-300
    b = y + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(log_front) * h)


def order_p_value(window: Window) -> float | None:
    """How likely top-k positions this far from uniform would be under a random order
    (chi-square goodness of fit over the ladder's buckets, merged until each expects at
    least 5); None when there is nothing to test (every list within the first bucket)."""
    expected = [0.0] * len(LADDER)
    for documents, k in window.topk.items():
        low = 0
        for j, high in enumerate(LADDER):
            if low >= documents:
                break
            expected[j] += k * (min(high, documents) - low) / documents
            low = high
    cells: list[tuple[float, int]] = []
    e_sum, o_sum = 0.0, 0
    for e, o in zip(expected, window.positions, strict=True):
        e_sum, o_sum = e_sum + e, o_sum + o
        if e_sum >= 5:
            cells.append((e_sum, o_sum))
            e_sum, o_sum = 0.0, 0
    if e_sum > 0 and cells:  # the remainder joins the last cell
        last_e, last_o = cells.pop()
        cells.append((last_e + e_sum, last_o + o_sum))
    if len(cells) < 2:
        return None
    statistic = sum((o - e) ** 2 / e for e, o in cells)
    return chi2_sf(statistic, len(cells) - 1)


def hits_within(positions: Sequence[int], depth: int) -> int:
    """Top-k documents found among the first `depth` positions (`depth` on the ladder or
    not: only whole buckets below it count, so it never overstates)."""
    return sum(positions[: bisect_right(LADDER, depth)])


def drifted(window: Window, depth: int, rule: Rule, z: float, min_requests: int) -> float | None:
    """The explored sample's recall at the enforced `depth` when it is below the target
    beyond doubt (the upper end of its interval under it), else None."""
    if window.explored < min_requests or window.explored_topk == 0:
        return None
    hits = hits_within(window.explored_positions, depth)
    _, high = wilson(hits, window.explored_topk, z)
    return hits / window.explored_topk if high < rule.target else None


# --------------------------------------------------------------------------- advice


@dataclass(frozen=True, slots=True)
class Costing:
    """What a cut is worth on one model: its price, the billing rules, and how much the
    p90 latency of a call falls from one size to another (None: no model of it)."""

    price: Price
    rules: BillingRules
    # (documents now, documents at the depth, characters per document, query characters)
    latency_saved_s: Callable[[int, int, float, float], float | None] | None = None


@dataclass(frozen=True, slots=True)
class Point:
    depth: int
    recall: float
    low: float
    high: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "depth": self.depth,
            "recall": round(self.recall, 4),
            "low": round(self.low, 4),
            "high": round(self.high, 4),
        }


@dataclass(frozen=True, slots=True)
class Saving:
    """What the advised depth saves, per request and per day."""

    unit: str  # the price's kind: search_units, tokens, request, free
    per_request_now: float | None  # in `unit`, mean over the window's requests
    per_request_advised: float | None
    usd_per_day: float
    latency_ms: float | None  # p90 of one call, mean over the requests
    requests_per_day: float
    note: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "per_request_now": _round(self.per_request_now, 3),
            "per_request_advised": _round(self.per_request_advised, 3),
            "usd_per_day": round(self.usd_per_day, 6),
            "latency_ms_p90": _round(self.latency_ms, 2),
            "requests_per_day": round(self.requests_per_day, 1),
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class Advice:
    status: str  # ADVICE, NO_SIGNAL, INSUFFICIENT
    message: str
    requests: int
    measured: int
    topk_documents: int
    sends_mean: float | None = None
    sends_p90: int | None = None
    sends_max: int | None = None
    needs: int | None = None  # the advised depth (sends_max when no depth below it will do)
    cuts: bool = False  # needs is below what the team sends at most
    at_needs: Point | None = None
    curve: tuple[Point, ...] = ()
    order_p_value: float | None = None
    saving: Saving | None = None
    target: float = 0.99
    explored: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "message": self.message,
            "target_recall": self.target,
            "requests": self.requests,
            "measured": self.measured,
            "explored": self.explored,
            "topk_documents": self.topk_documents,
            "sends": {
                "mean": _round(self.sends_mean, 1),
                "p90": self.sends_p90,
                "max": self.sends_max,
            },
            "needs": self.needs,
            "cuts": self.cuts,
            "recall": self.at_needs.as_dict() if self.at_needs is not None else None,
            "curve": [p.as_dict() for p in self.curve],
            "order_p_value": _round(self.order_p_value, 6),
            "saving": self.saving.as_dict() if self.saving is not None else None,
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def percentile(sizes: Mapping[int, int], q: float) -> int | None:
    """The q-quantile of a histogram of document counts (the nearest rank)."""
    total = sum(sizes.values())
    if not total:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for documents in sorted(sizes):
        seen += sizes[documents]
        if seen >= rank:
            return documents
    return max(sizes)


def advise(
    window: Window, rule: Rule, settings: DepthSettings, costing: Costing | None = None
) -> Advice:
    """The depth one team and model needs, how sure that is, and what it would save."""
    z = z_score(settings.confidence)
    base: dict[str, Any] = {
        "requests": window.requests,
        "measured": window.measured,
        "topk_documents": sum(window.topk.values()),
        "target": rule.target,
        "explored": window.explored,
    }
    if window.requests:
        base |= {
            "sends_mean": sum(m * c for m, c in window.sizes.items()) / window.requests,
            "sends_p90": percentile(window.sizes, 0.9),
            "sends_max": max(window.sizes),
        }
    if window.measured < settings.min_requests:
        return Advice(
            INSUFFICIENT,
            f"{window.measured} requests measured of the {settings.min_requests} an advice "
            "needs (requests that ask for every document they send say nothing about depth)",
            **base,
        )
    p_value = order_p_value(window)
    if p_value is not None and p_value >= settings.order_alpha:
        return Advice(
            NO_SIGNAL,
            f"no order signal: the reranker's top {rule.k} sit anywhere in the lists sent, as "
            f"a random order would put them (p = {p_value:.2f}); the caller's order does not "
            "predict the reranker's choice (does it shuffle, or sort by something else?), so "
            "no depth is advised",
            order_p_value=p_value,
            **base,
        )
    curve = _curve(window, z)
    most = base["sends_max"]
    needs = next((p for p in curve if p.low >= rule.target and p.depth < most), curve[-1])
    cuts = needs.depth < most
    saving = _saving(window, needs.depth, costing) if costing is not None and cuts else None
    return Advice(
        ADVICE,
        _message(needs, cuts, base, window, saving),
        needs=needs.depth,
        cuts=cuts,
        at_needs=needs,
        curve=tuple(curve),
        order_p_value=p_value,
        saving=saving,
        **base,
    )


def _curve(window: Window, z: float) -> list[Point]:
    """Recall at each depth of the ladder below the longest list sent, then at that list."""
    total = sum(window.topk.values())
    most = max(window.sizes)
    points = []
    for depth in LADDER:
        if depth >= most:
            break
        hits = hits_within(window.positions, depth)
        low, high = wilson(hits, total, z)
        points.append(Point(depth, hits / total, low, high))
    low, high = wilson(total, total, z)
    points.append(Point(most, 1.0, low, high))
    return points


def _message(
    needs: Point, cuts: bool, base: Mapping[str, Any], window: Window, saving: Saving | None
) -> str:
    measured = (
        f"recall {needs.recall:.3f} (interval {needs.low:.3f}-{needs.high:.3f}, "
        f"{base['topk_documents']} top-k documents of {window.measured} requests)"
    )
    if not cuts:
        return (
            f"needs all it sends (up to {needs.depth}): no shorter list keeps the top-k "
            f"recall at the target with confidence"
        )
    sends = f"{base['sends_mean']:.0f} (p90 {base['sends_p90']})"
    text = f"needs its first {needs.depth} documents of the {sends} it sends: {measured}"
    return f"{text}; {saving.note}" if saving is not None else text


def _saving(window: Window, depth: int, costing: Costing) -> Saving:
    per_day = DAY_S / max(window.span_s, MIN_SPAN_S)
    requests = window.requests
    sample = window.sample
    price = costing.price
    kind = price.kind if price.paid else FREE
    # Documents sent and kept, over the window's requests.
    now_docs = sum(m * c for m, c in window.sizes.items())
    kept_docs = sum(min(depth, m) * c for m, c in window.sizes.items())
    per_request_now: float | None = None
    per_request_at: float | None = None
    usd_per_day = 0.0
    if kind == SEARCH_UNITS:
        now = sum(_units(m, sample) * c for m, c in window.sizes.items())
        at = sum(_units(min(depth, m), sample) * c for m, c in window.sizes.items())
        per_request_now, per_request_at = now / requests, at / requests
        usd_per_day = (now - at) * per_day * price.usd / 1000
        note = _units_note(window, depth, sample)
    elif kind == TOKENS and sample["sd"]:
        per_doc = (sample["sc"] + sample["sq"]) * costing.rules.tokens_per_char / sample["sd"]
        per_request_now = now_docs * per_doc / requests
        per_request_at = kept_docs * per_doc / requests
        usd_per_day = (now_docs - kept_docs) * per_doc * per_day * price.usd / 1_000_000
        note = (
            f"about {per_doc:.0f} tokens per document: {per_request_now:.0f} tokens per "
            f"request today, {per_request_at:.0f} at depth {depth}"
        )
    elif kind == TOKENS:
        note = "tokens per document not sampled yet: no price for the cut"
    elif kind == REQUEST:
        per_request_now = per_request_at = 1.0
        note = "billed per request: a shorter list costs the same"
    else:
        note = "free (offline or self-hosted without a price): the cut saves compute and time"
    return Saving(
        unit=kind,
        per_request_now=per_request_now,
        per_request_advised=per_request_at,
        usd_per_day=usd_per_day,
        latency_ms=_latency_ms(window, depth, costing),
        requests_per_day=requests * per_day,
        note=note,
    )


def _units(documents: int, sample: Mapping[str, int]) -> int:
    """Search units of a call with `documents` documents, at the sampled chunks per
    document (one each before any sample)."""
    billed, sent = sample["sb"], sample["sd"]
    counted = -(-documents * billed // sent) if sent else documents
    return -(-counted // DOCUMENTS_PER_UNIT)


def _units_note(window: Window, depth: int, sample: Mapping[str, int]) -> str:
    typical = max(window.sizes, key=lambda m: (window.sizes[m], m))
    now, at = _units(typical, sample), _units(min(depth, typical), sample)
    chunked = sample["sd"] and sample["sb"] > sample["sd"]
    per = " (its documents are chunked)" if chunked else ""
    if now == at:
        return (
            f"saves no search units on a request of {typical} documents{per}: a search unit "
            f"covers up to {DOCUMENTS_PER_UNIT} documents, and it bills {now} either way"
        )
    return (
        f"a request of {typical} documents{per} bills {now} search units today and would "
        f"bill {at} at depth {depth}"
    )


def _latency_ms(window: Window, depth: int, costing: Costing) -> float | None:
    saved = costing.latency_saved_s
    if saved is None or not window.requests:
        return None
    sample = window.sample
    chars = sample["sc"] / sample["sd"] if sample["sd"] else 0.0
    query = sample["sq"] / sample["sd"] if sample["sd"] else 0.0
    total = 0.0
    for documents, count in window.sizes.items():
        if documents <= depth:
            continue
        seconds = saved(documents, depth, chars, query)
        if seconds is None:
            return None
        total += seconds * count
    return total / window.requests * 1000.0
