"""The API-server client: our kinds, Leases and Secrets, with typed errors.

Every failure of a call comes out of this module as a ``KubeError`` -- an HTTP status,
a refused or reset connection, a read timeout, a TLS failure, urllib3's
``MaxRetryError``/``ProtocolError``, a socket error -- never as the client library's
own exception.  Each says whether trying again may help (``transient``): callers own
the retry policy (bounded backoff, or giving the failure to the core as an input), this
module never retries.

Errors::

    KubeError            any failed call (message names the object, never a Secret value)
    │                    .status: the HTTP status, None when there was no response
    │                    .transient: True when the same call may succeed later
    ├── NotFound         404 (permanent)
    ├── Conflict         409: a resourceVersion precondition or create race lost
    │                    (permanent for that precondition: re-read, then decide)
    ├── Gone             410: a watch's resourceVersion is too old (list again)
    ├── Unavailable      no answer, or one that says "later" (transient): connection
    │                    refused/reset, read timeout, TLS, protocol errors, 408, 429, 5xx
    └── SecretError      a referenced Secret or key is missing or unreadable
                         (transient when the read failed for one of Unavailable's reasons)
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import functools
import http.client
import json
import socket
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import urllib3
import urllib3.exceptions
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from hafence.api import GROUP, KINDS, VERSION, Kind

T = TypeVar("T")
# Keep-alive connections per client: the operator's pools' threads together.
CONNECTIONS = 48
# Objects per page of a list (client-go's pager default is 500 too).
PAGE_SIZE = 500
# Statuses that say "not now" rather than "never": timeout, throttled, server trouble.
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# What the client library raises when there is no (complete) HTTP answer.
_TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)


class KubeError(RuntimeError):
    def __init__(
        self, message: str, status: int | None = None, *, transient: bool | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.transient = (status in TRANSIENT_STATUSES) if transient is None else transient


class NotFound(KubeError):
    pass


class Gone(KubeError):
    """410: a watch's resourceVersion is too old; list again."""


class Conflict(KubeError):
    pass


class Unavailable(KubeError):
    """No usable answer: try again later."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message, status, transient=True)


class SecretError(KubeError):
    pass


def _transport(exc: BaseException) -> str:
    """A transport failure in a few words, without the URL's query or any payload."""
    reason = getattr(exc, "reason", None)  # MaxRetryError wraps the real cause
    cause = reason if isinstance(reason, BaseException) else exc
    return f"{type(cause).__name__}: {cause}"[:300]


