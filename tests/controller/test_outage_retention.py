"""HostOutage retention against the real API server: at most N records per host, and
finished ones no older than the maximum age; other hosts' records are left alone; the
records' calls run on a pool of their own."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from typing import Any

import pytest

from hafence.api.outage import HostOutageStatus
from hafence.controller.cache import Cache
from hafence.controller.outages import Outages, _Record
from hafence.kube import Api

pytestmark = pytest.mark.controlplane


def record(api: Api, ns: str, host: str, start: dt.datetime, end: dt.datetime | None) -> str:
    name = f"{host}-{int(start.timestamp())}"
    api.create(
        "HostOutage",
        ns,
        {
            "metadata": {"name": name, "labels": {"hafence.io/host": host}},
            "spec": {"hostRef": {"name": host}, "outageID": name},
        },
    )
    st = {
        "startTime": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "state": "Closed" if end else "Fencing",
    }
    if end is not None:
        st["endTime"] = end.strftime("%Y-%m-%dT%H:%M:%SZ")
    api.patch("HostOutage", ns, name, {"status": st}, status=True)
    return name


def test_keeps_the_newest_per_host_and_drops_the_expired(api: Api, namespace: str) -> None:
    now = dt.datetime.now(dt.UTC)
    day = dt.timedelta(days=1)
    expired = record(api, namespace, "h1", now - 10 * day, now - 10 * day)
    older = record(api, namespace, "h1", now - 3 * day, now - 3 * day)
    newer = record(api, namespace, "h1", now - 2 * day, now - 2 * day)
    current = record(api, namespace, "h1", now - dt.timedelta(minutes=5), None)
    other = record(api, namespace, "h2", now - 20 * day, now - 20 * day)
    outages = Outages(api, Cache(), None, history=3, max_age=7 * 24 * 3600)  # type: ignore[arg-type]
    asyncio.run(outages._prune(namespace, "h1"))
    names = {o["metadata"]["name"] for o in api.list("HostOutage", namespace)["items"]}
    assert names == {older, newer, current, other}, names
    assert expired not in names
    outages.history = 2
    asyncio.run(outages._prune(namespace, "h1"))
    names = {o["metadata"]["name"] for o in api.list("HostOutage", namespace)["items"]}
    assert names == {newer, current, other}


class _ThreadNames:
    """The real Api, noting the thread each HostOutage call ran on."""

    def __init__(self, api: Api) -> None:
        self._api = api
        self.threads: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._api, name)
        if name not in ("create", "get", "list", "patch", "delete"):
            return attr

        def noted(kind: str, *args: Any, **kwargs: Any) -> Any:
            if kind == "HostOutage":
                self.threads.append(threading.current_thread().name)
            return attr(kind, *args, **kwargs)

        return noted


def test_records_are_written_on_a_pool_of_their_own(api: Api, namespace: str) -> None:
    """Never on the fencing pool: a rack's hundreds of record calls must not hold up
    its fences (controller/pools.py)."""
    now = dt.datetime.now(dt.UTC)
    day = dt.timedelta(days=1)
    expired = record(api, namespace, "h1", now - 10 * day, now - 10 * day)
    noting = _ThreadNames(api)
    outages = Outages(noting, Cache(), None, history=3, max_age=7 * 24 * 3600)  # type: ignore[arg-type]
    rec = _Record(namespace, "h1", "h1-1", HostOutageStatus())
    asyncio.run(outages._create(rec))  # create, then retention: list and delete
    names = {o["metadata"]["name"] for o in api.list("HostOutage", namespace)["items"]}
    assert names == {"h1-1"} and expired not in names, names
    assert len(noting.threads) == 3, noting.threads
    assert all(t.startswith("hafence-records") for t in noting.threads), noting.threads
