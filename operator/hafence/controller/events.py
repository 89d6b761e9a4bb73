"""Kubernetes Events about our objects, as ``kubectl describe host NAME`` shows them.

We write core/v1 Events: ``kubectl describe`` lists the core/v1 Events whose
``involvedObject`` matches the object (kind, name, namespace and uid), and shows
``count``/``lastTimestamp`` as "(x3 over 2m)".  (events.k8s.io/v1 writes land in the
same storage, but its series fields need a second write per repeat.)

Repeats aggregate: an Event with the same object, type, reason and message as one
this recorder wrote less than ``aggregate_window`` seconds ago is patched
(``count + 1``, ``lastTimestamp``) instead of created again, so a host failing to
fence every minute for an hour is one line, not sixty.

Similar Events aggregate too, as client-go's EventCorrelator does: once
``aggregate_after`` (10) Events of one object with the same type and reason but
different messages were written within ``aggregate_window``, the next ones become
one Event, "(combined from similar events): <latest message>", whose count grows.  A
host whose fence fails with a new error text every attempt, or a VM that keeps
failing differently, is then one line per reason, not one per message.

Writes run on a pool of their own (``controller/pools.py``): Events never hold up a
status write or a fence.

The recorder never raises into the caller: an Event is a courtesy to the reader,
and failing to write one must not stop a fence or a placement.  Failures are logged.

Secrets: callers never put passwords, keys or tokens into a reason or message
(Events are readable by anyone who can ``kubectl describe``).  The recorder does not
try to detect them; it trusts that contract.

Use from an async operator::

    events = EventRecorder(api, instance=elector.identity)
    await events.emit(body, "Warning", "FenceFailed", "ipmilan 10.0.0.5: timeout")
    events.post(body, "Normal", "Fenced", "power off verified")  # fire and forget
    ...
    await events.aclose()                                        # on shutdown
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from kubernetes.client.exceptions import ApiException

from hafence.controller.pools import EVENTS
from hafence.kube import Api

log = logging.getLogger(__name__)

REPORTING_CONTROLLER = "hafence-operator"
EventType = Literal["Normal", "Warning"]
EVENT_TYPES: tuple[EventType, ...] = ("Normal", "Warning")

MESSAGE_LIMIT = 1024  # the API server's limit on an Event's note
REASON_LIMIT = 128
# client-go's EventAggregator: maxEvents 10 similar Events within maxIntervalInSeconds
# 600 (our aggregate_window), then one combined Event.
AGGREGATE_AFTER = 10
COMBINED = "(combined from similar events): "


@dataclass(frozen=True)
class ObjectRef:
    """The object an Event is about (core/v1 ObjectReference)."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> ObjectRef:
        """From an object as the API returns it (a dict, or kopf's ``body``)."""
        meta = obj["metadata"]
        return cls(
            api_version=str(obj["apiVersion"]),
            kind=str(obj["kind"]),
            namespace=str(meta["namespace"]),
            name=str(meta["name"]),
            uid=str(meta["uid"]),
        )

    def to_k8s(self) -> dict[str, str]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
        }


@dataclass
class _Written:
    event_name: str
    count: int
    last: float  # clock() of the last write


_Key = tuple[str, str, str, str]  # uid, type, reason, message ("" once combined)


@dataclass
class _Similar:
    messages: set[str]
    first: float  # clock() of the first of them


