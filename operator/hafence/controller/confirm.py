"""`kubectl annotate host NAME hafence.io/confirm-rebooted=REASON` -> a FenceConfirmation.

The annotation is the quick path for a person at a console; the FenceConfirmation is
the record (who, why, which outage, applied or rejected and why).  The operator creates
the confirmation, then removes the annotation.  The confirmation's name is derived from
the host, its current outage and the reason, so a crash between the two steps creates
nothing twice; the core judges it like any other (S6: one outage, once).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from hafence.api.base import API_VERSION
from hafence.api.confirmation import CONFIRM_REBOOTED_BY_ANNOTATION, ON_BEHALF_OF_ANNOTATION
from hafence.api.lease import HOST_LABEL
from hafence.controller.cache import Cache
from hafence.controller.leader import LeaderElector
from hafence.controller.pools import WRITES
from hafence.core.engine import Engine
from hafence.core.isolation import CONFIRM_ANNOTATION
from hafence.kube import Api, Conflict, KubeError

log = logging.getLogger(__name__)

SOURCE_ANNOTATION = "hafence.io/source"


def confirmation_name(host: str, uid: str, outage: str | None, reason: str) -> str:
    digest = hashlib.sha256(f"{uid}\0{outage or '-'}\0{reason}".encode()).hexdigest()[:8]
    return f"{host[:200]}-confirm-{digest}"


class ConfirmAnnotations:
    def __init__(self, api: Api, cache: Cache, elector: LeaderElector) -> None:
        self.api = api
        self.cache = cache
        self.elector = elector

    async def handle(self, host: dict[str, Any], engine: Engine | None) -> None:
        meta = host.get("metadata", {})
        reason = (meta.get("annotations") or {}).get(CONFIRM_ANNOTATION)
        if reason is None:
            return
        namespace, name = meta["namespace"], meta["name"]
        # Recorded by the API server from the annotating request (who-confirmed-policy):
        # the confirmation speaks for that person, not for the operator that made it.
        by = (meta.get("annotations") or {}).get(CONFIRM_REBOOTED_BY_ANNOTATION)
        record = engine.hosts.get(name) if engine is not None else None
        outage = record.outage_id if record is not None else None
        cname = confirmation_name(name, meta.get("uid", ""), outage, reason)
        body = {
            "apiVersion": API_VERSION,
            "kind": "FenceConfirmation",
            "metadata": {
                "name": cname,
                "labels": {HOST_LABEL: name},
                "annotations": {
                    SOURCE_ANNOTATION: f"annotation {CONFIRM_ANNOTATION}",
                    **({ON_BEHALF_OF_ANNOTATION: by} if by else {}),
                },
            },
            # An empty reason is refused by the schema; the annotation's is kept verbatim.
            "spec": {"hostRef": {"name": name}, "reason": reason.strip() or "(no reason given)"},
        }
        try:
            self.elector.check()
            await WRITES.run(self.api.create, "FenceConfirmation", namespace, body)
            log.warning(
                "host %s/%s: annotation %s turned into FenceConfirmation %s",
                namespace,
                name,
                CONFIRM_ANNOTATION,
                cname,
            )
        except Conflict:
            pass  # made before a crash: the same outage and reason, made once
        except KubeError as exc:
            log.error(
                "host %s/%s: FenceConfirmation from annotation not created: %s",
                namespace,
                name,
                exc,
            )
            return
        patch = {
            "metadata": {
                "annotations": {CONFIRM_ANNOTATION: None, CONFIRM_REBOOTED_BY_ANNOTATION: None}
            }
        }
        try:
            await WRITES.run(
                self.api.patch,
                "Host",
                namespace,
                name,
                patch,
                resource_version=meta.get("resourceVersion"),
            )
        except KubeError as exc:  # a newer Host event will bring us back here
            log.info("host %s/%s: annotation not removed yet: %s", namespace, name, exc)
