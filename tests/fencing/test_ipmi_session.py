"""The native IPMI driver opens one RMCP+ session per operation, and bounds it.

Counted on the simulated BMC's side (``sessions_opened``: accepted RMCP+ Open Session
requests), so a driver that logs in again for each poll cannot pass.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from hafence.fencing.drivers import build_driver
from hafence.fencing.errors import FenceError, TimedOut, Unreachable
from hafence.fencing.protocol import Credentials
from hafence.lab.bmc import BmcFarm
from hafence.lab.targets import fence_agent_spec as spec

from .conftest import PASSWORD, USER


def workers() -> list[int]:
    """Our ipmi_worker children still alive (or unreaped)."""
    found = []
    me = str(os.getpid())
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = stat.rsplit(")", 1)[1].split()[1]
        if ppid == me and b"hafence.fencing.ipmi_worker" in cmdline:
            found.append(int(proc.name))
    return found


async def test_each_operation_is_one_session(farm: BmcFarm, creds: Credentials) -> None:
    # The power takes 0.6 s to drop: the off is verified only after several polls.
    bmc = farm.add("h1", USER, PASSWORD, power_delay=0.6)
    driver = build_driver(spec("ipmilan", bmc.port), creds)
    assert (await driver.status()).power_state == "on"
    assert bmc.sessions_opened == 1
    assert (await driver.off()).power_state == "off"
    assert bmc.sessions_opened == 2, "off and its verifying polls share one session"
    assert (await driver.test()).power_state == "off"
    assert bmc.sessions_opened == 3
    assert (await driver.reboot()).power_state == "on"
    assert bmc.sessions_opened == 4, "reboot: off, polls, on, polls in one session"
    # The reboot's "off" is sent even to a host already off (ipmitool's behaviour).
    assert bmc.action_names == ["off", "off", "on"]
    assert workers() == []


async def test_concurrent_operations_on_one_driver_take_turns(
    farm: BmcFarm, creds: Credentials
) -> None:
    bmc = farm.add("h1", USER, PASSWORD, power_delay=0.3)
    driver = build_driver(spec("ipmilan", bmc.port), creds)
    off, status = await asyncio.gather(driver.off(), driver.status())
    assert off.power_state == "off" and status.power_state == "off"
    assert bmc.sessions_opened == 2
    assert workers() == []


async def test_bmc_deaf_mid_operation_ends_by_timeout(farm: BmcFarm, creds: Credentials) -> None:
    # It accepts "off" and goes silent before the power drops: every verifying poll
    # is unanswered, each worker is killed at the 2 s bound, and the operation ends
    # with a typed error once power_wait is spent.
    bmc = farm.add("h1", USER, PASSWORD, power_delay=30)
    bmc.stop_answering_after = 0
    driver = build_driver(spec("ipmilan", bmc.port, timeoutSeconds=2, powerWaitSeconds=3), creds)
    with pytest.raises(FenceError) as err:
        await driver.off()
    assert isinstance(err.value, (TimedOut, Unreachable)), err.value
    assert "not verified" in str(err.value)
    assert PASSWORD not in str(err.value)
    assert bmc.action_names == ["off"]
    assert bmc.sessions_opened == 1  # the deaf BMC accepted no new login
    assert workers() == []


async def test_cancelled_operation_leaves_no_worker(farm: BmcFarm, creds: Credentials) -> None:
    # The caller's own deadline (the operator's step deadline) cancels the operation
    # while the worker waits on a dead BMC: the worker is killed, not orphaned.
    bmc = farm.add("h1", USER, PASSWORD)
    bmc.dead = True
    driver = build_driver(spec("ipmilan", bmc.port, timeoutSeconds=10), creds)
    task = asyncio.ensure_future(driver.status())
    for _ in range(100):  # until the worker runs
        await asyncio.sleep(0.05)
        if workers():
            break
    assert workers(), "the worker did not start"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert workers() == []
