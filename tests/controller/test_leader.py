"""Leader election against the real kube-apiserver: one leader, takeovers, the epoch."""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING

import pytest
from kubernetes import client

from hafence.controller.leader import EPOCH_ANNOTATION, LeaderElector, NotLeader
from hafence.kube import Api
from hafence.lab.ports import free_port

if TYPE_CHECKING:
    from tests.controller.conftest import ElectorFactory

pytestmark = pytest.mark.controlplane

WAIT = 15.0  # bound on every wait; generous for a loaded 2-core machine


async def first_leader(*electors: LeaderElector) -> LeaderElector:
    async with asyncio.timeout(WAIT):
        while True:
            leaders = [e for e in electors if e.is_leader]
            if leaders:
                return leaders[0]
            await asyncio.sleep(0.05)


def lease(api: Api, namespace: str, name: str) -> client.V1Lease:
    return api.coordination.read_namespaced_lease(name, namespace)


async def test_exactly_one_of_two_leads(
    make_elector: ElectorFactory, api: Api, namespace: str
) -> None:
    a, b = make_elector("replica-a"), make_elector("replica-b")
    await a.start()
    await b.start()
    leader = await first_leader(a, b)
    follower = b if leader is a else a

    # Several renewals later, still exactly one, and the follower knows who it is.
    for _ in range(10):
        await asyncio.sleep(0.1)
        assert [e.is_leader for e in (a, b)].count(True) == 1
    assert leader.is_leader and not follower.is_leader
    assert follower.observed_holder == leader.identity
    assert leader.check() == leader.epoch == 1
    with pytest.raises(NotLeader, match="replica-"):
        follower.check()

    obj = lease(api, namespace, leader.name)
    assert obj.spec.holder_identity == leader.identity
    assert obj.metadata.annotations[EPOCH_ANNOTATION] == "1"
    assert obj.spec.lease_transitions == 1


async def test_killed_leader_is_replaced_after_expiry_with_a_higher_epoch(
    make_elector: ElectorFactory,
) -> None:
    started: list[tuple[str, int]] = []
    stopped: list[tuple[str, int]] = []

    def make(identity: str) -> LeaderElector:
        return make_elector(
            identity,
            on_started_leading=lambda epoch: started.append((identity, epoch)),
            on_stopped_leading=lambda epoch: stopped.append((identity, epoch)),
        )

    a, b = make("replica-a"), make("replica-b")
    await a.start()
    await b.start()
    old = await first_leader(a, b)
    new = b if old is a else a
    old_epoch = old.check()

    await old.stop(release=False)  # a crash: the Lease still names the old leader
    assert not old.is_leader
    # The lease was renewed less than a retry period ago: the survivor must wait.
    assert not new.is_leader
    async with asyncio.timeout(WAIT):
        new_epoch = await new.wait_until_leader()
    assert new_epoch == old_epoch + 1
    assert new.check() == new_epoch
    assert started == [(old.identity, old_epoch), (new.identity, new_epoch)]
    assert stopped == [(old.identity, old_epoch)]


async def test_release_hands_over_without_waiting_for_expiry(
    make_elector: ElectorFactory, api: Api, namespace: str
) -> None:
    # A lease of 60 s: a takeover within WAIT can only come from the release.
    options = {"lease_duration": 60, "renew_deadline": 40.0, "retry_period": 0.2}
    a = make_elector("replica-a", **options)
    await a.start()
    async with asyncio.timeout(WAIT):
        first = await a.wait_until_leader()
    b = make_elector("replica-b", **options)
    await b.start()
    await asyncio.sleep(0.5)  # b has seen a's record and is waiting on it
    assert not b.is_leader

    await a.stop(release=True)
    with pytest.raises(NotLeader):
        a.check()
    async with asyncio.timeout(WAIT):
        second = await b.wait_until_leader()
    assert second == first + 1
    assert lease(api, namespace, b.name).spec.holder_identity == "replica-b"


async def test_leader_whose_lease_is_stolen_steps_down(
    make_elector: ElectorFactory, api: Api, namespace: str
) -> None:
    lost: list[int] = []
    called = asyncio.Event()

    async def on_stop(epoch: int) -> None:
        lost.append(epoch)
        called.set()

    a = make_elector("replica-a", on_stopped_leading=on_stop)
    await a.start()
    async with asyncio.timeout(WAIT):
        epoch = await a.wait_until_leader()

    # Another writer takes the Lease over (a rogue replica, a person with kubectl).
    api.coordination.patch_namespaced_lease(
        a.name, namespace, {"spec": {"holderIdentity": "thief", "leaseDurationSeconds": 1}}
    )
    async with asyncio.timeout(WAIT):
        await a.wait_until_not_leader()
    with pytest.raises(NotLeader):
        a.check()
    assert a.epoch is None
    async with asyncio.timeout(WAIT):
        await called.wait()
    assert lost == [epoch]

    # The thief never renews: after its lease expires, a comes back in a new term.
    async with asyncio.timeout(WAIT):
        again = await a.wait_until_leader()
    assert again == epoch + 1


