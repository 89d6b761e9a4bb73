"""What the manifests promise: exact rights, a reason for each, a hardened pod, settings
the operator understands, generated copies in sync."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from deploy_support import MANIFESTS, OPERATOR_NS, ROOT, install, render

from hafence.controller.settings import build_parser, parse_settings
from hafence.kube import Api
from hafence.lab.controlplane import ControlPlane

# (namespace or "*" for cluster-wide, apiGroup, resource, verb, resourceName or "*")
Right = tuple[str, str, str, str, str]

HAFENCE_KINDS = (
    "hosts",
    "fenceagents",
    "havirtualmachines",
    "fenceconfirmations",
    "fencingpolicies",
)
# The operator's rights in base, as the design lists them. A new right must be added
# here, with its reason in operator-rbac.yaml and docs/deploy.md.
OPERATOR_RIGHTS: set[Right] = {
    *{("*", "hafence.io", k, v, "*") for k in HAFENCE_KINDS for v in ("get", "list", "watch")},
    *{
        ("*", "hafence.io", f"{k}/status", v, "*")
        for k in HAFENCE_KINDS
        for v in ("get", "patch", "update")
    },
    ("*", "hafence.io", "fenceconfirmations", "create", "*"),
    ("*", "hafence.io", "hosts", "patch", "*"),
    *{("*", "hafence.io", "hostoutages", v, "*") for v in ("get", "list", "create", "delete")},
    *{("*", "hafence.io", "hostoutages/status", v, "*") for v in ("get", "patch")},
    *{("*", "coordination.k8s.io", "leases", v, "*") for v in ("get", "list", "watch")},
    (OPERATOR_NS, "coordination.k8s.io", "leases", "create", "*"),
    (OPERATOR_NS, "coordination.k8s.io", "leases", "get", "hafence-operator-leader"),
    (OPERATOR_NS, "coordination.k8s.io", "leases", "update", "hafence-operator-leader"),
    ("*", "", "secrets", "get", "*"),
    *{("*", g, "events", v, "*") for g in ("", "events.k8s.io") for v in ("create", "patch")},
    *{
        ("*", "apiextensions.k8s.io", "customresourcedefinitions", v, "*")
        for v in ("get", "list", "watch")
    },
    *{("*", "", "namespaces", v, "*") for v in ("get", "list", "watch")},
}
AGENT_RIGHTS: set[Right] = {
    ("dc", "hafence.io", "hosts", "get", "*"),
    *{("dc", "hafence.io", "havirtualmachines", v, "*") for v in ("get", "list", "watch")},
    ("dc", "hafence.io", "havirtualmachines/status", "patch", "*"),
    *{("dc", "coordination.k8s.io", "leases", v, "*") for v in ("get", "list", "create", "update")},
}


def rights_of(objs: list[dict[str, Any]], sa_name: str, sa_ns: str | None) -> set[Right]:
    """Every right bound to a ServiceAccount, expanded to single (verb, resource) pairs."""
    roles = {
        (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
        for o in objs
        if o["kind"] in ("Role", "ClusterRole")
    }
    out: set[Right] = set()
    for b in (o for o in objs if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        bns = b["metadata"].get("namespace", "")
        if not any(
            s["kind"] == "ServiceAccount"
            and s["name"] == sa_name
            and s.get("namespace", bns) == (sa_ns or bns)
            for s in b["subjects"]
        ):
            continue
        ref = b["roleRef"]
        role = roles[(ref["kind"], bns if ref["kind"] == "Role" else "", ref["name"])]
        scope = "*" if b["kind"] == "ClusterRoleBinding" else (bns or "dc")
        for rule in role["rules"]:
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    for v in rule["verbs"]:
                        for n in rule.get("resourceNames", ["*"]):
                            out.add((scope, g, r, v, n))
    return out


def deployment(objs: list[dict[str, Any]]) -> dict[str, Any]:
    (dep,) = [o for o in objs if o["kind"] == "Deployment"]
    return dep


def test_generated_copies_are_in_sync() -> None:
    """manifests/base/crds = crds/; prometheusrule.yaml = hafence.rules.yaml."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "sync_generated.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("path", ["base/operator-rbac.yaml", "overlays/datacenter/agent-rbac.yaml"])
def test_every_rbac_rule_says_why(path: str) -> None:
    lines = (MANIFESTS / path).read_text().splitlines()
    bare = []
    for i, line in enumerate(lines):
        if re.match(r"^\s*- apiGroups:", line):
            above = next((p for p in reversed(lines[:i]) if p.strip()), "")
            if not above.strip().startswith("#"):
                bare.append(f"{path}:{i + 1}: {line.strip()}")
    assert not bare, "rules without a comment giving the reason:\n" + "\n".join(bare)


