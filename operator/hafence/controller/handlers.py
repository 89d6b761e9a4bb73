"""kopf registrations: raw watch events of our five kinds into the Reconciler (the
heartbeat Leases have a leaner watch of their own, lease_watch.py).

Only ``@kopf.on.event`` is used: kopf's change-detecting handlers store their progress
in annotations on the objects, and the operator writes nothing but status (and the
confirmation annotation's removal) on objects it does not own.
"""

from __future__ import annotations

from typing import Any

import kopf

from hafence.api import (
    FENCE_AGENT,
    FENCE_CONFIRMATION,
    FENCING_POLICY,
    GROUP,
    HA_VIRTUAL_MACHINE,
    HOST,
    VERSION,
)
from hafence.controller.agentoptions import AgentOptionsChecker
from hafence.controller.reconciler import Reconciler


def register(registry: kopf.OperatorRegistry, reconciler: Reconciler) -> None:
    def watch(
        kind: str, group: str, version: str, plural: str, labels: dict[str, str] | None = None
    ) -> None:
        async def on_event(event: kopf.RawEvent, **_: Any) -> None:
            obj = event.get("object")
            if not isinstance(obj, dict):
                return
            await reconciler.observe(kind, dict(obj), deleted=event.get("type") == "DELETED")

        kopf.on.event(
            group,
            version,
            plural,
            labels=labels,
            registry=registry,
            id=f"watch-{plural}",
        )(on_event)

    for k in (HOST, FENCE_AGENT, HA_VIRTUAL_MACHINE, FENCE_CONFIRMATION, FENCING_POLICY):
        watch(k.kind, GROUP, VERSION, k.plural)

    checker = AgentOptionsChecker(reconciler.api, reconciler.recorder, reconciler.elector)

    async def check_options(event: kopf.RawEvent, **_: Any) -> None:
        obj = event.get("object")
        if not isinstance(obj, dict):
            return
        if event.get("type") == "DELETED":
            checker.forget(dict(obj))
        else:
            await checker.seen(dict(obj))

    kopf.on.event(
        GROUP, VERSION, FENCE_AGENT.plural, registry=registry, id="check-fenceagent-options"
    )(check_options)
