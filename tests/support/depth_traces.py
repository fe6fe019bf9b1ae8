"""Test traces for depth advice: lists whose relevant documents sit where a test says;
sending them to a gateway and reading its advice back (/admin/depth).

A document's text carries its relevance grade (`... grade 0.734512`), and `grade` is a
score function for `FakeCohere(score=grade)`: the fake upstream then ranks by a fixed
relevance list, as a reranker that agrees with the test's ground truth would.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from policies.quality.depth import Tally, ranking
from tests.conftest import TEAM_KEY
from tests.support.calls import post
from tests.support.routing import ADMIN, get

MODEL = "rerank-v3.5"


def graded(
    rng: random.Random,
    documents: int,
    relevant_within: int,
    relevant: int,
    tag: str = "",
    start: int = 0,
) -> list[str]:
    """`documents` texts whose `relevant` best sit at random among positions `start` to
    `relevant_within` - 1 (grades 0.5-1.0; the rest 0.0-0.1)."""
    best = set(rng.sample(range(start, relevant_within), relevant))
    return [
        f"{tag} doc {i} grade {0.5 + rng.random() / 2 if i in best else rng.random() / 10:.6f}"
        for i in range(documents)
    ]


def grade(query: str, document: str) -> float:
    return float(document.rsplit(" ", 1)[1])


def tally_of(
    rng: random.Random,
    requests: int,
    documents: int,
    relevant_within: int,
    k: int = 10,
    explored: bool = False,
) -> Tally:
    """What `requests` requests of such lists leave in a tally (top k measured)."""
    tally = Tally()
    for _ in range(requests):
        scores = [grade("", t) for t in graded(rng, documents, relevant_within, k)]
        tally.add(documents, ranking(scores)[:k], explored)
    return tally


def positions(texts: Sequence[str], top: int) -> list[int]:
    """The caller's positions of the `top` best documents."""
    return ranking([grade("", t) for t in texts])[:top]


async def rerank(
    url: str, documents: list[str], key: str = TEAM_KEY, top_n: int | None = 10, **extra: Any
) -> tuple[int, dict[str, str], dict[str, Any]]:
    body: dict[str, Any] = {"model": MODEL, "query": "q", "documents": documents, **extra}
    if top_n is not None:
        body["top_n"] = top_n
    return await post(url, body, key)


async def send(
    url: str, rng: random.Random, count: int, documents: int, within: int, **kw: Any
) -> list[list[str]]:
    """`count` requests of lists whose top 10 sit in their first `within`; the lists."""
    sent = []
    for i in range(count):
        texts = graded(rng, documents, within, 10, tag=f"r{rng.random()}-{i}")
        status, _, body = await rerank(url, texts, **kw)
        assert status == 200, body
        sent.append(texts)
    return sent


async def advice(url: str, headers: dict[str, str] = ADMIN, query: str = "") -> dict[str, Any]:
    status, body = await get(url, "/admin/depth" + query, headers)
    assert status == 200, body
    return body


def row(report: dict[str, Any], team: str) -> dict[str, Any]:
    return next(r for r in report["rows"] if r["team"] == team and r["model"] == MODEL)
