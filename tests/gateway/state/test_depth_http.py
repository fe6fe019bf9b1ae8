"""Depth advice through a gateway: measured on every answer (cache hits too), shown at
/admin/depth (a manager key: its own team), on the status page and in /metrics, and
enforced for a team that opts in, with the score cache in the same requests."""

from __future__ import annotations

import random
from typing import Any

import structlog

from gateway.http.auth import hash_key
from tests.conftest import OTHER_TEAM_KEY, TEAM_KEY, gateway_config
from tests.fakes.cohere import FakeCohere, Faults
from tests.gateway.http.test_openapi import validator
from tests.support.depth_traces import MODEL, advice, grade, graded, positions, rerank, row, send
from tests.support.routing import ADMIN, get, metric, start
from tests.support.servers import ServerLoop

MANAGER_KEY = "ads-manager-key"


def depth_gateway(
    servers: ServerLoop, search: dict[str, Any] | None = None, **sections: Any
) -> tuple[str, FakeCohere]:
    """A gateway whose upstream scores by the grades in the documents; team `ads` may
    send 300 documents and has a manager key."""
    fake = FakeCohere(score=grade)
    data = gateway_config({"cohere-a": servers.serve(fake.app())}, **sections)
    data["teams"]["ads"]["limits"] = {"max_documents": 300}
    data["teams"]["ads"]["manager_key_sha256"] = [hash_key(MANAGER_KEY)]
    if search:
        data["teams"]["search"]["depth"] = search
    return start(servers, data), fake


async def test_advice_from_live_traffic_cache_hits_included(servers: ServerLoop) -> None:
    url, fake = depth_gateway(servers)
    rng = random.Random(21)
    lists = await send(url, rng, 50, 100, 20)
    for texts in lists[:10]:  # the same requests again: answered by the score cache
        status, headers, body = await rerank(url, texts)
        assert status == 200 and headers["X-Cache"] == "hit"
        assert [r["index"] for r in body["results"]] == positions(texts, 10)
    assert len(fake.calls) == 50
    await send(url, rng, 60, 300, 60, key=OTHER_TEAM_KEY)

    report = await advice(url)
    assert report["scope"] == "this process"
    _, spec = await get(url, "/admin/openapi.json", ADMIN)
    validator(spec, "DepthReport").validate(report)
    search = row(report, "search")
    assert search["requests"] == search["measured"] == 60  # the 10 cache hits count
    assert search["status"] == "advice" and search["needs"] == 20
    assert search["recall"]["recall"] == 1.0 and search["recall"]["low"] >= 0.99
    assert search["saving"]["usd_per_day"] == 0.0  # 100 and 20 documents: 1 unit each
    assert "saves no search units" in search["saving"]["note"]

    ads = row(report, "ads")
    assert ads["needs"] == 75 and ads["sends"] == {"mean": 300.0, "p90": 300, "max": 300}
    saving = ads["saving"]
    assert (saving["per_request_now"], saving["per_request_advised"]) == (3, 1)
    assert "would bill 1 at depth 75" in ads["message"]
    # Priced by the rule: two units fewer per request at $2.00 per 1,000 units.
    per_day = saving["requests_per_day"]
    assert saving["usd_per_day"] == round(per_day * 2 * 2.0 / 1000, 6)
    assert saving["latency_ms_p90"] > 0

    # The gauges say the same, labelled by configured teams and models.
    needed = "rerank_depth_needed_documents"
    assert await metric(url, needed, team="search", model=MODEL) == 20
    assert await metric(url, needed, team="ads", model=MODEL) == 75
    assert await metric(url, "rerank_depth_sent_documents", team="ads", model=MODEL) == 300


async def test_a_manager_key_sees_only_its_team(servers: ServerLoop) -> None:
    url, _ = depth_gateway(servers)
    rng = random.Random(22)
    await send(url, rng, 3, 30, 30)
    await send(url, rng, 3, 30, 30, key=OTHER_TEAM_KEY)
    manager = {"Authorization": f"Bearer {MANAGER_KEY}"}
    assert {r["team"] for r in (await advice(url))["rows"]} == {"search", "ads"}
    assert {r["team"] for r in (await advice(url, manager))["rows"]} == {"ads"}
    assert {r["team"] for r in (await advice(url, manager, "?team=ads"))["rows"]} == {"ads"}
    status, body = await get(url, "/admin/depth?team=search", manager)
    assert (
        status == 403
        and "only that team's depth advice (/admin/depth?team=ads)" in (body["message"])
    )
    status, body = await get(url, "/admin/depth?team=nobody", ADMIN)
    assert status == 404 and "unknown team 'nobody'" in body["message"]
    status, _ = await get(url, "/admin/depth", {"Authorization": f"Bearer {TEAM_KEY}"})
    assert status == 401


