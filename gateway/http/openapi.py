"""OpenAPI 3.1 descriptions of the public routes and, separately, the admin routes.

The schemas say what the gateway really accepts and returns; tests validate real
responses against them.
"""

from __future__ import annotations

from typing import Any

from gateway.http.models import DEFAULT_PAGE_SIZE, ENDPOINTS, MAX_PAGE_SIZE
from gateway.http.wire import MAX_DOCUMENTS
from providers.types import SCORE_SCALES

_NULLABLE_INT = {"type": ["integer", "null"], "minimum": 1}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _rerank_request(version: int) -> dict[str, Any]:
    document = {
        "oneOf": [
            {"type": "string"},
            {
                "type": "object",
                "description": "Fields to rank on; `text` unless rank_fields names others.",
                "additionalProperties": {"type": ["string", "number", "boolean"]},
            },
        ]
    }
    props: dict[str, Any] = {
        "model": {"type": "string", "minLength": 1}
        if version == 2
        else {"type": ["string", "null"]},
        "query": {"type": "string", "minLength": 1, "pattern": r"\S"},
        "documents": {"type": "array", "minItems": 1, "maxItems": MAX_DOCUMENTS, "items": document},
        "top_n": _NULLABLE_INT,
        "rank_fields": {"type": ["array", "null"], "items": {"type": "string"}, "minItems": 1},
        "return_documents": {"type": ["boolean", "null"]},
        "max_chunks_per_doc": _NULLABLE_INT,
    }
    if version == 2:
        props["max_tokens_per_doc"] = _NULLABLE_INT
        props["priority"] = {"type": ["integer", "null"], "minimum": 0, "maximum": 999}
        props["relevant_spans"] = {
            "type": ["object", "null"],
            "description": "Rerank 5's relevant spans: passed to the deployments that return "
            "them; 400 naming the model when none of its deployments does.",
            "required": ["mode"],
            "properties": {
                "mode": {"enum": ["enabled", "disabled"]},
                "threshold": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                "max_spans": {"type": ["integer", "null"], "minimum": 1},
            },
            "additionalProperties": False,
        }
    return {
        "type": "object",
        "required": ["model", "query", "documents"] if version == 2 else ["query", "documents"],
        "properties": props,
        "additionalProperties": False,
    }


_RESPONSE = {
    "type": "object",
    "required": ["id", "results", "meta"],
    "properties": {
        "id": {"type": "string"},
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "relevance_score"],
                "properties": {
                    "index": {"type": "integer", "minimum": 0},
                    "relevance_score": {"type": "number", "minimum": 0, "maximum": 1},
                    "document": {"type": "object", "description": "With return_documents."},
                    "relevant_spans": {
                        "type": "array",
                        "description": "With relevant_spans enabled: code points "
                        "[start, end), most relevant first; absent when none were found.",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["start", "end", "score"],
                            "properties": {
                                "start": {"type": "integer", "minimum": 0},
                                "end": {"type": "integer", "minimum": 0},
                                "score": {"type": "number", "minimum": 0, "maximum": 1},
                            },
                            "additionalProperties": False,
                        },
                    },
                },
                "additionalProperties": False,
            },
        },
        "meta": {
            "type": "object",
            "required": ["api_version", "billed_units"],
            "properties": {
                "api_version": {
                    "type": "object",
                    "required": ["version"],
                    "properties": {
                        "version": {"enum": ["1", "2"]},
                        "is_deprecated": {"type": "boolean", "description": "The upstream's."},
                        "is_experimental": {"type": "boolean", "description": "The upstream's."},
                    },
                    "additionalProperties": False,
                },
                "tokens": {
                    "type": "object",
                    "description": "Tokens the upstream calls of this request reported (none "
                    "on a cache hit).",
                    "minProperties": 1,
                    "properties": {
                        "input_tokens": {"type": "integer", "minimum": 0},
                        "output_tokens": {"type": "integer", "minimum": 0},
                    },
                    "additionalProperties": False,
                },
                "billed_units": {
                    "type": "object",
                    "description": "What this request cost, in the unit of the deployment that "
                    "served it: search_units, or input_tokens for token-priced models",
                    "minProperties": 1,
                    "properties": {
                        "search_units": {"type": "integer", "minimum": 0},
                        "input_tokens": {"type": "integer", "minimum": 1},
                    },
                },
                "warnings": {"type": "array", "items": {"type": "string"}},
            },
        },
    },
}

