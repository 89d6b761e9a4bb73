"""SSH targets of the operator's power operations: a Host to soft-fence, a fence proxy.

A Host's ``spec.ssh`` and the Secrets it names (the private key, the optional
known_hosts) become an :class:`SSHTarget` right before each use, so a rotated key
applies at the next step.  A proxy is named by its Host; one no longer declared is a
``KubeError`` the step reports like any failed read.  The reads are retried on
transient errors (``reads.py``), inside the step's budget.
"""

from __future__ import annotations

from hafence.api.host import HostSpec
from hafence.controller.cache import Cache
from hafence.controller.reads import read_with_retries
from hafence.fencing.protocol import SSHTarget
from hafence.fencing.resolve import ssh_target
from hafence.kube import Api, KubeError


class SSHTargets:
    def __init__(self, api: Api, namespace: str, cache: Cache) -> None:
        self.api = api
        self.namespace = namespace
        self.cache = cache

    async def of_host(self, name: str, spec: HostSpec) -> SSHTarget:
        """The target that soft-fences ``name`` (its ``spec`` as the caller read it)."""
        return await read_with_retries(ssh_target, self.api, self.namespace, name, spec)

    async def of_proxy(self, host_name: str) -> SSHTarget:
        """The Host ``host_name`` as a fence proxy, from the operator's cache."""
        obj = self.cache.get("Host", self.namespace, host_name)
        if obj is None:
            raise KubeError(f"proxy host {host_name} no longer declared")
        return await self.of_host(host_name, HostSpec.model_validate(obj["spec"]))
