"""The generated CRDs in a real kube-apiserver: installed, samples accepted, bad input
rejected early with a message that names the field."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from hafence.api import KINDS
from hafence.kube import Api, KubeError

pytestmark = pytest.mark.controlplane

SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"


def test_crds_established(api: Api) -> None:
    ext = api.client  # apiextensions through the generic client
    from kubernetes.client import ApiextensionsV1Api

    crds = ApiextensionsV1Api(ext)
    for kind in KINDS:
        crd = crds.read_custom_resource_definition(kind.crd_name)
        conditions = {c.type: c.status for c in crd.status.conditions}
        assert conditions.get("Established") == "True", kind.kind
        assert conditions.get("NamesAccepted") == "True", kind.kind
        assert crd.spec.names.categories == ["hafence"]


def test_every_sample_is_created(control_plane, namespace: str) -> None:
    files = sorted(SAMPLES.glob("*.yaml"))
    assert len(files) >= 5
    for path in files:
        control_plane.kubectl("create", "-n", namespace, "-f", str(path))
    listing = control_plane.kubectl(
        "get",
        "hosts,fenceagents,havirtualmachines,fenceconfirmations",
        "-n",
        namespace,
        "-o",
        "json",
    )
    items = json.loads(listing.stdout)["items"]
    created = {(i["kind"], i["metadata"]["name"]) for i in items}
    expected = {
        (doc["kind"], doc["metadata"]["name"])
        for path in files
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc["kind"] != "Secret"
    }
    assert expected <= created
    # Defaults from the schema are applied by the apiserver.
    agent = next(i for i in items if i["metadata"]["name"] == "hv-a1-ilo")
    assert agent["spec"]["timeoutSeconds"] == 20
    host = next(i for i in items if i["metadata"]["name"] == "hv-a2")
    assert host["spec"]["ssh"]["port"] == 22
    assert host["spec"]["selfFencing"] == {"enabled": False, "watchdogTimeoutSeconds": 60}


def test_category_lists_all_kinds(control_plane, namespace: str) -> None:
    for path in sorted(SAMPLES.glob("*.yaml")):
        control_plane.kubectl("create", "-n", namespace, "-f", str(path))
    # kubectl's discovery cache may predate the CRDs for a moment.
    deadline = time.monotonic() + 30
    while True:
        out = control_plane.kubectl("get", "hafence", "-n", namespace, check=False)
        if out.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for fragment in (
        "host.hafence.io/hv-a1",
        "fenceagent.hafence.io/hv-a1-ilo",
        "havirtualmachine.hafence.io/db-primary",
        "fenceconfirmation.hafence.io/hv-a3-power-loss",
    ):
        assert fragment in text
    # Printer columns: what an operator wants at a glance.
    hosts = control_plane.kubectl("get", "hosts", "-n", namespace).stdout.splitlines()[0].split()
    assert hosts == ["NAME", "PHASE", "CLUSTER", "HEARTBEAT", "VMS", "AGE"]
    agents = control_plane.kubectl("get", "fa", "-n", namespace).stdout.splitlines()[0].split()
    assert agents == ["NAME", "HOST", "TYPE", "ORDER", "POWER", "REACHABLE", "AGE"]
    vms = control_plane.kubectl("get", "havms", "-n", namespace).stdout.splitlines()[0].split()
    assert vms == ["NAME", "PHASE", "HOST", "PRIORITY", "HA", "AGE"]
    confirmations = control_plane.kubectl("get", "fc", "-n", namespace).stdout
    assert confirmations.splitlines()[0].split() == ["NAME", "HOST", "PHASE", "BY", "AGE"]


# --- invalid input -----------------------------------------------------------------

HOST: dict[str, Any] = {
    "metadata": {"name": "h1"},
    "spec": {"address": "10.0.0.1", "cluster": "prod", "capacity": {"cpu": 8, "memoryMiB": 1024}},
}
AGENT: dict[str, Any] = {
    "metadata": {"name": "a1"},
    "spec": {
        "hostRef": {"name": "h1"},
        "type": "ipmilan",
        "address": "bmc1",
        "credentialsSecretRef": {"name": "creds"},
    },
}
KDUMP: dict[str, Any] = {
    "metadata": {"name": "k1"},
    "spec": {"hostRef": {"name": "h1"}, "type": "kdump", "address": "192.0.2.11", "order": 0},
}
VM: dict[str, Any] = {
    "metadata": {"name": "vm1"},
    "spec": {
        "placement": {"cluster": "prod"},
        "runtime": {"driver": "process", "process": {"command": ["sleep", "1"]}},
    },
}
CONFIRM: dict[str, Any] = {
    "metadata": {"name": "c1"},
    "spec": {"hostRef": {"name": "h1"}, "reason": "checked on site"},
}


def _set(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    *parents, leaf = path.split(".")
    node = out
    for p in parents:
        node = node.setdefault(p, {})
    if value is _DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return out


_DELETE = object()

INVALID = [
    # (id, kind, base, path, value, fragments the apiserver's message must contain)
    ("host-cpu-string", "Host", HOST, "spec.capacity.cpu", "eight", ["spec.capacity.cpu"]),
    ("host-cpu-zero", "Host", HOST, "spec.capacity.cpu", 0, ["spec.capacity.cpu"]),
    ("host-missing-address", "Host", HOST, "spec.address", _DELETE, ["spec.address"]),
    ("host-bad-cluster", "Host", HOST, "spec.cluster", "Prod_A", ["spec.cluster"]),
    (
        "host-ssh-no-hostkey",
        "Host",
        HOST,
        "spec.ssh",
        {"privateKeySecretRef": {"name": "k", "key": "id"}},
        ["spec.ssh", "hostKey"],
    ),
    (
        "host-ssh-port",
        "Host",
        HOST,
        "spec.ssh",
        {
            "port": 70000,
            "privateKeySecretRef": {"name": "k", "key": "id"},
            "hostKey": "ssh-ed25519 AAAA",
        },
        ["spec.ssh.port"],
    ),
    (
        "host-proxy-enum",
        "Host",
        HOST,
        "spec.powerManagement",
        {"proxyPreference": ["datacenter"]},
        ["spec.powerManagement.proxyPreference[0]"],
    ),
    (
        "host-watchdog-short",
        "Host",
        HOST,
        "spec.selfFencing",
        {"enabled": True, "watchdogTimeoutSeconds": 1},
        ["spec.selfFencing.watchdogTimeoutSeconds"],
    ),
    ("agent-unknown-type", "FenceAgent", AGENT, "spec.type", "ilo9", ["spec.type"]),
    ("agent-negative-order", "FenceAgent", AGENT, "spec.order", -1, ["spec.order"]),
    (
        "agent-no-credentials",
        "FenceAgent",
        AGENT,
        "spec.credentialsSecretRef",
        _DELETE,
        ["spec.credentialsSecretRef"],
    ),
    ("agent-bad-options", "FenceAgent", AGENT, "spec.options", "ssl=yes,,=x", ["spec.options"]),
    ("agent-missing-hostref", "FenceAgent", AGENT, "spec.hostRef", _DELETE, ["spec.hostRef"]),
    ("agent-port-range", "FenceAgent", AGENT, "spec.port", 0, ["spec.port"]),
    # kdump messages are matched by source address: an IP, and timeout= the only option.
    ("kdump-address-name", "FenceAgent", KDUMP, "spec.address", "hv1.mgmt", ["spec.address"]),
    (
        "kdump-other-option",
        "FenceAgent",
        KDUMP,
        "spec.options",
        "ipport=7411",
        ["spec.options", "timeout=SECONDS"],
    ),
    ("kdump-timeout-range", "FenceAgent", KDUMP, "spec.options", "timeout=0", ["spec.options"]),
    ("vm-bad-priority", "HAVirtualMachine", VM, "spec.priority", "Urgent", ["spec.priority"]),
    (
        "vm-bad-run-strategy",
        "HAVirtualMachine",
        VM,
        "spec.runStrategy",
        "Sometimes",
        ["spec.runStrategy"],
    ),
    (
        "vm-driver-without-settings",
        "HAVirtualMachine",
        VM,
        "spec.runtime",
        {"driver": "libvirt"},
        ["spec.runtime"],
    ),
    (
        "vm-empty-command",
        "HAVirtualMachine",
        VM,
        "spec.runtime.process.command",
        [],
        ["spec.runtime.process.command"],
    ),
    (
        "vm-libvirt-both",
        "HAVirtualMachine",
        VM,
        "spec.runtime",
        {"driver": "libvirt", "libvirt": {"domainName": "a", "domainXML": "<domain/>"}},
        ["spec.runtime.libvirt"],
    ),
    ("confirm-empty-reason", "FenceConfirmation", CONFIRM, "spec.reason", "", ["spec.reason"]),
    ("confirm-blank-reason", "FenceConfirmation", CONFIRM, "spec.reason", "   ", ["spec.reason"]),
    (
        "confirm-missing-host",
        "FenceConfirmation",
        CONFIRM,
        "spec.hostRef",
        _DELETE,
        ["spec.hostRef"],
    ),
]


@pytest.mark.parametrize(
    ("kind", "base", "path", "value", "fragments"),
    [pytest.param(*case[1:], id=case[0]) for case in INVALID],
)
def test_invalid_manifest_rejected_naming_field(
    api: Api, namespace: str, kind, base, path, value, fragments
) -> None:
    body = _set(base, path, value)
    with pytest.raises(KubeError) as err:
        api.create(kind, namespace, body)
    message = str(err.value)
    assert err.value.status == 422, message
    for fragment in fragments:
        assert fragment in message, message


def test_a_kdump_agent_needs_no_secret(api: Api, namespace: str) -> None:
    for name, spec in (("k1", {}), ("k2", {"type": "fence_kdump", "options": "timeout=45"})):
        body = _set(_set(KDUMP, "metadata.name", name), "spec", KDUMP["spec"] | spec)
        api.create("FenceAgent", namespace, body)


def test_confirmation_spec_is_immutable(api: Api, namespace: str) -> None:
    api.create("FenceConfirmation", namespace, copy.deepcopy(CONFIRM))
    with pytest.raises(KubeError) as err:
        api.patch("FenceConfirmation", namespace, "c1", {"spec": {"reason": "changed my mind"}})
    assert err.value.status == 422
    assert "immutable" in str(err.value)
    assert api.get("FenceConfirmation", namespace, "c1")["spec"]["reason"] == "checked on site"
