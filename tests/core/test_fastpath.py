"""The power-off fast path (issue #13), input by input: the power status is asked as soon
as the lease expires; a chassis every agent of the level says is off is fenced at once
(off, verify off: the same proof as any fence); "on" or no answer changes nothing."""

from __future__ import annotations

from hafence.core import messages as m
from hafence.core.fencing_plan import AgentResult, status_verdict
from hafence.core.policy import ClusterPolicy, Settings
from hafence.core.transitions import Phase
from tests.core.core_helpers import (
    LEASE,
    Rig,
    agent_spec,
    answer,
    cluster,
    keep_alive,
    last,
    place,
)

GRACE = 10.0


def _expired(rig: Rig, vms: bool = True) -> m.CheckPower:
    """h1 stops renewing at 0; h2, h3 renew; returns the check asked at its expiry."""
    cluster(rig)
    if vms:
        place(rig, "web", "h1", prio="High")
        place(rig, "pet", "h1", ha=False)
    keep_alive(rig, LEASE, ["h2", "h3"])
    h1 = rig.engine.hosts["h1"]
    assert h1.phase is Phase.CONNECTING
    checks = rig.of(m.CheckPower)
    assert len(checks) == 1 and checks[0].host == "h1" and checks[0].agents == ("h1-f0",)
    return checks[0]


def _rig(**extra: object) -> Rig:
    return Rig(connecting_grace=GRACE, connecting_grace_per_vm=0, **extra)


def test_power_status_is_asked_at_lease_expiry_not_after_the_grace() -> None:
    rig = _rig()
    check = _expired(rig)
    connecting = next(e for e in rig.of(m.EmitEvent) if e.reason == "HostConnecting")
    assert "power status asked now" in connecting.message
    assert rig.engine.hosts["h1"].step == "power-status"
    assert check.op_id.startswith("h1-10/")


def test_chassis_off_is_fenced_at_once_with_off_and_verify() -> None:
    rig = _rig()
    check = _expired(rig)
    rig.now = LEASE + 0.2
    rig.feed(m.PowerStatusResult(rig.now, "h1", check.op_id, "off"))
    h1 = rig.engine.hosts["h1"]
    assert h1.phase is Phase.FENCING
    assert "SoftFenceSkipped" in rig.reasons("h1")
    assert rig.engine.vms["web"].phase == "Unknown"  # NonResponsive passed: VMs Unknown
    assert not rig.of(m.SoftFence)
    steps = []
    for power in ("off", "off"):
        step = last(rig, m.RunFenceStep)
        assert isinstance(step, m.RunFenceStep)
        steps.append(step.step)
        assert not rig.of(m.ReleaseVMs) and not rig.of(m.PlaceVM)  # S1: proof first
        answer(rig, step, power)
    # The status step is skipped (the check just asked the same devices): off, verify.
    assert steps == ["off", "verify"]
    assert h1.phase is Phase.REBOOTING and h1.proof == "fence"
    release = last(rig, m.ReleaseVMs)
    assert isinstance(release, m.ReleaseVMs) and release.vms == ("pet", "web")
    placed = rig.of(m.PlaceVM)
    assert [p.vm for p in placed] == ["web"] and placed[0].host in ("h2", "h3")
    # All of it before the grace would have ended.
    assert rig.now < LEASE + GRACE
    on = last(rig, m.RunFenceStep)
    assert isinstance(on, m.RunFenceStep) and on.step == "on"


def test_chassis_on_changes_nothing_grace_then_soft_fence_without_a_second_check() -> None:
    rig = _rig()
    check = _expired(rig)
    rig.feed(m.PowerStatusResult(rig.now, "h1", check.op_id, "on"))
    h1 = rig.engine.hosts["h1"]
    keep_alive(rig, LEASE + GRACE - 1, ["h2", "h3"])
    assert h1.phase is Phase.CONNECTING and not rig.of(m.SoftFence)
    assert rig.engine.vms["web"].phase == "Running"
    keep_alive(rig, LEASE + GRACE, ["h2", "h3"])
    soft = last(rig, m.SoftFence)
    assert isinstance(soft, m.SoftFence) and h1.phase is Phase.SOFT_FENCING
    assert len(rig.of(m.CheckPower)) == 1
    rig.feed(m.SoftFenceResult(rig.now, "h1", soft.op_id, False, "ssh down"))
    status = last(rig, m.RunFenceStep)
    # Not known off: the fence starts with its status step, as before.
    assert isinstance(status, m.RunFenceStep) and status.step == "status"


