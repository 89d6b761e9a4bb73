"""The API-server client: our kinds, Leases and Secrets, with typed errors.

Errors::

    KubeError            any failed call (message names the object, never a Secret value)
    ├── NotFound         404
    ├── Conflict         409: a resourceVersion precondition or create race lost
    └── SecretError      a referenced Secret or key is missing or unreadable
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from hafence.api import GROUP, KINDS, VERSION, Kind


class KubeError(RuntimeError):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotFound(KubeError):
    pass


class Conflict(KubeError):
    pass


class SecretError(KubeError):
    pass


_PLURALS: dict[str, Kind] = {k.kind: k for k in KINDS}


def _wrap(exc: ApiException, what: str) -> KubeError:
    reason = exc.reason or ""
    body = exc.body if isinstance(exc.body, str) else ""
    # The apiserver's message names the field that failed validation; keep it.
    detail = ""
    if body:
        import json

        try:
            detail = json.loads(body).get("message", "")
        except ValueError:
            detail = ""
    message = f"{what}: {exc.status} {reason}" + (f": {detail}" if detail else "")
    if exc.status == 404:
        return NotFound(message, 404)
    if exc.status == 409:
        return Conflict(message, 409)
    return KubeError(message, exc.status)


def load_api(kubeconfig: str | None = None, *, timeout: float = 10.0) -> Api:
    """From a kubeconfig path, ``$KUBECONFIG``/~/.kube/config, or in-cluster."""
    cfg = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    else:
        try:
            config.load_incluster_config(client_configuration=cfg)
        except config.ConfigException:
            config.load_kube_config(client_configuration=cfg)
    cfg.retries = 0  # callers own retry policy; a hidden retry hides an outage
    return Api(client.ApiClient(cfg), timeout=timeout)


class Api:
    def __init__(self, api_client: client.ApiClient, timeout: float = 10.0) -> None:
        self.client = api_client
        self.timeout = timeout
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)

    def close(self) -> None:
        self.client.close()

    # -- our kinds -----------------------------------------------------------------
    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        try:
            obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                _PLURALS[kind].plural,
                name,
                _request_timeout=self.timeout,
            )
        except ApiException as exc:
            raise _wrap(exc, f"get {kind} {namespace}/{name}") from None
        return obj

    def list(self, kind: str, namespace: str | None, label_selector: str = "") -> dict[str, Any]:
        plural = _PLURALS[kind].plural
        try:
            if namespace is None:
                out: dict[str, Any] = self.custom.list_cluster_custom_object(
                    GROUP,
                    VERSION,
                    plural,
                    label_selector=label_selector,
                    _request_timeout=self.timeout,
                )
            else:
                out = self.custom.list_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    plural,
                    label_selector=label_selector,
                    _request_timeout=self.timeout,
                )
        except ApiException as exc:
            raise _wrap(exc, f"list {kind} in {namespace or 'all namespaces'}") from None
        return out

    def create(self, kind: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, **body}
        try:
            obj: dict[str, Any] = self.custom.create_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                _PLURALS[kind].plural,
                body,
                _request_timeout=self.timeout,
            )
        except ApiException as exc:
            name = body.get("metadata", {}).get("name", "?")
            raise _wrap(exc, f"create {kind} {namespace}/{name}") from None
        return obj

    def patch(
        self,
        kind: str,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        *,
        status: bool = False,
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """JSON merge patch; with ``resource_version`` it fails with Conflict if stale."""
        if resource_version is not None:
            patch = {
                **patch,
                "metadata": {**patch.get("metadata", {}), "resourceVersion": resource_version},
            }
        plural = _PLURALS[kind].plural
        fn = (
            self.custom.patch_namespaced_custom_object_status
            if status
            else self.custom.patch_namespaced_custom_object
        )
        try:
            obj: dict[str, Any] = fn(
                GROUP,
                VERSION,
                namespace,
                plural,
                name,
                patch,
                _request_timeout=self.timeout,
                _content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            raise _wrap(
                exc, f"patch {kind}{'/status' if status else ''} {namespace}/{name}"
            ) from None
        return obj

    def delete(self, kind: str, namespace: str, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                _PLURALS[kind].plural,
                name,
                _request_timeout=self.timeout,
            )
        except ApiException as exc:
            raise _wrap(exc, f"delete {kind} {namespace}/{name}") from None

    def watch(
        self,
        kind: str,
        namespace: str,
        resource_version: str,
        timeout_seconds: int = 30,
        label_selector: str = "",
    ) -> Iterator[dict[str, Any]]:
        """Watch events ({'type', 'object'}) from ``resource_version``; ends on timeout."""
        w = watch.Watch()
        try:
            yield from w.stream(
                self.custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                _PLURALS[kind].plural,
                resource_version=resource_version,
                timeout_seconds=timeout_seconds,
                label_selector=label_selector,
                _request_timeout=timeout_seconds + 5,
            )
        except ApiException as exc:
            raise _wrap(exc, f"watch {kind} in {namespace}") from None
        finally:
            w.stop()

    # -- Secrets -------------------------------------------------------------------
    def secret_value(self, namespace: str, name: str, key: str) -> bytes:
        """One key of a Secret.  Errors name the Secret and key, never the data."""
        return self.secret_values(namespace, name, key)[0]

    def secret_values(self, namespace: str, name: str, *keys: str) -> tuple[bytes, ...]:
        """Several keys of one Secret, read once (a username and its password)."""
        try:
            secret = self.core.read_namespaced_secret(
                name, namespace, _request_timeout=self.timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                raise SecretError(f"Secret {namespace}/{name} not found", 404) from None
            raise SecretError(
                f"Secret {namespace}/{name} unreadable: {exc.status} {exc.reason}", exc.status
            ) from None
        data = secret.data or {}
        for key in keys:
            if key not in data:
                present = ", ".join(sorted(data)) or "none"
                raise SecretError(f"Secret {namespace}/{name} has no key {key!r} (keys: {present})")
        return tuple(base64.b64decode(data[key]) for key in keys)
