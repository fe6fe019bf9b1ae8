"""The ledger behind a running gateway: what a request leaves in it, the reports read from
it, with failover, budgets and the cache in the same requests."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import redis as redis_sync
import yaml

from gateway.http.auth import hash_key
from tests.conftest import ADMIN_KEY, OTHER_TEAM_KEY, TEAM_KEY, spend_in_redis
from tests.fakes.cohere import FakeCohere, Faults
from tests.support.calls import post
from tests.support.governance import get, governed
from tests.support.ledger import (
    BODY,
    UNIT_MICROS,
    events,
    ledger_section,
    migrate,
    served_events,
    wait_for,
)
from tests.support.paths import ROOT
from tests.support.postgres import SHARED_DSN
from tests.support.servers import ServerLoop

MANAGER_KEY = "search-manager-key"


def ledgered(
    schema: str, upstreams: dict[str, str], prefix: str, **team: Any
) -> dict[str, Any]:
    data = governed(upstreams, backend="redis", prefix=prefix, search=team)
    data["teams"]["search"]["manager_key_sha256"] = [hash_key(MANAGER_KEY)]
    data["ledger"] = ledger_section(SHARED_DSN, schema)
    for i, deployment in enumerate(data["models"]["rerank-v3.5"]["deployments"]):
        deployment["priority"] = i
    return data


async def test_failover_and_budget_land_in_the_ledger_exactly(
    servers: ServerLoop,
    start_gateway: Callable[..., str],
    ledger_schema: str,
    redis_prefix: str,
    redis_client: redis_sync.Redis,
) -> None:
    """The first deployment always fails, the second serves; the budget allows five
    requests. Ledger events == upstream answers == 200s, each naming the deployment that
    served; refusals are events too; the budget counter equals the ledger's cost."""
    broken = FakeCohere(faults=Faults(status=503))
    working = FakeCohere()
    await migrate(SHARED_DSN, ledger_schema)
    url = start_gateway(
        ledgered(
            ledger_schema,
            {"cohere-a": servers.serve(broken.app()), "cohere-b": servers.serve(working.app())},
            redis_prefix,
            budget={"usd_per_day": 5 * UNIT_MICROS / 1e6},
        )
    )
    statuses = [(await post(url, {**BODY, "query": f"q{i}"}, TEAM_KEY))[0] for i in range(7)]
    assert statuses == [200] * 5 + [402] * 2
    assert (await post(url, BODY, OTHER_TEAM_KEY))[0] == 200

    found = await wait_for(
        lambda: _when(events(SHARED_DSN, ledger_schema), lambda e: e.get(1) == 6),
        "six served events",
    )
    assert found == {1: 6, 5: 2}  # six served (five of search, one of ads), two refused
    served = await served_events(SHARED_DSN, ledger_schema)
    assert {e["deployment"] for e in served} == {"cohere-b/rerank-v3.5"}
    assert len(working.calls) == 6  # the first deployment failed each time until its breaker opened
    assert len(broken.calls) >= 5
    search = [e for e in served if e["team"] == "search"]
    assert {e["key"] for e in search} == {f"config:{hash_key(TEAM_KEY)[:8]}"}
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    assert spend_in_redis(redis_client, redis_prefix, "search", day) == sum(
        e["cost_micros"] for e in search
    ) == 5 * UNIT_MICROS

    # The report comes from the ledger, grouped as asked.
    status, _, report = await get(url + "/admin/usage?by=team,deployment", ADMIN_KEY)
    assert status == 200 and report["scope"] == "ledger"
    rows = {(r["team"], r["deployment"]): r for r in report["rows"]}
    assert rows["search", "cohere-b/rerank-v3.5"]["requests"] == 5
    assert rows["search", None]["rejected_budget"] == 2
    assert rows["ads", "cohere-b/rerank-v3.5"]["cost_usd"] == UNIT_MICROS / 1e6
    assert report["totals"]["search"]["cost_usd"] == 5 * UNIT_MICROS / 1e6


