"""Fencing drivers: one protocol over IPMI (pyghmi), Redfish, fence_* agents and SSH.

Import from the modules: :mod:`~hafence.fencing.protocol` (driver protocol, results,
Credentials, SSHTarget), :mod:`~hafence.fencing.errors` (the error hierarchy),
:mod:`~hafence.fencing.drivers` (``build_driver``), :mod:`~hafence.fencing.groups`
(``run_group``), :mod:`~hafence.fencing.ssh` (``soft_fence``, proxy execution) and
:mod:`~hafence.fencing.resolve` (FenceAgents and Secrets from the cluster).

This package imports nothing on purpose: the IPMI worker process
(:mod:`~hafence.fencing.ipmi_worker`) starts through it, and pulling in the
Kubernetes client here would add about 0.3 s to every IPMI operation.
"""

from __future__ import annotations

import importlib
from typing import Any

# Names re-exported lazily (PEP 562), so `from hafence.fencing import build_driver`
# works without making every IPMI worker import the Kubernetes client.
_EXPORTS = {
    "build_driver": "drivers",
    "FenceError": "errors",
    "Unreachable": "errors",
    "AuthFailed": "errors",
    "TimedOut": "errors",
    "Unsupported": "errors",
    "DeviceError": "errors",
    "HostKeyError": "errors",
    "TLSError": "errors",
    "ConfigError": "errors",
    "GroupResult": "groups",
    "run_group": "groups",
    "Credentials": "protocol",
    "FenceDriver": "protocol",
    "FenceResult": "protocol",
    "PowerState": "protocol",
    "SSHTarget": "protocol",
    "ResolvedAgent": "resolve",
    "resolve_agent": "resolve",
    "host_agent_groups": "resolve",
    "host_ssh_target": "resolve",
    "CommandResult": "ssh",
    "soft_fence": "ssh",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hafence.fencing' has no attribute {name!r}")
    return getattr(importlib.import_module(f"hafence.fencing.{module}"), name)
