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
