"""Property test: VMs that keep failing on some hosts, mixed with random host failures.

Whatever happens, the simulator sees no safety breach (no VM on two hosts, none placed
while it may run elsewhere, no release while it runs), and once everything is healed each
HA VM either runs exactly once on an Up host, or has used up its failure restarts and is
Failed on a host it really fails on (and runs nowhere); a VM that never fails runs.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.core.sim_runs import HEAL_AT, explain, simulate
from tests.core.test_properties import HOSTS, SETUP, host_cmd

VMS = ["v1", "v2", "v3", "v4", "v5", "v6", "v7"]
crash_cmd = st.tuples(st.sampled_from(VMS), st.sampled_from([*HOSTS, "anywhere"])).map(
    lambda t: f"crashes-forever {t[0]} {t[1]}"
)
command = st.one_of(crash_cmd, crash_cmd, host_cmd, st.just("restart-operator"))
timed = st.lists(st.tuples(st.integers(1, HEAL_AT - 1), command), min_size=1, max_size=10)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(timed)
def test_failing_vms_never_break_safety_and_end_running_or_failed_at_the_limit(
    cmds: list[tuple[int, str]],
) -> None:
    sim = simulate(SETUP, cmds)
    assert sim.violations == [], explain(sim)
    limit = sim.settings.max_failed_restarts
    for name, spec in sim.vm_specs.items():
        status = sim.vm_status[name]
        where = [h.name for h in sim.hosts.values() if name in h.running]
        if not spec.highly_available:
            continue
        if status.phase == "Failed":
            assert status.host is not None, explain(sim)
            assert sim.world.crashes(name, status.host), f"{name} Failed\n" + explain(sim)
            assert status.failed_restarts == limit and where == [], explain(sim)
            assert f"(max_failed_restarts {limit})" in (status.last_failure_reason or "")
            continue
        assert name in sim.world.crashing or status.failed_restarts == 0, explain(sim)
        assert status.phase == "Running" and status.host is not None, (
            f"{name}: {status.phase}@{status.host}\n" + explain(sim)
        )
        assert sim.host_status[status.host].phase == "Up"
        assert where == [status.host], f"{name} runs on {where}\n" + explain(sim)
        assert not sim.world.crashes(name, status.host), explain(sim)
