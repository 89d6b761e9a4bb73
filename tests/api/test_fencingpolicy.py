"""FencingPolicy in a real kube-apiserver: a full policy is accepted with its printer
columns; bad input is rejected by the API server naming the field and a right value."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from hafence.lab.controlplane import ControlPlane

pytestmark = pytest.mark.controlplane

GOOD: dict[str, Any] = {
    "apiVersion": "hafence.io/v1alpha1",
    "kind": "FencingPolicy",
    "metadata": {"name": "default"},
    "spec": {
        "default": {
            "fencingEnabled": True,
            "skipIfConnectivityBroken": True,
            "connectivityThresholdPercent": 50,
            "connectingGraceSeconds": 10,
            "connectingGracePerVMSeconds": 0.5,
            "connectingGraceMaxSeconds": 60,
            "softFenceTimeoutSeconds": 30,
            "fenceRetry": {"baseSeconds": 60, "factor": 2, "maxSeconds": 900},
            "maxConcurrentFences": 5,
            "startupQuietPeriodSeconds": 60,
            "vmRestart": {"fastIntervalSeconds": 30, "fastCount": 10, "slowIntervalSeconds": 1800},
        },
        "clusters": [
            {"cluster": "lab", "skipIfConnectivityBroken": False},
            {"cluster": "rack-b", "fencingEnabled": False},
        ],
    },
}


def create(cp: ControlPlane, namespace: str, body: dict[str, Any]) -> tuple[int, str]:
    # kubectl validates strictly (unknown fields are errors), as users meet it.
    proc = cp.kubectl("create", "-n", namespace, "-f", "-", input=yaml.safe_dump(body), check=False)
    return proc.returncode, proc.stderr


def with_(path: str, value: Any) -> dict[str, Any]:
    body = json.loads(json.dumps(GOOD))
    node = body
    *parents, leaf = path.split(".")
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    node[leaf] = value  # type: ignore[index]
    return body


def test_full_policy_accepted_and_listed(control_plane: ControlPlane, namespace: str) -> None:
    code, err = create(control_plane, namespace, GOOD)
    assert code == 0, err
    out = control_plane.kubectl("get", "fencingpolicies", "-n", namespace).stdout
    header = out.splitlines()[0].split()
    assert header == [
        "NAME",
        "INFORCE",
        "FENCING",
        "SKIPBROKEN",
        "THRESHOLD",
        "GRACE",
        "SOFTFENCE",
        "AGE",
    ]
    assert out.splitlines()[1].startswith("default")


BAD = [
    (
        "unknown-field",
        "spec.default.fencingEnabledd",
        True,
        ['unknown field "spec.default.fencingEnabledd"'],
    ),
    (
        "negative-duration",
        "spec.default.softFenceTimeoutSeconds",
        -1,
        ["spec.default.softFenceTimeoutSeconds", "greater than or equal to 0"],
    ),
    (
        "negative-retry",
        "spec.default.fenceRetry.baseSeconds",
        -5,
        ["spec.default.fenceRetry.baseSeconds", "greater than or equal to 0"],
    ),
    (
        "threshold-zero",
        "spec.default.connectivityThresholdPercent",
        0,
        ["spec.default.connectivityThresholdPercent", "greater than or equal to 1"],
    ),
    (
        "threshold-over-100",
        "spec.clusters.0.connectivityThresholdPercent",
        101,
        ["spec.clusters[0].connectivityThresholdPercent", "less than or equal to 100"],
    ),
    (
        "grace-max-below-grace",
        "spec.default.connectingGraceMaxSeconds",
        5,
        [
            "spec.default.connectingGraceMaxSeconds",
            "connectingGraceMaxSeconds must be at least connectingGraceSeconds (e.g. 60",
        ],
    ),
    (
        "cluster-twice",
        "spec.clusters.1.cluster",
        "lab",
        ["spec.clusters", "each cluster may be listed once"],
    ),
    (
        "bad-cluster-name",
        "spec.clusters.0.cluster",
        "Lab_1",
        ["spec.clusters[0].cluster", "should match"],
    ),
    ("zero-concurrency", "spec.default.maxConcurrentFences", 0, ["maxConcurrentFences"]),
]


@pytest.mark.parametrize(
    ("path", "value", "fragments"), [pytest.param(*c[1:], id=c[0]) for c in BAD]
)
def test_bad_policy_rejected_naming_the_field(
    control_plane: ControlPlane, namespace: str, path: str, value: Any, fragments: list[str]
) -> None:
    code, err = create(control_plane, namespace, with_(path, value))
    assert code != 0, f"accepted: {path}={value!r}"
    for fragment in fragments:
        assert fragment in err, err
