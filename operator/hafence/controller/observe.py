"""Raw Kubernetes objects -> the core's inputs.  Pure functions: the shell's only
translation layer, so the core never sees a dict from the API server.

An object that does not parse (an old CRD version, a hand-edited status) is skipped
with a log line naming it and the field, never fed half-understood to the core.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from hafence.api.confirmation import FenceConfirmationSpec, FenceConfirmationStatus
from hafence.api.fenceagent import FenceAgentSpec
from hafence.api.host import HostSpec, HostStatus
from hafence.api.lease import HeartbeatInfo, LeaseError
from hafence.api.vm import HAVirtualMachineSpec, HAVirtualMachineStatus
from hafence.core import messages as m

log = logging.getLogger(__name__)

Obj = Mapping[str, Any]


def key(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata", {})
    return meta.get("namespace", ""), meta.get("name", "")


def _timestamp(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _what(kind: str, obj: Obj) -> str:
    ns, name = key(obj)
    return f"{kind} {ns}/{name}"


def inputs_for(kind: str, obj: Obj, now: float, *, deleted: bool = False) -> list[m.Input]:
    """The core inputs one watch event amounts to (possibly none)."""
    _, name = key(obj)
    try:
        if kind == "Host":
            if deleted:
                return [m.HostDeleted(now, name)]
            status = obj.get("status") or None
            return [
                m.HostObserved(
                    now,
                    name,
                    HostSpec.model_validate(obj.get("spec", {})),
                    labels=dict(obj.get("metadata", {}).get("labels") or {}),
                    status=HostStatus.model_validate(status) if status else None,
                )
            ]
        if kind == "FenceAgent":
            if deleted:
                return [m.FenceAgentDeleted(now, name)]
            return [m.FenceAgentObserved(now, name, FenceAgentSpec.model_validate(obj["spec"]))]
        if kind == "HAVirtualMachine":
            if deleted:
                return [m.VMDeleted(now, name)]
            raw = obj.get("status") or None
            status = HAVirtualMachineStatus.model_validate(raw) if raw else None
            spec = HAVirtualMachineSpec.model_validate(obj["spec"])
            version = str(obj.get("metadata", {}).get("resourceVersion") or "")
            return [m.VMObserved(now, name, spec, status, version)]
        if kind == "FenceConfirmation":
            if deleted:
                return []  # the verdict stays in the core (while its outage lasts): S6 is once
            raw = obj.get("status") or None
            created = _timestamp(obj.get("metadata", {}).get("creationTimestamp")) or now
            return [
                m.ConfirmationObserved(
                    now,
                    name,
                    FenceConfirmationSpec.model_validate(obj["spec"]),
                    created,
                    FenceConfirmationStatus.model_validate(raw) if raw else None,
                )
            ]
        if kind == "Lease":
            if deleted:
                return []  # a deleted heartbeat is an expiring one: time decides
            info = HeartbeatInfo.from_lease(dict(obj))
            # Only a device declared for the boot this lease speaks for; never the old
            # software-only annotation (watchdog_timeout_seconds).
            armed = info.self_fence_armed
            return [
                m.LeaseObserved(
                    now,
                    info.host,
                    info.renew_time.timestamp(),
                    float(info.lease_duration_seconds),
                    info.boot_id,
                    float(armed.granted_seconds) if armed is not None else None,
                    info.ready,
                    watchdog_boot_id=info.boot_id if armed is not None else None,
                    self_fencing_unavailable=info.self_fencing_unavailable,
                )
            ]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        log.warning("skipping %s: %s: %s", _what(kind, obj), where, first["msg"])
        return []
    except (LeaseError, KeyError, ValueError) as exc:
        log.warning("skipping %s: %s", _what(kind, obj), exc)
        return []
    raise ValueError(f"unknown kind {kind!r}")
