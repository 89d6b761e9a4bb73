"""The executor's status writes against the real API server: a run of VM writes, or of
Host writes, goes out at once, yet a Host's proof lands before the placements that
follow it, one object's writes keep their order, and the Events of the run follow its
writes.  Order is read from etcd's revisions (resourceVersions), not from clocks."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from hafence.api.host import HostStatus
from hafence.api.vm import HAVirtualMachineStatus
from hafence.controller.cache import Cache
from hafence.controller.executor import Executor
from hafence.core import messages as m
from hafence.kube import Api
from tests.agent.helpers import make_host, make_vm

pytestmark = pytest.mark.controlplane

VMS = ("v1", "v2", "v3")


class _Leader:
    def check(self) -> int:
        return 1


class _Recorder:
    """Stands for the EventRecorder: notes, as each Event is posted, where the cache
    says its VM is (the write it reports must have landed by then)."""

    def __init__(self, cache: Cache, namespace: str) -> None:
        self.cache, self.namespace = cache, namespace
        self.posted: list[tuple[str, str | None]] = []

    def post(self, obj: dict[str, Any], *_: Any) -> None:
        name = obj["metadata"]["name"]
        now = self.cache.get("HAVirtualMachine", self.namespace, name) or {}
        self.posted.append((name, (now.get("status") or {}).get("host")))


def _rv(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["resourceVersion"])


def _executor(api: Any, namespace: str, cache: Cache, recorder: _Recorder) -> Executor:
    """An executor for status writes only (any power operation fails the test); ``api``:
    an Api, or a stand-in forwarding to one."""

    async def never(*_: Any) -> None:
        raise AssertionError("no power operation here")

    return Executor(api, namespace, cache, _Leader(), recorder, None, never, never)  # type: ignore[arg-type]


def test_vm_writes_go_out_together_but_the_proof_lands_first(api: Api, namespace: str) -> None:
    for h in ("h1", "h2"):
        make_host(api, namespace, h)
    for vm in VMS:
        make_vm(api, namespace, vm, ["/bin/sleep", "1d"], host="h1")
    cache = Cache()
    for vm in VMS:
        cache.put("HAVirtualMachine", api.get("HAVirtualMachine", namespace, vm))
    for h in ("h1", "h2"):
        cache.put("Host", api.get("Host", namespace, h))
    recorder = _Recorder(cache, namespace)
    executor = _executor(api, namespace, cache, recorder)

    def unknown(vm: str) -> m.WriteVMStatus:
        status = HAVirtualMachineStatus(phase="Unknown", host="h1", placement_epoch=1)
        return m.WriteVMStatus(vm, status, placement_changed=False)

    def moved(vm: str) -> list[m.Action]:
        rv = cache.get("HAVirtualMachine", namespace, vm)["metadata"]["resourceVersion"]  # type: ignore[index]
        status = HAVirtualMachineStatus(phase="Scheduled", host="h2", placement_epoch=2)
        return [
            m.WriteVMStatus(vm, status, True, rv, view_host="h1", view_epoch=1),
            m.EmitEvent("HAVirtualMachine", vm, "HAVMRestarted", f"{vm} placed on h2"),
            m.PlaceVM(vm, "h2", 2, "h1", True),
        ]

    proof = m.WriteHostStatus("h1", HostStatus(phase="Rebooting"))
    actions: list[m.Action] = [unknown(vm) for vm in VMS]
    actions.append(proof)
    for vm in VMS:
        actions += moved(vm)
    outcomes = asyncio.run(executor.run(actions))

    written = [a for a in actions if isinstance(a, (m.WriteVMStatus, m.WriteHostStatus))]
    assert [(o.kind, o.name) for o in outcomes] == [
        ("Host" if isinstance(a, m.WriteHostStatus) else "HAVirtualMachine", getattr(a, "vm", "h1"))
        for a in written
    ], "an outcome per write, in the order of the writes"
    assert all(isinstance(o, m.WriteLanded) for o in outcomes), outcomes
    host = api.get("Host", namespace, "h1")
    assert host["status"]["phase"] == "Rebooting"
    for vm in VMS:
        obj = api.get("HAVirtualMachine", namespace, vm)
        assert obj["status"]["host"] == "h2" and obj["status"]["placementEpoch"] == 2, (
            f"{vm}: its placement did not land after its Unknown write"
        )
        assert _rv(obj) > _rv(host), f"{vm} was placed before the host's proof landed"
    assert recorder.posted == [(vm, "h2") for vm in VMS], "an Event went out before its write"


class _HostsAtOnce:
    """The real Api, but its first ``n`` Host status patches wait until all ``n`` are in
    flight: a writer sending them one at a time never gets past the first."""

    def __init__(self, api: Api, n: int) -> None:
        self._api = api
        self._barrier = threading.Barrier(n, timeout=20)
        self._left = n
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._api, name)

    def patch(self, kind: str, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            wait = kind == "Host" and self._left > 0
            self._left -= wait
        if wait:
            self._barrier.wait()
        return self._api.patch(kind, *args, **kwargs)


def test_host_writes_go_out_together_and_placements_wait_for_them(api: Api, namespace: str) -> None:
    failed = ("h1", "h2")
    for h in (*failed, "h3"):
        make_host(api, namespace, h)
    for vm, h in zip(("v1", "v2"), failed, strict=True):
        make_vm(api, namespace, vm, ["/bin/sleep", "1d"], host=h)
    cache = Cache()
    for vm in ("v1", "v2"):
        cache.put("HAVirtualMachine", api.get("HAVirtualMachine", namespace, vm))
    for h in (*failed, "h3"):
        cache.put("Host", api.get("Host", namespace, h))
    hosts_at_once = _HostsAtOnce(api, len(failed))
    executor = _executor(hosts_at_once, namespace, cache, _Recorder(cache, namespace))

    def placed(vm: str, was: str) -> m.WriteVMStatus:
        rv = cache.get("HAVirtualMachine", namespace, vm)["metadata"]["resourceVersion"]  # type: ignore[index]
        status = HAVirtualMachineStatus(phase="Scheduled", host="h3", placement_epoch=2)
        return m.WriteVMStatus(vm, status, True, rv, view_host=was, view_epoch=1)

    actions: list[m.Action] = [
        *(m.WriteHostStatus(h, HostStatus(phase="Fencing")) for h in failed),
        m.EmitEvent("Host", "h1", "FenceOperationStarted", "h1"),
        *(m.WriteHostStatus(h, HostStatus(phase="Rebooting")) for h in failed),
        *(placed(vm, h) for vm, h in zip(("v1", "v2"), failed, strict=True)),
    ]
    outcomes = asyncio.run(executor.run(actions))

    assert [o.name for o in outcomes] == ["h1", "h2", "h1", "h2", "v1", "v2"], outcomes
    assert all(isinstance(o, m.WriteLanded) for o in outcomes), outcomes
    hosts = [api.get("Host", namespace, h) for h in failed]
    assert [h["status"]["phase"] for h in hosts] == ["Rebooting", "Rebooting"], (
        "a host's second write went out with or before its first"
    )
    for vm in ("v1", "v2"):
        obj = api.get("HAVirtualMachine", namespace, vm)
        assert obj["status"]["host"] == "h3"
        assert _rv(obj) > max(_rv(h) for h in hosts), f"{vm} placed before every proof landed"