_ERROR = {
    "type": "object",
    "required": ["id", "message"],
    "properties": {"id": {"type": "string"}, "message": {"type": "string"}},
    "additionalProperties": False,
}

_HEADERS = {
    "X-Request-Id": "The caller's X-Request-Id, else a generated UUID (also the body `id`).",
    "X-Rerank-Model": "The concrete model that answered (for a tiered alias, the tier's).",
    "X-Rerank-Deployment": "The deployment (`provider/upstream-model`) that answered, or "
    "`fallback/passthrough` / `fallback/local` when the model's fallback did.",
    "X-Cache": "hit, partial, miss or bypass.",
    "X-Rerank-Score-Scale": "What the scores mean: "
    + ", ".join(SCORE_SCALES)
    + " (the deployment's that answered; absent when not known).",
    "X-Rerank-Depth": "Only for a team in depth enforce mode: `<reranked>/<sent>` when only "
    "the first documents were reranked, `<sent>/<sent>; explore` for its explored sample "
    "(docs/depth.md).",
    "Server-Timing": "`gateway;dur=<ms>, upstream;dur=<ms>`.",
}


_BUDGET = {
    "name": "X-Latency-Budget-Ms",
    "in": "header",
    "required": False,
    "description": "The request's deadline in milliseconds; a tiered alias picks its tier by it.",
    "schema": {"type": "integer", "minimum": 1},
}

_LATENCY_MS = {"type": ["number", "null"], "minimum": 0}
_DEPLOYMENTS = {
    "type": "object",
    "required": ["deployments", "retry_budget"],
    "properties": {
        "deployments": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": [
                    "models",
                    "state",
                    "cooldown_remaining_s",
                    "calls",
                    "error_rate",
                    "in_flight",
                    "latency_ms",
                    "latency_samples",
                    "latency_prior_ms",
                ],
                "properties": {
                    "models": {"type": "array", "items": {"type": "string"}},
                    "state": {"enum": ["closed", "half_open", "open"]},
                    "cooldown_remaining_s": {"type": "number", "minimum": 0},
                    "calls": {"type": "integer", "minimum": 0},
                    "error_rate": {"type": "number", "minimum": 0, "maximum": 1},
                    "in_flight": {"type": "integer", "minimum": 0},
                    "latency_ms": {
                        "type": "object",
                        "required": ["p50", "p90", "p99"],
                        "properties": {"p50": _LATENCY_MS, "p90": _LATENCY_MS, "p99": _LATENCY_MS},
                        "additionalProperties": False,
                    },
                    "latency_samples": {"type": "integer", "minimum": 0},
                    "latency_prior_ms": {
                        "type": "object",
                        "description": "The prior blended with observations while they are "
                        "few: configured, a model family's default, or the broad default.",
                        "required": ["source", "base_ms", "per_doc_ms", "per_kchar_ms", "weight"],
                        "properties": {
                            "source": {"type": "string"},
                            "base_ms": {"type": "number", "minimum": 0},
                            "per_doc_ms": {"type": "number", "minimum": 0},
                            "per_kchar_ms": {"type": "number", "minimum": 0},
                            "weight": {"type": "number", "minimum": 0},
                        },
                        "additionalProperties": False,
                    },
                },
                "additionalProperties": False,
            },
        },
        "retry_budget": {
            "type": "object",
            "required": ["requests", "retries", "available"],
            "properties": {
                "requests": {"type": "number", "minimum": 0},
                "retries": {"type": "number", "minimum": 0},
                "available": {"type": "number", "minimum": 0},
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}


def _rerank_operation(version: int) -> dict[str, Any]:
    headers = {
        name: {"description": text, "schema": {"type": "string"}} for name, text in _HEADERS.items()
    }
    retry = {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}}
    outage = {
        **retry,
        "retry-after-ms": {
            "description": "Milliseconds to wait (read by the Python SDK before Retry-After).",
            "schema": {"type": "integer"},
        },
    }
    cache_control = {
        "name": "Cache-Control",
        "in": "header",
        "required": False,
        "description": "`no-cache`: do not read the score cache (still store); "
        "`no-store`: neither read nor store.",
        "schema": {"type": "string"},
    }
    return {
        "parameters": [cache_control, _BUDGET],
        "summary": f"Rerank documents by relevance to a query (Cohere v{version} schema)",
        "operationId": f"rerankV{version}",
        "security": [{"bearer": []}],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": f"#/components/schemas/RerankRequestV{version}"}
                }
            },
        },
        "responses": {
            "200": {
                "description": "Results sorted by relevance_score, top_n applied.",
                "headers": headers,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/RerankResponse"}}
                },
            },
            "400": _error(
                "Invalid body or X-Latency-Budget-Ms, relevant_spans for a model none of whose "
                "deployments returns them, or an upstream rejected the request's content."
            ),
            "401": _error("Missing or unknown team key."),
            "402": {
                **_error("The team's budget is used up; Retry-After says when it resets."),
                "headers": retry,
            },
            "404": _error("Unknown model."),
            "413": _error("Body larger than the configured limit."),
            "415": _error("A Content-Encoding other than identity, gzip, deflate, br, zstd."),
            "422": _error("Unknown field."),
            "429": {**_error("Rate limited or throttled; see Retry-After."), "headers": retry},
            "502": _error("An upstream answered badly or refused the gateway's credentials."),
            "503": {
                **_error(
                    "No deployment could answer, or every circuit breaker is open (Retry-After: "
                    "1, so SDK retries end within seconds; see docs/errors.md)."
                ),
                "headers": outage,
            },
            "504": _error("The request's deadline passed."),
        },
    }


