"""How long to wait before trying an API request again after it failed."""

from __future__ import annotations

from collections.abc import Iterator


class ApiBackoffs:
    """Delays between tries of one API request that failed on the network or with a
    5xx: 0.5 s, 1 s, then every 2 s, never giving up.  kopf's requests and watches use
    it (its ``error_backoffs``), and so does the heartbeat-Lease watch (lease_watch.py).

    kopf's default (1, 1, 2, 3, 5, 8, 13, 21: about a minute, then the error escalates)
    is also what its watch streams use to reconnect, so after an API-server outage of
    half a minute the watches came back up to 21 s after the server did, and an outage
    of 35 s left them blind until 54 s.  Meanwhile the operator saw no Host, VM or
    FenceAgent change (the leases have their own re-list, see reconciler.py).  Capped
    at 2 s, a watch is back at most ~2 s (+ connect) after the server is; one request
    per watched kind every 2 s while it is down is no load.  Infinite: a watch must
    never give up, and the other requests kopf makes for us (discovery at start) have
    nothing better to do than wait for the server.  kopf calls ``iter()`` on it for
    every new retrying cycle (its docs: "Retrying of API errors").
    """

    FIRST = (0.5, 1.0)
    CAP = 2.0

    def __iter__(self) -> Iterator[float]:
        yield from self.FIRST
        while True:
            yield self.CAP
