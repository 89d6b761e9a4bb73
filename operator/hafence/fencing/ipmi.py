"""Native IPMI 2.0 (lanplus) driver on pyghmi: ipmilan and the oVirt types built on it.

pyghmi is synchronous and keeps its own retry timers; every call runs in a thread
under our own hard timeout (:func:`hafence.fencing.protocol.bounded`), so a silent
BMC costs the configured timeout, not pyghmi's default.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Mapping
from typing import Any, Literal

from pyghmi import exceptions as pyghmi_exc
from pyghmi.ipmi import command as ipmi_command
from pyghmi.ipmi.private import session as ipmisession

from hafence.fencing.errors import (
    AuthFailed,
    DeviceError,
    FenceError,
    Unreachable,
    Unsupported,
    scrub,
)
from hafence.fencing.protocol import BaseDriver, Credentials, DriverSettings, PowerState

_SESSION_LOCK = threading.Lock()
PRIVILEGES = {"callback": 1, "user": 2, "operator": 3, "administrator": 4, "admin": 4}


def privilege(options: Mapping[str, str]) -> int:
    value = options.get("privlvl", "administrator").lower()
    if value not in PRIVILEGES:
        raise Unsupported(
            f"options: privlvl={value!r} is not one of {', '.join(sorted(PRIVILEGES))}"
        )
    return PRIVILEGES[value]


class IpmiDriver(BaseDriver):
    def __init__(self, settings: DriverSettings, address: str, port: int,
                 credentials: Credentials, options: Mapping[str, str]) -> None:
        super().__init__(settings)
        if options.get("lanplus") == "0":
            raise Unsupported(
                f"{settings.name}: the native IPMI driver speaks IPMI 2.0 (lanplus) only; "
                "use type fence_ipmilan for IPMI 1.5"
            )
        self.address = address
        self.port = port
        self.privlevel = privilege(options)
        self._credentials = credentials

    def _error(self, exc: BaseException, what: str) -> FenceError:
        text = scrub(str(exc), [self._credentials.password, self._credentials.username])
        low = text.lower()
        if "password" in low or "unauthorized" in low or "privilege" in low \
                or "invalid" in low and "name" in low:
            return AuthFailed(f"{self.name}: {what}: authentication failed: {text}")
        if "timeout" in low or "timed out" in low or "no longer connected" in low \
                or "logged out" in low:
            return Unreachable(f"{self.name}: {what}: BMC does not answer ({text})")
        return DeviceError(f"{self.name}: {what}: {text}")

    def _command(self) -> Any:
        creds = self._credentials
        with _SESSION_LOCK:
            # pyghmi keeps a finished login in initting_sessions and, on the next
            # Command for the same BMC and user, marks it "logging" again and waits
            # forever for that login to end.  One fresh session per operation avoids it.
            ipmisession.Session.initting_sessions.pop(
                (self.address, creds.username, creds.password, self.port, None), None
            )
            return ipmi_command.Command(
                bmc=self.address, userid=creds.username, password=creds.password,
                port=self.port, privlevel=self.privlevel, keepalive=False,
            )

    def _sync(self, action: str) -> dict[str, Any]:
        cmd = None
        try:
            cmd = self._command()
            if action == "status":
                result: dict[str, Any] = cmd.get_power()
            else:
                result = cmd.set_power(action, wait=False)
            with contextlib.suppress(Exception):
                cmd.ipmi_session.logout()
        except pyghmi_exc.PyghmiException as exc:
            raise self._error(exc, action) from None
        except OSError as exc:
            raise Unreachable(f"{self.name}: {action}: {exc.strerror or exc}") from None
        if "error" in result:
            raise self._error(Exception(result["error"]), action)
        return result

    async def _get(self) -> PowerState:
        result = await asyncio.to_thread(self._sync, "status")
        state = result.get("powerstate")
        if state in ("on", "off"):
            return "on" if state == "on" else "off"
        raise DeviceError(f"{self.name}: status: unexpected power state {state!r}")

    async def _set(self, state: Literal["on", "off"]) -> None:
        await asyncio.to_thread(self._sync, state)

