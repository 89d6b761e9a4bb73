"""The hafence.io/v1alpha1 API: pydantic models of the five kinds, and their CRDs."""

from hafence.api.base import API_VERSION, GROUP, VERSION, Condition, Kind
from hafence.api.confirmation import (
    FENCE_CONFIRMATION,
    FenceConfirmationSpec,
    FenceConfirmationStatus,
)
from hafence.api.fenceagent import FENCE_AGENT, FenceAgentSpec, FenceAgentStatus
from hafence.api.fencingpolicy import FENCING_POLICY, FencingPolicySpec, FencingPolicyStatus
from hafence.api.host import HOST, HostSpec, HostStatus
from hafence.api.outage import HOST_OUTAGE, HostOutageSpec, HostOutageStatus
from hafence.api.vm import HA_VIRTUAL_MACHINE, HAVirtualMachineSpec, HAVirtualMachineStatus

KINDS: tuple[Kind, ...] = (
    HOST,
    FENCE_AGENT,
    HA_VIRTUAL_MACHINE,
    FENCE_CONFIRMATION,
    HOST_OUTAGE,
    FENCING_POLICY,
)

__all__ = [
    "API_VERSION",
    "FENCE_AGENT",
    "FENCE_CONFIRMATION",
    "FENCING_POLICY",
    "GROUP",
    "HA_VIRTUAL_MACHINE",
    "HOST",
    "HOST_OUTAGE",
    "KINDS",
    "VERSION",
    "Condition",
    "FenceAgentSpec",
    "FenceAgentStatus",
    "FenceConfirmationSpec",
    "FenceConfirmationStatus",
    "FencingPolicySpec",
    "FencingPolicyStatus",
    "HAVirtualMachineSpec",
    "HAVirtualMachineStatus",
    "HostOutageSpec",
    "HostOutageStatus",
    "HostSpec",
    "HostStatus",
    "Kind",
]
