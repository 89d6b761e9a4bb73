"""Fault injection with real parts (issue #18): real agents, real VM processes, a TCP
fault proxy on the operator's path to the API server and on each agent's.

One lab for the module (``fault_lab.py``: three virtual hosts, simulated IPMI BMCs over
UDP, sshd, the 100 ms split-brain sampler of VM processes, a watch of every Host and VM
version).  Each case cues one fault at one point:

- the operator's path reset at the BMC's power-status check of a fence: the status
  write of its result and the Secret reads of the soft fence that follows fail;
- the operator's path rejected or stalled as the BMC answers the verify step: the
  proof and the placements that rely on it are written while it is down;
- a BMC that takes "off" and then stops answering, in the middle of the off step;
- an agent's path reset or stalled while it stops a VM: its Stopped report is held;
- the operator's path reset for longer than kopf's first retries: its watches must
  come back and see what changed meanwhile and after.

Each asserts that the host leaves every step (the fence reaches its proof and the
power-on, phase and step changes from the watch, never wall time), that the writes land
once the fault clears, that no VM ever runs in two processes at once (the sampler) and
that no VM leaves a host without proof (the watch, in resourceVersion order).
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from hafence.lab.bmc import SimulatedBmc
from hafence.lab.faultproxy import Fault, FaultProxy
from hafence.lab.resources import CLUSTER
from tests.operator.fault_lab import FaultLab, start, wait_file

pytestmark = pytest.mark.controlplane

# Every fault on a path ends before an agent's 3 s lease, seen from the other side of
# it, runs out with the operator's 2 s connecting grace on top: the cases fence only the
# host they mean to.
OUTAGE = 2.0


@pytest.fixture(scope="module")
def fl(kubeconfig: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultLab]:
    yield from start(kubeconfig, tmp_path_factory.mktemp("faults"))


def inject(fl: FaultLab, proxy: FaultProxy, fault: Fault, what: str, seconds: float | None) -> None:
    proxy.inject(fault, seconds)
    fl.tally.faults[f"{what} / {fault}"] += 1


# -- cues inside the BMC ---------------------------------------------------------------
def on_status(bmc: SimulatedBmc, nth_after_off: int | None, then: Callable[[], None]) -> None:
    """Call ``then`` inside a power-status request the BMC answers: the first from now
    on (``None``), or the ``nth`` after it received an "off" from now on (1: the off
    step's own check, 2: the verify step's)."""
    original = bmc.get_power_state
    offs = bmc.action_names.count("off")
    count = Counter[str]()
    lock = threading.Lock()

    def hooked() -> str:
        with lock:
            if nth_after_off is None:
                count["seen"] += 1
                fire = count["seen"] == 1
            elif bmc.action_names.count("off") > offs:
                count["after"] += 1
                fire = count["after"] == nth_after_off
            else:
                fire = False
        if fire:
            then()
        return original()

    bmc.get_power_state = hooked  # type: ignore[method-assign]


def restore_bmc(bmc: SimulatedBmc) -> None:
    bmc.__dict__.pop("get_power_state", None)
    bmc.dead = False
    bmc.stop_answering_after = None


# -- the cases ---------------------------------------------------------------------------
def test_operator_watches_come_back_after_an_outage(fl: FaultLab) -> None:
    """The operator's path is reset; a VM created during the outage and one created
    after it are both placed and run: kopf's watches came back and missed nothing."""
    fl.lab.wait_steady()
    log0, rv0 = len(fl.operator_log()), fl.history.last_rv()
    checker = fl.lab.checker
    assert checker is not None

    def vm(name: str) -> None:
        fl.api.create(
            "HAVirtualMachine",
            fl.namespace,
            {
                "metadata": {"name": name},
                "spec": {
                    "highlyAvailable": True,
                    "resources": {"cpu": 1, "memoryMiB": 64},
                    "placement": {"cluster": CLUSTER},
                    "runtime": {"driver": "process", "process": {"command": ["/bin/sleep", "1d"]}},
                },
            },
        )

    inject(fl, fl.proxy, "reset", "operator, whole path", None)
    try:
        vm("fx-during")
        time.sleep(OUTAGE)  # the outage: the length of a fault, not an assertion
    finally:
        fl.proxy.restore()
    vm("fx-after")
    fl.wait(
        "both VMs running",
        lambda: all(checker.running().get(n) for n in ("fx-during", "fx-after")),
        30,
    )
    fl.lab.wait_steady()
    fl.check_safety()
    assert "escalating" not in fl.operator_log()[log0:], "a kopf request gave up"
    fl.tally.moves += fl.history.moves(rv0)
    fl.tally.cases.append("operator outage / reset: both VMs placed and running")


