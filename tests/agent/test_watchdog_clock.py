"""The self-fencing decision on an injected clock (no sleeping on real time)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from hafence.agent.watchdog import Watchdog, WatchdogClock


def test_fires_at_deadline_and_not_before() -> None:
    wd = WatchdogClock()
    wd.arm(10, last_renewal=100.0)
    assert not wd.due(109.999)
    assert wd.due(110.0)
    assert not wd.due(111.0), "fires once per silence"


def test_renewal_moves_deadline_and_rearms() -> None:
    wd = WatchdogClock()
    wd.arm(10, last_renewal=100.0)
    wd.renewed(105.0)
    assert not wd.due(114.9)
    assert wd.due(115.0)
    wd.renewed(120.0)
    assert wd.fired_at is None
    wd.renewed(118.0)  # a renewal that started earlier completes late: no effect
    assert wd.deadline() == 130.0


def test_disarmed_never_fires() -> None:
    wd = WatchdogClock()
    assert not wd.due(1e9)
    wd.arm(10, last_renewal=0.0)
    wd.disarm()
    assert not wd.due(1e9)


def test_thread_kills_through_callback_on_injected_clock() -> None:
    now = [0.0]
    fired = threading.Event()
    reasons: list[str] = []

    def on_fire(reason: str) -> None:
        reasons.append(reason)
        fired.set()

    dog = Watchdog(on_fire, clock=lambda: now[0], tick=0.01)
    dog.arm(30, last_renewal=0.0)
    dog.start()
    try:
        now[0] = 29.9
        assert not fired.wait(0.2)
        now[0] = 30.0
        assert fired.wait(5)
        assert dog.fired
        assert "no lease renewal for 30.0s" in reasons[0]
    finally:
        dog.stop()


def test_device_fed_while_fresh_then_starved(tmp_path: Path) -> None:
    """A regular file stands in for /dev/watchdog: we see the feeding bytes."""
    device = tmp_path / "watchdog"
    device.write_bytes(b"")
    now = [0.0]
    fired = threading.Event()
    dog = Watchdog(lambda _: fired.set(), clock=lambda: now[0], device=str(device), tick=0.01)
    dog.arm(10, last_renewal=0.0)
    dog.start()
    try:
        deadline = time.monotonic() + 5
        while device.stat().st_size < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert device.read_bytes().startswith(b"\0\0\0")
        now[0] = 10.0
        assert fired.wait(5)
        size = device.stat().st_size
        time.sleep(0.1)
        assert device.stat().st_size == size, "still fed after firing: the host would not reboot"
    finally:
        dog.stop()
    assert not device.read_bytes().endswith(b"V"), "armed device disarmed on stop"


def test_disarm_closes_device_with_magic(tmp_path: Path) -> None:
    device = tmp_path / "watchdog"
    device.write_bytes(b"")
    dog = Watchdog(lambda _: None, device=str(device))
    dog.arm(10, last_renewal=time.monotonic())
    dog.disarm()
    assert device.read_bytes().endswith(b"V")
