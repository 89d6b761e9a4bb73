"""Bounded thread pools of their own for the operator's blocking calls.

The Kubernetes client and several fencing drivers block, so async code runs them on
threads.  asyncio's default executor (CPU count + 4 threads) shared by everything let
one kind of work starve another: a rack of 50 hosts meant ~50 soft fences (paramiko,
up to 30 s each against a dead host), hundreds of Events and 500 placement writes
through a handful of threads.  Each kind now has a pool of its own, so none waits
behind another:

=========  ======================================================  =======
pool       what runs on it                                          threads
=========  ======================================================  =======
fencing    a power operation's blocking work: Secret and Host       32
           reads, the Lease re-read before "off", and (as the
           loop's default executor) the drivers' own threads
           (paramiko, Redfish)
writes     status writes and their conflict re-reads                8
events     Event writes: a courtesy, never ahead of a status write  2
records    HostOutage records (create, status, retention): kept     2
           after the Events expire, never ahead of a fence or a
           status write (a rack's are hundreds of calls)
reads      lists: the rebuild after gaining leadership, the lease   2
           re-list before expiry
=========  ======================================================  =======

The leader elector keeps its own executor (``leader.py``): renewals never queue
behind any of these.  The writes pool also takes the rarer writes of the same kind:
a FenceConfirmation made from an annotation, a FencingPolicy's status.  A pool's size
bounds what it can do at once, never what waits: a call waits for a free thread of its
own pool only.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class Pool:
    def __init__(self, name: str, workers: int) -> None:
        self.name = name
        self.workers = workers
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix=f"hafence-{name}")

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on this pool (like ``asyncio.to_thread``)."""
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await loop.run_in_executor(self.executor, call)


FENCING = Pool("fencing", 32)
WRITES = Pool("writes", 8)
EVENTS = Pool("events", 2)
RECORDS = Pool("records", 2)
READS = Pool("reads", 2)


def install(loop: asyncio.AbstractEventLoop) -> None:
    """Make the fencing pool the loop's default executor: what still calls
    ``asyncio.to_thread`` is a fencing driver's blocking work (paramiko, Redfish)."""
    loop.set_default_executor(FENCING.executor)
