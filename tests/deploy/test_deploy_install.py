"""`kubectl apply -k` of the base and each overlay, for real, then every object is there."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from deploy_support import (
    HOST_SPEC,
    MANIFESTS,
    OPERATOR_NS,
    install,
    key,
    render,
    resource_name,
    status_of,
)

from hafence.kube import Api
from hafence.lab.controlplane import ControlPlane

pytestmark = pytest.mark.controlplane


def assert_all_stored(control_plane: ControlPlane, objs: list[dict[str, Any]]) -> None:
    missing = []
    for obj in objs:
        kind, ns, name = key(obj)
        got = control_plane.kubectl(
            "get", resource_name(obj), name, "-o", "name", *(["-n", ns] if ns else []), check=False
        )
        if got.returncode != 0:
            missing.append(f"{kind} {ns}/{name}: {got.stderr.strip()}")
    assert not missing, "not stored:\n" + "\n".join(missing)


def deployment(objs: list[dict[str, Any]]) -> dict[str, Any]:
    (dep,) = [o for o in objs if o["kind"] == "Deployment"]
    return dep


def env_of(dep: dict[str, Any]) -> dict[str, Any]:
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_base_installs_every_object(control_plane: ControlPlane) -> None:
    objs = install(control_plane, "base")
    kinds = {o["kind"] for o in objs}
    assert {
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "Deployment",
        "Service",
    } <= kinds
    assert_all_stored(control_plane, objs)
    stored = control_plane.kubectl(
        "get",
        "deployment",
        "hafence-operator",
        "-n",
        OPERATOR_NS,
        "-o",
        "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image}",
    ).stdout
    assert stored == "1 ghcr.io/hafence/hafence:0.1.0"
    # Applying the same directory again changes nothing, as a GitOps tool expects.
    generation = "jsonpath={.metadata.generation}"
    before = control_plane.kubectl(
        "get", "deployment", "hafence-operator", "-n", OPERATOR_NS, "-o", generation
    ).stdout
    control_plane.kubectl("apply", "--server-side", "-k", str(MANIFESTS / "base"))
    after = control_plane.kubectl(
        "get", "deployment", "hafence-operator", "-n", OPERATOR_NS, "-o", generation
    ).stdout
    assert before == after


def test_ha_overlay_runs_two_replicas_apart(control_plane: ControlPlane) -> None:
    objs = install(control_plane, "overlays/ha")
    assert_all_stored(control_plane, objs)
    dep = deployment(objs)
    assert dep["spec"]["replicas"] == 2
    anti = dep["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    (required,) = anti["requiredDuringSchedulingIgnoredDuringExecution"]
    assert required["topologyKey"] == "kubernetes.io/hostname"
    assert required["labelSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    pdb = control_plane.kubectl(
        "get",
        "poddisruptionbudget",
        "hafence-operator",
        "-n",
        OPERATOR_NS,
        "-o",
        "jsonpath={.spec.minAvailable}",
    ).stdout
    assert pdb == "1"
    # Everything else of base is still applied unchanged.
    base = {key(o) for o in render(control_plane, "base")}
    assert base <= {key(o) for o in objs}


def test_namespaced_overlay_grants_only_the_listed_namespaces(
    control_plane: ControlPlane,
    api: Api,
    namespace: str,
    identity_api: Callable[[str, str], Api],
) -> None:
    objs = install(control_plane, "overlays/namespaced")
    assert_all_stored(control_plane, objs)
    listed = set(env_of(deployment(objs))["HAFENCE_NAMESPACES"].split(","))
    bound = {
        o["metadata"]["namespace"]
        for o in objs
        if o["kind"] == "RoleBinding" and o["roleRef"]["name"] == "hafence-operator"
    }
    assert listed == bound == {"dc1", "dc2"}
    assert ("ClusterRoleBinding", "", "hafence-operator") not in {key(o) for o in objs}
    gone = control_plane.kubectl(
        "get", "clusterrolebinding", "hafence-operator", "--ignore-not-found", "-o", "name"
    ).stdout
    assert gone == ""

    api.create("Host", "dc1", {"metadata": {"name": "h-ns"}, "spec": HOST_SPEC})
    api.create("Host", namespace, {"metadata": {"name": "h-ns"}, "spec": HOST_SPEC})
    operator = identity_api(OPERATOR_NS, "hafence-operator")
    assert operator.get("Host", "dc1", "h-ns")["metadata"]["name"] == "h-ns"
    operator.list("Host", "dc2")
    # Not a listed namespace, and not cluster-wide: forbidden.
    assert status_of(lambda: operator.get("Host", namespace, "h-ns")) == 403
    assert status_of(lambda: operator.list("Host", None)) == 403
    assert status_of(lambda: operator.coordination.list_namespaced_lease(namespace)) == 403
    # The leader Lease and kopf's discovery still work.
    assert status_of(lambda: operator.core.list_namespace()) == 200
    # The agents of a listed namespace got their identity too.
    agent = identity_api("dc2", "hafence-agent")
    assert status_of(lambda: agent.list("HAVirtualMachine", "dc2")) == 200
    assert status_of(lambda: agent.list("HAVirtualMachine", "dc1")) == 403
