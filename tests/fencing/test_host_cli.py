"""`hafence host test NAME -n NS` against a real sshd and simulated BMCs: one line per
check and an exit status a script can use."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from hafence.kube import Api
from hafence.lab.bmc import BmcFarm
from hafence.lab.sshd import Sshd, keygen

from .conftest import PASSWORD, USER
from .test_cli import agent, hafence, secret

pytestmark = pytest.mark.controlplane


def host(name: str, ssh: dict[str, Any] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "address": "127.0.0.1",
        "cluster": "c1",
        "capacity": {"cpu": 4, "memoryMiB": 4096},
    }
    if ssh is not None:
        spec["ssh"] = ssh
    return {"metadata": {"name": name}, "spec": spec}


def ssh_block(sshd: Sshd, command: str, host_key: str | None = None) -> dict[str, Any]:
    return {
        "port": sshd.port,
        "user": sshd.user,
        "privateKeySecretRef": {"name": "ssh", "key": "id"},
        "hostKey": host_key or sshd.host_key,
        "softFenceCommand": command,
        "timeoutSeconds": 5,
    }


def lines(out: str) -> dict[str, str]:
    """check name -> verdict."""
    found = {}
    for line in out.splitlines():
        verdict, _, rest = line.partition("  ")
        if verdict.strip() in ("OK", "FAIL", "SKIP"):
            found[rest.split(":")[0].strip()] = verdict.strip()
    return found


def test_host_test_checks_ssh_soft_fence_command_and_agents(
    api: Api, namespace: str, kubeconfig: str, farm: BmcFarm, sshd: Sshd, tmp_path: Path
) -> None:
    ns = namespace
    secret(api, ns, "bmc")
    key = base64.b64encode(sshd.client_key.encode()).decode()
    api.core.create_namespaced_secret(ns, {"metadata": {"name": "ssh"}, "data": {"id": key}})
    for name in ("good", "bad", "nossh"):
        bmc = farm.add(name, USER, PASSWORD)
        agent(api, ns, f"{name}-ipmi", name, bmc.port)
    api.create("Host", ns, host("good", ssh_block(sshd, "sh -c 'exit 0'")))
    _, other_key = keygen(tmp_path / "impostor")
    api.create("Host", ns, host("bad", ssh_block(sshd, "true", host_key=other_key)))
    api.create("Host", ns, host("nossh", None))

    good = hafence(kubeconfig, "host", "test", "good", "-n", ns)
    assert good.returncode == 0, good.stdout + good.stderr
    assert lines(good.stdout) == {
        "ssh": "OK",
        "soft-fence command": "OK",
        "fence agent good-ipmi (ipmilan, order 1)": "OK",
    }, good.stdout
    assert "sh is /" in good.stdout and "power on" in good.stdout
    assert PASSWORD not in good.stdout + good.stderr
    # Recorded where `fence-agent test` records it.
    assert api.get("FenceAgent", ns, "good-ipmi")["status"]["lastTestResult"] == "Succeeded"

    # A soft-fence command whose program is missing: found out without running it.
    api.patch("Host", ns, "good", {"spec": {"ssh": {"softFenceCommand": "no-such-agentctl --x"}}})
    farm["good"].dead = True
    missing = hafence(kubeconfig, "host", "test", "good", "-n", ns)
    assert missing.returncode == 1
    checks = lines(missing.stdout)
    assert checks["ssh"] == "OK" and checks["soft-fence command"] == "FAIL", missing.stdout
    assert checks["fence agent good-ipmi (ipmilan, order 1)"] == "FAIL"
    assert "no-such-agentctl not found on the host" in missing.stdout

    # Another host key than the pinned one: refused, never accepted.
    bad = hafence(kubeconfig, "host", "test", "bad", "-n", ns)
    assert bad.returncode == 1
    assert lines(bad.stdout)["ssh"] == "FAIL" and "HostKeyError" in bad.stdout, bad.stdout
    assert lines(bad.stdout)["soft-fence command"] == "SKIP"

    # No ssh block: skipped, which is not a failure; the agent still checked.
    nossh = hafence(kubeconfig, "host", "test", "nossh", "-n", ns)
    assert nossh.returncode == 0, nossh.stdout
    assert lines(nossh.stdout)["ssh"] == "SKIP"
    assert lines(nossh.stdout)["fence agent nossh-ipmi (ipmilan, order 1)"] == "OK"

    assert hafence(kubeconfig, "host", "test", "ghost", "-n", ns).returncode == 1


@pytest.mark.parametrize(
    ("command", "program"),
    [
        ("systemctl restart hafence-agent.service", "systemctl"),
        ("LANG=C /usr/bin/systemctl restart x", "/usr/bin/systemctl"),
        ("sh -c 'exit 0'", "sh"),
    ],
)
def test_first_program_of_a_soft_fence_command(command: str, program: str) -> None:
    from hafence.fencing.cli_host import first_program

    assert first_program(command) == program


@pytest.mark.parametrize("command", ["$(reboot) x", "`id`", "a;b", "'unterminated"])
def test_a_command_that_is_no_program_never_reaches_the_remote_shell(command: str) -> None:
    from hafence.fencing.cli_host import first_program

    with pytest.raises(ValueError, match="softFenceCommand"):
        first_program(command)
