"""The Redfish driver against sushy-tools' emulator (fake driver) over TLS."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hafence.fencing.drivers import build_driver
from hafence.fencing.errors import AuthFailed, TLSError, Unreachable
from hafence.fencing.protocol import Credentials
from hafence.lab.redfish import RedfishEmulator

from .conftest import PASSWORD, USER, spec


@pytest.fixture(scope="module")
def emulator() -> Iterator[RedfishEmulator]:
    with RedfishEmulator(USER, PASSWORD, power_delay=0) as rf:
        yield rf


async def test_status_off_on_reboot(
    emulator: RedfishEmulator, creds: Credentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Verified TLS: trust the emulator's certificate the way an operator would
    # (through the trust store), not by turning verification off.
    monkeypatch.setenv("SSL_CERT_FILE", str(emulator.cert))
    driver = build_driver(spec("redfish", emulator.port), creds)
    assert (await driver.status()).power_state == "on"
    assert (await driver.off()).power_state == "off"
    assert (await driver.status()).power_state == "off"
    assert (await driver.on()).power_state == "on"
    assert (await driver.reboot()).power_state == "on"


async def test_untrusted_certificate_is_refused(
    emulator: RedfishEmulator, creds: Credentials
) -> None:
    with pytest.raises(TLSError, match="not trusted"):
        await build_driver(spec("redfish", emulator.port), creds).status()


async def test_ssl_insecure_only_when_asked(emulator: RedfishEmulator, creds: Credentials) -> None:
    driver = build_driver(spec("redfish", emulator.port, options="ssl_insecure=yes"), creds)
    assert (await driver.status()).power_state in ("on", "off")


async def test_wrong_password(emulator: RedfishEmulator) -> None:
    wrong = "Wr0ng-pa55word"
    driver = build_driver(
        spec("redfish", emulator.port, options="ssl_insecure"), Credentials(USER, wrong)
    )
    with pytest.raises(AuthFailed) as err:
        await driver.status()
    assert wrong not in str(err.value) and PASSWORD not in str(err.value)


async def test_unreachable(creds: Credentials) -> None:
    driver = build_driver(spec("redfish", 1, options="ssl_insecure", timeoutSeconds=2), creds)
    with pytest.raises(Unreachable):
        await driver.status()
