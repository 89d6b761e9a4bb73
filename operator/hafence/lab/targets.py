"""The fencing layer pointed at the lab's devices on 127.0.0.1, without a cluster.

For the fencing tests and the fencing bench, which build drivers directly: the
FenceAgent spec of a device (a simulated BMC, the Redfish, iLO2 or PDU emulator) on
a loopback port, and the SSH target of an :class:`~hafence.lab.sshd.Sshd` (soft
fencing, the fence proxy).  The lab's datacenter writes real resources instead
(:mod:`hafence.lab.resources`).
"""

from __future__ import annotations

from hafence.api.fenceagent import FenceAgentSpec
from hafence.fencing.protocol import SSHTarget
from hafence.lab.sshd import Sshd


def fence_agent_spec(type_: str, port: int, **fields: object) -> FenceAgentSpec:
    """A FenceAgent spec for the device on ``127.0.0.1:port``; ``fields`` (as the
    resource spells them: ``options``, ``plug``, ``timeoutSeconds``...) override."""
    body: dict[str, object] = {
        "hostRef": {"name": "h1"},
        "type": type_,
        "address": "127.0.0.1",
        "port": port,
        "credentialsSecretRef": {"name": "bmc"},
        "timeoutSeconds": 5,
        "powerWaitSeconds": 5,
    }
    if type_.startswith("fence_"):
        # Debian's agents default to IPMI 1.5; the simulated BMCs speak 2.0 (lanplus).
        body["options"] = "lanplus=yes"
    body.update(fields)
    return FenceAgentSpec.model_validate(body)


def ssh_target(server: Sshd, **overrides: object) -> SSHTarget:
    """The target that logs in to ``server`` with its client key, its host key pinned."""
    values: dict[str, object] = {
        "address": "127.0.0.1",
        "port": server.port,
        "user": server.user,
        "private_key": server.client_key,
        "host_key": server.host_key,
    }
    values.update(overrides)
    return SSHTarget(**values)  # type: ignore[arg-type]