async def test_check_refuses_once_the_renew_deadline_passes(
    make_elector: ElectorFactory,
) -> None:
    offset = 0.0
    a = make_elector("replica-a", clock=lambda: time.monotonic() + offset)
    await a.start()
    async with asyncio.timeout(WAIT):
        epoch = await a.wait_until_leader()
    assert a.check() == epoch
    assert 0 < a.remaining() <= a.renew_deadline

    # Jump past the deadline, as a stalled event loop would: no renewal can have
    # happened since, and check() must refuse before the loop even runs again.
    offset = a.renew_deadline
    assert not a.is_leader
    with pytest.raises(NotLeader, match="not renewed within"):
        a.check()


async def test_leader_cut_off_from_the_api_server_steps_down(
    make_elector: ElectorFactory,
) -> None:
    a = make_elector("replica-a")
    await a.start()
    async with asyncio.timeout(WAIT):
        await a.wait_until_leader()

    # Point its client at a loopback port nobody listens on: renewals fail for real.
    api = make_elector.api_of(a)
    cfg = client.Configuration()
    cfg.host = f"https://127.0.0.1:{free_port()}"
    cfg.retries = 0
    api.coordination = client.CoordinationV1Api(client.ApiClient(cfg))
    async with asyncio.timeout(WAIT):
        await a.wait_until_not_leader()
    with pytest.raises(NotLeader):
        a.check()


async def test_no_busy_loop(make_elector: ElectorFactory) -> None:
    a, b = make_elector("replica-a"), make_elector("replica-b")
    await a.start()
    await b.start()
    leader = await first_leader(a, b)
    follower = b if leader is a else a
    before = {e.identity: make_elector.calls(e) for e in (a, b)}
    t0 = time.monotonic()
    await asyncio.sleep(2.0)
    elapsed = time.monotonic() - t0
    # At most one call per retry period each (+1 for the period in progress): a slow
    # machine makes fewer calls, never more, so the bound cannot flake.
    limit = elapsed / leader.retry_period + 1
    for elector in (leader, follower):
        made = make_elector.calls(elector) - before[elector.identity]
        assert 1 <= made <= limit, (elector.identity, made, limit)


async def test_leader_keeps_renewing_while_the_default_executor_is_saturated(
    make_elector: ElectorFactory,
) -> None:
    stopped: list[int] = []
    a = make_elector("replica-a", on_stopped_leading=stopped.append)
    await a.start()
    async with asyncio.timeout(WAIT):
        await a.wait_until_leader()

    # Every default worker thread blocked for longer than the renew deadline, as a
    # storm of slow blocking calls (fence agents, status writes) would do.  The
    # default executor has ThreadPoolExecutor's default size.
    workers = min(32, (os.cpu_count() or 1) + 4)
    blockers = [asyncio.to_thread(time.sleep, 2 * a.renew_deadline) for _ in range(workers)]
    await asyncio.gather(*blockers)
    assert a.is_leader and stopped == []


async def test_epoch_never_goes_back_when_the_lease_is_deleted(
    make_elector: ElectorFactory, api: Api, namespace: str
) -> None:
    a = make_elector("replica-a")
    await a.start()
    async with asyncio.timeout(WAIT):
        first = await a.wait_until_leader()
    # Someone takes the Lease, then deletes it: its epoch fields are gone with it.
    api.coordination.patch_namespaced_lease(a.name, namespace, {"spec": {"holderIdentity": "x"}})
    async with asyncio.timeout(WAIT):
        await a.wait_until_not_leader()
    api.coordination.delete_namespaced_lease(a.name, namespace)
    async with asyncio.timeout(WAIT):
        second = await a.wait_until_leader()
    assert second == first + 1
    assert lease(api, namespace, a.name).metadata.annotations[EPOCH_ANNOTATION] == str(second)


async def test_a_leader_whose_lease_is_deleted_writes_it_back_in_the_same_term(
    make_elector: ElectorFactory, api: Api, namespace: str
) -> None:
    a = make_elector("replica-a")
    await a.start()
    async with asyncio.timeout(WAIT):
        epoch = await a.wait_until_leader()
    api.coordination.delete_namespaced_lease(a.name, namespace)
    # The API server creates a Lease on update, so the next renewal writes it back.
    # Safe: a rival's create and our update are ordered by etcd, the second one fails.
    async with asyncio.timeout(WAIT):
        while True:
            await asyncio.sleep(a.retry_period)
            try:
                obj = lease(api, namespace, a.name)
                break
            except client.ApiException as exc:
                assert exc.status == 404
    assert obj.spec.holder_identity == a.identity
    assert obj.metadata.annotations[EPOCH_ANNOTATION] == str(epoch)
    assert a.check() == epoch


def test_bad_timings_are_refused_naming_the_parameter(api: Api) -> None:
    with pytest.raises(ValueError, match=r"renew_deadline .* got 15"):
        LeaderElector(api, namespace="x", lease_duration=15, renew_deadline=15)
    with pytest.raises(ValueError, match=r"retry_period .* got 0"):
        LeaderElector(api, namespace="x", retry_period=0)
    with pytest.raises(ValueError, match=r"lease_duration .* got 0"):
        LeaderElector(api, namespace="x", lease_duration=0)
