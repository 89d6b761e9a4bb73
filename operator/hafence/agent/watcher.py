"""List+watch of the HAVirtualMachines placed on this host, in a thread of its own.

The API server filters: the CRD declares ``status.host`` a selectable field
(``api/vm.py``), and the list and the watch ask for ``fieldSelector=status.host=HOST``,
so a VM's change reaches the agent of its host only (not every agent of the
datacenter: 1,000 agents x 10,000 VMs).

A VM that stops matching (placed elsewhere, or nowhere) arrives as DELETED with its
*previous* content.  The agent still has something to do about one that is placed
nowhere after running here (report it Stopped: the operator moves it only after that
or a fence), so the watcher reads such a VM once and hands over what it is now;
placed elsewhere or gone, it is handed over as deleted (the agent stops it, S3).

The thread posts ``("snapshot", list object)`` after each list and ``(type, object)`` per
watch event to a callback (the agent hands them over to its event loop).  Errors lead
to a relist after a capped backoff, never to a busy loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from hafence.kube import Api, NotFound

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
        host: str,
        watch_timeout: int = 60,
        backoff: float = 0.5,
        backoff_max: float = 10.0,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.host = host
        self.selector = placed_on(host)
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
                    listed = self.api.list(KIND, self.namespace, field_selector=self.selector)
                    rv = str(listed["metadata"]["resourceVersion"])
                    if self._stop.is_set():
                        return
                    self.post("snapshot", listed)
                for event in self.api.watch(
                    KIND, self.namespace, rv, self.watch_timeout, field_selector=self.selector
                ):
                    if self._stop.is_set():
                        return
                    kind = event.get("type", "")
                    obj = event.get("object") or {}
                    new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if new_rv:
                        rv = str(new_rv)
                    if kind == "DELETED":
                        kind, obj = self._left(obj)
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

    def _left(self, obj: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """A VM that left the selector: deleted, placed elsewhere, or placed nowhere."""
        name = (obj.get("metadata") or {}).get("name", "")
        try:
            fresh = self.api.get(KIND, self.namespace, name)
        except NotFound:
            return "DELETED", obj
        except Exception as exc:
            # Unknown: as deleted (the agent stops it if it runs here; S3 holds).
            log.warning("reading %s %s/%s after it left this host: %s", KIND, self.namespace,
                        name, str(exc).splitlines()[0][:200])  # fmt: skip
            return "DELETED", obj
        placed = (fresh.get("status") or {}).get("host")
        if placed and placed != self.host:
            return "DELETED", obj
        return "MODIFIED", fresh


def placed_on(host: str) -> str:
    """The field selector of the VMs placed on ``host``."""
    return f"status.host={host}"
