"""pyghmi's wait for a reply, without its lost wake-up.

pyghmi reads every IPMI packet on one I/O thread, which queues it on its session
(``pktqueue``) and wakes the callers waiting on that peer at that moment.  A caller
sends, then registers its wait (``session._io_wait``) and sleeps until woken or until
its retry timer (0.5-1 s at first).  When the reply is read in between -- the BMC
answered before the sending thread got as far as registering -- nobody is woken for a
packet already queued, and the caller sleeps out its whole timer with the answer in
hand.  On a machine busy with two operations at once this hit about one IPMI exchange
in three (bench/ipmi_overlap.py: 0.54-0.93 s waits, every one with the reply already
queued), and was the fence step's slow mode (issue #13).

:func:`install` replaces that one function with the same wait plus the missing check:
register first, then look at the queues, and return at once when a reply is already
there.  Checking after registering closes the window: the I/O thread queues packets
before it serves the waiters, so a packet it read after our registration wakes us,
and one it read before is in the queue we look at.  The caller processes the queue
next, as it does after any wake-up.  Nothing else of pyghmi changes; install refuses
a pyghmi whose internals are not the ones this was written against.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable
from typing import Any

from pyghmi.ipmi.private import session as _session

_NEEDS = ("_io_wait", "ioqueue", "iosockets", "myself", "selectdeadline", "sessionqueue")


def _replies_waiting(peer: Hashable | None) -> bool:
    """A packet is queued for the waiter: on a session of ``peer`` if it names one
    (its caller processes that session's queue next), else anywhere (the event loop's
    caller processes every queued session)."""
    handlers: dict[Any, dict[Any, Any]] = _session.Session.bmc_handlers
    groups: Iterable[dict[Any, Any]]
    if peer is None:
        if _session.sessionqueue:
            return True
        groups = list(handlers.values())
    else:
        groups = [handlers.get(peer) or {}]
    return any(getattr(s, "pktqueue", None) for group in groups for s in list(group.values()))


def io_wait(timeout: float, myaddr: Hashable | None = None, evq: Any = None) -> None:
    """pyghmi's ``_io_wait`` (same arguments, same wake-ups) that does not sleep on a
    reply the I/O thread has already queued."""
    evt = threading.Event()
    if evq is not None:
        evq.append(evt)
    deadline = timeout + _session._monotonic_time()
    _session.ioqueue.append((deadline, evt, myaddr))
    if _replies_waiting(myaddr):
        return  # the entry left in ioqueue is dropped by the I/O thread at its deadline
    if deadline < _session.selectdeadline:
        # The I/O thread sleeps in select() until a later deadline: break in so it
        # serves ours (as pyghmi does).
        wake_io_thread()
    evt.wait()


def wake_io_thread() -> None:
    """Break pyghmi's I/O thread out of select(): a byte to its first socket, which
    it reads and drops (as pyghmi itself does); nothing to wake before any socket."""
    if not _session.iosockets:
        return
    first = _session.iosockets[0]
    getattr(first, "fd", first).sendto(b"\x01", (_session.myself, first.getsockname()[1]))


def install() -> None:
    """Use :func:`io_wait` for every pyghmi session of this process (idempotent)."""
    missing = [name for name in _NEEDS if not hasattr(_session, name)]
    if missing:
        raise RuntimeError(
            f"pyghmi's session module lacks {', '.join(missing)}: "
            "hafence.fencing.pyghmi_io was written against pyghmi 1.5/1.6"
        )
    _session._io_wait = io_wait
