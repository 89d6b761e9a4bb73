"""Fault injection with real parts: one operator whose only path to the real API server
is a TCP fault proxy, simulated IPMI BMCs over UDP, heartbeats written by the test.

Each case cues a fault at one point of a fence -- the credentials Secret read, the
status write of a fence result, the proof and placement writes after "off" verified, a
BMC that stops answering in the middle of a step -- and asserts that the host leaves the
step (phase/step changes, never wall time), that the writes land once the fault clears,
and that no VM leaves its host without proof (a sampler reads every VM and, when one
moved, the host it left, every 100 ms).  One operator and one BMC farm for the module.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hafence.kube import Api, KubeError, load_api
from hafence.lab.bmc import BmcFarm, SimulatedBmc
from hafence.lab.faultproxy import Fault, FaultProxy
from hafence.lab.netcut import server_of
from tests.operator.conftest import Heartbeats, OperatorProcess, dump, wait_for
from tests.operator.test_confirmation import host, status, vm
from tests.operator.test_hard_fencing import ipmi_agent

pytestmark = pytest.mark.controlplane
USER, PASSWORD = "admin", "s3cret-faults"
HOSTS = ("h1", "h2", "h3", "h4", "h5")
PROVEN = ("Rebooting", "ManuallyFenced", "SelfFenced")


class Sampler:
    """Every 100 ms: each VM's host; when one left a host, that host must be proven off
    (its proof is written before the placements that rely on it)."""

    def __init__(self, api: Api, namespace: str) -> None:
        self.api, self.namespace = api, namespace
        self.where: dict[str, str | None] = {}
        self.violations: list[str] = []
        self.moves = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self._sample()
            except KubeError:
                pass

    def _sample(self) -> None:
        for obj in self.api.list("HAVirtualMachine", self.namespace)["items"]:
            name = obj["metadata"]["name"]
            now = (obj.get("status") or {}).get("host")
            before = self.where.get(name)
            self.where[name] = now
            if before is None or now == before:
                continue
            self.moves += 1
            left = status(self.api, "Host", self.namespace, before)
            proof = (left.get("fencing") or {}).get("proof")
            if proof is None and left.get("phase") not in PROVEN:
                self.violations.append(f"{name} left {before} without proof: {left}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass
class Datacenter:
    api: Api
    namespace: str
    proxy: FaultProxy
    bmcs: BmcFarm
    heartbeats: Heartbeats
    operator: OperatorProcess
    sampler: Sampler
    outcomes: list[str] = field(default_factory=list)

    def host(self, name: str) -> dict[str, Any]:
        return status(self.api, "Host", self.namespace, name)

    def victim(self, vm_name: str) -> str:
        self.api.create("HAVirtualMachine", self.namespace, vm(vm_name))
        return wait_for(
            lambda: status(self.api, "HAVirtualMachine", self.namespace, vm_name).get("host"),
            what=f"{vm_name} placed",
        )

    def moved_off(self, vm_name: str, victim: str) -> str:
        def elsewhere() -> str | None:
            st = status(self.api, "HAVirtualMachine", self.namespace, vm_name)
            return st.get("host") if st.get("host") not in (None, victim) else None

        where = wait_for(elsewhere, timeout=90, what=f"{vm_name} off {victim}")
        # The sampler must judge the move before the host may come back (Up clears
        # the proof it checks).
        wait_for(lambda: self.sampler.where.get(vm_name) == where, what="the move sampled")
        return where

    def back_up(self, victim: str) -> None:
        # The fence completes with the power-on (the host then boots: a new boot ID).
        def on_done() -> str | None:
            f = self.host(victim).get("fencing") or {}
            result = f.get("lastResult") or "pending"
            return result if f.get("lastAction") == "on" and result.startswith("ok") else None

        # A power-on that failed (its Secret read hit the fault) is tried again.
        result = wait_for(on_done, what=f"{victim}: powered on again")
        assert self.bmcs[victim].power == "on"
        self.outcomes.append(f"{victim} power-on: {result}")
        self.heartbeats.start(victim)
        wait_for(lambda: self.host(victim).get("phase") == "Up", what=f"{victim} Up again")

    def steps(self, victim: str) -> Callable[[], list[tuple[str, str | None]]]:
        """A recorder of the (phase, step) pairs the host's status goes through."""
        seen: list[tuple[str, str | None]] = []
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(0.05):
                try:
                    st = self.host(victim)
                except KubeError:
                    continue
                pair = (st.get("phase", ""), (st.get("fencing") or {}).get("lastAction"))
                if not seen or seen[-1] != pair:
                    seen.append(pair)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()

        def done() -> list[tuple[str, str | None]]:
            stop.set()
            thread.join(5)
            return seen

        return done