async def test_enforce_mode_sends_at_most_the_depth_and_returns_every_index(
    servers: ServerLoop,
) -> None:
    url, fake = depth_gateway(servers, search={"mode": "enforce", "explore_share": 0.25})
    rng = random.Random(23)
    await send(url, rng, 60, 100, 20)  # no advice yet: all at full depth, measured
    assert all(len(call["documents"]) == 100 for call in fake.calls)
    first = row(await advice(url), "search")
    assert (first["mode"], first["enforced"], first["needs"]) == ("enforce", 20, 20)

    fake.calls.clear()
    answers: list[tuple[dict[str, str], dict[str, Any], list[str]]] = []
    for i in range(60):  # no top_n: the caller wants every index back
        texts = graded(rng, 100, 20, 10, tag=f"enforced-{i}")
        status, headers, body = await rerank(url, texts, top_n=None)
        assert status == 200
        answers.append((headers, body, texts))
    explored = [a for a in answers if a[0].get("X-Rerank-Depth") == "100/100; explore"]
    cut = [a for a in answers if a[0].get("X-Rerank-Depth") == "20/100"]
    assert len(explored) + len(cut) == 60 and cut and explored  # both: all but 3e-8 of runs
    # Upstream saw more than 20 documents only for the explored sample.
    assert sorted(len(c["documents"]) for c in fake.calls) == [20] * len(cut) + [100] * len(
        explored
    )
    for _, body, texts in cut:
        indices = [r["index"] for r in body["results"]]
        assert sorted(indices) == list(range(100))  # every index, once
        assert set(indices[:10]) == set(positions(texts, 10))  # its top 10 are within 20
        assert indices[20:] == list(range(20, 100))  # the rest in the caller's order
        assert all(r["relevance_score"] == 0.0 for r in body["results"][20:])
        assert body["meta"]["billed_units"] == {"search_units": 1}
        assert any("only the first 20 of 100" in w for w in body["meta"]["warnings"])
    # The same requests again: the score cache answers the cut ones whole (they were
    # stored by the first round); an explored one now sends upstream only what it lacks.
    before = len(fake.calls)
    for _, _, texts in cut:
        status, again, body = await rerank(url, texts, top_n=None)
        if again["X-Rerank-Depth"] == "20/100":
            assert again["X-Cache"] == "hit"
        assert sorted(r["index"] for r in body["results"]) == list(range(100))
    assert all(len(c["documents"]) == 80 for c in fake.calls[before:])  # 20-99 of explored
    # Measured: the full-depth ones; counted: all of them.
    report = row(await advice(url), "search")
    assert report["requests"] == 60 + 60 + len(cut)
    assert report["measured"] == 60 + report["explored"]
    assert report["explored"] >= len(explored)
    assert await metric(
        url, "rerank_depth_requests_total", team="search", model=MODEL, action="cut"
    ) >= len(cut)
    assert await metric(url, "rerank_depth_enforced_documents", team="search", model=MODEL) == 20

    # top_n above the depth: never fewer reranked than asked for. Explored, such a
    # request is measured, but it is no sample of the depth's drift (its own top 30
    # reach beyond 20 whatever the first stage does).
    wide_explored = 0
    for i in range(20):
        status, headers, body = await rerank(url, graded(rng, 100, 20, 10, tag=f"w{i}"), top_n=30)
        assert len(body["results"]) == 30
        if headers["X-Rerank-Depth"] == "100/100; explore":
            wide_explored += 1
            assert len(fake.calls[-1]["documents"]) == 100
        else:
            assert headers["X-Rerank-Depth"] == "30/100"
            assert len(fake.calls[-1]["documents"]) == 30
    assert wide_explored  # all but 0.3% of runs

    later = row(await advice(url), "search")
    assert later["measured"] == report["measured"] + wide_explored
    assert later["explored"] == report["explored"] and not later["reverted"]


