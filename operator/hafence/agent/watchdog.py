"""The self-fencing watchdog: no lease renewal for ``watchdogTimeoutSeconds`` -> kill VMs.

The operator may treat a silent host as off only after lease expiry + this timeout +
a margin, and only if the lease declared the watchdog armed (hafence.api.lease).  So
the deadline counts from the *start* of the last successful renewal: that instant is
never later than the renewTime the operator saw.

``WatchdogClock`` is the decision, on an injected clock (unit-tested); ``Watchdog``
runs it in a thread of its own, so a stuck event loop or a hung API call cannot delay
the kill.  With a watchdog device (``/dev/watchdog``) it also feeds the device while
the lease is fresh and stops feeding it when it fires, so the kernel reboots the host.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("hafence.agent.watchdog")


@dataclass
class WatchdogClock:
    """Pure state: armed timeout, last renewal, fired.  Times are monotonic seconds."""

    timeout: float | None = None
    last_renewal: float | None = None
    fired_at: float | None = None

    @property
    def armed(self) -> bool:
        return self.timeout is not None

    def arm(self, timeout: float, last_renewal: float) -> None:
        if timeout <= 0:
            raise ValueError(f"watchdogTimeoutSeconds {timeout!r} must be positive")
        self.timeout = timeout
        if self.last_renewal is None:
            self.last_renewal = last_renewal

    def disarm(self) -> None:
        self.timeout = None

    def renewed(self, started_at: float) -> None:
        # Renewals can complete out of order; only a later start moves the deadline.
        if self.last_renewal is None or started_at > self.last_renewal:
            self.last_renewal = started_at
        self.fired_at = None

    def deadline(self) -> float | None:
        if self.timeout is None or self.last_renewal is None:
            return None
        return self.last_renewal + self.timeout

    def due(self, now: float) -> bool:
        """True once when the deadline passes (until the next renewal re-arms it)."""
        deadline = self.deadline()
        if deadline is None or self.fired_at is not None or now < deadline:
            return False
        self.fired_at = now
        return True


class Watchdog:
    def __init__(
        self,
        on_fire: Callable[[str], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        device: str | None = None,
        tick: float = 0.1,
    ) -> None:
        self.state = WatchdogClock()
        self._on_fire = on_fire
        self._clock = clock
        self._device_path = device
        self._device: int | None = None
        self._tick = tick
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)

    # -- called from the agent ------------------------------------------------------
    def arm(self, timeout: float, last_renewal: float) -> None:
        with self._lock:
            self.state.arm(timeout, last_renewal)
            if self._device_path and self._device is None:
                try:
                    self._device = os.open(self._device_path, os.O_WRONLY)
                except OSError as exc:
                    raise OSError(
                        f"--watchdog-device {self._device_path!r}: {exc.strerror or exc}"
                    ) from None

    def disarm(self) -> None:
        with self._lock:
            self.state.disarm()
            self._close_device(magic=True)

    def renewed(self, started_at: float) -> None:
        with self._lock:
            self.state.renewed(started_at)

    @property
    def armed_timeout(self) -> float | None:
        return self.state.timeout

    @property
    def fired(self) -> bool:
        return self.state.fired_at is not None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """On agent exit.  An armed device is left armed: the VMs keep running after a
        service restart, so the host must still reboot if no agent comes back."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        with self._lock:
            if not self.state.armed:
                self._close_device(magic=True)

    # -- the thread -----------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self._tick):
            now = self._clock()
            with self._lock:
                due = self.state.due(now)
                last = self.state.last_renewal
                if not due and self.state.fired_at is None:
                    self._feed()
            if due:
                silent = now - (last if last is not None else now)
                reason = (
                    f"no lease renewal for {silent:.1f}s (watchdog timeout {self.state.timeout:g}s)"
                )
                log.error("self-fencing: %s: killing all VMs", reason)
                try:
                    self._on_fire(reason)
                except Exception:
                    log.exception("self-fencing: killing VMs failed")

    def _feed(self) -> None:
        if self._device is not None:
            try:
                os.write(self._device, b"\0")
            except OSError as exc:
                log.error("watchdog device %s: %s", self._device_path, exc)

    def _close_device(self, magic: bool) -> None:
        if self._device is None:
            return
        try:
            if magic:
                os.write(self._device, b"V")  # magic close: disarm the kernel watchdog
        except OSError:
            pass
        os.close(self._device)
        self._device = None