_DEPLOYMENT_FACTS = {
    "type": "object",
    "required": ["name", "score_scale", "relevant_spans"],
    "properties": {
        "name": {"type": "string"},
        "score_scale": {"enum": [*SCORE_SCALES, None]},
        "relevant_spans": {"type": "boolean"},
    },
    "additionalProperties": False,
}
_MODEL = {
    "type": "object",
    "description": "Cohere's GetModelResponse fields, and the gateway's own facts.",
    "required": [
        "name",
        "endpoints",
        "finetuned",
        "default_endpoints",
        "features",
        "score_scale",
        "scoring",
        "deployments",
    ],
    "properties": {
        "name": {"type": "string"},
        "endpoints": {"type": "array", "items": {"const": "rerank"}},
        "finetuned": {"type": "boolean"},
        "context_length": {"type": "integer", "minimum": 1},
        "default_endpoints": {
            "type": "array",
            "description": "[rerank] for the model /v1/rerank uses when a body names none.",
            "items": {"const": "rerank"},
        },
        "features": {"type": "array", "items": {"enum": ["relevant_spans"]}},
        "score_scale": {
            "enum": [*SCORE_SCALES, None],
            "description": "The scale every deployment scores on; null when they differ or "
            "one is not known.",
        },
        "scoring": {"enum": ["pointwise", "listwise"]},
        "tiers": {"type": "object", "additionalProperties": {"type": "string"}},
        "deployments": {"type": "array", "items": _DEPLOYMENT_FACTS},
    },
    "additionalProperties": False,
}
_MODEL_LIST = {
    "type": "object",
    "required": ["models"],
    "properties": {
        "models": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}},
        "next_page_token": {"type": "string"},
    },
    "additionalProperties": False,
}


