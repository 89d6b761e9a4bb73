"""Installing hafence's manifests into the real API server the way users do.

``install(control_plane, "overlays/ha")`` does what ``kubectl apply -k`` plus a pruning
GitOps tool would: apply the kustomization server-side, then delete the objects that
another of our kustomizations created and this one does not contain (Namespaces and
CRDs excepted: without a controller-manager a deleted Namespace never goes away).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kubernetes.client.exceptions import ApiException

from hafence.kube import KubeError
from hafence.lab.controlplane import ControlPlane

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
KUSTOMIZATIONS = ("base", "overlays/ha", "overlays/namespaced")
OPERATOR_NS = "hafence-system"
NEVER_PRUNED = {"Namespace", "CustomResourceDefinition"}

Key = tuple[str, str, str]  # kind, namespace ("" if cluster-scoped), name


def render(control_plane: ControlPlane, kustomization: str) -> list[dict[str, Any]]:
    out = control_plane.kubectl("kustomize", str(MANIFESTS / kustomization)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def key(obj: dict[str, Any]) -> Key:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace", ""), meta["name"]


def resource_name(obj: dict[str, Any]) -> str:
    group = obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else ""
    return f"{obj['kind'].lower()}.{group}" if group else obj["kind"].lower()


def _refuse_stale_crds() -> None:
    """Applying an old copy of a CRD would break every other test of the session."""
    source = {p.name: p.read_text() for p in (ROOT / "crds").glob("*.yaml")}
    copy = {p.name: p.read_text() for p in (MANIFESTS / "base" / "crds").glob("*.yaml")}
    if source != copy:
        raise AssertionError(
            "manifests/base/crds differs from crds/: run hack/sync_generated.py (not applied)"
        )


def install(control_plane: ControlPlane, kustomization: str) -> list[dict[str, Any]]:
    _refuse_stale_crds()
    objs = render(control_plane, kustomization)
    control_plane.kubectl(
        "apply", "--server-side", "--force-conflicts", "-k", str(MANIFESTS / kustomization)
    )
    _wait_until_served(control_plane)
    wanted = {key(o) for o in objs}
    for other in KUSTOMIZATIONS:
        if other == kustomization:
            continue
        for obj in render(control_plane, other):
            kind, ns, name = key(obj)
            if (kind, ns, name) in wanted or kind in NEVER_PRUNED:
                continue
            args = ["delete", resource_name(obj), name, "--ignore-not-found"]
            control_plane.kubectl(*args, *(["-n", ns] if ns else []))
    return objs


def _wait_until_served(control_plane: ControlPlane, timeout: float = 30.0) -> None:
    """Until every kind lists: a new CRD's watch cache answers 429 while it starts."""
    kinds = "hosts,fenceagents,havirtualmachines,fenceconfirmations,fencingpolicies"
    deadline = time.monotonic() + timeout
    while True:
        got = control_plane.kubectl("get", kinds, "-A", "-o", "name", check=False)
        if got.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"our kinds are not served after {timeout}s: {got.stderr}")
        time.sleep(0.2)


def install_datacenter(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl(
        "apply", "--server-side", "-k", str(MANIFESTS / "overlays/datacenter"), "-n", namespace
    )


def status_of(call: Callable[[], object]) -> int:
    """The HTTP status a call ends with: 200 when it succeeds."""
    try:
        call()
    except ApiException as exc:
        return int(exc.status)
    except KubeError as exc:
        return exc.status or 0
    return 200


def error_of(call: Callable[[], object]) -> str:
    try:
        call()
    except (ApiException, KubeError) as exc:
        return str(exc.body if isinstance(exc, ApiException) else exc)
    raise AssertionError("the call succeeded")


HOST_SPEC: dict[str, Any] = {
    "address": "192.0.2.10",
    "cluster": "c1",
    "capacity": {"cpu": 16, "memoryMiB": 65536},
}
VM_SPEC: dict[str, Any] = {
    "placement": {"cluster": "c1"},
    "runtime": {"driver": "process", "process": {"command": ["sleep", "3600"]}},
}
