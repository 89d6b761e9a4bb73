"""FenceConfirmation: a person's statement that a host is really down (S6)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from hafence.api.base import Kind, Model, ObjectRef, PrinterColumn, cel

ConfirmationPhase = Literal["Pending", "Applied", "Rejected"]


class FenceConfirmationSpec(Model):
    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel("self == oldSelf", "spec is immutable: create a new FenceConfirmation")
            ]
        }
    }

    host_ref: ObjectRef
    reason: str = Field(
        min_length=1,
        max_length=1024,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.trim() != ''",
                    "reason is blank: say how you know the host is off, "
                    "e.g. 'power cable pulled, checked on site'",
                )
            ]
        },
        description="Why you know the host is off, e.g. 'power cable pulled, checked on site'.",
    )


class FenceConfirmationStatus(Model):
    phase: ConfirmationPhase | None = None
    message: str | None = None
    outage_id: str | None = Field(default=None, alias="outageID")
    applied_time: datetime | None = None
    released_vms: list[str] = Field(default_factory=list, alias="releasedVMs")


FENCE_CONFIRMATION = Kind(
    kind="FenceConfirmation",
    plural="fenceconfirmations",
    short_names=("fc", "fenceconfirm"),
    spec=FenceConfirmationSpec,
    status=FenceConfirmationStatus,
    description="A person's confirmation that an isolated Host is really powered off. "
    "A wrong confirmation can corrupt VM disks.",
    printer_columns=(
        PrinterColumn(name="Host", type="string", json_path=".spec.hostRef.name"),
        PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
        PrinterColumn(name="Reason", type="string", json_path=".spec.reason", priority=1),
        PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
    ),
)
