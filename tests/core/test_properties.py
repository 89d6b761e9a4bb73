"""Property tests: random failure sequences against the core, in the simulator.

The simulator knows the truth (which host is powered, which VM runs where, which lease
is fresh) and flags any breach as it happens; these tests generate the failures:

- S1: no VM is released from a host where it still runs (except by a person's
  confirmation, which the generated person only gives for hosts that are off), none is
  placed while it may run elsewhere, and no VM ever runs on two hosts;
- S5: no soft fence or fence off/on while the host's lease is fresh;
- S6: at most one FenceConfirmation applied per outage;
- liveness: once everything is healed, every HA VM runs (capacity exists by design);
- concurrent groups: hosts fed by two PDUs where one PDU may refuse "off".
"""

from __future__ import annotations

import difflib

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hafence.sim import Simulation, parse_scenario
from hafence.sim.world import HOST_VERBS
from tests.core import sim_runs
from tests.core.sim_runs import HEAL_AT, explain, on_hosts

HOSTS = ["host1", "host2", "host3", "host4"]
DEVICES = ["host1-ipmi", "host2-pdu-a", "host2-pdu-b", "host2-ipmi", "host3-ipmi", "host4-ipmi"]
SETUP = """\
settings quiet=10 retry=30 retry_max=120
host host1 cluster=a ssh
host host2 cluster=a ssh
host host3 cluster=a ssh selffence=30
host host4 cluster=a
fence host1-ipmi host=host1
fence host2-pdu-a host=host2 type=apc order=1
fence host2-pdu-b host=host2 type=apc order=1
fence host2-ipmi host=host2 order=2
fence host3-ipmi host=host3
fence host4-ipmi host=host4
vm v1 cluster=a prio=High on=host1
vm v2 cluster=a prio=Medium on=host2
vm v3 cluster=a prio=Low on=host3
vm v4 cluster=a prio=High on=host4
vm v5 cluster=a prio=Medium on=host1 group=g
vm v6 cluster=a prio=Medium on=host2 group=g
vm v7 cluster=a on=host3 ha=no
"""
# Every host verb of the simulator that takes no argument (those that do have their
# own strategies below), and the generated person's confirmation.
host_cmd = on_hosts(
    [*sorted(HOST_VERBS - {"pause-agent", "kernel-crash"}), "confirm-if-off"], HOSTS
)
pause_cmd = st.tuples(st.sampled_from(HOSTS), st.integers(1, 40)).map(
    lambda t: f"pause-agent {t[0]} {t[1]}"
)
device_cmd = on_hosts(["bmc-dead", "bmc-alive", "bmc-fail-off", "bmc-ok"], DEVICES)
slow_cmd = st.tuples(st.sampled_from(DEVICES), st.integers(2, 30)).map(
    lambda t: f"bmc-slow {t[0]} {t[1]}"
)
command = st.one_of(
    host_cmd, host_cmd, pause_cmd, device_cmd, slow_cmd, st.just("restart-operator")
)
timed = st.lists(st.tuples(st.integers(1, HEAL_AT - 1), command), min_size=1, max_size=14)


def simulate(cmds: list[tuple[int, str]]) -> Simulation:
    return sim_runs.simulate(SETUP, cmds)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(timed)
def test_random_failures_never_break_safety_and_every_ha_vm_ends_running(
    cmds: list[tuple[int, str]],
) -> None:
    sim = simulate(cmds)
    assert sim.violations == [], explain(sim)
    # S6: one applied confirmation per outage at most.
    applied = [s.outage_id for s in sim.conf_status.values() if s.phase == "Applied"]
    assert len(applied) == len(set(applied)), explain(sim)
    # Liveness: healed for SETTLE seconds, every HA VM is placed on an Up host, Running,
    # and really runs there, once.
    for name, spec in sim.vm_specs.items():
        status = sim.vm_status.get(name)
        assert status is not None
        if not spec.highly_available:
            continue
        assert status.phase == "Running" and status.host is not None, (
            f"{name}: {status.phase}@{status.host}\n" + explain(sim)
        )
        assert sim.host_status[status.host].phase == "Up"
        where = [h.name for h in sim.hosts.values() if name in h.running]
        assert where == [status.host], f"{name} runs on {where}\n" + explain(sim)
    for name, st_ in sim.host_status.items():
        assert st_.phase == "Up", f"{name} ended {st_.phase}\n" + explain(sim)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(timed)
