"""The online latency model on a fake clock."""

from __future__ import annotations

import math

import pytest

from policies.routing.latency import (
    BROAD_DEFAULT,
    LatencyModel,
    LatencyPrior,
    LatencySettings,
    Prediction,
    blend,
    size_class,
)
from policies.routing.latency_priors import FAMILIES, family_prior
from tests.fakes.clock import FakeClock


def model(clock: FakeClock, prior: LatencyPrior | None = None, **settings: float) -> LatencyModel:
    s = LatencySettings(**{"half_life_s": 60.0, "min_samples": 5, **settings})  # type: ignore[arg-type]
    return LatencyModel(s, prior, clock)


def test_nothing_known_gives_the_broad_default_marked_as_such() -> None:
    m = model(FakeClock())
    p = m.estimate(10, 1000)
    assert p == Prediction(BROAD_DEFAULT.predict_s(10, 1000), 0.0, confident=False, broad=True)
    assert m.predict(10, 1000) is None  # hedging and breakers need something known
    assert m.quantiles() == {"p50": None, "p90": None, "p99": None}
    assert m.describe_prior()["source"] == "broad default"


def test_a_configured_prior_alone_until_the_first_observation() -> None:
    m = model(FakeClock(), LatencyPrior(base_ms=100, per_doc_ms=2, per_kchar_ms=10))
    assert m.estimate(10, 5_000) == Prediction((100 + 20 + 50) / 1000, 0.0, confident=False)


def test_three_slow_observations_outweigh_an_optimistic_prior() -> None:
    """The blend by hand: min_samples 10, prior 100 ms worth 3 observations, fading to
    3 * (1 - 3/10) = 2.1 with 3 observations of 400 ms: exp((2.1 ln 0.1 + 3 ln 0.4) / 5.1)."""
    m = model(FakeClock(), LatencyPrior(base_ms=100, weight=3), min_samples=10)
    for _ in range(3):
        m.record(3, 100, 0.400)
    observed = m.estimate(3, 100, 0.9)
    by_hand = math.exp((2.1 * math.log(0.1) + 3 * math.log(0.4)) / 5.1)  # 0.226 s
    assert observed.seconds == pytest.approx(by_hand, rel=0.1)
    assert (observed.samples, observed.confident) == (3.0, False)
    assert observed.seconds > 0.150  # "pro does not fit 150 ms" already


def test_with_the_broad_default_the_first_observations_decide() -> None:
    m = model(FakeClock(), min_samples=10)
    for _ in range(3):
        m.record(3, 100, 0.400)
    by_hand = math.exp((0.7 * math.log(BROAD_DEFAULT.predict_s(3, 100)) + 3 * math.log(0.4)) / 3.7)
    assert m.estimate(3, 100).seconds == pytest.approx(by_hand, rel=0.1)  # ~0.37 s
    assert m.predict(3, 100) == pytest.approx(by_hand, rel=0.1)  # now known


def test_the_prior_fades_out_and_observations_alone_decide_at_min_samples() -> None:
    m = model(FakeClock(), LatencyPrior(base_ms=100), min_samples=5)
    seen = []
    for _ in range(5):
        m.record(10, 5_000, 0.020)
        seen.append(m.estimate(10, 5_000))
    values = [p.seconds for p in seen]
    assert values == sorted(values, reverse=True)  # each observation moves it further
    assert [p.confident for p in seen] == [False] * 4 + [True]
    assert seen[-1].seconds == pytest.approx(0.020, rel=0.15)


def test_stale_observations_hand_back_to_the_prior() -> None:
    clock = FakeClock()
    m = model(clock, LatencyPrior(base_ms=100), half_life_s=10.0, min_samples=5)
    for _ in range(8):
        m.record(5, 500, 0.400)
    assert m.estimate(5, 500).confident
    clock.advance(20.0)  # two half-lives: the 8 count as 2
    p = m.estimate(5, 500)
    assert p.samples == pytest.approx(2.0) and not p.confident
    by_hand = math.exp((3 * 0.6 * math.log(0.1) + 2 * math.log(0.4)) / (1.8 + 2))
    assert p.seconds == pytest.approx(by_hand, rel=0.1)


def test_blend_is_a_weighted_geometric_mean() -> None:
    assert blend(0.1, 1.0, 0.4, 1.0) == pytest.approx(0.2)
    assert blend(0.1, 0.0, 0.4, 1.0) == 0.4
    assert blend(0.1, 3.0, 0.0, 1.0) > 0  # a zero latency does not break the logarithm


