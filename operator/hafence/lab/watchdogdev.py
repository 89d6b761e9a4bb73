"""A watchdog device stand-in for virtual hosts, with the kernel's semantics.

A virtual host has no /dev/watchdog of its own (and the machine's must never be
touched: it would reboot the machine), and neither a character device nor CUSE is
available here.  So the agent reaches its device through one seam
(hafence.agent.watchdog.WatchdogDevice) and, in the lab, that seam speaks one line per
ioctl over a UNIX socket to this stand-in, which lives in the lab process, outside
the agent, and enforces what drivers/watchdog/watchdog_dev.c does:

- opening starts the watchdog with its current timeout; a second opener gets EBUSY;
- WDIOC_SETTIMEOUT needs WDIOF_SETTIMEOUT, must lie in [min, max], is rounded up to
  the driver's granularity, pings, and returns the granted value; WDIOC_GETTIMEOUT
  returns it; WDIOC_KEEPALIVE pings (needs WDIOF_KEEPALIVEPING); any write pings;
- a close stops the watchdog only after the magic 'V' was written (or when the driver
  lacks WDIOF_MAGICCLOSE); otherwise it logs "did not stop", pings once more and keeps
  counting — that last ping is why the operator counts the granted timeout twice;
- no ping for the timeout: it fires, which in the lab resets the virtual host (agent
  and VMs killed, a new boot ID).

Every call is recorded (``calls``) so tests can check the agent's protocol.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from hafence.agent.watchdog import WDIOF_KEEPALIVEPING, WDIOF_MAGICCLOSE, WDIOF_SETTIMEOUT

log = logging.getLogger("hafence.lab.watchdog")

FULL = WDIOF_SETTIMEOUT | WDIOF_MAGICCLOSE | WDIOF_KEEPALIVEPING


class StandInDevice:
    def __init__(
        self,
        path: Path,
        on_fire: Callable[[], None],
        *,
        options: int = FULL,
        identity: str = "hafence lab stand-in",
        default_timeout: int = 60,
        min_timeout: int = 1,
        max_timeout: int = 3600,
        granularity: int = 1,
        clock: Callable[[], float] = time.monotonic,
        tick: float = 0.02,
    ) -> None:
        self.path = path
        self.on_fire = on_fire
        self.options = options
        self.identity = identity
        self.default_timeout = default_timeout
        self.min_timeout = min_timeout
        self.max_timeout = max_timeout
        self.granularity = granularity
        self._clock = clock
        self._tick = tick
        self.timeout = default_timeout
        self.running = False
        self.last_ping: float | None = None
        self.allow_release = False
        self.fired: list[float] = []
        self.calls: list[tuple[float, str]] = []  # (time, "OPEN" / "SETTIMEOUT 5" / ...)
        self._client: socket.socket | None = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        path.unlink(missing_ok=True)
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        os.chmod(path, 0o600)
        self._server.listen(4)
        self._server.settimeout(0.1)  # so close() need not wait for a blocked accept
        self._threads = [
            threading.Thread(target=self._accept, name=f"wdog-accept-{path.name}", daemon=True),
            threading.Thread(target=self._timer, name=f"wdog-timer-{path.name}", daemon=True),
        ]

    def start(self) -> StandInDevice:
        for t in self._threads:
            t.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        with self._lock:
            self.running = False  # the lab is torn down: nothing may fire any more
            if self._client is not None:
                self._client.close()
        for t in self._threads:
            t.join(timeout=2)
        self.path.unlink(missing_ok=True)

    # -- questions the tests ask ------------------------------------------------------
    def ops(self) -> list[str]:
        with self._lock:
            return [c for _, c in self.calls]

    def deadline(self) -> float | None:
        with self._lock:
            if not self.running or self.last_ping is None:
                return None
            return self.last_ping + self.timeout

    def reset(self) -> None:
        """The host rebooted: the device comes back stopped, at its default timeout."""
        with self._lock:
            self.running = False
            self.timeout = self.default_timeout
            self.allow_release = False
            self.last_ping = None

    # -- the "kernel" ---------------------------------------------------------------
    def _record(self, what: str) -> None:
        self.calls.append((self._clock(), what))

    def _ping(self) -> None:
        self.last_ping = self._clock()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with self._lock:
                if self._client is not None:
                    self._record("OPEN EBUSY")
                    conn.sendall(b"EBUSY device is open\n")
                    conn.close()
                    continue
                self._client = conn
                self._record("OPEN")
                conn.sendall(b"OK open\n")
                self.allow_release = False
                if not self.running:
                    self.running = True
                    self._ping()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = conn.makefile("rb")
        try:
            for raw in buf:
                reply = self._call(raw.decode(errors="replace").strip())
                conn.sendall(reply.encode() + b"\n")
        except OSError:
            pass
        finally:
            buf.close()
            self._release(conn)

    def _call(self, line: str) -> str:
        op, _, arg = line.partition(" ")
        with self._lock:
            self._record(line)
            if op == "GETSUPPORT":
                return f"OK {self.options} {self.identity}"
            if op == "SETTIMEOUT":
                if not self.options & WDIOF_SETTIMEOUT:
                    return "EOPNOTSUPP"
                try:
                    want = int(arg)
                except ValueError:
                    return "EINVAL"
                if not self.min_timeout <= want <= self.max_timeout:
                    return "EINVAL"
                self.timeout = math.ceil(want / self.granularity) * self.granularity
                self._ping()
                return f"OK {self.timeout}"
            if op == "GETTIMEOUT":
                return f"OK {self.timeout}"
            if op == "KEEPALIVE":
                if not self.options & WDIOF_KEEPALIVEPING:
                    return "EOPNOTSUPP"
                self._ping()
                return "OK"
            if op == "WRITE":
                if "V" in arg and self.options & WDIOF_MAGICCLOSE:
                    self.allow_release = True
                self._ping()
                return "OK"
            return "ENOTTY"

    def _release(self, conn: socket.socket) -> None:
        with self._lock:
            if self._client is not conn:
                return
            self._client = None
            conn.close()
            if not self.running:
                self._record("CLOSE")
            elif self.allow_release or not self.options & WDIOF_MAGICCLOSE:
                self.running = False
                self._record("CLOSE stopped")
            else:
                # watchdog_release(): "watchdog did not stop!", then one more ping.
                self._ping()
                self._record("CLOSE did not stop")

    def _timer(self) -> None:
        while not self._stop.wait(self._tick):
            with self._lock:
                deadline = self.deadline()
                if deadline is None or self._clock() < deadline:
                    continue
                self.running = False
                self.fired.append(self._clock())
                self._record("FIRED")
            log.warning("watchdog stand-in %s fired", self.path)
            try:
                self.on_fire()
            except Exception:
                log.exception("watchdog stand-in %s: reset failed", self.path)