def test_ticking_only_when_woken_or_due_changes_nothing(cmds: list[tuple[int, str]]) -> None:
    """The operator ticks the core only when an input wakes it (``Engine.wakes``) or at
    its ``next_deadline``; the simulator ticks every second.  Same log either way, or
    the core depends on a time ``next_deadline`` does not name (and the operator would
    act up to its MAX_SLEEP late)."""
    runs = [sim_runs.simulate(SETUP, cmds, ticks).lines for ticks in ("every-second", "deadline")]
    every, deadline = runs
    assert deadline == every, "\n".join(
        difflib.unified_diff(every, deadline, "every second", "at deadlines", lineterm="")
    )


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["host2-pdu-a", "host2-pdu-b"]), st.booleans(), st.integers(5, 60))
def test_concurrent_group_needs_every_pdu_off(failing: str, ipmi_dead: bool, at: int) -> None:
    cmds = [(at, f"bmc-fail-off {failing}"), (at + 1, "cut-network host2")]
    if ipmi_dead:
        cmds.append((at, "bmc-dead host2-ipmi"))
    sim = simulate(cmds)
    assert sim.violations == [], explain(sim)
    released = [line for line in sim.lines if "VMReleased" in line and "host2" in line]
    if ipmi_dead:
        # One PDU refusing means the group cannot prove off, and the IPMI level is dead:
        # nothing is released until healing brings the host back.
        assert not [line for line in released if "(fence," in line], explain(sim)
    else:
        assert any("(fence, outage host2" in line for line in released), explain(sim)
        assert any("level 2" in line and "off verified" in line for line in sim.lines)


# ---------------------------------------------------------------- the power-off fast path

FAST_SETUP = """\
settings quiet=0 boot=2
host host1 cluster=a ssh
host host2 cluster=a ssh
host host3 cluster=a ssh
host host4 cluster=a ssh
fence host1-ipmi host=host1
fence host2-pdu-a host=host2 type=apc order=1
fence host2-pdu-b host=host2 type=apc order=1
fence host3-ipmi host=host3
fence host4-ipmi host=host4
vm v1 cluster=a prio=High on=host1
vm v2 cluster=a prio=High on=host2
vm v3 cluster=a prio=High on=host3
vm v4 cluster=a on=host1 ha=no
"""
FAST_VICTIMS = ["host1", "host2"]
FAST_DEVICES = ["host1-ipmi", "host2-pdu-a", "host2-pdu-b"]
# Faults that race the check asked at lease expiry: the chassis cut and restored (a host
# that boots again during its fence), agents that pause across their lease expiry,
# BMCs that die, slow down or refuse "off", one outlet of the PDU pair switched off.
fast_cmd = st.one_of(
    # The chassis cut with its BMC answering, most often: that is what takes the path.
    st.sampled_from(["power-off host1", "power-off host1", "power-off host2"]),
    on_hosts(
        ["power-off", "power-on", "pull-power", "restore-power", "cut-network",
         "restore-network", "kill-agent", "start-agent", "freeze", "thaw"],
        FAST_VICTIMS,
    ),
    st.tuples(st.sampled_from(FAST_VICTIMS), st.integers(5, 20)).map(
        lambda t: f"pause-agent {t[0]} {t[1]}"
    ),
    on_hosts(["bmc-dead", "bmc-alive", "bmc-fail-off", "bmc-ok"], FAST_DEVICES),
    st.tuples(st.sampled_from(FAST_DEVICES), st.integers(2, 15)).map(
        lambda t: f"bmc-slow {t[0]} {t[1]}"
    ),
)  # fmt: skip
FAST_HEAL = 120
fast_timed = st.lists(st.tuples(st.integers(20, 60), fast_cmd), min_size=1, max_size=8)