def test_high_quantile_not_mean() -> None:
    m = model(FakeClock())
    for latency in [0.010] * 17 + [0.200] * 3:  # 15% slow calls
        m.record(5, 500, latency)
    assert m.predict(5, 500, 0.5) == pytest.approx(0.010, rel=0.15)
    assert m.predict(5, 500, 0.9) == pytest.approx(0.200, rel=0.15)
    q = m.quantiles()
    assert q["p50"] == pytest.approx(10, rel=0.15) and q["p99"] == pytest.approx(200, rel=0.15)


def test_size_classes_are_kept_apart() -> None:
    m = model(FakeClock())
    assert size_class(5, 1_000) < size_class(500, 1_000) == size_class(5, 200_000)
    for _ in range(5):
        m.record(5, 1_000, 0.010)
        m.record(500, 100_000, 0.300)
    assert m.predict(5, 1_000) == pytest.approx(0.010, rel=0.15)
    assert m.predict(500, 100_000) == pytest.approx(0.300, rel=0.15)


def test_a_sparse_size_class_uses_all_sizes_pooled() -> None:
    m = model(FakeClock())
    for _ in range(5):
        m.record(5, 1_000, 0.050)
    assert m.predict(2_000, 900_000) == pytest.approx(0.050, rel=0.15)


def test_old_observations_decay_so_the_model_adapts() -> None:
    clock = FakeClock()
    m = model(clock, half_life_s=10.0)
    for _ in range(50):
        m.record(5, 500, 0.010)
    for _ in range(5):
        m.record(5, 500, 0.300)
    assert m.predict(5, 500) == pytest.approx(0.010, rel=0.15)  # 5 of 55: below p90
    clock.advance(30.0)  # old weight now 1/8: the 50 count as 6.25
    for _ in range(3):
        m.record(5, 500, 0.300)
    assert m.predict(5, 500) == pytest.approx(0.300, rel=0.15)
    assert m.samples() == 58


def test_weights_are_rescaled_after_long_idle_periods() -> None:
    clock = FakeClock()
    m = model(clock, half_life_s=1.0, min_samples=1)
    m.record(5, 500, 0.010)
    clock.advance(10_000.0)  # far beyond the float range of 2**(age/half-life)
    m.record(5, 500, 0.400)
    assert m.predict(5, 500) == pytest.approx(0.400, rel=0.15)
    assert m.samples() == 2


@pytest.mark.parametrize(
    ("model_id", "family"),
    [
        ("rerank-v3.5", "cohere-rerank-v3.5"),
        ("cohere.rerank-v3-5:0", "cohere-rerank-v3.5"),  # Bedrock
        ("arn:aws:bedrock:us-west-2::foundation-model/cohere.rerank-v3-5:0", "cohere-rerank-v3.5"),
        ("Cohere-rerank-v3.5", "cohere-rerank-v3.5"),  # Azure
        ("cohere.rerank.3-5", "cohere-rerank-v3.5"),  # OCI
        ("rerank-v4.0-pro", "cohere-rerank-v4-pro"),
        ("cohere-rerank-v4-fast", "cohere-rerank-v4-fast"),
        ("rerank-v5.0-pro", "cohere-rerank-v5-pro"),
        ("rerank-v5.0-fast", "cohere-rerank-v5-fast"),
        ("rerank-english-v3.0", None),
        ("rerank-v4.0", None),
        ("bge-reranker-v2-m3", None),
    ],
)
def test_model_families_are_recognised_in_every_clouds_spelling(
    model_id: str, family: str | None
) -> None:
    found = family_prior(model_id)
    assert (found.family if found else None) == family


def test_family_priors_scale_with_size_and_fast_is_faster_than_pro() -> None:
    for version in (4, 5):
        pro, fast = FAMILIES[(version, "pro")].prior, FAMILIES[(version, "fast")].prior
        for docs, chars in ((3, 300), (100, 100_000)):
            assert fast.predict_s(docs, chars) < pro.predict_s(docs, chars)
    v35 = FAMILIES[(3, "")].prior
    assert v35.predict_s(100, 100_000) == pytest.approx(0.400)
    assert v35.predict_s(100, 100_000) > v35.predict_s(3, 300)
