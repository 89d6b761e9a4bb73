"""kdump levels: a fence_kdump message heard while the level waits is proof, and nothing
is switched.  Unit tests through the engine, then property tests in the simulator (S1
and S5 with kdump proofs among the others)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hafence.api.fenceagent import FenceAgentSpec
from hafence.api.host import HostStatus
from hafence.core import fencing_plan as fp
from hafence.core import messages as m
from hafence.core.policy import Settings
from hafence.core.transitions import Phase
from hafence.sim import Simulation
from tests.core import sim_runs
from tests.core.core_helpers import (
    LEASE,
    Rig,
    agent_spec,
    answer,
    host_spec,
    keep_alive,
    last,
    place,
)
from tests.core.sim_runs import HEAL_AT, explain, on_hosts


def kdump_spec(host: str, order: int = 1, options: str = "") -> FenceAgentSpec:
    return FenceAgentSpec.model_validate(
        {
            "hostRef": {"name": host},
            "type": "kdump",
            "address": "192.0.2.11",
            "order": order,
            "options": options,
        }
    )


def kdump_cluster(rig: Rig, options: str = "", power: bool = True) -> None:
    """h1: kdump at order 1 (and IPMI at order 2 with ``power``); h2, h3 plain."""
    for name in ("h1", "h2", "h3"):
        rig.feed(m.HostObserved(rig.now, name, host_spec()))
        rig.lease(name, 0.0)
    rig.feed(m.FenceAgentObserved(rig.now, "h1-kdump", kdump_spec("h1", 1, options)))
    if power:
        rig.host("h1", agents=0)
        rig.feed(m.FenceAgentObserved(rig.now, "h1-ipmi", agent_spec("h1", order=2)))


def to_kdump_level(rig: Rig) -> m.WaitForKdump:
    """h1's lease expires, the power check says on, the soft fence fails: level 1."""
    keep_alive(rig, 30, ["h2", "h3"])
    check = rig.of(m.CheckPower)
    if check:
        assert check[-1].agents == ("h1-ipmi",)  # the power level, never the kdump one
        rig.feed(m.PowerStatusResult(rig.now, "h1", check[-1].op_id, "on"))
    soft = last(rig, m.SoftFence)
    assert isinstance(soft, m.SoftFence)
    rig.feed(m.SoftFenceResult(rig.now, "h1", soft.op_id, False, "ssh: connection refused"))
    wait = last(rig, m.WaitForKdump)
    assert isinstance(wait, m.WaitForKdump)
    return wait


def heard(rig: Rig, wait: m.WaitForKdump) -> None:
    rig.feed(m.KdumpResult(rig.now, "h1", wait.op_id, True, "h1-kdump", "message"))


def test_message_heard_releases_the_vms_and_nothing_is_switched() -> None:
    rig = Rig()
    kdump_cluster(rig)
    place(rig, "web", "h1", prio="High")
    wait = to_kdump_level(rig)
    assert wait.agents == ("h1-kdump",) and wait.level == 1 and wait.timeout == 30.0
    assert wait.since == rig.now  # only a message from now on counts
    assert not rig.of(m.PlaceVM)  # S1: nothing moves while waiting
    heard(rig, wait)
    h1 = rig.engine.hosts["h1"]
    assert h1.phase is Phase.REBOOTING and h1.proof == "kdump"
    release = last(rig, m.ReleaseVMs)
    assert isinstance(release, m.ReleaseVMs) and release.proof == "kdump"
    assert release.vms == ("web",)
    assert [p.vm for p in rig.of(m.PlaceVM)] == ["web"]
    assert "KdumpDetected" in rig.reasons("h1")
    keep_alive(rig, rig.now + 200, ["h2", "h3"])
    assert not rig.of(m.RunFenceStep), "no power action, not even on"
    status = [w for w in rig.of(m.WriteHostStatus) if w.host == "h1"][-1].status
    assert status.fencing is not None and status.fencing.proof == "kdump"
    assert HostStatus.model_validate(status.to_k8s()).fencing is not None
    # After its dump the host reboots by itself: a new boot ID, Up.
    rig.lease("h1", rig.now, boot="b2")
    assert h1.phase is Phase.UP and "HostReturnedWithoutReboot" not in rig.reasons("h1")


def test_a_spoofed_message_for_a_live_host_is_caught_by_its_boot_id() -> None:
    rig = Rig()
    kdump_cluster(rig)
    place(rig, "web", "h1")
    heard(rig, to_kdump_level(rig))
    rig.lease("h1", rig.now + 1, boot="b1")  # the same boot: it never crashed
    assert rig.engine.hosts["h1"].phase is Phase.UP
    assert "HostReturnedWithoutReboot" in rig.reasons("h1")


