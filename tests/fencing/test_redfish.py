"""The Redfish driver against sushy-tools' emulator (fake driver) over TLS."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from hafence.fencing.drivers import build_driver
from hafence.fencing.errors import AuthFailed, TimedOut, TLSError, Unreachable
from hafence.fencing.protocol import Credentials
from hafence.fencing.redfish import RedfishDriver
from hafence.lab.netcut import Forwarder
from hafence.lab.redfish import RedfishEmulator
from hafence.lab.targets import fence_agent_spec as spec

from .conftest import PASSWORD, USER


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


async def test_one_connection_per_operation(
    emulator: RedfishEmulator, creds: Credentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Counted on the far side of a TCP relay in front of the emulator: every TCP
    # connection (and so every TLS handshake) the driver opens passes through it.
    monkeypatch.setenv("SSL_CERT_FILE", str(emulator.cert))
    with Forwarder("127.0.0.1", emulator.port, name="redfish") as relay:
        driver = build_driver(spec("redfish", relay.port), creds)
        assert (await driver.status()).power_state == "on"
        assert relay.connections_accepted == 1, "systems discovery and status share one"
        assert (await driver.off()).power_state == "off"
        assert relay.connections_accepted == 2, "the off and its verifying polls share one"
        assert (await driver.reboot()).power_state == "on"
        assert relay.connections_accepted == 3


async def test_connection_cut_mid_operation(emulator: RedfishEmulator, creds: Credentials) -> None:
    # The path to the device is cut after the first call: the operation ends with a
    # typed error (each later call finds the path reset) instead of hanging.
    with Forwarder("127.0.0.1", emulator.port, name="redfish") as relay:
        driver = build_driver(
            spec("redfish", relay.port, options="ssl_insecure", powerWaitSeconds=2), creds
        )
        assert (await driver.status()).power_state == "on"
        relay.cut()
        with pytest.raises((Unreachable, TimedOut)):
            await driver.off()
        # Cut inside one operation, after its connection was used: the reused
        # connection is reset, so is the fresh one tried next; a typed error either way.
        relay.restore()
        assert isinstance(driver, RedfishDriver)
        async with driver._operation():
            assert await driver._get() == "on"
            relay.cut()
            with pytest.raises(Unreachable):
                await driver._get()
        assert relay.connections_accepted == 2


async def test_deaf_device_ends_by_timeout(creds: Credentials) -> None:
    # It accepts the TCP connection (the kernel's backlog) and never says a word:
    # the TLS handshake waits, and the configured timeout ends it with a typed error.
    with socket.create_server(("127.0.0.1", 0)) as deaf:
        port = deaf.getsockname()[1]
        driver = build_driver(
            spec("redfish", port, options="ssl_insecure", timeoutSeconds=1, powerWaitSeconds=1),
            creds,
        )
        with pytest.raises(TimedOut) as err:
            await driver.status()
        assert "within 1s" in str(err.value)
        with pytest.raises((TimedOut, Unreachable)):
            await driver.off()
