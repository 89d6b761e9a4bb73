"""HAVirtualMachine: a VM that hafence places on a host and keeps running.

Ownership of the status, written down because two writers share it:

- the **operator** owns placement: ``phase``, ``host``, ``placementEpoch``,
  ``restartCount`` (HA restarts elsewhere), ``lastFailureReason``, ``conditions``;
- the **agent** of the placed host owns ``status.runtime``: what it actually
  observes of the VM process or domain on that host.

Neither ever writes the other's fields (each sends a merge patch of its own part),
and nobody but GitOps writes ``spec``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from hafence.api.base import (
    CONDITIONS_EXTRA,
    Condition,
    Kind,
    Model,
    PrinterColumn,
    cel,
)
from hafence.api.grammar import ClusterName, DomainXMLText, LibvirtURI

VMPhase = Literal["Pending", "Scheduled", "Running", "Unknown", "Down", "Failed"]
Priority = Literal["High", "Medium", "Low"]
PRIORITY_RANK: dict[str, int] = {"High": 0, "Medium": 1, "Low": 2}
# Stopped: verified stopped.  StopFailed: a stop that could not be verified, and Unknown:
# the agent's driver cannot tell whether it runs — both mean "it may still run there".
RuntimeState = Literal[
    "Starting", "Running", "Stopped", "Crashed", "Failed", "StopFailed", "Unknown"
]


class VMResources(Model):
    cpu: int = Field(default=1, ge=1, le=1024)
    memory_mi_b: int = Field(default=512, ge=1, alias="memoryMiB")


class Placement(Model):
    cluster: ClusterName = Field(description="The Host cluster the VM runs in.")
    host_selector: dict[str, str] = Field(
        default_factory=dict, description="Labels a Host must carry (matchLabels)."
    )
    preferred_hosts: list[str] = Field(default_factory=list)
    anti_affinity_group: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        description="VMs of one group never share a host.",
    )


class LibvirtRuntime(Model):
    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "has(self.domainName) != has(self.domainXML)",
                    "libvirt needs exactly one of domainName or domainXML",
                )
            ]
        }
    }
    uri: LibvirtURI = "qemu:///system"
    domain_name: str | None = Field(
        default=None,
        min_length=1,
        description="A domain an administrator defined on every host; hafence starts, "
        "stops and marks it, and never checks its XML.",
    )
    domain_xml: DomainXMLText | None = Field(default=None, alias="domainXML")


class ProcessRuntime(Model):
    command: list[str] = Field(min_length=1, description="argv of the VM process.")


class Runtime(Model):
    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "self.driver == 'process' ? has(self.process) : has(self.libvirt)",
                    "runtime.driver names a driver whose settings are missing",
                    messageExpression="'runtime.driver is ' + self.driver"
                    " + ' but runtime.' + self.driver + ' is missing'",
                )
            ]
        }
    }
    driver: Literal["libvirt", "process"]
    libvirt: LibvirtRuntime | None = None
    process: ProcessRuntime | None = None


class HAVirtualMachineSpec(Model):
    highly_available: bool = True
    priority: Priority = "Medium"
    resources: VMResources = Field(default_factory=VMResources, json_schema_extra={"default": {}})
    placement: Placement
    run_strategy: Literal["Always", "Halted"] = "Always"
    runtime: Runtime


class RuntimeStatus(Model):
    """Written only by the agent of ``host``."""

    host: str
    state: RuntimeState
    placement_epoch: int = Field(default=0, description="The placement epoch the agent acted on.")
    restarts: int = 0
    message: str | None = None
    pid: int | None = None
    updated_time: datetime | None = None


class HAVirtualMachineStatus(Model):
    phase: VMPhase | None = None
    host: str | None = None
    placement_epoch: int = 0
    restart_count: int = 0
    last_failure_reason: str | None = None
    failed_restarts: int = Field(
        default=0,
        ge=0,
        description="Restarts on another host after the agent reported the VM Failed on a "
        "healthy host, in a row; at the operator's limit the VM stays Failed.  Editing the "
        "spec starts a fresh count.",
    )
    next_placement_time: datetime | None = None
    placement_attempts: int = Field(
        default=0, ge=0, description="Failed placement tries since the VM became Pending."
    )
    last_host: str | None = Field(
        default=None,
        description="The host that may still run this VM: it moves elsewhere only once "
        "that host is proven off or its agent reported the VM stopped.",
    )
    observed_generation: int | None = None
    runtime: RuntimeStatus | None = None
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=CONDITIONS_EXTRA)


HA_VIRTUAL_MACHINE = Kind(
    kind="HAVirtualMachine",
    plural="havirtualmachines",
    short_names=("havm", "havms"),
    spec=HAVirtualMachineSpec,
    status=HAVirtualMachineStatus,
    description="A virtual machine that hafence places on a Host and restarts elsewhere "
    "when that Host fails.",
    printer_columns=(
        PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
        PrinterColumn(name="Host", type="string", json_path=".status.host"),
        PrinterColumn(name="Priority", type="string", json_path=".spec.priority"),
        PrinterColumn(name="HA", type="boolean", json_path=".spec.highlyAvailable"),
        PrinterColumn(
            name="Restarts", type="integer", json_path=".status.restartCount", priority=1
        ),
        PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
    ),
    # Each agent lists and watches only the VMs placed on its host
    # (``fieldSelector=status.host=NAME``): the API server filters, so a VM's change
    # reaches the one agent it concerns, not every agent of the datacenter.  A field
    # the operator writes anyway, rather than a label kept equal to it: a label is a
    # second write (metadata, not the status subresource) that can lag or disagree
    # with the placement, and the operator writes no metadata on objects GitOps owns.
    selectable_fields=(".status.host",),
)