def test_no_message_goes_on_to_the_power_level() -> None:
    rig = Rig()
    kdump_cluster(rig)
    place(rig, "web", "h1")
    wait = to_kdump_level(rig)
    rig.feed(m.KdumpResult(rig.now, "h1", wait.op_id, False, "", "no message in 30s"))
    step = last(rig, m.RunFenceStep)
    assert isinstance(step, m.RunFenceStep) and step.level == 2 and step.step == "status"
    assert not rig.of(m.ReleaseVMs)
    assert "FenceOperationFailed" in rig.reasons("h1")


def test_the_wait_has_a_deadline_like_every_step() -> None:
    rig = Rig()
    kdump_cluster(rig, options="timeout=45")
    wait = to_kdump_level(rig)
    assert wait.timeout == 45.0
    keep_alive(rig, rig.now + 44, ["h2", "h3"])
    assert not rig.of(m.RunFenceStep)
    keep_alive(rig, rig.now + 45 + 2 * Settings().step_margin, ["h2", "h3"])
    timed_out = last(rig, m.StepTimedOut)
    assert isinstance(timed_out, m.StepTimedOut) and timed_out.step == "kdump"
    step = last(rig, m.RunFenceStep)
    assert isinstance(step, m.RunFenceStep) and step.level == 2
    rig.feed(m.KdumpResult(rig.now, "h1", wait.op_id, True, "h1-kdump", "late"))
    assert not rig.of(m.ReleaseVMs), "a late answer to an abandoned wait is ignored"


def test_a_message_while_the_lease_is_fresh_is_never_proof() -> None:
    rig = Rig()
    kdump_cluster(rig)
    place(rig, "web", "h1")
    wait = to_kdump_level(rig)
    rig.lease("h1", rig.now, ready=False)  # renewing, not yet swept: never Up, never fenced
    heard(rig, wait)
    assert not rig.of(m.ReleaseVMs) and rig.engine.vms["web"].host == "h1"
    assert "KdumpMessageIgnored" in rig.reasons("h1")


def test_a_heartbeat_during_the_wait_ends_the_outage() -> None:
    rig = Rig()
    kdump_cluster(rig)
    place(rig, "web", "h1")
    wait = to_kdump_level(rig)
    rig.lease("h1", rig.now, boot="b1")
    assert rig.engine.hosts["h1"].phase is Phase.UP
    heard(rig, wait)  # stale: the wait was abandoned with the outage
    assert not rig.of(m.ReleaseVMs)


def test_a_kdump_only_host_skips_the_power_check() -> None:
    rig = Rig()
    kdump_cluster(rig, power=False)
    wait = to_kdump_level(rig)
    assert not rig.of(m.CheckPower)
    rig.feed(m.KdumpResult(rig.now, "h1", wait.op_id, False, "", "no message"))
    assert rig.engine.hosts["h1"].phase is Phase.ISOLATED


def test_a_level_mixing_kdump_and_power_fails_saying_why() -> None:
    rig = Rig()
    for name in ("h1", "h2", "h3"):
        rig.feed(m.HostObserved(rig.now, name, host_spec()))
        rig.lease(name, 0.0)
    rig.feed(m.FenceAgentObserved(rig.now, "h1-kdump", kdump_spec("h1", 1)))
    rig.feed(m.FenceAgentObserved(rig.now, "h1-ipmi", agent_spec("h1", order=1)))
    rig.feed(m.FenceAgentObserved(rig.now, "h1-pdu", agent_spec("h1", order=2)))
    keep_alive(rig, 30, ["h2", "h3"])
    check = last(rig, m.CheckPower)
    assert isinstance(check, m.CheckPower) and check.agents == ("h1-pdu",)
    rig.feed(m.PowerStatusResult(rig.now, "h1", check.op_id, "off"))
    failed = [a for a in rig.of(m.EmitEvent) if a.reason == "FenceOperationFailed"]
    assert failed and "mixes kdump agents (h1-kdump) with power devices (h1-ipmi)" in (
        failed[0].message
    )
    assert not rig.of(m.WaitForKdump)
    step = last(rig, m.RunFenceStep)
    assert isinstance(step, m.RunFenceStep) and step.agents == ("h1-pdu",)
    for power in ("on", "off", "off"):
        answer(rig, last(rig, m.RunFenceStep), power)  # type: ignore[arg-type]
    assert rig.engine.hosts["h1"].proof == "fence"


def test_levels_know_their_kind() -> None:
    refs = [
        fp.AgentRef("k", "h", 1, "kdump", kdump_timeout=30.0),
        fp.AgentRef("i", "h", 2, "ipmilan"),
        fp.AgentRef("k2", "h", 3, "kdump", kdump_timeout=30.0),
        fp.AgentRef("p", "h", 3, "apc"),
    ]
    lv = fp.levels(refs)
    assert [x.kind for x in lv] == ["kdump", "power", "mixed"]
    assert fp.power_agents(lv) == ("i",)
    assert lv[2].kdump_agents == ("k2",)


