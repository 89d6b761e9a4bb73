"""The operator's kopf settings: API requests (and so the watches' reconnects) are
retried on a short, capped, never-ending schedule; a hung connect is given up early.

The behaviour itself -- watches back after an outage, a change made meanwhile and one
made after it both handled -- is tests/operator/test_faults.py's
test_operator_watches_come_back_after_an_outage, with the fault proxy.
"""

from __future__ import annotations

import itertools

import kopf

from hafence.controller.main import CONNECT_TIMEOUT, ApiBackoffs, configure_kopf


def test_retries_are_capped_and_never_give_up() -> None:
    settings = kopf.OperatorSettings()
    configure_kopf(settings)
    backoffs = settings.networking.error_backoffs
    assert isinstance(backoffs, ApiBackoffs)
    first = list(itertools.islice(iter(backoffs), 10_000))
    assert len(first) == 10_000  # kopf escalates only when the schedule runs out
    assert all(0 < d <= ApiBackoffs.CAP for d in first), first[:10]
    assert first[0] < 1  # the first retry comes quickly
    # kopf calls iter() anew for every retrying cycle: each starts from the beginning.
    assert list(itertools.islice(iter(backoffs), 3)) == first[:3]


def test_a_hung_connect_is_given_up_within_the_connect_timeout() -> None:
    settings = kopf.OperatorSettings()
    configure_kopf(settings)
    assert settings.watching.connect_timeout == CONNECT_TIMEOUT
    assert settings.networking.connect_timeout == CONNECT_TIMEOUT
    assert settings.networking.request_timeout == 30
    assert settings.posting.enabled is False
