"""Who confirmed a host down, from the API request itself: the admission policies of
manifests/base/who-confirmed-policy.yaml against the real API server, people acting
through impersonation, and the operator on its own ServiceAccount token."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import RbacAuthorizationV1Api

from hafence.kube import Api
from hafence.lab.controlplane import ControlPlane, kubeconfig_text
from tests.operator.conftest import OperatorProcess, wait_for
from tests.operator.test_confirmation import host, status, vm

pytestmark = pytest.mark.controlplane
POLICY = Path(__file__).resolve().parents[2] / "manifests" / "base" / "who-confirmed-policy.yaml"
LABEL = "hafence.io/test-who-confirmed"


@pytest.fixture
def policies(control_plane: ControlPlane, api: Api, namespace: str) -> Iterator[None]:
    """The manifest's policies, their bindings confined to this test's namespace (the
    session's API server is shared) and their names made unique."""
    api.core.patch_namespace(namespace, {"metadata": {"labels": {LABEL: "yes"}}})
    docs: list[dict[str, Any]] = []
    for doc in yaml.safe_load_all(POLICY.read_text()):
        doc = copy.deepcopy(doc)
        doc["metadata"]["name"] += f"-{namespace}"[:40]
        if doc["kind"].endswith("Binding"):
            doc["spec"]["policyName"] += f"-{namespace}"[:40]
            doc["spec"]["matchResources"] = {
                "namespaceSelector": {"matchLabels": {LABEL: "yes"}},
            }
        docs.append(doc)
    text = yaml.safe_dump_all(docs)
    control_plane.kubectl("apply", "-f", "-", input=text)
    # Policies take effect once the API server has loaded them: wait for a probe.
    probe = {"metadata": {"name": "probe"}, "spec": {"hostRef": {"name": "x"}, "reason": "p"}}

    def active() -> bool:
        obj = api.create("FenceConfirmation", namespace, copy.deepcopy(probe))
        api.delete("FenceConfirmation", namespace, "probe")
        return "hafence.io/confirmed-by" in (obj["metadata"].get("annotations") or {})

    wait_for(active, timeout=30, what="the admission policies loaded")
    yield
    control_plane.kubectl("delete", "-f", "-", "--ignore-not-found", input=text)


def as_user(cp: ControlPlane, user: str, *args: str, input: str | None = None) -> Any:
    return cp.kubectl("--as", user, "--as-group", "system:masters", *args, input=input, check=False)


def confirmation(name: str, host_name: str, annotations: dict[str, str] | None = None) -> str:
    meta: dict[str, Any] = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    body = {
        "apiVersion": "hafence.io/v1alpha1",
        "kind": "FenceConfirmation",
        "metadata": meta,
        "spec": {"hostRef": {"name": host_name}, "reason": "checked on site"},
    }
    return yaml.safe_dump(body)


def annotations(api: Api, kind: str, ns: str, name: str) -> dict[str, str]:
    return api.get(kind, ns, name)["metadata"].get("annotations") or {}


def test_the_api_server_records_who_and_refuses_a_typed_name(
    api: Api, namespace: str, control_plane: ControlPlane, policies: None
) -> None:
    cp, ns = control_plane, namespace
    made = as_user(cp, "alice", "create", "-n", ns, "-f", "-", input=confirmation("c1", "h1"))
    assert made.returncode == 0, made.stderr
    assert annotations(api, "FenceConfirmation", ns, "c1")["hafence.io/confirmed-by"] == "alice"

    forged = confirmation("c2", "h1", {"hafence.io/confirmed-by": "bob"})
    refused = as_user(cp, "alice", "create", "-n", ns, "-f", "-", input=forged)
    assert refused.returncode != 0
    assert "hafence.io/confirmed-by] is recorded by the API server" in refused.stderr
    assert "(alice)" in refused.stderr
    # Speaking for someone else counts only from the operator's ServiceAccount.
    behalf = confirmation("c3", "h1", {"hafence.io/on-behalf-of": "bob"})
    made = as_user(cp, "alice", "create", "-n", ns, "-f", "-", input=behalf)
    assert made.returncode == 0, made.stderr
    assert annotations(api, "FenceConfirmation", ns, "c3")["hafence.io/confirmed-by"] == "alice"
    changed = as_user(
        cp, "bob", "annotate", "-n", ns, "fc", "c1", "hafence.io/confirmed-by=bob", "--overwrite"
    )
    assert changed.returncode != 0 and "can never change" in changed.stderr
    assert annotations(api, "FenceConfirmation", ns, "c1")["hafence.io/confirmed-by"] == "alice"

    api.create("Host", ns, host("h1"))
    done = as_user(cp, "alice", "annotate", "-n", ns, "host", "h1", "hafence.io/confirm-rebooted=x")
    assert done.returncode == 0, done.stderr
    assert annotations(api, "Host", ns, "h1")["hafence.io/confirm-rebooted-by"] == "alice"
    forged_host = as_user(
        cp,
        "bob",
        "annotate",
        "-n",
        ns,
        "host",
        "h1",
        "hafence.io/confirm-rebooted-by=carol",
        "--overwrite",
    )
    assert forged_host.returncode != 0 and "cannot name someone else" in forged_host.stderr


def test_the_annotation_path_records_the_annotating_user(
    api: Api,
    namespace: str,
    control_plane: ControlPlane,
    policies: None,
    heartbeats,
    tmp_path: Path,
) -> None:
    """The operator, on a ServiceAccount named hafence-operator, turns alice's annotation
    into a FenceConfirmation that says alice, not the operator: in its status and in the
    outage record."""
    ns = namespace
    api.core.create_namespaced_service_account(ns, {"metadata": {"name": "hafence-operator"}})
    binding = f"hafence-operator-{ns}"[:63]
    rbac = RbacAuthorizationV1Api(api.client)
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": binding},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "hafence-operator", "namespace": ns}],
        }
    )
    token = api.core.create_namespaced_service_account_token(
        "hafence-operator", ns, {"spec": {"expirationSeconds": 600}}
    ).status.token
    kubeconfig = tmp_path / "operator.kubeconfig"
    kubeconfig.touch(mode=0o600)
    ca = control_plane.dir / "pki" / "ca.crt"
    kubeconfig.write_text(kubeconfig_text(control_plane.url, ca, None, None, token=token))
    for name in ("h1", "h2"):
        api.create("Host", ns, host(name))
        heartbeats.start(name)
    api.create("HAVirtualMachine", ns, vm("vm1"))
    op = OperatorProcess(
        str(kubeconfig), ns, tmp_path / "operator.log", "--pm-health-interval", "0"
    )
    try:
        victim = wait_for(
            lambda: status(api, "HAVirtualMachine", ns, "vm1").get("host"), what="vm1"
        )
        heartbeats.stop(victim)
        wait_for(
            lambda: status(api, "Host", ns, victim).get("phase") == "Isolated", what="Isolated"
        )
        done = as_user(
            control_plane,
            "alice",
            "annotate",
            "-n",
            ns,
            "host",
            victim,
            "hafence.io/confirm-rebooted=power cable pulled",
        )
        assert done.returncode == 0, done.stderr
        (fc,) = wait_for(lambda: api.list("FenceConfirmation", ns)["items"], what="confirmation")
        meta = fc["metadata"]
        assert meta["annotations"]["hafence.io/confirmed-by"] == "alice"
        assert meta["annotations"]["hafence.io/on-behalf-of"] == "alice"
        st = wait_for(
            lambda: (
                (s := status(api, "FenceConfirmation", ns, meta["name"])).get("confirmedBy") and s
            ),
            what="confirmation status names alice",
        )
        assert st["phase"] == "Applied" and st["confirmedBy"] == "alice"
        # The operator creates the confirmation, then removes the annotation (a Host
        # whose status moved in between is patched again on its next event): the
        # confirmation may be applied before the annotation is gone.
        left = wait_for(
            lambda: (
                (a := annotations(api, "Host", ns, victim)).get("hafence.io/confirm-rebooted")
                is None
                and [a]
            ),
            what="the confirm annotation removed",
        )[0]
        assert "hafence.io/confirm-rebooted-by" not in left

        def proof() -> dict[str, Any] | None:
            items = api.list("HostOutage", ns)["items"]
            found = [(o.get("status") or {}).get("proof") for o in items]
            return next((p for p in found if p and p.get("confirmedBy")), None)

        p = wait_for(proof, what="the outage record's proof")
        assert p["type"] == "confirmation" and p["confirmedBy"] == "alice"
        assert p["reason"] == "power cable pulled" and p["confirmation"] == meta["name"]
    finally:
        op.stop("kill")
        print(op.output()[-20000:])
        rbac.delete_cluster_role_binding(binding)
