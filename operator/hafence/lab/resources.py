"""The lab datacenter's resources, written as a user would write them.

Per virtual host: a Secret with the BMC account, a FenceAgent (``ipmilan`` on the
host's BMC port), a Secret with the SSH key the operator soft-fences with, and the
Host (pinned sshd host key, default ``softFenceCommand``).  Per host also one HA VM
(``ha-N``, preferring host N) and one VM that is not highly available (``pet-N``):
a failed host's pets stay down, its HA VMs restart elsewhere.
"""

from __future__ import annotations

import base64
from typing import Any

from hafence.lab.datacenter import BMC_USER, Datacenter

CLUSTER = "lab"
FENCE_AGENT_TIMEOUT = 5  # seconds per BMC operation (FenceAgent timeoutSeconds)


def _secret(name: str, data: dict[str, bytes], labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": labels},
        "type": "Opaque",
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


def manifests(dc: Datacenter, self_fencing: int | None = None) -> list[dict[str, Any]]:
    """Every object of the lab datacenter, Secrets first (the others name them).
    ``self_fencing``: every Host enables self-fencing with this watchdog timeout."""
    labels = {"app.kubernetes.io/part-of": "hafence-lab"}
    out: list[dict[str, Any]] = []
    for index, host in enumerate(dc.hosts.values(), start=1):
        out.append(
            _secret(
                f"{host.name}-bmc",
                {"username": BMC_USER.encode(), "password": host.bmc_password.encode()},
                labels,
            )
        )
        out.append(
            _secret(f"{host.name}-ssh", {"ssh-privatekey": host.ssh_key.private_openssh}, labels)
        )
        out.append(
            {
                "kind": "Host",
                "metadata": {"name": host.name, "labels": {**labels, "rack": host.rack}},
                "spec": {
                    "address": "127.0.0.1",
                    "cluster": CLUSTER,
                    "capacity": {"cpu": 8, "memoryMiB": 8192},
                    "ssh": {
                        "port": dc.shells.port,
                        "user": dc.shells.user,
                        "privateKeySecretRef": {
                            "name": f"{host.name}-ssh",
                            "key": "ssh-privatekey",
                        },
                        "hostKey": dc.shells.host_key,
                        "timeoutSeconds": 15,
                    },
                    "powerManagement": {"enabled": True, "proxyPreference": ["operator"]},
                    **(
                        {"selfFencing": {"enabled": True, "watchdogTimeoutSeconds": self_fencing}}
                        if self_fencing is not None
                        else {}
                    ),
                },
            }
        )
        for agent_name, spec in dc.fence_agents(host):
            out.append(
                {
                    "kind": "FenceAgent",
                    "metadata": {"name": agent_name, "labels": labels},
                    "spec": spec
                    | {
                        "credentialsSecretRef": {"name": f"{host.name}-bmc"},
                        "timeoutSeconds": FENCE_AGENT_TIMEOUT,
                        "powerWaitSeconds": 10,
                    },
                }
            )
        for name, ha, priority in ((f"ha-{index}", True, "High"), (f"pet-{index}", False, "Low")):
            out.append(
                {
                    "kind": "HAVirtualMachine",
                    "metadata": {"name": name, "labels": labels},
                    "spec": {
                        "highlyAvailable": ha,
                        "priority": priority,
                        "resources": {"cpu": 1, "memoryMiB": 256},
                        "placement": {"cluster": CLUSTER, "preferredHosts": [host.name]},
                        "runtime": dc.vm_runtime(name),
                    },
                }
            )
    return out
