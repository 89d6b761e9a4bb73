"""One error model in kube/: every failure of a call against the real API server, through
the fault proxy, comes out as a typed KubeError that says whether it is transient."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hafence.kube import Api, KubeError, NotFound, SecretError, Unavailable, load_api
from hafence.lab.faultproxy import FaultProxy
from hafence.lab.netcut import server_of
from hafence.lab.ports import free_port

pytestmark = pytest.mark.controlplane


@pytest.fixture
def proxied(kubeconfig: str, tmp_path: Path) -> Iterator[tuple[FaultProxy, Api]]:
    with FaultProxy(*server_of(Path(kubeconfig))) as proxy:
        cfg = proxy.kubeconfig(Path(kubeconfig), tmp_path / "proxied.kubeconfig")
        client = load_api(str(cfg), timeout=1.0)
        yield proxy, client
        client.close()


@pytest.mark.parametrize("fault", ["reset", "reject", "stall"])
def test_transport_faults_are_transient_kube_errors(
    proxied: tuple[FaultProxy, Api], namespace: str, fault: str
) -> None:
    proxy, api = proxied
    api.core.create_namespaced_secret(
        namespace, {"metadata": {"name": "creds"}, "stringData": {"password": "pw-9f3c"}}
    )
    assert api.secret_value(namespace, "creds", "password") == b"pw-9f3c"  # path works
    proxy.inject(fault)  # type: ignore[arg-type]
    try:
        with pytest.raises(Unavailable) as got:
            api.get("Host", namespace, "h1")
        assert got.value.transient and got.value.status is None
        with pytest.raises(SecretError) as secret:
            api.secret_value(namespace, "creds", "password")
        assert secret.value.transient
        assert "pw-9f3c" not in str(secret.value)
        with pytest.raises(KubeError) as lease:
            api.read_lease(namespace, "h1")
        assert lease.value.transient
    finally:
        proxy.restore()
    with pytest.raises(NotFound) as missing:  # the path is back: a real answer again
        api.get("Host", namespace, "h1")
    assert not missing.value.transient and missing.value.status == 404


def test_nothing_listening_is_transient(kubeconfig: str, tmp_path: Path) -> None:
    port = free_port()
    with FaultProxy("127.0.0.1", port) as proxy:  # forwards to a closed port
        cfg = proxy.kubeconfig(Path(kubeconfig), tmp_path / "closed.kubeconfig")
        api = load_api(str(cfg), timeout=1.0)
        with pytest.raises(Unavailable):
            api.list("Host", f"ns-{uuid.uuid4().hex[:6]}")
        api.close()
