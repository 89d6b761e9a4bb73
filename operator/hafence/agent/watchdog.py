"""Self-fencing: a watchdog device that resets the host when the agent stops feeding it.

The operator may count a silent host as off (S1 self-fence proof) only if its lease
declared a device armed for the current boot (hafence.api.lease).  So the agent:

1. opens the device (which starts it), checks that the driver can set a timeout and
   honours the magic close, sets the timeout to the Host's ``watchdogTimeoutSeconds``
   (WDIOC_SETTIMEOUT) and reads back what the driver granted (WDIOC_GETTIMEOUT);
2. feeds it (WDIOC_KEEPALIVE) from a thread of its own, and only while its lease is
   fresh (plus the peer-check window, :func:`hafence.api.lease.peer_check_window`, or
   while its peers confirm an API-server outage) *and* its own loops are alive: the
   event loop and the heartbeat loop stamp :class:`Liveness`, so a hung agent stops
   feeding even though this thread still runs;
3. never writes the magic close character to a device it declared: if the agent
   crashes the kernel closes the file, the driver keeps counting, and the host resets.
   The one magic close is :meth:`Watchdog.release`, after a lease *without* the
   declaration was written (self-fencing disabled on the Host), or when a device is
   refused right after opening it (it would otherwise reset a host nobody counts on).

When feeding stops the agent also kills its VMs at once (defence in depth: the device
resets the host at most the granted timeout later).  Without a device it still does
that, but declares ``self-fencing-unavailable`` instead: a thread inside the agent dies
with the agent, so it proves nothing.

The device is reached through one seam, :class:`WatchdogDevice`:
:class:`LinuxWatchdog` does the ioctls with ``fcntl.ioctl``; :class:`StandInWatchdog`
speaks to the lab's stand-in (hafence.lab.watchdogdev), a process outside the agent
that enforces the kernel's semantics and resets the virtual host when it fires.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("hafence.agent.watchdog")

# <linux/watchdog.h>: _IOR/_IOWR('W', nr, type).
WDIOC_GETSUPPORT = 0x80285700  # _IOR('W', 0, struct watchdog_info), 40 bytes
WDIOC_KEEPALIVE = 0x80045705  # _IOR('W', 5, int)
WDIOC_SETTIMEOUT = 0xC0045706  # _IOWR('W', 6, int)
WDIOC_GETTIMEOUT = 0x80045707  # _IOR('W', 7, int)
WDIOF_SETTIMEOUT = 0x0080
WDIOF_MAGICCLOSE = 0x0100
WDIOF_KEEPALIVEPING = 0x8000
_WATCHDOG_INFO = struct.Struct("=II32s")

STAND_IN_PREFIX = "lab-stand-in:"


class DeviceError(OSError):
    """A watchdog device that cannot be armed; the message names the device and why."""


@dataclass(frozen=True)
class Support:
    options: int
    identity: str


class WatchdogDevice(Protocol):
    """The seam between the agent and a watchdog device (the kernel's API, by name)."""

    name: str

    def get_support(self) -> Support: ...
    def set_timeout(self, seconds: int) -> int: ...
    def get_timeout(self) -> int: ...
    def keepalive(self) -> None: ...
    def close(self) -> None:
        """Close without the magic character: an armed device keeps counting."""

    def magic_close(self) -> None:
        """Write the magic 'V', then close: the driver stops the watchdog."""


class LinuxWatchdog:
    """/dev/watchdog* through the kernel's watchdog ioctls."""

    def __init__(self, path: str) -> None:
        self.name = path
        try:
            self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            hint = " (another process has it open)" if exc.errno == errno.EBUSY else ""
            raise DeviceError(exc.errno, f"watchdog device {path}: {exc.strerror}{hint}") from None

    def _ioctl(self, request: int, buf: bytearray | array.array[int]) -> None:
        if self._fd is None:
            raise DeviceError(errno.EBADF, f"watchdog device {self.name} is closed")
        try:
            fcntl.ioctl(self._fd, request, buf, True)
        except OSError as exc:
            what = "not a watchdog device" if exc.errno == errno.ENOTTY else exc.strerror
            raise DeviceError(exc.errno, f"watchdog device {self.name}: {what}") from None

    def _ioctl_int(self, request: int, value: int = 0) -> int:
        buf = array.array("i", [value])
        self._ioctl(request, buf)
        return int(buf[0])

    def get_support(self) -> Support:
        buf = bytearray(_WATCHDOG_INFO.size)
        self._ioctl(WDIOC_GETSUPPORT, buf)
        options, _fw, ident = _WATCHDOG_INFO.unpack(bytes(buf))
        return Support(options, ident.split(b"\0", 1)[0].decode(errors="replace"))

    def set_timeout(self, seconds: int) -> int:
        return self._ioctl_int(WDIOC_SETTIMEOUT, seconds)

    def get_timeout(self) -> int:
        return self._ioctl_int(WDIOC_GETTIMEOUT)

    def keepalive(self) -> None:
        self._ioctl_int(WDIOC_KEEPALIVE)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def magic_close(self) -> None:
        if self._fd is not None:
            try:
                os.write(self._fd, b"V")
            finally:
                self.close()


class StandInWatchdog:
    """The lab's stand-in device: one line per ioctl over a UNIX socket.

    The stand-in (hafence.lab.watchdogdev) lives outside the agent, so a SIGKILLed
    agent closes the socket exactly as the kernel closes /dev/watchdog (without the
    magic character) and a SIGSTOPped one simply stops feeding.
    """

    def __init__(self, path: str, timeout: float = 2.0) -> None:
        self.name = STAND_IN_PREFIX + path
        self._sock: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(path)
        except OSError as exc:
            self._sock.close()
            self._sock = None
            raise DeviceError(exc.errno, f"watchdog device {self.name}: {exc}") from None
        self._file = self._sock.makefile("rb")
        try:
            greeting = self._file.readline().decode().strip()  # open(2)'s result
        except OSError as exc:
            greeting = f"EIO {exc}"
        if greeting != "OK open":
            self.close()
            code = greeting.partition(" ")[0]
            raise DeviceError(
                getattr(errno, code, errno.EIO), f"watchdog device {self.name}: {greeting}"
            )

    def _call(self, line: str) -> str:
        if self._sock is None:
            raise DeviceError(errno.EBADF, f"watchdog device {self.name} is closed")
        try:
            self._sock.sendall(line.encode() + b"\n")
            reply = self._file.readline().decode().strip()
        except OSError as exc:
            raise DeviceError(exc.errno, f"watchdog device {self.name}: {exc}") from None
        status, _, rest = reply.partition(" ")
        if status != "OK":
            code = getattr(errno, status, errno.EIO) if status else errno.EIO
            raise DeviceError(code, f"watchdog device {self.name}: {line.split()[0]}: {reply}")
        return rest

    def get_support(self) -> Support:
        options, _, identity = self._call("GETSUPPORT").partition(" ")
        return Support(int(options), identity)

    def set_timeout(self, seconds: int) -> int:
        return int(self._call(f"SETTIMEOUT {int(seconds)}"))

    def get_timeout(self) -> int:
        return int(self._call("GETTIMEOUT"))

    def keepalive(self) -> None:
        self._call("KEEPALIVE")

    def close(self) -> None:
        if self._sock is not None:
            self._file.close()
            self._sock.close()
            self._sock = None

    def magic_close(self) -> None:
        if self._sock is not None:
            try:
                self._call("WRITE V")
            finally:
                self.close()


def open_device(spec: str) -> WatchdogDevice:
    if spec.startswith(STAND_IN_PREFIX):
        return StandInWatchdog(spec[len(STAND_IN_PREFIX) :])
    return LinuxWatchdog(spec)


def arm_device(device: WatchdogDevice, timeout: int) -> int:
    """Check, set and read back the timeout, then feed once; returns the granted timeout.

    A device refused here was started by opening it, so it is stopped with the magic
    close before the error is raised: nothing was declared, nobody counts on it.
    """
    try:
        support = device.get_support()
        missing = [
            name
            for flag, name in (
                (WDIOF_SETTIMEOUT, "WDIOF_SETTIMEOUT (a settable timeout)"),
                (WDIOF_MAGICCLOSE, "WDIOF_MAGICCLOSE (without it a crashed agent's close "
                 "stops the watchdog)"),
            )
            if not support.options & flag
        ]  # fmt: skip
        if missing:
            raise DeviceError(
                errno.EOPNOTSUPP,
                f"watchdog device {device.name} ({support.identity or 'unnamed'}) lacks "
                + " and ".join(missing),
            )
        device.set_timeout(timeout)
        granted = device.get_timeout()
        if granted <= 0:
            raise DeviceError(
                errno.EINVAL, f"watchdog device {device.name} granted timeout {granted}"
            )
        device.keepalive()
    except DeviceError:
        with contextlib.suppress(OSError):
            device.magic_close()
        raise
    if granted != timeout:
        log.warning(
            "watchdog device %s granted a %ds timeout for the %ds asked; declaring %ds",
            device.name,
            granted,
            timeout,
            granted,
        )
    return granted


class Liveness:
    """Stamps of the agent's own loops; the feeder feeds only while all are recent."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._stamps: dict[str, tuple[float, float]] = {}  # name -> (stamp, max age)
        self._lock = threading.Lock()

    def stamp(self, name: str, max_age: float) -> None:
        with self._lock:
            self._stamps[name] = (self._clock(), max_age)

    def stale(self, now: float) -> list[str]:
        with self._lock:
            return sorted(n for n, (t, age) in self._stamps.items() if now - t > age)


@dataclass
class FeedClock:
    """Pure state of the feeding decision.  Times are monotonic seconds.

    ``window`` is how long after the start of the last successful renewal feeding may
    go on: the lease duration plus the peer-check window.  ``outage_until`` extends it
    while the peers confirm an API-server outage.
    """

    window: float | None = None
    last_renewal: float | None = None
    outage_until: float | None = None
    stopped_at: float | None = None

    @property
    def armed(self) -> bool:
        return self.window is not None

    def arm(self, window: float, last_renewal: float) -> None:
        if window <= 0:
            raise ValueError(f"feeding window {window!r} must be positive")
        self.window = window
        if self.last_renewal is None:
            self.last_renewal = last_renewal

    def disarm(self) -> None:
        self.window = None
        self.stopped_at = None

    def renewed(self, started_at: float) -> None:
        # Renewals can complete out of order; only a later start moves the deadline.
        if self.last_renewal is None or started_at > self.last_renewal:
            self.last_renewal = started_at
        self.stopped_at = None
        self.outage_until = None

    def outage_confirmed(self, until: float) -> None:
        if self.stopped_at is None:
            self.outage_until = max(until, self.outage_until or until)

    def deadline(self) -> float | None:
        if self.window is None or self.last_renewal is None:
            return None
        return max(self.last_renewal + self.window, self.outage_until or 0.0)

    def may_feed(self, now: float) -> bool:
        """False from the deadline on, until a renewal; once stopped, stopped."""
        deadline = self.deadline()
        if deadline is None:
            return True
        if self.stopped_at is None and now >= deadline:
            self.stopped_at = now
        return self.stopped_at is None


class Watchdog:
    """The feeder thread: feeds the device while allowed, else fires once."""

    def __init__(
        self,
        on_fire: Callable[[str], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        liveness: Liveness | None = None,
        tick: float = 0.1,
    ) -> None:
        self.state = FeedClock()
        self.liveness = liveness or Liveness(clock)
        self.timeout: int | None = None  # the Host's watchdogTimeoutSeconds, if enabled
        self.granted: int | None = None  # what the device granted, if one is armed
        self.device: WatchdogDevice | None = None
        self.feeds = 0
        self._on_fire = on_fire
        self._clock = clock
        self._tick = tick
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._fired_reason: str | None = None
        self._stale_logged: list[str] = []
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)

    # -- called from the agent ------------------------------------------------------
    def arm(
        self, timeout: int, window: float, last_renewal: float, device: WatchdogDevice | None
    ) -> None:
        """Arm for ``timeout``; a ``device`` already armed by :func:`arm_device`."""
        with self._lock:
            self.state.arm(window, last_renewal)
            self.timeout = timeout
            if device is not None:
                self.device = device

    def set_granted(self, granted: int | None) -> None:
        with self._lock:
            self.granted = granted

    def disarm(self) -> None:
        """Self-fencing disabled: no more killing.  The device, if any, stays armed
        (and fed while the lease is fresh) until :meth:`release`."""
        with self._lock:
            self.state.disarm()
            self.timeout = None

    def release(self) -> None:
        """Stop the device with the magic close: only once a lease without the device
        declaration was written, so the operator no longer counts on it."""
        with self._lock:
            if self.device is not None:
                try:
                    self.device.magic_close()
                except OSError as exc:
                    log.error("releasing %s: %s", self.device.name, exc)
                log.info("watchdog device %s released (magic close)", self.device.name)
                self.device = None
                self.granted = None

    def renewed(self, started_at: float) -> None:
        with self._lock:
            self.state.renewed(started_at)
            self._fired_reason = None

    def outage_confirmed(self, until: float) -> None:
        with self._lock:
            self.state.outage_confirmed(until)

    @property
    def armed_timeout(self) -> int | None:
        return self.timeout

    @property
    def fired(self) -> bool:
        return self.state.stopped_at is not None and self.state.armed

    def last_renewal(self) -> float | None:
        return self.state.last_renewal

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """On agent exit.  The device is closed WITHOUT the magic character: the VMs keep
        running after a service restart, so the host must reset if no agent comes back
        within the granted timeout."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        with self._lock:
            if self.device is not None:
                self.device.close()
                self.device = None

    # -- the thread -----------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self._tick):
            self.check(self._clock())

    def check(self, now: float) -> None:
        """One feeder step (the thread's body; tests call it on an injected clock).

        A stale liveness stamp skips the feed but kills nothing: a stall shorter than
        the granted timeout costs nothing, a longer one resets the host.  The lease
        deadline passing stops feeding until the next renewal and kills the VMs once.
        """
        fire: str | None = None
        with self._lock:
            stale = self.liveness.stale(now)
            allowed = self.state.may_feed(now)
            if allowed and not stale:
                if self.device is not None:
                    try:
                        self.device.keepalive()
                        self.feeds += 1
                    except OSError as exc:
                        log.error("%s", exc)
            elif stale and allowed:
                if self._stale_logged != stale:
                    log.error("not feeding the watchdog: %s stopped (hung?)", ", ".join(stale))
                self._stale_logged = stale
            elif self.state.armed and self._fired_reason is None:
                last = self.state.last_renewal
                silent = now - (last if last is not None else now)
                fire = (
                    f"no lease renewal for {silent:.1f}s and no API-server outage "
                    "confirmed by peers"
                )
                self._fired_reason = fire
            if allowed and not stale:
                self._stale_logged = []
        if fire is not None:
            log.error("self-fencing: %s: killing all VMs, no longer feeding the watchdog", fire)
            try:
                self._on_fire(fire)
            except Exception:
                log.exception("self-fencing: killing VMs failed")
