"""Levels and the concurrent-group verdicts (two PDUs: off needs all, on needs any)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hafence.core import fencing_plan as fp

POWERS = st.sampled_from(["on", "off", "error"])


def test_levels_sorted_by_order_and_grouped() -> None:
    agents = [
        fp.AgentRef("ipmi", "h", 2, "ipmilan"),
        fp.AgentRef("pdu-b", "h", 1, "apc"),
        fp.AgentRef("pdu-a", "h", 1, "apc"),
    ]
    assert fp.levels(agents) == (fp.Level(1, ("pdu-a", "pdu-b")), fp.Level(2, ("ipmi",)))
    assert fp.levels([]) == ()


@given(st.lists(POWERS, min_size=1, max_size=4))
def test_group_verdicts(powers: list[str]) -> None:
    names = [f"a{i}" for i in range(len(powers))]
    results = {n: fp.AgentResult(p) for n, p in zip(names, powers, strict=True)}  # type: ignore[arg-type]
    status = fp.status_verdict(results, names)
    if "on" in powers:
        assert status == "on"
    elif all(p == "off" for p in powers):
        assert status == "off"
    else:
        assert status == "unknown"  # off mixed with errors proves nothing
    assert fp.off_succeeded(results, names) == all(p == "off" for p in powers)
    assert fp.on_succeeded(results, names) == ("on" in powers)
    assert fp.step_succeeded("verify", results, names) == (status == "off")
    assert fp.step_succeeded("status", results, names) == (status != "unknown")


def test_missing_answer_counts_as_error() -> None:
    results = {"a": fp.AgentResult("off")}
    assert fp.status_verdict(results, ["a", "b"]) == "unknown"
    assert not fp.off_succeeded(results, ["a", "b"])
    assert fp.describe(results, ["a", "b"]) == "a=off, b=no answer"
    assert fp.status_verdict({}, []) == "unknown"
    assert not fp.off_succeeded({}, [])
