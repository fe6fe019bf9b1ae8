"""`make bench ARGS="--scenarios depth"`: what depth advice costs a request (issue 23).

A micro-benchmark, in process, no gateway: the calls the pipeline makes for a request of
100 documents with top_n 10 (`DepthBook.plan` before scoring, `complete` and
`DepthBook.record` after), timed over many calls, beside the ranking the answer needs
anyway (which `complete` now does once for both), and the folding of the same records
into counters that the background flush does off the request path. Reported as
microseconds per request, best of several rounds, with the load average, since the
machine is shared.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from bench import procstat
from gateway.observe.metrics import Metrics
from gateway.state.depth import DepthBook
from policies.money.billing import BillingRules
from policies.quality.depth import DepthSettings, Enforcer, complete, ranking
from policies.quality.depth_store import MemoryDepthStore

DOCUMENTS, TOP_N = 100, 10


def _best_us(run: Callable[[], None], calls: int, rounds: int = 7) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            run()
        best = min(best, time.perf_counter() - started)
    return round(best / calls * 1e6, 3)


def run_depth(calls: int = 20_000) -> dict[str, Any]:
    rng = random.Random(1)
    settings = DepthSettings()
    texts = [f"document {i} " + "word " * rng.randint(20, 120) for i in range(DOCUMENTS)]
    scores = [rng.random() for _ in range(DOCUMENTS)]
    order = ranking(scores)
    book = DepthBook(settings, {}, MemoryDepthStore(24), {}, Metrics(), BillingRules())
    team, model = "search", "rerank-v3.5"

    def advise_mode() -> None:
        plan = book.plan(team, model, DOCUMENTS, TOP_N)
        book.record(plan, team, model, order, TOP_N, "query", texts, None)

    load_before = procstat.load_average()
    measure_us = _best_us(advise_mode, calls)
    tally = book._tallies[team, model]
    tally.take()
    for _ in range(calls):
        advise_mode()
    started = time.perf_counter()
    tally.take()
    fold_us = round((time.perf_counter() - started) / calls * 1e6, 3)

    # Enforce mode at depth 20, nothing explored: every request is cut.
    book._enforcers[team, model] = Enforcer(team, model, 20, 0.0)

    def enforce_mode() -> None:
        plan = book.plan(team, model, DOCUMENTS, None)
        book.record(plan, team, model, order, None, "query", texts, None)

    prefix = scores[:20]
    return {
        "documents": DOCUMENTS,
        "top_n": TOP_N,
        "load_average_before": [round(x, 2) for x in load_before],
        "request_path_us": {
            "advise: plan + record": measure_us,
            "enforce, cut to 20: plan + record": _best_us(enforce_mode, calls),
            "enforce, cut to 20: the answer's ranking": _best_us(
                lambda: complete(prefix, DOCUMENTS), calls
            ),
        },
        "for_scale_us": {
            "the answer's ranking of 100 (was there before)": _best_us(
                lambda: complete(scores, DOCUMENTS), calls
            ),
            "sum(range(100)) (this machine's speed)": _best_us(lambda: sum(range(100)), calls),
        },
        "background_us_per_request": {"fold at flush": fold_us},
        "load_average_after": [round(x, 2) for x in procstat.load_average()],
    }


def print_depth(result: dict[str, Any]) -> None:
    print(
        f"\ndepth: a request of {result['documents']} documents, top_n {result['top_n']} "
        f"(load average {result['load_average_before']} -> {result['load_average_after']})"
    )
    for group in ("request_path_us", "for_scale_us", "background_us_per_request"):
        for name, us in result[group].items():
            label = group.split("_us")[0].replace("_", " ")
            print(f"  {label:<26} {name:<48} {us:>8.2f} us")


if __name__ == "__main__":
    print_depth(run_depth())
