"""The agent rides out a real kube-apiserver restart (a private control plane, so the
session's shared one is never stopped)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hafence.api.lease import HeartbeatInfo
from hafence.kube import Api, load_api
from hafence.lab.controlplane import ControlPlane

from .conftest import AgentProc
from .helpers import SLEEP, make_host, make_vm, pid_alive, runtime, wait_for
from .test_heartbeat import read_lease
from .test_vms import running_pid

CRDS = Path(__file__).resolve().parents[2] / "crds"


@pytest.fixture
def private_cp() -> Iterator[tuple[ControlPlane, Api]]:
    with ControlPlane() as cp:
        cp.kubectl("apply", "--server-side", "-f", str(CRDS))
        cp.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        api = load_api(str(cp.kubeconfig))
        yield cp, api
        api.close()


def test_agent_survives_apiserver_restart(
    private_cp: tuple[ControlPlane, Api], start_agent: Callable[..., AgentProc]
) -> None:
    cp, api = private_cp
    ns = "dc1"
    api.core.create_namespace({"metadata": {"name": ns}})
    make_host(api, ns, "h1")
    agent = start_agent("h1", ns, kubeconfig_path=str(cp.kubeconfig))
    make_vm(api, ns, "vm1", [SLEEP, "300"], host="h1")
    pid = running_pid(api, ns, "vm1")

    # A crash, not a graceful shutdown (which keeps serving for seconds): connections
    # drop at once, as when the API server's host dies.
    assert cp.apiserver is not None
    cp.apiserver.kill()
    cp.apiserver.wait()
    cp.apiserver = None
    wait_for(lambda: "lost contact" in agent.log_text(), what="the agent to notice")
    time.sleep(3)  # an outage of a few renewal intervals
    cp.start_apiserver()
    restarted = time.time()

    wait_for(
        lambda: (
            (x := read_lease(api, ns, "h1"))
            and (i := HeartbeatInfo.from_lease(x)).ready
            and i.renew_time.timestamp() > restarted - 1
        ),
        timeout=30,
        what="a ready lease after the restart",
    )
    assert pid_alive(pid), "an API server outage took a placed VM down"
    assert runtime(api, ns, "vm1")["pid"] == pid
    # The watch is back: a VM placed now starts.
    make_vm(api, ns, "vm2", [SLEEP, "300"], host="h1")
    running_pid(api, ns, "vm2")
    # Retries back off: a busy loop would log thousands of attempts in a few seconds.
    assert agent.log_text().count("relisting in") < 15, agent.log_text()
    assert agent.proc.poll() is None
