"""Which model version an upstream model id names, so scores of two versions never mix.

Scores are only comparable within one model version: Rerank 5's calibrated 0..1 scores
are not Rerank 4's, nor a BGE cross-encoder's. The score cache keys entries by a model's
cache family; `version_key` gives the part of that family that names what actually
scores. Cohere's ids differ by cloud (`rerank-v3.5`, Bedrock's `cohere.rerank-v3-5:0`,
Azure's `Cohere-rerank-v3.5`, `cohere-rerank-v5-pro`, OCI's `cohere.rerank.v3-5`), so a
Cohere id is reduced to its generation and variant (`cohere-v3.5`, `cohere-v5.0-pro`);
any other id stands for itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_COHERE = re.compile(
    r"rerank[-_.](?P<lang>english-|multilingual-)?v(?P<major>\d+)(?:[-._](?P<minor>\d+))?"
    r"(?:[-._](?P<variant>pro|fast))?",
    re.IGNORECASE,
)


def cohere_version(upstream_model: str) -> str | None:
    """`cohere-v3.5`, `cohere-v4.0-pro`, `cohere-v5.0-fast`...; None for a non-Cohere id."""
    lowered = upstream_model.lower()
    if not (lowered.startswith("rerank-") or "cohere" in lowered):
        return None
    match = _COHERE.search(upstream_model)
    if match is None:
        return None
    lang = (match["lang"] or "").lower()
    variant = f"-{match['variant'].lower()}" if match["variant"] else ""
    return f"cohere-{lang}v{match['major']}.{match['minor'] or 0}{variant}"


def version_key(upstream_model: str) -> str:
    """What scores for this upstream id: its Cohere version, or the id itself."""
    return cohere_version(upstream_model) or upstream_model


def versions(upstream_models: Iterable[str]) -> list[str]:
    """The distinct version keys of a model's deployments, sorted."""
    return sorted({version_key(m) for m in upstream_models})
