"""Many hosts' agents on the wire, without their VMs: the load of a fleet for the
scale bench (``bench/scale_shell.py``).

Each simulated host does what ``hafence agent`` does against the API server, request
for request (``tests/lab/test_loadgen.py`` compares the two):

- reads its Host at start and every ``host_refresh`` seconds (GET);
- renews its heartbeat Lease exactly as ``agent/heartbeat.py`` does: a GET (404: a
  POST creating it) the first time, then a PUT of the whole Lease built by
  ``api.lease.lease_body`` with the annotations of ``api.lease.lease_annotations``,
  guarded by the resourceVersion of its last write, every
  ``renew_interval(lease_duration)`` seconds;
- lists and watches the HAVirtualMachines placed on it (``fieldSelector
  status.host=NAME``, as ``agent/watcher.py``), and its S3 sweep lists the same;
- for every VM placed on it, writes ``status.runtime`` "Running" for the current
  placement epoch once (a merge patch of the status subresource, as
  ``Agent._write_runtime``): its VMs start at once.

What it leaves out: the VM processes themselves, the peer check (its Lease listing
every ``peer_refresh``; the bench runs without a peer token), the watchdog.

One asyncio loop, aiohttp, one connection pool: a thousand hosts cost this process
well under a core, so the figures are the operator's and the API server's.

Control on stdin, one JSON object a line: ``{"cmd": "fail", "hosts": [...]}`` stops
those hosts (no renewal, no report: power lost), ``{"cmd": "boot", "hosts": [...]}``
starts them again with a new boot ID, ``{"cmd": "stats"}`` prints the requests made
so far by verb and resource, ``{"cmd": "quit"}`` ends.  Each answer is one JSON line.

    python -m hafence.lab.loadgen --kubeconfig K --namespace NS --hosts h1,h2,... \\
        [--lease-duration 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import ssl
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from hafence import __version__
from hafence.api import GROUP, VERSION
from hafence.api.lease import (
    api_timeout,
    lease_annotations,
    lease_body,
    renew_interval,
)
from hafence.kube.client import PAGE_SIZE

LEASES = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
HOSTS = f"/apis/{GROUP}/{VERSION}/namespaces/{{ns}}/hosts"
VMS = f"/apis/{GROUP}/{VERSION}/namespaces/{{ns}}/havirtualmachines"
MERGE_PATCH = "application/merge-patch+json"
HOST_REFRESH = 30.0  # AgentConfig.host_refresh
WATCH_TIMEOUT = 60  # AgentConfig.watch_timeout


@dataclass
class Request:
    """One request as sent: what the comparison with a real agent looks at."""

    verb: str
    path: str
    query: dict[str, str]
    content_type: str | None
    body: Any


class Wire:
    """An aiohttp client for the API server of a kubeconfig with a client certificate
    (the lab's admin), counting requests by (verb, resource, subresource)."""

    def __init__(self, kubeconfig: Path, *, connections: int = 64) -> None:
        cfg = yaml.safe_load(kubeconfig.read_text())
        cluster = cfg["clusters"][0]["cluster"]
        user = cfg["users"][0]["user"]
        self.server = str(cluster["server"]).rstrip("/")
        self._ssl = ssl.create_default_context(cafile=cluster["certificate-authority"])
        self._ssl.load_cert_chain(user["client-certificate"], user["client-key"])
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._watches: aiohttp.ClientSession | None = None
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.record: Callable[[Request], None] | None = None  # for the comparison test

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections, ssl=self._ssl),
                timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
            )
        return self._session

    def watch_session(self) -> aiohttp.ClientSession:
        """Watches hold their connection: a pool of their own, unbounded (one each, as
        every agent has its own connection)."""
        if self._watches is None:
            self._watches = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ssl=self._ssl),
                timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
            )
        return self._watches

    async def close(self) -> None:
        for session in (self._session, self._watches):
            if session is not None:
                await session.close()

    def _count(self, verb: str, path: str, query: dict[str, str]) -> None:
        parts = path.strip("/").split("/")
        # .../namespaces/NS/RESOURCE[/NAME[/SUBRESOURCE]]
        i = parts.index("namespaces") + 2 if "namespaces" in parts else len(parts) - 1
        resource = parts[i] if i < len(parts) else "?"
        sub = parts[i + 2] if i + 2 < len(parts) else ""
        if verb == "GET":
            verb = "WATCH" if query.get("watch") else ("GET" if i + 1 < len(parts) else "LIST")
        self.counts[f"{verb} {resource}{'/' + sub if sub else ''}"] += 1

    async def call(
        self,
        verb: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        deadline: float = 10.0,
    ) -> tuple[int, Any]:
        query = query or {}
        self._count(verb, path, query)
        ctype = content_type if body is not None else None
        if self.record is not None:
            self.record(Request(verb, path, dict(query), ctype, body))
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json"}
        if ctype is not None:
            headers["Content-Type"] = ctype
        async with self.session().request(
            verb,
            self.server + path,
            params=query or None,
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=deadline),
        ) as resp:
            payload = await resp.read()
            try:
                obj = json.loads(payload) if payload else None
            except ValueError:
                obj = None
            if resp.status >= 400:
                self.errors[f"{verb} {resp.status}"] += 1
            return resp.status, obj

    async def watch(
        self, path: str, query: dict[str, str], on_event: Callable[[dict[str, Any]], None]
    ) -> None:
        """One watch request until the server ends it (timeoutSeconds)."""
        query = {**query, "watch": "true"}
        self._count("GET", path, query)
        if self.record is not None:
            self.record(Request("GET", path, dict(query), None, None))
        timeout = float(query.get("timeoutSeconds", WATCH_TIMEOUT)) + 5
        async with self.watch_session().get(
            self.server + path,
            params=query,
            headers={"Accept": "application/json"},
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            if resp.status >= 400:
                self.errors[f"WATCH {resp.status}"] += 1
                raise RuntimeError(f"watch {path}: {resp.status}")
            async for line in resp.content:
                if line.strip():
                    on_event(json.loads(line))


@dataclass
class SimHost:
    """One host's agent, on the wire only."""

    name: str
    namespace: str
    wire: Wire
    lease_duration: int = 10
    boot_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    host_refresh: float = HOST_REFRESH
    watch_timeout: int = WATCH_TIMEOUT
    cluster: str | None = None
    alive: bool = True
    renewals: int = 0
    reports: int = 0
    _rv: str | None = None
    _rv_watch: str | None = None
    _host_read_at: float = 0.0
    _acquired: datetime | None = None
    _vms: dict[str, dict[str, Any]] = field(default_factory=dict)
    _written: dict[str, int] = field(default_factory=dict)  # VM -> epoch reported
    _kick: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    # -- lifecycle ---------------------------------------------------------------
    def start(self, delay: float = 0.0) -> None:
        self.alive = True
        self._tasks = [
            asyncio.create_task(self._run(delay), name=f"host-{self.name}"),
        ]

    async def stop(self) -> None:
        """Power lost: nothing more is sent (the watch connection goes with it)."""
        self.alive = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def reboot(self) -> None:
        self.boot_id = str(uuid.uuid4())
        self.instance_id = uuid.uuid4().hex[:12]
        self._rv = None
        self._acquired = None
        self._vms.clear()
        self._written.clear()
        self.start()

    async def _run(self, delay: float) -> None:
        await asyncio.sleep(delay)
        backoff = 0.5
        while not await self._read_host():  # as Agent.read_host: waited for, with backoff
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
        tasks = [
            asyncio.create_task(self._watch_loop()),
            asyncio.create_task(self._heartbeat_loop()),
            asyncio.create_task(self._report_loop()),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- Host --------------------------------------------------------------------
    async def _read_host(self) -> bool:
        try:
            status, obj = await self.wire.call(
                "GET", f"{HOSTS.format(ns=self.namespace)}/{self.name}", deadline=self._timeout
            )
        except (aiohttp.ClientError, TimeoutError):
            return False
        if status != 200 or not isinstance(obj, dict):
            return False
        self.cluster = (obj.get("spec") or {}).get("cluster")
        self._host_read_at = time.monotonic()
        return True

    @property
    def _timeout(self) -> float:
        return api_timeout(self.lease_duration)

    # -- heartbeat ---------------------------------------------------------------
    def annotations(self, vm_count: int, ready: bool) -> dict[str, str]:
        return lease_annotations(
            boot_id=self.boot_id,
            agent_version=__version__,
            vm_count=vm_count,
            ready=ready,
            cluster=self.cluster,
        )

    async def renew(self, ready: bool = True) -> bool:
        """One renewal, as LeaseWriter.renew: True if it landed."""
        now = datetime.now(UTC)
        if self._acquired is None:
            self._acquired = now
        base = LEASES.format(ns=self.namespace)
        for _ in range(2):
            if self._rv is None:
                status, obj = await self.wire.call(
                    "GET", f"{base}/{self.name}", deadline=self._timeout
                )
                if status == 404:
                    status, obj = await self.wire.call(
                        "POST", base, body=self._body(now, ready), deadline=self._timeout
                    )
                    if status == 201:
                        self._rv = obj["metadata"]["resourceVersion"]
                        self.renewals += 1
                        return True
                    return False
                if status != 200:
                    return False
                self._rv = obj["metadata"]["resourceVersion"]
            status, obj = await self.wire.call(
                "PUT", f"{base}/{self.name}", body=self._body(now, ready), deadline=self._timeout
            )
            if status == 200:
                self._rv = obj["metadata"]["resourceVersion"]
                self.renewals += 1
                return True
            if status in (404, 409):
                self._rv = None
                continue
            return False
        return False

    def _body(self, now: datetime, ready: bool) -> dict[str, Any]:
        assert self._acquired is not None
        vm_count = sum(1 for e in self._written.values() if e)
        return lease_body(
            host=self.name,
            namespace=self.namespace,
            instance_id=self.instance_id,
            lease_duration_seconds=self.lease_duration,
            renew_time=now,
            acquire_time=self._acquired,
            annotations=self.annotations(vm_count, ready),
            resource_version=self._rv,
        )

    async def _heartbeat_loop(self) -> None:
        interval = renew_interval(self.lease_duration)
        swept = False
        while True:
            if not swept:
                swept = await self._sweep()
            if time.monotonic() - self._host_read_at > self.host_refresh:
                await self._read_host()
            started = time.monotonic()
            try:
                ok = await self.renew(ready=swept)
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.wire.errors[f"renew {type(exc).__name__}"] += 1
                ok = False
            if not ok:
                swept = False
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)) if ok else 0.5)

    async def _sweep(self) -> bool:
        """The S3 sweep's list (nothing runs here that is not placed here)."""
        try:
            status, listed = await self.wire.call(
                "GET", VMS.format(ns=self.namespace), query=self._list_query(), deadline=30
            )
        except (aiohttp.ClientError, TimeoutError):
            return False
        if status != 200:
            return False
        self._snapshot(listed)
        return True

    # -- VMs ---------------------------------------------------------------------
    def _selector(self) -> dict[str, str]:
        return {"fieldSelector": f"status.host={self.name}"}

    def _list_query(self) -> dict[str, str]:
        return {**self._selector(), "limit": str(PAGE_SIZE)}

    def _snapshot(self, listed: dict[str, Any]) -> None:
        self._vms = {i["metadata"]["name"]: i for i in listed.get("items", [])}
        self._kick.set()

    def _event(self, event: dict[str, Any]) -> None:
        obj = event.get("object") or {}
        kind = event.get("type")
        name = (obj.get("metadata") or {}).get("name")
        if kind == "ERROR" or not name:
            raise RuntimeError(f"watch error: {obj}")
        self._rv_watch = obj["metadata"].get("resourceVersion", self._rv_watch)
        if kind == "DELETED":
            self._vms.pop(name, None)
            self._written.pop(name, None)
        elif kind in ("ADDED", "MODIFIED"):
            self._vms[name] = obj
            self._kick.set()

    async def _watch_loop(self) -> None:
        path = VMS.format(ns=self.namespace)
        self._rv_watch = None
        while True:
            try:
                if self._rv_watch is None:
                    status, listed = await self.wire.call(
                        "GET", path, query=self._list_query(), deadline=30
                    )
                    if status != 200:
                        raise RuntimeError(f"list: {status}")
                    self._rv_watch = listed["metadata"]["resourceVersion"]
                    self._snapshot(listed)
                await self.wire.watch(
                    path,
                    {
                        **self._selector(),
                        "resourceVersion": str(self._rv_watch),
                        "timeoutSeconds": str(self.watch_timeout),
                    },
                    self._event,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.wire.errors[f"watch {type(exc).__name__}: {str(exc)[:60]}"] += 1
                self._rv_watch = None
                await asyncio.sleep(0.5 + random.random())

    async def _report_loop(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            failed = False
            for name, obj in list(self._vms.items()):
                status = obj.get("status") or {}
                if status.get("host") != self.name:
                    continue
                epoch = int(status.get("placementEpoch") or 0)
                rt = status.get("runtime") or {}
                stored = rt.get("host") == self.name and rt.get("state") == "Running"
                if stored and int(rt.get("placementEpoch") or 0) == epoch:
                    self._written[name] = epoch
                    continue
                if self._written.get(name) == epoch:
                    continue
                if await self.report_running(name, epoch):
                    self._written[name] = epoch
                else:
                    failed = True
            if failed:  # the agent's next pass (poll interval) tries again
                await asyncio.sleep(1.0)
                self._kick.set()

    async def report_running(self, vm: str, epoch: int, restarts: int = 0) -> bool:
        """status.runtime as Agent._write_runtime writes it for a VM it started."""
        report = {
            "host": self.name,
            "state": "Running",
            "placementEpoch": epoch,
            "restarts": restarts,
            "message": None,
            "pid": 4242,
            "updatedTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        try:
            status, _ = await self.wire.call(
                "PATCH",
                f"{VMS.format(ns=self.namespace)}/{vm}/status",
                body={"status": {"runtime": report}},
                content_type=MERGE_PATCH,
                deadline=self._timeout,
            )
        except (aiohttp.ClientError, TimeoutError):
            return False
        if status == 200:
            self.reports += 1
        return status == 200


async def _control(fleet: dict[str, SimHost], wire: Wire, out: Callable[[Any], None]) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            return
        try:
            msg = json.loads(line)
        except ValueError:
            out({"error": f"not JSON: {line[:80]!r}"})
            continue
        cmd = msg.get("cmd")
        hosts = [fleet[h] for h in msg.get("hosts", []) if h in fleet]
        if cmd == "fail":
            await asyncio.gather(*(h.stop() for h in hosts))
            out({"failed": [h.name for h in hosts], "at": time.time()})
        elif cmd == "boot":
            for h in hosts:
                h.reboot()
            out({"booted": [h.name for h in hosts], "at": time.time()})
        elif cmd == "stats":
            out(
                {
                    "requests": dict(wire.counts),
                    "errors": dict(wire.errors),
                    "renewals": sum(h.renewals for h in fleet.values()),
                    "reports": sum(h.reports for h in fleet.values()),
                    "alive": sum(h.alive for h in fleet.values()),
                    "at": time.time(),
                }
            )
        elif cmd == "quit":
            return
        else:
            out({"error": f"unknown command {cmd!r}"})


async def run(args: argparse.Namespace) -> None:
    wire = Wire(Path(args.kubeconfig), connections=args.connections)
    hosts = [h for h in args.hosts.split(",") if h]
    fleet = {h: SimHost(h, args.namespace, wire, lease_duration=args.lease_duration) for h in hosts}
    spread = renew_interval(args.lease_duration)
    for i, host in enumerate(fleet.values()):
        host.start(delay=spread * i / max(len(fleet), 1))  # start-up spread like a fleet's

    def out(obj: Any) -> None:
        print(json.dumps(obj), flush=True)

    out({"started": len(fleet)})
    try:
        await _control(fleet, wire, out)
    finally:
        await asyncio.gather(*(h.stop() for h in fleet.values()))
        await wire.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--hosts", required=True, help="comma-separated Host names")
    p.add_argument("--lease-duration", type=int, default=10)
    p.add_argument("--connections", type=int, default=64, help="non-watch connection pool")
    args = p.parse_args(argv)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
