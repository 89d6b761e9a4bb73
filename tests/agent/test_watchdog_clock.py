"""The self-fencing watchdog: the feeding decision on an injected clock, and the device
protocol against the lab's stand-in, which enforces the kernel's semantics
(hafence.lab.watchdogdev).  No test here opens a /dev/watchdog of this machine: it
would reboot it.  ``LinuxWatchdog`` is checked against files that are not watchdogs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hafence.agent.watchdog import (
    WDIOC_GETSUPPORT,
    WDIOC_GETTIMEOUT,
    WDIOC_KEEPALIVE,
    WDIOC_SETTIMEOUT,
    WDIOF_KEEPALIVEPING,
    WDIOF_SETTIMEOUT,
    DeviceError,
    FeedClock,
    LinuxWatchdog,
    Liveness,
    StandInWatchdog,
    Watchdog,
    arm_device,
)
from hafence.lab.watchdogdev import StandInDevice

from .helpers import wait_for


def test_feeding_stops_at_deadline_and_not_before() -> None:
    fc = FeedClock()
    fc.arm(10, last_renewal=100.0)
    assert fc.may_feed(109.999)
    assert not fc.may_feed(110.0)
    assert not fc.may_feed(109.0), "once stopped, stopped until a renewal"
    fc.renewed(111.0)
    assert fc.may_feed(120.9) and not fc.may_feed(121.0)


def test_late_completing_renewal_does_not_move_deadline() -> None:
    fc = FeedClock()
    fc.arm(10, last_renewal=100.0)
    fc.renewed(120.0)
    fc.renewed(118.0)
    assert fc.deadline() == 130.0


def test_confirmed_outage_extends_feeding_only_until_its_validity() -> None:
    fc = FeedClock()
    fc.arm(10, last_renewal=0.0)
    fc.outage_confirmed(15.0)
    assert fc.may_feed(14.9) and not fc.may_feed(15.0)
    fc.outage_confirmed(30.0)  # too late: feeding stopped, the VMs are dead
    assert not fc.may_feed(16.0)


# -- the device protocol, against a stand-in with the kernel's semantics ---------------


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[StandInDevice]:
    fired = threading.Event()
    dev = StandInDevice(tmp_path / "wd.sock", fired.set, granularity=2).start()
    yield dev
    dev.close()


def _dog(now: list[float], liveness: Liveness | None = None) -> tuple[Watchdog, list[str]]:
    reasons: list[str] = []
    return Watchdog(reasons.append, clock=lambda: now[0], liveness=liveness), reasons


def test_arm_sets_reads_back_and_declares_the_granted_timeout(standin: StandInDevice) -> None:
    dev = StandInWatchdog(str(standin.path))
    granted = arm_device(dev, 5)
    assert granted == 6, "the driver rounds to its granularity: the granted value counts"
    assert standin.ops()[:5] == ["OPEN", "GETSUPPORT", "SETTIMEOUT 5", "GETTIMEOUT", "KEEPALIVE"]
    assert standin.timeout == 6
    dev.close()


def test_fed_only_while_allowed_then_fires_and_close_never_disarms(
    standin: StandInDevice,
) -> None:
    now = [0.0]
    dev = StandInWatchdog(str(standin.path))
    granted = arm_device(dev, 1)  # granted 2: the test waits for it to fire
    dog, reasons = _dog(now)
    dog.arm(5, window=10.0, last_renewal=0.0, device=dev)
    dog.check(1.0)
    dog.check(9.9)
    assert standin.ops().count("KEEPALIVE") == 3
    dog.check(10.0)  # lease deadline: stop feeding, kill the VMs once
    dog.check(11.0)
    assert standin.ops().count("KEEPALIVE") == 3, "fed after the deadline"
    assert len(reasons) == 1 and "no lease renewal for 10.0s" in reasons[0]
    dog.stop()  # the agent exits: closes the device WITHOUT the magic 'V'
    assert "WRITE V" not in standin.ops()
    wait_for(lambda: "CLOSE did not stop" in standin.ops(), timeout=5, what="the close")
    fired = wait_for(lambda: standin.fired, timeout=granted + 5, what="the stand-in to fire")
    assert fired
    assert standin.ops()[-1] == "FIRED"


def test_hung_loop_stops_feeding_without_killing(standin: StandInDevice) -> None:
    now = [0.0]
    live = Liveness(lambda: now[0])
    dev = StandInWatchdog(str(standin.path))
    arm_device(dev, 5)
    dog, reasons = _dog(now, live)
    dog.arm(5, window=10.0, last_renewal=0.0, device=dev)
    live.stamp("event loop", 2.0)
    dog.check(1.0)
    fed = standin.ops().count("KEEPALIVE")
    dog.check(2.5)  # the event loop has not stamped for 2.5 s: hung
    assert standin.ops().count("KEEPALIVE") == fed, "a hung agent kept feeding"
    assert not reasons, "a stall alone kills nothing; the device decides if it lasts"
    now[0] = 3.0
    live.stamp("event loop", 2.0)
    dog.check(3.0)
    assert standin.ops().count("KEEPALIVE") == fed + 1
    dog.stop()


def test_second_opener_is_refused(standin: StandInDevice) -> None:
    first = StandInWatchdog(str(standin.path))
    arm_device(first, 5)
    with pytest.raises(DeviceError, match="EBUSY"):
        StandInWatchdog(str(standin.path))
    first.close()


@pytest.mark.parametrize(
    ("options", "missing"),
    [
        (WDIOF_SETTIMEOUT | WDIOF_KEEPALIVEPING, "WDIOF_MAGICCLOSE"),
        (WDIOF_KEEPALIVEPING, "WDIOF_SETTIMEOUT"),
    ],
)
def test_device_without_settimeout_or_magicclose_is_refused_and_stopped(
    tmp_path: Path, options: int, missing: str
) -> None:
    dev = StandInDevice(tmp_path / "weak.sock", lambda: None, options=options).start()
    try:
        with pytest.raises(DeviceError, match=missing):
            arm_device(StandInWatchdog(str(dev.path)), 5)
        # Opening started it; refused, it must not reset a host nobody counts on.
        wait_for(lambda: not dev.running, timeout=5, what="the refused device stopped")
        assert not dev.fired
    finally:
        dev.close()


def test_release_is_the_only_magic_close(standin: StandInDevice) -> None:
    now = [0.0]
    dev = StandInWatchdog(str(standin.path))
    arm_device(dev, 5)
    dog, _ = _dog(now)
    dog.arm(5, window=10.0, last_renewal=0.0, device=dev)
    dog.disarm()
    assert "WRITE V" not in standin.ops(), "disarm alone must leave the device armed"
    dog.release()
    wait_for(lambda: standin.ops()[-1] == "CLOSE stopped", timeout=5, what="stopped")


def test_ioctl_numbers_are_the_kernels() -> None:
    # _IOR('W', 0, struct watchdog_info[40]), _IOR('W', 5/7, int), _IOWR('W', 6, int)
    def ioc(direction: int, nr: int, size: int) -> int:
        return (direction << 30) | (size << 16) | (ord("W") << 8) | nr

    assert ioc(2, 0, 40) == WDIOC_GETSUPPORT
    assert ioc(2, 5, 4) == WDIOC_KEEPALIVE
    assert ioc(3, 6, 4) == WDIOC_SETTIMEOUT
    assert ioc(2, 7, 4) == WDIOC_GETTIMEOUT


def test_a_regular_file_is_not_a_watchdog(tmp_path: Path) -> None:
    """The issue's agent accepted --watchdog-device pointing at a file."""
    path = tmp_path / "watchdog"
    path.write_bytes(b"")
    dev = LinuxWatchdog(str(path))
    with pytest.raises(DeviceError, match="not a watchdog device"):
        arm_device(dev, 5)
    with pytest.raises(DeviceError, match="No such file"):
        LinuxWatchdog(str(tmp_path / "absent"))


def test_feeder_thread_runs_on_its_own(standin: StandInDevice) -> None:
    dev = StandInWatchdog(str(standin.path))
    arm_device(dev, 5)
    dog = Watchdog(lambda _: None, tick=0.01)
    dog.arm(5, window=30.0, last_renewal=time.monotonic(), device=dev)
    dog.start()
    try:
        wait_for(lambda: dog.feeds >= 3, timeout=5, what="the feeder thread")
    finally:
        dog.stop()
