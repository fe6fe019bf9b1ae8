"""Cohere's rerank bodies and answers, and its model discovery's, as types: the one place
their fields are written.

`gateway.http.wire` parses and renders them by hand (Cohere's exact error texts, no
per-request validation library on the hot path) and takes from here which fields each
API version accepts and the bounds of each integer; `render_response` builds its answer
as these types, so mypy holds the two together. `gateway.http.openapi` generates the
published schemas from the same types (pydantic's JSON Schema of a TypedDict).

JSON `null` means "not set" for every optional request field, so each is `... | None`.
"""

from __future__ import annotations

from typing import (  # pydantic reads these on 3.11
    Annotated,
    Any,
    Literal,
    NotRequired,
    Required,
    cast,
    get_args,
)

from annotated_types import Interval, MaxLen, MinLen
from pydantic import ConfigDict, Field, with_config
from typing_extensions import TypedDict  # pydantic reads only this one on Python 3.11

from providers.types import SCORE_SCALES

MAX_DOCUMENTS = 10_000  # Cohere's hard limit on documents (x chunks) per request
# Integer fields have an upper bound each, so no value reaches a provider that JSON
# encoders (orjson: 64-bit) or upstream schemas (int32 in OCI's and Bedrock's) refuse.
# Cohere documents no maximum for top_n or max_tokens_per_doc: 2**31 - 1 is the largest
# value every upstream decodes, far above any real document or result count.
MAX_INT32 = 2**31 - 1
MAX_PRIORITY = 999  # documented: 0-999
# documented: documents x max_chunks_per_doc < 10,000, so one document has at most 9,999
MAX_CHUNKS_PER_DOC = MAX_DOCUMENTS - 1

Count = Annotated[int, Interval(ge=1, le=MAX_INT32)]  # top_n, max_tokens_per_doc, max_spans
Priority = Annotated[int, Interval(ge=0, le=MAX_PRIORITY)]
ChunksPerDoc = Annotated[int, Interval(ge=1, le=MAX_CHUNKS_PER_DOC)]
Share = Annotated[float, Interval(ge=0, le=1)]
ModelName = Annotated[str, MinLen(1)]
Query = Annotated[str, MinLen(1), Field(pattern=r"\S")]
Document = str | Annotated[
    dict[str, Any], Field(description="Fields to rank on; `text` unless rank_fields names others.")
]
Documents = Annotated[list[Document], MinLen(1), MaxLen(MAX_DOCUMENTS)]
RankFields = Annotated[list[str], MinLen(1)]


def bounds(kind: Any) -> tuple[int, int]:
    """The (lowest, highest) an integer type above allows."""
    interval = next(m for m in get_args(kind)[1:] if isinstance(m, Interval))
    return cast(int, interval.ge), cast(int, interval.le)


@with_config(ConfigDict(extra="forbid"))
class RelevantSpans(TypedDict, total=False):
    """Rerank 5's relevant spans: passed to the deployments that return them; 400 naming
    the model when none of its deployments does."""

    mode: Required[Literal["enabled", "disabled"]]
    threshold: Share | None
    max_spans: Count | None


@with_config(ConfigDict(extra="forbid"))
class RerankRequestV1(TypedDict, total=False):
    model: ModelName | None
    query: Required[Query]
    documents: Required[Documents]
    top_n: Count | None
    rank_fields: RankFields | None
    return_documents: bool | None
    max_chunks_per_doc: ChunksPerDoc | None


@with_config(ConfigDict(extra="forbid"))
class RerankRequestV2(TypedDict, total=False):
    model: Required[ModelName]
    query: Required[Query]
    documents: Required[Documents]
    top_n: Count | None
    max_tokens_per_doc: Count | None
    priority: Priority | None
    relevant_spans: RelevantSpans | None
    # sent to /v2 by SDKs up to 5.15
    return_documents: bool | None
    rank_fields: RankFields | None
    max_chunks_per_doc: ChunksPerDoc | None


Offset = Annotated[int, Field(ge=0)]


@with_config(ConfigDict(extra="forbid"))
class RelevantSpan(TypedDict):
    start: Offset
    end: Offset
    score: Share


@with_config(ConfigDict(extra="forbid"))
class Result(TypedDict):
    index: Offset
    relevance_score: Share
    document: NotRequired[Annotated[dict[str, Any], Field(description="With return_documents.")]]
    relevant_spans: NotRequired[
        Annotated[
            list[RelevantSpan],
            MinLen(1),
            Field(
                description="With relevant_spans enabled: code points [start, end), most "
                "relevant first; absent when none were found."
            ),
        ]
    ]


@with_config(ConfigDict(extra="forbid"))
class ApiVersion(TypedDict):
    version: Literal["1", "2"]
    is_deprecated: NotRequired[Annotated[bool, Field(description="The upstream's.")]]
    is_experimental: NotRequired[Annotated[bool, Field(description="The upstream's.")]]


@with_config(ConfigDict(extra="forbid"))
class Tokens(TypedDict, total=False):
    """Tokens the upstream calls of this request reported (none on a cache hit)."""

    input_tokens: Offset
    output_tokens: Offset


class BilledUnits(TypedDict, total=False):
    """What this request cost, in the unit of the deployment that served it: search_units,
    or input_tokens for token-priced models."""

    search_units: Offset
    input_tokens: Annotated[int, Field(ge=1)]


class Meta(TypedDict):
    api_version: ApiVersion
    billed_units: BilledUnits
    tokens: NotRequired[Tokens]
    warnings: NotRequired[list[str]]


class RerankResponse(TypedDict):
    id: str
    results: list[Result]
    meta: Meta


REQUEST_TYPES: dict[int, Any] = {1: RerankRequestV1, 2: RerankRequestV2}


# --- model discovery (gateway.http.models) ----------------------------------------------

ScoreScale = Literal[SCORE_SCALES] | None  # type: ignore[valid-type]


@with_config(ConfigDict(extra="forbid"))
class DeploymentFacts(TypedDict):
    name: str
    score_scale: ScoreScale
    relevant_spans: bool


@with_config(ConfigDict(extra="forbid"))
class Model(TypedDict):
    """Cohere's GetModelResponse fields, and the gateway's own facts."""

    name: str
    endpoints: list[Literal["rerank"]]
    finetuned: bool
    context_length: NotRequired[Annotated[int, Field(ge=1)]]
    default_endpoints: Annotated[
        list[Literal["rerank"]],
        Field(description="[rerank] for the model /v1/rerank uses when a body names none."),
    ]
    features: list[Literal["relevant_spans"]]
    score_scale: Annotated[
        ScoreScale,
        Field(
            description="The scale every deployment scores on; null when they differ or one "
            "is not known."
        ),
    ]
    scoring: Literal["pointwise", "listwise"]
    tiers: NotRequired[dict[str, str]]
    deployments: list[DeploymentFacts]


@with_config(ConfigDict(extra="forbid"))
class ModelList(TypedDict):
    models: list[Model]
    next_page_token: NotRequired[str]
