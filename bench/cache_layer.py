"""CPU cost of the score cache layer alone, per request: hits and misses of 50 documents.

    python -m bench.cache_layer [--root DIR] [--rounds 5] [--requests 2000]

Runs `gateway.chain.cache.CacheLayer` over an in-memory store with an inner scorer that
answers at once, so what is timed is the layer: keys, lookups, bookkeeping, the write.
Teams: `shared` (the default), and, where the tree has the setting, `private` (with
`hide_cross_team_hits`): its hit on its own copies, its miss, and its replay of what the
shared team scored (the inner scorer answers the replay at once: dispatch's wait for a
call's typical latency is not CPU and is not timed). `--root` imports the
gateway from another source tree (an export of an older commit), so the same script
measures before and after a change. Prints the best of `--rounds` runs in µs per
request (the run least disturbed by other work on a shared machine); compare runs made
side by side. `--calls` counts function calls per request instead (cProfile): a figure
that no other work on the machine moves.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path
from typing import Any


def build(root: Path) -> tuple[Any, Any, bool]:
    sys.path.insert(0, str(root))
    from gateway.chain.cache import CacheLayer
    from gateway.chain.job import Facts, Scored, ScoreJob
    from gateway.observe.metrics import Metrics
    from gateway.state.score_cache import CacheSettings
    from policies.cache import MemoryStore

    class Inner:
        async def score(self, job: Any) -> Any:
            job.report.deployment = "fake/model"
            replay = getattr(job, "replay", None)
            scores = list(replay) if replay is not None else [0.5] * len(job.documents)
            return Scored(scores, 1, 0, 1)

    fields = CacheSettings.__dataclass_fields__
    private = "private_teams" in fields
    extra = {"private_teams": frozenset({"private"})} if private else {}
    settings = CacheSettings(
        families={"m": "m"},
        ttl_s={"m": 3600.0},
        isolated_teams=frozenset(),
        uncacheable=frozenset(),
        **extra,
    )
    layer = CacheLayer(Inner(), MemoryStore(max_entries=2_000_000), settings, Metrics())

    def job(team: str, query: str, docs: list[str]) -> Any:
        facts = Facts("r", team, "m", time.monotonic() + 60)
        return ScoreJob(facts, query, docs)

    return layer, job, private


DOCS = [f"document {i} " + "lorem ipsum dolor sit amet " * 30 for i in range(50)]


async def timed(layer: Any, jobs: list[Any]) -> float:
    started = time.process_time()
    for j in jobs:
        await layer.score(j)
    return (time.process_time() - started) / len(jobs) * 1e6


async def calls(layer: Any, jobs: list[Any]) -> float:
    """Function calls (Python and C) per request, as cProfile counts them: the same on
    any machine under any load, so a difference of one call shows."""
    profile = cProfile.Profile()
    profile.enable()
    for j in jobs:
        await layer.score(j)
    profile.disable()
    return pstats.Stats(profile).total_calls / len(jobs)  # type: ignore[attr-defined]


async def run(
    root: Path, rounds: int, requests: int, measure: Any, shared_only: bool = False
) -> dict[str, float]:
    layer, job, private = build(root)
    private = private and not shared_only
    timed = measure
    teams = ["shared"] + (["private"] if private else [])
    results: dict[str, list[float]] = {}
    for r in range(rounds):
        for team in teams:
            misses = [job(team, f"{team} query {r} {i}", DOCS) for i in range(requests)]
            results.setdefault(f"{team} miss", []).append(await timed(layer, misses))
            hits = [job(team, f"{team} query {r} {i}", DOCS) for i in range(requests)]
            results.setdefault(f"{team} hit", []).append(await timed(layer, hits))
        if private:  # what the shared team scored, asked by the private one: replayed
            replays = [job("private", f"shared query {r} {i}", DOCS) for i in range(requests)]
            results.setdefault("private replay", []).append(await timed(layer, replays))
    return {name: round(min(v), 1) for name, v in results.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--calls", action="store_true", help="count calls instead of CPU")
    parser.add_argument("--shared-only", action="store_true", help="the shared team alone")
    args = parser.parse_args()
    measure = calls if args.calls else timed
    figures = asyncio.run(run(args.root, args.rounds, args.requests, measure, args.shared_only))
    unit = "function calls" if args.calls else "µs of CPU"
    print(f"{args.root} (load {os.getloadavg()[0]:.2f}): {unit} per 50-document request")
    for name, us in figures.items():
        print(f"  {name:16} {us:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
