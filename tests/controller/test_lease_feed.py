"""Heartbeat renewals reach the cache at once and the core at the next turn of the
namespace lock, whoever takes it.

At 1,000 hosts a failing rack's writes hold the lock for seconds; renewals fed one turn
each waited there one by one, and every tick and power result queued between them
(bench/README.md, Scale (shell)).  Real Hosts and Leases on the API server, a real
elector; the reconciler is driven by hand.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from hafence.api.lease import HEARTBEAT_SELECTOR, lease_annotations, lease_body
from hafence.controller.events import EventRecorder
from hafence.controller.metrics import Metrics
from hafence.controller.reconciler import Reconciler
from hafence.core.policy import Settings as Policy
from hafence.kube import Api

from .conftest import ElectorFactory

HOSTS = [f"h{i:02d}" for i in range(40)]


def host(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "hafence.io/v1alpha1",
        "kind": "Host",
        "metadata": {"name": name},
        "spec": {
            "address": "127.0.0.1",
            "cluster": "c1",
            "capacity": {"cpu": 8, "memoryMiB": 8192},
        },
    }


def lease(namespace: str, name: str, renewed: dt.datetime, version: str | None) -> dict[str, Any]:
    start = renewed.replace(hour=0)
    return lease_body(
        host=name,
        namespace=namespace,
        instance_id="boot-1",
        lease_duration_seconds=10,
        renew_time=renewed,
        acquire_time=start,
        annotations=lease_annotations(
            boot_id="boot-1", agent_version="test", vm_count=0, ready=True
        ),
        resource_version=version,
    )


async def test_renewals_wait_for_no_lock_and_the_next_turn_feeds_them(
    api: Api, namespace: str, make_elector: ElectorFactory
) -> None:
    first = dt.datetime.now(dt.UTC)
    for name in HOSTS:
        api.create("Host", namespace, host(name))
        api.coordination.create_namespaced_lease(namespace, lease(namespace, name, first, None))
    elector = make_elector("op")
    leading = asyncio.create_task(elector.run())
    await asyncio.wait_for(elector.wait_until_leader(), 30)
    rec = Reconciler(api, Policy(), (namespace,), elector, EventRecorder(api), Metrics())
    await rec._start_leading()
    rec._active = True
    engine = rec.engines[namespace]
    # Every agent renews once more.
    listed, _ = api.lease_snapshot(namespace, HEARTBEAT_SELECTOR)
    renewed = first + dt.timedelta(seconds=3)
    for obj in listed:
        name, version = obj["metadata"]["name"], obj["metadata"]["resourceVersion"]
        api.coordination.replace_namespaced_lease(
            name, namespace, lease(namespace, name, renewed, version)
        )
    batch, _ = api.lease_snapshot(namespace, HEARTBEAT_SELECTOR)

    lock = rec._lock(namespace)
    await lock.acquire()  # a batch of a failing rack's writes holds it
    # The watch's delivery does not wait for the lock: its next batch is read meanwhile.
    await asyncio.wait_for(rec.observe_leases([(obj, False) for obj in batch]), 10)
    cached = [rec.cache.get("Lease", namespace, name) for name in HOSTS]
    assert all(
        obj is not None and obj["spec"]["renewTime"] == batch[0]["spec"]["renewTime"]
        for obj in cached
    )

    def fed() -> int:
        return sum(1 for h in engine.hosts.values() if h.renew_time == renewed.timestamp())

    assert fed() == 0, "fed while another held the lock"
    turn = asyncio.create_task(rec.feed(namespace, ()))  # the next turn: a tick, a result
    await asyncio.sleep(0.1)
    lock.release()
    await asyncio.wait_for(turn, 10)
    assert fed() == len(HOSTS), f"{fed()} of {len(HOSTS)} renewals fed by the next turn"
    leading.cancel()
    await asyncio.gather(leading, return_exceptions=True)
