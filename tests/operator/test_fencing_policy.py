"""A FencingPolicy picked up live by a running operator: status shows what is in force
per cluster, a second policy is ignored (and says so), fencing disabled by the policy
makes the silent host ask for a person without touching its BMC, and enabling it fences
the host without restarting the operator."""

from __future__ import annotations

from typing import Any

from hafence.kube import Api
from hafence.lab.bmc import BmcFarm
from tests.operator.conftest import wait_for
from tests.operator.test_confirmation import status, vm
from tests.operator.test_hard_fencing import bmcs, datacenter, events, moved_off, placed

__all__ = ["bmcs"]  # the fixture, imported for this module's tests


def policy(name: str, fencing: bool) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "default": {"softFenceTimeoutSeconds": 3},
            "clusters": [{"cluster": "c1", "fencingEnabled": fencing}],
        },
    }


def in_force(api: Api, ns: str, name: str = "default") -> dict[str, Any] | None:
    st = status(api, "FencingPolicy", ns, name)
    return st if st.get("inForce") else None


def test_policy_applies_live_and_a_second_one_is_ignored(
    api: Api, namespace: str, bmcs: BmcFarm, heartbeats, start_operator, control_plane
) -> None:
    datacenter(api, namespace, bmcs, heartbeats, names=("h1", "h2"))
    api.create("FencingPolicy", namespace, policy("default", fencing=False))
    api.create("HAVirtualMachine", namespace, vm("vm1"))
    start_operator()
    st = wait_for(lambda: in_force(api, namespace), what="policy in force")
    assert st["timings"]["softFenceTimeoutSeconds"] == 3  # the resource over --profile lab
    assert st["timings"]["connectingGraceSeconds"] == 2  # left out: the lab profile's
    (c1,) = st["clusters"]
    assert (c1["cluster"], c1["fencingEnabled"], c1["source"]) == ("c1", False, "cluster")
    assert st["default"]["fencingEnabled"] is True

    api.create("FencingPolicy", namespace, policy("other", fencing=True))
    other = wait_for(
        lambda: status(api, "FencingPolicy", namespace, "other").get("conditions"),
        what="the second policy's condition",
    )
    assert other[0]["type"] == "InForce" and other[0]["status"] == "False"
    assert other[0]["reason"] == "Ignored" and "'default'" in other[0]["message"]
    listing = control_plane.kubectl("get", "fencingpolicies", "-n", namespace).stdout
    rows = {line.split()[0]: line.split() for line in listing.splitlines()[1:]}
    assert rows["default"][1:3] == ["true", "true"] and rows["other"][1] == "false"

    victim = placed(api, namespace)
    heartbeats.stop(victim)
    wait_for(
        lambda: status(api, "Host", namespace, victim).get("phase") == "Isolated",
        what=f"{victim} Isolated: fencing disabled asks for a person",
    )
    # Events are posted on their own pool after the status write: wait, not assert.
    wait_for(
        lambda: "FenceSkippedDisabled" in events(api, namespace, victim),
        what="the FenceSkippedDisabled Event",
    )
    conds = {c["type"]: c for c in status(api, "Host", namespace, victim)["conditions"]}
    assert conds["FencingAllowed"]["status"] == "False"
    assert conds["FencingAllowed"]["reason"] == "FenceSkippedDisabled"
    assert "off" not in bmcs[victim].action_names
    assert status(api, "HAVirtualMachine", namespace, "vm1")["host"] == victim

    # Fencing enabled in Git: the running operator fences at once.
    api.patch(
        "FencingPolicy",
        namespace,
        "default",
        {"spec": {"clusters": [{"cluster": "c1", "fencingEnabled": True}]}},
    )
    moved_off(api, namespace, victim)
    assert "off" in bmcs[victim].action_names
    st = wait_for(
        lambda: (s := in_force(api, namespace)) and s["clusters"][0]["fencingEnabled"] and s,
        what="status shows fencing enabled",
    )
    assert st["clusters"][0]["source"] == "cluster"
