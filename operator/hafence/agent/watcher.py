"""List+watch of the HAVirtualMachines of one namespace, in a thread of its own.

The agent filters on ``status.host`` itself: a field selector on a custom resource's
status is not available, so every agent sees every VM of the namespace.  That is the
known scale limit of this design (N hosts x M VMs events per change); a label the
operator keeps equal to status.host would let the API server filter instead.

The thread posts ``("snapshot", list object)`` after each list and ``(type, object)`` per
watch event to a callback (the agent hands them over to its event loop).  Errors lead
to a relist after a capped backoff, never to a busy loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from hafence.kube import Api

log = logging.getLogger("hafence.agent.watcher")

KIND = "HAVirtualMachine"
Post = Callable[[str, Any], None]


class VMWatcher:
    def __init__(
        self,
        api: Api,
        namespace: str,
        post: Post,
        *,
        watch_timeout: int = 60,
        backoff: float = 0.5,
        backoff_max: float = 10.0,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.post = post
        self.watch_timeout = watch_timeout
        self.backoff = backoff
        self.backoff_max = backoff_max
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vm-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        # The thread may sit in a blocking watch read; it is a daemon and exits with
        # the process, so we only stop it from posting.
        self._stop.set()

    def _run(self) -> None:
        rv: str | None = None
        delay = self.backoff
        while not self._stop.is_set():
            try:
                if rv is None:
                    listed = self.api.list(KIND, self.namespace)
                    rv = str(listed["metadata"]["resourceVersion"])
                    if self._stop.is_set():
                        return
                    self.post("snapshot", listed)
                for event in self.api.watch(KIND, self.namespace, rv, self.watch_timeout):
                    if self._stop.is_set():
                        return
                    kind = event.get("type", "")
                    obj = event.get("object") or {}
                    if kind == "ERROR":
                        raise RuntimeError(f"watch error: {obj.get('message', obj)}")
                    new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if new_rv:
                        rv = str(new_rv)
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        self.post(kind, obj)
                delay = self.backoff
            except Exception as exc:
                if self._stop.is_set():
                    return
                # 410 Gone, a dropped connection, an API server restart: relist.
                log.warning(
                    "watching %ss in %s: %s; relisting in %.1fs",
                    KIND,
                    self.namespace,
                    str(exc).splitlines()[0][:200],
                    delay,
                )
                rv = None
                self._stop.wait(delay)
                delay = min(delay * 2, self.backoff_max)