# The VM of the stop-report case: it tells the test when its agent stops it (SIGTERM)
# and exits when the test says so (or at the agent's SIGKILL).  One process, no
# children: the sampler counts a VM's processes by their marker.
CUED_VM = """
import os, signal, sys, time
ready, cue, go = sys.argv[1], sys.argv[2], sys.argv[3]
def term(*_):
    open(cue, "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.01)
    os._exit(0)
signal.signal(signal.SIGTERM, term)
open(ready, "w").close()
while True:
    time.sleep(3600)
"""


@pytest.mark.parametrize("fault", ["reset", "stall"])
def test_fault_during_the_agents_stop_report(fl: FaultLab, fault: Fault) -> None:
    """The agent of hv-1 stops a VM (Halted; the VM takes its time, in its SIGTERM
    handler); the operator un-places it and, made runnable again on hv-3 only
    (hostSelector), holds it for hv-1 (status.lastHost).  The VM exits as hv-1's path
    to the API server is reset or stalled: the Stopped report cannot land and the VM
    stays held by hv-1; once the fault clears the report lands and the VM runs on
    hv-3, never in two processes at once."""
    fl.lab.wait_steady()
    old, new = "hv-1", "hv-3"  # racks r1 and r2
    name = f"fx-stop-{fault}"  # not "ha-": the fence cases pick victims by their ha- VMs
    ready, cue, go = (fl.tmp / f"{name}.{what}" for what in ("ready", "stopping", "go"))
    fl.api.create(
        "HAVirtualMachine",
        fl.namespace,
        {
            "metadata": {"name": name},
            "spec": {
                "highlyAvailable": True,
                "resources": {"cpu": 1, "memoryMiB": 64},
                "placement": {"cluster": CLUSTER, "preferredHosts": [old]},
                "runtime": {
                    "driver": "process",
                    "process": {
                        "command": [sys.executable, "-c", CUED_VM, str(ready), str(cue), str(go)]
                    },
                },
            },
        },
    )
    checker = fl.lab.checker
    assert checker is not None
    fl.wait(f"{name} running on {old}", lambda: checker.running().get(name) == [old])
    assert wait_file(ready, 30), "the VM never got ready"
    log0, rv0 = len(fl.agent_log(old)), fl.history.last_rv()
    fl.api.patch(
        "HAVirtualMachine",
        fl.namespace,
        name,
        {"spec": {"runStrategy": "Halted", "placement": {"hostSelector": {"rack": "r2"}}}},
    )
    proxy = fl.agent_proxy(old)
    assert wait_file(cue, 30), "the agent never stopped the VM"
    # The agent waits for the VM to go (it is in its SIGTERM handler): the operator
    # un-places it (Halted), then may place it again, on hv-3 only.
    fl.wait(
        "Halted taken in",
        lambda: (st := fl.vm(name)).get("phase") == "Down" and st.get("lastHost") == old,
    )
    fl.api.patch("HAVirtualMachine", fl.namespace, name, {"spec": {"runStrategy": "Always"}})
    fl.wait(
        f"the operator holding it for {old}'s report",
        lambda: (st := fl.vm(name)).get("phase") == "Pending" and st.get("lastHost") == old,
    )
    inject(fl, proxy, fault, "agent, at its stop report", None)
    try:
        go.touch()  # the VM exits: the agent's Stopped report meets the fault
        fl.wait(f"{name}'s process gone", lambda: not checker.running().get(name), 10)
        if fault == "reset":
            fl.wait(
                "the report failing",
                lambda: (
                    f"writing status.runtime of {fl.namespace}/{name}" in fl.agent_log(old)[log0:]
                ),
                5,
            )
        else:
            time.sleep(0.5)  # the report is sent, held in the stalled path
        # The VM is stopped; its report has not landed: it stays held by hv-1.
        st = fl.vm(name)
        assert st.get("host") is None and st.get("lastHost") == old, st
        assert (st.get("runtime") or {}).get("state") == "Running", st
    finally:
        proxy.restore()
    fl.wait(f"{name} running on {new}", lambda: checker.running().get(name) == [new], 30)
    fl.check_safety()
    reports = [
        (v.status.get("runtime") or {}) for v in fl.history.of("HAVirtualMachine", name, rv0)
    ]
    assert any(r.get("host") == old and r.get("state") == "Stopped" for r in reports), reports
    fl.tally.moves += fl.history.moves(rv0)
    fl.tally.cases.append(f"agent stop report / {fault}: Stopped landed after the fault")
    # Pinned to hv-3: it would hold a fence case's VMs' host back.  Stopped for good.
    fl.api.patch("HAVirtualMachine", fl.namespace, name, {"spec": {"runStrategy": "Halted"}})


