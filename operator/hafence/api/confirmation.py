"""FenceConfirmation: a person's statement that a host is really down (S6)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from hafence.api.base import Kind, Model, ObjectRef, PrinterColumn, cel

ConfirmationPhase = Literal["Pending", "Applied", "Rejected"]

# Who made a FenceConfirmation, from the API request itself (request.userInfo.username),
# set by the MutatingAdmissionPolicy hafence-confirmation-records-requester: never a
# field a user types.  For a confirmation the operator made from a Host annotation,
# ON_BEHALF_OF carries the user who set that annotation, recorded the same way.
CONFIRMED_BY_ANNOTATION = "hafence.io/confirmed-by"
ON_BEHALF_OF_ANNOTATION = "hafence.io/on-behalf-of"
# On a Host: who set hafence.io/confirm-rebooted, recorded by the same admission policies.
CONFIRM_REBOOTED_BY_ANNOTATION = "hafence.io/confirm-rebooted-by"


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
    confirmed_by: str | None = Field(
        default=None,
        description="Who made the confirmation, as the API server recorded it "
        "(annotation hafence.io/confirmed-by); empty without the admission policy.",
    )


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
        PrinterColumn(name="By", type="string", json_path=".status.confirmedBy"),
        PrinterColumn(name="Reason", type="string", json_path=".spec.reason", priority=1),
        PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
    ),
)
