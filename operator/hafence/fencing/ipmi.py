"""Native IPMI 2.0 (lanplus) driver on pyghmi: ipmilan and the oVirt types built on it.

Each operation (status, off, on, reboot, test) runs pyghmi in one short-lived worker
process (see :mod:`hafence.fencing.ipmi_worker` for why not a thread) holding one
IPMI session: the power request and every verifying status poll go through it, fed
on stdin — password included — one request per line.  Every answer is bounded by
our timeout and the worker is killed when it is late: a silent BMC costs the
configured timeout, not pyghmi's default, and the next poll of the operation starts
a fresh worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections import deque
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
from hafence.fencing.protocol import Credentials, DriverSettings, PowerState
from hafence.fencing.session import SessionDriver

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


class IpmiDriver(SessionDriver):
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
        self._current: _Worker | None = None

    async def _end_session(self) -> None:
        worker, self._current = self._current, None
        if worker is not None:
            await worker.close()

    async def _ask(self, action: str) -> dict[str, Any]:
        worker = self._current
        if worker is None:
            worker = await _Worker.start(self._device(), self.settings.timeout)
            if self.in_operation:
                self._current = worker  # kept for the operation's next call
        try:
            reply = await worker.ask(action)
        except (TimeoutError, asyncio.CancelledError) as exc:
            # Killed at our bound (kept guarantee); a later poll starts a fresh worker.
            self._current = None
            await worker.kill()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise TimedOut(
                f"{self.name}: {action}: no answer within {self.settings.timeout:g}s"
            ) from None
        except _WorkerDied as exc:
            self._current = None
            await worker.kill()
            detail = self._scrub(str(exc))[-300:]
            raise DeviceError(f"{self.name}: {action}: IPMI worker failed: {detail}") from None
        finally:
            if not self.in_operation:  # called outside an operation: one-shot
                await worker.close()
        if "error" in reply:
            cls = _ERRORS.get(reply["error"], DeviceError)
            text = self._scrub(str(reply.get("message", "")))
            prefix = "authentication failed: " if cls is AuthFailed else ""
            raise cls(f"{self.name}: {action}: {prefix}{text}")
        return reply

    def _device(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "port": self.port,
            "privlevel": self.privlevel,
            "username": self._credentials.username,
            "password": self._credentials.password,
        }

    def _scrub(self, text: str) -> str:
        return scrub(text, [self._credentials.password])

    async def _get(self) -> PowerState:
        state = (await self._ask("status")).get("powerstate")
        if state in ("on", "off"):
            return "on" if state == "on" else "off"
        raise DeviceError(f"{self.name}: status: unexpected power state {state!r}")

    async def _set(self, state: Literal["on", "off"]) -> None:
        await self._ask(state)


_LOGOUT_GRACE = 1.0  # a live BMC answers a logout in milliseconds; a deaf one never


class _WorkerDied(Exception):
    pass


class _Worker:
    """One ``ipmi_worker`` process: one session to one device."""

    def __init__(self, proc: asyncio.subprocess.Process, timeout: float) -> None:
        self.proc = proc
        self.timeout = timeout
        self._stderr: deque[bytes] = deque(maxlen=16)
        self._drain = asyncio.ensure_future(self._read_stderr())

    @classmethod
    async def start(cls, device: dict[str, Any], timeout: float) -> _Worker:  # noqa: ASYNC109
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hafence.fencing.ipmi_worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # killpg reaches anything it starts
        )
        worker = cls(proc, timeout)
        worker._send(device)
        return worker

    def _send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")

    async def _read_stderr(self) -> None:
        # Drained all along so a chatty pyghmi can never block on a full pipe.
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(4096):
            self._stderr.append(chunk)

    async def ask(self, action: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        try:
            self._send({"action": action})
        except (BrokenPipeError, ConnectionResetError):
            raise _WorkerDied(self._errors()) from None
        line = await asyncio.wait_for(self.proc.stdout.readline(), self.timeout)
        try:
            reply: dict[str, Any] = json.loads(line)
        except ValueError:
            await asyncio.sleep(0)  # let the stderr reader catch the traceback
            raise _WorkerDied(self._errors()) from None
        return reply

    def _errors(self) -> str:
        return b"".join(self._stderr).decode(errors="replace")

    async def close(self) -> None:
        """End of the operation: the worker logs out and exits, or is killed."""
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), min(_LOGOUT_GRACE, self.timeout))
        except TimeoutError:
            await self.kill()
        except asyncio.CancelledError:
            await self.kill()
            raise
        finally:
            self._drain.cancel()

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.proc.wait(), 5)
        self._drain.cancel()
