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
events to the loop; the loop feeds what has arrived in batches, the last event of each
Lease only (a renewal supersedes the one before it).  A stalled stream that neither ends
nor errs is the reconciler's to notice: it re-lists the Leases before it judges any
lease expired (reconciler.py, ``_recheck_leases``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from hafence.api.lease import HEARTBEAT_SELECTOR
from hafence.controller.backoff import ApiBackoffs
from hafence.controller.pools import READS
from hafence.kube import Api, Gone, KubeError
from hafence.kube.client import abort_response

log = logging.getLogger(__name__)

Deliver = Callable[[dict[str, Any], bool], Awaitable[None]]  # (lease, deleted)
Key = tuple[str, str]
# The server ends each watch after this long (kopf's setting for the other kinds).
WATCH_TIMEOUT = 300


def _key(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


def _version(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


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
        current = {_key(obj): obj for obj in items}
        for k, obj in list(self.known.items()):
            if k not in current:
                await self.deliver(obj, True)
        self.known = current
        for obj in items:
            await self.deliver(obj, False)

    async def _watch(self) -> None:
        """One watch request from ``self.version``, which follows every event."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any] | _End] = asyncio.Queue()
        stop = threading.Event()
        held: list[Any] = []  # the open response, to cut a blocked read short
        start = self.version

        def post(item: dict[str, Any] | _End) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody listens
                loop.call_soon_threadsafe(queue.put_nowait, item)

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
                    post(event)
            except BaseException as exc:  # handed to the loop, raised there
                error = exc
            if not stop.is_set():
                post(_End(error))

        thread = threading.Thread(target=stream, name=f"lease-watch {self.where}", daemon=True)
        thread.start()
        try:
            while True:
                batch = [await queue.get()]
                while not queue.empty():
                    batch.append(queue.get_nowait())
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
        not one per renewal), in the order of those last events."""
        last: dict[Key, tuple[str, dict[str, Any]]] = {}
        for event in events:
            kind = event.get("type")
            obj = event.get("object")
            if not isinstance(obj, dict):
                continue
            version = _version(obj)
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
        for k, (kind, obj) in last.items():
            if kind == "DELETED":
                self.known.pop(k, None)
                await self.deliver(obj, True)
            else:
                self.known[k] = obj
                await self.deliver(obj, False)