def test_operator_has_exactly_the_designed_rights(control_plane: ControlPlane) -> None:
    objs = render(control_plane, "base")
    got = rights_of(objs, "hafence-operator", OPERATOR_NS)
    assert got - OPERATOR_RIGHTS == set(), "rights beyond the design"
    assert OPERATOR_RIGHTS - got == set(), "designed rights missing"


def test_namespaced_overlay_keeps_the_rights_but_per_namespace(
    control_plane: ControlPlane,
) -> None:
    objs = render(control_plane, "overlays/namespaced")
    got = rights_of(objs, "hafence-operator", OPERATOR_NS)
    cluster_wide = {r for r in got if r[0] == "*"}
    assert {r[2] for r in cluster_wide} == {"customresourcedefinitions", "namespaces"}
    for ns in ("dc1", "dc2"):
        per_ns = {r[1:] for r in got if r[0] == ns}
        designed = {r[1:] for r in OPERATOR_RIGHTS if r[0] == "*"} - {r[1:] for r in cluster_wide}
        assert per_ns == designed, ns


def test_agent_has_exactly_the_designed_rights(control_plane: ControlPlane) -> None:
    objs = render(control_plane, "overlays/datacenter")
    assert rights_of(objs, "hafence-agent", None) == AGENT_RIGHTS
    assert not [o for o in objs if o["kind"].startswith("Cluster")], (
        "agents get nothing cluster-wide"
    )


def test_operator_pod_is_hardened(control_plane: ControlPlane) -> None:
    objs = render(control_plane, "base")
    pod = deployment(objs)["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "ghcr.io/hafence/hafence:0.1.0"
    assert c["command"] == ["hafence", "operator"]
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsUser"] == 65532
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    assert {"requests", "limits"} <= set(c["resources"])
    assert c["ports"] == [{"name": "http-metrics", "containerPort": 8080, "protocol": "TCP"}]
    assert (c["livenessProbe"]["httpGet"], c["readinessProbe"]["httpGet"]) == (
        {"path": "/healthz", "port": "http-metrics"},
        {"path": "/readyz", "port": "http-metrics"},
    )
    (svc,) = [o for o in objs if o["kind"] == "Service"]
    assert svc["spec"]["ports"][0]["port"] == 8080
    assert svc["spec"]["ports"][0]["targetPort"] == "http-metrics"
    assert svc["spec"]["selector"] == deployment(objs)["spec"]["selector"]["matchLabels"]


@pytest.mark.controlplane
def test_operator_pod_passes_restricted_pod_security(control_plane: ControlPlane, api: Api) -> None:
    """The API server's own PodSecurity admission judges the pod template."""
    objs = install(control_plane, "base")
    template = deployment(objs)["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hafence-operator-probe", **template["metadata"]},
        "spec": template["spec"],
    }
    api.core.create_namespaced_pod(OPERATOR_NS, pod, dry_run="All")
    # The namespace really enforces it: a root pod is refused.
    pod["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] = False
    pod["spec"]["securityContext"]["runAsUser"] = 0
    refused = control_plane.kubectl(
        "create",
        "--dry-run=server",
        "-f",
        "-",
        "-n",
        OPERATOR_NS,
        input=json.dumps(pod),
        check=False,
    )
    assert refused.returncode != 0
    assert "violates PodSecurity" in refused.stderr


def _env(dep: dict[str, Any]) -> dict[str, str]:
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    env = {}
    for e in c["env"]:
        # fieldRef values are the pod's own metadata: its namespace here.
        env[e["name"]] = e.get("value", OPERATOR_NS)
    return env


@pytest.mark.parametrize(
    ("kustomization", "namespaces"), [("base", ()), ("overlays/namespaced", ("dc1", "dc2"))]
)
def test_operator_understands_its_environment(
    control_plane: ControlPlane, kustomization: str, namespaces: tuple[str, ...]
) -> None:
    dep = deployment(render(control_plane, kustomization))
    env = _env(dep)
    known = set(re.findall(r"\[(HAFENCE_[A-Z_]+)", build_parser().format_help()))
    unknown = {k for k in env if k.startswith("HAFENCE_")} - known
    assert not unknown, f"the operator reads no such variable: {unknown}"
    settings = parse_settings([], env, service_account_namespace=Path("/nonexistent"))
    assert settings.namespaces == namespaces
    assert settings.lease_namespace == OPERATOR_NS
    assert settings.lease_name == "hafence-operator-leader"
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert settings.metrics_port == c["ports"][0]["containerPort"]
    assert settings.profile == "production"
