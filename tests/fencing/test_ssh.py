"""Soft fencing and fence-proxy execution through a real OpenSSH sshd on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hafence.fencing.drivers import build_driver
from hafence.fencing.errors import AuthFailed, HostKeyError, TimedOut, Unreachable
from hafence.fencing.protocol import Credentials
from hafence.fencing.ssh import run_command, soft_fence
from hafence.lab.bmc import BmcFarm
from hafence.lab.sshd import Sshd, keygen
from hafence.lab.targets import fence_agent_spec as spec
from hafence.lab.targets import ssh_target

from .conftest import PASSWORD, USER

AGENT = """
import os, sys, time
open(sys.argv[1], "w").write(str(os.getpid()))
time.sleep(120)
"""


@pytest.fixture
def fake_agent(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """A stand-in host agent: a process that records its pid in a file."""
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    pidfile = tmp_path / "agent.pid"
    proc = subprocess.Popen([sys.executable, str(script), str(pidfile)], start_new_session=True)
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    yield pidfile, proc
    proc.kill()
    proc.wait(5)
    pid = int(pidfile.read_text() or 0)
    if pid and pid != proc.pid:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


async def test_soft_fence_restarts_the_agent(
    sshd: Sshd, fake_agent: tuple[Path, subprocess.Popen[bytes]]
) -> None:
    pidfile, old_proc = fake_agent
    old = int(pidfile.read_text())
    script = pidfile.parent / "agent.py"
    restart = (
        f"kill $(cat {pidfile}); rm -f {pidfile}; "
        f"setsid nohup {sys.executable} {script} {pidfile} >/dev/null 2>&1 < /dev/null & "
        f"echo restarted"
    )
    result = await soft_fence(ssh_target(sshd), restart, timeout=10)
    assert result.exit_status == 0
    assert result.output == "restarted"
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    new = int(pidfile.read_text())
    assert new != old
    assert old_proc.wait(timeout=5) == -signal.SIGTERM  # the old agent was stopped
    os.kill(new, 0)  # and a new one runs


async def test_soft_fence_reports_failure_and_trims(sshd: Sshd) -> None:
    result = await soft_fence(ssh_target(sshd), "seq 1 3000; exit 3", timeout=10)
    assert result.exit_status == 3
    assert result.output.startswith("...") and result.output.endswith("3000")
    assert len(result.output) <= 2003


async def test_known_hosts_accepted(sshd: Sshd) -> None:
    target = ssh_target(sshd, host_key=None, known_hosts=sshd.known_hosts_line + "\n")
    done = await run_command(target, "echo ok", timeout=10)
    assert done.stdout.strip() == "ok"


async def test_host_key_mismatch(sshd: Sshd, tmp_path: Path) -> None:
    _, other = keygen(tmp_path / "other")
    with pytest.raises(HostKeyError, match="mismatch"):
        await soft_fence(ssh_target(sshd, host_key=other), "true", timeout=10)


async def test_unknown_host_key(sshd: Sshd, tmp_path: Path) -> None:
    known = f"[127.0.0.1]:{sshd.port + 1} {sshd.host_key}\n"  # another host's entry
    with pytest.raises(HostKeyError, match="unknown host key"):
        await soft_fence(ssh_target(sshd, host_key=None, known_hosts=known), "true", 10)
    with pytest.raises(HostKeyError, match="never accepted"):
        await soft_fence(ssh_target(sshd, host_key=None), "true", 10)


async def test_wrong_client_key(sshd: Sshd, tmp_path: Path) -> None:
    private, _ = keygen(tmp_path / "stranger")
    with pytest.raises(AuthFailed) as err:
        await soft_fence(ssh_target(sshd, private_key=private), "true", timeout=10)
    assert "PRIVATE KEY" not in str(err.value)


async def test_command_timeout(sshd: Sshd) -> None:
    with pytest.raises(TimedOut, match=r"(after|within) 1s"):
        await soft_fence(ssh_target(sshd), "sleep 30", timeout=1)


async def test_unreachable(sshd: Sshd) -> None:
    port = sshd.port
    sshd.stop()
    with pytest.raises(Unreachable):
        await soft_fence(ssh_target(sshd, port=port), "true", timeout=2)


async def test_fence_proxy_runs_fence_ipmilan(sshd: Sshd, farm: BmcFarm) -> None:
    bmc = farm.add("h1", USER, PASSWORD)
    driver = build_driver(
        spec("ipmilan", bmc.port),
        Credentials(USER, PASSWORD),
        proxy=ssh_target(sshd, name="proxy-host"),
    )
    assert "via proxy-host" in driver.name
    assert (await driver.status()).power_state == "on"
    assert (await driver.off()).power_state == "off"
    assert bmc.power == "off" and bmc.action_names == ["off"]