async def test_drift_in_the_explored_sample_switches_back_to_advise(servers: ServerLoop) -> None:
    url, fake = depth_gateway(servers, search={"mode": "enforce", "explore_share": 0.5})
    rng = random.Random(24)
    await send(url, rng, 60, 100, 20, top_n=None)
    assert row(await advice(url), "search")["enforced"] == 20
    # The team's first stage changes: its best documents now sit between 40 and 60.
    with structlog.testing.capture_logs() as logs:
        for i in range(60):  # half explored: 10 or more in all but 1e-8 of runs
            await rerank(url, graded(rng, 100, 60, 10, tag=f"moved-{i}", start=40), top_n=None)
        report = row(await advice(url), "search")
    reverted = [e for e in logs if e.get("event") == "depth_enforcement_reverted"]
    assert len(reverted) == 1 and reverted[0]["operator_event"]
    assert reverted[0]["team"] == "search" and reverted[0]["depth"] == 20
    assert reverted[0]["explored_recall"] < 0.99
    assert report["reverted"] is True and report["enforced"] is None
    assert (
        await metric(url, "rerank_operator_events_total", event="depth_enforcement_reverted") == 1
    )
    # From now on every document is reranked again, and nothing says otherwise.
    calls = len(fake.calls)
    status, headers, _ = await rerank(url, graded(rng, 100, 20, 10, tag="after"), top_n=None)
    assert status == 200 and "X-Rerank-Depth" not in headers
    assert len(fake.calls[calls]["documents"]) == 100


async def test_a_fallback_answer_is_not_measured(servers: ServerLoop) -> None:
    fake = FakeCohere(score=grade, faults=Faults(status=503))
    data = gateway_config({"cohere-a": servers.serve(fake.app())})
    data["models"][MODEL]["fallback"] = "passthrough"
    data["models"][MODEL]["max_attempts"] = 1
    url = start(servers, data)
    status, _, body = await rerank(url, graded(random.Random(25), 30, 30, 10))
    assert status == 200 and "fallback" in body["meta"]["warnings"][0]
    assert (await advice(url))["rows"] == []  # the caller's own order, not a verdict


async def test_the_status_page_has_a_depth_panel(servers: ServerLoop) -> None:
    url, _ = depth_gateway(servers)
    await send(url, random.Random(26), 60, 300, 60, key=OTHER_TEAM_KEY)
    await advice(url)  # counts written to the store
    status, page = await get(url, "/admin/status", ADMIN)
    assert status == 200
    panel = page[page.index('<section id="depth">') :]
    panel = panel[: panel.index("</section>")]
    assert f'<tr data-team="ads" data-model="{MODEL}">' in panel
    assert '<td class="n needs">75</td>' in panel
    assert "would bill 1 at depth 75" in panel and "<script" not in page
    status, data = await get(url, "/admin/status.json", ADMIN)
    assert row(data["depth"], "ads")["needs"] == 75


async def test_depth_advice_can_be_switched_off(servers: ServerLoop) -> None:
    url, fake = depth_gateway(servers, depth={"enabled": False})
    await send(url, random.Random(27), 3, 30, 30)
    assert len(fake.calls) == 3 and (await advice(url))["rows"] == []


async def test_a_cut_request_with_relevant_spans_has_none_beyond_the_depth(
    servers: ServerLoop,
) -> None:
    fake = FakeCohere(score=grade)
    data = gateway_config({"cohere-a": servers.serve(fake.app())})
    v5 = "rerank-v5.0-pro"
    data["models"][v5] = {"deployments": [{"provider": "cohere-a", "relevant_spans": True}]}
    data["teams"]["search"]["depth"] = {"mode": "enforce", "explore_share": 0.0}
    url = start(servers, data)
    rng = random.Random(28)
    for i in range(60):
        texts = graded(rng, 100, 20, 10, tag=f"v5-{i}")
        assert (await rerank(url, texts, model=v5))[0] == 200
    status, body = await get(url, "/admin/depth", ADMIN)
    assert next(r for r in body["rows"] if r["model"] == v5)["enforced"] == 20
    texts = [f"q {t}" for t in graded(rng, 100, 20, 10, tag="spans")]  # words of the query
    status, headers, body = await rerank(
        url, texts, top_n=None, model=v5, relevant_spans={"mode": "enabled"}
    )
    assert status == 200 and headers["X-Rerank-Depth"] == "20/100"
    assert len(fake.calls[-1]["documents"]) == 20
    assert sorted(r["index"] for r in body["results"]) == list(range(100))
    with_spans = {r["index"] for r in body["results"] if "relevant_spans" in r}
    assert with_spans and max(with_spans) < 20