def test_no_answer_is_not_off() -> None:
    rig = _rig(step_margin=1.0)
    check = _expired(rig)
    h1 = rig.engine.hosts["h1"]
    assert h1.op_deadline is not None and h1.op_deadline > LEASE + GRACE  # 3 proxies x 21 s
    rig.feed(m.PowerStatusResult(rig.now, "h1", check.op_id, "unknown", "timed out"))
    assert h1.phase is Phase.CONNECTING
    keep_alive(rig, LEASE + GRACE, ["h2", "h3"])
    assert h1.phase is Phase.SOFT_FENCING and rig.of(m.SoftFence)
    assert not rig.of(m.RunFenceStep) and not rig.of(m.ReleaseVMs)


def test_check_timing_out_during_the_grace_is_no_answer() -> None:
    rig = Rig(connecting_grace=100, connecting_grace_max=100, step_margin=1.0)
    check = _expired(rig, vms=False)
    keep_alive(rig, LEASE + check.timeout + 1.0, ["h2", "h3"])
    assert [t.step for t in rig.of(m.StepTimedOut)] == ["power-status"]
    assert rig.engine.hosts["h1"].phase is Phase.CONNECTING
    assert not rig.of(m.SoftFence) and not rig.of(m.RunFenceStep)


def test_a_group_with_one_agent_off_and_one_silent_is_not_off() -> None:
    rig = _rig()
    cluster(rig)
    rig.feed(m.FenceAgentObserved(rig.now, "h1-f1", agent_spec("h1", order=1)))  # 2 PDUs
    keep_alive(rig, LEASE, ["h2", "h3"])
    check = last(rig, m.CheckPower)
    assert isinstance(check, m.CheckPower) and check.agents == ("h1-f0", "h1-f1")
    # The shell's verdict over {off, error} (fencing_plan.status_verdict) is unknown.
    results = {"h1-f0": AgentResult("off"), "h1-f1": AgentResult("error")}
    verdict = status_verdict(results, check.agents)
    assert verdict == "unknown"
    rig.feed(m.PowerStatusResult(rig.now, "h1", check.op_id, verdict))
    assert rig.engine.hosts["h1"].phase is Phase.CONNECTING


def test_check_in_flight_when_the_grace_ends_decides_then() -> None:
    rig = _rig()
    check = _expired(rig)
    keep_alive(rig, LEASE + GRACE + 2, ["h2", "h3"])
    h1 = rig.engine.hosts["h1"]
    assert h1.phase is Phase.SOFT_FENCING and h1.step == "power-status"
    assert not rig.of(m.SoftFence) and len(rig.of(m.CheckPower)) == 1
    rig.feed(m.PowerStatusResult(rig.now, "h1", check.op_id, "off"))
    assert h1.phase is Phase.FENCING and not rig.of(m.SoftFence)
    off = last(rig, m.RunFenceStep)
    assert isinstance(off, m.RunFenceStep) and off.step == "off"


def test_heartbeat_while_the_check_is_in_flight_ends_the_outage_and_the_answer_is_stale() -> None:
    rig = _rig()
    check = _expired(rig)
    rig.lease("h1", LEASE + 0.5)
    h1 = rig.engine.hosts["h1"]
    assert h1.phase is Phase.UP
    rig.feed(m.PowerStatusResult(LEASE + 0.6, "h1", check.op_id, "off"))
    assert h1.phase is Phase.UP
    assert not rig.of(m.RunFenceStep) and not rig.of(m.ReleaseVMs)


def test_heartbeat_while_waiting_for_a_fence_slot_ends_the_outage() -> None:
    # Chassis off, but the concurrency limit holds the fence: a heartbeat meanwhile
    # (the BMC was wrong, or the host was powered on by hand) keeps every VM in place.
    rig = _rig(max_concurrent_fences=1)
    cluster(rig)
    place(rig, "web", "h1")
    keep_alive(rig, LEASE, ["h3"])
    checks = {c.host: c for c in rig.of(m.CheckPower)}
    assert set(checks) == {"h1", "h2"}
    for h in ("h2", "h1"):
        rig.feed(m.PowerStatusResult(rig.now, h, checks[h].op_id, "off"))
    h1 = rig.engine.hosts["h1"]
    assert rig.engine.hosts["h2"].phase is Phase.FENCING
    assert h1.phase is Phase.NON_RESPONSIVE and "FenceDelayedConcurrency" in rig.reasons("h1")
    assert {s.host for s in rig.of(m.RunFenceStep)} == {"h2"}
    rig.lease("h1", rig.now + 1)
    assert h1.phase is Phase.UP and rig.engine.vms["web"].host == "h1"
    assert not [r for r in rig.of(m.ReleaseVMs) if r.host == "h1"]


