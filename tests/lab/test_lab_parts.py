"""The lab's parts against real peers: the API server, ipmitool, OpenSSH, /proc."""

from __future__ import annotations

import base64
import contextlib
import io
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest

from hafence.api.fenceagent import FenceAgentSpec
from hafence.fencing.drivers import build_driver
from hafence.fencing.protocol import Credentials
from hafence.kube import Api, load_api
from hafence.lab.datacenter import AgentTimings, Datacenter
from hafence.lab.invariants import InvariantChecker
from hafence.lab.netcut import Forwarder, server_of
from hafence.lab.procs import vm_processes
from hafence.lab.resources import manifests
from tests.agent.helpers import wait_for

pytestmark = pytest.mark.controlplane


def test_forwarder_cut_and_restore(kubeconfig: str, tmp_path: Path) -> None:
    with Forwarder(*server_of(Path(kubeconfig))) as fwd:
        api = load_api(str(fwd.kubeconfig(Path(kubeconfig), tmp_path / "kc")), timeout=3)
        try:
            assert api.core.list_namespace(_request_timeout=3).items
            fwd.cut()
            # The open connection is torn down, then new ones are reset on arrival.
            for _ in range(2):
                with pytest.raises(Exception):  # noqa: B017 - any transport error will do
                    api.core.list_namespace(_request_timeout=3)
            assert fwd.connections_refused >= 1
            fwd.restore()
            assert api.core.list_namespace(_request_timeout=3).items
        finally:
            api.close()


def _fake_vm(key: str, bin_dir: Path) -> subprocess.Popen[bytes]:
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HAFENCE_VM": key}
    return subprocess.Popen(["/bin/sleep", "30"], env=env, start_new_session=True)


def test_checker_sees_a_vm_on_two_hosts(tmp_path: Path) -> None:
    ns = f"chk-{os.getpid()}"
    bins = {str(tmp_path / "a"): "host-a", str(tmp_path / "b"): "host-b"}
    procs = [_fake_vm(f"{ns}/vm1", tmp_path / "a"), _fake_vm(f"{ns}/vm2", tmp_path / "b")]
    try:
        checker = InvariantChecker(lambda: vm_processes(bins, ns))

        def sampled(pred: Callable[[], Any]) -> Callable[[], Any]:
            def check() -> Any:
                checker.sample_once()
                return pred()

            return check

        wait_for(sampled(lambda: len(checker.running()) == 2))
        assert checker.running() == {"vm1": ["host-a"], "vm2": ["host-b"]}
        assert not checker.violations
        procs.append(_fake_vm(f"{ns}/vm1", tmp_path / "b"))
        wait_for(sampled(lambda: checker.violations))
        (violation,) = checker.violations
        assert violation.key == f"{ns}/vm1"
        assert {h for h, _ in violation.where} == {"host-a", "host-b"}
    finally:
        for p in procs:
            p.kill()
            p.wait()


