"""Fencing drivers: one protocol over IPMI (pyghmi), Redfish, fence_* agents and SSH.

The operator's escalation calls these; see :mod:`hafence.fencing.errors` for the one
error hierarchy and :mod:`hafence.fencing.protocol` for the driver protocol.
"""

from hafence.fencing.drivers import build_driver
from hafence.fencing.errors import (
    AuthFailed,
    ConfigError,
    DeviceError,
    FenceError,
    HostKeyError,
    TimedOut,
    TLSError,
    Unreachable,
    Unsupported,
)
from hafence.fencing.groups import GroupResult, run_group
from hafence.fencing.protocol import (
    Credentials,
    FenceDriver,
    FenceResult,
    PowerState,
    SSHTarget,
)
from hafence.fencing.resolve import (
    ResolvedAgent,
    host_agent_groups,
    host_ssh_target,
    resolve_agent,
)
from hafence.fencing.ssh import CommandResult, soft_fence

__all__ = [
    "AuthFailed",
    "CommandResult",
    "ConfigError",
    "Credentials",
    "DeviceError",
    "FenceDriver",
    "FenceError",
    "FenceResult",
    "GroupResult",
    "HostKeyError",
    "PowerState",
    "ResolvedAgent",
    "SSHTarget",
    "TLSError",
    "TimedOut",
    "Unreachable",
    "Unsupported",
    "build_driver",
    "host_agent_groups",
    "host_ssh_target",
    "resolve_agent",
    "run_group",
    "soft_fence",
]
