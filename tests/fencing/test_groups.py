"""Concurrent groups with oVirt's rules, on simulated BMCs / PDUs."""

from __future__ import annotations

from hafence.fencing.drivers import build_driver
from hafence.fencing.groups import run_group
from hafence.fencing.protocol import Credentials
from hafence.lab.bmc import BmcFarm
from hafence.lab.targets import fence_agent_spec as spec

from .conftest import USER

PW = "Gr0up-pdu-pass"


def drivers(farm: BmcFarm, n: int, **kw: object) -> list:  # type: ignore[type-arg]
    creds = Credentials(USER, PW)
    return [
        build_driver(
            spec("ipmilan", farm.add(f"pdu{i}", USER, PW).port, **kw), creds, name=f"pdu{i}"
        )
        for i in range(n)
    ]


async def test_off_needs_every_agent(farm: BmcFarm) -> None:
    group = drivers(farm, 2)
    result = await run_group(group, "off")
    assert result.ok and result.power_state == "off"
    assert [farm[f"pdu{i}"].power for i in range(2)] == ["off", "off"]


async def test_one_pdu_fails_to_switch_off(farm: BmcFarm) -> None:
    group = drivers(farm, 2, timeoutSeconds=2, powerWaitSeconds=2)
    farm["pdu1"].dead = True
    result = await run_group(group, "off")
    assert not result.ok
    assert result.power_state == "unknown"
    assert [name for name, _ in result.errors] == [group[1].name], result.message
    assert farm["pdu0"].power == "off" and farm["pdu1"].power == "on"
    assert "off failed" in result.message and PW not in result.message


async def test_on_needs_any_agent(farm: BmcFarm) -> None:
    group = drivers(farm, 2, timeoutSeconds=2, powerWaitSeconds=2)
    for i in range(2):
        farm[f"pdu{i}"].power = "off"
    farm["pdu0"].dead = True
    result = await run_group(group, "on")
    assert result.ok and result.power_state == "on"
    assert farm["pdu1"].power == "on"


async def test_status_rules(farm: BmcFarm) -> None:
    group = drivers(farm, 3, timeoutSeconds=2)
    assert (await run_group(group, "status")).power_state == "on"
    farm["pdu0"].power = farm["pdu1"].power = farm["pdu2"].power = "off"
    assert (await run_group(group, "status")).power_state == "off"
    farm["pdu2"].dead = True
    mixed = await run_group(group, "status")
    assert mixed.power_state == "unknown" and mixed.ok
    farm["pdu1"].power = "on"
    assert (await run_group(group, "status")).power_state == "on"  # any on: on


async def test_reboot_group(farm: BmcFarm) -> None:
    group = drivers(farm, 2)
    result = await run_group(group, "reboot")
    assert result.ok and result.power_state == "on"
    assert farm["pdu0"].action_names == ["off", "on"]
    assert farm["pdu1"].action_names == ["off", "on"]
