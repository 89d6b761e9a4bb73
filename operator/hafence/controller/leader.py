"""Leader election on a coordination.k8s.io/v1 Lease, with an epoch (safety rule S2).

kopf's peering only keeps idle replicas quiet; it does not promise that exactly one
replica acts.  This elector does, with client-go's leaderelection semantics:

- A replica acquires the Lease when it has no holder, or when the holder's record has
  not changed for the holder's ``leaseDurationSeconds`` *as observed on this
  replica's monotonic clock* (like client-go: no trust in other machines' wall clocks).
- The leader renews every ``retry_period`` with a resourceVersion-guarded replace.
  A 409 means another writer touched the Lease: we step down at once.  Other failures
  are retried until ``renew_deadline`` after the last successful renewal, then we
  step down.
- ``check()`` is the guard callers run right before every fence action and placement
  write: it raises :class:`NotLeader` once leadership is lost *or* the renew deadline
  has passed, even if the loop has not noticed yet (a blocked loop cannot extend it).
  Why that is safe: a renewal counts from the moment its request was *sent*, and any
  rival counts the lease duration from the moment it *saw* that renewal, which is
  later; ``renew_deadline < lease_duration`` leaves the difference as margin for
  clock-rate drift and for the action that passed ``check()``.

The epoch is the fencing token: ``hafence.io/epoch`` on the Lease, mirrored into
``spec.leaseTransitions`` so ``kubectl get lease -o yaml`` shows it.  It grows by one
on every acquisition (a new holder, or the same identity starting a new term after it
stepped down), never on a renewal, and is read as the larger of the two fields so a
foreign writer resetting one of them cannot make it go back.

Use from an async operator::

    elector = LeaderElector(api, namespace="hafence-system", identity=pod_name)
    await elector.start()                      # background task
    async with asyncio.timeout(60):
        epoch = await elector.wait_until_leader()
    ...
    elector.check()                            # right before a fence or placement write
    ...
    await elector.stop()                       # releases: a standby takes over at once
                                               # (stop(release=False): as if it crashed)
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import inspect
import json
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from hafence.kube import Api

log = logging.getLogger(__name__)

DEFAULT_LEASE_NAME = "hafence-operator-leader"
EPOCH_ANNOTATION = "hafence.io/epoch"

# No connection, a timeout, a body that is not JSON: the API server is unreachable
# or sick for now; the caller retries on its schedule.
_TRANSPORT_FAILURES = (OSError, HTTPError, ValueError)
_FAILURES = (ApiException, *_TRANSPORT_FAILURES)

# A callback gets the epoch of the term that starts or ends; sync or async.
Callback = Callable[[int], Awaitable[None] | None]


class NotLeader(RuntimeError):
    """This replica must not act: it does not hold the leader Lease (any more)."""


def default_identity() -> str:
    """Pod name (``$HOSTNAME`` in a pod) plus a random suffix.

    The suffix makes a restarted process a new candidate, so it waits for its old
    term to expire instead of adopting a term whose in-flight actions it cannot know.
    """
    host = os.environ.get("HOSTNAME") or socket.gethostname()
    return f"{host}_{uuid.uuid4().hex[:8]}"


def _micro_time(now: dt.datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseRecord:
    """What we read of the Lease: enough to decide, nothing we would write back blindly."""

    resource_version: str
    holder: str | None
    lease_duration: int
    epoch: int
    annotations: dict[str, str]
    acquire_time: str | None

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> LeaseRecord:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        annotations = dict(meta.get("annotations") or {})
        try:
            annotated = int(annotations.get(EPOCH_ANNOTATION, "0"))
        except ValueError:
            annotated = 0
        transitions = int(spec.get("leaseTransitions") or 0)
        return cls(
            resource_version=str(meta.get("resourceVersion", "")),
            holder=spec.get("holderIdentity") or None,
            lease_duration=int(spec.get("leaseDurationSeconds") or 0),
            epoch=max(annotated, transitions),
            annotations=annotations,
            acquire_time=spec.get("acquireTime"),
        )


class LeaderElector:
    """One candidate for the leader Lease ``namespace/name``."""

    def __init__(
        self,
        api: Api,
        *,
        namespace: str,
        name: str = DEFAULT_LEASE_NAME,
        identity: str | None = None,
        lease_duration: int = 15,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        on_started_leading: Callback | None = None,
        on_stopped_leading: Callback | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(lease_duration, int) or lease_duration < 1:
            raise ValueError(
                f"lease_duration must be a whole number of seconds >= 1, got {lease_duration!r}"
            )
        if not 0 < renew_deadline < lease_duration:
            raise ValueError(
                f"renew_deadline must be > 0 and < lease_duration "
                f"({lease_duration}), got {renew_deadline!r}"
            )
        if not 0 < retry_period < renew_deadline:
            raise ValueError(
                f"retry_period must be > 0 and < renew_deadline "
                f"({renew_deadline}), got {retry_period!r}"
            )
        self._api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._clock = clock

        self._leading = False
        self._epoch: int | None = None
        self._valid_until = 0.0  # clock() value after which check() refuses
        self._record: LeaseRecord | None = None
        self._observed_at = 0.0  # clock() when the record last changed
        self._became_leader = asyncio.Event()
        self._lost = asyncio.Event()
        self._lost.set()
        self._task: asyncio.Task[None] | None = None
        self._callbacks: set[asyncio.Future[Any]] = set()
        # The highest epoch this process has seen: should the Lease be deleted or its
        # fields reset by another writer, our next epoch still grows.
        self._max_epoch = 0
        self._failing = False
        # Threads of our own: renewals must not queue behind other blocking work on
        # the loop's default executor (fence agents, status writes), or a busy
        # operator would lose its lease exactly when it is busiest.
        self._executor: ThreadPoolExecutor | None = None

    # -- state for callers -------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        return self._leading and self._clock() < self._valid_until

    @property
    def epoch(self) -> int | None:
        """The epoch of the term we hold, or None when we do not lead."""
        return self._epoch if self.is_leader else None

    @property
    def observed_epoch(self) -> int:
        """The latest epoch seen on the Lease, whoever holds it (for metrics)."""
        return self._max_epoch

    @property
    def observed_holder(self) -> str | None:
        return self._record.holder if self._record else None

    def check(self) -> int:
        """Raise NotLeader unless we lead and the renew deadline has not passed.

        Returns the epoch, to be written beside the action as its fencing token.
        """
        if not self._leading or self._epoch is None:
            raise NotLeader(f"{self.identity} does not hold lease {self.namespace}/{self.name}")
        if self._clock() >= self._valid_until:
            raise NotLeader(
                f"{self.identity}: lease {self.namespace}/{self.name} epoch {self._epoch} "
                f"not renewed within {self.renew_deadline}s"
            )
        return self._epoch

    def remaining(self) -> float:
        """Seconds until check() refuses (0 when not leading): bound an action with it."""
        if not self._leading:
            return 0.0
        return max(0.0, self._valid_until - self._clock())

    async def wait_until_leader(self) -> int:
        """Wait until we lead; returns the epoch.  Bound it with ``asyncio.timeout``."""
        while True:
            await self._became_leader.wait()
            epoch = self.epoch
            if epoch is not None:
                return epoch
            # Won, but the deadline passed already: wait for the loop to record the loss.
            await self._lost.wait()

    async def wait_until_not_leader(self) -> None:
        await self._lost.wait()

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Run the election loop in a background task."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name=f"leader-election:{self.name}")

    async def stop(self, *, release: bool = True) -> None:
        """Stop the loop; with ``release`` give the Lease up so a standby takes over now."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if release:
            await self._release()
        if self._executor is not None:
            # A request still running ends by its own timeout; nobody waits for it.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def __aenter__(self) -> LeaderElector:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop(release=True)

    async def run(self) -> None:
        """The election loop; runs until cancelled.  Cancelling does not release."""
        try:
            while True:
                if self._leading:
                    await self._renew_once()
                    delay = self.retry_period
                    if self._leading:
                        # Wake up at the deadline at the latest, to step down on time.
                        delay = min(delay, max(0.0, self._valid_until - self._clock()))
                else:
                    await self._try_acquire()
                    # Jitter keeps standbys from hitting the API server in lockstep.
                    delay = self.retry_period * (1.0 + 0.2 * random.random())
                await asyncio.sleep(delay)
        finally:
            if self._leading:
                self._step_down("election loop stopped", expected=True)

    async def _release(self) -> None:
        """Give up the Lease if it names us: holder cleared, duration 1 s, epoch kept.

        Only with the loop stopped (else it would take the Lease straight back).
        Reads the Lease rather than trusting our state: the loop may have stopped with
        a renewal in flight, which would make our resourceVersion stale.  Identities
        are unique per process, so a Lease naming us is ours to give up.
        """
        self._step_down("released", expected=True)
        try:
            obj = await self._call(
                self._api.coordination.read_namespaced_lease, self.name, self.namespace
            )
        except ApiException as exc:
            if exc.status != 404:  # 404: nothing to give up
                log.warning(
                    "release of lease %s/%s failed: %s", self.namespace, self.name, _reason(exc)
                )
            return
        except _TRANSPORT_FAILURES as exc:
            log.warning(
                "release of lease %s/%s failed: %s", self.namespace, self.name, _reason(exc)
            )
            return
        record = LeaseRecord.from_object(obj)
        if record.holder != self.identity:
            return
        now = _micro_time(dt.datetime.now(dt.UTC))
        body = self._body(
            record, holder=None, duration=1, epoch=record.epoch, acquire_time=now, renew_time=now
        )
        try:
            await self._call(
                self._api.coordination.replace_namespaced_lease, self.name, self.namespace, body
            )
            log.info("released lease %s/%s (epoch %d)", self.namespace, self.name, record.epoch)
        except _FAILURES as exc:
            # The lease then expires by itself: slower hand-over, still safe.
            log.warning(
                "release of lease %s/%s failed: %s", self.namespace, self.name, _reason(exc)
            )

    # -- one step of the loop ----------------------------------------------------------
    async def _try_acquire(self) -> None:
        coord = self._api.coordination
        try:
            obj = await self._call(coord.read_namespaced_lease, self.name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                await self._create()
                return
            self._warn("reading", exc)
            return
        except _TRANSPORT_FAILURES as exc:
            self._warn("reading", exc)
            return
        now = self._clock()
        record = self._seen(obj)
        if self._record is None or record.resource_version != self._record.resource_version:
            self._record = record
            self._observed_at = now
        held_by_other = record.holder is not None and record.holder != self.identity
        if held_by_other and now < self._observed_at + record.lease_duration:
            return
        sent = self._clock()
        epoch = max(record.epoch, self._max_epoch) + 1
        stamp = _micro_time(dt.datetime.now(dt.UTC))
        body = self._body(
            record,
            holder=self.identity,
            duration=self.lease_duration,
            epoch=epoch,
            acquire_time=stamp,
            renew_time=stamp,
        )
        try:
            obj = await self._call(coord.replace_namespaced_lease, self.name, self.namespace, body)
        except _FAILURES as exc:
            # 409: another candidate won the race; it shows up on the next read.
            log.debug("acquiring lease %s/%s failed: %s", self.namespace, self.name, _reason(exc))
            return
        await self._start_leading(self._seen(obj), sent, previous=record.holder)

    async def _create(self) -> None:
        sent = self._clock()
        stamp = _micro_time(dt.datetime.now(dt.UTC))
        epoch = self._max_epoch + 1
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "annotations": {EPOCH_ANNOTATION: str(epoch)},
            },
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.lease_duration,
                "acquireTime": stamp,
                "renewTime": stamp,
                "leaseTransitions": epoch,
            },
        }
        try:
            obj = await self._call(
                self._api.coordination.create_namespaced_lease, self.namespace, body
            )
        except _FAILURES as exc:
            log.debug("creating lease %s/%s failed: %s", self.namespace, self.name, _reason(exc))
            return
        await self._start_leading(self._seen(obj), sent, previous=None)

    async def _renew_once(self) -> None:
        record = self._record
        assert record is not None and self._epoch is not None
        sent = self._clock()
        budget = self._valid_until - sent
        if budget <= 0:
            self._step_down(f"not renewed within {self.renew_deadline}s")
            return
        stamp = _micro_time(dt.datetime.now(dt.UTC))
        body = self._body(
            record,
            holder=self.identity,
            duration=self.lease_duration,
            epoch=self._epoch,
            renew_time=stamp,
        )
        try:
            obj = await asyncio.wait_for(
                self._call(
                    self._api.coordination.replace_namespaced_lease,
                    self.name,
                    self.namespace,
                    body,
                    budget=budget,
                ),
                timeout=budget,
            )
        except ApiException as exc:
            if exc.status in (404, 409):
                # Someone else wrote or deleted our Lease: whatever they meant, the
                # term we hold is no longer provably ours.
                self._step_down(f"lease changed by another writer ({exc.status})")
                return
            self._warn("renewing", exc)
        except _TRANSPORT_FAILURES as exc:  # TimeoutError is an OSError
            self._warn("renewing", exc)
        else:
            self._record = self._seen(obj)
            self._observed_at = self._clock()
            self._valid_until = sent + self.renew_deadline
            return
        if self._clock() >= self._valid_until:
            self._step_down(f"not renewed within {self.renew_deadline}s")

    # -- transitions -------------------------------------------------------------------
    async def _start_leading(self, record: LeaseRecord, sent: float, previous: str | None) -> None:
        self._record = record
        self._observed_at = self._clock()
        self._epoch = record.epoch
        self._valid_until = sent + self.renew_deadline
        self._leading = True
        self._lost.clear()
        self._became_leader.set()
        log.info(
            "%s became leader of %s/%s, epoch %d (previous holder %s)",
            self.identity,
            self.namespace,
            self.name,
            record.epoch,
            previous or "none",
        )
        self._notify(self._on_started, record.epoch)

    def _step_down(self, why: str, *, expected: bool = False) -> None:
        if not self._leading:
            return
        epoch = self._epoch if self._epoch is not None else 0
        self._leading = False
        self._epoch = None
        self._valid_until = 0.0
        self._became_leader.clear()
        self._lost.set()
        log.log(
            logging.INFO if expected else logging.WARNING,
            "%s stopped leading %s/%s, epoch %d: %s",
            self.identity,
            self.namespace,
            self.name,
            epoch,
            why,
        )
        self._notify(self._on_stopped, epoch)

    def _notify(self, callback: Callback | None, epoch: int) -> None:
        # Callbacks run beside the loop, so a slow one cannot delay a renewal.
        if callback is None:
            return
        try:
            result = callback(epoch)
        except Exception:
            log.exception("leader callback failed (epoch %d)", epoch)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._callbacks.add(task)
            task.add_done_callback(self._callback_done)

    def _callback_done(self, task: asyncio.Future[Any]) -> None:
        self._callbacks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("leader callback failed", exc_info=task.exception())

    # -- API plumbing ------------------------------------------------------------------
    def _body(
        self,
        record: LeaseRecord,
        *,
        holder: str | None,
        duration: int,
        epoch: int,
        renew_time: str,
        acquire_time: str | None = None,
    ) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "holderIdentity": holder,
            "leaseDurationSeconds": duration,
            "renewTime": renew_time,
            "leaseTransitions": epoch,
        }
        acquire_time = acquire_time or record.acquire_time
        if acquire_time is not None:
            spec["acquireTime"] = acquire_time
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": record.resource_version,
                "annotations": {**record.annotations, EPOCH_ANNOTATION: str(epoch)},
            },
            "spec": spec,
        }

    async def _call(
        self, fn: Callable[..., Any], *args: Any, budget: float | None = None
    ) -> dict[str, Any]:
        seconds = self._api.timeout if budget is None else min(self._api.timeout, max(budget, 0.1))
        call = functools.partial(fn, *args, _request_timeout=seconds, _preload_content=False)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="leader-election")
        response = await asyncio.get_running_loop().run_in_executor(self._executor, call)
        obj: dict[str, Any] = json.loads(response.data)
        self._failing = False
        return obj

    def _seen(self, obj: dict[str, Any]) -> LeaseRecord:
        record = LeaseRecord.from_object(obj)
        self._max_epoch = max(self._max_epoch, record.epoch)
        return record

    def _warn(self, doing: str, exc: BaseException) -> None:
        # Once per outage at warning level: an API server that is down for a minute
        # should not write thirty warnings per replica.
        level = logging.DEBUG if self._failing else logging.WARNING
        self._failing = True
        log.log(level, "%s lease %s/%s failed: %s", doing, self.namespace, self.name, _reason(exc))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"
