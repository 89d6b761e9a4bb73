"""The sans-IO core: host escalation, fencing plan, policies and VM placement.

No I/O and no clock: callers pass ``now`` with every input.  Entry point::

    engine = Engine(Settings())
    actions = engine.handle(OperatorStarted(now))   # then HostObserved, LeaseObserved, ...
    actions = engine.tick(now)                       # periodically (every second or so)

See ``messages.py`` for the inputs and actions, ``transitions.py`` for the lifecycle.
"""

from hafence.core.engine import Engine
from hafence.core.fencing_plan import AgentResult
from hafence.core.messages import (
    Action,
    Alert,
    CheckPower,
    ConfirmationObserved,
    EmitEvent,
    FenceAgentDeleted,
    FenceAgentObserved,
    FenceStepResult,
    HostDeleted,
    HostObserved,
    Input,
    LeaseObserved,
    OperatorStarted,
    PlaceVM,
    PowerStatusResult,
    ReleaseVMs,
    RunFenceStep,
    SoftFence,
    SoftFenceResult,
    VMDeleted,
    VMObserved,
    VMRuntimeObserved,
    WriteConfirmationStatus,
    WriteHostStatus,
    WriteVMStatus,
)
from hafence.core.policy import ClusterPolicy, Settings
from hafence.core.transitions import Phase, render_mermaid, render_table

__all__ = [
    "Action",
    "AgentResult",
    "Alert",
    "CheckPower",
    "ClusterPolicy",
    "ConfirmationObserved",
    "EmitEvent",
    "Engine",
    "FenceAgentDeleted",
    "FenceAgentObserved",
    "FenceStepResult",
    "HostDeleted",
    "HostObserved",
    "Input",
    "LeaseObserved",
    "OperatorStarted",
    "Phase",
    "PlaceVM",
    "PowerStatusResult",
    "ReleaseVMs",
    "RunFenceStep",
    "Settings",
    "SoftFence",
    "SoftFenceResult",
    "VMDeleted",
    "VMObserved",
    "VMRuntimeObserved",
    "WriteConfirmationStatus",
    "WriteHostStatus",
    "WriteVMStatus",
    "render_mermaid",
    "render_table",
]
