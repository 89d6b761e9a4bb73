"""FenceAgent: one power-management device (BMC or PDU outlet) of one host."""

from __future__ import annotations

import re
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
from hafence.api.grammar import (
    IPV4,
    IPV6,
    Address,
    OptionsText,
    Plug,
    cel_str,
    quoted,
    redfish_plug_rule,
)
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
# A kdump FenceAgent is no power device: the operator waits for the host's fence_kdump
# messages (``core/fencing_plan.py``, docs/kdump.md).  ``kdump`` is hafence's name,
# ``fence_kdump`` the fence-agents program's (what Pacemaker configurations say).
KDUMP_TYPES: tuple[str, ...] = ("kdump", "fence_kdump")
# fence_kdump's own default is 60 s; oVirt waits 30 s (KdumpStartedTimeout), three of
# fence_kdump_send's default 10 s intervals.
DEFAULT_KDUMP_TIMEOUT = 30
_KDUMP_SECONDS = r"(?:[1-9][0-9]?|[1-5][0-9][0-9]|600)"
_KDUMP_OPTIONS = rf"^\s*(?:timeout\s*=\s*{_KDUMP_SECONDS}\s*)?$"
_KDUMP_IN = "self.type in [" + ", ".join(f"'{t}'" for t in KDUMP_TYPES) + "]"
# Agents that authenticate by other means (or not at all) need no Secret.
NO_CREDENTIALS_TYPES: tuple[str, ...] = (
    "kdump",
    "fence_kdump",
    "fence_sbd",
    "fence_heuristics_ping",
    "fence_scsi",
    "fence_mpath",
)
AGENT_TYPE_PATTERN = r"^(" + "|".join(OVIRT_AGENT_TYPES) + r"|kdump|fence_[a-z0-9_]+)$"
_TYPE_MESSAGE = (
    "is not a fence agent type: use an oVirt name ("
    + ", ".join(OVIRT_AGENT_TYPES)
    + "), kdump, or a fence-agents program name such as fence_ipmilan"
)


def kdump_timeout(type_name: str, options: str) -> float | None:
    """Seconds a kdump FenceAgent waits for a fence_kdump message; None for other types.

    fence_kdump's ``timeout`` option in ``spec.options`` (the only option a kdump agent
    takes; the schema refuses others), else :data:`DEFAULT_KDUMP_TIMEOUT`.
    """
    if type_name not in KDUMP_TYPES:
        return None
    found = re.match(rf"^\s*timeout\s*=\s*({_KDUMP_SECONDS})\s*$", options)
    return float(found.group(1) if found else DEFAULT_KDUMP_TIMEOUT)


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
                # fence_kdump messages are matched by their source address: a name
                # would need a DNS answer the operator cannot check at that moment.
                cel(
                    f"!({_KDUMP_IN}) || self.address.matches({cel_str('^(?:' + IPV4 + ')$')})"
                    f" || self.address.matches({cel_str('^(?:' + IPV6 + ')$')})",
                    "a kdump FenceAgent's address is the IP address the host's fence_kdump "
                    "messages come from (an IPv4 or IPv6 address, not a name)",
                    fieldPath=".address",
                ),
                cel(
                    f"!({_KDUMP_IN}) || self.options.matches({cel_str(_KDUMP_OPTIONS)})",
                    "a kdump FenceAgent takes one option only, timeout=SECONDS (1-600): "
                    f"how long to wait for a fence_kdump message (default "
                    f"{DEFAULT_KDUMP_TIMEOUT})",
                    fieldPath=".options",
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
