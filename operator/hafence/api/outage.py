"""HostOutage: the record of one outage of one Host, kept after its Events expire.

Written only by the operator (the Host owns it through ownerReferences), one per
outage ID; a person reads it with ``kubectl get hostoutages`` or ``hafence outages``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from hafence.api.base import Kind, Model, ObjectRef, PrinterColumn
from hafence.api.host import OutagePhase

AttemptKind = Literal["power-status", "soft-fence", "fence"]
ProofKind = Literal["fence", "kdump", "confirmation", "self-fence"]
# The Host's phase while the outage lasts, then Closed (the host is Up again, in
# maintenance or deleted).
OutageState = Literal[OutagePhase, "Closed"]


class HostOutageSpec(Model):
    host_ref: ObjectRef
    outage_id: str = Field(alias="outageID", min_length=1, max_length=253)


class PhaseEntry(Model):
    phase: str
    time: datetime


class AttemptEntry(Model):
    """One power operation on one agent (or one soft fence), as the operator saw it."""

    kind: AttemptKind
    start_time: datetime
    duration_seconds: float | None = None
    result: str = Field(
        description="on, off, error, success, failure, kdump (a fence_kdump message heard); "
        "pending until answered."
    )
    attempt: int | None = None
    level: int | None = None
    step: str | None = Field(default=None, description="kdump, status, off, verify or on.")
    agent: str | None = None
    agent_type: str | None = None
    proxy: str | None = None
    message: str = ""


class Proof(Model):
    """What released the VMs: S1's evidence for this outage."""

    type: ProofKind
    time: datetime
    agent: str | None = Field(default=None, description="The fence agent that verified off.")
    confirmation: str | None = Field(default=None, description="The FenceConfirmation's name.")
    reason: str | None = None
    confirmed_by: str | None = Field(
        default=None, description="The API user who made the confirmation (from the request)."
    )


class ReleasedVM(Model):
    name: str
    to_host: str | None = None
    placed_time: datetime | None = None
    running_time: datetime | None = None


class HostOutageStatus(Model):
    state: OutageState | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    phases: list[PhaseEntry] = Field(default_factory=list)
    attempts: list[AttemptEntry] = Field(default_factory=list)
    proof: Proof | None = None
    vms: list[ReleasedVM] = Field(default_factory=list, alias="vms")
    recovery_seconds: float | None = Field(
        default=None, description="From the outage start to the last released VM running."
    )
    duration_seconds: int | None = Field(
        default=None, description="From the outage start to its end (the host back)."
    )


HOST_OUTAGE = Kind(
    kind="HostOutage",
    plural="hostoutages",
    short_names=("hfo", "outage"),
    spec=HostOutageSpec,
    status=HostOutageStatus,
    description="The record of one outage of a Host: phases, fence attempts, the proof "
    "that released its VMs and where they went. Written by the operator.",
    printer_columns=(
        PrinterColumn(name="Host", type="string", json_path=".spec.hostRef.name"),
        PrinterColumn(name="Start", type="date", json_path=".status.startTime"),
        PrinterColumn(name="State", type="string", json_path=".status.state"),
        PrinterColumn(name="Proof", type="string", json_path=".status.proof.type"),
        PrinterColumn(name="Duration", type="integer", json_path=".status.durationSeconds"),
        PrinterColumn(
            name="Recovery", type="number", json_path=".status.recoverySeconds", priority=1
        ),
        PrinterColumn(
            name="ConfirmedBy", type="string", json_path=".status.proof.confirmedBy", priority=1
        ),
    ),
)
