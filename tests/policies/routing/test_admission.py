"""Fair admission under server.max_in_flight (policies/routing/admission.py), alone, on a fake
clock: a team borrows free slots while nobody else waits, and is held to its share once
another team is refused."""

from __future__ import annotations

from policies.routing.admission import FairAdmission, Refusal
from tests.fakes.clock import FakeClock


def admission(limit: int = 4) -> tuple[FairAdmission, FakeClock]:
    clock = FakeClock()
    return FairAdmission(limit, clock=clock, waiting_s=5.0), clock


def test_alone_a_team_may_take_every_slot_then_is_refused_at_the_limit() -> None:
    policy, _ = admission(4)
    assert [policy.admit("a") for _ in range(4)] == [None] * 4
    assert policy.admit("a") == Refusal(4)
    assert policy.total == 4 and policy.held == {"a": 4}


def test_once_another_team_waits_the_borrower_is_held_to_its_share() -> None:
    """Was (a plain counter): team a kept every slot as fast as they freed."""
    policy, _ = admission(4)
    for _ in range(4):
        policy.admit("a")
    assert policy.admit("b") == Refusal(4)  # at capacity: b now waits
    policy.release("a")  # a: 3 held, one slot free
    assert policy.admit("a") == Refusal(4, share=2)  # over its share of 2 while b waits
    assert policy.admit("b") is None  # the freed slot goes to the team that waited
    policy.release("a")
    policy.release("a")  # a: 1 held
    assert policy.admit("a") is None  # under its share: a gets its second slot
    assert policy.held == {"a": 2, "b": 1}


def test_has_room_decides_the_same_without_taking_a_slot() -> None:
    policy, _ = admission(2)
    assert policy.has_room("a") is None
    assert policy.total == 0
    policy.admit("a")
    policy.admit("a")
    assert policy.has_room("b") == Refusal(2)
    assert policy.refused_at == {"b": 1000.0}  # a refusal before the body counts as waiting


def test_a_waiting_team_is_forgotten_after_the_window() -> None:
    policy, clock = admission(4)
    for _ in range(4):
        policy.admit("a")
    policy.admit("b")
    policy.release("a")
    assert policy.admit("a") == Refusal(4, share=2)
    clock.advance(5.0)  # b gave up: nobody waits any more
    assert policy.admit("a") is None
    assert policy.refused_at == {}


def test_the_share_is_at_least_one_and_counts_every_active_team() -> None:
    policy, _ = admission(2)
    policy.admit("a")
    policy.admit("b")
    assert policy.admit("c") == Refusal(2)
    assert policy.share("a") == 1  # three active teams, two slots: at least one each
    policy.release("a")
    assert policy.admit("b") == Refusal(2, share=1)  # b holds its one while c waits
    assert policy.admit("c") is None


def test_release_forgets_a_team_with_no_slot() -> None:
    policy, _ = admission(2)
    policy.admit("a")
    policy.release("a")
    assert policy.held == {} and policy.total == 0
