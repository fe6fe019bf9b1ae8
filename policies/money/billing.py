"""Search units: what Cohere-style rerank bills for one upstream call.

Billing rules (Cohere, Azure, Bedrock; see the shared reference, cohere-api.md §2):
one search unit is one query with up to 100 documents, and a document longer than
the chunk size (about 500 tokens, the query included) is split into chunks that each
count as a document. Upstreams that report `billed_units` are believed; for the
others (Bedrock, OCI) and before any call (to reserve budget) we estimate.
Tokens are approximated from characters: no tokenizer runs on the hot path.

Token-billed upstreams (Rerank 5, Jina, Voyage, self-hosted servers) count every
(query, document) pair they score: the query's tokens once per document plus the
document's own. `estimate_tokens` reserves for that before the call; the upstream's own
usage figure, when it gives one, settles the reservation afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

DOCUMENTS_PER_UNIT = 100
CHUNK_TOKENS = 500  # a chunk holds the query and a slice of the document
TOKENS_PER_CHAR = 0.25  # about 4 characters per token for English text
UPSTREAM_MAX_TOKENS_PER_DOC = 4096  # Cohere's default truncation before chunking


@dataclass(frozen=True, slots=True)
class BillingRules:
    """The configurable parts of the estimate (config `pricing.chunk_tokens`, ...)."""

    chunk_tokens: int = CHUNK_TOKENS
    tokens_per_char: float = TOKENS_PER_CHAR

    def tokens(self, chars: int) -> int:
        return math.ceil(chars * self.tokens_per_char)

    def chunks(self, query_tokens: int, document: str, max_tokens_per_doc: int | None) -> int:
        """How many billed "documents" one document counts as."""
        doc_tokens = min(
            self.tokens(len(document)), max_tokens_per_doc or UPSTREAM_MAX_TOKENS_PER_DOC
        )
        if doc_tokens + query_tokens <= self.chunk_tokens:
            return 1
        # Every chunk repeats the query; a query as long as a chunk still leaves one token.
        room = max(1, self.chunk_tokens - query_tokens)
        return math.ceil(doc_tokens / room)

    def estimate(
        self, query: str, documents: Sequence[str], max_tokens_per_doc: int | None = None
    ) -> int:
        """Search units one upstream call with these texts is expected to bill."""
        return math.ceil(
            self.billed_documents(query, documents, max_tokens_per_doc) / DOCUMENTS_PER_UNIT
        )

    def billed_documents(
        self, query: str, documents: Sequence[str], max_tokens_per_doc: int | None = None
    ) -> int:
        """How many documents a call with these texts counts, chunks counted apart."""
        if not documents:
            return 0
        query_tokens = self.tokens(len(query))
        # The usual case, in one pass in C: when the longest document fits in one chunk
        # with the query, every document does (this runs several times per request).
        if self.tokens(max(map(len, documents))) + query_tokens <= self.chunk_tokens:
            return len(documents)
        return sum(self.chunks(query_tokens, doc, max_tokens_per_doc) for doc in documents)

    def estimate_tokens(
        self, query: str, documents: Sequence[str], max_tokens_per_doc: int | None = None
    ) -> int:
        """Tokens one upstream call with these texts is expected to bill (query per pair)."""
        # `tokens` of each document, mapped in C: no Python call per document.
        doc_tokens: Iterable[int] = map(
            math.ceil, map(self.tokens_per_char.__mul__, map(len, documents))
        )
        if max_tokens_per_doc is not None:
            doc_tokens = (min(t, max_tokens_per_doc) for t in doc_tokens)
        return len(documents) * self.tokens(len(query)) + sum(doc_tokens)


DEFAULT_RULES = BillingRules()