def call(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` with every failure turned into a typed ``KubeError``
    (for the few calls made on the generated clients directly, e.g. Leases)."""
    try:
        return fn(*args, **kwargs)
    except _FAILURES as exc:
        raise _wrap(exc, what) from None


_PLURALS: dict[str, Kind] = {k.kind: k for k in KINDS}
_FAILURES = (ApiException, *_TRANSPORT_ERRORS)


def _wrap(exc: BaseException, what: str) -> KubeError:
    if not isinstance(exc, ApiException):
        return Unavailable(f"{what}: no answer from the API server: {_transport(exc)}")
    reason = exc.reason or ""
    body = exc.body if isinstance(exc.body, str) else ""
    # The apiserver's message names the field that failed validation; keep it.
    detail = ""
    if body:
        try:
            detail = json.loads(body).get("message", "")
        except ValueError:
            detail = ""
    message = f"{what}: {exc.status} {reason}" + (f": {detail}" if detail else "")
    if exc.status == 404:
        return NotFound(message, 404)
    if exc.status == 409:
        return Conflict(message, 409)
    if exc.status == 410:
        return Gone(message, 410)
    if not exc.status:  # the client library's own failure, before any answer
        return Unavailable(message)
    if exc.status in TRANSIENT_STATUSES:
        return Unavailable(message, exc.status)
    return KubeError(message, exc.status)


def _path(kind: str, namespace: str | None, name: str = "") -> str:
    """The resource path of one of our kinds (all namespaces: ``namespace`` None)."""
    plural = _PLURALS[kind].plural
    where = "" if namespace is None else f"/namespaces/{urllib.parse.quote(namespace, safe='')}"
    item = f"/{urllib.parse.quote(name, safe='')}" if name else ""
    return f"/apis/{GROUP}/{VERSION}{where}/{plural}{item}"


def _selectors(label_selector: str, field_selector: str) -> builtins.list[tuple[str, str]]:
    out = []
    if label_selector:
        out.append(("labelSelector", label_selector))
    if field_selector:
        out.append(("fieldSelector", field_selector))
    return out


def _leases_path(namespace: str | None) -> str:
    if namespace is None:
        return "/apis/coordination.k8s.io/v1/leases"
    return f"/apis/coordination.k8s.io/v1/namespaces/{urllib.parse.quote(namespace)}/leases"


def _timeout(value: float | tuple[float, float]) -> urllib3.Timeout:
    if isinstance(value, tuple):
        return urllib3.Timeout(connect=value[0], read=value[1])
    return urllib3.Timeout(total=value)


def abort_response(resp: Any) -> None:
    """Unblock a thread reading ``resp`` (a watch) from another thread: shut its
    socket down (closing it from here could wait on the TLS lock the reader holds)."""
    sock = getattr(getattr(resp, "connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _paginate(page: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """All pages of a list as one list object: the first page's metadata (its
    resourceVersion is the snapshot every page was read from) with every item."""
    first = page("")
    items = list(first.get("items") or [])
    token = (first.get("metadata") or {}).get("continue") or ""
    while token:
        nxt = page(token)
        items += nxt.get("items") or []
        token = (nxt.get("metadata") or {}).get("continue") or ""
    meta = dict(first.get("metadata") or {})
    meta.pop("continue", None)
    meta.pop("remainingItemCount", None)
    return {**first, "metadata": meta, "items": items}


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
    # One keep-alive connection per thread that may call at once (the operator's
    # pools, controller/pools.py): urllib3's default (5 x CPUs) discarded connections
    # under load, and every new one costs a TLS handshake.
    cfg.connection_pool_maxsize = max(cfg.connection_pool_maxsize or 0, CONNECTIONS)
    return Api(client.ApiClient(cfg), timeout=timeout)


class Api:
    """Our kinds as plain JSON over the client's connection pool and credentials.

    Not through the generated ``CustomObjectsApi``: its module takes 0.1-0.2 s to import
    (a pydantic ``validate_call`` per method), on the path of a restarted agent's first
    heartbeat, and each call validates its arguments; our kinds are dicts either way."""

    def __init__(
        self, api_client: client.ApiClient, timeout: float = 10.0, page_size: int = PAGE_SIZE
    ) -> None:
        self.client = api_client
        self.timeout = timeout
        self.page_size = page_size

    @functools.cached_property
    def custom(self) -> client.CustomObjectsApi:
        """The generated client, for callers that want its models (tests, benches)."""
        return client.CustomObjectsApi(self.client)

    # Built on first use: importing CoreV1Api builds the models of every core kind
    # (~0.7 s of CPU), which the agent never needs and which delayed its first
    # heartbeat after a soft fence's restart.
    @functools.cached_property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.client)

    @functools.cached_property
    def coordination(self) -> client.CoordinationV1Api:
        return client.CoordinationV1Api(self.client)

    def close(self) -> None:
        self.client.close()

    def credentials(self) -> tuple[str, str]:
        """(scheme, token) of the Authorization header this client sends; ("", "")
        without one (client certificates).  The client keeps a kubeconfig's or the
        service account's token under "BearerToken" (older releases: "authorization"),
        with its prefix apart; reading it runs the client's refresh hook."""
        cfg = self.client.configuration
        for name in ("BearerToken", "authorization"):
            if (cfg.api_key or {}).get(name):
                scheme, _, value = (cfg.get_api_key_with_prefix(name) or "").partition(" ")
                if not value:  # no prefix configured: a bare token
                    return ("Bearer", scheme) if scheme else ("", "")
                return scheme, value
        return "", ""

    # -- our kinds -----------------------------------------------------------------
    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return self._json(
            "GET", _path(kind, namespace, name), what=f"get {kind} {namespace}/{name}"
        )

    def list(
        self,
        kind: str,
        namespace: str | None,
        label_selector: str = "",
        *,
        field_selector: str = "",
        page_size: int | None = None,
    ) -> dict[str, Any]:
        """Every object, in pages of ``page_size`` (``limit``/``continue``): one answer
        never holds more than a page, so neither the API server nor we build a 10,000-VM
        response at once.  The pages are one snapshot (the first page's
        resourceVersion), and the result is one list object, as an unpaginated list."""
        what = f"list {kind} in {namespace or 'all namespaces'}"

        def page(token: str) -> dict[str, Any]:
            query = [("limit", str(page_size or self.page_size))]
            query += _selectors(label_selector, field_selector)
            if token:
                query.append(("continue", token))
            return self._json("GET", _path(kind, namespace), query, what=what)

        return _paginate(page)

    def create(self, kind: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, **body}
        name = body.get("metadata", {}).get("name", "?")
        return self._json(
            "POST", _path(kind, namespace), body=body, what=f"create {kind} {namespace}/{name}"
        )

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
        return self._json(
            "PATCH",
            _path(kind, namespace, name) + ("/status" if status else ""),
            body=patch,
            content_type="application/merge-patch+json",
            what=f"patch {kind}{'/status' if status else ''} {namespace}/{name}",
        )

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self._json("DELETE", _path(kind, namespace, name), what=f"delete {kind} {namespace}/{name}")

    def watch(
        self,
        kind: str,
        namespace: str,
        resource_version: str,
        timeout_seconds: int = 30,
        label_selector: str = "",
        field_selector: str = "",
    ) -> Iterator[dict[str, Any]]:
        """Watch events ({'type', 'object'}) from ``resource_version``; ends on timeout.
        An ERROR event raises (``Gone`` for 410: list again)."""
        query = [
            ("watch", "true"),
            ("resourceVersion", resource_version),
            ("timeoutSeconds", str(timeout_seconds)),
            *_selectors(label_selector, field_selector),
        ]
        yield from self._events(
            f"watch {kind} in {namespace}",
            _path(kind, namespace),
            query,
            (5.0, timeout_seconds + 5),
        )

    # -- Leases --------------------------------------------------------------------
    def read_lease(self, namespace: str, name: str) -> dict[str, Any]:
        """A Lease as the plain dict a watch delivers."""
        lease = call(
            f"read Lease {namespace}/{name}",
            self.coordination.read_namespaced_lease,
            name,
            namespace,
            _request_timeout=self.timeout,
        )
        obj: dict[str, Any] = self.client.sanitize_for_serialization(lease)
        return obj

    def list_leases(
        self, namespace: str | None, label_selector: str = ""
    ) -> builtins.list[dict[str, Any]]:
        """Leases as plain dicts, in pages like :meth:`list`."""
        return self.lease_snapshot(namespace, label_selector)[0]

    def lease_snapshot(
        self, namespace: str | None, label_selector: str = ""
    ) -> tuple[builtins.list[dict[str, Any]], str]:
        """Leases as plain dicts and the list's resourceVersion (where a watch starts).

        Read as JSON, not through the generated models: a model per Lease costs more
        than the rest of its handling, and a thousand hosts renew 300 times a second."""

        what = f"list Leases in {namespace or 'all namespaces'}"

        def page(token: str) -> dict[str, Any]:
            query = [("limit", str(self.page_size)), *_selectors(label_selector, "")]
            if token:
                query.append(("continue", token))
            return self._json("GET", _leases_path(namespace), query, what=what)

        listed = _paginate(page)
        items: builtins.list[dict[str, Any]] = listed.get("items") or []
        version = str((listed.get("metadata") or {}).get("resourceVersion") or "")
        return items, version

    def watch_leases(
        self,
        namespace: str | None,
        resource_version: str,
        label_selector: str = "",
        timeout_seconds: int = 300,
        on_response: Callable[[Any], None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Raw watch events ({'type', 'object'} dicts, BOOKMARKs included) of Leases
        from ``resource_version``; ends when the server closes the watch.

        ``on_response`` gets the open response, so another thread can cut a blocked
        read short (:func:`abort_response`).  An ERROR event raises: ``Gone`` (410) when
        the version is too old and the caller must list again."""
        query = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", resource_version),
            ("timeoutSeconds", str(timeout_seconds)),
            *_selectors(label_selector, ""),
        ]
        # The read timeout outlives the server's own end of the watch; a stalled path
        # is the reconciler's to notice (its re-list before any lease is judged).
        yield from self._events(
            f"watch Leases in {namespace or 'all namespaces'}",
            _leases_path(namespace),
            query,
            (5.0, timeout_seconds + 30),
            on_response,
        )

    def _events(
        self,
        what: str,
        path: str,
        query: builtins.list[tuple[str, str]],
        timeout: tuple[float, float],
        on_response: Callable[[Any], None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The events of one watch request, raw JSON; an ERROR event raises."""
        resp = call(what, self._send, "GET", path, query, timeout)
        if on_response is not None:
            on_response(resp)
        try:
            for line in watch.watch.iter_resp_lines(resp):
                if not line:
                    continue
                event: dict[str, Any] = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    code = status.get("code")
                    message = (
                        f"{what}: {code} {status.get('reason', '')}: {status.get('message', '')}"
                    )
                    if code == 410:
                        raise Gone(message, 410)
                    raise KubeError(message, code if isinstance(code, int) else None)
                yield event
        except _TRANSPORT_ERRORS as exc:
            raise _wrap(exc, what) from None
        finally:
            resp.close()
            resp.release_conn()

    def _json(
        self,
        method: str,
        path: str,
        query: builtins.list[tuple[str, str]] | None = None,
        *,
        what: str,
        body: dict[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """One request, its JSON answer; every failure a ``KubeError`` naming ``what``."""
        try:
            resp = self._send(method, path, query or [], self.timeout, body, content_type)
            try:
                out: dict[str, Any] = json.loads(resp.data) if resp.data else {}
            finally:
                resp.release_conn()
        except _FAILURES as exc:
            raise _wrap(exc, what) from None
        except ValueError:  # cut short, or not the API server answering
            raise Unavailable(f"{what}: the answer is not JSON") from None
        return out

    def _send(
        self,
        method: str,
        path: str,
        query: builtins.list[tuple[str, str]],
        timeout: Any,
        body: dict[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """``method`` on ``path`` with the client's credentials; the unread urllib3
        response.  A status other than 2xx raises ``ApiException`` with its body."""
        cfg = self.client.configuration
        headers = {"Accept": "application/json", "User-Agent": self.client.user_agent}
        scheme, token = self.credentials()
        if token:
            headers["Authorization"] = f"{scheme} {token}"
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(self.client.sanitize_for_serialization(body)).encode()
        url = cfg.host + path + ("?" + urllib.parse.urlencode(query) if query else "")
        resp = self.client.rest_client.pool_manager.request(
            method,
            url,
            headers=headers,
            body=data,
            preload_content=False,
            timeout=_timeout(timeout),
        )
        if not 200 <= resp.status <= 299:
            text = resp.data.decode("utf-8", "replace")
            resp.release_conn()
            exc = ApiException(status=resp.status, reason=resp.reason)
            exc.body = text
            raise exc
        return resp

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
        except _FAILURES as exc:
            err = _wrap(exc, f"Secret {namespace}/{name} unreadable")
            if err.status == 404:
                raise SecretError(f"Secret {namespace}/{name} not found", 404) from None
            if isinstance(exc, ApiException):
                raise SecretError(
                    f"Secret {namespace}/{name} unreadable: {exc.status} {exc.reason}",
                    exc.status,
                    transient=err.transient,
                ) from None
            raise SecretError(str(err), transient=True) from None
        data = secret.data or {}
        for key in keys:
            if key not in data:
                present = ", ".join(sorted(data)) or "none"
                raise SecretError(f"Secret {namespace}/{name} has no key {key!r} (keys: {present})")
        return tuple(base64.b64decode(data[key]) for key in keys)