def _models_paths() -> dict[str, Any]:
    def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {
            "name": name,
            "in": "query",
            "required": False,
            "description": description,
            "schema": schema,
        }

    auth = {"401": _error("Missing or unknown team key.")}
    return {
        "/v1/models": {
            "get": {
                "summary": "The models this gateway serves to the calling team (Cohere's shape)",
                "operationId": "listModels",
                "security": [{"bearer": []}],
                "parameters": [
                    query(
                        "page_size",
                        {
                            "type": "number",
                            "minimum": 1,
                            "maximum": MAX_PAGE_SIZE,
                            "default": DEFAULT_PAGE_SIZE,
                        },
                        "Models per page.",
                    ),
                    query("page_token", {"type": "string"}, "A previous next_page_token."),
                    query("endpoint", {"enum": list(ENDPOINTS)}, "Only models of it."),
                    query(
                        "default_only",
                        {"type": "boolean"},
                        "Only the endpoint's default model (with endpoint).",
                    ),
                ],
                "responses": {
                    "200": _json_answer("One page of models.", "ModelList"),
                    "400": _error("A bad page_size, page_token, endpoint or default_only."),
                    **auth,
                },
            }
        },
        "/v1/models/{model}": {
            "get": {
                "summary": "One model this gateway serves to the calling team",
                "operationId": "getModel",
                "security": [{"bearer": []}],
                "parameters": [
                    {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": _json_answer("The model.", "Model"),
                    "404": _error("No such model, or not one the team may use."),
                    **auth,
                },
            }
        },
    }


def _text(description: str, media: str = "application/json") -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": {"type": "object"}}}}


def public_spec() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Rerank Gateway",
            "version": "1",
            "description": "Cohere-compatible rerank endpoint. Admin routes: /admin/openapi.json.",
        },
        "paths": {
            "/v2/rerank": {"post": _rerank_operation(2)},
            "/v1/rerank": {"post": _rerank_operation(1)},
            **_models_paths(),
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": _text("Alive.")}}},
            "/readyz": {
                "get": {
                    "summary": "Readiness: state stores reachable and not draining",
                    "responses": {
                        "200": _text("Ready."),
                        "503": _text("Not ready; `checks` says why."),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "Prometheus text format."}},
                }
            },
            "/openapi.json": {
                "get": {"summary": "This document", "responses": {"200": _text("OpenAPI 3.1.")}}
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "RerankRequestV2": _rerank_request(2),
                "RerankRequestV1": _rerank_request(1),
                "RerankResponse": _RESPONSE,
                "Error": _ERROR,
                "Model": _MODEL,
                "ModelList": _MODEL_LIST,
            },
        },
    }


_USAGE_FIGURES = {
    name: {"type": "number" if name.endswith("_usd") else "integer", "minimum": 0}
    for name in (
        "requests",
        "documents",
        "search_units",
        "tokens",
        "cost_usd",
        "saved_search_units",
        "saved_tokens",
        "saved_cost_usd",
        "cache_hits",
        "replayed",
        "replayed_cost_usd",
        "rejected_limits",
        "rejected_rate_limit",
        "rejected_budget",
        "truncated",
        "downgraded",
    )
}

_USAGE_REPORT = {
    "type": "object",
    "required": ["from", "to", "currency", "rows", "totals", "scope", "group_by"],
    "properties": {
        "from": {"type": "string", "format": "date"},
        "to": {"type": "string", "format": "date"},
        "currency": {"const": "USD"},
        "scope": {"enum": ["ledger", "all replicas", "this process"]},
        "group_by": {
            "type": "array",
            "items": {"enum": ["team", "key", "model", "deployment"]},
            "description": "the columns that name each row, in order",
        },
        "rows": {
            "type": "array",
            "items": {
                "type": "object",
                "description": "one group: the `group_by` columns, then the figures",
                "required": [*_USAGE_FIGURES, "unit", "billed_units"],
                "properties": {
                    "team": {"type": "string"},
                    "key": {
                        "type": ["string", "null"],
                        "description": "the API key's id, or config:<digest prefix>",
                    },
                    "model": {"type": "string"},
                    "deployment": {"type": ["string", "null"]},
                    **_USAGE_FIGURES,
                    "unit": {
                        "description": "the price kind the row was billed by",
                        "enum": ["search_units", "tokens", "request", "free", "mixed", None],
                    },
                    "billed_units": {"type": ["integer", "null"], "minimum": 0},
                },
                "additionalProperties": False,
            },
        },
        "totals": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": _USAGE_FIGURES,
                "additionalProperties": False,
            },
        },
    },
}


