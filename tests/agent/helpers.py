"""Helpers for the agent tests: objects, waits, a cuttable TCP proxy."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hafence.kube import Api

SLEEP = "/bin/sleep"


def wait_for(pred: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def make_host(api: Api, namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    body = {
        "metadata": {"name": name},
        "spec": {
            "address": "127.0.0.1",
            "cluster": "lab",
            "capacity": {"cpu": 8, "memoryMiB": 8192},
            **spec,
        },
    }
    return api.create("Host", namespace, body)


def make_vm(
    api: Api,
    namespace: str,
    name: str,
    command: list[str] | None = None,
    host: str | None = None,
    epoch: int = 1,
    run_strategy: str = "Always",
    libvirt: tuple[str, str] | None = None,  # (uri, domainXML) instead of a command
) -> None:
    runtime: dict[str, Any] = (
        {"driver": "libvirt", "libvirt": {"uri": libvirt[0], "domainXML": libvirt[1]}}
        if libvirt is not None
        else {"driver": "process", "process": {"command": command}}
    )
    api.create(
        "HAVirtualMachine",
        namespace,
        {
            "metadata": {"name": name},
            "spec": {
                "placement": {"cluster": "lab"},
                "runStrategy": run_strategy,
                "runtime": runtime,
            },
        },
    )
    if host is not None:
        place(api, namespace, name, host, epoch)


def place(api: Api, namespace: str, name: str, host: str | None, epoch: int) -> None:
    api.patch(
        "HAVirtualMachine",
        namespace,
        name,
        {"status": {"host": host, "placementEpoch": epoch, "phase": "Scheduled"}},
        status=True,
    )


def runtime(api: Api, namespace: str, name: str) -> dict[str, Any]:
    obj = api.get("HAVirtualMachine", namespace, name)
    out: dict[str, Any] = (obj.get("status") or {}).get("runtime") or {}
    return out


def env_has(pid: int, marker: str) -> bool:
    try:
        return marker.encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
