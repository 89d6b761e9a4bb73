"""Fixtures of the user-guide tests: a small datacenter on the session's control plane.

The heartbeats are written by the test and the operator runs as a subprocess, as in
tests/operator (whose fixtures are reused here), so a test decides when a host goes
silent; the BMCs are simulated IPMI BMCs on loopback UDP (hafence.lab.bmc).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from hafence.kube import Api
from hafence.lab.bmc import BmcFarm, SimulatedBmc
from hafence.lab.controlplane import ControlPlane
from hafence.lab.ports import free_port
from hafence.lab.sshd import keygen
from tests.operator.conftest import heartbeats, start_operator  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[2]
HAFENCE = Path(sys.executable).parent / "hafence"
USER, PASSWORD = "power-only", "Gu1de-ipmi-pw"  # asserted never to show up in output
# What the guide's shell may find on PATH: the real kubectl and hafence, make for the
# Makefile targets, and what hack/kind.sh needs to say it skips.  Never docker or kind:
# the kind targets must take their documented "skipped" path here.
TOOLS = ("bash", "make", "dirname", "sed", "grep")


@pytest.fixture
def bmcs() -> Iterator[BmcFarm]:
    with BmcFarm() as farm:
        yield farm


@dataclass
class Shell:
    """Runs a guide command the way a user's shell would, against the test cluster."""

    env: dict[str, str]
    namespace: str

    def run(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/bash", "-c", command],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture
def shell(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> Shell:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").symlink_to(control_plane.binaries.kubectl)
    (bin_dir / "hafence").symlink_to(HAFENCE)
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found is not None, f"{tool} is needed on PATH"
        (bin_dir / tool).symlink_to(found)
    # The user's kubeconfig, its context set to the test's namespace (`kubectl config
    # set-context --current --namespace=...`): commands without -n act there.
    kubeconfig = yaml.safe_load(control_plane.kubeconfig.read_text())
    for context in kubeconfig["contexts"]:
        context["context"]["namespace"] = namespace
    user_kubeconfig = tmp_path / "kubeconfig"
    user_kubeconfig.touch(mode=0o600)
    user_kubeconfig.write_text(yaml.safe_dump(kubeconfig))
    env = {
        "PATH": str(bin_dir),
        "HOME": str(tmp_path),
        "KUBECONFIG": str(user_kubeconfig),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "TMPDIR": str(tmp_path),
        # HOME is the test's, so the binaries' cache is named the documented other way.
        "KUBEBUILDER_ASSETS": str(control_plane.binaries.kubectl.parent),
    }
    return Shell(env, namespace)


def ipmi_secret(api: Api, namespace: str, name: str = "ipmi", password: str = PASSWORD) -> None:
    api.core.create_namespaced_secret(
        namespace,
        {"metadata": {"name": name}, "stringData": {"username": USER, "password": password}},
    )


def host(name: str, cluster: str = "prod-a") -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "address": "127.0.0.1",
            "cluster": cluster,
            "capacity": {"cpu": 8, "memoryMiB": 8192},
        },
    }


def ipmi_agent(
    name: str, host_name: str, bmc: SimulatedBmc, secret: str = "ipmi", order: int = 1
) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "hostRef": {"name": host_name},
            "type": "ipmilan",
            "address": "127.0.0.1",
            "port": bmc.port,
            "credentialsSecretRef": {"name": secret},
            "options": "lanplus=1",
            "order": order,
            "timeoutSeconds": 3,
            "powerWaitSeconds": 10,
        },
    }


def ha_vm(name: str, preferred: str, cluster: str = "prod-a") -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "highlyAvailable": True,
            "priority": "High",
            "resources": {"cpu": 1, "memoryMiB": 512},
            "placement": {"cluster": cluster, "preferredHosts": [preferred]},
            "runtime": {"driver": "process", "process": {"command": ["sleep", "infinity"]}},
        },
    }


def status(api: Api, kind: str, namespace: str, name: str) -> dict[str, Any]:
    return api.get(kind, namespace, name).get("status") or {}


def ssh_to_nowhere(api: Api, namespace: str, tmp: Path) -> dict[str, Any]:
    """An SSH block whose port nobody listens on: what a cut network looks like."""
    private, _ = keygen(tmp / "operator-key")
    _, host_key = keygen(tmp / "host-key")
    api.core.create_namespaced_secret(
        namespace, {"metadata": {"name": "hafence-ssh"}, "stringData": {"ssh-privatekey": private}}
    )
    return {
        "port": free_port(),
        "user": "root",
        "privateKeySecretRef": {"name": "hafence-ssh", "key": "ssh-privatekey"},
        "hostKey": host_key,
        "timeoutSeconds": 3,
    }
