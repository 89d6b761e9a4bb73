"""Random failure runs in the simulator, shared by the property tests: generated
``at T COMMAND`` lines on a scenario, a heal at the end, and the report of a run that
broke a rule."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from hypothesis import strategies as st

from hafence.sim import Simulation, parse_scenario

HEAL_AT = 400  # every failure ends here ("heal") ...
SETTLE = 300  # ... and the run goes on this long after it


def on_hosts(commands: Sequence[str], hosts: Sequence[str]) -> st.SearchStrategy[str]:
    """``COMMAND HOST`` for any of ``commands`` and ``hosts``."""
    return st.tuples(st.sampled_from(list(commands)), st.sampled_from(list(hosts))).map(
        lambda t: f"{t[0]} {t[1]}"
    )


def scenario(setup: str, cmds: list[tuple[int, str]]) -> str:
    text = setup + "".join(f"at {t} {c}\n" for t, c in cmds)
    return text + f"at {HEAL_AT} heal\nrun {HEAL_AT + SETTLE}\n"


def simulate(
    setup: str,
    cmds: list[tuple[int, str]],
    ticks: Literal["every-second", "deadline"] = "every-second",
) -> Simulation:
    sim = Simulation(parse_scenario(scenario(setup, cmds)), ticks)
    sim.run()
    return sim


def explain(sim: Simulation) -> str:
    return "\n".join(sim.violations) + "\n--- log ---\n" + "\n".join(sim.lines)
