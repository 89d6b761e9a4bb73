"""S5 at the boundary: right before a disruptive step the executor re-reads the host's
Lease; a renewal its watch has not delivered stops the step and reaches the core."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hafence.api.lease import format_microtime, lease_annotations, lease_body
from hafence.controller.cache import Cache
from hafence.controller.executor import Executor
from hafence.kube import Api

pytestmark = pytest.mark.controlplane


class _Leader:
    def check(self) -> int:
        return 1


def _lease(ns: str, renewed: datetime) -> dict[str, Any]:
    return lease_body(
        host="h1",
        namespace=ns,
        instance_id="t",
        lease_duration_seconds=10,
        renew_time=renewed,
        acquire_time=renewed,
        annotations=lease_annotations(boot_id="b00t", agent_version="t", vm_count=0, ready=True),
    )


def test_a_renewal_the_watch_missed_stops_the_fence(api: Api, namespace: str) -> None:
    now = datetime.now(UTC)
    api.coordination.create_namespaced_lease(namespace, _lease(namespace, now))
    seen: list[dict[str, Any]] = []

    async def observe(obj: dict[str, Any]) -> None:
        seen.append(obj)

    async def feed(_: Any) -> None:
        raise AssertionError("no result may be fed: the step did not run")

    cache = Cache()
    executor = Executor(
        api,
        namespace,
        cache,
        _Leader(),
        None,
        None,
        feed,  # type: ignore[arg-type]
        observe,
    )
    # The watch's copy is as fresh as the API server's (same instant, other format):
    # nothing unseen, the step may run.
    as_watched = copy.deepcopy(_lease(namespace, now))
    as_watched["metadata"]["resourceVersion"] = "1"
    cache.put("Lease", as_watched)
    assert asyncio.run(executor.guard.renewed_unseen("h1")) is False
    # The watch is stale: it last saw a renewal 8 s older than the stored one.
    stale = copy.deepcopy(as_watched)
    stale["spec"]["renewTime"] = format_microtime(now - timedelta(seconds=8))
    cache = Cache()
    cache.put("Lease", stale)
    executor.guard.cache = cache
    assert asyncio.run(executor.guard.renewed_unseen("h1")) is True
    assert len(seen) == 1 and seen[0]["metadata"]["name"] == "h1"
