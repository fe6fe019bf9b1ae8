"""Default latency priors of known reranker families, so a fresh gateway never treats a
known model as "unknown" (see `policies.routing.latency` for how a prior is blended with what the
gateway then observes).

Cohere publishes no latency figures for its rerank models (only that the fast models
suit "low latency and high throughput"), so these are round, deliberately cautious
estimates of a p90 from a cloud region near the API, worth two observations each: the
first few real calls outweigh them. Each scales with the request: a base, plus a cost
per document and per thousand characters (query included, counted once per document,
as the model reads it). Pro models are slower than fast ones of the same version; v5
is assumed to match v4 until it is measured.

An operator overrides a row for one deployment or model with `latency_prior_ms` in the
config, or turns the table off with `routing.latency.family_priors: false`.

A family is recognised from the upstream model id under any cloud's spelling:
`rerank-v3.5` (Cohere), `cohere.rerank-v3-5:0` (Bedrock, also inside an ARN),
`Cohere-rerank-v3.5` (Azure), `cohere.rerank.3-5` (OCI), `rerank-v4.0-pro`,
`cohere-rerank-v4-fast`, and so on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from policies.routing.latency import LatencyPrior

FAMILY_WEIGHT = 2.0  # observations a family default is worth


@dataclass(frozen=True, slots=True)
class FamilyPrior:
    family: str  # bounded name, shown in /admin/deployments
    prior: LatencyPrior


def _row(family: str, base_ms: float, per_doc_ms: float, per_kchar_ms: float) -> FamilyPrior:
    return FamilyPrior(family, LatencyPrior(base_ms, per_doc_ms, per_kchar_ms, FAMILY_WEIGHT))


# (major version, variant) -> prior. For 100 documents of 1,000 characters each:
# v3.5 ~400 ms, v4/v5 pro ~600 ms, v4/v5 fast ~210 ms; for 3 short ones about the base.
FAMILIES: dict[tuple[int, str], FamilyPrior] = {
    (3, ""): _row("cohere-rerank-v3.5", 150.0, 0.5, 2.0),
    (4, "pro"): _row("cohere-rerank-v4-pro", 200.0, 1.0, 3.0),
    (4, "fast"): _row("cohere-rerank-v4-fast", 80.0, 0.3, 1.0),
    (5, "pro"): _row("cohere-rerank-v5-pro", 200.0, 1.0, 3.0),
    (5, "fast"): _row("cohere-rerank-v5-fast", 80.0, 0.3, 1.0),
}

# rerank, a separator, an optional "v", the major and minor version, then pro/fast if any.
_MODEL_ID = re.compile(r"rerank[-._]v?(\d+)(?:[-._](\d+))?(?:[-._](pro|fast))?(?![a-z])")


def family_prior(model_id: str) -> FamilyPrior | None:
    """The default prior of the family `model_id` belongs to, or None if none is known."""
    match = _MODEL_ID.search(model_id.lower())
    if match is None:
        return None
    major, minor, variant = int(match.group(1)), match.group(2), match.group(3) or ""
    if major == 3 and minor != "5":
        return None  # v3.0 (english, multilingual) is not in the table
    return FAMILIES.get((major, variant))
