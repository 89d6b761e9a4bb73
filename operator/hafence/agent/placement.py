"""The agent's copy of the namespace's HAVirtualMachines, fed by list and watch.

The sweep's list and the watcher's stream race each other; neither may roll an
object back.  etcd's revisions are integers, so they are compared when they parse
(resourceVersions are otherwise opaque, and then the latest arrival wins).

Before the first list the cache knows nothing: ``synced`` is False and an absent VM
means "unknown", never "placed nowhere".
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

from hafence.agent.vms import vm_key


def _rv(obj: dict[str, Any] | None) -> int | None:
    if not obj:
        return None
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion", ""))
    except ValueError:
        return None


class PlacementCache:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.synced = False

    def apply(self, kind: str, payload: dict[str, Any]) -> None:
        """``kind`` "snapshot" with a list object, or a watch event type with its object."""
        if kind == "snapshot":
            list_rv = _rv(payload)
            fresh = {vm_key(o): o for o in payload.get("items", [])}
            for key, old in self.objects.items():
                old_rv = _rv(old)
                if list_rv is not None and old_rv is not None and old_rv > list_rv:
                    fresh[key] = old  # seen on the watch after this list was taken
            self.objects = fresh
            self.synced = True
            return
        key = vm_key(payload)
        new_rv, old_rv = _rv(payload), _rv(self.objects.get(key))
        if old_rv is not None and new_rv is not None and new_rv < old_rv:
            return
        if kind == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = payload

    def relevant(self, host: str, local: Container[str]) -> dict[str, dict[str, Any]]:
        """The VMs ``host`` has to act or report on: placed here, running here, or
        placed nowhere after running here.  The rest is skipped before any parsing."""
        out: dict[str, dict[str, Any]] = {}
        for key, obj in self.objects.items():
            status = obj.get("status") or {}
            placed = status.get("host")
            if (
                placed == host
                or key in local
                or (not placed and (status.get("runtime") or {}).get("host") == host)
            ):
                out[key] = obj
        return out

    def stored_runtime(self, key: str) -> Any:
        return ((self.objects.get(key) or {}).get("status") or {}).get("runtime")