def fast_simulate(cmds: list[tuple[int, str]], heal: int | None = FAST_HEAL) -> Simulation:
    text = FAST_SETUP + "".join(f"at {t} {c}\n" for t, c in sorted(cmds, key=lambda x: x[0]))
    end = (heal or 60) + 150
    if heal is not None:
        text += f"at {heal} heal\n"
    sim = Simulation(parse_scenario(text + f"run {end}\n"))
    sim.run()
    return sim


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fast_timed)
# Found by this test: a slow BMC, the host powered on by hand after the verifying read
# looked; it boots and renews before the stale "off" arrives (FenceVerifyRepeated).
@example([(30, "power-off host1"), (30, "bmc-slow host1-ipmi 5"), (49, "power-on host1")])
# A renewal after "off" was sent, before the verify (HeartbeatDuringFence, the fence
# completes) and the host powered on again by hand during its fence.
@example([(30, "power-off host1"), (30, "bmc-slow host1-ipmi 5"), (44, "power-on host1")])
@example([(30, "power-off host1"), (39, "power-on host1")])
def test_fast_path_races_never_break_s1_or_s5(cmds: list[tuple[int, str]]) -> None:
    """S1 and S5 with the fast path in play: the simulator flags a release of a VM that
    still runs, a VM on two powered hosts, and any power-status check, soft fence or
    fence off/on sent while the host's lease is fresh -- here with chassis cuts, agent
    pauses and BMC faults timed around the lease expiry where the check is asked."""
    sim = fast_simulate(cmds)
    assert sim.violations == [], explain(sim)
    # Every fence proof was a verified off of that outage: a "(fence, outage X)" release
    # follows an "off" and a "verify" of its host after the outage began.
    for i, line in enumerate(sim.lines):
        if "VMReleased" in line and "(fence, outage " in line:
            host = line.split("(fence, outage ")[1].rsplit("-", 1)[0]
            before = sim.lines[:i]
            begun = max(
                j for j, x in enumerate(before) if f"outage {host}-" in x and "HostConnecting" in x
            )
            ops = [x for x in before[begun:] if f"op             fence {host} level" in x]
            assert any(" off " in x for x in ops) and any(" verify " in x for x in ops), explain(
                sim
            )
    for name, st_ in sim.host_status.items():
        assert st_.phase == "Up", f"{name} ended {st_.phase}\n" + explain(sim)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["host1", "host3"]), st.integers(20, 40), st.booleans())
def test_chassis_off_with_a_bmc_that_answers_recovers_within_lease_and_round_trips(
    victim: str, at: int, other_cut: bool
) -> None:
    """The figure the fast path is for: a chassis that loses power while its BMC (or both
    PDUs) answer has its HA VM running elsewhere within the lease plus the device round
    trips (check, off, verify: 1 s each here) and the agent's start -- no grace, no soft
    fence -- even while another host of the cluster is cut off at the same time.  (A PDU
    reports its outlet, not the chassis: for host2 it says on, and the slow path runs.)"""
    cmds = [(at, f"power-off {victim}")]
    if other_cut:
        cmds.append((at, "cut-network host4"))
    sim = fast_simulate(cmds, heal=None)
    assert sim.violations == [], explain(sim)
    vm = {"host1": "v1", "host3": "v3"}[victim]
    running = [
        int(line.split()[0])
        for line in sim.lines
        if f"vm/{vm} " in line and "-> Running@" in line and f"Running@{victim}" not in line
    ]
    assert running and running[0] <= at + 10 + 4 + 1, explain(sim)
    assert not [x for x in sim.lines if f"soft-fence {victim}" in x], explain(sim)
    assert any(
        victim in x and "SoftFenceSkipped" in x and "during the connecting grace" in x
        for x in sim.lines
    ), explain(sim)
