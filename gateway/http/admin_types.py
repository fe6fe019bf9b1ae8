"""The admin API's bodies and answers as types: the one place their fields are written.

The bodies (`CreateKey`, `RotateKey`, the sign-in form) are what the handlers validate
(`gateway.http.keys`, `gateway.http.status_routes`, through pydantic); the answers (keys,
the usage report, deployment health, the tiers' shadow evaluation) are what the handlers
return, built by the state they report on. `gateway.http.openapi` generates the admin
document's schemas from all of them, and the tests validate real answers against it.

pydantic reads these TypedDicts (so they come from typing_extensions on Python 3.11); it
lives in gateway only, never in policies or providers (the import contracts).
Constraints marked "documented" are enforced by the key service with its own message
(a lifetime, a scope, an empty model list), so the document states them and pydantic
leaves them to it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired, Required

from pydantic import ConfigDict, Field, with_config
from typing_extensions import TypedDict

from policies.access.api_keys import MAX_LIFETIME_S, SCOPES
from policies.money.usage import GROUPS, REPORT_FIGURES

_LIFETIME = f"At most {MAX_LIFETIME_S} s (10 years) from now."
_BODY = ConfigDict(strict=True, extra="forbid")  # "8" is no number; unknown fields refused

Seconds = Annotated[float, Field(ge=0)]
ExpiresAt = Annotated[str, Field(description=f"ISO 8601 with a zone. {_LIFETIME}")]
ExpiresIn = Annotated[float, Field(gt=0, json_schema_extra={"maximum": MAX_LIFETIME_S})]
Scopes = Annotated[list[str], Field(json_schema_extra={"items": {"enum": list(SCOPES)}})]


DEFAULT_GRACE_S = 86_400.0  # a rotated key's old key keeps working for a day


@with_config(_BODY)
class CreateKey(TypedDict, total=False):
    """`POST /admin/keys`."""

    team: Annotated[str | None, Field(description="Required for the admin; a manager's own.")]
    name: str | None
    expires_at: ExpiresAt | None
    expires_in_s: ExpiresIn | None
    scopes: Scopes | None
    models: Annotated[list[str], Field(json_schema_extra={"minItems": 1})] | None


@with_config(_BODY)
class RotateKey(TypedDict, total=False):
    """`POST /admin/keys/{id}/rotate`."""

    grace_s: Annotated[
        float, Field(ge=0, le=MAX_LIFETIME_S, json_schema_extra={"default": DEFAULT_GRACE_S})
    ] | None
    expires_at: ExpiresAt | None
    expires_in_s: ExpiresIn | None
    never_expires: Annotated[
        bool | None, Field(description="Admin only. Default: the old key's expiry.")
    ]


@with_config(ConfigDict(extra="ignore"))
class SignInForm(TypedDict, total=False):
    """`POST /admin/login`, the status page's sign-in form (form-encoded)."""

    key: Annotated[str, Field(description="The admin key.")]


# --- answers --------------------------------------------------------------------------


_MINUTE = "Epoch seconds, to the minute."
_NARROWS = "Narrows the team's models; null: all."


@with_config(ConfigDict(extra="forbid"))
class ApiKey(TypedDict):
    """An API key's metadata (never the key, never its digest)."""

    id: str
    team: str
    name: NotRequired[str | None]
    prefix: Annotated[str, Field(description="`rgk_<id>`: how the key starts.")]
    created: Annotated[float, Field(description="Epoch seconds.")]
    expires: float | None
    expired: bool
    last_used: NotRequired[Annotated[float | None, Field(description=_MINUTE)]]
    scopes: list[Literal["rerank", "manage"]]
    models: NotRequired[Annotated[list[str] | None, Field(description=_NARROWS)]]
    created_by: NotRequired[str]
    rotated_from: NotRequired[str | None]


@with_config(ConfigDict(extra="forbid"))
class IssuedKey(ApiKey):
    """A new key, shown this once, with its metadata."""

    key: str
    warnings: list[str]
    old_key: NotRequired[ApiKey]


class UnreadableKey(TypedDict):
    id: str
    problem: str


class KeyList(TypedDict):
    keys: list[ApiKey]
    unreadable: Annotated[
        list[UnreadableKey],
        Field(description="Records no gateway honours (admin only): revoke them."),
    ]


@with_config(ConfigDict(extra="forbid"))
class RevokedKey(TypedDict):
    id: str
    team: str | None
    revoked: Literal[True]


