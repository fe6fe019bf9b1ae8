"""Typed decoding of the rerankers' JSON answers with msgspec.

Decoding straight into small structs keeps only what the gateway uses (index, score,
usage): fields it does not declare, such as the documents vLLM always echoes, are
skipped by the parser without ever becoming Python strings, so a 1,000-document echo
costs a scan, not a second copy of every document.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import msgspec

from providers.http import HttpResponse, count_or_none, malformed

T = TypeVar("T")


class Rank(msgspec.Struct):
    index: int
    relevance_score: float


class CohereShaped(msgspec.Struct):
    """vLLM, Infinity and Jina: `{results: [{index, relevance_score}], usage}`."""

    results: list[Rank]
    usage: Any = None  # read leniently: an odd usage block must not fail the scores


class VoyageShaped(msgspec.Struct):
    """Voyage: `{data: [{index, relevance_score}], usage: {total_tokens}}`."""

    data: list[Rank]
    usage: Any = None


class IndexScore(msgspec.Struct):
    index: int
    score: float


class DataScored(msgspec.Struct):
    """Pinecone and Mixedbread: `{data: [{index, score}], usage}`."""

    data: list[IndexScore]
    usage: Any = None


class Logit(msgspec.Struct):
    index: int
    logit: float


class NimShaped(msgspec.Struct):
    """NVIDIA NIM: `{rankings: [{index, logit}]}`, no usage."""

    rankings: list[Logit]


def parse_ranked(label: str, resp: HttpResponse, count: int) -> tuple[list[float], Any]:
    """Scores and the usage block of a Cohere-shaped answer (vLLM, Infinity, Jina)."""
    answer = decode(label, resp, CohereShaped)
    pairs = ((r.index, r.relevance_score) for r in answer.results)
    return align(label, pairs, count, resp), answer.usage


def decode(label: str, resp: HttpResponse, shape: type[T]) -> T:
    """The 2xx body as `shape`, or a retryable MALFORMED error saying what did not fit."""
    try:
        return msgspec.json.decode(resp.body, type=shape)
    except msgspec.ValidationError as exc:
        # msgspec names the path and the types only, never the values.
        raise malformed(label, f"an answer of an unexpected shape ({exc})", resp) from exc
    except msgspec.DecodeError as exc:
        raise malformed(label, "a body that is not JSON", resp) from exc


def align(
    label: str, pairs: Iterable[tuple[int, float]], count: int, resp: HttpResponse
) -> list[float]:
    """Scores in document order from (index, score) pairs: each document exactly once."""
    scores: list[float | None] = [None] * count
    for index, score in pairs:
        if not 0 <= index < count or scores[index] is not None:
            raise malformed(label, f"a result with an invalid index {index!r}", resp)
        scores[index] = score
    if None in scores:
        missing = scores.count(None)
        raise malformed(label, f"scores for only {count - missing} of {count} documents", resp)
    return scores  # type: ignore[return-value]  # no None left


def usage_tokens(usage: Any, *names: str) -> int | None:
    """The first of `names` in a usage mapping that holds a count."""
    if not isinstance(usage, dict):
        return None
    for name in names:
        tokens = count_or_none(usage.get(name))
        if tokens is not None:
            return tokens
    return None
