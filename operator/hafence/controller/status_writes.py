"""The core's status writes, each reported back as landed or failed.

Writes run in the order the core emitted them (but for runs of one kind's writes, which
the executor sends at once: ``Executor.run``).  Every outcome goes back to the core as
an input: ``WriteLanded`` (with the object's new resourceVersion: for a VM the core's
view is now what it wrote) or ``WriteFailed``, after which the core issues the write
again from its current state, after a bounded backoff, until it lands or this operator
stops leading.  The order rule survives failures: while a Host status write has failed
for a transient reason and not yet landed, no placement write is attempted (a host's
proof is persisted before the placements that rely on it); they are reported failed
and come again with the next retry.

A placement write carries the resourceVersion of the object the core decided on (its
view, as last observed or written).  On a conflict the object is re-read: the same
placement as in the view means the conflict was the agent's runtime report, and the
write is tried again on the new version; another placement means another writer (S2:
this operator stops).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from hafence.controller import clock
from hafence.controller.cache import Cache, resource_version_of
from hafence.controller.leader import LeaderElector, NotLeader
from hafence.controller.pools import WRITES
from hafence.core import messages as m
from hafence.kube import Api, Conflict, KubeError, NotFound

log = logging.getLogger(__name__)

PLACEMENT_RETRIES = 5


class StatusWriter:
    def __init__(self, api: Api, namespace: str, cache: Cache, elector: LeaderElector) -> None:
        self.api = api
        self.namespace = namespace
        self.cache = cache
        self.elector = elector
        self.unwritten_hosts: set[str] = set()  # transient failures not yet landed

    async def host(self, action: m.WriteHostStatus) -> m.Input:
        outcome = await self._write("Host", action.host, action.status)
        if isinstance(outcome, m.WriteFailed) and outcome.message.startswith("transient"):
            self.unwritten_hosts.add(action.host)
        else:
            self.unwritten_hosts.discard(action.host)
        return outcome

    async def confirmation(self, action: m.WriteConfirmationStatus) -> m.Input:
        return await self._write("FenceConfirmation", action.name, action.status)

    async def vm(self, action: m.WriteVMStatus) -> m.Input:
        if not action.placement_changed:
            return await self._write("HAVirtualMachine", action.vm, action.status)
        # A host deleted meanwhile will never land: it holds nothing back (bounded set).
        self.unwritten_hosts = {
            h for h in self.unwritten_hosts if self.cache.get("Host", self.namespace, h)
        }
        if self.unwritten_hosts:
            return m.WriteFailed(
                clock.now(),
                "HAVirtualMachine",
                action.vm,
                True,
                "waiting for the status of "
                f"{', '.join(sorted(self.unwritten_hosts))} to land first",
            )
        view = (action.view_host, action.view_epoch)
        version = action.resource_version or resource_version_of(
            self.cache.get("HAVirtualMachine", self.namespace, action.vm)
        )
        for _ in range(PLACEMENT_RETRIES):
            try:
                return await self._write(
                    "HAVirtualMachine", action.vm, action.status, version, raise_conflict=True
                )
            except Conflict:
                fresh = await self._reread(action.vm)
                if isinstance(fresh, m.WriteFailed):
                    return fresh
                if fresh is None:
                    return m.WriteLanded(clock.now(), "HAVirtualMachine", action.vm)  # gone
                if _placement(fresh) != view:
                    raise NotLeader(
                        f"placement of VM {self.namespace}/{action.vm} changed by another "
                        f"writer ({_placement(fresh)} != {view})"
                    ) from None
                version = resource_version_of(fresh)
        return m.WriteFailed(
            clock.now(),
            "HAVirtualMachine",
            action.vm,
            True,
            f"placement kept conflicting {PLACEMENT_RETRIES} times",
        )

    async def _reread(self, name: str) -> dict[str, Any] | m.WriteFailed | None:
        try:
            fresh = await WRITES.run(self.api.get, "HAVirtualMachine", self.namespace, name)
        except NotFound:
            return None
        except KubeError as exc:
            return m.WriteFailed(clock.now(), "HAVirtualMachine", name, True, _kind_of(exc))
        self.cache.put("HAVirtualMachine", fresh)
        return fresh

    async def _write(
        self,
        kind: m.WriteKind,
        name: str,
        status: BaseModel,
        resource_version: str | None = None,
        *,
        raise_conflict: bool = False,
    ) -> m.Input:
        self.elector.check()
        body = status_patch(status)
        current = self.cache.get(kind, self.namespace, name)
        if current is not None:
            stamp(body, current)
        placement = kind == "HAVirtualMachine" and resource_version is not None
        try:
            obj = await WRITES.run(
                self.api.patch,
                kind,
                self.namespace,
                name,
                {"status": body},
                status=True,
                resource_version=resource_version,
            )
        except NotFound:
            return m.WriteLanded(clock.now(), kind, name)  # deleted: its DELETED event tells
        except Conflict:
            if raise_conflict:
                raise
            return m.WriteFailed(clock.now(), kind, name, placement, "conflict")
        except KubeError as exc:
            log.warning("%s %s/%s status not written: %s", kind, self.namespace, name, exc)
            return m.WriteFailed(clock.now(), kind, name, placement, _kind_of(exc))
        self.cache.put(kind, obj)
        st = obj.get("status") or {}
        return m.WriteLanded(
            clock.now(),
            kind,
            name,
            resource_version_of(obj),
            st.get("host"),
            int(st.get("placementEpoch") or 0),
        )


def _kind_of(exc: KubeError) -> str:
    return ("transient: " if exc.transient else "permanent: ") + str(exc)


def _placement(obj: Mapping[str, Any] | None) -> tuple[Any, Any]:
    status = (obj or {}).get("status") or {}
    return status.get("host"), status.get("placementEpoch", 0)


def status_patch(status: BaseModel) -> dict[str, Any]:
    """A merge patch that *replaces* our fields: None must clear a stale value, so nulls
    are kept; the agent's part of a VM status (``runtime``) is never touched."""
    body: dict[str, Any] = status.model_dump(by_alias=True, mode="json")
    body.pop("runtime", None)
    return body


def stamp(body: dict[str, Any], current: Mapping[str, Any]) -> None:
    """Kubernetes' condition conventions, which only the shell can keep: the generation
    this status was computed from, and ``lastTransitionTime`` kept while a condition's
    status stays the same (the core has no clock of its own to remember it by)."""
    generation = current.get("metadata", {}).get("generation")
    if "observedGeneration" in body:
        body["observedGeneration"] = generation
    conditions = body.get("conditions")
    if not isinstance(conditions, list):
        return
    previous = {c.get("type"): c for c in (current.get("status") or {}).get("conditions", [])}
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for condition in conditions:
        before = previous.get(condition.get("type"))
        if before is not None and before.get("status") == condition.get("status"):
            condition["lastTransitionTime"] = before.get("lastTransitionTime") or now
        else:
            condition["lastTransitionTime"] = now
        condition["observedGeneration"] = generation