_KEY_ID = "the API key's id, or config:<digest prefix>"


def _figure(name: str) -> Any:
    return Annotated[float if name.endswith("_usd") else int, Field(ge=0)]


# The figures are policies.money.usage's, named as a report names them.
UsageTotals = with_config(ConfigDict(extra="forbid"))(
    TypedDict(  # type: ignore[misc, operator]  # built from policies.money.usage's names
        "UsageTotals", {name: _figure(name) for name in REPORT_FIGURES}, total=False
    )
)
_ROW = "one group: the `group_by` columns, then the figures"
UsageRow = with_config(ConfigDict(extra="forbid", json_schema_extra={"description": _ROW}))(
    TypedDict(  # type: ignore[misc, operator]
        "UsageRow",
        {
            "team": NotRequired[str],
            "key": NotRequired[Annotated[str | None, Field(description=_KEY_ID)]],
            "model": NotRequired[str],
            "deployment": NotRequired[str | None],
            **{name: Required[_figure(name)] for name in REPORT_FIGURES},
            "unit": Required[
                Annotated[
                    Literal["search_units", "tokens", "request", "free", "mixed"] | None,
                    Field(description="the price kind the row was billed by"),
                ]
            ],
            "billed_units": Required[Annotated[int, Field(ge=0)] | None],
        },
        total=False,
    )
)


UsageReport = TypedDict(  # functional: one of its fields is named `from`
    "UsageReport",
    {
        "from": Annotated[str, Field(json_schema_extra={"format": "date"})],
        "to": Annotated[str, Field(json_schema_extra={"format": "date"})],
        "currency": Literal["USD"],
        "scope": Literal["ledger", "all replicas", "this process"],
        "group_by": Annotated[
            list[Literal[GROUPS]],  # type: ignore[valid-type]
            Field(description="the columns that name each row, in order"),
        ],
        "rows": list[UsageRow],  # type: ignore[valid-type]
        "totals": dict[str, UsageTotals],  # type: ignore[valid-type]
    },
)


LatencyMs = Annotated[float | None, Field(ge=0)]


@with_config(ConfigDict(extra="forbid"))
class Percentiles(TypedDict):
    p50: LatencyMs
    p90: LatencyMs
    p99: LatencyMs


@with_config(ConfigDict(extra="forbid"))
class LatencyPrior(TypedDict):
    """The prior blended with observations while they are few: configured, a model
    family's default, or the broad default."""

    source: str
    base_ms: Seconds
    per_doc_ms: Seconds
    per_kchar_ms: Seconds
    weight: Seconds


@with_config(ConfigDict(extra="forbid"))
class DeploymentHealth(TypedDict):
    models: list[str]
    state: Literal["closed", "half_open", "open"]
    cooldown_remaining_s: Seconds
    calls: Annotated[int, Field(ge=0)]
    error_rate: Annotated[float, Field(ge=0, le=1)]
    in_flight: Annotated[int, Field(ge=0)]
    latency_ms: Percentiles
    latency_samples: Annotated[int, Field(ge=0)]
    latency_prior_ms: LatencyPrior


@with_config(ConfigDict(extra="forbid"))
class RetryBudget(TypedDict):
    requests: Seconds
    retries: Seconds
    available: Seconds


@with_config(ConfigDict(extra="forbid"))
class Deployments(TypedDict):
    """`GET /admin/deployments`: one entry per deployment, and the retry budget."""

    deployments: dict[str, DeploymentHealth]
    retry_budget: RetryBudget


Agreement = Annotated[float | None, Field(ge=-1, le=1)]


@with_config(ConfigDict(extra="forbid"))
class AgreementWindow(TypedDict):
    samples: Annotated[int, Field(ge=0)]
    window: Annotated[int, Field(ge=0)]
    ndcg_mean: Agreement
    ndcg_p10: Agreement
    overlap_mean: Agreement
    rank_correlation_mean: NotRequired[Agreement]
    k_mean: NotRequired[Annotated[float | None, Field(ge=1)]]


@with_config(ConfigDict(extra="forbid"))
class TeamAgreement(TypedDict, total=False):
    fast_vs_pro: AgreementWindow
    pro_vs_fast: AgreementWindow
    fast_quality: AgreementWindow
    downgrades: Literal["allowed", "stopped"]


class ShadowSpend(TypedDict):
    today: Seconds
    total: Seconds


