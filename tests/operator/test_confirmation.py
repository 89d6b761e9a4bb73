"""An isolated host (no heartbeat, no power management) keeps its VMs until a person
confirms; the `kubectl annotate` path and the FenceConfirmation verdicts."""

from __future__ import annotations

from typing import Any

import pytest

from hafence.kube import Api
from tests.operator.conftest import wait_for

pytestmark = pytest.mark.controlplane


def host(name: str, cluster: str = "c1") -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "address": "127.0.0.1",
            "cluster": cluster,
            "capacity": {"cpu": 8, "memoryMiB": 8192},
        },
    }


def vm(name: str, ha: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "highlyAvailable": ha,
            "priority": "High",
            "resources": {"cpu": 1, "memoryMiB": 512},
            "placement": {"cluster": "c1"},
            "runtime": {"driver": "process", "process": {"command": ["sleep", "infinity"]}},
        },
    }


def status(api: Api, kind: str, ns: str, name: str) -> dict[str, Any]:
    return api.get(kind, ns, name).get("status") or {}


def test_isolated_host_waits_for_the_annotation(
    api: Api, namespace: str, heartbeats, start_operator, control_plane
) -> None:
    for name in ("h1", "h2"):
        api.create("Host", namespace, host(name))
        heartbeats.start(name)
    api.create("HAVirtualMachine", namespace, vm("vm1"))
    op = start_operator()
    wait_for(
        lambda: all(status(api, "Host", namespace, h).get("phase") == "Up" for h in ("h1", "h2")),
        what="hosts Up",
    )
    victim = wait_for(
        lambda: status(api, "HAVirtualMachine", namespace, "vm1").get("host"), what="vm1 placed"
    )
    other = "h2" if victim == "h1" else "h1"

    heartbeats.stop(victim)
    wait_for(
        lambda: status(api, "Host", namespace, victim).get("phase") == "Isolated",
        what=f"{victim} Isolated",
    )
    available = {c["type"]: c for c in status(api, "Host", namespace, victim)["conditions"]}
    assert available["Available"]["status"] == "False"
    assert available["Available"]["reason"] == "Isolated"
    assert available["Available"]["lastTransitionTime"]
    assert available["Available"]["observedGeneration"] == 1
    # S1: heartbeat loss alone never moves a VM.  (The VM's status is written right
    # after the Host's, in the same batch: it may land a moment later.)
    vm_status = wait_for(
        lambda: (
            (s := status(api, "HAVirtualMachine", namespace, "vm1"))["phase"] == "Unknown" and s
        ),
        what="vm1 Unknown",
    )
    assert vm_status["host"] == victim
    assert vm_status["phase"] == "Unknown"

    control_plane.kubectl(
        "annotate",
        "-n",
        namespace,
        "host",
        victim,
        "hafence.io/confirm-rebooted=power cable pulled, checked on site",
    )
    confirmations = wait_for(
        lambda: api.list("FenceConfirmation", namespace)["items"], what="a FenceConfirmation"
    )
    assert len(confirmations) == 1
    fc = confirmations[0]
    assert fc["spec"] == {
        "hostRef": {"name": victim},
        "reason": "power cable pulled, checked on site",
    }
    wait_for(
        lambda: (
            status(api, "FenceConfirmation", namespace, fc["metadata"]["name"]).get("phase")
            == "Applied"
        ),
        what="confirmation Applied",
    )
    wait_for(
        lambda: status(api, "HAVirtualMachine", namespace, "vm1").get("host") == other,
        what="vm1 re-placed",
    )
    assert status(api, "Host", namespace, victim)["phase"] == "ManuallyFenced"
    annotations = api.get("Host", namespace, victim)["metadata"].get("annotations") or {}
    assert "hafence.io/confirm-rebooted" not in annotations
    described = control_plane.kubectl("describe", "host", victim, "-n", namespace).stdout
    for reason in ("HostIsolated", "ConfirmationApplied"):
        assert reason in described, described
    assert op.proc.poll() is None, op.output()


def test_confirmation_for_an_up_host_is_rejected(
    api: Api, namespace: str, heartbeats, start_operator
) -> None:
    api.create("Host", namespace, host("h1"))
    heartbeats.start("h1")
    start_operator()
    wait_for(lambda: status(api, "Host", namespace, "h1").get("phase") == "Up", what="Up")
    api.create(
        "FenceConfirmation",
        namespace,
        {"metadata": {"name": "oops"}, "spec": {"hostRef": {"name": "h1"}, "reason": "wrong host"}},
    )
    st = wait_for(
        lambda: (
            status(api, "FenceConfirmation", namespace, "oops")
            if status(api, "FenceConfirmation", namespace, "oops").get("phase")
            else None
        ),
        what="verdict",
    )
    assert st["phase"] == "Rejected"
    assert "h1" in st["message"] and "Up" in st["message"]
    api.create(
        "FenceConfirmation",
        namespace,
        {"metadata": {"name": "ghost"}, "spec": {"hostRef": {"name": "nope"}, "reason": "typo"}},
    )
    st = wait_for(
        lambda: (
            status(api, "FenceConfirmation", namespace, "ghost")
            if status(api, "FenceConfirmation", namespace, "ghost").get("phase")
            else None
        ),
        what="verdict",
    )
    assert st["phase"] == "Rejected" and "does not exist" in st["message"]