@pytest.fixture(scope="module")
def dc(kubeconfig: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Datacenter]:
    api = load_api(kubeconfig)
    ns = f"faults-{uuid.uuid4().hex[:6]}"
    api.core.create_namespace({"metadata": {"name": ns}})
    api.core.create_namespaced_secret(
        ns, {"metadata": {"name": "ipmi"}, "stringData": {"username": USER, "password": PASSWORD}}
    )
    tmp = tmp_path_factory.mktemp("faults")
    proxy = FaultProxy(*server_of(Path(kubeconfig)))
    farm = BmcFarm()
    heartbeats = Heartbeats(api, ns)
    for name in HOSTS:
        bmc = farm.add(name, USER, PASSWORD)
        api.create("Host", ns, host(name))
        api.create("FenceAgent", ns, ipmi_agent(name, bmc.port, timeout=3, power_wait=3))
        heartbeats.start(name)
    cfg = proxy.kubeconfig(Path(kubeconfig), tmp / "operator.kubeconfig")
    # The leader lease outlasts every fault here: these cases are about fencing and
    # writes, not failover (tests/operator/test_hard_fencing.py has that).
    op = OperatorProcess(
        str(cfg),
        ns,
        tmp / "operator.log",
        "--leader-lease-duration",
        "30",
        "--leader-renew-deadline",
        "20",
    )
    sampler = Sampler(api, ns)
    d = Datacenter(api, ns, proxy, farm, heartbeats, op, sampler)
    try:
        wait_for(lambda: all(d.host(h).get("phase") == "Up" for h in HOSTS), what="hosts Up")
        yield d
    finally:
        sampler.close()
        print(dump(api, ns))
        print(
            "faults injected:",
            dict(proxy.injected),
            "| VM moves sampled:",
            sampler.moves,
            "| moves without proof:",
            len(sampler.violations),
        )
        for line in d.outcomes:
            print("outcome:", line)
        op.stop("kill")
        print(op.output()[-30000:])
        heartbeats.close()
        proxy.close()
        farm.close()
        api.close()


def _after_off(bmc: SimulatedBmc, nth: int, then: Callable[[], None]) -> None:
    """Call ``then`` inside the ``nth`` power-status request the BMC answers after it
    received "off" (1: the off step's own check, 2: the verify step's)."""
    original = bmc.get_power_state
    count = Counter[str]()
    before = bmc.action_names.count("off")  # the host may have been fenced before

    def hooked() -> str:
        if bmc.action_names.count("off") > before:
            count["after"] += 1
            if count["after"] == nth:
                then()
        return original()

    bmc.get_power_state = hooked  # type: ignore[method-assign]


def _first_status(bmc: SimulatedBmc, then: Callable[[], None]) -> None:
    """Call ``then`` inside the first power-status request the BMC answers from now on."""
    original = bmc.get_power_state
    fired = threading.Event()

    def hooked() -> str:
        if not fired.is_set():
            fired.set()
            then()
        return original()

    bmc.get_power_state = hooked  # type: ignore[method-assign]


def _restore_bmc(bmc: SimulatedBmc) -> None:
    bmc.__dict__.pop("get_power_state", None)
    bmc.dead = False
    bmc.stop_answering_after = None