_SHARE = {"type": ["number", "null"], "minimum": -1, "maximum": 1}
_AGREEMENT = {
    "type": "object",
    "required": ["samples", "window", "ndcg_mean", "ndcg_p10", "overlap_mean"],
    "properties": {
        "samples": {"type": "integer", "minimum": 0},
        "window": {"type": "integer", "minimum": 0},
        "ndcg_mean": _SHARE,
        "ndcg_p10": _SHARE,
        "overlap_mean": _SHARE,
        "rank_correlation_mean": _SHARE,
        "k_mean": {"type": ["number", "null"], "minimum": 1},
    },
    "additionalProperties": False,
}
_NUMBER_OR_NULL = {"type": ["number", "null"]}
_DEPTH_POINT = {
    "type": "object",
    "required": ["depth", "recall", "low", "high"],
    "properties": {
        "depth": {"type": "integer", "minimum": 1},
        "recall": {"type": "number", "minimum": 0, "maximum": 1},
        "low": {"type": "number", "minimum": 0, "maximum": 1},
        "high": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "additionalProperties": False,
}
_DEPTH_ROW = {
    "type": "object",
    "required": [
        "team", "model", "mode", "enforced", "reverted", "status", "message", "target_recall",
        "requests", "measured", "explored", "topk_documents", "sends", "needs", "cuts",
        "recall", "curve", "order_p_value", "saving",
    ],
    "properties": {
        "team": {"type": "string"},
        "model": {"type": "string"},
        "mode": {"enum": ["advise", "enforce"]},
        "enforced": {"type": ["integer", "null"], "description": "The depth cut to now."},
        "reverted": {"type": "boolean", "description": "Switched back to advise (drift)."},
        "status": {"enum": ["advice", "no_order_signal", "insufficient_data"]},
        "message": {"type": "string"},
        "target_recall": {"type": "number"},
        "requests": {"type": "integer", "minimum": 0},
        "measured": {"type": "integer", "minimum": 0},
        "explored": {"type": "integer", "minimum": 0},
        "topk_documents": {"type": "integer", "minimum": 0},
        "sends": {
            "type": "object",
            "required": ["mean", "p90", "max"],
            "properties": {
                "mean": _NUMBER_OR_NULL,
                "p90": {"type": ["integer", "null"]},
                "max": {"type": ["integer", "null"]},
            },
            "additionalProperties": False,
        },
        "needs": {"type": ["integer", "null"], "description": "The advised depth."},
        "cuts": {"type": "boolean", "description": "needs is below what the team sends."},
        "recall": {"oneOf": [_DEPTH_POINT, {"type": "null"}]},
        "curve": {"type": "array", "items": _DEPTH_POINT},
        "order_p_value": _NUMBER_OR_NULL,
        "saving": {
            "oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "required": [
                        "unit", "per_request_now", "per_request_advised", "usd_per_day",
                        "latency_ms_p90", "requests_per_day", "note",
                    ],
                    "properties": {
                        "unit": {"enum": ["search_units", "tokens", "request", "free"]},
                        "per_request_now": _NUMBER_OR_NULL,
                        "per_request_advised": _NUMBER_OR_NULL,
                        "usd_per_day": {"type": "number", "minimum": 0},
                        "latency_ms_p90": _NUMBER_OR_NULL,
                        "requests_per_day": {"type": "number", "minimum": 0},
                        "note": {"type": "string"},
                    },
                    "additionalProperties": False,
                },
            ]
        },
    },
    "additionalProperties": False,
}
_DEPTH_REPORT = {
    "type": "object",
    "required": ["scope", "window_hours", "rows"],
    "properties": {
        "scope": {"type": "string"},
        "window_hours": {"type": "number"},
        "rows": {"type": "array", "items": _DEPTH_ROW},
    },
    "additionalProperties": False,
}