class EventRecorder:
    """Writes and aggregates Events; one per operator process."""

    def __init__(
        self,
        api: Api,
        *,
        component: str = REPORTING_CONTROLLER,
        instance: str = "",
        aggregate_window: float = 600.0,
        aggregate_after: int = AGGREGATE_AFTER,
        max_remembered: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self.component = component
        self.instance = instance
        self.aggregate_window = aggregate_window
        self.aggregate_after = aggregate_after
        self._max_remembered = max_remembered
        self._clock = clock
        self._written: OrderedDict[_Key, _Written] = OrderedDict()
        self._similar: OrderedDict[tuple[str, str, str], _Similar] = OrderedDict()
        # Striped locks: two writes of one key must not both create, yet unrelated
        # Events (a rack of hosts failing at once) must not queue behind each other.
        self._locks = [asyncio.Lock() for _ in range(64)]
        self._pending: set[asyncio.Task[None]] = set()

    async def normal(self, obj: Mapping[str, Any] | ObjectRef, reason: str, message: str) -> None:
        await self.emit(obj, "Normal", reason, message)

    async def warning(self, obj: Mapping[str, Any] | ObjectRef, reason: str, message: str) -> None:
        await self.emit(obj, "Warning", reason, message)

    async def emit(
        self,
        obj: Mapping[str, Any] | ObjectRef,
        type: EventType,
        reason: str,
        message: str,
    ) -> None:
        """Record one Event about ``obj``; never raises (failures are logged)."""
        # Stamped now, not when written: fire-and-forget writes may land out of order.
        observed = dt.datetime.now(dt.UTC)
        try:
            ref = obj if isinstance(obj, ObjectRef) else ObjectRef.of(obj)
        except (KeyError, TypeError) as exc:
            log.error("event %s %s not recorded: object has no %s", type, reason, exc)
            return
        if type not in EVENT_TYPES:
            log.error(
                "event %s about %s %s/%s not recorded: type must be one of %s",
                reason,
                ref.kind,
                ref.namespace,
                ref.name,
                ", ".join(EVENT_TYPES),
            )
            return
        reason = reason[:REASON_LIMIT]
        if len(message) > MESSAGE_LIMIT:
            message = message[: MESSAGE_LIMIT - 3] + "..."
        key: _Key = self._aggregate(ref.uid, type, reason, message)
        try:
            async with self._locks[hash(key) % len(self._locks)]:
                await self._write(ref, key, observed, message)
        except Exception as exc:
            log.warning(
                "event %s %s about %s %s/%s not recorded: %s",
                type,
                reason,
                ref.kind,
                ref.namespace,
                ref.name,
                _describe(exc),
            )

    def _aggregate(self, uid: str, type: EventType, reason: str, message: str) -> _Key:
        """The key this Event is written under: its own, or once ``aggregate_after``
        different messages of this object, type and reason came within the window, the
        combined one (message "")."""
        now = self._clock()
        similar_key = (uid, type, reason)
        similar = self._similar.get(similar_key)
        if similar is None or now - similar.first > self.aggregate_window:
            similar = _Similar(set(), now)
            self._similar[similar_key] = similar
        self._similar.move_to_end(similar_key)
        while len(self._similar) > self._max_remembered:
            self._similar.popitem(last=False)
        if (uid, type, reason, message) in self._written:
            return (uid, type, reason, message)  # an exact repeat: counted on its own
        similar.messages.add(message)
        if len(similar.messages) > self.aggregate_after:
            return (uid, type, reason, "")
        return (uid, type, reason, message)

    def post(
        self,
        obj: Mapping[str, Any] | ObjectRef,
        type: EventType,
        reason: str,
        message: str,
    ) -> None:
        """Like :meth:`emit` without waiting: for hot paths.  Needs a running loop."""
        task = asyncio.create_task(self.emit(obj, type, reason, message))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def aclose(self) -> None:
        """Wait for Events posted with :meth:`post` to be written."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    # -- writing -----------------------------------------------------------------------
    async def _write(
        self, ref: ObjectRef, key: _Key, observed: dt.datetime, latest: str = ""
    ) -> None:
        now = self._clock()
        stamp = observed.strftime("%Y-%m-%dT%H:%M:%SZ")
        seen = self._written.get(key)
        if seen is not None and now - seen.last <= self.aggregate_window:
            patch: dict[str, Any] = {"count": seen.count + 1, "lastTimestamp": stamp}
            if not key[3]:
                patch["message"] = _combined(latest)
            try:
                await EVENTS.run(
                    self._api.core.patch_namespaced_event,
                    seen.event_name,
                    ref.namespace,
                    patch,
                    _request_timeout=self._api.timeout,
                    _content_type="application/merge-patch+json",
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise
                # Expired (the API server's event TTL) or deleted: start a new one.
            else:
                seen.count += 1
                seen.last = now
                self._written.move_to_end(key)
                return
        _, type_, reason, message = key
        if not message:
            message = _combined(latest)
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            # Named like client-go's recorder does, NAME.<hex nanoseconds>: `kubectl
            # describe` sorts by lastTimestamp, whole seconds, and keeps the API's (name)
            # order among equals, so the Events of one second still read in order.
            "metadata": {
                "name": f"{ref.name[:200]}.{int(observed.timestamp() * 1e9):x}",
                "namespace": ref.namespace,
            },
            "involvedObject": ref.to_k8s(),
            "type": type_,
            "reason": reason,
            "message": message,
            "count": 1,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": self.instance,
        }
        created = await EVENTS.run(
            self._api.core.create_namespaced_event,
            ref.namespace,
            body,
            _request_timeout=self._api.timeout,
        )
        self._written[key] = _Written(event_name=created.metadata.name, count=1, last=now)
        self._written.move_to_end(key)
        while len(self._written) > self._max_remembered:
            self._written.popitem(last=False)


def _combined(message: str) -> str:
    text = COMBINED + message
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"
