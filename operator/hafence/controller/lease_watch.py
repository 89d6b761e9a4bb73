"""Heartbeat Leases, listed then watched, straight into the reconciler (not via kopf).

Every agent renews its Lease every third of its duration: at 1,000 hosts 300 events a
second, by far the operator's busiest input, which the core takes in 3 us.  kopf adds
its per-object worker, the cause and the handler call to each (on a quiet machine the
lean watch saved ~0.15 ms of CPU per renewal, bench/README.md, Scale (shell)).  This is
client-go's reflector cut down to what heartbeats need:

- list (raw JSON, one snapshot in pages) and feed every Lease; a Lease gone since the
  previous list is fed as deleted;
- watch from the list's resourceVersion with bookmarks; a watch the server ends (its
  timeout) is opened again from the last version seen, without a list;
- a 410 (the version is too old) lists again; any other failure waits on
  ``ApiBackoffs`` (0.5 s, 1 s, then every 2 s) and watches again from the last version.

The stream is read on a thread of its own (the client is blocking) that hands parsed
events to the loop at most once per ``HANDOFF_INTERVAL``: the first event after a quiet
spell at once, the ones behind it together when the interval is over.  Each hand-off
wakes the loop, and at scale the wake-ups cost more than the events (each one runs the
path cold: bench/README.md, Scale (shell)); a small datacenter's renewals, seconds
apart, still go straight through.  The loop feeds what has arrived in batches, the
last event of each Lease only (a renewal supersedes the one before it), a batch at a
time, without waiting for the core (``Reconciler.observe_leases``): waiting for the
namespace's lock, a turn per Lease, queued a thousand renewals one by one behind a
failing rack's writes, and the ticks behind them.  A stalled
stream that neither ends nor errs is the reconciler's to notice: it re-lists the Leases
before it judges any lease expired (reconciler.py, ``_recheck_leases``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from hafence.api.lease import HEARTBEAT_SELECTOR
from hafence.controller.backoff import ApiBackoffs
from hafence.controller.cache import lean, resource_version_of
from hafence.controller.pools import READS
from hafence.kube import Api, Gone, KubeError
from hafence.kube.client import abort_response

log = logging.getLogger(__name__)

# A batch of (lease, deleted), delivered together (Reconciler.observe_leases).
Deliver = Callable[[list[tuple[dict[str, Any], bool]]], Awaitable[None]]
Key = tuple[str, str]
# The server ends each watch after this long (kopf's setting for the other kinds).
WATCH_TIMEOUT = 300
# Seconds between two hand-offs of events from the stream's thread to the loop, at
# most: what a renewal may wait behind others (1,000 hosts renew every 3.3 ms).
HANDOFF_INTERVAL = 0.05


def _key(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


class _End:
    """The stream thread finished: how (None: the server closed the watch)."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class LeaseWatch:
    def __init__(
        self,
        api: Api,
        namespace: str | None,
        deliver: Deliver,
        *,
        timeout_seconds: int = WATCH_TIMEOUT,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.deliver = deliver
        self.timeout_seconds = timeout_seconds
        self.known: dict[Key, dict[str, Any]] = {}
        # The last resourceVersion seen: a watch that fails mid-way resumes from here,
        # never from where it started (that would feed old renewals again).
        self.version = ""
        self.events = 0  # watch events received (bookmarks not counted)
        self.lists = 0

    @property
    def where(self) -> str:
        return self.namespace or "all namespaces"

    async def run(self) -> None:
        backoffs: Iterator[float] = iter(ApiBackoffs())
        while True:
            try:
                items, version = await READS.run(
                    self.api.lease_snapshot, self.namespace, HEARTBEAT_SELECTOR
                )
            except KubeError as exc:
                log.warning("listing heartbeat Leases in %s: %s", self.where, exc)
                await asyncio.sleep(next(backoffs))
                continue
            self.lists += 1
            self.version = version
            await self._replace(items)
            backoffs = iter(ApiBackoffs())
            while True:
                try:
                    await self._watch()
                except Gone:
                    log.info("heartbeat Lease watch in %s: version too old, listing", self.where)
                    break
                except KubeError as exc:
                    log.warning("heartbeat Lease watch in %s: %s", self.where, exc)
                    await asyncio.sleep(next(backoffs))
                else:
                    backoffs = iter(ApiBackoffs())

    async def _replace(self, items: list[dict[str, Any]]) -> None:
        items = [lean(obj) for obj in items]
        current = {_key(obj): obj for obj in items}
        gone = [(obj, True) for k, obj in self.known.items() if k not in current]
        self.known = current
        await self.deliver(gone + [(obj, False) for obj in items])

    async def _watch(self) -> None:
        """One watch request from ``self.version``, which follows every event."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[list[dict[str, Any] | _End]] = asyncio.Queue()
        stop = threading.Event()
        held: list[Any] = []  # the open response, to cut a blocked read short
        start = self.version
        handoff = _Handoff(loop, queue.put_nowait)
        pacer = _Pacer()

        def post(item: dict[str, Any] | _End) -> None:
            handoff.post(item)

        def stream() -> None:
            error: BaseException | None = None
            try:
                for event in self.api.watch_leases(
                    self.namespace,
                    start,
                    HEARTBEAT_SELECTOR,
                    self.timeout_seconds,
                    on_response=held.append,
                ):
                    if stop.is_set():
                        return
                    pacer.hand(event, post)
            except BaseException as exc:  # handed to the loop, raised there
                error = exc
            if not stop.is_set():
                post(_End(error))

        thread = threading.Thread(target=stream, name=f"lease-watch {self.where}", daemon=True)
        thread.start()
        try:
            while True:
                batch = await queue.get()
                while not queue.empty():
                    batch += queue.get_nowait()
                end = next((i for i in batch if isinstance(i, _End)), None)
                await self._events([i for i in batch if not isinstance(i, _End)])
                if end is not None:
                    if end.error is not None:
                        if isinstance(end.error, KubeError):
                            raise end.error
                        raise KubeError(f"watch Leases in {self.where}: {end.error!r}")
                    return
        finally:
            stop.set()
            for resp in held:
                abort_response(resp)

    async def _events(self, events: list[dict[str, Any]]) -> None:
        """Feed a batch of events: only the last of each Lease (like kopf's per-object
        batching; a backlog of renewals behind a busy reconciler is one input per host,
        not one per renewal), in the order of those last events, delivered together."""
        last: dict[Key, tuple[str, dict[str, Any]]] = {}
        for event in events:
            kind = event.get("type")
            obj = event.get("object")
            if not isinstance(obj, dict):
                continue
            version = resource_version_of(obj)
            if kind == "BOOKMARK":
                self.version = version or self.version
                continue
            if kind not in ("ADDED", "MODIFIED", "DELETED"):
                continue
            k = _key(obj)
            last.pop(k, None)  # re-inserted: ordered by the last event
            last[k] = (kind, obj)
            self.version = version or self.version
            self.events += 1
        batch: list[tuple[dict[str, Any], bool]] = []
        for k, (kind, obj) in last.items():
            obj = lean(obj)
            if kind == "DELETED":
                self.known.pop(k, None)
                batch.append((obj, True))
            else:
                self.known[k] = obj
                batch.append((obj, False))
        if batch:
            await self.deliver(batch)


class _Handoff:
    """Items from a thread to the loop, in lists, at most once per HANDOFF_INTERVAL."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        take: Callable[[list[dict[str, Any] | _End]], None],
        interval: float = HANDOFF_INTERVAL,
    ) -> None:
        self.loop = loop
        self.take = take
        self.interval = interval
        self._lock = threading.Lock()
        self._pending: list[dict[str, Any] | _End] = []
        self._armed = False  # a flush is on its way: later items join it
        self._last = -interval  # loop time of the last flush

    def post(self, item: dict[str, Any] | _End) -> None:
        """From the thread: queue ``item``; the loop takes it at the next flush."""
        with self._lock:
            self._pending.append(item)
            if self._armed:
                return
            self._armed = True
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody listens
            self.loop.call_soon_threadsafe(self._arm)

    def _arm(self) -> None:
        wait = self._last + self.interval - self.loop.time()
        if wait > 0:
            self.loop.call_later(wait, self._flush)
        else:
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            items, self._pending, self._armed = self._pending, [], False
        self._last = self.loop.time()
        self.take(items)


class _Pacer:
    """The stream thread's naps while renewals arrive back to back.

    An event the thread had to wait for, but not long (the stream is busy and read up to
    date), is followed by a nap of HANDOFF_INTERVAL: the next events gather in the
    socket's buffer and are read and parsed in one go rather than one wake-up each.  At
    most one nap per interval of reading, so a backlog is read at half speed at worst;
    never while the stream is quiet (a wait longer than the interval), so a small
    datacenter's renewals are read as they come.
    """

    # A wait shorter than this was no wait: the event was already in the buffer.
    BUFFERED = 0.002

    def __init__(
        self, interval: float = HANDOFF_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self.clock = clock
        self.sleep: Callable[[float], None] = time.sleep
        self._done = clock()  # when the previous event was handed over
        self._woke = -interval  # when the last nap ended

    def hand(self, item: dict[str, Any], post: Callable[[dict[str, Any]], None]) -> None:
        """``post(item)``, then nap if the stream is busy and read up to date."""
        waited = self.clock() - self._done  # blocked in the read for this item
        post(item)
        now = self.clock()
        if self.BUFFERED < waited < self.interval and now - self._woke >= self.interval:
            self.sleep(self.interval)
            self._woke = self.clock()
        self._done = self.clock()
