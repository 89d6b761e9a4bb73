"""Debian's real fence_ilo2 against the iLO2 emulator and fence_apc_snmp against the
APC PDU emulator, through hafence's drivers.  One emulator of each per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hafence.api.fenceagent import FenceAgentSpec
from hafence.fencing.drivers import build_driver
from hafence.fencing.errors import FenceError
from hafence.fencing.groups import run_group
from hafence.fencing.protocol import Credentials
from hafence.lab.ilo2 import POWER_PRIV, Ilo2
from hafence.lab.pdu import ApcPdu, DualFeed
from hafence.lab.targets import fence_agent_spec as base_spec

ARTICLE = "ssl=yes,ssl_insecure=yes,inet4_only=yes"
POWER_ONLY = Credentials("fence-power", "Pw-only-4-power")
READ_ONLY = Credentials("monitor", "Pw-read-only")


@pytest.fixture(scope="module")
def ilo() -> Iterator[Ilo2]:
    users = {
        POWER_ONLY.username: (POWER_ONLY.password, frozenset({POWER_PRIV})),
        READ_ONLY.username: (READ_ONLY.password, frozenset()),
    }
    with Ilo2("h1", users) as device:
        yield device


def spec(type_: str, port: int, options: str, plug: str | None = None) -> FenceAgentSpec:
    extra = {"plug": plug} if plug is not None else {}
    return base_spec(type_, port, options=options, timeoutSeconds=10, powerWaitSeconds=8, **extra)


async def test_ilo2_with_the_articles_options(ilo: Ilo2) -> None:
    ilo.set_power("on")
    driver = build_driver(spec("ilo2", ilo.port, ARTICLE), POWER_ONLY, poll_interval=0.1)
    assert (await driver.status()).power_state == "on"
    before = len(ilo.actions)
    assert (await driver.off()).power_state == "off"
    assert ilo.power == "off"
    assert (await driver.on()).power_state == "on"
    # fence_ilo2 reads iLO2 firmware 2.29 and toggles with HOLD_PWR_BTN for both.
    assert ilo.action_names[before:] == ["off", "on"]
    assert ilo.logins and all(user == POWER_ONLY.username for user, _ in ilo.logins)


async def test_ilo2_self_signed_certificate_needs_ssl_insecure(ilo: Ilo2) -> None:
    driver = build_driver(spec("ilo2", ilo.port, "ssl=yes"), POWER_ONLY)
    with pytest.raises(FenceError):
        await driver.status()


async def test_ilo2_account_without_power_privilege_cannot_fence(ilo: Ilo2) -> None:
    ilo.set_power("on")
    driver = build_driver(spec("ilo2", ilo.port, ARTICLE), READ_ONLY, poll_interval=0.1)
    assert (await driver.status()).power_state == "on"  # reading needs no privilege
    driver.settings.power_wait = 2
    with pytest.raises(FenceError):
        await driver.off()
    assert ilo.power == "on"


async def test_ilo2_wrong_password_fails(ilo: Ilo2) -> None:
    bad = Credentials(POWER_ONLY.username, "not-it")
    driver = build_driver(spec("ilo2", ilo.port, ARTICLE + ",login_timeout=3"), bad)
    driver.settings.timeout = 6
    with pytest.raises(FenceError) as err:
        await driver.status()
    assert "not-it" not in str(err.value)
    assert (POWER_ONLY.username, False) in ilo.logins


@pytest.fixture(scope="module")
def pdus() -> Iterator[tuple[ApcPdu, ApcPdu, DualFeed]]:
    with ApcPdu("pdu-a") as a, ApcPdu("pdu-b") as b:
        feed = DualFeed("hv-a2", [(a, a.add_outlet(12, "hv-a2-psu1")), (b, b.add_outlet(12, "x"))])
        yield a, b, feed


SAMPLE_PDU = "snmp_version=1"  # the community is the Secret's password


async def test_pdu_pair_off_needs_both_outlets(pdus: tuple[ApcPdu, ApcPdu, DualFeed]) -> None:
    a, b, feed = pdus
    feed.set_power("on")
    creds = Credentials("snmp", "private")
    drivers = [
        build_driver(spec("apc_snmp", pdu.port, SAMPLE_PDU, plug="12"), creds, poll_interval=0.1)
        for pdu in (a, b)
    ]
    # PDU b's write community was changed: its outlet stays on, so the host has power.
    b.refuse_writes = True
    try:
        refused = await run_group(drivers, "off")
    finally:
        b.refuse_writes = False
    assert not refused.ok, refused.message
    assert feed.power == "on" and a.outlets[12].power == "off"
    assert "readOnly" in refused.message, refused.message

    both = await run_group(drivers, "off")
    assert both.ok and both.power_state == "off", both.message
    assert feed.power == "off"
    back = await run_group(drivers, "on")
    assert back.ok and feed.power == "on"


async def test_pdu_outlet_by_name(pdus: tuple[ApcPdu, ApcPdu, DualFeed]) -> None:
    a, _, _ = pdus
    named = build_driver(
        spec("apc_snmp", a.port, SAMPLE_PDU, plug="hv-a2-psu1"), Credentials("snmp", "private")
    )
    assert (await named.status()).power_state == a.outlets[12].power
