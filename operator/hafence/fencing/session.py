"""One device session per operation: the scope the native drivers share.

An operation (status, test, off, on, reboot) makes several device calls: the power
request and the status polls that verify it.  Logging in (an RMCP+ session, a TLS
handshake) for each of them costs more than the calls themselves against a BMC that
answers at once, so :class:`SessionDriver` opens the device session at the first
call of an operation, keeps it for every call of that operation, and ends it when
the operation ends — by success, failure, timeout or cancellation.  Callers see the
same protocol as :class:`~hafence.fencing.protocol.BaseDriver`.

Operations on one driver object take turns (one session per device at a time); an
operation that calls another (``test`` -> ``status``, ``reboot`` -> off, on) runs in
the outer one's session.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from hafence.fencing.protocol import BaseDriver, DriverSettings, FenceResult


class SessionDriver(BaseDriver):
    def __init__(self, settings: DriverSettings) -> None:
        super().__init__(settings)
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None

    @property
    def in_operation(self) -> bool:
        return self._owner is not None

    async def _end_session(self) -> None:
        """Close the operation's device session, if one was opened (never raises)."""
        raise NotImplementedError

    @contextlib.asynccontextmanager
    async def _operation(self) -> AsyncIterator[None]:
        task = asyncio.current_task()
        if self._owner is not None and self._owner is task:
            yield
            return
        async with self._lock:
            self._owner = task
            try:
                yield
            finally:
                self._owner = None
                await self._end_session()

    async def status(self) -> FenceResult:
        async with self._operation():
            return await super().status()

    async def test(self) -> FenceResult:
        async with self._operation():
            return await super().test()

    async def off(self) -> FenceResult:
        async with self._operation():
            return await super().off()

    async def on(self) -> FenceResult:
        async with self._operation():
            return await super().on()

    async def reboot(self) -> FenceResult:
        async with self._operation():
            return await super().reboot()
