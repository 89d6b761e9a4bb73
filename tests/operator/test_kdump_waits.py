"""The operator's side of a kdump level (controller/kdump.py): Debian's real
fence_kdump_send, from a virtual host's own loopback address, to the real listener; the
Lease re-read against the real API server.  What counts and what is refused."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hafence.controller import clock
from hafence.controller.cache import Cache
from hafence.controller.kdump import KdumpWaits
from hafence.controller.lease_guard import LeaseGuard
from hafence.core import messages as m
from hafence.fencing.kdump import KdumpListener
from hafence.kube import Api
from hafence.lab.kdump import SENDER, KdumpSender

pytestmark = [
    pytest.mark.controlplane,
    pytest.mark.skipif(not SENDER.exists(), reason="Debian's fence_kdump_send not installed"),
]
HV1, HV2 = "127.0.0.10", "127.0.0.11"  # the lab's virtual hosts' kdump addresses


def _obj(kind: str, ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"namespace": ns, "name": name}, "spec": spec}


def _cache(ns: str, port: int, **agent: Any) -> Cache:
    cache = Cache()
    for host in ("hv-1", "hv-2"):
        cache.put("Host", _obj("Host", ns, host, {"address": "127.0.0.1"}))
    spec = {"hostRef": {"name": "hv-1"}, "type": "kdump", "address": HV1, "port": port}
    cache.put("FenceAgent", _obj("FenceAgent", ns, "hv-1-kdump", spec | agent))
    return cache


async def _wait(
    api: Api, ns: str, cache: Cache, listener: KdumpListener | None, wait: float = 5.0
) -> m.KdumpResult:
    results: list[m.Input] = []
    answered = asyncio.Event()

    async def feed(inp: m.Input) -> None:
        results.append(inp)
        answered.set()

    async def observe(lease: dict[str, Any]) -> None:
        raise AssertionError("no Lease exists: nothing to observe")

    waits = KdumpWaits(ns, cache, feed, LeaseGuard(api, ns, cache, observe), listener)
    action = m.WaitForKdump("hv-1", "op-1", "hv-1-1", 1, 0, ("hv-1-kdump",), clock.now(), wait)
    waits.start(action)
    await asyncio.wait_for(answered.wait(), wait + 10)
    (result,) = results
    assert isinstance(result, m.KdumpResult) and result.op_id == "op-1"
    return result


async def test_a_message_from_the_declared_address_is_heard(api: Api, namespace: str) -> None:
    async with KdumpListener(port=0, clock=clock.now) as kd:
        sender = KdumpSender(HV1, ("127.0.0.1", kd.port))
        try:
            result = await _wait(api, namespace, _cache(namespace, kd.port), kd)
        finally:
            sender.stop()
    assert result.seen and result.agent == "hv-1-kdump", result
    assert f"from {HV1} (hv-1-kdump)" in result.message


async def test_another_source_address_is_not_proof(api: Api, namespace: str) -> None:
    async with KdumpListener(port=0, clock=clock.now) as kd:
        sender = KdumpSender(HV2, ("127.0.0.1", kd.port))  # hv-2 crashed, not hv-1
        try:
            result = await _wait(api, namespace, _cache(namespace, kd.port), kd, wait=2.5)
        finally:
            sender.stop()
        assert kd.ignored["address"] >= 1
    assert not result.seen and f"no fence_kdump message from {HV1} within 2.5s" in result.message


async def test_a_message_from_before_the_wait_is_not_proof(api: Api, namespace: str) -> None:
    async with KdumpListener(port=0, clock=clock.now) as kd:
        kd.watch(HV1)
        sender = KdumpSender(HV1, ("127.0.0.1", kd.port))
        for _ in range(100):
            if kd.last_message(HV1) is not None:
                break
            await asyncio.sleep(0.05)
        sender.stop()  # the dump is over: the host may be rebooting into its VMs
        assert kd.last_message(HV1) is not None
        result = await _wait(api, namespace, _cache(namespace, kd.port), kd, wait=1.5)
    assert not result.seen, result


async def test_misdeclared_agents_fail_saying_why(api: Api, namespace: str) -> None:
    async with KdumpListener(port=0, clock=clock.now) as kd:
        wrong_port = await _wait(api, namespace, _cache(namespace, kd.port + 1), kd)
        assert not wrong_port.seen and f"the operator's listener is on UDP port {kd.port}" in (
            wrong_port.message
        )
        shared = _cache(namespace, kd.port)
        spec = {"hostRef": {"name": "hv-2"}, "type": "kdump", "address": HV1}
        shared.put("FenceAgent", _obj("FenceAgent", namespace, "hv-2-kdump", spec))
        clash = await _wait(api, namespace, shared, kd)
        assert not clash.seen and "also declared for host hv-2" in clash.message
    no_listener = await _wait(api, namespace, _cache(namespace, 7410), None)
    assert not no_listener.seen and "--kdump-listen" in no_listener.message
