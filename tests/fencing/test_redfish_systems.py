"""Several systems behind one Redfish service: only the declared one is ever acted on.

One sushy-tools emulator serves two systems (a chassis manager, a multi-node
enclosure).  Each is fenced by its system id or its systems URI, natively and through a
fence proxy (Debian's fence_redfish over a real sshd), and the other system's power
state, read from the emulator itself, never changes.  fence_redfish ignores ``plug``
and without ``systems_uri`` acts on the last system it lists: hafence always passes the
declared one, and refuses to guess.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hafence.fencing.drivers import build_driver
from hafence.fencing.errors import DeviceError, Unsupported
from hafence.fencing.fence_agents import FenceAgentDriver
from hafence.fencing.protocol import Credentials, FenceDriver
from hafence.lab.redfish import RedfishEmulator
from hafence.lab.sshd import Sshd
from hafence.lab.targets import fence_agent_spec as spec
from hafence.lab.targets import ssh_target

from .conftest import PASSWORD, USER


@pytest.fixture(scope="module")
def two() -> Iterator[RedfishEmulator]:
    with RedfishEmulator(USER, PASSWORD, power_delay=0, systems=2) as rf:
        yield rf


@pytest.fixture(scope="module")
def proxy_sshd() -> Iterator[Sshd]:
    with Sshd() as server:
        yield server


def _states(rf: RedfishEmulator) -> dict[str, str]:
    return {sid: rf.power_state(sid) for sid in rf.system_ids}


async def _fence_only(rf: RedfishEmulator, driver: FenceDriver, target: str) -> None:
    """Off then on through ``driver``; the other system is On before, between, after."""
    other = next(s for s in rf.system_ids if s != target)
    assert _states(rf) == {target: "On", other: "On"}
    assert (await driver.off()).power_state == "off"  # verified by the driver's status
    assert _states(rf) == {target: "Off", other: "On"}, driver.name
    assert (await driver.on()).power_state == "on"
    assert _states(rf) == {target: "On", other: "On"}, driver.name


@pytest.mark.parametrize("how", ["id", "path", "options"])
async def test_native_driver_acts_on_the_declared_system_only(
    two: RedfishEmulator, creds: Credentials, how: str
) -> None:
    target = two.system_ids[1]  # not the first one listed: no lucky default
    path = f"/redfish/v1/Systems/{target}"
    extra: dict[str, object] = {
        "id": {"plug": target},
        "path": {"plug": path},
        "options": {"options": f"systems_uri={path}"},
    }[how]
    options = str(extra.pop("options", ""))
    driver = build_driver(
        spec(
            "redfish",
            two.port,
            options=",".join(filter(None, ["ssl_insecure=yes", options])),
            **extra,
        ),
        creds,
    )
    await _fence_only(two, driver, target)


async def test_fence_redfish_through_a_proxy_acts_on_the_declared_system_only(
    two: RedfishEmulator, creds: Credentials, proxy_sshd: Sshd
) -> None:
    # The first system: fence_redfish, left to itself, would pick the last one.
    target = two.system_ids[0]
    driver = build_driver(
        # fence_redfish starts python and requests on every call: slow on a busy machine.
        spec("redfish", two.port, options="ssl_insecure=yes", plug=target, timeoutSeconds=30),
        creds,
        proxy=ssh_target(proxy_sshd, name="proxy-host"),
    )
    assert "via proxy-host" in driver.name
    assert isinstance(driver, FenceAgentDriver)
    assert driver.options["systems_uri"] == f"/redfish/v1/Systems/{target}"
    other = two.system_ids[1]
    assert _states(two) == {target: "On", other: "On"}
    assert (await driver.off()).power_state == "off"
    assert _states(two) == {target: "Off", other: "On"}
    # Back on natively (cheaper than another fence_redfish run over SSH).
    native = spec("redfish", two.port, options="ssl_insecure=yes", plug=target)
    assert (await build_driver(native, creds).on()).power_state == "on"
    assert _states(two) == {target: "On", other: "On"}


@pytest.mark.parametrize(
    ("plug", "options"),
    [
        ("ID", ""),
        ("/redfish/v1/Systems/ID", ""),
        (None, ",systems_uri=/redfish/v1/Systems/ID"),
        ("ID", ",systems_uri=/redfish/v1/Systems/ID/"),  # the same system twice
    ],
    ids=["id", "path", "options", "both-agree"],
)
def test_every_spelling_gives_fence_redfish_the_systems_uri(
    creds: Credentials, sshd: Sshd, plug: str | None, options: str
) -> None:
    system = "5b2a9c0e-6f3d-4b1e-9a57-0c8e2d4f6a11"
    driver = build_driver(
        spec(
            "redfish",
            1,
            options="ssl_insecure=yes" + options.replace("ID", system),
            plug=plug.replace("ID", system) if plug else None,
        ),
        creds,
        proxy=ssh_target(sshd),
    )
    assert isinstance(driver, FenceAgentDriver) and driver.plug is None
    assert driver.options["systems_uri"].rstrip("/") == f"/redfish/v1/Systems/{system}"


async def test_no_system_named_is_refused_on_both_paths(
    two: RedfishEmulator, creds: Credentials, proxy_sshd: Sshd
) -> None:
    before = _states(two)
    native = build_driver(spec("redfish", two.port, options="ssl_insecure=yes"), creds)
    with pytest.raises(DeviceError, match="2 systems on this Redfish service"):
        await native.off()
    with pytest.raises(Unsupported, match="needs the system"):
        build_driver(
            spec("redfish", two.port, options="ssl_insecure=yes"),
            creds,
            proxy=ssh_target(proxy_sshd),
        )
    assert _states(two) == before


@pytest.mark.parametrize("proxied", [False, True], ids=["native", "proxy"])
async def test_a_plug_and_a_different_systems_uri_are_refused(
    two: RedfishEmulator, creds: Credentials, proxy_sshd: Sshd, proxied: bool
) -> None:
    # Each path used to prefer another of the two (native: plug; proxy: options).
    a, b = two.system_ids
    with pytest.raises(Unsupported, match="names two systems"):
        build_driver(
            spec(
                "redfish",
                two.port,
                plug=a,
                options=f"ssl_insecure=yes,systems_uri=/redfish/v1/Systems/{b}",
            ),
            creds,
            proxy=ssh_target(proxy_sshd) if proxied else None,
        )


@pytest.mark.parametrize(
    "plug", ["../Managers/1", "/redfish/v1/Systems/../Managers/BMC", "..", "/redfish/v1/Chassis/1"]
)
def test_a_plug_outside_the_systems_collection_is_refused(creds: Credentials, plug: str) -> None:
    with pytest.raises(Unsupported, match="is not a Redfish system"):
        build_driver(spec("redfish", 1, plug=plug), creds)
