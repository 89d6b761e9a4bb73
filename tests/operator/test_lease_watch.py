"""The heartbeat-Lease watch (controller/lease_watch.py) against the real API server:
list then watch, renewals and deletions fed in order, a reset path survived, nothing
left running once cancelled.  (A 410 after etcd's compaction is not provoked here: it
would need a compaction of the shared control plane.)"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hafence.api.lease import HEARTBEAT_SELECTOR
from hafence.controller.lease_watch import LeaseWatch, _Handoff, _Pacer
from hafence.kube import Api, load_api
from hafence.lab.faultproxy import FaultProxy
from hafence.lab.netcut import server_of
from tests.operator.conftest import Heartbeats


async def until(check: Callable[[], bool], what: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_renewals_and_deletions_arrive_and_a_reset_path_is_survived(
    api: Api, namespace: str, kubeconfig: str, tmp_path: Path, heartbeats: Heartbeats
) -> None:
    proxy = FaultProxy(*server_of(Path(kubeconfig)), name="lease-watch")
    watch_api = load_api(str(proxy.kubeconfig(Path(kubeconfig), tmp_path / "kubeconfig")))
    seen: list[tuple[str, str, bool]] = []  # (host, renewTime, deleted)

    async def deliver(batch: list[tuple[dict[str, Any], bool]]) -> None:
        for obj, deleted in batch:
            # Kept and fed lean, like the cache's objects (cache.lean).
            assert "managedFields" not in obj["metadata"], obj["metadata"]
            seen.append((obj["metadata"]["name"], obj["spec"].get("renewTime", ""), deleted))

    def renewals(host: str) -> set[str]:
        return {t for h, t, d in seen if h == host and not d}

    heartbeats.start("h1")  # before the watch starts: the list delivers it

    async def scenario() -> LeaseWatch:
        # A short server timeout: the watch is re-opened from its version, not re-listed.
        watch = LeaseWatch(watch_api, namespace, deliver, timeout_seconds=2)
        task = asyncio.create_task(watch.run())
        try:
            await until(lambda: bool(renewals("h1")), "h1 from the list")
            heartbeats.start("h2")
            await until(lambda: bool(renewals("h2")), "h2 added by the watch")
            n = len(renewals("h1"))
            await until(lambda: len(renewals("h1")) >= n + 6, "h1 renewed across watch timeouts")
            assert watch.lists == 1, "a watch the server ended was re-opened without a list"
            # The path resets every connection for 2 s: the watch comes back by itself.
            proxy.inject("reset", 2.0)
            await asyncio.sleep(2.0)
            n = len(renewals("h1"))
            await until(lambda: len(renewals("h1")) >= n + 3, "renewals after the reset")
            heartbeats.stop("h2")
            api.coordination.delete_namespaced_lease("h2", namespace)
            await until(lambda: ("h2", True) in {(h, d) for h, _, d in seen}, "h2 deleted")
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        return watch

    try:
        watch = asyncio.run(scenario())
        # Fed in order: one host's renewal times never go back.
        for host in ("h1", "h2"):
            times = [t for h, t, d in seen if h == host and not d]
            assert times == sorted(times), host
        assert watch.events > 0
        deadline = time.monotonic() + 10
        while any(t.name.startswith("lease-watch") for t in threading.enumerate()):
            assert time.monotonic() < deadline, "a lease-watch thread outlived its watch"
            time.sleep(0.05)
    finally:
        watch_api.close()
        proxy.close()


def test_a_watch_from_the_lists_version_sees_only_what_came_after(
    api: Api, namespace: str, heartbeats: Heartbeats
) -> None:
    heartbeats.start("h1")
    heartbeats.stop("h1")  # one write, then silence
    items, version = api.lease_snapshot(namespace, HEARTBEAT_SELECTOR)
    assert [i["metadata"]["name"] for i in items] == ["h1"] and version.isdigit()
    assert items[0]["spec"]["renewTime"].endswith("Z")  # raw JSON, as a watch delivers
    events = list(api.watch_leases(namespace, version, HEARTBEAT_SELECTOR, 1))
    assert [e["type"] for e in events if e["type"] != "BOOKMARK"] == []


def test_a_backlog_behind_a_slow_consumer_is_fed_as_the_last_renewal_of_each_lease(
    api: Api, namespace: str, heartbeats: Heartbeats
) -> None:
    delivered: list[tuple[str, str]] = []
    batches: list[int] = []

    async def slow(batch: list[tuple[dict[str, Any], bool]]) -> None:
        batches.append(len(batch))
        delivered.extend((obj["metadata"]["name"], obj["spec"]["renewTime"]) for obj, _ in batch)
        await asyncio.sleep(1.0)  # a reconciler busy with a rack's writes

    heartbeats.start("h1")
    heartbeats.start("h2")

    async def scenario() -> LeaseWatch:
        watch = LeaseWatch(api, namespace, slow)
        task = asyncio.create_task(watch.run())
        try:
            await until(lambda: watch.events >= 16, "renewals while the consumer is slow")
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        return watch

    watch = asyncio.run(scenario())
    watched = len(delivered) - 2  # the list's two
    assert watched < watch.events, (watched, watch.events)
    assert max(batches[1:]) == 2, "a backlog comes as one batch, each Lease once in it"
    for host in ("h1", "h2"):
        times = [t for h, t in delivered if h == host]
        assert times == sorted(times) and len(set(times)) == len(times), host


def test_events_cross_from_the_thread_at_once_when_quiet_and_together_when_busy() -> None:
    """_Handoff: one wake-up of the loop per interval at most, none held back when the
    stream is quiet (a two-host datacenter's renewals are seconds apart)."""

    async def run() -> list[list[Any]]:
        loop = asyncio.get_running_loop()
        got: list[list[Any]] = []
        arrived = asyncio.Event()

        def take(items: list[Any]) -> None:
            got.append(items)
            arrived.set()

        handoff = _Handoff(loop, take, interval=0.5)

        async def from_thread(*items: str) -> None:
            arrived.clear()
            thread = threading.Thread(target=lambda: [handoff.post({"n": i}) for i in items])
            thread.start()
            thread.join()
            await asyncio.wait_for(arrived.wait(), 10)

        await from_thread("first")  # quiet before: handed over on its own
        await from_thread("second", "third")  # within the interval: together, later
        await asyncio.sleep(0.6)
        await from_thread("after a quiet spell")
        return got

    got = asyncio.run(run())
    assert [[e["n"] for e in batch] for batch in got] == [
        ["first"],
        ["second", "third"],
        ["after a quiet spell"],
    ]


def test_the_stream_thread_naps_only_while_renewals_come_back_to_back() -> None:
    """_Pacer on a simulated clock: events 3 ms apart (1,000 hosts) bring a nap at most
    once per interval; events a second apart (a small datacenter) or already buffered
    (read in one go after a nap) never do."""
    now = [0.0]
    pacer = _Pacer(interval=0.05, clock=lambda: now[0])
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(now[0])
        now[0] += seconds

    pacer.sleep = sleep
    posted: list[Any] = []

    def arrive(after: float) -> None:
        now[0] += after
        pacer.hand({"n": len(posted)}, posted.append)

    for _ in range(10):
        arrive(1.0)  # quiet
    assert naps == []
    for _ in range(100):
        arrive(0.003)  # busy
    assert 0 < len(naps) <= 100 * 0.003 / 0.05 + 1
    assert all(b - a >= 0.05 for a, b in itertools.pairwise(naps))
    before = len(naps)
    for _ in range(50):
        arrive(0.0001)  # what gathered during a nap: already in the buffer
    assert len(naps) == before
    assert len(posted) == 160  # every event handed over, none held back
