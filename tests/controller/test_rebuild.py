"""The rebuild after gaining leadership shares the loop: thousands of objects are fed
a slice at a time, so the leader's renewal (a task on the same loop) keeps its turn."""

from __future__ import annotations

import asyncio
import itertools

from hafence.controller.reconciler import REBUILD_SLICE, taking_turns


def test_a_long_rebuild_gives_the_loop_back_every_slice() -> None:
    n = 20 * REBUILD_SLICE
    turns: list[int] = []  # how many items the rebuild had taken at each of our turns
    taken = 0

    async def other_task() -> None:  # stands for the leader's renewal loop
        while True:
            turns.append(taken)
            await asyncio.sleep(0)

    async def rebuild() -> list[int]:
        nonlocal taken
        task = asyncio.create_task(other_task())
        await asyncio.sleep(0)
        out = []
        async for item in taking_turns(range(n)):
            taken += 1
            out.append(item)  # no await in here: only taking_turns gives the loop back
        task.cancel()
        return out

    assert asyncio.run(rebuild()) == list(range(n)), "items lost or reordered"
    gaps = [b - a for a, b in itertools.pairwise(turns)]
    assert len(turns) >= n // REBUILD_SLICE, turns
    assert max(gaps) <= REBUILD_SLICE, f"the loop was held for {max(gaps)} items"
