"""Which trigger a host's heartbeat and the passing of time amount to.

Called for a host after every input that concerns it and on every tick.  It only fires
triggers on the machine (``host.py``), which applies the transitions table.  The
dependency goes one way: this module drives ``host.py``, never the reverse.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from hafence.api.lease import peer_check_window
from hafence.core.records import HostRecord
from hafence.core.transitions import OUTAGE_PHASES, RELEASED_PHASES, Phase, Trigger

if TYPE_CHECKING:
    from hafence.core.host import HostMachine


def self_fence_proven(
    rec: HostRecord, now: float, margin: float, peers: Iterable[HostRecord]
) -> bool:
    """The host's watchdog device has reset it: true only when all of these hold.

    - Its spec enables self-fencing and its last lease declared a watchdog device armed
      *in the boot that lease speaks for* (``watchdog_boot_id == boot_id``), with the
      timeout the driver granted.  A lease without that declaration (an agent with no
      device, the old software-only annotation, an agent that stopped declaring) is no
      proof however long the silence.
    - Lease expiry + the agent's peer-check window + twice the granted timeout +
      ``margin`` has passed: the agent feeds the device at most that window past its
      lease, and the kernel pings the device once more when the agent's file is closed
      without the magic character (a crash just before it fires), so it fires at most
      two timeouts after the last feed.
    - The agent cannot be in its API-outage mode (hafence.agent.peers), where it keeps
      feeding because a strict majority of its peers also lost the API server.  A peer
      answers "lost" only after the operator has seen its lease expire, so if at least
      half of the host's cluster peers have been fresh, without a gap, for the last
      lease duration (bounding how long one outage verdict lets the agent feed) +
      twice the granted timeout + margin, no such verdict can have kept the device fed.
    """
    sf = rec.spec.self_fencing
    expiry = rec.lease_expiry()
    if not sf.enabled or rec.watchdog_timeout is None or expiry is None:
        return False
    if rec.watchdog_boot_id is None or rec.watchdog_boot_id != rec.boot_id:
        return False
    fires_within = 2 * max(rec.watchdog_timeout, float(sf.watchdog_timeout_seconds))
    if now < expiry + peer_check_window(rec.lease_duration) + fires_within + margin:
        return False
    others = [p for p in peers if p.name != rec.name and p.spec.cluster == rec.spec.cluster]
    steady_since = now - (rec.lease_duration + fires_within + margin)
    steady = sum(
        1
        for p in others
        if p.lease_fresh(now) and p.fresh_since is not None and p.fresh_since <= steady_since
    )
    return 2 * steady >= len(others)


def evaluate(m: HostMachine, rec: HostRecord, now: float) -> None:
    """Fire whatever the inputs and ``now`` call for, until the phase settles (so a host
    does not wait a tick between, say, NonResponsive and Fencing)."""
    _repair(rec, now)
    m.expire(rec, now)  # every step ends: a deadline passed is a failed step
    for _ in range(len(Phase)):
        before = rec.phase
        _once(m, rec, now)
        if rec.phase is before:
            return


def _repair(rec: HostRecord, now: float) -> None:
    """A status restored without its outage (hand-edited, or from an older operator):
    rebuild the outage rather than fail."""
    if (rec.phase in OUTAGE_PHASES or rec.phase in RELEASED_PHASES) and rec.outage_id is None:
        start = rec.lease_expiry() or now
        rec.outage_start = start
        rec.outage_id = f"{rec.name}-{int(start)}"
        rec.boot_id_at_outage = rec.boot_id
    if rec.outage_id is not None and rec.outage_start is None:
        rec.outage_start = rec.lease_expiry() or now
    if rec.step is not None and rec.step_since is None:
        rec.step_since = now


def _heartbeat(m: HostMachine, rec: HostRecord, now: float) -> None:
    if not rec.ready or rec.phase is Phase.UP:
        return  # a renewing agent that has not swept yet: never fenced (S5), not Up
    rebooted = rec.boot_id_at_outage is not None and rec.boot_id != rec.boot_id_at_outage
    if rec.phase is Phase.SOFT_FENCING and rec.step in ("soft-fence", "soft-fence-wait"):
        m.ctx.event(rec.name, "SoftFenceSucceeded", "heartbeat back after soft fence")
    m.fire(rec, Trigger.HEARTBEAT_REBOOTED if rebooted else Trigger.HEARTBEAT, now)


def _maintenance(m: HostMachine, rec: HostRecord, now: float, fresh: bool) -> None:
    if rec.spec.maintenance:
        if rec.phase in OUTAGE_PHASES:
            m.ctx.event(
                rec.name, "FenceSkippedMaintenance", "host in maintenance: never fenced", "Warning"
            )
        m.fire(rec, Trigger.MAINTENANCE_ON, now)
    elif not rec.lease_seen:
        m.fire(rec, Trigger.MAINTENANCE_OFF_NO_LEASE, now)
    elif not fresh:
        m.fire(rec, Trigger.MAINTENANCE_OFF_EXPIRED, now)
    elif rec.ready:
        m.fire(rec, Trigger.MAINTENANCE_OFF, now)


def _once(m: HostMachine, rec: HostRecord, now: float) -> None:
    ctx = m.ctx
    fresh = rec.lease_fresh(now)
    if rec.spec.maintenance != (rec.phase is Phase.MAINTENANCE):
        _maintenance(m, rec, now, fresh)
        return
    if rec.phase is Phase.MAINTENANCE:
        return
    if fresh and rec.fence_committed():
        # "off" was sent: the operation completes whatever this heartbeat means; it is
        # recorded now and judged after the power-on (a renewal with a new boot ID).
        if rec.renewal_seen and not rec.heartbeat_deferred:
            m.fire(rec, Trigger.HEARTBEAT_DURING_FENCE, now)
    elif fresh:
        if rec.renewal_seen:
            _heartbeat(m, rec, now)
        return
    if not rec.lease_seen:
        return
    if rec.phase in (Phase.UP, Phase.PENDING):
        m.fire(rec, Trigger.LEASE_EXPIRED, now)
    if rec.phase not in OUTAGE_PHASES:
        m.issue(rec, now)  # e.g. "on" re-issued after a restart in Rebooting
        return
    if ctx.quiet(now):
        m.hold(
            rec,
            "FenceSkippedQuietPeriod",
            "operator just started: no fencing during the quiet period",
        )
        return
    if self_fence_proven(rec, now, ctx.settings.self_fence_safety_margin, ctx.hosts.values()):
        ctx.event(
            rec.name,
            "SelfFenceProven",
            f"lease expired longer ago than the peer-check window, twice the watchdog "
            f"timeout its device granted ({rec.watchdog_timeout:g}s) and the safety margin, "
            "while at least half of its peers renewed: the device has reset the host",
        )
        m.fire(rec, Trigger.SELF_FENCE_PROVEN, now, proof="self-fence")
        return
    if rec.held == "FenceSkippedQuietPeriod":
        rec.held = None
    _escalate(m, rec, now)
    m.issue(rec, now)


def _escalate(m: HostMachine, rec: HostRecord, now: float) -> None:
    ctx = m.ctx
    phase = rec.phase
    if phase is Phase.CONNECTING:
        assert rec.outage_start is not None  # _repair
        if now >= rec.outage_start + ctx.settings.grace(ctx.vm_count(rec.name)):
            m.fire(rec, Trigger.GRACE_OVER, now)
    elif phase is Phase.SOFT_FENCING:
        if rec.step == "soft-fence-wait":
            assert rec.step_since is not None  # _repair
            if now >= rec.step_since + ctx.settings.soft_fence_timeout:
                ctx.event(
                    rec.name,
                    "SoftFenceFailed",
                    f"no heartbeat {ctx.settings.soft_fence_timeout:g}s after the soft fence",
                    "Warning",
                )
                m.fire(rec, Trigger.SOFT_FENCE_TIMEOUT, now)
        elif rec.step is None:
            m.restart_soft_fencing(rec, now)
    elif phase is Phase.NON_RESPONSIVE:
        if not ctx.levels(rec.name):
            m.fire(rec, Trigger.NO_POWER_MANAGEMENT, now)
            return
        hold = ctx.fence_hold(rec, now)
        if hold is None:
            m.fire(rec, Trigger.FENCE_ALLOWED, now)
        else:
            m.hold(rec, *hold)
            if hold[0].startswith("FenceSkipped"):  # a policy, not a wait: ask a person
                m.fire(rec, Trigger.FENCE_SKIPPED, now)
    elif phase is Phase.FENCING:
        if rec.step is None:
            m.start_level(rec, now)
    elif phase is Phase.ISOLATED and rec.next_retry is not None and now >= rec.next_retry:
        hold = ctx.fence_hold(rec, now)
        if hold is None:
            m.fire(rec, Trigger.RETRY_DUE, now)
        else:
            m.hold(rec, *hold)
