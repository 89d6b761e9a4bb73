"""The outage record: a HostOutage per host outage, written by the operator through a
real fence (IPMI against a simulated BMC), readable with kubectl and `hafence outages`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hafence.kube import Api
from hafence.lab.bmc import BmcFarm
from hafence.lab.controlplane import ControlPlane
from tests.operator.conftest import wait_for
from tests.operator.test_confirmation import status, vm
from tests.operator.test_hard_fencing import datacenter, moved_off, placed

pytestmark = pytest.mark.controlplane
HAFENCE = str(Path(sys.executable).parent / "hafence")


@pytest.fixture
def bmcs() -> BmcFarm:
    with BmcFarm() as farm:
        yield farm


def report_running(api: Api, ns: str, name: str, host: str) -> None:
    """What the agent of ``host`` reports once the VM runs there."""
    epoch = status(api, "HAVirtualMachine", ns, name)["placementEpoch"]
    runtime = {"host": host, "state": "Running", "placementEpoch": epoch}
    api.patch("HAVirtualMachine", ns, name, {"status": {"runtime": runtime}}, status=True)


def test_a_fenced_outage_is_recorded_with_its_story(
    api: Api, namespace: str, bmcs: BmcFarm, heartbeats, start_operator, control_plane: ControlPlane
) -> None:
    datacenter(api, namespace, bmcs, heartbeats)
    api.create("HAVirtualMachine", namespace, vm("vm1"))
    op = start_operator("--pm-health-interval", "0")
    victim = placed(api, namespace)
    uid = api.get("Host", namespace, victim)["metadata"]["uid"]

    heartbeats.stop(victim)
    target = moved_off(api, namespace, victim)
    report_running(api, namespace, "vm1", target)
    heartbeats.start(victim)  # back from its reboot
    wait_for(lambda: status(api, "Host", namespace, victim).get("phase") == "Up", what="Up")

    def closed() -> dict | None:
        items = api.list("HostOutage", namespace)["items"]
        done = [o for o in items if (o.get("status") or {}).get("state") == "Closed"]
        ok = done and (done[0]["status"].get("recoverySeconds") is not None)
        return done[0] if ok else None

    outage = wait_for(closed, what="the outage record closed, with its recovery time")
    meta, spec, st = outage["metadata"], outage["spec"], outage["status"]
    assert spec["hostRef"]["name"] == victim and meta["name"] == spec["outageID"]
    assert spec["outageID"].startswith(f"{victim}-")
    (owner,) = meta["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Host", victim, uid)
    phases = [p["phase"] for p in st["phases"]]
    assert phases[0] == "Connecting" and phases[-1] == "Closed", phases
    # The phases the Host's status showed, in order (the core may pass through several
    # at once, e.g. SoftFencing -> NonResponsive -> Fencing without ssh: the last counts).
    order = ["Connecting", "SoftFencing", "NonResponsive", "Fencing", "Rebooting", "Closed"]
    assert phases == [p for p in order if p in phases] and "Rebooting" in phases, phases
    fence = [a for a in st["attempts"] if a["kind"] == "fence"]
    steps = [(a["step"], a["result"]) for a in fence]
    assert ("off", "off") in steps and ("verify", "off") in steps, steps
    for a in fence:
        assert a["agent"] == f"{victim}-ipmi" and a["agentType"] == "ipmilan"
        assert a["proxy"] == "operator" and a["durationSeconds"] >= 0 and a["level"] == 1
    # Without spec.ssh nothing is sent over SSH: no soft-fence attempt, a power check.
    assert st["attempts"][0]["kind"] == "power-status"
    assert not [a for a in st["attempts"] if a["kind"] == "soft-fence"]
    assert st["proof"]["type"] == "fence" and st["proof"]["agent"] == f"{victim}-ipmi"
    (moved,) = st["vms"]
    assert moved["name"] == "vm1" and moved["toHost"] == target and moved["runningTime"]
    assert st["recoverySeconds"] > 0 and st["durationSeconds"] >= st["recoverySeconds"] - 1

    table = control_plane.kubectl("get", "hostoutages", "-n", namespace).stdout  # the guide's
    header, row = table.splitlines()[:2]
    assert header.split() == ["NAME", "HOST", "START", "STATE", "PROOF", "DURATION"]
    assert row.split()[1:2] == [victim] and " Closed " in row and " fence " in row

    kubeconfig = str(control_plane.kubeconfig)
    out = subprocess.run(
        [HAFENCE, "outages", victim, "-n", namespace, "--kubeconfig", kubeconfig],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.splitlines()[0].startswith(f"outage {spec['outageID']} of host {victim}: Closed")
    for expected in (
        "phase    " + victim,
        f"fence attempt 1 level 1 off {victim}-ipmi (ipmilan) via operator: off in",
        f"proof    {victim:<10} fence by {victim}-ipmi",
        f"vm       vm1        Running on {target}",
        "time to recovery: ",
    ):
        assert expected in text, text
    listed = subprocess.run(
        [HAFENCE, "outages", "-n", namespace, "--list", "--kubeconfig", kubeconfig],
        capture_output=True,
        text=True,
        check=False,
    )
    assert listed.returncode == 0 and listed.stdout.startswith(f"outage {spec['outageID']}")
    # The operator's own log: one structured line per power step.
    assert f"outage={spec['outageID']}" in op.output()
    assert "result=off" in op.output() and f"agent={victim}-ipmi" in op.output()