_TIERS_REPORT = {
    "type": "object",
    "required": ["scope", "aliases"],
    "properties": {
        "scope": {"type": "string"},
        "aliases": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["tiers", "shadow", "shadow_calls", "shadow_spend_usd", "teams"],
                "properties": {
                    "tiers": {"type": "object", "additionalProperties": {"type": "string"}},
                    "shadow": {"type": "object"},
                    "shadow_calls": {
                        "type": "object",
                        "additionalProperties": {"type": "integer", "minimum": 0},
                    },
                    "shadow_spend_usd": {
                        "type": "object",
                        "required": ["today", "total"],
                        "properties": {
                            "today": {"type": "number", "minimum": 0},
                            "total": {"type": "number", "minimum": 0},
                        },
                    },
                    "teams": {
                        "type": "object",
                        "additionalProperties": {
                            "type": "object",
                            "properties": {
                                "fast_vs_pro": _AGREEMENT,
                                "pro_vs_fast": _AGREEMENT,
                                "fast_quality": _AGREEMENT,
                                "downgrades": {"enum": ["allowed", "stopped"]},
                            },
                            "additionalProperties": False,
                        },
                    },
                },
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}


def _query(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string"},
    }


_NUMBER_OR_NULL = {"type": ["number", "null"]}
_STRINGS_OR_NULL = {"type": ["array", "null"], "items": {"type": "string"}}
_API_KEY: dict[str, Any] = {
    "type": "object",
    "description": "An API key's metadata (never the key, never its digest).",
    "required": ["id", "team", "prefix", "created", "expires", "expired", "scopes"],
    "properties": {
        "id": {"type": "string"},
        "team": {"type": "string"},
        "name": {"type": ["string", "null"]},
        "prefix": {"type": "string", "description": "`rgk_<id>`: how the key starts."},
        "created": {"type": "number", "description": "Epoch seconds."},
        "expires": _NUMBER_OR_NULL,
        "expired": {"type": "boolean"},
        "last_used": {**_NUMBER_OR_NULL, "description": "Epoch seconds, to the minute."},
        "scopes": {"type": "array", "items": {"enum": ["rerank", "manage"]}},
        "models": {**_STRINGS_OR_NULL, "description": "Narrows the team's models; null: all."},
        "created_by": {"type": "string"},
        "rotated_from": {"type": ["string", "null"]},
    },
    "additionalProperties": False,
}
_ISSUED_KEY = {
    "type": "object",
    "description": "A new key, shown this once, with its metadata.",
    "required": [*_API_KEY["required"], "key", "warnings"],
    "properties": {
        **_API_KEY["properties"],
        "key": {"type": "string"},
        "warnings": {"type": "array", "items": {"type": "string"}},
        "old_key": {"$ref": "#/components/schemas/ApiKey"},
    },
    "additionalProperties": False,
}
_LIFETIME = "At most 315360000 s (10 years) from now."
_EXPIRES_AT = {"type": "string", "description": f"ISO 8601 with a zone. {_LIFETIME}"}
_EXPIRES_IN = {"type": "number", "exclusiveMinimum": 0, "maximum": 315_360_000}
_CREATE_KEY = {
    "type": "object",
    "properties": {
        "team": {"type": "string", "description": "Required for the admin; a manager's own."},
        "name": {"type": "string"},
        "expires_at": _EXPIRES_AT,
        "expires_in_s": _EXPIRES_IN,
        "scopes": {"type": "array", "items": {"enum": ["rerank", "manage"]}},
        "models": {"type": "array", "items": {"type": "string"}, "minItems": 1},
    },
    "additionalProperties": False,
}
_KEY_ERRORS = {
    "401": _error("Missing or wrong admin or manager key; an expired manager key."),
    "403": _error("A manager key outside its team, or API keys disabled (no state.redis_url)."),
    "503": _error("The key store (Redis) is unreachable."),
}


def _json_body(schema: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{schema}"}
    return {"required": False, "content": {"application/json": {"schema": ref}}}


def _json_answer(description: str, schema: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{schema}"}
    return {"description": description, "content": {"application/json": {"schema": ref}}}


def _key_paths() -> dict[str, Any]:
    key_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "/admin/keys": {
            "post": {
                "summary": "Issue an API key (admin: any team; a manager: its own team)",
                "requestBody": _json_body("CreateKey"),
                "responses": {
                    "201": _json_answer("The key, shown this once.", "IssuedKey"),
                    "400": _error("Invalid body: the message names the field."),
                    "409": _error("The team has auth.api_keys_per_team live keys already."),
                    "429": _error("The team's managers created their keys for this minute."),
                    **_KEY_ERRORS,
                },
            },
            "get": {
                "summary": "List API keys (metadata only; a manager sees its own team's)",
                "parameters": [_query("team", "Only this team's keys.")],
                "responses": {
                    "200": _json_answer("The keys.", "KeyList"),
                    **_KEY_ERRORS,
                },
            },
        },
        "/admin/keys/{id}": {
            "delete": {
                "summary": "Revoke an API key: refused by every replica within the refresh bound",
                "parameters": [key_id],
                "responses": {
                    "200": _text("{id, team, revoked: true}."),
                    "404": _error("No such key (or another team's, for a manager)."),
                    **_KEY_ERRORS,
                },
            }
        },
        "/admin/keys/{id}/rotate": {
            "post": {
                "summary": "A new key like this one; the old one keeps working for grace_s",
                "parameters": [key_id],
                "requestBody": _json_body("RotateKey"),
                "responses": {
                    "201": _json_answer("The new key, and the old key's new expiry.", "IssuedKey"),
                    "404": _error("No such key (or another team's, for a manager)."),
                    "400": _error("Invalid body: the message names the field."),
                    "409": _error("The key has already expired, or the team is at its cap."),
                    "429": _error("The team's managers created their keys for this minute."),
                    **_KEY_ERRORS,
                },
            }
        },
    }


def admin_spec() -> dict[str, Any]:
    """The admin routes (admin key required)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "Rerank Gateway admin", "version": "1"},
        "security": [{"admin": []}],
        "paths": {
            "/admin/openapi.json": {
                "get": {"summary": "This document", "responses": {"200": _text("OpenAPI 3.1.")}}
            },
            **_key_paths(),
            "/admin/usage": {
                "get": {
                    "summary": "Usage and cost per team, key, model or deployment, by UTC day "
                    "range or month (a manager key: its own team's); from the ledger when "
                    "one is configured",
                    "parameters": [
                        _query("team", "One configured team (default: all)."),
                        _query("from", "First day, YYYY-MM-DD (default: the 1st of the month)."),
                        _query("to", "Last day, YYYY-MM-DD (default: today)."),
                        _query("month", "A whole month, YYYY-MM (instead of from/to)."),
                        _query(
                            "by",
                            "Group rows by any of team, key, model, deployment, comma-separated "
                            "(default: team,model,deployment; key needs the ledger).",
                        ),
                        _query("format", "json (default) or csv."),
                    ],
                    "responses": {
                        "200": {
                            "description": "The report.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/UsageReport"}
                                },
                                "text/csv": {"schema": {"type": "string"}},
                            },
                        },
                        "400": _error("Bad date, range, month, grouping or format."),
                        "401": _error("Missing or wrong admin key."),
                        "403": _error("Admin routes are disabled (no admin key configured)."),
                        "404": _error("Unknown team."),
                        "503": _error("The usage ledger or store is unreachable."),
                    },
                }
            },
            "/admin/depth": {
                "get": {
                    "summary": "Depth advice per team and model: how many of its first "
                    "documents a team needs reranked, how sure, and what a cut saves (a "
                    "manager key: its own team's; docs/depth.md)",
                    "parameters": [_query("team", "One team (default: all).")],
                    "responses": {
                        "200": {
                            "description": "One row per team and model with counts in the "
                            "window.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/DepthReport"}
                                }
                            },
                        },
                        "401": _error("Missing or wrong admin key."),
                        "403": _error("Another team's advice, for a manager key."),
                        "404": _error("Unknown team."),
                        "503": _error("The depth store (Redis) is unreachable."),
                    },
                }
            },
            "/admin/deployments": {
                "get": {
                    "summary": "Breaker state, recent error rate and latency per deployment",
                    "responses": {
                        "200": {
                            "description": "One entry per deployment, and the retry budget.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Deployments"}
                                }
                            },
                        },
                        "401": _error("Missing or wrong admin key."),
                        "403": _error("Admin routes are disabled."),
                    },
                }
            },
            "/admin/tiers": {
                "get": {
                    "summary": "Shadow quality evaluation of each tiered alias (docs/tiers.md)",
                    "responses": {
                        "200": {
                            "description": "Per alias: shadow settings, calls, spend, and the "
                            "agreement of the two tiers' rankings per team and direction.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/TiersReport"}
                                }
                            },
                        },
                        "401": _error("Missing or wrong admin key."),
                        "403": _error("Admin routes are disabled."),
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"admin": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": _ERROR,
                "UsageReport": _USAGE_REPORT,
                "Deployments": _DEPLOYMENTS,
                "ApiKey": _API_KEY,
                "IssuedKey": _ISSUED_KEY,
                "KeyList": {
                    "type": "object",
                    "required": ["keys", "unreadable"],
                    "properties": {
                        "keys": {"type": "array", "items": {"$ref": "#/components/schemas/ApiKey"}},
                        "unreadable": {
                            "description": "Records no gateway honours (admin only): revoke them.",
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["id", "problem"],
                                "properties": {
                                    "id": {"type": "string"},
                                    "problem": {"type": "string"},
                                },
                            },
                        },
                    },
                },
                "CreateKey": _CREATE_KEY,
                "RotateKey": {
                    "type": "object",
                    "properties": {
                        "grace_s": {
                            "type": "number",
                            "minimum": 0,
                            "maximum": 315_360_000,
                            "default": 86400,
                        },
                        "expires_at": _EXPIRES_AT,
                        "expires_in_s": _EXPIRES_IN,
                        "never_expires": {
                            "type": "boolean",
                            "description": "Admin only. Default: the old key's expiry.",
                        },
                    },
                    "additionalProperties": False,
                },
                "TiersReport": _TIERS_REPORT,
                "DepthReport": _DEPTH_REPORT,
            },
        },
    }
