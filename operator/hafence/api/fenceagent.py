"""FenceAgent: one power-management device (BMC or PDU outlet) of one host."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, StrictInt

from hafence.api.base import (
    CONDITIONS_EXTRA,
    Condition,
    Kind,
    Model,
    ObjectRef,
    PrinterColumn,
    cel,
)
from hafence.api.grammar import Address, OptionsText, Plug, quoted, redfish_plug_rule
from hafence.api.host import PowerState

# oVirt's power-management type names.  Any `fence_*` agent of Debian's
# fence-agents package is accepted too, by its full name.
OVIRT_AGENT_TYPES: tuple[str, ...] = (
    "apc",
    "apc_snmp",
    "bladecenter",
    "cisco_ucs",
    "drac5",
    "drac7",
    "eps",
    "hpblade",
    "idrac",
    "ilo",
    "ilo2",
    "ilo3",
    "ilo4",
    "ilo5",
    "ilo_ssh",
    "ipmilan",
    "redfish",
    "rsa",
    "rsb",
    "wti",
)
# Agents that authenticate by other means (or not at all) need no Secret.
NO_CREDENTIALS_TYPES: tuple[str, ...] = (
    "fence_kdump",
    "fence_sbd",
    "fence_heuristics_ping",
    "fence_scsi",
    "fence_mpath",
)
AGENT_TYPE_PATTERN = r"^(" + "|".join(OVIRT_AGENT_TYPES) + r"|fence_[a-z0-9_]+)$"
_TYPE_MESSAGE = (
    "is not a fence agent type: use an oVirt name ("
    + ", ".join(OVIRT_AGENT_TYPES)
    + ") or a fence-agents program name such as fence_ipmilan"
)


class CredentialsSecretRef(Model):
    name: str = Field(min_length=1, max_length=253)
    username_key: str = Field(default="username", min_length=1)
    password_key: str = Field(default="password", min_length=1)


class FenceAgentSpec(Model):
    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "has(self.credentialsSecretRef) || self.type in "
                    + "["
                    + ", ".join(f"'{t}'" for t in NO_CREDENTIALS_TYPES)
                    + "]",
                    "credentialsSecretRef is required for this fence agent type",
                    fieldPath=".credentialsSecretRef",
                    reason="FieldValueRequired",
                ),
                redfish_plug_rule(),
            ]
        }
    }

    host_ref: ObjectRef = Field(description="The Host this device powers.")
    type: str = Field(
        max_length=64,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    f"self.matches(r'{AGENT_TYPE_PATTERN}')",
                    f"type {_TYPE_MESSAGE}",
                    messageExpression=quoted("type", "self", _TYPE_MESSAGE),
                )
            ]
        },
        description="oVirt type name (ipmilan, ilo2, idrac, apc, redfish, ...) "
        "or any fence_* agent.",
    )
    address: Address = Field(description="The device's host name, IPv4 or IPv6 address.")
    # Strict, as the CRD's integer type is: the API server refuses "623" in quotes, so
    # the model must too (what the API accepts, the runtime accepts, and the reverse).
    port: StrictInt | None = Field(default=None, ge=1, le=65535, description="TCP/UDP port.")
    plug: Plug | None = Field(
        default=None,
        description="Outlet, blade slot or VM name on the device (oVirt's port/slot).",
    )
    credentials_secret_ref: CredentialsSecretRef | None = None
    options: OptionsText = Field(
        default="",
        description="oVirt's options string, e.g. 'ssl=yes,ssl_insecure=yes,inet4_only=yes'. "
        "Credentials belong in the Secret; options that run programs or touch files "
        "on the host are refused.",
    )
    order: int = Field(
        default=1,
        ge=0,
        le=100,
        description="Lower runs first; agents with the same order form a concurrent "
        "group: off needs all of them off, on needs any one on.",
    )
    timeout_seconds: int = Field(default=20, ge=1, le=600, description="Per operation.")
    power_wait_seconds: int = Field(
        default=60,
        ge=1,
        le=3600,
        description="How long to poll for the power state to settle after off/on.",
    )


FenceTestResult = Literal["Succeeded", "Failed"]


class FenceAgentStatus(Model):
    last_test_time: datetime | None = None
    last_test_result: FenceTestResult | None = None
    message: str | None = None
    power_state: PowerState | None = None
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=CONDITIONS_EXTRA)


FENCE_AGENT = Kind(
    kind="FenceAgent",
    plural="fenceagents",
    short_names=("fa", "fenceagent"),
    spec=FenceAgentSpec,
    status=FenceAgentStatus,
    description="A power-management device (IPMI, iLO, iDRAC, Redfish, PDU) of one Host.",
    printer_columns=(
        PrinterColumn(name="Host", type="string", json_path=".spec.hostRef.name"),
        PrinterColumn(name="Type", type="string", json_path=".spec.type"),
        PrinterColumn(name="Order", type="integer", json_path=".spec.order"),
        PrinterColumn(name="Power", type="string", json_path=".status.powerState"),
        PrinterColumn(
            name="Reachable",
            type="string",
            json_path='.status.conditions[?(@.type=="Reachable")].status',
        ),
        PrinterColumn(name="Address", type="string", json_path=".spec.address", priority=1),
        PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
    ),
)
