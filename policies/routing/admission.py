"""Admission of rerank requests under `server.max_in_flight`, fair across teams.

A plain counter ("20 in flight, refuse the 21st") lets one team hold every slot while the
others get 503 for as long as it keeps sending. Here each team is entitled to a share of
the slots, `max(1, max_in_flight // active teams)`, where a team is active while it holds
a slot or was refused within the last `waiting_s` (it still wants in). A team may borrow
beyond its share while the slots are free and no other team is waiting; once another team
is refused, a team at or over its share is refused too, so the slots it frees as its
requests finish go to the team that waits. Nothing queues: a refusal is immediate (the
caller gets 503 with Retry-After), so shedding stays cheap.

`has_room` is the same decision without taking a slot, asked before the body is read;
`admit` takes the slot once the body is in (a slow sender never holds one). The clock
is injected, so the policy is tested without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request was not admitted: the process's limit, or the team's share of it."""

    limit: int
    share: int | None = None  # set when the team is at its share while another waits


@dataclass(slots=True)
class FairAdmission:
    max_in_flight: int
    clock: Callable[[], float] = time.monotonic
    waiting_s: float = 5.0  # a refused team counts as waiting this long
    held: dict[str, int] = field(default_factory=dict)  # slots held, by team
    total: int = 0
    refused_at: dict[str, float] = field(default_factory=dict)  # last refusal, by team

    def has_room(self, team: str) -> Refusal | None:
        """None when `team` would be admitted now; else the refusal (recorded as waiting)."""
        now = self.clock()
        refusal = self._refusal(team, now)
        if refusal is not None:
            self.refused_at[team] = now
        return refusal

    def admit(self, team: str) -> Refusal | None:
        """Take a slot for `team` (None), or refuse; a taken slot must be `release`d."""
        refusal = self.has_room(team)
        if refusal is None:
            self.held[team] = self.held.get(team, 0) + 1
            self.total += 1
            self.refused_at.pop(team, None)  # served: no longer waiting
        return refusal

    def release(self, team: str) -> None:
        left = self.held[team] - 1
        if left:
            self.held[team] = left
        else:
            del self.held[team]
        self.total -= 1

    def share(self, team: str) -> int:
        """The slots `team` is entitled to while others wait."""
        active = set(self.held) | set(self._waiting(self.clock())) | {team}
        return max(1, self.max_in_flight // len(active))

    def _refusal(self, team: str, now: float) -> Refusal | None:
        if self.total >= self.max_in_flight:
            return Refusal(self.max_in_flight)
        others = [t for t in self._waiting(now) if t != team]
        if not others:
            return None  # free slots and nobody else waiting: borrow freely
        active = set(self.held) | set(others) | {team}
        share = max(1, self.max_in_flight // len(active))
        if self.held.get(team, 0) >= share:
            return Refusal(self.max_in_flight, share)
        return None

    def _waiting(self, now: float) -> list[str]:
        """Teams refused within `waiting_s`; older refusals are forgotten."""
        expired = [t for t, at in self.refused_at.items() if now - at >= self.waiting_s]
        for team in expired:
            del self.refused_at[team]
        return list(self.refused_at)
