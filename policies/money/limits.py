"""Over-fetch limits: how many and how long documents (and query) a team may send.

Limits are set globally (`limits:`), per model (`models.<m>.limits`) and per team
(`teams.<t>.limits`); the team's value wins over the model's, which wins over the
global one. Over a limit a request is either rejected (the caller is told which limit,
for which team, and what it sent) or truncated (the first documents are kept: they are
the first-stage retriever's best; long documents are cut) with a warning.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Literal

from annotated_types import Ge, Interval

Action = Literal["reject", "truncate"]
REJECT: Action = "reject"
TRUNCATE: Action = "truncate"


@dataclass
class RequestLimits:
    """One level of limits; None means "inherit from the level above" (or no limit)."""

    max_documents: Annotated[int, Interval(ge=1, le=10_000)] | None = None
    max_query_chars: Annotated[int, Ge(1)] | None = None
    max_document_chars: Annotated[int, Ge(1)] | None = None
    # Approximated as chars x pricing.tokens_per_char; the smaller of the two limits holds.
    max_document_tokens: Annotated[int, Ge(1)] | None = None
    max_body_bytes: Annotated[int, Ge(1024)] | None = None
    overfetch: Action | None = None  # what to do with more than max_documents
    long_documents: Action | None = None  # what to do with a document over its limit


_LEVEL_FIELDS = tuple(f.name for f in dataclasses.fields(RequestLimits))


@dataclass(frozen=True, slots=True)
class Effective:
    """The limits that apply to one (team, model), all levels merged."""

    max_documents: int | None
    max_query_chars: int | None
    max_document_chars: int | None  # the char limit, tokens limit converted
    document_limit_name: str  # which setting max_document_chars comes from, for messages
    overfetch: Action
    long_documents: Action


class LimitExceeded(Exception):
    """A request over a limit whose action is reject; the message is for the caller."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit
        self.message = message


@dataclass(frozen=True, slots=True)
class Applied:
    limit: str  # max_documents | max_query_chars | max_document_chars | max_body_bytes
    action: Action


@dataclass(slots=True)
class Enforced:
    """What a request becomes: its first `kept` documents, some possibly cut."""

    texts: list[str]
    kept: int
    warnings: list[str] = field(default_factory=list)
    applied: list[Applied] = field(default_factory=list)


class LimitPolicy:
    def __init__(
        self,
        base: RequestLimits,
        models: Mapping[str, RequestLimits | None],
        teams: Mapping[str, RequestLimits | None],
        tokens_per_char: float,
        server_max_body_bytes: int,
    ) -> None:
        self.base = base
        self.models = {k: v for k, v in models.items() if v is not None}
        self.teams = {k: v for k, v in teams.items() if v is not None}
        self.tokens_per_char = tokens_per_char
        self.server_max_body_bytes = server_max_body_bytes
        self._effective: dict[tuple[str, str], Effective] = {}

    def body_limit(self, team: str) -> int:
        """Body bytes allowed for `team` (known before the body is parsed, unlike the model)."""
        team_limits = self.teams.get(team)
        limit = team_limits.max_body_bytes if team_limits else None
        if limit is None:
            limit = self.base.max_body_bytes
        return min(limit, self.server_max_body_bytes) if limit else self.server_max_body_bytes

    def effective(self, team: str, model: str) -> Effective:
        found = self._effective.get((team, model))
        if found is None:
            found = self._effective[team, model] = self._merge(team, model)
        return found

    def _merge(self, team: str, model: str) -> Effective:
        levels = [self.teams.get(team), self.models.get(model), self.base]
        merged = {
            name: next(
                (getattr(lv, name) for lv in levels if lv and getattr(lv, name) is not None), None
            )
            for name in _LEVEL_FIELDS
        }
        chars = merged["max_document_chars"]
        label = f"max_document_chars={chars}"
        tokens = merged["max_document_tokens"]
        if tokens is not None:
            as_chars = max(1, math.floor(tokens / self.tokens_per_char))
            if chars is None or as_chars < chars:
                chars, label = (
                    as_chars,
                    f"max_document_tokens={tokens} (about {as_chars} characters)",
                )
        return Effective(
            max_documents=merged["max_documents"],
            max_query_chars=merged["max_query_chars"],
            max_document_chars=chars,
            document_limit_name=label,
            overfetch=merged["overfetch"] or REJECT,
            long_documents=merged["long_documents"] or REJECT,
        )

    def enforce(self, team: str, model: str, query: str, texts: list[str]) -> Enforced:
        """Apply the limits of (team, model); raise LimitExceeded on a rejecting limit."""
        limits = self.effective(team, model)
        result = Enforced(texts=texts, kept=len(texts))
        _check_query(limits, team, query)
        _check_count(limits, team, model, result)
        _check_lengths(limits, team, result)
        return result


def _check_query(limits: Effective, team: str, query: str) -> None:
    cap = limits.max_query_chars
    if cap is not None and len(query) > cap:
        raise LimitExceeded(
            "max_query_chars",
            f"query too long: team '{team}' sent a query of {len(query)} characters and its "
            f"limit is max_query_chars={cap}; shorten the query",
        )


def _check_count(limits: Effective, team: str, model: str, result: Enforced) -> None:
    cap, count = limits.max_documents, len(result.texts)
    if cap is None or count <= cap:
        return
    if limits.overfetch == REJECT:
        raise LimitExceeded(
            "max_documents",
            f"too many documents: team '{team}' sent {count} documents for model '{model}' and "
            f"its limit is max_documents={cap}; send only the best {cap} of your first-stage "
            "results",
        )
    result.texts = result.texts[:cap]
    result.kept = cap
    result.applied.append(Applied("max_documents", TRUNCATE))
    result.warnings.append(
        f"team '{team}' sent {count} documents and its limit is max_documents={cap}: only the "
        f"first {cap} were reranked; documents {cap}-{count - 1} were dropped and have no results"
    )


def _check_lengths(limits: Effective, team: str, result: Enforced) -> None:
    cap = limits.max_document_chars
    if cap is None:
        return
    over = [i for i, text in enumerate(result.texts) if len(text) > cap]
    if not over:
        return
    listed = ", ".join(str(i) for i in over[:10]) + (", ..." if len(over) > 10 else "")
    if limits.long_documents == REJECT:
        first = over[0]
        raise LimitExceeded(
            "max_document_chars",
            f"document too long: documents[{first}] has {len(result.texts[first])} characters and "
            f"the limit for team '{team}' is {limits.document_limit_name}; {len(over)} "
            f"document(s) are over it (indices {listed}); shorten or split them",
        )
    texts = list(result.texts)
    for i in over:
        texts[i] = texts[i][:cap]
    result.texts = texts
    result.applied.append(Applied("max_document_chars", TRUNCATE))
    result.warnings.append(
        f"{len(over)} document(s) were over the limit for team '{team}' "
        f"({limits.document_limit_name}) and were cut to {cap} characters (indices {listed})"
    )
