"""Test traces for depth advice: lists whose relevant documents sit where a test says.

A document's text carries its relevance grade (`... grade 0.734512`), and `grade` is a
score function for `FakeCohere(score=grade)`: the fake upstream then ranks by a fixed
relevance list, as a reranker that agrees with the test's ground truth would.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from policies.quality.depth import Tally, ranking


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