async def test_usage_reports_from_the_ledger_for_finance(
    fake_cohere: tuple[FakeCohere, str],
    start_gateway: Callable[..., str],
    ledger_schema: str,
    redis_prefix: str,
) -> None:
    await migrate(SHARED_DSN, ledger_schema)
    data = ledgered(ledger_schema, {"cohere-a": fake_cohere[1]}, redis_prefix)
    url = start_gateway(data)
    for key in (TEAM_KEY, TEAM_KEY, OTHER_TEAM_KEY):
        assert (await post(url, BODY, key))[0] == 200
    await wait_for(lambda: _when(events(SHARED_DSN, ledger_schema), lambda e: e.get(1) == 3),
                   "three events")  # fmt: skip
    month = datetime.now(UTC).strftime("%Y-%m")

    # CSV for a month, by key.
    async with aiohttp.ClientSession() as session, session.get(
        f"{url}/admin/usage?month={month}&by=team,key&format=csv",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    ) as resp:
        assert resp.status == 200 and resp.content_type == "text/csv"
        table = list(csv.DictReader(io.StringIO(await resp.text())))
    by_team = {row["team"]: row for row in table}
    assert by_team["search"]["key"] == f"config:{hash_key(TEAM_KEY)[:8]}"
    assert by_team["search"]["requests"] == "2" and by_team["ads"]["requests"] == "1"
    assert by_team["search"]["cost_usd"] == str(2 * UNIT_MICROS / 1e6)

    # A manager key reads its own team only, from the same ledger.
    status, _, own = await get(url + "/admin/usage", MANAGER_KEY)
    assert status == 200 and {r["team"] for r in own["rows"]} == {"search"}
    assert (await get(url + "/admin/usage?team=ads", MANAGER_KEY))[0] == 403
    # Bad input is a 400 that says what to change.
    status, _, answer = await get(url + "/admin/usage?by=colour", ADMIN_KEY)
    assert status == 400 and "group by one or more of team, key" in answer["message"]
    status, _, answer = await get(url + "/admin/usage?month=2026-13", ADMIN_KEY)
    assert status == 400 and "month must be YYYY-MM" in answer["message"]

    # The command line reads the same ledger (no provider section is needed).
    config = ROOT / "tests" / f".ledger-{ledger_schema}.yaml"
    config.write_text(yaml.safe_dump({k: data[k] for k in ("auth", "teams", "ledger", "limits",
                                                             "state")}))  # fmt: skip
    try:
        out = subprocess.run(
            [sys.executable, "-m", "gateway", "usage", "--config", str(config), "--month",
             month, "--by", "team", "--format", "csv"],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        config.unlink()
    assert out.returncode == 0, out.stderr
    cli = {row["team"]: row for row in csv.DictReader(io.StringIO(out.stdout))}
    assert cli["search"]["requests"] == "2" and cli["ads"]["requests"] == "1"


async def _when(found: Any, condition: Callable[[Any], bool]) -> Any:
    value = await found
    return value if condition(value) else None


async def test_a_replayed_cross_team_hit_is_billed_and_marked_in_the_ledger(
    fake_cohere: tuple[FakeCohere, str],
    start_gateway: Callable[..., str],
    ledger_schema: str,
    redis_prefix: str,
) -> None:
    """A team that hides other teams' hits is billed for a replay as for a call; the
    ledger marks it, so requests - replayed == upstream calls for the invoice."""
    fake, upstream = fake_cohere
    await migrate(SHARED_DSN, ledger_schema)
    data = ledgered(ledger_schema, {"cohere-a": upstream}, redis_prefix)
    data["cache"] = {"backend": "memory", "hide_cross_team_hits": True}
    url = start_gateway(data)
    assert (await post(url, BODY, TEAM_KEY))[0] == 200
    status, headers, _ = await post(url, BODY, OTHER_TEAM_KEY)  # the same documents
    assert status == 200 and headers["X-Cache"] == "miss" and len(fake.calls) == 1
    await wait_for(lambda: _when(events(SHARED_DSN, ledger_schema), lambda e: e.get(1) and e.get(8)),
                   "the call and the replay")  # fmt: skip
    _, _, report = await get(url + "/admin/usage?by=team", ADMIN_KEY)
    totals = report["totals"]
    assert (totals["search"]["requests"], totals["search"]["replayed"]) == (1, 0)
    assert (totals["ads"]["requests"], totals["ads"]["replayed"]) == (1, 1)
    assert totals["ads"]["replayed_cost_usd"] == totals["ads"]["cost_usd"] > 0
    calls = sum(t["requests"] - t["replayed"] for t in totals.values())
    assert calls == len(fake.calls)
