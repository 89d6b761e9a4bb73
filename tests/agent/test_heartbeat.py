"""Heartbeat Lease written by a real agent, read by a second client."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hafence.agent.heartbeat import LeaseWriter
from hafence.api.lease import HEARTBEAT_SELECTOR, HeartbeatInfo, lease_annotations
from hafence.kube import Api
from hafence.lab.controlplane import ControlPlane, kubeconfig_text
from hafence.lab.watchdogdev import StandInDevice

from .conftest import AgentProc
from .helpers import SLEEP, make_host, make_vm, runtime, wait_for

ROOT = Path(__file__).resolve().parents[2]

BOOT = "0123abcd-0000-4000-8000-00000000beef"
BOOT_DEFAULT = "0123abcd-0000-4000-8000-000000000001"  # start_agent's


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
    assert first.self_fence_armed is None and first.self_fencing_unavailable is None
    later = wait_for(
        lambda: (i := ready()) and i.renew_time > first.renew_time and i,
        what="a renewal after the first",
    )
    assert later.resource_version != first.resource_version
    assert later.agent_instance == first.agent_instance
    assert agent.proc.poll() is None, agent.log_text()


def test_a_restarted_agent_reads_its_lease_version_ahead_of_its_first_renewal(
    api: Api, namespace: str
) -> None:
    """LeaseWriter.prime, run while the S3 sweep runs: the ready renewal is one PUT."""
    ann = lease_annotations(boot_id=BOOT, agent_version="test", vm_count=0, ready=True)

    def writer(instance: str) -> LeaseWriter:
        return LeaseWriter(
            api, host="h1", namespace=namespace, instance_id=instance, lease_duration_seconds=10
        )

    before, after = writer("before-restart"), writer("after-restart")
    after.prime()
    assert after.version is None  # no Lease yet: the renewal creates it
    before.renew(datetime.now(UTC), ann)
    after.prime()
    stored = read_lease(api, namespace, "h1")
    assert stored is not None and after.version == stored["metadata"]["resourceVersion"]
    after.renew(datetime.now(UTC), ann)
    stored = read_lease(api, namespace, "h1")
    assert stored is not None and stored["spec"]["holderIdentity"] == "h1/after-restart"
    assert after.writes == 1 and after.version == stored["metadata"]["resourceVersion"]


def test_self_fencing_declared_only_with_an_armed_device(
    api: Api, namespace: str, start_agent: Callable[..., AgentProc], tmp_path: Path
) -> None:
    sf = {"enabled": True, "watchdogTimeoutSeconds": 30}
    make_host(api, namespace, "h2", selfFencing=sf)
    make_host(api, namespace, "h3", selfFencing=sf)
    device = StandInDevice(tmp_path / "wd.sock", lambda: None, granularity=4).start()
    try:
        start_agent("h2", namespace)  # no --watchdog-device
        start_agent("h3", namespace, "--watchdog-device", f"lab-stand-in:{device.path}")

        def ready(host: str) -> HeartbeatInfo | None:
            lease = read_lease(api, namespace, host)
            info = HeartbeatInfo.from_lease(lease) if lease else None
            return info if info and info.ready else None

        bare = wait_for(lambda: ready("h2"), what="h2's ready lease")
        assert bare.self_fence_armed is None
        assert (
            bare.self_fencing_unavailable and "--watchdog-device" in bare.self_fencing_unavailable
        )
        assert bare.watchdog_timeout_seconds is None, "the old annotation is gone"
        armed = wait_for(lambda: ready("h3"), what="h3's ready lease").self_fence_armed
        assert armed is not None
        assert armed.granted_seconds == 32, "the driver's granted timeout, read back"
        assert armed.boot_id == BOOT_DEFAULT
        assert device.ops()[:4] == ["OPEN", "GETSUPPORT", "SETTIMEOUT 30", "GETTIMEOUT"]
        wait_for(lambda: device.ops().count("KEEPALIVE") >= 3, what="the device fed")
        assert "WRITE V" not in device.ops()
    finally:
        device.close()


def test_unknown_host_is_a_clear_error(
    api: Api, namespace: str, start_agent: Callable[..., AgentProc]
) -> None:
    agent = start_agent("no-such-host", namespace)
    assert agent.proc.wait(timeout=30) == 2
    text = agent.log_text()
    assert "--host 'no-such-host'" in text and namespace in text, text
    assert read_lease(api, namespace, "no-such-host") is None


def test_agent_runs_with_only_the_rights_of_agent_rbac_yaml(
    api: Api,
    namespace: str,
    start_agent: Callable[..., AgentProc],
    control_plane: ControlPlane,
    tmp_path: Path,
) -> None:
    """manifests/host/agent-rbac.yaml is enough (and the agent needs no more)."""
    manifest = (ROOT / "manifests" / "host" / "agent-rbac.yaml").read_text()
    control_plane.kubectl(
        "apply", "-f", "-", input=manifest.replace("namespace: dc1", f"namespace: {namespace}")
    )
    token = api.core.create_namespaced_service_account_token(
        "hafence-agent-hv-01", namespace, {"spec": {"expirationSeconds": 3600}}
    ).status.token
    restricted = tmp_path / "agent.kubeconfig"
    restricted.write_text(
        kubeconfig_text(
            control_plane.url,
            control_plane.dir / "pki" / "ca.crt",
            None,
            None,
            token=token,
            user="agent",
        )
    )
    make_host(api, namespace, "hv-01")
    agent = start_agent("hv-01", namespace, kubeconfig_path=str(restricted))
    make_vm(api, namespace, "vm1", [SLEEP, "300"], host="hv-01")
    wait_for(
        lambda: runtime(api, namespace, "vm1").get("state") == "Running",
        what="the VM running under the restricted agent",
    )
    lease = wait_for(lambda: read_lease(api, namespace, "hv-01"), what="the lease")
    assert HeartbeatInfo.from_lease(lease).ready
    assert "403" not in agent.log_text(), agent.log_text()
