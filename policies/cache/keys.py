"""Cache keys: one digest per (model family, scope, max_tokens_per_doc, query, document).

A cross-encoder's score of a document does not depend on the other documents of the
request, so each document gets its own key. The fixed part (family, scope, token limit,
query) is hashed once per request and copied for each document, so a 100-document
request costs one pass over its text. Fields are length-prefixed, so no two different
tuples can feed the hash the same bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

DIGEST_BYTES = 16  # SHA-256 cut to 128 bits: collisions are out of reach for any cache size
_VERSION = b"rg-score-v1"  # change when the key layout changes, so old entries are ignored
_SEEN = b"rg-seen-v1"  # a team's own copies of entries (`KeySpace.seen_keys`)
_TAG_BYTES = 18  # `{` + 16 hex digits + `}`


def _field(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _encode(text: str) -> bytes:
    # JSON may carry lone surrogates; they must hash, not fail.
    return text.encode("utf-8", "surrogatepass")


class KeySpace:
    """Digests for the models of one gateway; `families` maps each model to its family.

    `slot_tag` (Redis Cluster): each key starts with `{<digest of family, scope, token
    limit, query>}`, a hash tag, so all keys of one request share a cluster slot and a
    lookup is one MGET on one node (measured 3x faster than spreading the keys over every
    node: bench/cluster_cache.py). Different queries still spread over the slots."""

    def __init__(self, families: Mapping[str, str], slot_tag: bool = False) -> None:
        self.slot_tag = slot_tag
        self._bases = {}
        for model, family in families.items():
            # SHA-256 (hardware-accelerated on most CPUs) measured faster than BLAKE2b here.
            base = hashlib.sha256(_field(_VERSION))
            base.update(_field(_encode(family)))
            self._bases[model] = base

    def document_keys(
        self,
        model: str,
        scope: str,
        query: str,
        max_tokens_per_doc: int | None,
        documents: Sequence[str],
    ) -> list[bytes]:
        """One key per document; `scope` is "" for shared entries or a team name."""
        prefix = self._bases[model].copy()
        prefix.update(_field(_encode(scope)))
        prefix.update(_field(b"" if max_tokens_per_doc is None else b"%d" % max_tokens_per_doc))
        prefix.update(_field(_encode(query)))
        keys = []
        for doc in documents:
            h = prefix.copy()
            h.update(_encode(doc))
            keys.append(h.digest()[:DIGEST_BYTES])
        if self.slot_tag:
            tag = b"{" + prefix.hexdigest()[:16].encode() + b"}"  # hex: never a brace inside
            return [tag + key for key in keys]
        return keys

    def seen_keys(self, team: str, keys: Sequence[bytes]) -> list[bytes]:
        """`team`'s own copy of each of `document_keys`' keys: for a team that must learn
        nothing from other teams' entries, these say what its own traffic had scored.
        Derived from the keys, so no text is hashed again; in the same slot when tagged."""
        base = _field(_SEEN) + _field(_encode(team))
        tag = _TAG_BYTES if self.slot_tag else 0
        sha256 = hashlib.sha256
        return [key[:tag] + sha256(base + key).digest()[:DIGEST_BYTES] for key in keys]
