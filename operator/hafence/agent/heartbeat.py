"""Writing the host's heartbeat Lease (format in hafence.api.lease).

Every write is a full replace guarded by the resourceVersion of our last write: a
Conflict means someone else wrote the Lease (another agent instance, a person), so
we re-read and write again rather than blindly overwrite.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from hafence.api.lease import lease_body, validate_boot_id
from hafence.kube import Api, KubeError

log = logging.getLogger("hafence.agent")

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


def read_boot_id(path: Path = BOOT_ID_PATH) -> str:
    try:
        return validate_boot_id(path.read_text().strip())
    except OSError as exc:
        raise OSError(f"cannot read the boot ID from {path}: {exc.strerror}") from None


def _status(exc: ApiException, what: str) -> KubeError:
    return KubeError(f"{what}: {exc.status} {exc.reason}", exc.status)


class LeaseWriter:
    def __init__(
        self,
        api: Api,
        *,
        host: str,
        namespace: str,
        instance_id: str,
        lease_duration_seconds: int,
    ) -> None:
        self.api = api
        self.host = host
        self.namespace = namespace
        self.instance_id = instance_id
        self.duration = lease_duration_seconds
        self._rv: str | None = None
        self._acquired: datetime | None = None
        self.writes = 0

    def _body(self, now: datetime, annotations: Mapping[str, str]) -> dict[str, Any]:
        if self._acquired is None:
            self._acquired = now
        return lease_body(
            host=self.host,
            namespace=self.namespace,
            instance_id=self.instance_id,
            lease_duration_seconds=self.duration,
            renew_time=now,
            acquire_time=self._acquired,
            annotations=annotations,
            resource_version=self._rv,
        )

    @property
    def version(self) -> str | None:
        """The resourceVersion the next write is guarded by (None: read or create first)."""
        return self._rv

    def prime(self) -> None:
        """Read the Lease's resourceVersion ahead of the first renewal (a missing Lease
        is left for ``renew`` to create); raise KubeError."""
        if self._rv is not None:
            return
        try:
            self._read_version()
        except ApiException as exc:
            raise _status(exc, f"read Lease {self.namespace}/{self.host}") from None

    def _read_version(self) -> None:
        """The stored Lease's resourceVersion into ``_rv`` (left None when there is none)."""
        try:
            current = self.api.coordination.read_namespaced_lease(
                self.host, self.namespace, _request_timeout=self.api.timeout
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            return
        self._rv = current.metadata.resource_version

    def renew(self, now: datetime, annotations: Mapping[str, str]) -> None:
        """Write the Lease once (two calls at most after a Conflict); raise KubeError."""
        what = f"renew Lease {self.namespace}/{self.host}"
        coord = self.api.coordination
        for _ in range(2):
            try:
                if self._rv is None:
                    self._read_version()
                if self._rv is None:
                    created = coord.create_namespaced_lease(
                        self.namespace,
                        self._body(now, annotations),
                        _request_timeout=self.api.timeout,
                    )
                    self._rv = created.metadata.resource_version
                    self.writes += 1
                    return
                replaced = coord.replace_namespaced_lease(
                    self.host,
                    self.namespace,
                    self._body(now, annotations),
                    _request_timeout=self.api.timeout,
                )
                self._rv = replaced.metadata.resource_version
                self.writes += 1
                return
            except ApiException as exc:
                if exc.status == 409 and self.writes:
                    # Someone else wrote our Lease since our last renewal.  Another
                    # agent for the same host would break S3; say so loudly.
                    log.error(
                        "Lease %s/%s was written by someone else (another agent "
                        "with --host %s?); taking it back",
                        self.namespace,
                        self.host,
                        self.host,
                    )
                if exc.status in (404, 409):
                    self._rv = None  # deleted or written by someone else: re-read
                    continue
                raise _status(exc, what) from None
        raise KubeError(f"{what}: lost two resourceVersion races in a row", 409)
