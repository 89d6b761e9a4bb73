"""The native IPMI driver and Debian's fence_ipmilan against simulated BMCs."""

from __future__ import annotations

import asyncio

import pytest

from hafence.fencing.drivers import build_driver
from hafence.fencing.errors import AuthFailed, FenceError, TimedOut, Unreachable
from hafence.fencing.protocol import Credentials
from hafence.lab.bmc import BmcFarm, free_udp_port
from hafence.lab.targets import fence_agent_spec as spec

from .conftest import PASSWORD, USER

TYPES = ["ipmilan", "ilo4", "drac7", "fence_ipmilan", "fence_idrac"]


@pytest.mark.parametrize("type_", TYPES)
async def test_status_off_on(farm: BmcFarm, creds: Credentials, type_: str) -> None:
    bmc = farm.add("h1", USER, PASSWORD)
    driver = build_driver(spec(type_, bmc.port), creds)
    assert (await driver.status()).power_state == "on"
    result = await driver.off()
    assert result.power_state == "off" and bmc.power == "off"
    assert (await driver.status()).power_state == "off"
    assert (await driver.test()).power_state == "off"
    assert (await driver.on()).power_state == "on"
    assert bmc.power == "on"
    assert bmc.action_names == ["off", "on"]


@pytest.mark.parametrize("type_", ["ipmilan", "fence_ipmilan"])
async def test_reboot_is_off_verified_then_on(
    farm: BmcFarm, creds: Credentials, type_: str
) -> None:
    # The BMC takes a while to really cut power: the driver must poll, not trust "ok".
    bmc = farm.add("h1", USER, PASSWORD, power_delay=0.6)
    changes: list[str] = []
    bmc.on_power_change = changes.append
    result = await build_driver(spec(type_, bmc.port), creds).reboot()
    assert result.power_state == "on"
    assert bmc.action_names == ["off", "on"]
    assert changes == ["off", "on"]
    assert bmc.actions[1].time - bmc.actions[0].time >= 0.6


async def test_native_client_falls_back_to_sha1(farm: BmcFarm, creds: Credentials) -> None:
    bmc = farm.add("h1", USER, PASSWORD)
    await build_driver(spec("ipmilan", bmc.port), creds).status()
    assert bmc.refused_proposals >= 1


async def test_several_bmcs_one_process(farm: BmcFarm, creds: Credentials) -> None:
    bmcs = [farm.add(f"h{i}", USER, PASSWORD) for i in range(3)]
    await build_driver(spec("ipmilan", bmcs[1].port), creds).off()
    assert [b.power for b in bmcs] == ["on", "off", "on"]
    assert [b.action_names for b in bmcs] == [[], ["off"], []]


@pytest.mark.parametrize("type_", ["ipmilan", "fence_ipmilan"])
async def test_wrong_password(farm: BmcFarm, type_: str) -> None:
    bmc = farm.add("h1", USER, PASSWORD)
    wrong = "Wr0ng-pa55word"
    with pytest.raises(AuthFailed) as err:
        await build_driver(spec(type_, bmc.port), Credentials(USER, wrong)).status()
    assert wrong not in str(err.value) and PASSWORD not in str(err.value)
    assert bmc.action_names == []


@pytest.mark.parametrize("type_", ["ipmilan", "fence_ipmilan"])
async def test_unreachable_within_configured_timeout(creds: Credentials, type_: str) -> None:
    port = free_udp_port()  # nothing listens there
    driver = build_driver(spec(type_, port, timeoutSeconds=2), creds)
    with pytest.raises(TimedOut) as err:
        await driver.status()
    # Our configured 2 s bound fired (the libraries' own defaults are far longer:
    # ipmitool via fence_ipmilan gives up after ~20 s), without timing the test.
    assert "within 2s" in str(err.value)
    assert PASSWORD not in str(err.value)


@pytest.mark.parametrize("type_", ["ipmilan", "fence_ipmilan"])
async def test_dead_bmc(farm: BmcFarm, creds: Credentials, type_: str) -> None:
    bmc = farm.add("h1", USER, PASSWORD)
    bmc.dead = True
    with pytest.raises((Unreachable, TimedOut)):
        await build_driver(spec(type_, bmc.port, timeoutSeconds=2), creds).status()


@pytest.mark.parametrize("type_", ["ipmilan", "fence_ipmilan"])
async def test_bmc_stops_answering_mid_operation(
    farm: BmcFarm, creds: Credentials, type_: str
) -> None:
    # It accepts "off" and goes silent: the off cannot be verified, so it is a failure.
    bmc = farm.add("h1", USER, PASSWORD, power_delay=0.5)
    bmc.stop_answering_after = 0
    driver = build_driver(spec(type_, bmc.port, timeoutSeconds=2, powerWaitSeconds=3), creds)
    with pytest.raises(FenceError) as err:
        await driver.off()
    assert isinstance(err.value, (Unreachable, TimedOut)), err.value
    assert bmc.action_names[:1] == ["off"]
    assert PASSWORD not in str(err.value)


async def test_concurrent_drivers(farm: BmcFarm, creds: Credentials) -> None:
    bmcs = [farm.add(f"h{i}", USER, PASSWORD) for i in range(3)]
    drivers = [build_driver(spec("ipmilan", b.port), creds) for b in bmcs]
    results = await asyncio.gather(*(d.off() for d in drivers))
    assert [r.power_state for r in results] == ["off"] * 3
