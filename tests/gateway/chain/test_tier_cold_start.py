"""Cold start of a tiered alias through the HTTP API: a fresh gateway with no configured
priors, pro and fast fakes of controlled latency (issue 15, part 1).

A budgeted request is answered within its budget, because every model has a prediction
from its first observation on (blended with a family default or a configured prior) and
a guess never gets the whole budget: the fast tier is armed as a backup. "Within the
budget" needs no clock: the budget is the request's deadline, so a late answer is a 504.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.fakes.cohere import FakeCohere, Faults
from tests.support.calls import post
from tests.support.routing import (
    AUTO,
    FAST,
    PRO,
    budget,
    deployments,
    metric,
    rerank_auto,
    serve_fakes,
    start,
)
from tests.support.servers import ServerLoop

Fakes = tuple[dict[str, FakeCohere], dict[str, str]]


def config(urls: dict[str, str], pro_prior_ms: float | None = None) -> dict[str, Any]:
    """rerank-auto over PRO and FAST, with no latency priors unless `pro_prior_ms`."""
    return rerank_auto(urls, pro_prior_ms, None)


@pytest.fixture
def fakes(servers: ServerLoop) -> Fakes:
    upstreams, urls = serve_fakes(servers, "pro", "fast")
    upstreams["pro"].faults = Faults(delay_s=0.4)
    upstreams["fast"].faults = Faults(delay_s=0.03)
    return upstreams, urls


async def backups(url: str) -> float:
    return await metric(url, "rerank_tier_backup_answers_total", alias="rerank-auto", model=FAST)


async def test_the_issue_three_calls_each_then_a_tight_budget_is_served_by_fast(
    servers: ServerLoop, fakes: Fakes
) -> None:
    """The report of issue 15 as it was: this used to go to pro and fail with 504."""
    upstreams, urls = fakes
    url = start(servers, config(urls))
    for model in (PRO, FAST) * 3:
        status, _, _ = await post(url, {**AUTO, "model": model})
        assert status == 200
    status, headers, body = await post(url, AUTO, headers=budget(150))
    assert status == 200, body
    assert headers["X-Rerank-Model"] == FAST
    assert "warnings" not in body["meta"]  # chosen outright, not rescued by the backup
    assert len(upstreams["pro"].calls) == 3
    pro = (await deployments(url))[f"pro/{PRO}"]
    assert pro["latency_samples"] == 3
    assert pro["latency_prior_ms"]["source"] == "default for cohere-rerank-v4-pro"


async def test_three_slow_observations_overrule_an_optimistic_prior(
    servers: ServerLoop, fakes: Fakes
) -> None:
    """pro configured at 100 ms fits a 150 ms budget until three 400 ms calls say not."""
    upstreams, urls = fakes
    url = start(servers, config(urls, pro_prior_ms=100))

    status, headers, body = await post(url, AUTO, headers=budget(150))
    assert status == 200, body  # pro was chosen on its prior; the backup saved the budget
    assert headers["X-Rerank-Model"] == FAST
    assert body["meta"]["warnings"][0].startswith(f"backup answered: '{PRO}' had not answered")
    assert len(upstreams["pro"].calls) == 1

    for _ in range(3):  # direct calls feed the same latency model as the alias's
        status, _, _ = await post(url, {**AUTO, "model": PRO})
        assert status == 200

    status, headers, body = await post(url, AUTO, headers=budget(150))
    assert status == 200 and headers["X-Rerank-Model"] == FAST
    assert "warnings" not in body["meta"]
    assert len(upstreams["pro"].calls) == 4  # not tried again: predicted too slow
    assert await backups(url) == 1
    assert (
        await metric(
            url, "rerank_tier_selections_total", alias="rerank-auto", tier="fast", reason="fits"
        )
        == 1
    )


async def test_no_observations_and_default_priors_the_backup_answers_in_budget(
    servers: ServerLoop, fakes: Fakes
) -> None:
    """pro's family default (about 200 ms for three short documents) fits 400 ms, but pro
    hangs; fast is armed at 400 - 5 - 1.5 * 81 ms and answers before the deadline."""
    upstreams, urls = fakes
    upstreams["pro"].faults = Faults(hang=True)
    url = start(servers, config(urls))
    status, headers, body = await post(url, AUTO, headers=budget(400))
    assert status == 200, body
    assert headers["X-Rerank-Model"] == FAST
    assert headers["X-Rerank-Deployment"] == f"fast/{FAST}"
    (warning,) = body["meta"]["warnings"]
    found = re.match(f"backup answered: '{PRO}' had not answered after ([0-9]+) ms", warning)
    assert found is not None and "latency budget of 400 ms" in warning
    after_ms = int(found.group(1))  # 400 - 5 - 1.5 * (fast's default for this request)
    assert 270 <= after_ms <= 275
    assert (len(upstreams["pro"].calls), len(upstreams["fast"].calls)) == (1, 1)
    assert upstreams["fast"].arrivals[0] > upstreams["pro"].arrivals[0]  # a backup, not a race
    assert await backups(url) == 1
    assert await metric(url, "rerank_hedges_total", model="rerank-auto", outcome="won") == 1

    # The cancelled pro call still taught its latency model: it took at least after_ms.
    pro = (await deployments(url))[f"pro/{PRO}"]
    assert pro["latency_samples"] == 1
    assert pro["latency_ms"]["p50"] >= after_ms / 1.15  # one histogram bin of tolerance


async def test_when_pro_fails_outright_the_warning_says_so(
    servers: ServerLoop, fakes: Fakes
) -> None:
    upstreams, urls = fakes
    upstreams["pro"].faults = Faults(status=400)  # a 400 is the caller's: not rescued
    url = start(servers, config(urls))
    status, _, body = await post(url, AUTO, headers=budget(400))
    assert status == 400 and not upstreams["fast"].calls
    upstreams["pro"].faults = Faults(status=503)
    status, headers, body = await post(url, AUTO, headers=budget(5000))
    assert status == 200 and headers["X-Rerank-Model"] == FAST
    assert body["meta"]["warnings"] == [
        f"backup answered: '{PRO}' failed, so the fast tier '{FAST}' of 'rerank-auto' "
        "served the request"
    ]