def _check(d: Datacenter, vm_name: str, victim: str, seen: list[tuple[str, str | None]]) -> None:
    assert d.sampler.violations == [], d.sampler.violations
    final = d.host(victim)
    assert final["fencing"]["proof"] == "fence", final
    assert status(d.api, "HAVirtualMachine", d.namespace, vm_name)["restartCount"] >= 1
    # Every step the host was seen in was left: the last pair is the released phase.
    assert seen and seen[-1][0] in PROVEN, seen


def test_fault_at_the_secret_read_during_a_fence(dc: Datacenter) -> None:
    """Connections reset from the power-status check on: the status write of its result
    and the Secret reads of the first fence attempt fail; the attempt fails, the host
    leaves the step (Isolated, retry) and the next attempt fences once the path is back."""
    victim = dc.victim("vm-secret")
    log_start = len(dc.operator.output())
    bmc = dc.bmcs[victim]
    _first_status(bmc, lambda: dc.proxy.inject("reset", 4.0))
    record = dc.steps(victim)
    dc.heartbeats.stop(victim)
    try:
        dc.moved_off("vm-secret", victim)
        wait_for(lambda: "on" in bmc.action_names, what="power on after the release")
    finally:
        _restore_bmc(bmc)
    seen = record()
    _check(dc, "vm-secret", victim, seen)
    out = dc.operator.output()[log_start:]
    assert "no answer from the API server" in out, "the fault was not hit"
    # The first attempt's Secret reads failed (nothing else can fail it here): the host
    # left the step for Isolated, and the retry fenced it.
    assert "Isolated" in [phase for phase, _ in seen], seen
    dc.outcomes.append(f"secret-read/reset: steps {seen}")
    dc.back_up(victim)


@pytest.mark.parametrize("fault", ["reject", "stall"])
def test_fault_at_the_proof_and_placement_writes(dc: Datacenter, fault: Fault) -> None:
    """The fault starts as the BMC answers the verify step: the proof (Host status) and
    the placements that rely on it are written while the path is down.  They land once
    it is back, proof first (the sampler), none lost."""
    vm_name = f"vm-writes-{fault}"
    victim = dc.victim(vm_name)
    log_start = len(dc.operator.output())
    bmc = dc.bmcs[victim]
    _after_off(bmc, 2, lambda: dc.proxy.inject(fault, 3.0))
    record = dc.steps(victim)
    dc.heartbeats.stop(victim)
    try:
        dc.moved_off(vm_name, victim)
    finally:
        _restore_bmc(bmc)
    seen = record()
    assert dc.proxy.injected[fault] == 1, "the fault was never injected"
    _check(dc, vm_name, victim, seen)
    assert "Isolated" not in [phase for phase, _ in seen], seen  # the fence itself went on
    if fault == "reject":  # the proof write failed and was issued again, and landed
        out = dc.operator.output()[log_start:]
        assert f"Host {dc.namespace}/{victim} status not written" in out, "fault not hit"
    dc.outcomes.append(f"proof-writes/{fault}: steps {seen}")
    dc.back_up(victim)


def test_bmc_that_stops_answering_in_the_middle_of_a_step(dc: Datacenter) -> None:
    """The BMC takes "off" and goes deaf: the off step ends (failed: not verified), the
    host is Isolated with its VM still placed on it (no proof), and once the BMC answers
    again the retry fences it."""
    victim = dc.victim("vm-deaf")
    bmc = dc.bmcs[victim]
    bmc.stop_answering_after = 0  # answers the next chassis command, then nothing
    record = dc.steps(victim)
    dc.heartbeats.stop(victim)
    try:
        wait_for(lambda: dc.host(victim).get("phase") == "Isolated", timeout=90, what="Isolated")
        assert bmc.dead and "off" in bmc.action_names
        st = status(dc.api, "HAVirtualMachine", dc.namespace, "vm-deaf")
        assert st["host"] == victim, st  # S1: no proof, the VM stays
    finally:
        _restore_bmc(bmc)
    dc.moved_off("vm-deaf", victim)
    seen = record()
    _check(dc, "vm-deaf", victim, seen)
    assert ("Fencing", "off") in seen and ("Isolated", None) in [(p, None) for p, _ in seen], seen
    dc.outcomes.append(f"bmc-deaf: steps {seen}")
    dc.back_up(victim)
