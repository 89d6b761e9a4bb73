"""Fixtures of the deployment tests: acting as hafence's ServiceAccounts.

``identity_api(namespace, service_account)`` asks the TokenRequest API for a real token
and returns an Api that authenticates with it, so RBAC and the admission policies are
checked by the API server itself, not by reading the YAML.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hafence.kube import Api, load_api
from hafence.lab.controlplane import ControlPlane, kubeconfig_text


@pytest.fixture
def identity_kubeconfig(
    control_plane: ControlPlane, api: Api, tmp_path: Path
) -> Callable[[str, str], Path]:
    """``identity_kubeconfig(namespace, service_account)``: a kubeconfig file (mode 0600)
    holding a fresh token of that account, from the TokenRequest API."""

    def make(namespace: str, service_account: str) -> Path:
        request = api.core.create_namespaced_service_account_token(
            service_account, namespace, {"spec": {"expirationSeconds": 600}}
        )
        path = tmp_path / f"{namespace}-{service_account}.kubeconfig"
        path.touch(mode=0o600)
        path.write_text(
            kubeconfig_text(
                control_plane.url,
                control_plane.dir / "pki" / "ca.crt",
                None,
                None,
                token=request.status.token,
                user=service_account,
            )
        )
        return path

    return make


@pytest.fixture
def identity_api(
    identity_kubeconfig: Callable[[str, str], Path],
) -> Iterator[Callable[[str, str], Api]]:
    """``identity_api(namespace, service_account)``: an Api with that account's token."""
    opened: list[Api] = []

    def make(namespace: str, service_account: str) -> Api:
        client = load_api(str(identity_kubeconfig(namespace, service_account)))
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.close()
