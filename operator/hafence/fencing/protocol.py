"""The one driver protocol, its typed results, and the shared off/on/reboot logic.

Every driver implements two primitives with a hard timeout each: read the power state
and request a power state.  :class:`BaseDriver` builds the operations on top of them:
``off``/``on`` request and then poll until the state is observed (a device's "done"
reply is never trusted: fence_ipmilan itself warns a BMC may report success before
the node is off), and ``reboot`` is off -> verified off -> on -> verified on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

from hafence.fencing.errors import DeviceError, FenceError, TimedOut

PowerState = Literal["on", "off", "unknown"]
Operation = Literal["status", "on", "off", "reboot", "test"]
T = TypeVar("T")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class SSHTarget:
    """An SSH endpoint (a host for soft fencing, or a fence proxy).

    Exactly one of ``host_key`` ('TYPE BASE64', pinned) or ``known_hosts`` (file text)
    must be given: unknown host keys are never accepted.
    """

    address: str
    private_key: str = field(repr=False)
    port: int = 22
    user: str = "root"
    host_key: str | None = None
    known_hosts: str | None = None
    name: str = ""

    def label(self) -> str:
        return self.name or f"{self.user}@{self.address}:{self.port}"


@dataclass(frozen=True)
class FenceResult:
    """The outcome of one successful operation (failures raise :class:`FenceError`)."""

    agent: str
    operation: Operation
    power_state: PowerState
    elapsed: float
    message: str = ""


class FenceDriver(Protocol):
    name: str

    async def status(self) -> FenceResult: ...
    async def on(self) -> FenceResult: ...
    async def off(self) -> FenceResult: ...
    async def reboot(self) -> FenceResult: ...
    async def test(self) -> FenceResult: ...


async def bounded(coro: Awaitable[T], timeout: float, what: str) -> T:  # noqa: ASYNC109 — bounds a thread/process too
    """``coro`` under a hard deadline, mapped to :class:`TimedOut`."""
    try:
        return await asyncio.wait_for(coro, timeout)
    except TimeoutError:
        raise TimedOut(f"{what}: no result within {timeout:g}s") from None


@dataclass
class DriverSettings:
    name: str  # e.g. "ipmilan 127.0.0.1:6230" — used in every message
    timeout: float = 20.0  # one device call
    power_wait: float = 60.0  # how long to poll for a state to settle
    poll_interval: float = 0.25


class BaseDriver:
    """Operations built from two primitives; subclasses implement ``_get``/``_set``."""

    def __init__(self, settings: DriverSettings) -> None:
        self.settings = settings
        self.name = settings.name

    async def _get(self) -> PowerState:
        raise NotImplementedError

    async def _set(self, state: Literal["on", "off"]) -> None:
        raise NotImplementedError

    @property
    def set_timeout(self) -> float:
        """Bound of one power request (an agent that waits for the state needs more)."""
        return self.settings.timeout

    async def _call(
        self,
        fn: Callable[[], Awaitable[T]],
        what: str,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> T:
        limit = self.settings.timeout if timeout is None else timeout
        return await bounded(fn(), limit, f"{self.name}: {what}")

    async def status(self) -> FenceResult:
        start = time.monotonic()
        state = await self._call(self._get, "status")
        return FenceResult(self.name, "status", state, time.monotonic() - start)

    async def test(self) -> FenceResult:
        result = await self.status()
        return FenceResult(
            self.name,
            "test",
            result.power_state,
            result.elapsed,
            f"reachable, power {result.power_state}",
        )

    async def _switch(self, state: Literal["on", "off"]) -> float:
        start = time.monotonic()
        await self._call(lambda: self._set(state), state, self.set_timeout)
        deadline = start + self.settings.power_wait
        last: PowerState = "unknown"
        last_error: FenceError | None = None
        while True:
            try:
                last = await self._call(self._get, f"status after {state}")
                last_error = None
            except FenceError as exc:  # one lost reply while polling is not failure yet
                last_error = exc
            if last == state:
                return time.monotonic() - start
            if time.monotonic() + self.settings.poll_interval > deadline:
                break
            await asyncio.sleep(self.settings.poll_interval)
        if last_error is not None:
            raise type(last_error)(f"{self.name}: {state} requested but not verified: {last_error}")
        raise DeviceError(
            f"{self.name}: {state} requested but power still {last} after "
            f"{self.settings.power_wait:g}s"
        )

    async def off(self) -> FenceResult:
        elapsed = await self._switch("off")
        return FenceResult(self.name, "off", "off", elapsed, "off verified")

    async def on(self) -> FenceResult:
        elapsed = await self._switch("on")
        return FenceResult(self.name, "on", "on", elapsed, "on verified")

    async def reboot(self) -> FenceResult:
        start = time.monotonic()
        await self._switch("off")
        await self._switch("on")
        return FenceResult(
            self.name, "reboot", "on", time.monotonic() - start, "off verified, then on verified"
        )
