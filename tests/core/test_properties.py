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

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hafence.sim import Simulation, parse_scenario

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
HEAL_AT = 400
SETTLE = 300

host_cmd = st.tuples(
    st.sampled_from(
        [
            "power-off",
            "power-on",
            "pull-power",
            "restore-power",
            "reboot",
            "cut-network",
            "restore-network",
            "cut-api",
            "restore-api",
            "kill-agent",
            "start-agent",
            "freeze",
            "thaw",
            "confirm-if-off",
        ]
    ),
    st.sampled_from(HOSTS),
).map(lambda t: f"{t[0]} {t[1]}")
pause_cmd = st.tuples(st.sampled_from(HOSTS), st.integers(1, 40)).map(
    lambda t: f"pause-agent {t[0]} {t[1]}"
)
device_cmd = st.tuples(
    st.sampled_from(["bmc-dead", "bmc-alive", "bmc-fail-off", "bmc-ok"]),
    st.sampled_from(DEVICES),
).map(lambda t: f"{t[0]} {t[1]}")
slow_cmd = st.tuples(st.sampled_from(DEVICES), st.integers(2, 30)).map(
    lambda t: f"bmc-slow {t[0]} {t[1]}"
)
command = st.one_of(
    host_cmd, host_cmd, pause_cmd, device_cmd, slow_cmd, st.just("restart-operator")
)
timed = st.lists(st.tuples(st.integers(1, HEAL_AT - 1), command), min_size=1, max_size=14)


def simulate(cmds: list[tuple[int, str]]) -> Simulation:
    text = SETUP + "".join(f"at {t} {c}\n" for t, c in cmds)
    text += f"at {HEAL_AT} heal\nrun {HEAL_AT + SETTLE}\n"
    sim = Simulation(parse_scenario(text))
    sim.run()
    return sim


def explain(sim: Simulation) -> str:
    return "\n".join(sim.violations) + "\n--- log ---\n" + "\n".join(sim.lines)


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