def test_fault_at_the_secret_reads_during_a_fence(fl: FaultLab) -> None:
    victim, vms = fl.victim()
    log0, rv0 = len(fl.operator_log()), fl.history.last_rv()
    bmc = fl.bmc(victim)
    on_status(
        bmc, None, lambda: inject(fl, fl.proxy, "reset", "operator, at a fence's check", OUTAGE)
    )
    assert fl.lab.dc is not None
    fl.lab.dc.cut_network(victim)
    try:
        fl.fence(victim, vms, "secret reads / reset", log0, rv0)
    finally:
        restore_bmc(bmc)
    out = fl.operator_log()[log0:]
    assert fl.tally.faults["operator, at a fence's check / reset"] == 1, "never injected"
    # The BMC credentials' Secret read of the fence met the fault (tried again, or its
    # step failed and the fence was retried: either way the fence went on).
    assert f"Secret {fl.namespace}/{victim}-bmc unreadable" in out, "the fault hit no read"


@pytest.mark.parametrize("fault", ["reject", "stall"])
def test_fault_at_the_proof_and_placement_writes(fl: FaultLab, fault: Fault) -> None:
    victim, vms = fl.victim()
    log0, rv0 = len(fl.operator_log()), fl.history.last_rv()
    bmc = fl.bmc(victim)
    on_status(bmc, 2, lambda: inject(fl, fl.proxy, fault, "operator, at the verify", OUTAGE))
    assert fl.lab.dc is not None
    fl.lab.dc.cut_network(victim)
    try:
        fl.fence(victim, vms, f"proof and placement writes / {fault}", log0, rv0)
    finally:
        restore_bmc(bmc)
    assert fl.tally.faults[f"operator, at the verify / {fault}"] == 1, "never injected"
    steps = fl.history.steps(victim, rv0)
    assert "Isolated" not in [p for p, _, _ in steps], steps  # the fence itself went on
    if fault == "reject":  # the proof write failed, was issued again, and landed
        assert f"Host {fl.namespace}/{victim} status not written" in fl.operator_log()[log0:]


def test_bmc_that_stops_answering_in_the_middle_of_a_step(fl: FaultLab) -> None:
    """The BMC takes "off" (the host loses power) and goes deaf: the off step ends
    failed (not verified), the host is Isolated with its VMs still placed on it (no
    proof), and once the BMC answers again the retry fences it."""
    victim, vms = fl.victim()
    log0, rv0 = len(fl.operator_log()), fl.history.last_rv()
    bmc = fl.bmc(victim)
    bmc.stop_answering_after = 0  # answers the next chassis command, then nothing
    fl.tally.faults["BMC deaf after off"] += 1
    assert fl.lab.dc is not None
    fl.lab.dc.cut_network(victim)
    try:
        fl.wait(f"{victim} Isolated", lambda: fl.host(victim).get("phase") == "Isolated", 90)
        assert bmc.dead and "off" in bmc.action_names
        for n in vms:
            assert fl.vm(n)["host"] == victim, fl.vm(n)  # S1: no proof, the VMs stay
    finally:
        restore_bmc(bmc)
    fl.fence(victim, vms, "BMC deaf mid-step", log0, rv0)
    steps = fl.history.steps(victim, rv0)
    assert any(p == "Fencing" and a == "off" for p, a, _ in steps), steps
