"""What goes into the core (inputs) and what comes out (actions).

Every input carries ``now``: seconds since the Unix epoch as the *caller's* clock says
(the core never reads one).  Times inside inputs (lease renew time, creation time) are
seconds since the epoch too; ``hafence.core.persist`` converts to and from datetimes.

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


@dataclass(frozen=True)
class SoftFence:
    """Run the host's SSH soft-fence command; answer with SoftFenceResult."""

    host: str
    op_id: str
    outage_id: str


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


@dataclass(frozen=True)
class ReleaseVMs:
    """Host proven off for this outage: these VMs left it (their status says where to)."""

    host: str
    outage_id: str
    proof: str  # "fence" | "confirmation" | "self-fence"
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
    agent's).  ``placement_changed``: host/epoch changed, write with a resourceVersion
    precondition and retry on conflict after re-reading (the conflict is the agent)."""

    vm: str
    status: HAVirtualMachineStatus
    placement_changed: bool


@dataclass(frozen=True)
class WriteConfirmationStatus:
    name: str
    status: FenceConfirmationStatus


Action = (
    CheckPower
    | SoftFence
    | RunFenceStep
    | ReleaseVMs
    | PlaceVM
    | EmitEvent
    | Alert
    | WriteHostStatus
    | WriteVMStatus
    | WriteConfirmationStatus
)
