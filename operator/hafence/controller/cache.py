"""The latest version of every watched object, shared by the handlers and the executor.

Kept whatever the leadership, so a replica that becomes leader can rebuild its core at
once; the executor reads Secrets' *references* and object identities from here (never
Secret data: that is read at call time).

Objects are stored without ``metadata.managedFields`` (:func:`lean`), as
controller-runtime's ``TransformStripManagedFields`` does for informers: nothing here
reads them, and they were half of every object's bytes -- at 1,000 hosts and 10,000
VMs most of the operator's memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

Obj = Mapping[str, Any]


def resource_version_of(obj: Obj | None) -> str:
    """An object's resourceVersion ("" if it has none)."""
    return str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")


def _rv(obj: Obj) -> int | None:
    raw = resource_version_of(obj)
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def lean(obj: Obj) -> dict[str, Any]:
    """A shallow copy of ``obj`` without its managedFields (the rest is shared)."""
    out = dict(obj)
    meta = out.get("metadata")
    if isinstance(meta, Mapping) and "managedFields" in meta:
        out["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
    return out


class Cache:
    def __init__(self) -> None:
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}

    def put(self, kind: str, obj: Obj) -> bool:
        """Store ``obj`` unless a newer version is already known; True if stored.

        resourceVersions are opaque to clients in general, but etcd-backed ones are
        increasing integers; a watch may deliver an older copy than our own write's
        response, and that one must not win."""
        meta = obj.get("metadata", {})
        key = (kind, meta.get("namespace", ""), meta.get("name", ""))
        known = self._objects.get(key)
        if known is not None:
            old, new = _rv(known), _rv(obj)
            if old is not None and new is not None and new < old:
                return False
        self._objects[key] = lean(obj)
        return True

    def delete(self, kind: str, obj: Obj) -> None:
        meta = obj.get("metadata", {})
        self._objects.pop((kind, meta.get("namespace", ""), meta.get("name", "")), None)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objects.get((kind, namespace, name))

    def of_kind(self, kind: str, namespace: str) -> Iterator[dict[str, Any]]:
        for (k, ns, _), obj in list(self._objects.items()):
            if k == kind and ns == namespace:
                yield obj

    def namespaces(self) -> set[str]:
        return {ns for (_, ns, _) in self._objects}
