"""S3 (stop what is not placed here before reporting ready) and self-fencing, with the
agent cut off from the real API server by a TCP proxy the test closes."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from hafence.api.lease import HeartbeatInfo, peer_check_window
from hafence.kube import Api
from hafence.lab.netcut import Forwarder
from hafence.lab.watchdogdev import StandInDevice

from .conftest import AgentProc
from .helpers import SLEEP, make_host, make_vm, pid_alive, place, runtime, wait_for
from .test_heartbeat import read_lease
from .test_vms import running_pid


def first_ready_after(
    api: Api, namespace: str, host: str, since: float, on_seen: Callable[[], None]
) -> HeartbeatInfo:
    """Poll the lease; at the first ready renewal newer than ``since`` run ``on_seen``."""

    def check() -> HeartbeatInfo | None:
        lease = read_lease(api, namespace, host)
        if lease is None:
            return None
        info = HeartbeatInfo.from_lease(lease)
        if info.ready and info.renew_time.timestamp() > since:
            on_seen()
            return info
        return None

    info: HeartbeatInfo = wait_for(check, timeout=30, what="a ready lease")
    return info


def test_stale_vm_is_stopped_before_ready_at_start(
    api: Api, namespace: str, start_agent: Callable[..., AgentProc]
) -> None:
    make_host(api, namespace, "h1")
    first = start_agent("h1", namespace)
    make_vm(api, namespace, "vm1", [SLEEP, "300"], host="h1")
    pid = running_pid(api, namespace, "vm1")
    # The VM may start before the first renewal lands: the Lease must exist to go.
    first_ready_after(api, namespace, "h1", 0.0, lambda: None)
    first.stop()
    assert pid_alive(pid)
    # While no agent ran, the VM was placed elsewhere; its old process is stale.
    place(api, namespace, "vm1", "h2", 2)
    api.coordination.delete_namespaced_lease("h1", namespace)
    since = time.time()
    second = start_agent("h1", namespace, state_dir=first.state_dir)

    def stale_dead() -> None:
        assert not pid_alive(pid), "lease said ready while a VM placed elsewhere still ran"

    first_ready_after(api, namespace, "h1", since - 1, stale_dead)
    log = second.log_text()
    assert log.index(f"stopping {namespace}/vm1") < log.index("S3 sweep done"), log


def test_stale_vm_is_stopped_before_ready_after_reconnect(
    api: Api,
    namespace: str,
    start_agent: Callable[..., AgentProc],
    proxied_kubeconfig: tuple[str, Forwarder],
) -> None:
    path, proxy = proxied_kubeconfig
    make_host(api, namespace, "h1")
    agent = start_agent("h1", namespace, kubeconfig_path=path)
    make_vm(api, namespace, "vm1", [SLEEP, "300"], host="h1")
    make_vm(api, namespace, "vm2", [SLEEP, "300"], host="h1")
    pid1 = running_pid(api, namespace, "vm1")
    pid2 = running_pid(api, namespace, "vm2")
    proxy.cut()
    wait_for(lambda: "lost contact" in agent.log_text(), what="the agent to notice")
    place(api, namespace, "vm1", "h2", 2)
    assert pid_alive(pid1), "a VM was stopped on loss of contact alone"
    restored = time.time()
    proxy.restore()

    def moved_dead() -> None:
        assert not pid_alive(pid1), "ready again while a VM placed elsewhere still ran"

    first_ready_after(api, namespace, "h1", restored, moved_dead)
    assert pid_alive(pid2), "a VM still placed here was stopped"


def test_cut_off_agent_stops_feeding_and_kills_vms_before_its_device_fires(
    api: Api,
    namespace: str,
    start_agent: Callable[..., AgentProc],
    proxied_kubeconfig: tuple[str, Forwarder],
    tmp_path: Path,
) -> None:
    timeout = 5
    path, proxy = proxied_kubeconfig
    make_host(
        api, namespace, "h1", selfFencing={"enabled": True, "watchdogTimeoutSeconds": timeout}
    )
    device = StandInDevice(tmp_path / "wd.sock", lambda: None).start()
    agent = start_agent(
        "h1", namespace, "--watchdog-device", f"lab-stand-in:{device.path}", kubeconfig_path=path
    )
    try:
        make_vm(api, namespace, "vm1", [SLEEP, "300"], host="h1")
        make_vm(api, namespace, "vm2", [SLEEP, "300"], host="h1")
        pids = [running_pid(api, namespace, "vm1"), running_pid(api, namespace, "vm2")]
        wait_for(
            lambda: (
                (x := read_lease(api, namespace, "h1"))
                and HeartbeatInfo.from_lease(x).self_fence_armed is not None
            ),
            what="the lease to declare the device",
        )
        proxy.cut()
        wait_for(lambda: "lost contact" in agent.log_text(), what="the agent to notice")
        # No peers (no token): nobody can vouch for an outage, so at the deadline the
        # agent stops feeding and kills its VMs; the device fires a timeout later.
        wait_for(
            lambda: not any(pid_alive(p) for p in pids),
            timeout=3 + peer_check_window(3) + 10,
            what="the agent to kill the VMs",
        )
        killed_at = time.monotonic()
        deadline = device.deadline()
        assert deadline is not None, "the device stopped counting: the host would not reset"
        assert deadline > killed_at, "the device fired before the VMs were killed"
        feeds = device.ops().count("KEEPALIVE")
        wait_for(lambda: device.fired, timeout=timeout + 5, what="the device to fire")
        assert device.ops().count("KEEPALIVE") == feeds, "fed after the VMs were killed"
        assert "WRITE V" not in device.ops()
        match = re.search(r"no lease renewal for ([0-9.]+)s", agent.log_text())
        assert match, agent.log_text()
        assert 3 <= float(match.group(1)) < 3 + peer_check_window(3) + 1.0
    finally:
        device.close()

    # The host did not really reset here (the stand-in's reset does nothing in this
    # test): once contact is back the killed VMs are reported Failed for their epoch.
    proxy.restore()
    for name in ("vm1", "vm2"):
        rt = wait_for(
            lambda n=name: (r := runtime(api, namespace, n)).get("state") == "Failed" and r,
            what=f"the fenced {name} reported Failed",
        )
        assert "self-fencing watchdog" in rt["message"]
        assert rt["placementEpoch"] == 1
    place(api, namespace, "vm2", "h1", 2)
    new = running_pid(api, namespace, "vm2", epoch=2)
    assert new not in pids
    assert runtime(api, namespace, "vm1")["state"] == "Failed"


def test_slow_api_at_start_never_stops_vms_placed_here(
    api: Api,
    namespace: str,
    start_agent: Callable[..., AgentProc],
    proxied_kubeconfig: tuple[str, Forwarder],
) -> None:
    """Before its first list the agent knows no placement at all: an empty cache must
    not read as "placed nowhere" (or a slow API server would stop every adopted VM)."""
    path, proxy = proxied_kubeconfig
    make_host(api, namespace, "h1")
    first = start_agent("h1", namespace)
    make_vm(api, namespace, "vm1", [SLEEP, "300"], host="h1")
    pid = running_pid(api, namespace, "vm1")
    first.stop()
    proxy.latency = 0.6  # each request slower than several reconcile polls (0.2 s)
    since = time.time()
    second = start_agent("h1", namespace, state_dir=first.state_dir, kubeconfig_path=path)

    def still_running() -> None:
        assert pid_alive(pid), second.log_text()

    first_ready_after(api, namespace, "h1", since, still_running)
    assert f"stopping {namespace}/vm1" not in second.log_text()
    assert runtime(api, namespace, "vm1")["restarts"] == 0
