"""Shared building blocks of the hafence.io/v1alpha1 kinds.

Python names are snake_case; the wire (and the CRD schema) is camelCase, as
Kubernetes users expect.  ``json_schema_extra`` carries the Kubernetes-only schema
keys (CEL rules, list types) into the generated CRDs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "hafence.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


def cel(rule: str, message: str, **extra: Any) -> dict[str, Any]:
    """One CEL ``x-kubernetes-validations`` entry."""
    return {"rule": rule, "message": message, **extra}


class Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=False,
        defer_build=True,
    )

    def to_k8s(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class ObjectRef(Model):
    """A reference to another object in the same namespace, by name."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)


class SecretKeyRef(Model):
    """A key of a Secret in the same namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    key: str = Field(min_length=1, description="Key inside the Secret's data.")


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(Model):
    type: str = Field(min_length=1)
    status: ConditionStatus
    reason: str = ""
    message: str = ""
    last_transition_time: datetime | None = None
    observed_generation: int | None = None


CONDITIONS_EXTRA: dict[str, Any] = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}


class PrinterColumn(Model):
    name: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    json_path: str
    priority: int = 0
    description: str = ""

    def to_k8s(self) -> dict[str, Any]:
        out = super().to_k8s()
        out["jsonPath"] = out.pop("jsonPath")
        if not self.description:
            out.pop("description")
        if not self.priority:
            out.pop("priority")
        return out


@dataclass(frozen=True)
class Kind:
    """A top-level kind: its spec and status models and the CRD metadata around them."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec: type[Model]
    status: type[Model]
    printer_columns: tuple[PrinterColumn, ...]
    description: str
    # JSONPaths the API server may filter lists and watches on (``fieldSelector``),
    # the CRD's ``selectableFields``.
    selectable_fields: tuple[str, ...] = ()

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"
