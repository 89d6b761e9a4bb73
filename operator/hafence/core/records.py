"""The core's state of each object: plain dataclasses, persisted by ``persist.py``."""

from __future__ import annotations

from dataclasses import dataclass, field

from hafence.api.host import HostSpec
from hafence.api.vm import HAVirtualMachineSpec, RuntimeStatus
from hafence.core.transitions import Phase

# Host steps, in escalation order.  "soft-fence-wait": the command ran, waiting for the
# heartbeat; the others are the action of the same name.
HOST_STEPS = ("power-status", "soft-fence", "soft-fence-wait", "status", "off", "verify", "on")


@dataclass
class HostRecord:
    name: str
    spec: HostSpec
    labels: dict[str, str] = field(default_factory=dict)
    phase: Phase = Phase.PENDING
    phase_since: float | None = None
    # The lease, as seen.  `renewed_at` is the operator-side time of the last renewal
    # (the time a change was observed), so agent clock skew cannot stretch freshness.
    lease_seen: bool = False
    renew_time: float | None = None
    renewed_at: float | None = None
    lease_duration: float = 0.0
    boot_id: str | None = None
    # Since when the lease has been fresh without a gap (operator time; None: not yet).
    fresh_since: float | None = None
    # The watchdog device the last lease declared armed: the granted timeout and the
    # boot it was armed in (proof only for that boot).  Why there is none, if the
    # agent said so.
    watchdog_timeout: float | None = None
    watchdog_boot_id: str | None = None
    self_fencing_unavailable: str | None = None
    ready: bool = False
    heartbeat_written: float | None = None  # renew time last persisted in status
    power_state: str | None = None
    # The current outage.
    outage_id: str | None = None
    outage_start: float | None = None
    boot_id_at_outage: str | None = None
    proof: str | None = None
    attempt: int = 0
    level_index: int = 0
    step: str | None = None
    step_since: float | None = None
    step_pending: bool = False  # the step still needs its result: (re)issue it
    op_id: str | None = None  # the operation in flight, if any
    op_seq: int = 0
    last_result: str | None = None
    agent: str | None = None
    proxy: str | None = None
    next_retry: float | None = None
    held: str | None = None  # why fencing waits (reported once per reason)
    held_message: str | None = None

    def lease_fresh(self, now: float) -> bool:
        return (
            self.lease_seen
            and self.renewed_at is not None
            and now < self.renewed_at + self.lease_duration
        )

    def lease_expiry(self) -> float | None:
        if self.renewed_at is None:
            return None
        return self.renewed_at + self.lease_duration

    def clear_outage(self) -> None:
        self.outage_id = self.outage_start = self.boot_id_at_outage = self.proof = None
        self.attempt = self.level_index = 0
        self.step = self.step_since = self.op_id = self.last_result = None
        self.agent = self.proxy = self.next_retry = self.held = self.held_message = None
        self.step_pending = False


@dataclass
class VMRecord:
    name: str
    spec: HAVirtualMachineSpec
    phase: str = "Pending"
    host: str | None = None
    epoch: int = 0
    # The host that may still run the VM (S1): set on placement, cleared by fence proof
    # for that host or by its agent reporting the VM stopped at the current epoch.
    holder: str | None = None
    restart_count: int = 0
    last_failure_reason: str | None = None
    next_placement: float | None = None
    attempts: int = 0
    unschedulable: str | None = None
    restart_pending: bool = False  # re-placing after a release: counts as an HA restart
    runtime: RuntimeStatus | None = None
    unschedulable_since: float | None = None
    # Restarts elsewhere after the agent reported the VM Failed on a healthy host, in a
    # row (bounded by Settings.max_failed_restarts; see failed_restart_reset).
    failed_restarts: int = 0
    # When this operator first saw the VM Running at its current placement (not
    # persisted: after a restart the window starts again, the conservative side).
    running_since: float | None = None
    # The host the VM just failed on: not a candidate for the next placement try.
    avoid: str | None = None

    @property
    def cluster(self) -> str:
        return self.spec.placement.cluster


@dataclass
class ConfirmationRecord:
    name: str
    host: str
    reason: str
    created_at: float
    phase: str | None = None
    message: str | None = None
    outage_id: str | None = None
    applied_at: float | None = None
    released: tuple[str, ...] = ()
