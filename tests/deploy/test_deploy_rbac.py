"""RBAC and admission policies proven with real tokens against the real API server.

The operator and the agents authenticate as their ServiceAccounts (TokenRequest API);
every allowed call is made for real, and every forbidden one is refused by the server.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from deploy_support import (
    HOST_SPEC,
    OPERATOR_NS,
    VM_SPEC,
    error_of,
    install,
    install_datacenter,
    status_of,
)
from kubernetes import client

from hafence.kube import Api
from hafence.lab.controlplane import ControlPlane

pytestmark = pytest.mark.controlplane

LEADER = "hafence-operator-leader"
CONFIRM = "hafence.io/confirm-rebooted"


@pytest.fixture(scope="module", autouse=True)
def base_installed(control_plane: ControlPlane) -> None:
    install(control_plane, "base")


@pytest.fixture
def operator(identity_api: Callable[[str, str], Api]) -> Api:
    return identity_api(OPERATOR_NS, "hafence-operator")


@pytest.fixture
def agent(
    control_plane: ControlPlane, namespace: str, identity_api: Callable[[str, str], Api]
) -> Api:
    install_datacenter(control_plane, namespace)
    return identity_api(namespace, "hafence-agent")


def lease(name: str, holder: str) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "metadata": {"name": name},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": now},
    }


def event(namespace: str, name: str) -> dict[str, Any]:
    return {
        "metadata": {"generateName": "hafence-"},
        "involvedObject": {
            "apiVersion": "hafence.io/v1alpha1",
            "kind": "Host",
            "namespace": namespace,
            "name": name,
        },
        "reason": "Fencing",
        "message": "powering off",
        "type": "Normal",
        "source": {"component": "hafence-operator"},
    }


def test_operator_reads_declared_state_everywhere(api: Api, operator: Api, namespace: str) -> None:
    api.create("Host", namespace, {"metadata": {"name": "h1"}, "spec": HOST_SPEC})
    assert operator.get("Host", namespace, "h1")["spec"]["address"] == HOST_SPEC["address"]
    names = [h["metadata"]["name"] for h in operator.list("Host", None)["items"]]
    assert "h1" in names
    for kind in ("FenceAgent", "HAVirtualMachine", "FenceConfirmation"):
        operator.list(kind, None)
    # Heartbeats of every datacenter, and kopf's discovery.
    operator.coordination.list_lease_for_all_namespaces()
    client.ApiextensionsV1Api(operator.client).list_custom_resource_definition()
    operator.core.list_namespace()


def test_operator_writes_status_never_spec(api: Api, operator: Api, namespace: str) -> None:
    api.create("Host", namespace, {"metadata": {"name": "h1"}, "spec": HOST_SPEC})
    api.create("HAVirtualMachine", namespace, {"metadata": {"name": "vm1"}, "spec": VM_SPEC})
    out = operator.patch("Host", namespace, "h1", {"status": {"phase": "Up"}}, status=True)
    assert out["status"]["phase"] == "Up"
    operator.patch(
        "HAVirtualMachine",
        namespace,
        "vm1",
        {"status": {"phase": "Scheduled", "host": "h1"}},
        status=True,
    )

    # The admission policy, not RBAC, stops a spec change (the operator may patch Hosts).
    msg = error_of(lambda: operator.patch("Host", namespace, "h1", {"spec": {"maintenance": True}}))
    assert "hafence-operator-never-writes-spec" in msg
    assert "never writes spec" in msg
    host = api.get("Host", namespace, "h1")
    host["spec"]["capacity"]["cpu"] = 1
    replace = operator.custom.replace_namespaced_custom_object  # RBAC: no update on Hosts
    assert (
        status_of(lambda: replace("hafence.io", "v1alpha1", namespace, "hosts", "h1", host)) == 403
    )
    stored = api.get("Host", namespace, "h1")["spec"]
    assert (stored["maintenance"], stored["capacity"]["cpu"]) == (False, 16)
    # RBAC: no write to any other kind's spec, no deletes.
    assert (
        status_of(
            lambda: operator.patch(
                "HAVirtualMachine", namespace, "vm1", {"spec": {"priority": "High"}}
            )
        )
        == 403
    )
    assert status_of(lambda: operator.delete("Host", namespace, "h1")) == 403
    assert status_of(lambda: operator.delete("HAVirtualMachine", namespace, "vm1")) == 403


def test_operator_consumes_confirm_annotation_but_cannot_forge_it(
    api: Api, operator: Api, namespace: str
) -> None:
    api.create("Host", namespace, {"metadata": {"name": "h1"}, "spec": HOST_SPEC})
    forged = {"metadata": {"annotations": {CONFIRM: "operator says so"}}}
    msg = error_of(lambda: operator.patch("Host", namespace, "h1", forged))
    assert "only remove the hafence.io/confirm-rebooted" in msg

    api.patch("Host", namespace, "h1", {"metadata": {"annotations": {CONFIRM: "pulled the plug"}}})
    changed = {"metadata": {"annotations": {CONFIRM: "something else"}}}
    assert status_of(lambda: operator.patch("Host", namespace, "h1", changed)) == 403
    conf = operator.create(
        "FenceConfirmation",
        namespace,
        {
            "metadata": {"name": "h1-confirmed"},
            "spec": {"hostRef": {"name": "h1"}, "reason": "pulled the plug"},
        },
    )
    operator.patch(
        "FenceConfirmation",
        namespace,
        conf["metadata"]["name"],
        {"status": {"phase": "Applied"}},
        status=True,
    )
    out = operator.patch("Host", namespace, "h1", {"metadata": {"annotations": {CONFIRM: None}}})
    assert CONFIRM not in out["metadata"].get("annotations", {})
    assert status_of(lambda: operator.delete("FenceConfirmation", namespace, "h1-confirmed")) == 403


def test_operator_reads_named_secrets_only(api: Api, operator: Api, namespace: str) -> None:
    api.core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "bmc-h1"},
            "data": {"password": base64.b64encode(b"calvin").decode()},
        },
    )
    assert operator.secret_value(namespace, "bmc-h1", "password") == b"calvin"
    assert status_of(lambda: operator.core.list_namespaced_secret(namespace)) == 403
    assert status_of(lambda: operator.core.list_secret_for_all_namespaces()) == 403
    assert status_of(lambda: operator.core.delete_namespaced_secret("bmc-h1", namespace)) == 403
    assert (
        status_of(
            lambda: operator.core.patch_namespaced_secret(
                "bmc-h1", namespace, {"data": {"password": ""}}
            )
        )
        == 403
    )
    assert (
        status_of(
            lambda: operator.core.create_namespaced_secret(namespace, {"metadata": {"name": "x"}})
        )
        == 403
    )


def test_operator_records_events(operator: Api, namespace: str) -> None:
    created = operator.core.create_namespaced_event(namespace, event(namespace, "h1"))
    operator.core.patch_namespaced_event(created.metadata.name, namespace, {"count": 2})
    events_v1 = client.EventsV1Api(operator.client)
    events_v1.create_namespaced_event(
        namespace,
        {
            "metadata": {"generateName": "hafence-"},
            "eventTime": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "reportingController": "hafence.io/operator",
            "reportingInstance": "hafence-operator-0",
            "action": "Fence",
            "reason": "Fencing",
            "type": "Normal",
            "regarding": {
                "apiVersion": "hafence.io/v1alpha1",
                "kind": "Host",
                "namespace": namespace,
                "name": "h1",
            },
        },
    )
    assert (
        status_of(lambda: operator.core.delete_namespaced_event(created.metadata.name, namespace))
        == 403
    )


def test_operator_manages_only_its_own_leader_lease(
    api: Api, operator: Api, namespace: str
) -> None:
    coord = operator.coordination
    if status_of(lambda: api.coordination.read_namespaced_lease(LEADER, OPERATOR_NS)) == 200:
        api.coordination.delete_namespaced_lease(LEADER, OPERATOR_NS)
    coord.create_namespaced_lease(OPERATOR_NS, lease(LEADER, "replica-a"))
    current = coord.read_namespaced_lease(LEADER, OPERATOR_NS)
    current.spec.holder_identity = "replica-b"
    renewed = coord.replace_namespaced_lease(LEADER, OPERATOR_NS, current)
    assert renewed.spec.holder_identity == "replica-b"
    assert status_of(lambda: coord.delete_namespaced_lease(LEADER, OPERATOR_NS)) == 403

    # Any other Lease in its namespace is out of reach (update is limited by name) ...
    api.coordination.create_namespaced_lease(OPERATOR_NS, lease(f"other-{namespace}", "x"))
    other = coord.read_namespaced_lease(f"other-{namespace}", OPERATOR_NS)
    other.spec.holder_identity = "hafence"
    assert (
        status_of(lambda: coord.replace_namespaced_lease(f"other-{namespace}", OPERATOR_NS, other))
        == 403
    )
    # ... and host heartbeats are read-only to it.
    api.coordination.create_namespaced_lease(namespace, lease("h1", "h1"))
    beat = coord.read_namespaced_lease("h1", namespace)
    assert status_of(lambda: coord.replace_namespaced_lease("h1", namespace, beat)) == 403
    assert status_of(lambda: coord.create_namespaced_lease(namespace, lease("h2", "h2"))) == 403


def test_operator_cannot_run_workloads(operator: Api, namespace: str) -> None:
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    assert status_of(lambda: operator.core.create_namespaced_pod(namespace, pod)) == 403
    assert status_of(lambda: operator.core.list_namespaced_pod(namespace)) == 403
    assert status_of(lambda: operator.core.create_namespace({"metadata": {"name": "x"}})) == 403


def test_agent_renews_its_lease_and_reports_vms(api: Api, agent: Api, namespace: str) -> None:
    api.create("Host", namespace, {"metadata": {"name": "h1"}, "spec": HOST_SPEC})
    api.create("HAVirtualMachine", namespace, {"metadata": {"name": "vm1"}, "spec": VM_SPEC})
    api.patch(
        "HAVirtualMachine",
        namespace,
        "vm1",
        {"status": {"phase": "Scheduled", "host": "h1", "placementEpoch": 1}},
        status=True,
    )

    assert agent.get("Host", namespace, "h1")["spec"]["cluster"] == "c1"
    assert [v["metadata"]["name"] for v in agent.list("HAVirtualMachine", namespace)["items"]] == [
        "vm1"
    ]
    coord = agent.coordination
    coord.create_namespaced_lease(namespace, lease("h1", "h1"))
    beat = coord.read_namespaced_lease("h1", namespace)
    beat.spec.renew_time = dt.datetime.now(dt.UTC)
    coord.replace_namespaced_lease("h1", namespace, beat)
    report = {"status": {"runtime": {"host": "h1", "state": "Running", "placementEpoch": 1}}}
    out = agent.patch("HAVirtualMachine", namespace, "vm1", report, status=True)
    assert out["status"]["runtime"]["state"] == "Running"


def test_agent_cannot_place_fence_or_read_secrets(api: Api, agent: Api, namespace: str) -> None:
    api.create("Host", namespace, {"metadata": {"name": "h1"}, "spec": HOST_SPEC})
    api.create("HAVirtualMachine", namespace, {"metadata": {"name": "vm1"}, "spec": VM_SPEC})
    api.core.create_namespaced_secret(namespace, {"metadata": {"name": "bmc-h1"}})
    # Placement belongs to the operator: the admission policy refuses it.
    for grab in ({"host": "h2"}, {"placementEpoch": 7}, {"phase": "Running"}):
        msg = error_of(
            lambda g=grab: agent.patch(  # type: ignore[misc]
                "HAVirtualMachine", namespace, "vm1", {"status": g}, status=True
            )
        )
        assert "hafence-agent-never-places" in msg, grab
    # RBAC refuses the rest.
    assert status_of(lambda: agent.delete("Host", namespace, "h1")) == 403
    assert (
        status_of(lambda: agent.patch("Host", namespace, "h1", {"spec": {"maintenance": True}}))
        == 403
    )
    assert (
        status_of(
            lambda: agent.patch("Host", namespace, "h1", {"status": {"phase": "Up"}}, status=True)
        )
        == 403
    )
    assert (
        status_of(
            lambda: agent.patch(
                "HAVirtualMachine", namespace, "vm1", {"spec": {"priority": "High"}}
            )
        )
        == 403
    )
    assert status_of(lambda: agent.core.read_namespaced_secret("bmc-h1", namespace)) == 403
    assert status_of(lambda: agent.core.list_namespaced_secret(namespace)) == 403
    assert (
        status_of(
            lambda: agent.create(
                "FenceConfirmation",
                namespace,
                {"metadata": {"name": "c"}, "spec": {"hostRef": {"name": "h1"}, "reason": "r"}},
            )
        )
        == 403
    )
    # Nothing outside its datacenter namespace.
    assert (
        status_of(
            lambda: agent.coordination.create_namespaced_lease(OPERATOR_NS, lease("h1", "h1"))
        )
        == 403
    )
    assert status_of(lambda: agent.list("Host", None)) == 403
    # Other hosts' specs are not its business either.
    assert status_of(lambda: agent.list("Host", namespace)) == 403


def placed(api: Api, namespace: str, vm: str, host: str) -> None:
    api.create("HAVirtualMachine", namespace, {"metadata": {"name": vm}, "spec": VM_SPEC})
    api.patch(
        "HAVirtualMachine",
        namespace,
        vm,
        {"status": {"phase": "Scheduled", "host": host, "placementEpoch": 1}},
        status=True,
    )


def runtime(host: str, state: str = "Running") -> dict[str, Any]:
    return {"status": {"runtime": {"host": host, "state": state, "placementEpoch": 1}}}


def test_shared_agent_identity_can_act_for_other_hosts(
    api: Api, agent: Api, namespace: str
) -> None:
    """The gap docs/deploy.md describes: one shared token speaks for every host."""
    api.coordination.create_namespaced_lease(namespace, lease("h2", "h2"))
    placed(api, namespace, "vm2", "h2")
    beat = agent.coordination.read_namespaced_lease("h2", namespace)
    beat.metadata.annotations = {"hafence.io/watchdog-timeout-seconds": "60"}
    agent.coordination.replace_namespaced_lease("h2", namespace, beat)
    agent.patch("HAVirtualMachine", namespace, "vm2", runtime("h2", "Crashed"), status=True)


def test_per_host_agent_identity_is_confined_to_its_host(
    control_plane: ControlPlane,
    api: Api,
    namespace: str,
    identity_api: Callable[[str, str], Api],
) -> None:
    install_datacenter(control_plane, namespace)
    api.core.create_namespaced_service_account(
        namespace, {"metadata": {"name": "hafence-agent-h1"}}
    )
    control_plane.kubectl(
        "create",
        "rolebinding",
        "hafence-agent-h1",
        "--role=hafence-agent",
        f"--serviceaccount={namespace}:hafence-agent-h1",
        "-n",
        namespace,
    )
    h1 = identity_api(namespace, "hafence-agent-h1")
    placed(api, namespace, "vm1", "h1")
    placed(api, namespace, "vm2", "h2")
    api.coordination.create_namespaced_lease(namespace, lease("h2", "h2"))

    # Its own heartbeat and its own VMs: allowed.
    h1.coordination.create_namespaced_lease(namespace, lease("h1", "h1"))
    beat = h1.coordination.read_namespaced_lease("h1", namespace)
    beat.spec.renew_time = dt.datetime.now(dt.UTC)
    h1.coordination.replace_namespaced_lease("h1", namespace, beat)
    h1.patch("HAVirtualMachine", namespace, "vm1", runtime("h1"), status=True)

    # Another host's heartbeat: refused by hafence-agent-own-host-only.
    msg = error_of(lambda: h1.coordination.create_namespaced_lease(namespace, lease("h3", "h3")))
    assert "may write only its own heartbeat Lease h1" in msg
    other = h1.coordination.read_namespaced_lease("h2", namespace)
    other.metadata.annotations = {"hafence.io/watchdog-timeout-seconds": "60"}
    msg = error_of(lambda: h1.coordination.replace_namespaced_lease("h2", namespace, other))
    assert "hafence-agent-own-host-only" in msg
    # Another host's VM, or its own VM reported as running elsewhere: refused.
    msg = error_of(
        lambda: h1.patch(
            "HAVirtualMachine", namespace, "vm2", runtime("h1", "Crashed"), status=True
        )
    )
    assert "may report only VMs placed on it or that it ran" in msg
    msg = error_of(
        lambda: h1.patch("HAVirtualMachine", namespace, "vm1", runtime("h2"), status=True)
    )
    assert "status.runtime.host must be h1" in msg

    # After the operator moves vm1 away, h1 may still report that it stopped it.
    api.patch(
        "HAVirtualMachine",
        namespace,
        "vm1",
        {"status": {"host": "h2", "placementEpoch": 2}},
        status=True,
    )
    h1.patch("HAVirtualMachine", namespace, "vm1", runtime("h1", "Stopped"), status=True)
