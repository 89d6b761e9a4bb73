"""An operator process against the real API server, and hand-driven heartbeats.

The heartbeats here are written by the test (the Lease contract of hafence.api.lease),
so a test decides exactly when a host goes silent; the agent itself is tested in
tests/agent and end to end in tests/e2e.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes.client.exceptions import ApiException

from hafence.api.lease import lease_annotations, lease_body
from hafence.kube import Api, load_api
from hafence.lab.ports import free_port

T = TypeVar("T")
HAFENCE = str(Path(sys.executable).parent / "hafence")


def wait_for(fn: Callable[[], T | None], timeout: float = 60, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except (KeyError, TypeError, IndexError):
            last = None
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what or fn}: last {last!r}")


def dump(api: Api, namespace: str) -> str:
    """Hosts' and VMs' status and the Events: printed when a test fails."""
    lines = []
    for kind in ("Host", "HAVirtualMachine", "FenceConfirmation"):
        for obj in api.list(kind, namespace)["items"]:
            lines.append(f"{kind} {obj['metadata']['name']}: {obj.get('status')}")
    for ev in api.core.list_namespaced_event(namespace).items:
        lines.append(f"event {ev.involved_object.name} {ev.reason}: {ev.message}")
    return "\n".join(lines)


class Heartbeats:
    """Renews heartbeat Leases for chosen hosts until told to stop, per host."""

    def __init__(self, api: Api, namespace: str, duration: int = 2) -> None:
        self.api, self.namespace, self.duration = api, namespace, duration
        self.alive: dict[str, str] = {}  # host -> boot ID
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def start(self, host: str, boot_id: str | None = None) -> str:
        self.alive[host] = boot_id or uuid.uuid4().hex
        self._renew(host)
        return self.alive[host]

    def stop(self, host: str) -> None:
        self.alive.pop(host, None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(self.duration / 4):
            for host in list(self.alive):
                try:
                    self._renew(host)
                except Exception:  # the next round retries
                    pass

    def _renew(self, host: str) -> None:
        boot_id = self.alive.get(host)
        if boot_id is None:
            return
        now = datetime.now(UTC)
        coord = self.api.coordination
        try:
            current = coord.read_namespaced_lease(host, self.namespace)
            rv = current.metadata.resource_version
        except ApiException as exc:
            if exc.status != 404:
                raise
            rv = None
        body = lease_body(
            host=host,
            namespace=self.namespace,
            instance_id="test",
            lease_duration_seconds=self.duration,
            renew_time=now,
            acquire_time=now,
            annotations=lease_annotations(
                boot_id=boot_id,
                agent_version="test",
                vm_count=0,
                ready=True,
            ),
            resource_version=rv,
        )
        if rv is None:
            coord.create_namespaced_lease(self.namespace, body)
        else:
            coord.replace_namespaced_lease(host, self.namespace, body)


@pytest.fixture
def heartbeats(api: Api, namespace: str) -> Iterator[Heartbeats]:
    hb = Heartbeats(api, namespace)
    yield hb
    hb.close()


class OperatorProcess:
    def __init__(self, kubeconfig: str, namespace: str, log: Path, *extra: str) -> None:
        self.port = free_port()
        self.log = log
        argv = [
            HAFENCE,
            "operator",
            "--kubeconfig",
            kubeconfig,
            "--namespace",
            namespace,
            "--leader-lease-namespace",
            namespace,
            "--profile",
            "lab",
            "--metrics-bind-address",
            f"127.0.0.1:{self.port}",
            "--leader-lease-duration",
            "4",
            "--leader-renew-deadline",
            "3",
            "--leader-retry-period",
            "0.5",
            *extra,
        ]
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )

    def stop(self, sig: str = "term") -> None:
        if self.proc.poll() is None:
            (self.proc.terminate if sig == "term" else self.proc.kill)()
            self.proc.wait(20)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def start_operator(
    kubeconfig: str, namespace: str, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    procs: list[OperatorProcess] = []

    def start(*extra: str, name: str = "operator") -> OperatorProcess:
        op = OperatorProcess(kubeconfig, namespace, tmp_path / f"{name}-{len(procs)}.log", *extra)
        procs.append(op)
        return op

    yield start
    print(dump(load_api(kubeconfig), namespace))
    for op in procs:
        op.stop("kill")
        print(f"---- {op.log.name}\n{op.output()[-20000:]}")  # shown when a test fails
