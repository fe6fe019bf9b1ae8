"""Offline lexical reranker: Okapi BM25 over the documents of one call.

Needs no network and no weights, so it serves the embedded default model and is the
last-resort fallback. Scores are mapped into [0, 1] by dividing by the best score any
document could reach for this query, so they read like relevance scores. Because IDF
comes from the call's own documents, scores are relative to the batch.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

from annotated_types import Gt, Interval

from providers.types import UpstreamCall, UpstreamResult

_TOKEN = re.compile(r"\w+", re.UNICODE)
_INLINE_CHARS = 100_000  # above this much text, score in a worker thread


@dataclass
class LocalOptions:
    """BM25 parameters; the defaults are the usual ones."""

    k1: Annotated[float, Gt(0.0)] = 1.2
    b: Annotated[float, Interval(ge=0.0, le=1.0)] = 0.75
    type: Literal["local"] = "local"  # the config's `type` key: selects this options class


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def bm25_scores(
    query: str, documents: Sequence[str], k1: float = 1.2, b: float = 0.75
) -> list[float]:
    """BM25 score of each document for the query, normalised into [0, 1]."""
    terms = set(tokenize(query))
    docs = [Counter(tokenize(d)) for d in documents]
    if not terms or not docs:
        return [0.0] * len(docs)
    n = len(docs)
    lengths = [sum(d.values()) for d in docs]
    avgdl = (sum(lengths) / n) or 1.0
    idf = {}
    for term in terms:
        df = sum(1 for d in docs if term in d)
        # Lucene's IDF stays positive even for terms in most documents.
        idf[term] = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
    ceiling = sum(idf.values()) * (k1 + 1.0)
    scores = []
    for doc, length in zip(docs, lengths, strict=True):
        norm = k1 * (1.0 - b + b * length / avgdl)
        total = 0.0
        for term in terms:
            tf = doc.get(term)
            if tf:
                total += idf[term] * tf * (k1 + 1.0) / (tf + norm)
        scores.append(min(1.0, total / ceiling))
    return scores


class LocalProvider:
    """The `local` provider type."""

    type = "local"
    batch_relative = True

    def __init__(self, name: str, options: LocalOptions) -> None:
        self.name = name
        self.options = options

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def rerank(self, call: UpstreamCall) -> UpstreamResult:
        args = (call.query, call.documents, self.options.k1, self.options.b)
        if sum(map(len, call.documents)) > _INLINE_CHARS:
            # Big inputs take tens of milliseconds: keep the event loop answering others.
            scores = await asyncio.to_thread(bm25_scores, *args)
        else:
            scores = bm25_scores(*args)
        # Nothing is billed for offline ranking.
        return UpstreamResult(scores=scores, search_units=0)
