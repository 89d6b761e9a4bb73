"""Each tests/scenarios/<name>/cmds runs in the virtual-time simulator against the real
core; its log must equal <name>/expected.log.  HAFENCE_REGOLD=1 rewrites the golden logs
(review the diff before committing them)."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

from hafence.sim import run_scenario

HERE = Path(__file__).parent
SCENARIOS = sorted(p.parent.name for p in HERE.glob("*/cmds"))
REGOLD = os.environ.get("HAFENCE_REGOLD") == "1"


def test_there_are_scenarios_and_a_readme_lists_each() -> None:
    readme = (HERE / "README.md").read_text()
    assert len(SCENARIOS) >= 11
    missing = [s for s in SCENARIOS if f"`{s}`" not in readme]
    assert not missing, f"tests/scenarios/README.md does not describe {missing}"


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_matches_golden_log(name: str) -> None:
    sim = run_scenario((HERE / name / "cmds").read_text())
    log = "".join(line + "\n" for line in sim.lines)
    golden = HERE / name / "expected.log"
    if REGOLD:
        golden.write_text(log)
    assert golden.exists(), f"{golden} missing: run with HAFENCE_REGOLD=1"
    expected = golden.read_text()
    if log != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                log.splitlines(keepends=True),
                "expected.log",
                "actual",
            )
        )
        pytest.fail(f"scenario {name} diverged from its golden log:\n{diff}")
    if sim.sc.expect_violations:
        assert sim.violations, f"{name} says expect-violations but shows none"
    else:
        assert sim.violations == [], sim.violations


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_logs_the_same_ticked_only_when_woken_or_due(name: str) -> None:
    """As the operator ticks (tests/core/test_properties.py says why it matters)."""
    text = (HERE / name / "cmds").read_text()
    every = run_scenario(text).lines
    assert run_scenario(text, "deadline").lines == every