def test_fencing_disabled_asks_a_person_and_sends_no_power_action() -> None:
    rig = Rig(
        Settings(
            startup_quiet_period=0,
            connecting_grace=GRACE,
            connecting_grace_per_vm=0,
            cluster_policies={"a": ClusterPolicy(fencing_enabled=False)},
        )
    )
    check = _expired(rig)
    rig.feed(m.PowerStatusResult(rig.now, "h1", check.op_id, "off"))
    h1 = rig.engine.hosts["h1"]
    assert h1.phase is Phase.ISOLATED and "FenceSkippedDisabled" in rig.reasons("h1")
    assert not rig.of(m.RunFenceStep) and not rig.of(m.ReleaseVMs)
    assert rig.engine.vms["web"].host == "h1"


def test_quiet_period_holds_the_check() -> None:
    rig = Rig(Settings(startup_quiet_period=15, connecting_grace=GRACE))
    rig.feed(m.OperatorStarted(0.0))
    cluster(rig)
    keep_alive(rig, 14, ["h2", "h3"])
    assert rig.engine.hosts["h1"].phase is Phase.CONNECTING and not rig.of(m.CheckPower)
    keep_alive(rig, 15, ["h2", "h3"])
    check = last(rig, m.CheckPower)
    assert isinstance(check, m.CheckPower) and check.host == "h1"


def test_no_check_for_a_host_without_power_management() -> None:
    rig = _rig()
    cluster(rig, n=1)
    rig.host("h2", agents=0)
    rig.lease("h2", 0.0)
    keep_alive(rig, LEASE, ["h1"])
    assert rig.engine.hosts["h2"].phase is Phase.CONNECTING and not rig.of(m.CheckPower)
    connecting = next(e for e in rig.of(m.EmitEvent) if e.reason == "HostConnecting")
    assert "power status" not in connecting.message
    keep_alive(rig, LEASE + GRACE, ["h1"])
    assert last(rig, m.SoftFence) is not None


def test_a_heartbeat_seen_while_off_is_verified_is_verified_again() -> None:
    # Found by the fast-path property test: the BMC is slow, someone powers the host on
    # after the verifying status read looked but before its "off" arrived; the host
    # boots and renews.  That "off" is no proof of now: a second read is.
    rig = _rig()
    check = _expired(rig)
    rig.feed(m.PowerStatusResult(rig.now, "h1", check.op_id, "off"))
    off = last(rig, m.RunFenceStep)
    assert isinstance(off, m.RunFenceStep) and off.step == "off"
    answer(rig, off, "off")
    verify = last(rig, m.RunFenceStep)
    assert isinstance(verify, m.RunFenceStep) and verify.step == "verify"
    rig.lease("h1", rig.now + 1, boot="b2")  # booted again, renews
    h1 = rig.engine.hosts["h1"]
    assert h1.phase is Phase.FENCING and "HeartbeatDuringFence" in rig.reasons("h1")
    answer(rig, verify, "off")  # the read taken before the power-on
    assert not rig.of(m.ReleaseVMs) and "FenceVerifyRepeated" in rig.reasons("h1")
    again = last(rig, m.RunFenceStep)
    assert isinstance(again, m.RunFenceStep) and again.step == "verify" and again is not verify
    answer(rig, again, "on")  # it runs: the level fails, the heartbeat counts
    assert h1.phase is Phase.UP and rig.engine.vms["web"].host == "h1"
    assert not rig.of(m.ReleaseVMs) and not rig.of(m.PlaceVM)


def test_a_heartbeat_before_the_verify_was_asked_does_not_hold_the_proof() -> None:
    # The race the no-abandon rule is for: a renewal seen after "off" was sent but
    # before the verifying read was asked; that read says off: proof.
    rig = _rig()
    check = _expired(rig)
    rig.feed(m.PowerStatusResult(rig.now, "h1", check.op_id, "off"))
    off = last(rig, m.RunFenceStep)
    assert isinstance(off, m.RunFenceStep)
    rig.lease("h1", rig.now)  # renewed just before the off landed
    rig.now += 1
    answer(rig, off, "off")
    verify = last(rig, m.RunFenceStep)
    assert isinstance(verify, m.RunFenceStep) and verify.step == "verify"
    rig.now += 1
    answer(rig, verify, "off")
    assert rig.engine.hosts["h1"].phase is Phase.REBOOTING and rig.of(m.ReleaseVMs)
