"""OpenAPI 3.1 descriptions of the public routes and, separately, the admin routes.

The routes (paths, parameters, status codes) are described here; the schemas of their
bodies and answers are generated from the types the handlers use: the rerank wire types
(`gateway.http.wire_types`) and the admin API's (`gateway.http.admin_types`), so a field
is written once. Tests validate real answers against the documents, and check that the
bodies the documents allow are the bodies the handlers accept.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import TypeAdapter

from gateway.http import admin_types, wire_types
from gateway.http.models import DEFAULT_PAGE_SIZE, ENDPOINTS, MAX_PAGE_SIZE
from providers.types import SCORE_SCALES

_REF = "#/components/schemas/{model}"


def schemas(*kinds: Any) -> dict[str, Any]:
    """The JSON Schemas of `kinds` by name (`components`), each whole: the types it uses are
    written into it, so it validates on its own as well as within the document."""
    found: dict[str, Any] = {}
    for kind in kinds:
        schema = TypeAdapter(kind).json_schema(ref_template=_REF)
        uses = schema.pop("$defs", {})
        found[kind.__name__] = _tidy(_inline(schema, uses))
    return found


def _inline(schema: Any, uses: dict[str, Any]) -> Any:
    """`schema` with each `$ref` to one of `uses` replaced by that type's schema."""
    if isinstance(schema, list):
        return [_inline(item, uses) for item in schema]
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith(_REF.format(model="")):
        used = uses[ref.rsplit("/", 1)[1]]
        schema = {**used, **{k: v for k, v in schema.items() if k != "$ref"}}
    return {key: _inline(value, uses) for key, value in schema.items()}


def _tidy(schema: Any) -> Any:
    """Without pydantic's titles (the names say it), descriptions on one line."""
    if isinstance(schema, list):
        return [_tidy(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    tidy = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key == "description" and isinstance(value, str):
            value = re.sub(r"\s+", " ", value).strip()
        tidy[key] = _tidy(value)
    return tidy


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
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


def _page(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


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
                **schemas(
                    wire_types.RerankRequestV2,
                    wire_types.RerankRequestV1,
                    wire_types.RerankResponse,
                    wire_types.Model,
                    wire_types.ModelList,
                ),
                "Error": _ERROR,
            },
        },
    }


def _query(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string"},
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
                    "200": _json_answer("The key is revoked.", "RevokedKey"),
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
            "/admin/status.json": {
                "get": {
                    "summary": "What the status page (/admin/status) shows, as data",
                    "responses": {
                        "200": _json_answer("This worker's view.", "StatusReport"),
                        "401": _error("Missing or wrong admin key."),
                        "403": _error("Admin routes are disabled."),
                    },
                }
            },
            "/admin/login": {
                "post": {
                    "summary": "The status page's sign-in form: a good admin key opens a session",
                    "security": [],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/x-www-form-urlencoded": {
                                "schema": {"$ref": "#/components/schemas/SignInForm"}
                            }
                        },
                    },
                    "responses": {
                        "303": {"description": "Signed in: a session cookie, to /admin/status."},
                        "401": _page("A missing or wrong key: the form again, saying so."),
                        "429": _page("Too many failed sign-ins; Retry-After says when to try."),
                        "503": _page("The session store (Redis) is unreachable."),
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
                        "200": _json_answer(
                            "One row per team and model with counts in the window.",
                            "DepthReport",
                        ),
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
                **schemas(
                    admin_types.UsageReport,
                    admin_types.Deployments,
                    admin_types.ApiKey,
                    admin_types.IssuedKey,
                    admin_types.KeyList,
                    admin_types.RevokedKey,
                    admin_types.CreateKey,
                    admin_types.RotateKey,
                    admin_types.TiersReport,
                    admin_types.DepthReport,
                    admin_types.SignInForm,
                    admin_types.StatusReport,
                ),
            },
        },
    }
