"""Hard fencing through real IPMI (pyghmi's client against simulated BMCs on loopback),
with one operator, with two replicas whose leader is killed, and with a restart in the
middle of a fence.  Heartbeats are written by the test so it decides when a host is
silent; assertions are on resources, Events and the BMCs' recorded actions."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from hafence.kube import Api
from hafence.lab.bmc import BmcFarm
from tests.operator.conftest import wait_for
from tests.operator.test_confirmation import host, status, vm

pytestmark = pytest.mark.controlplane
USER, PASSWORD = "admin", "s3cret-ipmi"


@pytest.fixture
def bmcs() -> Iterator[BmcFarm]:
    with BmcFarm() as farm:
        yield farm


def ipmi_agent(name: str, port: int, timeout: int = 10, power_wait: int = 15) -> dict[str, Any]:
    """The FenceAgent of host ``name``: its simulated BMC on ``port``, Secret "ipmi"."""
    return {
        "metadata": {"name": f"{name}-ipmi"},
        "spec": {
            "hostRef": {"name": name},
            "type": "ipmilan",
            "address": "127.0.0.1",
            "port": port,
            "credentialsSecretRef": {"name": "ipmi"},
            "options": "lanplus=1",
            "timeoutSeconds": timeout,
            "powerWaitSeconds": power_wait,
        },
    }


def datacenter(
    api: Api,
    ns: str,
    bmcs: BmcFarm,
    heartbeats,
    names=("h1", "h2", "h3"),
    power_delay: float = 0.0,
    timeout: int = 10,
) -> None:
    api.core.create_namespaced_secret(
        ns, {"metadata": {"name": "ipmi"}, "stringData": {"username": USER, "password": PASSWORD}}
    )
    for name in names:
        bmc = bmcs.add(name, USER, PASSWORD, power_delay=power_delay)
        api.create("Host", ns, host(name))
        api.create("FenceAgent", ns, ipmi_agent(name, bmc.port, timeout))
        heartbeats.start(name)


def moved_off(api: Api, ns: str, victim: str, name: str = "vm1") -> str:
    def elsewhere() -> str | None:
        where = status(api, "HAVirtualMachine", ns, name).get("host")
        return where if where and where != victim else None

    return wait_for(elsewhere, timeout=90, what=f"{name} restarted off {victim}")


def placed(api: Api, ns: str, name: str = "vm1") -> str:
    return wait_for(
        lambda: status(api, "HAVirtualMachine", ns, name).get("host"), what=f"{name} placed"
    )


def events(api: Api, ns: str, name: str) -> list[str]:
    items = api.core.list_namespaced_event(ns, field_selector=f"involvedObject.name={name}")
    return [e.reason for e in items.items]


def test_network_cut_with_working_bmc(
    api: Api, namespace: str, bmcs: BmcFarm, heartbeats, start_operator
) -> None:
    datacenter(api, namespace, bmcs, heartbeats)
    api.create("HAVirtualMachine", namespace, vm("vm1"))
    api.create("HAVirtualMachine", namespace, vm("scratch", ha=False))
    op = start_operator()
    victim = placed(api, namespace)
    scratch_host = placed(api, namespace, "scratch")

    heartbeats.stop(victim)  # network cut: the BMC still answers
    moved_off(api, namespace, victim)
    st = status(api, "Host", namespace, victim)
    assert st["phase"] in ("Rebooting", "Up"), st
    # off, then on again (oVirt's restart): never a blind "reboot" command.
    wait_for(lambda: "on" in bmcs[victim].action_names, what="power on after the release")
    actions = bmcs[victim].action_names
    assert actions[0] == "off" and actions.index("off") < actions.index("on"), actions
    for name in ("h1", "h2", "h3"):
        if name != victim:
            assert bmcs[name].action_names == [], name
    vm_status = status(api, "HAVirtualMachine", namespace, "vm1")
    assert vm_status["placementEpoch"] > 1 and vm_status["restartCount"] == 1
    if scratch_host == victim:  # a non-HA VM is not restarted elsewhere
        wait_for(
            lambda: status(api, "HAVirtualMachine", namespace, "scratch").get("phase") == "Down",
            what="scratch Down",
        )
        assert status(api, "HAVirtualMachine", namespace, "scratch").get("host") in (None, "")
    reasons = events(api, namespace, victim)
    for reason in ("HostConnecting", "FenceOperationStarted", "FenceOperationSucceeded"):
        assert reason in reasons, reasons
    # The host comes back from its reboot with a new boot ID: Up again.
    heartbeats.start(victim)
    wait_for(
        lambda: status(api, "Host", namespace, victim).get("phase") == "Up",
        what=f"{victim} Up again",
    )
    assert op.proc.poll() is None
    assert PASSWORD not in op.output()


def _leader(api: Api, ns: str) -> str | None:
    lease = api.coordination.read_namespaced_lease("hafence-operator-leader", ns)
    return lease.spec.holder_identity


def test_leader_killed_mid_outage_the_standby_finishes(
    api: Api, namespace: str, bmcs: BmcFarm, heartbeats, start_operator
) -> None:
    datacenter(api, namespace, bmcs, heartbeats)
    api.create("HAVirtualMachine", namespace, vm("vm1"))
    ops = {name: start_operator("--identity", name, name=name) for name in ("op-a", "op-b")}
    victim = placed(api, namespace)
    leader = wait_for(lambda: _leader(api, namespace), what="a leader")
    standby = "op-b" if leader == "op-a" else "op-a"

    heartbeats.stop(victim)
    wait_for(
        lambda: status(api, "Host", namespace, victim).get("phase") == "Connecting",
        what="outage detected",
    )
    print("victim", victim, "leader", leader)
    outage = status(api, "Host", namespace, victim)["fencing"]["outageID"]
    ops[leader].stop("kill")  # no clean release: the standby waits out the lease
    moved_off(api, namespace, victim)
    assert _leader(api, namespace) == standby
    assert status(api, "Host", namespace, victim)["fencing"]["outageID"] == outage
    assert bmcs[victim].action_names.count("off") >= 1
    assert status(api, "HAVirtualMachine", namespace, "vm1")["restartCount"] == 1
    assert "became leader" in ops[standby].output()


def test_operator_restart_mid_fence_resumes_the_same_outage(
    api: Api, namespace: str, bmcs: BmcFarm, heartbeats, start_operator
) -> None:
    # A slow BMC: the power state settles 3 s after a command, so the fence is caught
    # in the middle.
    datacenter(api, namespace, bmcs, heartbeats, power_delay=3.0)
    api.create("HAVirtualMachine", namespace, vm("vm1"))
    first = start_operator()
    victim = placed(api, namespace)
    heartbeats.stop(victim)

    def fencing() -> dict[str, Any] | None:
        st = status(api, "Host", namespace, victim)
        return st if st.get("phase") == "Fencing" and "off" in bmcs[victim].action_names else None

    st = wait_for(fencing, timeout=60, what="fence in progress")
    outage, attempt = st["fencing"]["outageID"], st["fencing"]["attempt"]
    first.stop("kill")
    time.sleep(1)
    second = start_operator(name="restarted")
    moved_off(api, namespace, victim)
    final = status(api, "Host", namespace, victim)
    assert final["fencing"]["outageID"] == outage
    assert final["fencing"]["attempt"] == attempt  # resumed, not a new fencing attempt
    vm_status = status(api, "HAVirtualMachine", namespace, "vm1")
    assert vm_status["placementEpoch"] > 1 and vm_status["restartCount"] == 1
    assert second.proc.poll() is None