def test_restart_mid_wait_waits_again_after_the_quiet_period() -> None:
    rig = Rig()
    kdump_cluster(rig)
    place(rig, "web", "h1")
    to_kdump_level(rig)
    new = Rig(Settings(startup_quiet_period=10.0))
    new.now = rig.now
    new.feed(m.OperatorStarted(new.now))
    for name, rec in rig.engine.hosts.items():
        status = [w for w in rig.of(m.WriteHostStatus) if w.host == name][-1].status
        status = HostStatus.model_validate(status.to_k8s())
        new.feed(m.HostObserved(new.now, name, rec.spec, rec.labels, status))
    new.feed(m.FenceAgentObserved(new.now, "h1-kdump", kdump_spec("h1")))
    vm = rig.engine.vms["web"]
    from hafence.api.vm import HAVirtualMachineStatus

    new.feed(
        m.VMObserved(
            new.now,
            "web",
            vm.spec,
            HAVirtualMachineStatus(phase="Unknown", host="h1", placement_epoch=1, last_host="h1"),
        )
    )
    for name in ("h2", "h3"):
        new.lease(name, new.now)
    new.feed(m.LeaseObserved(new.now, "h1", 0.0, LEASE, "b1"))  # its last renewal, unchanged
    h1 = new.engine.hosts["h1"]
    assert h1.phase is Phase.FENCING and h1.step == "kdump"
    # First sight of a lease counts as fresh for one duration (S5), the quiet period too.
    keep_alive(new, new.now + LEASE - 1, ["h2", "h3"])
    assert not new.of(m.WaitForKdump)
    keep_alive(new, new.now + 2, ["h2", "h3"])
    again = last(new, m.WaitForKdump)
    assert isinstance(again, m.WaitForKdump) and again.outage_id == h1.outage_id
    assert again.since >= 30 + LEASE  # issued anew, after the quiet period and S5
    heard(new, again)
    assert len(new.of(m.ReleaseVMs)) == 1 and h1.proof == "kdump"


# ---------------------------------------------------------------- properties

SETUP = """\
settings quiet=10 retry=30 retry_max=120 kdump_interval=5
host host1 cluster=a ssh
host host2 cluster=a ssh
host host3 cluster=a
fence host1-kdump host=host1 type=kdump order=1 timeout=15
fence host1-ipmi host=host1 order=2
fence host2-kdump host=host2 type=kdump order=1 timeout=10
fence host2-ipmi host=host2 order=2
fence host3-kdump host=host3 type=kdump order=1 timeout=20
vm v1 cluster=a prio=High on=host1
vm v2 cluster=a prio=Medium on=host2
vm v3 cluster=a prio=Low on=host3
vm v4 cluster=a on=host1 ha=no
"""
HOSTS = ["host1", "host2", "host3"]
crash_cmd = st.tuples(st.sampled_from(HOSTS), st.integers(1, 120)).map(
    lambda t: f"kernel-crash {t[0]} {t[1]}"
)
host_cmd = on_hosts(
    [
        "power-off",
        "power-on",
        "reboot",
        "cut-network",
        "restore-network",
        "kill-agent",
        "start-agent",
        "freeze",
        "thaw",
        "confirm-if-off",
    ],
    HOSTS,
)
device_cmd = on_hosts(["bmc-dead", "bmc-ok"], ["host1-ipmi", "host2-ipmi"])
command = st.one_of(crash_cmd, crash_cmd, host_cmd, device_cmd, st.just("restart-operator"))
timed = st.lists(st.tuples(st.integers(1, HEAL_AT - 1), command), min_size=1, max_size=10)


def simulate(cmds: list[tuple[int, str]]) -> Simulation:
    return sim_runs.simulate(SETUP, cmds)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(timed)
def test_kernel_crashes_among_other_failures_never_break_s1_or_s5(
    cmds: list[tuple[int, str]],
) -> None:
    """The simulator flags a release while a VM still runs on the released host (S1),
    a placement while it may run elsewhere, a VM on two hosts, and any power action
    while the lease is fresh (S5); none may happen, kdump proofs included."""
    sim = simulate(cmds)
    assert sim.violations == [], explain(sim)
    for name, spec in sim.vm_specs.items():
        status = sim.vm_status[name]
        if spec.highly_available:
            assert status.phase == "Running" and status.host is not None, explain(sim)
            where = [h.name for h in sim.hosts.values() if name in h.running]
            assert where == [status.host], explain(sim)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(HOSTS), st.integers(10, 300), st.integers(60, 120))
def test_a_long_enough_dump_is_proof_and_never_interrupted(host: str, at: int, dump: int) -> None:
    sim = simulate([(at, f"kernel-crash {host} {dump}")])
    assert sim.violations == [], explain(sim)
    assert not [line for line in sim.lines if "dump interrupted" in line], explain(sim)
    assert not [f for f in sim.fences_issued if f[1] == host], explain(sim)
    assert any(f"proven off (kdump, outage {host}" in line for line in sim.lines), explain(sim)
