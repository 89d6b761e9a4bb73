"""The real operator, started as the Deployment starts it, with nothing but the
ServiceAccount's token and the manifests' rights: whatever it calls must be allowed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from deploy_support import HOST_SPEC, OPERATOR_NS, install, status_of

from hafence.kube import Api
from hafence.lab.controlplane import ControlPlane
from hafence.lab.ports import free_port

pytestmark = pytest.mark.controlplane

LEADER = "hafence-operator-leader"


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@pytest.fixture
def operator_process(
    control_plane: ControlPlane,
    api: Api,
    identity_kubeconfig: Callable[[str, str], Path],
    tmp_path: Path,
) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    install(control_plane, "base")
    # A Lease left by another test would make it wait out the holder's lease duration.
    if status_of(lambda: api.coordination.read_namespaced_lease(LEADER, OPERATOR_NS)) == 200:
        api.coordination.delete_namespaced_lease(LEADER, OPERATOR_NS)
    kubeconfig = identity_kubeconfig(OPERATOR_NS, "hafence-operator")
    port = free_port()
    log = tmp_path / "operator.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAFENCE_")}
    env.update({"HAFENCE_LEADER_LEASE_NAMESPACE": OPERATOR_NS, "HAFENCE_PROFILE": "lab"})
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hafence",
                "operator",
                "--kubeconfig",
                str(kubeconfig),
                "--metrics-bind-address",
                f"127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    try:
        yield proc, f"http://127.0.0.1:{port}", log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_operator_runs_with_only_its_service_account_rights(
    api: Api,
    namespace: str,
    operator_process: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    proc, url, log = operator_process
    api.create("Host", namespace, {"metadata": {"name": "h1"}, "spec": HOST_SPEC})
    wait_for("/readyz", lambda: http_ok(f"{url}/readyz") or proc.poll() is not None)
    assert proc.poll() is None, log.read_text()[-3000:]
    lease = wait_for(
        "the leader Lease",
        lambda: (
            status_of(lambda: api.coordination.read_namespaced_lease(LEADER, OPERATOR_NS)) == 200
            and api.coordination.read_namespaced_lease(LEADER, OPERATOR_NS)
        ),
    )
    assert lease.spec.holder_identity
    # It watched the Host and wrote its status, as the ServiceAccount.
    wait_for(
        "the operator to write the Host's status",
        lambda: (api.get("Host", namespace, "h1").get("status") or {}).get("phase"),
    )
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(20)
    text = log.read_text()
    # (not a bare "403": log timestamps have milliseconds like ",403")
    refused = [line for line in text.splitlines() if "403 Forbidden" in line or "orbidden" in line]
    assert not refused, "\n".join(refused[:10])


def test_operator_hard_fences_with_only_its_service_account_rights(
    api: Api,
    namespace: str,
    operator_process: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    """A whole hard-fencing outage (lease lost, soft fence, IPMI off through a simulated
    BMC, release, HA VM re-placed) by the operator holding nothing but the manifests'
    rights: every read, status write, Secret read and Event it needs is allowed."""
    from tests.operator.conftest import Heartbeats
    from tests.operator.test_confirmation import vm
    from tests.operator.test_hard_fencing import datacenter

    from hafence.lab.bmc import BmcFarm

    proc, _url, log = operator_process
    heartbeats = Heartbeats(api, namespace)
    try:
        with BmcFarm() as bmcs:
            datacenter(api, namespace, bmcs, heartbeats)
            api.create("HAVirtualMachine", namespace, vm("vm1"))

            def placed() -> str | None:
                return (api.get("HAVirtualMachine", namespace, "vm1").get("status") or {}).get(
                    "host"
                )

            victim = wait_for("vm1 placed", placed, timeout=60)
            heartbeats.stop(victim)
            wait_for(
                "vm1 restarted off the fenced host",
                lambda: (placed() or victim) != victim,
                timeout=90,
            )
            assert bmcs[victim].action_names[0] == "off"
            assert all(bmcs[h].action_names == [] for h in bmcs.bmcs if h != victim)
    finally:
        heartbeats.close()
    assert proc.poll() is None, log.read_text()[-3000:]
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(20)
    refused = [
        line
        for line in log.read_text().splitlines()
        if "403 Forbidden" in line or "orbidden" in line
    ]
    assert not refused, "\n".join(refused[:10])
