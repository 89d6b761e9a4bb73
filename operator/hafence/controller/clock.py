"""The operator's clock for the core: monotonic, expressed in seconds since the epoch.

The core measures every duration between two of its inputs (lease freshness, grace,
step deadlines, retry delays), so its clock must never step: an NTP correction of the
wall clock would otherwise make a fresh lease look expired (a fence, S5) or an expired
one fresh.  ``now()`` is the monotonic clock anchored once to the wall clock when this
process starts: it advances exactly as real time does and reads like a timestamp, so
what the core persists (outage start, step since, next retry) is still a wall-clock
time to whoever reads the status, off only by whatever the wall clock was stepped by
since start-up.  Times other machines wrote (a Lease's renewTime) are never compared
with it (see ``core/messages.py``).
"""

from __future__ import annotations

import time

_ANCHOR = time.time() - time.monotonic()


def now() -> float:
    return _ANCHOR + time.monotonic()
