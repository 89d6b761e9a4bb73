"""The host lifecycle as data: every allowed (phase, trigger) -> next phase, with effects.

This table is the single authority on host phases (h11's approach): ``host.py`` only
decides *which trigger* an input amounts to and then applies whatever this table says;
the docs' diagram and the tests are generated from it.  A trigger that has no row for the
current phase is ignored by the machine (and counted as a bug by the tests).

Effects are names, interpreted by ``host.py``/``engine.py``:

- ``begin_outage``: remember the outage (ID, start, boot ID at start), event HostConnecting
- ``check_power``: ask the first fence level for the power status at once, in parallel
  with the connecting grace (the power-off fast path: a chassis that says off fires
  ``power_off`` from Connecting; on or no answer changes nothing)
- ``end_outage``: forget the outage, event HostUp
- ``warn_if_same_boot``: a host proven off returned without a new boot ID (alert)
- ``check_power_or_soft_fence``: the soft fence, once the power-status check asked at
  lease expiry has answered on or nothing (still in flight: its answer decides; never
  asked, e.g. fence agents added since: asked now); no fence agents: straight to the SSH
  soft fence (or to its failure when there is no SSH)
- ``soft_fence``: run the SSH soft fence (restarts the agent; never fence proof, S4)
- ``vms_unknown``: the host's VMs become Unknown (they may still run)
- ``vms_back``: the host's VMs are reconciled from their runtime again
- ``fence_first_level`` / ``fence_next_level``: start the status->off->verify->on
  sequence at a level
- ``release_vms``: the host is proven off for this outage: its VMs leave it (S1)
- ``power_on``: run "on" at the level that verified off (never after kdump proof: the
  host reboots by itself once its dump is written, and a power action would destroy it)
- ``alert_isolated``: raise HostIsolated, with what to check on site and the
  confirmation command; ``schedule_retry``: next fencing attempt;
  ``retry_when_allowed``: fence as soon as the policy that skipped it allows
- ``abandon_ops``: forget any operation in flight
- ``defer_heartbeat``: a heartbeat after "off" was sent: recorded (event), the operation
  goes on (verify off, release, power on) and the host is judged afterwards by boot ID
- ``note_reboot``: event HostRebooted (the host's VMs restart where they are placed)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Phase(StrEnum):
    PENDING = "Pending"
    UP = "Up"
    CONNECTING = "Connecting"
    SOFT_FENCING = "SoftFencing"
    NON_RESPONSIVE = "NonResponsive"
    FENCING = "Fencing"
    REBOOTING = "Rebooting"
    ISOLATED = "Isolated"
    MANUALLY_FENCED = "ManuallyFenced"
    SELF_FENCED = "SelfFenced"
    MAINTENANCE = "Maintenance"


class Trigger(StrEnum):
    HEARTBEAT = "heartbeat"  # lease fresh and agent ready, same boot ID as at outage start
    HEARTBEAT_REBOOTED = "heartbeat_rebooted"  # ... with a new boot ID: a real reboot
    # ... while a fence whose "off" was sent is not finished (verify, power on)
    HEARTBEAT_DURING_FENCE = "heartbeat_during_fence"
    LEASE_EXPIRED = "lease_expired"
    GRACE_OVER = "grace_over"
    POWER_OFF = "power_off"  # power-status check said off: grace and soft fencing skipped
    POWER_ON = "power_on"  # power-status check said on or unknown: soft fence it
    SOFT_FENCE_FAILED = "soft_fence_failed"
    SOFT_FENCE_TIMEOUT = "soft_fence_timeout"
    FENCE_ALLOWED = "fence_allowed"
    NO_POWER_MANAGEMENT = "no_power_management"
    FENCE_SKIPPED = "fence_skipped"  # a policy forbids fencing now (disabled, connectivity)
    LEVEL_FAILED = "level_failed"
    OFF_VERIFIED = "off_verified"
    # A kdump level heard a fence_kdump message from the host while it waited: the host
    # runs its crash kernel, hence no VM.
    KDUMP_DETECTED = "kdump_detected"
    ALL_LEVELS_FAILED = "all_levels_failed"
    RETRY_DUE = "retry_due"
    CONFIRMED = "confirmed"
    SELF_FENCE_PROVEN = "self_fence_proven"
    MAINTENANCE_ON = "maintenance_on"
    MAINTENANCE_OFF = "maintenance_off"  # and the lease is fresh
    MAINTENANCE_OFF_EXPIRED = "maintenance_off_expired"
    MAINTENANCE_OFF_NO_LEASE = "maintenance_off_no_lease"


@dataclass(frozen=True)
class Transition:
    source: Phase
    trigger: Trigger
    target: Phase
    effects: tuple[str, ...] = ()


P, T = Phase, Trigger

# Phases where the host is unreachable and not yet proven off.
OUTAGE_PHASES = frozenset({P.CONNECTING, P.SOFT_FENCING, P.NON_RESPONSIVE, P.FENCING, P.ISOLATED})
# Phases where the host is proven off for the current outage (its VMs were released).
RELEASED_PHASES = frozenset({P.REBOOTING, P.MANUALLY_FENCED, P.SELF_FENCED})
# Phases where the host's VMs may be running but nobody knows.
UNKNOWN_VM_PHASES = frozenset({P.NON_RESPONSIVE, P.FENCING, P.ISOLATED})
# Phases in which hafence cannot go on alone: a person must check the host and confirm
# it is off (or fix its power management).  `kubectl get hosts` shows them as Isolated.
NEEDS_PERSON_PHASES = frozenset({P.ISOLATED})


def _rows() -> Iterable[Transition]:
    yield Transition(P.PENDING, T.HEARTBEAT, P.UP, ("end_outage",))
    yield Transition(P.PENDING, T.LEASE_EXPIRED, P.CONNECTING, ("begin_outage", "check_power"))
    yield Transition(P.UP, T.LEASE_EXPIRED, P.CONNECTING, ("begin_outage", "check_power"))
    # The power-off fast path: a chassis its BMC says is off needs neither the rest of
    # the grace nor a soft fence; it is fenced (off, verify off) like any other host, so
    # the proof that releases its VMs is the same (docs/architecture.md).
    yield Transition(P.CONNECTING, T.POWER_OFF, P.NON_RESPONSIVE, ("vms_unknown",))
    yield Transition(P.CONNECTING, T.GRACE_OVER, P.SOFT_FENCING, ("check_power_or_soft_fence",))
    yield Transition(P.SOFT_FENCING, T.POWER_ON, P.SOFT_FENCING, ("soft_fence",))
    for trig in (T.POWER_OFF, T.SOFT_FENCE_FAILED, T.SOFT_FENCE_TIMEOUT):
        yield Transition(P.SOFT_FENCING, trig, P.NON_RESPONSIVE, ("vms_unknown",))
    yield Transition(P.NON_RESPONSIVE, T.FENCE_ALLOWED, P.FENCING, ("fence_first_level",))
    yield Transition(P.NON_RESPONSIVE, T.NO_POWER_MANAGEMENT, P.ISOLATED, ("alert_isolated",))
    # Skipped by policy, the host still needs a person (or the policy to allow it):
    # Isolated asks for one, and fences as soon as the policy allows.
    yield Transition(
        P.NON_RESPONSIVE, T.FENCE_SKIPPED, P.ISOLATED, ("alert_isolated", "retry_when_allowed")
    )
    yield Transition(P.FENCING, T.LEVEL_FAILED, P.FENCING, ("fence_next_level",))
    yield Transition(P.FENCING, T.OFF_VERIFIED, P.REBOOTING, ("release_vms", "power_on"))
    # No "off" was sent and none follows: the host comes back by itself after its dump.
    yield Transition(P.FENCING, T.KDUMP_DETECTED, P.REBOOTING, ("release_vms",))
    yield Transition(
        P.FENCING, T.ALL_LEVELS_FAILED, P.ISOLATED, ("alert_isolated", "schedule_retry")
    )
    yield Transition(P.ISOLATED, T.RETRY_DUE, P.FENCING, ("fence_first_level",))
    # Once "off" may have reached a device, abandoning the operation could leave a host
    # powered off with its VMs shown Running there and never powered on again: it
    # completes, and the heartbeat is judged after the power-on.
    yield Transition(P.FENCING, T.HEARTBEAT_DURING_FENCE, P.FENCING, ("defer_heartbeat",))
    yield Transition(P.REBOOTING, T.HEARTBEAT_DURING_FENCE, P.REBOOTING, ("defer_heartbeat",))
    for src in sorted(OUTAGE_PHASES):
        back = ("vms_back", "abandon_ops", "end_outage")
        yield Transition(src, T.HEARTBEAT, P.UP, back)
        # A reboot during the outage killed the VMs, but by the time the heartbeat
        # shows it the agent may already have restarted them in place (they are still
        # placed there): moving them now could run them twice.  They stay.
        yield Transition(
            src,
            T.HEARTBEAT_REBOOTED,
            P.UP,
            ("note_reboot", "vms_back", "abandon_ops", "end_outage"),
        )
        yield Transition(src, T.CONFIRMED, P.MANUALLY_FENCED, ("abandon_ops", "release_vms"))
        yield Transition(src, T.SELF_FENCE_PROVEN, P.SELF_FENCED, ("abandon_ops", "release_vms"))
    for src in sorted(RELEASED_PHASES):
        yield Transition(src, T.HEARTBEAT_REBOOTED, P.UP, ("abandon_ops", "end_outage"))
        yield Transition(src, T.HEARTBEAT, P.UP, ("abandon_ops", "warn_if_same_boot", "end_outage"))
    for src in P:
        if src is not P.MAINTENANCE:
            yield Transition(src, T.MAINTENANCE_ON, P.MAINTENANCE, ("abandon_ops",))
    yield Transition(P.MAINTENANCE, T.MAINTENANCE_OFF, P.UP, ("end_outage",))
    yield Transition(
        P.MAINTENANCE, T.MAINTENANCE_OFF_EXPIRED, P.CONNECTING, ("begin_outage", "check_power")
    )
    yield Transition(P.MAINTENANCE, T.MAINTENANCE_OFF_NO_LEASE, P.PENDING)


TRANSITIONS: tuple[Transition, ...] = tuple(_rows())
TABLE: dict[tuple[Phase, Trigger], Transition] = {}
for _t in TRANSITIONS:
    if (_t.source, _t.trigger) in TABLE:
        raise AssertionError(f"duplicate transition {_t.source} --{_t.trigger}-->")
    TABLE[(_t.source, _t.trigger)] = _t


def lookup(phase: Phase, trigger: Trigger) -> Transition | None:
    return TABLE.get((phase, trigger))


def render_mermaid() -> str:
    """The lifecycle as a Mermaid state diagram (self-loops and maintenance folded)."""
    lines = ["stateDiagram-v2", "    [*] --> Pending"]
    for t in TRANSITIONS:
        if t.trigger is T.MAINTENANCE_ON and t.source is not P.UP:
            continue  # "any --maintenance_on--> Maintenance": one arrow says it
        label = t.trigger.value
        if t.effects:
            label += " / " + ", ".join(t.effects)
        lines.append(f"    {t.source.value} --> {t.target.value} : {label}")
    lines.append("    note right of Maintenance : any phase --maintenance_on--> Maintenance")
    return "\n".join(lines) + "\n"


def render_table() -> str:
    """The lifecycle as a plain-text table, one transition a line."""
    w_src = max(len(t.source.value) for t in TRANSITIONS)
    w_trg = max(len(t.trigger.value) for t in TRANSITIONS)
    w_dst = max(len(t.target.value) for t in TRANSITIONS)
    out = []
    for t in TRANSITIONS:
        out.append(
            f"{t.source.value:<{w_src}}  --{t.trigger.value:<{w_trg}}-->  "
            f"{t.target.value:<{w_dst}}  {', '.join(t.effects)}".rstrip()
        )
    return "\n".join(out) + "\n"
