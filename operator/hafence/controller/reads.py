"""Reads a power operation makes on its way to a device, retried on transient errors.

The credentials Secret of a FenceAgent, a Host and the Secrets of its ``spec.ssh``:
each read that failed for a transient reason (``KubeError.transient``: no usable
answer, 408/429/5xx) is tried again a bounded number of times, with a doubling
backoff.  The step's budget (``core/deadlines.py``) has a margin for it; a permanent
error (404, 403) is not retried: it will not heal within a step.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from hafence.controller.pools import FENCING
from hafence.kube import KubeError

log = logging.getLogger(__name__)

T = TypeVar("T")
# Tried again this many times, after 0.2 s, 0.4 s, 0.8 s: 1.4 s at most, inside the margin.
READ_RETRIES = 3
READ_BACKOFF = 0.2


async def read_with_retries(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a thread, again on a transient KubeError, with bounded backoff."""
    for attempt in range(READ_RETRIES + 1):
        try:
            return await FENCING.run(fn, *args)
        except KubeError as exc:
            if not exc.transient or attempt == READ_RETRIES:
                raise
            delay = READ_BACKOFF * 2**attempt
            # The error names the object (a Secret: its name and key), never its data.
            log.warning("%s; trying again in %.1fs", exc, delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
