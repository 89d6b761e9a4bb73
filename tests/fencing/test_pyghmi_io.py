"""pyghmi's wait for a reply does not sleep on a reply already queued (issue #13).

The lost wake-up: the I/O thread queues a reply on its session before the sender has
registered its wait, and the sender then sleeps out its retry timer (0.5-1 s) with the
answer in hand.  Each case runs in a fresh interpreter: pyghmi's session state is
process-wide, and this test process also hosts simulated BMCs.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

PRELUDE = """
import collections, threading
from pyghmi.ipmi.private import session as s
from hafence.fencing import pyghmi_io

class Queued:  # a session the I/O thread has queued a packet on
    def __init__(self, packets):
        self.pktqueue = collections.deque(packets)
    def process_pktqueue(self):
        self.pktqueue.clear()

PEER = ("127.0.0.1", 62300)

def returns(wait, *args):
    # Whether the wait returns on its own: a wait that sleeps for its timeout
    # (60 s here) has lost the wake-up.
    t = threading.Thread(target=wait, args=args, daemon=True)
    t.start()
    t.join(3)
    return not t.is_alive()
"""


def run(body: str) -> str:
    code = PRELUDE + textwrap.dedent(body)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_pyghmi_alone_sleeps_on_a_reply_already_queued() -> None:
    """The defect, shown on pyghmi's own function (if this fails, pyghmi has fixed it
    and pyghmi_io can go)."""
    out = run(
        """
        s.Session.bmc_handlers[PEER] = {623: Queued([b"reply"])}
        print(returns(s._io_wait, 60, PEER))
        """
    )
    assert out == "False"


def test_a_reply_queued_for_the_peer_ends_the_wait_at_once() -> None:
    out = run(
        """
        pyghmi_io.install()
        assert s._io_wait is pyghmi_io.io_wait
        s.Session.bmc_handlers[PEER] = {623: Queued([b"reply"])}
        print(returns(s._io_wait, 60, PEER))
        """
    )
    assert out == "True"


def test_the_event_loop_wait_ends_on_any_queued_session() -> None:
    """A wait that names no peer (pyghmi's event loop, the simulated BMCs') is served by
    its caller processing every queued session."""
    out = run(
        """
        pyghmi_io.install()
        other = ("127.0.0.1", 62301)
        s.Session.bmc_handlers[other] = {623: Queued([b"reply"])}
        print(returns(s._io_wait, 60))
        s.Session.bmc_handlers[other] = {623: Queued([])}
        s.sessionqueue.append(Queued([]))
        print(returns(s._io_wait, 60))
        """
    )
    assert out.split() == ["True", "True"]


def test_without_a_reply_the_wait_still_sleeps_until_woken() -> None:
    """Nothing queued for this peer (a packet for another does not count): the wait is
    pyghmi's, ended by its event."""
    out = run(
        """
        pyghmi_io.install()
        s.Session.bmc_handlers[PEER] = {623: Queued([])}
        s.Session.bmc_handlers[("127.0.0.1", 62301)] = {623: Queued([b"not ours"])}
        events = []
        t = threading.Thread(target=s._io_wait, args=(60, PEER, events), daemon=True)
        t.start()
        t.join(0.5)
        print(t.is_alive())
        (event,) = events
        assert any(item[1] is event and item[2] == PEER for item in s.ioqueue)
        event.set()
        t.join(3)
        print(t.is_alive())
        """
    )
    assert out.split() == ["True", "False"]


def test_install_refuses_a_pyghmi_it_was_not_written_for() -> None:
    out = run(
        """
        del s.selectdeadline
        try:
            pyghmi_io.install()
        except RuntimeError as exc:
            print(exc)
        """
    )
    assert "lacks selectdeadline" in out