@contextlib.contextmanager
def running_datacenter(
    kubeconfig: str, api: Api, namespace: str, fence_type: str = "ipmilan"
) -> Iterator[Datacenter]:
    """Two virtual hosts, their resources applied (the API server takes what the lab
    writes), agents booted; everything stopped and removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="hafence-lab-test-"))
    dc = Datacenter(
        admin_kubeconfig=Path(kubeconfig),
        namespace=namespace,
        workdir=workdir,
        host_names=[("hv-1", "r1"), ("hv-2", "r1")],
        agent=AgentTimings(lease_duration=3),
        fence_type=fence_type,
    )
    try:
        dc.start()
        for obj in manifests(dc):
            if obj["kind"] == "Secret":
                api.core.create_namespaced_secret(namespace, obj)
            else:
                api.create(obj["kind"], namespace, {k: v for k, v in obj.items() if k != "kind"})
        dc.boot_all()
        yield dc
    finally:
        dc.close()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def datacenter(kubeconfig: str, api: Api, namespace: str) -> Iterator[Datacenter]:
    with running_datacenter(kubeconfig, api, namespace) as dc:
        yield dc


def _boot_id(api: Api, namespace: str, host: str) -> str | None:
    try:
        lease = api.coordination.read_namespaced_lease(host, namespace, _request_timeout=5)
    except Exception:
        return None
    return (lease.metadata.annotations or {}).get("hafence.io/boot-id")


def _ipmitool(dc: Datacenter, host: str, *cmd: str) -> str:
    h = dc.hosts[host]
    env = {**os.environ, "IPMI_PASSWORD": h.bmc_password}
    out = subprocess.run(
        ["ipmitool", "-I", "lanplus", "-H", "127.0.0.1", "-p", str(h.bmc.port),
         "-U", "hafence-power", "-E", *cmd],
        capture_output=True, text=True, env=env, timeout=30, check=True,
    )  # fmt: skip
    return out.stdout


def test_bmc_power_acts_on_the_virtual_host(
    datacenter: Datacenter, api: Api, namespace: str
) -> None:
    dc = datacenter
    first_boot = wait_for(lambda: _boot_id(api, namespace, "hv-1"), what="hv-1's lease")
    api.patch("HAVirtualMachine", namespace, "ha-1",
              {"status": {"host": "hv-1", "placementEpoch": 1, "phase": "Scheduled"}},
              status=True)  # fmt: skip
    wait_for(lambda: [h for _, k, h in dc.vm_processes() if k.endswith("/ha-1")] == ["hv-1"],
             what="ha-1 running on hv-1")  # fmt: skip
    old_agent = dc.hosts["hv-1"].agent
    assert "on" in _ipmitool(dc, "hv-1", "chassis", "power", "status")

    _ipmitool(dc, "hv-1", "chassis", "power", "off")
    assert not [k for _, k, h in dc.vm_processes() if h == "hv-1"], "VMs survived power off"
    assert old_agent is not None and old_agent.poll() is not None, "agent survived power off"
    assert "off" in _ipmitool(dc, "hv-1", "chassis", "power", "status")

    _ipmitool(dc, "hv-1", "chassis", "power", "on")
    new_boot = wait_for(
        lambda: (b := _boot_id(api, namespace, "hv-1")) != first_boot and b,
        what="a lease with a new boot ID",
    )
    assert new_boot == dc.hosts["hv-1"].boot_id
    assert dc.hosts["hv-1"].bmc.action_names == ["off", "on"]

    agent = dc.hosts["hv-1"].agent
    _ipmitool(dc, "hv-1", "chassis", "power", "reset")  # a hard reset is a reboot too
    assert agent is not None and agent.poll() is not None
    wait_for(
        lambda: (b := _boot_id(api, namespace, "hv-1")) not in (first_boot, new_boot) and b,
        what="a lease with a third boot ID",
    )


def _ssh(dc: Datacenter, host: str, command: str) -> tuple[int, str]:
    h = dc.hosts[host]
    client = paramiko.SSHClient()
    key_type, b64 = dc.shells.host_key.split()
    client.get_host_keys().add(
        f"[127.0.0.1]:{dc.shells.port}", key_type, paramiko.Ed25519Key(data=base64.b64decode(b64))
    )
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    pkey = paramiko.Ed25519Key.from_private_key(io.StringIO(h.ssh_key.private_openssh.decode()))
    client.connect(
        "127.0.0.1",
        dc.shells.port,
        username=dc.shells.user,
        pkey=pkey,
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    try:
        _, stdout, stderr = client.exec_command(command, timeout=30)
        code = stdout.channel.recv_exit_status()
        return code, stderr.read().decode()
    finally:
        client.close()


def test_ssh_restart_restarts_only_that_hosts_agent(
    datacenter: Datacenter, api: Api, namespace: str
) -> None:
    dc = datacenter
    boot = wait_for(lambda: _boot_id(api, namespace, "hv-2"), what="hv-2's lease")
    other = dc.hosts["hv-1"].agent
    dc.crash_agent("hv-2")
    assert not dc.hosts["hv-2"].agent_alive
    code, err = _ssh(dc, "hv-2", "systemctl restart hafence-agent.service")
    assert code == 0, err
    assert dc.hosts["hv-2"].agent_alive and dc.hosts["hv-2"].agent_restarts == 1
    assert dc.hosts["hv-2"].boot_id == boot, "a service restart keeps the boot ID"
    assert dc.hosts["hv-1"].agent is other and dc.hosts["hv-1"].agent_restarts == 0

    code, err = _ssh(dc, "hv-2", "reboot")
    assert code == 127 and "not available" in err
    dc.cut_network("hv-2")
    code, err = _ssh(dc, "hv-2", "systemctl restart hafence-agent.service")
    assert code == 255 and "No route to host" in err
    assert dc.hosts["hv-2"].agent_restarts == 1


def test_network_cut_leaves_the_bmc_answering(
    datacenter: Datacenter, api: Api, namespace: str
) -> None:
    dc = datacenter
    wait_for(lambda: _boot_id(api, namespace, "hv-1"), what="hv-1's lease")
    dc.cut_network("hv-1")

    def renew() -> Any:
        return api.coordination.read_namespaced_lease("hv-1", namespace).spec.renew_time

    before = renew()
    time.sleep(3.5)  # more than one lease duration: a live path would have renewed
    assert renew() == before, "the agent renewed its lease through a cut network"
    assert "on" in _ipmitool(dc, "hv-1", "chassis", "power", "status")
    dc.restore_network("hv-1")
    wait_for(lambda: renew() != before, what="a renewal after the network is back")


def test_datacenter_close_leaves_no_vm(datacenter: Datacenter, api: Api, namespace: str) -> None:
    dc = datacenter
    api.patch("HAVirtualMachine", namespace, "ha-2",
              {"status": {"host": "hv-2", "placementEpoch": 1, "phase": "Scheduled"}},
              status=True)  # fmt: skip
    wait_for(lambda: dc.vm_processes(), what="a VM process")
    dc.close()
    assert dc.vm_processes() == []
    assert all(not h.agent_alive for h in dc.hosts.values())


async def test_a_pdu_pair_powers_the_virtual_host(
    kubeconfig: str, api: Api, namespace: str
) -> None:
    """`hafence lab --fence-type apc_snmp`: the lab's FenceAgents reach the host's power.

    (The iLO2 wiring is the same code path; bench/fencing_latency.py and `hafence lab
    --fence-type ilo2` run it, tests/operator/test_emulated_fencing.py fences through one.)
    """
    with running_datacenter(kubeconfig, api, namespace, "apc_snmp") as dc:
        agents = [o for o in manifests(dc) if o["kind"] == "FenceAgent"]
        assert {o["spec"]["type"] for o in agents} == {"apc_snmp"}
        assert len(agents) == 4  # two PDUs per host
        first_boot = wait_for(lambda: _boot_id(api, namespace, "hv-1"), what="hv-1's lease")
        host = dc.hosts["hv-1"]
        creds = Credentials("hafence-power", host.bmc_password)
        drivers = [
            build_driver(FenceAgentSpec.model_validate(o["spec"]), creds, poll_interval=0.1)
            for o in agents
            if o["spec"]["hostRef"]["name"] == "hv-1"
        ]
        old_agent = host.agent
        for driver in drivers:
            await driver.off()
        assert not host.powered and old_agent is not None and old_agent.poll() is not None
        assert dc.hosts["hv-2"].powered
        await drivers[0].on()  # one PSU fed is enough
        wait_for(
            lambda: (b := _boot_id(api, namespace, "hv-1")) != first_boot and b,
            what="a lease with a new boot ID",
        )
