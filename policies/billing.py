"""Search units: what Cohere-style rerank bills for one upstream call.

One search unit is one query with up to 100 documents. Used when an upstream does not
report what it billed (Bedrock, OCI, the offline ranker reports 0).
"""

from __future__ import annotations

import math

DOCUMENTS_PER_UNIT = 100


def estimate_search_units(document_count: int) -> int:
    if document_count <= 0:
        return 0
    return math.ceil(document_count / DOCUMENTS_PER_UNIT)
