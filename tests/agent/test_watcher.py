"""The agent's VM feed against the real API server: only the VMs placed on its host
(the CRD's selectable field status.host), and lists in pages."""

from __future__ import annotations

import threading
from typing import Any

from hafence.agent.watcher import VMWatcher
from hafence.kube import Api
from hafence.kube.client import Api as ApiClass

from .helpers import SLEEP, make_host, make_vm, place, wait_for


def test_lists_come_in_pages_and_read_as_one(api: Api, namespace: str) -> None:
    make_host(api, namespace, "h1")
    for i in range(5):
        make_vm(api, namespace, f"vm{i}", [SLEEP, "1"])
    small = ApiClass(api.client, page_size=2)  # 3 pages
    paged = small.list("HAVirtualMachine", namespace)
    whole = api.list("HAVirtualMachine", namespace, page_size=500)
    assert [i["metadata"]["name"] for i in paged["items"]] == [f"vm{i}" for i in range(5)]
    assert paged["metadata"]["resourceVersion"]
    assert "continue" not in paged["metadata"]
    assert [i["metadata"]["uid"] for i in paged["items"]] == [
        i["metadata"]["uid"] for i in whole["items"]
    ]
    assert len(small.list_leases(namespace)) == 0


def test_the_watcher_sees_only_the_vms_placed_on_its_host(api: Api, namespace: str) -> None:
    for h in ("h1", "h2"):
        make_host(api, namespace, h)
    make_vm(api, namespace, "mine", [SLEEP, "1"], host="h1")
    make_vm(api, namespace, "theirs", [SLEEP, "1"], host="h2")
    make_vm(api, namespace, "later", [SLEEP, "1"])
    posted: list[tuple[str, Any]] = []
    lock = threading.Lock()

    def post(kind: str, payload: Any) -> None:
        with lock:
            posted.append((kind, payload))

    def seen() -> list[tuple[str, str | None]]:
        with lock:
            return [(k, p["metadata"]["name"]) if k != "snapshot" else (k, None) for k, p in posted]

    watcher = VMWatcher(api, namespace, post, host="h1", watch_timeout=5)
    watcher.start()
    try:
        wait_for(lambda: seen(), what="the first list")
        snapshot = posted[0][1]
        assert [i["metadata"]["name"] for i in snapshot["items"]] == ["mine"]

        place(api, namespace, "later", "h1", 1)  # placed here: arrives
        wait_for(lambda: ("MODIFIED", "later") in seen() or ("ADDED", "later") in seen())
        place(api, namespace, "theirs", "h2", 2)  # another host's VM: never arrives
        place(api, namespace, "later", "h2", 2)  # moved away: deleted for this agent
        wait_for(lambda: ("DELETED", "later") in seen(), what="the move away")
        place(api, namespace, "mine", None, 2)  # placed nowhere: handed over as it is now
        wait_for(lambda: any(k == "MODIFIED" and n == "mine" for k, n in seen()[1:]))
        last_mine = [p for k, p in posted if k != "snapshot" and p["metadata"]["name"] == "mine"]
        assert (last_mine[-1].get("status") or {}).get("host") is None
        assert all(n != "theirs" for _, n in seen())
    finally:
        watcher.stop()
