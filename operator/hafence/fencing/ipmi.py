"""Native IPMI 2.0 (lanplus) driver on pyghmi: ipmilan and the oVirt types built on it.

Each operation runs pyghmi in a short-lived worker process (see
:mod:`hafence.fencing.ipmi_worker` for why not a thread), fed its request — password
included — on stdin, and killed at our timeout: a silent BMC costs the configured
timeout, not pyghmi's default.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Mapping
from typing import Any, Literal

from hafence.fencing.errors import (
    AuthFailed,
    DeviceError,
    FenceError,
    TimedOut,
    Unreachable,
    Unsupported,
    scrub,
)
from hafence.fencing.protocol import BaseDriver, Credentials, DriverSettings, PowerState

PRIVILEGES = {"callback": 1, "user": 2, "operator": 3, "administrator": 4, "admin": 4}
_ERRORS: dict[str, type[FenceError]] = {
    "auth": AuthFailed,
    "unreachable": Unreachable,
    "device": DeviceError,
}


def privilege(options: Mapping[str, str]) -> int:
    value = options.get("privlvl", "administrator").lower()
    if value not in PRIVILEGES:
        raise Unsupported(
            f"options: privlvl={value!r} is not one of {', '.join(sorted(PRIVILEGES))}"
        )
    return PRIVILEGES[value]


class IpmiDriver(BaseDriver):
    def __init__(
        self,
        settings: DriverSettings,
        address: str,
        port: int,
        credentials: Credentials,
        options: Mapping[str, str],
    ) -> None:
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

    async def _worker(self, action: str) -> dict[str, Any]:
        request = json.dumps(
            {
                "address": self.address,
                "port": self.port,
                "privlevel": self.privlevel,
                "username": self._credentials.username,
                "password": self._credentials.password,
                "action": action,
            }
        ).encode()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hafence.fencing.ipmi_worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(request), self.settings.timeout)
        except (TimeoutError, asyncio.CancelledError) as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 5)
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise TimedOut(
                f"{self.name}: {action}: no answer within {self.settings.timeout:g}s"
            ) from None
        try:
            reply: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            detail = self._scrub(err.decode(errors="replace"))[-300:]
            raise DeviceError(f"{self.name}: {action}: IPMI worker failed: {detail}") from None
        if "error" in reply:
            cls = _ERRORS.get(reply["error"], DeviceError)
            text = self._scrub(str(reply.get("message", "")))
            prefix = "authentication failed: " if cls is AuthFailed else ""
            raise cls(f"{self.name}: {action}: {prefix}{text}")
        return reply

    def _scrub(self, text: str) -> str:
        return scrub(text, [self._credentials.password])

    async def _get(self) -> PowerState:
        state = (await self._worker("status")).get("powerstate")
        if state in ("on", "off"):
            return "on" if state == "on" else "off"
        raise DeviceError(f"{self.name}: status: unexpected power state {state!r}")

    async def _set(self, state: Literal["on", "off"]) -> None:
        await self._worker(state)
