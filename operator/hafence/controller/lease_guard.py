"""S5 at the boundary: re-read a host's Lease right before a disruptive step.

The core decided on the watch's view; if that view is stale (a watch stream that
stalled, an operator shutting down) the lease may have been renewed since.  A renewal
the watch has not delivered is fed to the core as a normal observation and the step is
not run.  Compares renewTime values only, so no clock is trusted.

The window that stays: between this re-read and the device acting on "off" -- one GET
answered plus the driver's own start (for IPMI, a worker process and an RMCP+ session).
An agent that renews inside it has its renewal judged after the fence completes (the
core's no-abandon rule), see docs/architecture.md.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from hafence.api.lease import LeaseError, parse_microtime
from hafence.controller.cache import Cache
from hafence.controller.pools import FENCING
from hafence.kube import Api, KubeError

log = logging.getLogger(__name__)


class LeaseGuard:
    def __init__(
        self,
        api: Api,
        namespace: str,
        cache: Cache,
        observe_lease: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.cache = cache
        self.observe_lease = observe_lease

    async def renewed_unseen(self, host: str) -> bool:
        """True (and the renewal fed to the core) when the stored Lease is newer than
        the watch's copy.  An unreadable Lease leaves the watch's view standing."""
        try:
            obj = await FENCING.run(self.api.read_lease, self.namespace, host)
        except KubeError as exc:
            log.warning(
                "host %s/%s: lease not re-read before fencing: %s", self.namespace, host, exc
            )
            return False
        seen = self.cache.get("Lease", self.namespace, host) or {}
        renewed = renew_time(obj)
        if renewed is None or renewed == renew_time(seen):
            return False
        log.warning(
            "host %s/%s: lease renewed at %s, unseen by the watch: not fencing",
            self.namespace,
            host,
            renewed,
        )
        await self.observe_lease(obj)
        return True


def renew_time(lease: Mapping[str, Any]) -> datetime | None:
    """A Lease's renewTime as a time: the watch and a GET serialize it differently."""
    raw = (lease.get("spec") or {}).get("renewTime")
    try:
        return parse_microtime(raw) if isinstance(raw, str) else None
    except LeaseError:
        return None
