"""What goes into the core (inputs) and what comes out (actions).

Every input carries ``now``: seconds since the Unix epoch as the *caller's* clock says
(the core never reads one).  The operator passes a clock that never steps (its monotonic
clock anchored to the wall clock once at start-up, ``controller/clock.py``), so every
duration the core measures between two inputs is real elapsed time.  Times inside inputs
(lease renew time, creation time) are seconds since the epoch as another machine wrote
them: the core compares them only with each other (a renewal is "a renew time that
changed"), never with ``now``; ``hafence.core.persist`` converts to and from datetimes.

Proxy candidates in fence actions are names: ``"operator"`` (run the agent from the
operator itself) or the name of a healthy Host to run it on over SSH, in preference order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from hafence.api.confirmation import FenceConfirmationSpec, FenceConfirmationStatus
from hafence.api.fenceagent import FenceAgentSpec
from hafence.api.host import HostSpec, HostStatus
from hafence.api.vm import HAVirtualMachineSpec, HAVirtualMachineStatus, RuntimeStatus
from hafence.core.fencing_plan import AgentResult, FenceStep, GroupPower

# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class OperatorStarted:
    """This operator became the active leader (start-up or failover): quiet period begins."""

    now: float


@dataclass(frozen=True)
class HostObserved:
    """A Host was added or changed.  ``status`` is read only the first time a name is seen
    (restoring the persisted state); afterwards the core owns it."""

    now: float
    name: str
    spec: HostSpec
    labels: Mapping[str, str] = field(default_factory=dict)
    status: HostStatus | None = None


@dataclass(frozen=True)
class HostDeleted:
    now: float
    name: str


@dataclass(frozen=True)
class FenceAgentObserved:
    now: float
    name: str
    spec: FenceAgentSpec


@dataclass(frozen=True)
class FenceAgentDeleted:
    now: float
    name: str


@dataclass(frozen=True)
class VMObserved:
    """An HAVirtualMachine was added or changed.  The operator-owned part of ``status`` is
    read only the first time (restore); ``status.runtime`` (the agent's) is read always."""

    now: float
    name: str
    spec: HAVirtualMachineSpec
    status: HAVirtualMachineStatus | None = None
    # metadata.resourceVersion of the object observed: placement writes decided on this
    # view carry it as their precondition (S2).
    resource_version: str = ""


@dataclass(frozen=True)
class VMRuntimeObserved:
    """The agent's ``status.runtime`` of a VM changed (same as VMObserved's runtime)."""

    now: float
    vm: str
    runtime: RuntimeStatus | None


@dataclass(frozen=True)
class VMDeleted:
    now: float
    name: str


@dataclass(frozen=True)
class ConfirmationObserved:
    """A FenceConfirmation exists.  ``created_at`` is its metadata.creationTimestamp.
    One that already has a status phase (Applied/Rejected) is only remembered."""

    now: float
    name: str
    spec: FenceConfirmationSpec
    created_at: float
    status: FenceConfirmationStatus | None = None


@dataclass(frozen=True)
class LeaseObserved:
    """The host's heartbeat Lease as last seen (a watch event or a re-list)."""

    now: float
    host: str
    renew_time: float
    duration: float
    boot_id: str
    # Set when the agent declares a watchdog device armed: the timeout its driver
    # granted.  None = no device (the old software-only annotation is never this).
    watchdog_timeout: float | None = None
    # The agent finished its start-up reconciliation (S3) and can run VMs.
    ready: bool = True
    # The boot the device was armed in; proof counts only for that boot.
    watchdog_boot_id: str | None = None
    # Self-fencing asked for but no device armed: the agent's reason.
    self_fencing_unavailable: str | None = None


@dataclass(frozen=True)
class PowerStatusResult:
    """Result of a CheckPower action (the group verdict over the level's agents)."""

    now: float
    host: str
    op_id: str
    power: GroupPower
    message: str = ""


@dataclass(frozen=True)
class SoftFenceResult:
    now: float
    host: str
    op_id: str
    ok: bool
    message: str = ""


@dataclass(frozen=True)
class FenceStepResult:
    """Result of a RunFenceStep: one entry per agent of the level (missing = no answer)."""

    now: float
    host: str
    op_id: str
    results: Mapping[str, AgentResult]
    # False: the shell did not run the step at all (its last look at the Lease showed a
    # renewal the core had not seen; that renewal was fed first).  The step is issued
    # again if the core still wants it, and an "off" not sent commits nothing.
    sent: bool = True


@dataclass(frozen=True)
class KdumpResult:
    """Result of a WaitForKdump: ``seen`` when a fence_kdump message from one of the
    level's agents' addresses arrived while the shell waited; ``agent`` the agent whose
    address sent it.  ``message`` says what was seen or why nothing counts."""

    now: float
    host: str
    op_id: str
    seen: bool
    agent: str = ""
    message: str = ""


WriteKind = Literal["Host", "HAVirtualMachine", "FenceConfirmation"]


@dataclass(frozen=True)
class WriteFailed:
    """A status write the core emitted did not land (a transient API error, a lost
    connection, a placement that kept conflicting).  The core issues it again, from its
    current state, after a bounded backoff (``Settings.write_retry_delay``)."""

    now: float
    kind: WriteKind
    name: str
    placement_changed: bool = False
    message: str = ""


@dataclass(frozen=True)
class WriteLanded:
    """A status write landed; ``resource_version`` is the object's new one (for a VM,
    with the placement the write carried: the core's view is now that object)."""

    now: float
    kind: WriteKind
    name: str
    resource_version: str = ""
    host: str | None = None
    epoch: int = 0


Input = (
    OperatorStarted
    | HostObserved
    | HostDeleted
    | FenceAgentObserved
    | FenceAgentDeleted
    | VMObserved
    | VMRuntimeObserved
    | VMDeleted
    | ConfirmationObserved
    | LeaseObserved
    | PowerStatusResult
    | SoftFenceResult
    | FenceStepResult
    | KdumpResult
    | WriteFailed
    | WriteLanded
)

# ---------------------------------------------------------------- actions


@dataclass(frozen=True)
class CheckPower:
    """Ask the first level's agents for the power state; answer with PowerStatusResult."""

    host: str
    op_id: str
    outage_id: str
    agents: tuple[str, ...]
    proxies: tuple[str, ...]
    # Seconds the shell may spend on it (``core/deadlines.py``); past them it answers
    # with a timeout failure.  The core's own deadline is this plus a margin.
    timeout: float = 0.0


@dataclass(frozen=True)
class SoftFence:
    """Run the host's SSH soft-fence command; answer with SoftFenceResult."""

    host: str
    op_id: str
    outage_id: str
    timeout: float = 0.0


@dataclass(frozen=True)
class RunFenceStep:
    """Run ``operation`` on every agent of one level concurrently; answer with
    FenceStepResult.  ``step`` "verify" is a status operation after "off"."""

    host: str
    op_id: str
    outage_id: str
    attempt: int
    level: int  # the agents' `order`
    step: FenceStep
    operation: Literal["status", "off", "on"]
    agents: tuple[str, ...]
    proxies: tuple[str, ...]
    timeout: float = 0.0


@dataclass(frozen=True)
class WaitForKdump:
    """A kdump level: wait up to ``timeout`` seconds for a fence_kdump message from the
    addresses of ``agents`` (the host's kdump FenceAgents), received at or after
    ``since`` (the core's now when it issued this).  Only a message that arrives while
    the level waits counts: the host is dumping *now*, so it cannot have finished its
    dump and restarted VMs before the release lands (docs/architecture.md, kdump).
    Answer with KdumpResult; nothing is ever switched."""

    host: str
    op_id: str
    outage_id: str
    attempt: int
    level: int  # the agents' `order`
    agents: tuple[str, ...]
    since: float
    timeout: float = 0.0


@dataclass(frozen=True)
class StepTimedOut:
    """The core's deadline for an operation passed without a result: the core went on as
    if it had failed.  The shell stops whatever still runs for it and counts the
    timeout (metric result "timeout")."""

    host: str
    op_id: str
    step: str
    agents: tuple[str, ...]
    operation: str


@dataclass(frozen=True)
class ReleaseVMs:
    """Host proven off for this outage: these VMs left it (their status says where to)."""

    host: str
    outage_id: str
    proof: str  # "fence" | "kdump" | "confirmation" | "self-fence"
    vms: tuple[str, ...]


@dataclass(frozen=True)
class PlaceVM:
    """A VM now belongs on ``host`` (its WriteVMStatus follows)."""

    vm: str
    host: str
    epoch: int
    previous_host: str | None
    restart: bool


@dataclass(frozen=True)
class EmitEvent:
    kind: Literal["Host", "HAVirtualMachine", "FenceConfirmation"]
    name: str
    reason: str
    message: str
    type: Literal["Normal", "Warning"] = "Normal"


@dataclass(frozen=True)
class Alert:
    """Raise (``active``) or clear an alert, identified by ``key``."""

    key: str
    active: bool
    message: str = ""
    severity: Literal["warning", "critical"] = "warning"


@dataclass(frozen=True)
class WriteHostStatus:
    host: str
    status: HostStatus


@dataclass(frozen=True)
class WriteVMStatus:
    """The operator-owned fields of the VM's status (``runtime`` is left None: the
    agent's).  ``placement_changed``: host/epoch changed, write with the view's
    resourceVersion as precondition; on conflict re-read: an unchanged placement means
    the conflict was the agent's runtime report (retry), a changed one another writer."""

    vm: str
    status: HAVirtualMachineStatus
    placement_changed: bool
    # The object the decision was made on (the core's view): the precondition, and the
    # placement it had, which tells the agent's runtime report (retry) from another
    # writer of the placement (S2: stop).
    resource_version: str = ""
    view_host: str | None = None
    view_epoch: int = 0


@dataclass(frozen=True)
class WriteConfirmationStatus:
    name: str
    status: FenceConfirmationStatus


Action = (
    CheckPower
    | SoftFence
    | RunFenceStep
    | WaitForKdump
    | StepTimedOut
    | ReleaseVMs
    | PlaceVM
    | EmitEvent
    | Alert
    | WriteHostStatus
    | WriteVMStatus
    | WriteConfirmationStatus
)
