"""From the cluster to drivers: FenceAgents of a host, their Secrets, SSH targets.

Secrets are read at call time, for one operation, and never kept: a rotated password
takes effect on the next fence.  Kubernetes calls are synchronous (hafence.kube) and
run in threads.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from hafence.api import grammar
from hafence.api.fenceagent import FenceAgentSpec
from hafence.api.host import HostSpec, SSHSpec
from hafence.fencing.drivers import build_driver
from hafence.fencing.errors import ConfigError
from hafence.fencing.protocol import Credentials, FenceDriver, SSHTarget
from hafence.kube import Api, KubeError, NotFound, SecretError


@dataclass
class ResolvedAgent:
    name: str
    spec: FenceAgentSpec
    driver: FenceDriver
    resource_version: str = ""
    generation: int | None = None


def _secret(api: Api, namespace: str, name: str, *keys: str) -> tuple[bytes, ...]:
    try:
        return api.secret_values(namespace, name, *keys)
    except KubeError as exc:
        if exc.transient:  # the API server did not answer: the caller may try again
            raise
        if not isinstance(exc, SecretError):
            raise ConfigError(f"Secret {namespace}/{name}: {exc}") from None
        raise ConfigError(str(exc)) from None


def load_credentials(api: Api, namespace: str, spec: FenceAgentSpec) -> Credentials | None:
    ref = spec.credentials_secret_ref
    if ref is None:
        return None
    username, password = _secret(api, namespace, ref.name, ref.username_key, ref.password_key)
    return Credentials(username.decode().strip(), password.decode().rstrip("\n"))


def ssh_target(api: Api, namespace: str, host_name: str, host: HostSpec) -> SSHTarget:
    """The SSH endpoint of a Host (soft fencing, or as a fence proxy), keys loaded now."""
    ssh: SSHSpec | None = host.ssh
    if ssh is None:
        raise ConfigError(f"Host {namespace}/{host_name} has no spec.ssh")
    ref = ssh.private_key_secret_ref
    key = _secret(api, namespace, ref.name, ref.key)[0].decode()
    known = None
    if ssh.known_hosts_secret_ref is not None:
        ref = ssh.known_hosts_secret_ref
        known = _secret(api, namespace, ref.name, ref.key)[0].decode()
    return SSHTarget(
        address=host.address,
        private_key=key,
        port=ssh.port,
        user=ssh.user,
        # A pasted .pub line carries a comment; only TYPE BASE64 is the key.
        host_key=grammar.host_key_material(ssh.host_key) if ssh.host_key else None,
        known_hosts=known,
        name=host_name,
    )


def _parse_agent(obj: dict[str, Any]) -> FenceAgentSpec:
    meta = obj.get("metadata", {})
    try:
        return FenceAgentSpec.model_validate(obj.get("spec", {}))
    except ValidationError as exc:
        raise ConfigError(
            f"FenceAgent {meta.get('namespace')}/{meta.get('name')}: "
            f"invalid spec: {exc.errors()[0].get('msg')}"
        ) from None


def _resolve(
    api: Api, namespace: str, obj: dict[str, Any], proxy: SSHTarget | None
) -> ResolvedAgent:
    meta = obj["metadata"]
    spec = _parse_agent(obj)
    driver = build_driver(spec, load_credentials(api, namespace, spec), proxy, name=meta["name"])
    return ResolvedAgent(
        meta["name"], spec, driver, meta.get("resourceVersion", ""), meta.get("generation")
    )


def resolve_agent_sync(
    api: Api, namespace: str, name: str, proxy: SSHTarget | None = None
) -> ResolvedAgent:
    try:
        obj = api.get("FenceAgent", namespace, name)
    except NotFound:
        raise ConfigError(f"FenceAgent {namespace}/{name} not found") from None
    return _resolve(api, namespace, obj, proxy)


def host_agent_groups_sync(
    api: Api, namespace: str, host: str, proxy: SSHTarget | None = None
) -> list[list[ResolvedAgent]]:
    """The host's FenceAgents as concurrent groups, lowest ``order`` first."""
    items = api.list("FenceAgent", namespace).get("items", [])
    mine = [o for o in items if o.get("spec", {}).get("hostRef", {}).get("name") == host]
    agents = sorted(
        (_resolve(api, namespace, o, proxy) for o in mine), key=lambda a: (a.spec.order, a.name)
    )
    return [list(g) for _, g in itertools.groupby(agents, key=lambda a: a.spec.order)]


async def resolve_agent(
    api: Api, namespace: str, name: str, proxy: SSHTarget | None = None
) -> ResolvedAgent:
    return await asyncio.to_thread(resolve_agent_sync, api, namespace, name, proxy)


async def host_agent_groups(
    api: Api, namespace: str, host: str, proxy: SSHTarget | None = None
) -> list[list[ResolvedAgent]]:
    return await asyncio.to_thread(host_agent_groups_sync, api, namespace, host, proxy)


async def host_ssh_target(api: Api, namespace: str, host: str) -> SSHTarget:
    def load() -> SSHTarget:
        try:
            obj = api.get("Host", namespace, host)
        except NotFound:
            raise ConfigError(f"Host {namespace}/{host} not found") from None
        return ssh_target(api, namespace, host, HostSpec.model_validate(obj["spec"]))

    return await asyncio.to_thread(load)
