"""Model discovery in Cohere's shape: `GET /v1/models` and `GET /v1/models/{model}`.

The `cohere` SDKs list models (`client.models.list(endpoint="rerank")`) and read one
(`client.models.get(name)`); tools use it to check that a model exists before calling
it. The listing holds the models and tiered aliases this gateway serves to the calling
team (its `models` access list applies), in config order, paged as Cohere pages:
`page_size` (default 20, 1 to 1000), `page_token` from the previous `next_page_token`.
Every model here serves the `rerank` endpoint only, so `endpoint=chat` lists nothing.

Each entry has Cohere's fields (`name`, `endpoints`, `finetuned`, `context_length` where
known, `default_endpoints`: `["rerank"]` for the model a `/v1/rerank` body without
`model` gets, `features`: `relevant_spans` where a deployment returns them) and the
gateway's own: `score_scale`, `scoring` (pointwise or listwise), `tiers` of an alias,
and per deployment its name, score scale and span support.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Final

from gateway.errors import ApiError, bad_request
from gateway.http.wire_types import Model, ModelList
from gateway.state.catalog import Catalog

ENDPOINTS = ("chat", "embed", "classify", "summarize", "rerank", "rate", "generate")
RERANK: Final = "rerank"
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 1000


def model_page(
    catalog: Catalog, visible: Collection[str] | None, query: Mapping[str, str]
) -> ModelList:
    """`GET /v1/models`: one page of the caller's models."""
    size = _page_size(query.get("page_size"))
    start = _page_start(query.get("page_token"))
    endpoint = query.get("endpoint")
    if endpoint is not None and endpoint not in ENDPOINTS:
        raise bad_request(f"endpoint must be one of {', '.join(ENDPOINTS)}")
    default_only = _flag(query.get("default_only"), "default_only")
    if default_only and endpoint is None:
        raise bad_request("default_only is only valid together with endpoint")
    default = catalog.v1_default(visible)
    names = [m for m in catalog.order if visible is None or m in visible]
    if endpoint not in (None, RERANK):
        names = []
    elif default_only:
        names = [m for m in names if m == default]
    page = names[start : start + size]
    body: ModelList = {"models": [describe(catalog, m, default) for m in page]}
    if start + size < len(names):
        body["next_page_token"] = str(start + size)
    return body


def one_model(catalog: Catalog, visible: Collection[str] | None, name: str) -> Model:
    """`GET /v1/models/{name}`: Cohere's 404 for a model the caller cannot use."""
    if not catalog.knows(name) or (visible is not None and name not in visible):
        raise ApiError(
            404,
            f"model '{name}' not found, make sure the correct model ID was used and that you "
            "have access to the model (GET /v1/models lists them)",
            log_message="model not found (the name is not logged)",
        )
    return describe(catalog, name, catalog.v1_default(visible))


def describe(catalog: Catalog, name: str, default: str | None) -> Model:
    models = catalog.concrete(name)
    entry: Model = {
        "name": name,
        "endpoints": [RERANK],
        "finetuned": False,
        "default_endpoints": [RERANK] if name == default else [],
        "features": ["relevant_spans"] if any(map(catalog.spans_capable, models)) else [],
        "score_scale": catalog.score_scale(name),
        "scoring": "listwise" if any(map(catalog.listwise, models)) else "pointwise",
        "deployments": [
            {"name": d.name, "score_scale": d.score_scale, "relevant_spans": d.relevant_spans}
            for m in models
            for d in catalog.deployments[m]
        ],
    }
    lengths = [catalog.context_lengths[m] for m in models]
    if None not in lengths:  # an alias: the shorter of its tiers'
        entry["context_length"] = min(length for length in lengths if length is not None)
    if name in catalog.tiers:
        entry["tiers"] = dict(catalog.tiers[name])
    return entry


def _page_size(value: str | None) -> int:
    if value is None:
        return DEFAULT_PAGE_SIZE
    try:
        number = float(value)  # the SDK types it as a float: "20.0" is 20
    except ValueError:
        number = float("nan")
    if not number.is_integer() or not 1 <= number <= MAX_PAGE_SIZE:
        raise bad_request(f"page_size must be a whole number from 1 to {MAX_PAGE_SIZE}")
    return int(number)


def _page_start(token: str | None) -> int:
    if token is None or token == "":
        return 0
    if not (token.isascii() and token.isdigit()) or len(token) > 9:
        raise bad_request("page_token must be the next_page_token of a previous page")
    return int(token)


def _flag(value: str | None, name: str) -> bool:
    if value is None:
        return False
    if value.lower() not in ("true", "false"):
        raise bad_request(f"{name} must be true or false")
    return value.lower() == "true"
