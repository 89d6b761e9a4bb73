"""Host: one hypervisor, outside Kubernetes, watched through its heartbeat Lease."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, get_args

from pydantic import Field

from hafence.api.base import (
    CONDITIONS_EXTRA,
    Condition,
    Kind,
    Model,
    PrinterColumn,
    SecretKeyRef,
    cel,
)
from hafence.api.grammar import Address, ClusterName, HostKeyLine

# The phases of a host in an outage, from the lease expiring until it is Up again (or
# in maintenance, or deleted): what a HostOutage records (api/outage.py).
OutagePhase = Literal[
    "Connecting",
    "SoftFencing",
    "NonResponsive",
    "Fencing",
    "Rebooting",
    "Isolated",
    "ManuallyFenced",
    "SelfFenced",
]
# Every phase of a host; core/transitions.py's Phase is the same list (a test says so).
HostPhase = Literal["Pending", "Up", OutagePhase, "Maintenance"]
# The others: a host in one of these is in no outage (its HostOutage is closed, and
# nobody but the power-management check talks to its BMC).
NO_OUTAGE_PHASES: frozenset[str] = frozenset(get_args(HostPhase)) - frozenset(get_args(OutagePhase))
PowerState = Literal["on", "off", "unknown"]
ProxySource = Literal["operator", "cluster", "any"]
# `any` is never a default: it would pipe this host's BMC credentials to a hypervisor
# of another cluster.  A Host that wants it lists it explicitly.
DEFAULT_PROXY_PREFERENCE: tuple[ProxySource, ...] = ("operator", "cluster")

DEFAULT_SOFT_FENCE_COMMAND = "systemctl restart hafence-agent.service"


class Capacity(Model):
    cpu: int = Field(ge=1, le=4096, description="Schedulable vCPUs.")
    memory_mi_b: int = Field(ge=1, alias="memoryMiB", description="Schedulable memory in MiB.")


class SSHSpec(Model):
    """How the operator reaches the host over SSH for soft fencing and as a fence proxy."""

    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "has(self.hostKey) || has(self.knownHostsSecretRef)",
                    "ssh needs a pinned hostKey or a knownHostsSecretRef: "
                    "host keys are never accepted on first use",
                )
            ]
        }
    }

    port: int = Field(default=22, ge=1, le=65535)
    user: str = Field(default="root", min_length=1, max_length=64)
    private_key_secret_ref: SecretKeyRef = Field(
        description="Secret key holding the private key (OpenSSH or PEM format)."
    )
    host_key: HostKeyLine | None = Field(
        default=None,
        description="The host's public key, 'TYPE BASE64' as in known_hosts, or the "
        "whole line of /etc/ssh/ssh_host_*_key.pub (its comment is ignored).",
    )
    known_hosts_secret_ref: SecretKeyRef | None = None
    soft_fence_command: str = Field(
        default=DEFAULT_SOFT_FENCE_COMMAND,
        min_length=1,
        description="Run on the host to restart its agent. It restarts a service; "
        "it is never proof that the host is off.",
    )
    timeout_seconds: int = Field(default=30, ge=1, le=600)


class PowerManagement(Model):
    enabled: bool = True
    proxy_preference: list[ProxySource] = Field(
        default_factory=lambda: list(DEFAULT_PROXY_PREFERENCE),
        min_length=1,
        description="Where fence agents run from, in order: the operator itself, "
        "a healthy host of the same cluster, or (only if listed) any healthy host of "
        "the datacenter.  A proxy receives this host's BMC credentials.",
    )


class SelfFencing(Model):
    enabled: bool = False
    watchdog_timeout_seconds: int = Field(default=60, ge=5, le=3600)


class HostSpec(Model):
    address: Address = Field(description="Host name, IPv4 or IPv6 address.")
    cluster: ClusterName = Field(description="Failure domain: HA VMs restart inside it.")
    capacity: Capacity
    maintenance: bool = Field(default=False, description="No new VMs; never fenced.")
    ssh: SSHSpec | None = None
    power_management: PowerManagement = Field(
        default_factory=PowerManagement, json_schema_extra={"default": {}}
    )
    self_fencing: SelfFencing = Field(
        default_factory=SelfFencing, json_schema_extra={"default": {}}
    )


FenceProof = Literal["fence", "kdump", "confirmation", "self-fence"]


class FencingStatus(Model):
    """The current outage and where its escalation stands (restored after a restart)."""

    outage_id: str | None = Field(default=None, alias="outageID")
    outage_start_time: datetime | None = Field(
        default=None,
        description="When the lease expired: FenceConfirmations made before this are stale.",
    )
    boot_id_at_outage: str | None = Field(
        default=None,
        alias="bootIDAtOutage",
        description="The boot ID when the outage began; a different one later means "
        "the host really rebooted.",
    )
    proof: FenceProof | None = Field(
        default=None, description="Why the host counts as off for this outage."
    )
    attempt: int = 0
    level: int | None = None
    last_action: str | None = Field(
        default=None, description="power-status, soft-fence, kdump, status, off, verify or on."
    )
    last_result: str | None = Field(
        default=None, description="'pending' while the action has no result yet."
    )
    agent: str | None = None
    proxy: str | None = None
    since: datetime | None = None
    next_retry_time: datetime | None = None


class HostStatus(Model):
    phase: HostPhase | None = None
    last_heartbeat_time: datetime | None = None
    boot_id: str | None = Field(default=None, alias="bootID")
    power_state: PowerState | None = None
    fencing: FencingStatus | None = None
    vm_count: int | None = Field(default=None, alias="vmCount")
    observed_generation: int | None = None
    phase_since: datetime | None = None
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=CONDITIONS_EXTRA)


HOST = Kind(
    kind="Host",
    plural="hosts",
    short_names=("hfh", "hahost"),
    spec=HostSpec,
    status=HostStatus,
    description="A hypervisor host whose HA VMs hafence keeps available.",
    printer_columns=(
        PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
        PrinterColumn(name="Cluster", type="string", json_path=".spec.cluster"),
        PrinterColumn(name="Heartbeat", type="date", json_path=".status.lastHeartbeatTime"),
        PrinterColumn(name="VMs", type="integer", json_path=".status.vmCount"),
        PrinterColumn(name="Power", type="string", json_path=".status.powerState", priority=1),
        PrinterColumn(name="Address", type="string", json_path=".spec.address", priority=1),
        PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
    ),
)