@with_config(ConfigDict(extra="forbid"))
class AliasShadow(TypedDict):
    tiers: dict[str, str]
    shadow: dict[str, Any]
    shadow_calls: dict[str, Annotated[int, Field(ge=0)]]
    shadow_spend_usd: ShadowSpend
    teams: dict[str, TeamAgreement]


@with_config(ConfigDict(extra="forbid"))
class TiersReport(TypedDict):
    """`GET /admin/tiers`: per alias, shadow settings, calls, spend, and the agreement of
    the two tiers' rankings per team and direction."""

    scope: str
    aliases: dict[str, AliasShadow]


# --- depth advice (GET /admin/depth; the status page's panel) ---------------------------

Share = Annotated[float, Field(ge=0, le=1)]
Count = Annotated[int, Field(ge=0)]


@with_config(ConfigDict(extra="forbid"))
class DepthPoint(TypedDict):
    depth: Annotated[int, Field(ge=1)]
    recall: Share
    low: Share
    high: Share


@with_config(ConfigDict(extra="forbid"))
class DepthSends(TypedDict):
    mean: float | None
    p90: int | None
    max: int | None


@with_config(ConfigDict(extra="forbid"))
class DepthSaving(TypedDict):
    unit: Literal["search_units", "tokens", "request", "free"]
    per_request_now: float | None
    per_request_advised: float | None
    usd_per_day: Annotated[float, Field(ge=0)]
    latency_ms_p90: float | None
    requests_per_day: Annotated[float, Field(ge=0)]
    note: str


@with_config(ConfigDict(extra="forbid"))
class DepthRow(TypedDict):
    team: str
    model: str
    mode: Literal["advise", "enforce"]
    enforced: Annotated[int | None, Field(description="The depth cut to now.")]
    reverted: Annotated[bool, Field(description="Switched back to advise (drift).")]
    status: Literal["advice", "no_order_signal", "insufficient_data"]
    message: str
    target_recall: float
    requests: Count
    measured: Count
    explored: Count
    topk_documents: Count
    sends: DepthSends
    needs: Annotated[int | None, Field(description="The advised depth.")]
    cuts: Annotated[bool, Field(description="needs is below what the team sends.")]
    recall: DepthPoint | None
    curve: list[DepthPoint]
    order_p_value: float | None
    saving: DepthSaving | None


@with_config(ConfigDict(extra="forbid"))
class DepthReport(TypedDict):
    """`GET /admin/depth`: one row per team and model with counts in the window."""

    scope: str
    window_hours: float
    rows: list[DepthRow]


# --- the status page's data (GET /admin/status.json) -----------------------------------


class GatewayStatus(TypedDict):
    version: str
    uptime_s: float
    worker_pid: Annotated[int, Field(description="The worker process that answered.")]
    workers: int
    draining: bool
    redis: Annotated[str, Field(description="ok, not configured, or unreachable (why)")]
    generated_at: str


class DaySpend(TypedDict):
    day: str
    usd: float


class TeamStatus(TypedDict, total=False):
    """This month's spend of a team against its budget (or why it is unknown)."""

    error: str
    spent_today_usd: float
    spent_month_usd: float
    budget_day_usd: float | None
    budget_month_usd: float | None
    requests_today: int
    rate_limited_today: int
    budget_refused_today: int
    cache_share_month: Annotated[
        float | None,
        Field(description="Share of the month's search units the cache answered."),
    ]
    saved_month_usd: float
    daily_usd: list[DaySpend]


class CacheStatus(TypedDict):
    lookups: dict[str, int]
    hit_rate: float | None
    saved_usd: float


class TierChoice(TypedDict):
    alias: str
    tier: str
    reason: str
    requests: int


class AgreementRow(TypedDict):
    alias: str
    team: str
    direction: str
    samples: int
    ndcg_mean: float | None
    ndcg_p10: float | None
    downgrades: str


@with_config(ConfigDict(extra="forbid"))
class StatusReport(TypedDict):
    """What the status page shows, as data (this worker's view; usage as `usage_scope`)."""

    gateway: GatewayStatus
    deployments: dict[str, DeploymentHealth]
    retry_budget: RetryBudget
    teams: dict[str, TeamStatus]
    usage_scope: str
    cache: CacheStatus
    tiers: list[TierChoice]
    agreement: list[AgreementRow]
    depth: DepthPanel


@with_config(ConfigDict(extra="forbid"))
class DepthPanel(TypedDict):
    """The status page's depth advice: the report, or why it is missing."""

    scope: str
    window_hours: NotRequired[float]
    rows: list[DepthRow]
    error: NotRequired[str]

