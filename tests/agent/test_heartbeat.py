"""Heartbeat Lease written by a real agent, read by a second client."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hafence.api.lease import ANN_WATCHDOG_TIMEOUT, HEARTBEAT_SELECTOR, HeartbeatInfo
from hafence.kube import Api

from .conftest import AgentProc
from .helpers import make_host, wait_for

BOOT = "0123abcd-0000-4000-8000-00000000beef"


def read_lease(api: Api, namespace: str, name: str) -> dict[str, Any] | None:
    leases = api.coordination.list_namespaced_lease(namespace, label_selector=HEARTBEAT_SELECTOR)
    for item in leases.items:
        if item.metadata.name == name:
            obj: dict[str, Any] = api.client.sanitize_for_serialization(item)
            return obj
    return None


def test_lease_renewed_with_boot_id(
    api: Api, namespace: str, start_agent: Callable[..., AgentProc]
) -> None:
    make_host(api, namespace, "h1")
    agent = start_agent("h1", namespace, boot_id=BOOT)

    def ready() -> HeartbeatInfo | None:
        lease = read_lease(api, namespace, "h1")
        info = HeartbeatInfo.from_lease(lease) if lease else None
        return info if info and info.ready else None

    first = wait_for(ready, what="a ready heartbeat lease")
    assert first.boot_id == BOOT
    assert first.host == "h1" and first.agent_instance
    assert first.lease_duration_seconds == 3
    assert first.vm_count == 0
    assert not first.watchdog_armed
    later = wait_for(
        lambda: (i := ready()) and i.renew_time > first.renew_time and i,
        what="a renewal after the first",
    )
    assert later.resource_version != first.resource_version
    assert later.agent_instance == first.agent_instance
    assert agent.proc.poll() is None, agent.log_text()


def test_watchdog_declared_in_lease(
    api: Api, namespace: str, start_agent: Callable[..., AgentProc]
) -> None:
    make_host(api, namespace, "h2", selfFencing={"enabled": True, "watchdogTimeoutSeconds": 30})
    start_agent("h2", namespace)
    lease = wait_for(
        lambda: (x := read_lease(api, namespace, "h2")) and HeartbeatInfo.from_lease(x).ready and x,
        what="a ready lease",
    )
    assert lease["metadata"]["annotations"][ANN_WATCHDOG_TIMEOUT] == "30"
    assert HeartbeatInfo.from_lease(lease).watchdog_timeout_seconds == 30


def test_unknown_host_is_a_clear_error(
    api: Api, namespace: str, start_agent: Callable[..., AgentProc]
) -> None:
    agent = start_agent("no-such-host", namespace)
    assert agent.proc.wait(timeout=30) == 2
    text = agent.log_text()
    assert "--host 'no-such-host'" in text and namespace in text, text
    assert read_lease(api, namespace, "no-such-host") is None
