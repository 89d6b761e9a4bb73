"""Shared fixtures: one real control plane per test session, a fresh namespace per test.

The control plane is etcd + kube-apiserver on loopback (hafence.lab.controlplane),
built once into ~/.cache/hafence; the CRDs from crds/ are installed into it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hafence.kube import Api, load_api
from hafence.lab.controlplane import ControlPlane

ROOT = Path(__file__).resolve().parent.parent
CRDS = ROOT / "crds"


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    with ControlPlane() as cp:
        cp.kubectl("apply", "--server-side", "-f", str(CRDS))
        cp.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        yield cp


@pytest.fixture(scope="session")
def kubeconfig(control_plane: ControlPlane) -> str:
    return str(control_plane.kubeconfig)


@pytest.fixture
def api(kubeconfig: str) -> Iterator[Api]:
    client = load_api(kubeconfig)
    yield client
    client.close()


@pytest.fixture
def namespace(request: pytest.FixtureRequest, api: Api) -> str:
    """A namespace of its own for each test (no controller-manager: never deleted)."""
    base = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:6]}"
    api.core.create_namespace({"metadata": {"name": name}})
    return name
