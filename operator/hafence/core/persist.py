"""Core records <-> the status the shell persists (Host.status, HAVirtualMachine.status).

Written so that an operator restart resumes where it stopped: the outage (ID, start,
boot ID, proof), the fencing attempt/level/step and whether its result was still pending
(then the step is issued again after the quiet period), VM placements and epochs, the
host that may still run a VM (``lastHost``) and the VM retry schedule.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hafence.api.base import Condition
from hafence.api.confirmation import FenceConfirmationStatus
from hafence.api.host import FencingStatus, HostStatus
from hafence.api.vm import HAVirtualMachineStatus
from hafence.core.records import HOST_STEPS, ConfirmationRecord, HostRecord, VMRecord
from hafence.core.transitions import Phase


def to_datetime(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, tz=UTC)


def to_seconds(dt: datetime | None) -> float | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _condition(
    type_: str, true: bool, reason: str, message: str, since: float | None = None
) -> Condition:
    """One condition of a status the core writes; ``since``, when the core knows when it
    became so (the shell keeps ``lastTransitionTime`` across writes either way)."""
    return Condition(
        type=type_,
        status="True" if true else "False",
        reason=reason,
        message=message,
        last_transition_time=to_datetime(since),
    )


def host_status(rec: HostRecord, vm_count: int) -> HostStatus:
    fencing = None
    if rec.outage_id is not None:
        step = rec.step
        result = rec.last_result
        if step == "soft-fence-wait":
            step, result = "soft-fence", "ok: waiting for the heartbeat"
        elif rec.step_pending:
            result = "pending"
        fencing = FencingStatus(
            outage_id=rec.outage_id,
            outage_start_time=to_datetime(rec.outage_start),
            boot_id_at_outage=rec.boot_id_at_outage,
            proof=rec.proof,
            attempt=rec.attempt,
            level=rec.level_index if step in ("kdump", "status", "off", "verify", "on") else None,
            last_action=step,
            last_result=result,
            agent=rec.agent,
            proxy=rec.proxy,
            since=to_datetime(rec.step_since),
            next_retry_time=to_datetime(rec.next_retry),
        )
    phase = rec.phase.value
    # Only an Up host takes VMs: the condition tools wait on (kubectl wait).
    conditions = [_condition("Available", rec.phase is Phase.UP, phase, f"host is {phase}")]
    if rec.held is not None and rec.outage_id is not None:
        # Why escalation waits, on the Host itself: Events expire, this stays while true.
        conditions.append(_condition("FencingAllowed", False, rec.held, rec.held_message or ""))
    if rec.self_fencing_unavailable is not None:
        conditions.append(
            _condition(
                "SelfFencingUnavailable", True, "NoArmedWatchdog", rec.self_fencing_unavailable
            )
        )
    return HostStatus(
        phase=phase,
        phase_since=to_datetime(rec.phase_since),
        last_heartbeat_time=to_datetime(rec.renew_time),
        boot_id=rec.boot_id,
        power_state=rec.power_state,
        fencing=fencing,
        vm_count=vm_count,
        conditions=conditions,
    )


def restore_host(rec: HostRecord, status: HostStatus) -> None:
    """Fill ``rec`` from a persisted status.  Nothing is in flight after a restart: a
    step whose result was pending is issued again (``step_pending``)."""
    if status.phase is not None:
        rec.phase = Phase(status.phase)
    rec.phase_since = to_seconds(status.phase_since)
    rec.renew_time = to_seconds(status.last_heartbeat_time)
    rec.boot_id = status.boot_id
    rec.power_state = status.power_state
    f = status.fencing
    if f is None or f.outage_id is None:
        return
    rec.outage_id = f.outage_id
    rec.outage_start = to_seconds(f.outage_start_time)
    rec.boot_id_at_outage = f.boot_id_at_outage
    rec.proof = f.proof
    rec.attempt = f.attempt
    rec.level_index = f.level or 0
    rec.agent, rec.proxy = f.agent, f.proxy
    rec.step_since = to_seconds(f.since)
    rec.next_retry = to_seconds(f.next_retry_time)
    rec.last_result = f.last_result
    step = f.last_action if f.last_action in HOST_STEPS else None
    if step == "soft-fence" and (f.last_result or "").startswith("ok"):
        step = "soft-fence-wait"
    rec.step = step
    rec.step_pending = f.last_result == "pending"
    # A verify (or the power-on after it) was under way: the "off" had been sent, so the
    # operation completes.  An "off" still pending may or may not have been sent; a
    # heartbeat then means the host is alive (S5 holds the "off" until it expires).
    rec.off_sent = step == "verify" or (rec.phase is Phase.REBOOTING and step == "on")


def vm_status(rec: VMRecord) -> HAVirtualMachineStatus:
    conditions = []
    if rec.unschedulable is not None:
        conditions.append(
            _condition(
                "Scheduled", False, "Unschedulable", rec.unschedulable, rec.unschedulable_since
            )
        )
    elif rec.host is not None:
        conditions.append(_condition("Scheduled", True, "Placed", f"placed on {rec.host}"))
    return HAVirtualMachineStatus(
        phase=rec.phase,
        host=rec.host,
        placement_epoch=rec.epoch,
        restart_count=rec.restart_count,
        last_failure_reason=rec.last_failure_reason,
        failed_restarts=rec.failed_restarts,
        next_placement_time=to_datetime(rec.next_placement),
        placement_attempts=rec.attempts,
        last_host=rec.holder,
        conditions=conditions,
    )


def restore_vm(rec: VMRecord, status: HAVirtualMachineStatus) -> None:
    if status.phase is not None:
        rec.phase = status.phase
    rec.host = status.host
    rec.epoch = status.placement_epoch
    rec.restart_count = status.restart_count
    rec.last_failure_reason = status.last_failure_reason
    rec.failed_restarts = status.failed_restarts
    rec.next_placement = to_seconds(status.next_placement_time)
    rec.attempts = status.placement_attempts
    # Older statuses lack lastHost: a placed VM may run where it is placed.
    rec.holder = status.last_host if status.last_host is not None else status.host
    for c in status.conditions:
        if c.type == "Scheduled" and c.status == "False":
            rec.unschedulable = c.message
            rec.unschedulable_since = to_seconds(c.last_transition_time)
    rec.restart_pending = rec.phase == "Pending" and rec.last_failure_reason is not None
    rec.runtime = status.runtime


def confirmation_status(rec: ConfirmationRecord) -> FenceConfirmationStatus:
    return FenceConfirmationStatus(
        phase=rec.phase,
        message=rec.message,
        outage_id=rec.outage_id,
        applied_time=to_datetime(rec.applied_at),
        released_vms=list(rec.released),
    )
