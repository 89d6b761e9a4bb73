"""Operations in flight, by the core's ``op_id``: one task each.

The core names every operation it starts and may give up on one (``StepTimedOut``,
its own backstop deadline); losing leadership ends them all.  Power operations
(``power.py``) and kdump waits (``kdump.py``) are kept here alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class InFlight:
    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, op_id: str, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks[op_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(op_id, None))

    def stop(self, op_id: str) -> None:
        """Cancel ``op_id`` if it still runs (it may have ended meanwhile)."""
        task = self._tasks.pop(op_id, None)
        if task is not None:
            task.cancel()

    async def join(self) -> None:
        """Wait until every operation started so far has ended."""
        await asyncio.gather(*self._tasks.values())

    async def stop_all(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
