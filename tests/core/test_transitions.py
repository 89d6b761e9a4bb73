"""The lifecycle table: complete, consistent with the API, and rendered for the docs."""

from __future__ import annotations

import typing

from hafence.api.host import HostPhase, OutagePhase
from hafence.core.transitions import (
    OUTAGE_PHASES,
    RELEASED_PHASES,
    TRANSITIONS,
    Phase,
    Trigger,
    lookup,
    render_mermaid,
    render_table,
)


def _reachable(start: Phase) -> set[Phase]:
    seen = {start}
    frontier = [start]
    while frontier:
        p = frontier.pop()
        for t in TRANSITIONS:
            if t.source is p and t.target not in seen:
                seen.add(t.target)
                frontier.append(t.target)
    return seen


def test_phases_are_the_api_phases() -> None:
    assert {p.value for p in Phase} == set(typing.get_args(HostPhase))
    # A HostOutage's states: the outage before the proof and after it.
    outage = {p.value for p in OUTAGE_PHASES | RELEASED_PHASES}
    assert outage == set(typing.get_args(OutagePhase))


def test_every_phase_is_reachable_from_pending_and_can_return_up() -> None:
    assert _reachable(Phase.PENDING) == set(Phase)
    for p in Phase:
        assert Phase.UP in _reachable(p) or p is Phase.UP, p


def test_vms_are_released_only_when_entering_a_proven_off_phase() -> None:
    # S1 in the table itself: the release effect is only on transitions into a phase
    # that records proof (fence verified off, confirmation, self-fence).
    for t in TRANSITIONS:
        if "release_vms" in t.effects:
            assert t.target in RELEASED_PHASES, t


def test_heartbeat_loss_alone_never_releases() -> None:
    for t in TRANSITIONS:
        if t.trigger in (
            Trigger.LEASE_EXPIRED,
            Trigger.GRACE_OVER,
            Trigger.SOFT_FENCE_TIMEOUT,
            Trigger.SOFT_FENCE_FAILED,
            Trigger.ALL_LEVELS_FAILED,
        ):
            assert "release_vms" not in t.effects, t


def test_outage_phases_accept_confirmation_and_self_fence_proof() -> None:
    for p in OUTAGE_PHASES:
        assert lookup(p, Trigger.CONFIRMED) is not None
        assert lookup(p, Trigger.SELF_FENCE_PROVEN) is not None
    for p in set(Phase) - OUTAGE_PHASES:
        assert lookup(p, Trigger.CONFIRMED) is None, p  # S6: no confirmation outside one


def test_any_phase_goes_to_maintenance() -> None:
    for p in set(Phase) - {Phase.MAINTENANCE}:
        t = lookup(p, Trigger.MAINTENANCE_ON)
        assert t is not None and t.target is Phase.MAINTENANCE


def test_diagrams_show_every_transition() -> None:
    mermaid = render_mermaid()
    table = render_table()
    assert mermaid.startswith("stateDiagram-v2")
    for t in TRANSITIONS:
        assert f"{t.source.value} " in table and t.trigger.value in table
        if t.trigger is not Trigger.MAINTENANCE_ON or t.source is Phase.UP:
            assert f"{t.source.value} --> {t.target.value} : {t.trigger.value}" in mermaid
    assert len(table.splitlines()) == len(TRANSITIONS)
