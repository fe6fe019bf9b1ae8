"""The online latency model on a fake clock."""

from __future__ import annotations

import pytest

from policies.latency import LatencyModel, LatencyPrior, LatencySettings, size_class
from tests.fakes.clock import FakeClock


def model(clock: FakeClock, prior: LatencyPrior | None = None, **settings: float) -> LatencyModel:
    s = LatencySettings(**{"half_life_s": 60.0, "min_samples": 5, **settings})  # type: ignore[arg-type]
    return LatencyModel(s, prior, clock)


def test_unknown_without_prior_or_data() -> None:
    m = model(FakeClock())
    assert m.predict(10, 1000) is None
    assert m.quantiles() == {"p50": None, "p90": None, "p99": None}


def test_prior_until_enough_samples_then_observations() -> None:
    m = model(FakeClock(), LatencyPrior(base_ms=100, per_doc_ms=2, per_kchar_ms=10))
    assert m.predict(10, 5_000) == pytest.approx((100 + 20 + 50) / 1000)
    for _ in range(4):
        m.record(10, 5_000, 0.020)
    assert m.predict(10, 5_000) == pytest.approx(0.17)  # 4 samples: still the prior
    m.record(10, 5_000, 0.020)
    assert m.predict(10, 5_000) == pytest.approx(0.020, rel=0.15)


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
