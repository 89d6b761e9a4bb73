"""Resolving Hosts' SSH settings and FenceAgents from the real control plane."""

from __future__ import annotations

import base64

import pytest

from hafence.fencing.errors import ConfigError, HostKeyError, Unsupported
from hafence.fencing.resolve import host_agent_groups, host_ssh_target
from hafence.fencing.ssh import soft_fence
from hafence.kube import Api
from hafence.lab.sshd import Sshd

pytestmark = pytest.mark.controlplane


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def host(api: Api, ns: str, name: str, sshd: Sshd, **ssh: object) -> None:
    spec_ssh: dict[str, object] = {
        "port": sshd.port,
        "user": sshd.user,
        "privateKeySecretRef": {"name": "ssh", "key": "id_ed25519"},
        "knownHostsSecretRef": {"name": "ssh", "key": "known_hosts"},
    }
    spec_ssh.update(ssh)
    api.create(
        "Host",
        ns,
        {
            "metadata": {"name": name},
            "spec": {
                "address": "127.0.0.1",
                "cluster": "c1",
                "capacity": {"cpu": 4, "memoryMiB": 4096},
                "ssh": spec_ssh,
            },
        },
    )


async def test_soft_fence_with_keys_from_secrets(api: Api, namespace: str, sshd: Sshd) -> None:
    api.core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "ssh"},
            "data": {
                "id_ed25519": b64(sshd.client_key),
                "known_hosts": b64(sshd.known_hosts_line + "\n"),
            },
        },
    )
    host(api, namespace, "h1", sshd)
    target = await host_ssh_target(api, namespace, "h1")
    result = await soft_fence(target, "echo agent restarted", timeout=10)
    assert (result.exit_status, result.output) == (0, "agent restarted")
    assert "PRIVATE" not in repr(target)  # the key stays out of reprs and logs


async def test_missing_key_in_secret_and_unknown_host(api: Api, namespace: str, sshd: Sshd) -> None:
    api.core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "ssh"},
            "data": {
                "id_ed25519": b64(sshd.client_key),
                "other": b64("[127.0.0.1]:1 " + sshd.host_key),
            },
        },
    )
    host(api, namespace, "h1", sshd)
    with pytest.raises(ConfigError, match="has no key 'known_hosts'"):
        await host_ssh_target(api, namespace, "h1")
    host(api, namespace, "h2", sshd, knownHostsSecretRef={"name": "ssh", "key": "other"})
    target = await host_ssh_target(api, namespace, "h2")
    with pytest.raises(HostKeyError):
        await soft_fence(target, "true", timeout=10)
    with pytest.raises(ConfigError, match=r"Host .*/nobody not found"):
        await host_ssh_target(api, namespace, "nobody")


async def test_unknown_type_in_cluster_is_rejected(api: Api, namespace: str) -> None:
    # The CRD pattern admits any fence_* name; one that is not installed fails typed.
    api.create(
        "FenceAgent",
        namespace,
        {
            "metadata": {"name": "odd"},
            "spec": {
                "hostRef": {"name": "h1"},
                "type": "fence_nonexistent",
                "address": "127.0.0.1",
                "credentialsSecretRef": {"name": "bmc"},
            },
        },
    )
    api.core.create_namespaced_secret(
        namespace,
        {"metadata": {"name": "bmc"}, "data": {"username": b64("u"), "password": b64("p4ssword")}},
    )
    [[agent]] = await host_agent_groups(api, namespace, "h1")
    with pytest.raises(Unsupported, match="'fence_nonexistent' is not installed"):
        await agent.driver.status()
