"""The core's state of each object: plain dataclasses, persisted by ``persist.py``."""

from __future__ import annotations

from dataclasses import dataclass, field

from hafence.api.host import HostSpec
from hafence.api.lease import renew_interval
from hafence.api.vm import HAVirtualMachineSpec, RuntimeStatus
from hafence.core.transitions import Phase

# Host steps, in escalation order.  "soft-fence-wait": the command ran, waiting for the
# heartbeat; "kdump": a kdump level waiting for a fence_kdump message; the others are
# the action of the same name.
HOST_STEPS = (
    "power-status",
    "soft-fence",
    "soft-fence-wait",
    "kdump",
    "status",
    "off",
    "verify",
    "on",
)


@dataclass
class HostRecord:
    name: str
    spec: HostSpec
    labels: dict[str, str] = field(default_factory=dict)
    phase: Phase = Phase.PENDING
    phase_since: float | None = None
    # The lease, as seen.  `renewed_at` is the operator-side time of the last renewal:
    # when a change of renewTime was observed, or the first sight of the lease (client-go's
    # leader-lease rule), so neither agent clock skew nor a step of anybody's wall clock
    # can stretch or shorten freshness.  `renewal_seen`: a renewal this operator observed
    # counts as a heartbeat; the first sight of the lease of a host restored in an outage
    # does not (it keeps the host from being fenced for a lease duration, S5, and that is
    # all it proves).
    lease_seen: bool = False
    renew_time: float | None = None
    renewed_at: float | None = None
    renewal_seen: bool = False
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
    # When the operation in flight counts as timed out (issue time + the shell's budget
    # + a margin) and that budget, for the message.  Never persisted: after a restart
    # nothing is in flight.
    op_deadline: float | None = None
    op_timeout: float = 0.0
    # An "off" was issued at the current level: from then on the operation completes
    # (verify off, release, power on) whatever heartbeat arrives meanwhile.
    off_sent: bool = False
    heartbeat_deferred: bool = False  # a heartbeat arrived meanwhile (reported once)
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

    def heartbeat_late(self, now: float) -> bool:
        """No renewal for one and a half renewal intervals: at least one was missed (the
        host may be failing; its lease has not expired yet)."""
        return self.renewed_at is not None and now - self.renewed_at > 1.5 * renew_interval(
            self.lease_duration
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
        self.op_deadline = None
        self.step_pending = self.off_sent = self.heartbeat_deferred = False

    def fence_committed(self) -> bool:
        """An "off" may have reached a device and the operation (verify, power on) is not
        finished: a heartbeat now is judged after it, not acted on.  Once off is verified,
        a new boot ID already says the host came back (the power-on is moot)."""
        if self.phase is Phase.FENCING:
            return self.off_sent and self.step in ("off", "verify")
        if self.phase is Phase.REBOOTING:
            return (
                self.off_sent
                and self.step == "on"
                and self.step_pending
                and self.boot_id == self.boot_id_at_outage
            )
        return False


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
    # The core's view of the object: its resourceVersion and the operator-owned placement
    # it had (from the last observation or the last write of ours that landed).
    resource_version: str = ""
    view_host: str | None = None
    view_epoch: int = 0

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
