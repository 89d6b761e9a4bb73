"""Failure paths in the core: every step ends by its deadline, a fence whose "off" was
sent completes whatever heartbeat arrives, writes that failed are issued again, and a
lease is judged on the operator's own clock from when it saw each renewal."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hafence.core import messages as m
from hafence.core.fencing_plan import AgentResult
from hafence.core.transitions import Phase, Trigger, lookup
from tests.core.core_helpers import LEASE, Rig, answer, cluster, keep_alive, last, place


def _to_fencing(rig: Rig) -> m.RunFenceStep:
    """h1 silent until its first fence step (status) is issued; h2, h3 renew."""
    cluster(rig)
    place(rig, "web", "h1", prio="High")
    for _ in range(200):
        keep_alive(rig, rig.now + 1, ["h2", "h3"])
        for a in rig.engine._out:  # pragma: no cover - flushed every call
            raise AssertionError(a)
        steps = rig.of(m.RunFenceStep)
        if steps:
            return steps[-1]
        check = [a for a in rig.of(m.CheckPower) if a.op_id == rig.engine.hosts["h1"].op_id]
        if check:
            rig.feed(m.PowerStatusResult(rig.now, "h1", check[-1].op_id, "on"))
        soft = [a for a in rig.of(m.SoftFence) if a.op_id == rig.engine.hosts["h1"].op_id]
        if soft:
            rig.feed(m.SoftFenceResult(rig.now, "h1", soft[-1].op_id, False, "ssh down"))
    raise AssertionError("h1 never reached Fencing")


def test_every_step_has_a_deadline_from_the_agents_timeouts() -> None:
    rig = Rig(step_margin=2.0)
    status = _to_fencing(rig)
    h1 = rig.engine.hosts["h1"]
    # agent_spec: timeoutSeconds 20 (default); the proxy candidates are tried in turn.
    tries = len(status.proxies)
    assert tries == 3 and status.timeout == tries * (20 + 2.0)
    assert h1.op_deadline == h1.step_since + status.timeout + 2.0  # type: ignore[operator]
    assert rig.engine.next_deadline(rig.now) is not None
    assert rig.engine.next_deadline(rig.now) <= h1.op_deadline  # type: ignore[operator]
    answer(rig, status, "on")
    off = last(rig, m.RunFenceStep)
    assert isinstance(off, m.RunFenceStep) and off.step == "off"
    assert off.timeout == tries * (2 * 20 + 60 + 2.0)  # request, power wait, status
    # No answer at all: at the deadline the step fails like any failure.
    deadline = h1.op_deadline
    assert deadline is not None
    keep_alive(rig, deadline - 1, ["h2", "h3"])
    assert h1.step == "off" and not rig.of(m.StepTimedOut)
    keep_alive(rig, deadline, ["h2", "h3"])
    timed_out = rig.of(m.StepTimedOut)
    assert [(t.step, t.op_id) for t in timed_out] == [("off", off.op_id)]
    assert "StepTimedOut" in rig.reasons("h1")
    assert "FenceOperationFailed" in rig.reasons("h1")
    assert h1.phase is Phase.ISOLATED and h1.op_id is None  # its only level failed
    assert not rig.of(m.ReleaseVMs)  # S1: a timeout is never proof
    # A late answer to the timed-out operation is stale.
    answer(rig, off, "off")
    assert h1.phase is Phase.ISOLATED and not rig.of(m.ReleaseVMs)


def test_soft_fence_and_power_check_time_out_too() -> None:
    rig = Rig(step_margin=1.0)
    cluster(rig)
    keep_alive(rig, 30, ["h2", "h3"])
    check = last(rig, m.CheckPower)
    assert isinstance(check, m.CheckPower)
    assert check.timeout == len(check.proxies) * (20 + 1.0)
    keep_alive(rig, rig.now + check.timeout + 1.0, ["h2", "h3"])
    soft = last(rig, m.SoftFence)  # "unknown" power: soft fencing, as for "on"
    assert isinstance(soft, m.SoftFence)
    assert soft.timeout == 30 + 1.0 + 1.0  # ssh timeoutSeconds default 30
    keep_alive(rig, rig.now + soft.timeout + 1.0, ["h2", "h3"])
    h1 = rig.engine.hosts["h1"]
    assert h1.phase in (Phase.NON_RESPONSIVE, Phase.FENCING)
    assert [t.step for t in rig.of(m.StepTimedOut)] == ["power-status", "soft-fence"]


def _off_sent(rig: Rig) -> m.RunFenceStep:
    status = _to_fencing(rig)
    answer(rig, status, "on")
    off = last(rig, m.RunFenceStep)
    assert isinstance(off, m.RunFenceStep) and off.step == "off"
    return off


def test_heartbeat_after_off_does_not_abandon_the_fence() -> None:
    rig = Rig()
    off = _off_sent(rig)
    h1 = rig.engine.hosts["h1"]
    rig.lease("h1", rig.now)  # the paused agent renewed just before "off" landed
    assert h1.phase is Phase.FENCING and h1.op_id == off.op_id
    assert "HeartbeatDuringFence" in rig.reasons("h1")
    answer(rig, off, "off")
    verify = last(rig, m.RunFenceStep)
    assert isinstance(verify, m.RunFenceStep) and verify.step == "verify"  # lease fresh
    answer(rig, verify, "off")
    assert h1.phase is Phase.REBOOTING
    assert rig.of(m.ReleaseVMs) and rig.engine.vms["web"].host != "h1"
    on = last(rig, m.RunFenceStep)
    assert isinstance(on, m.RunFenceStep) and on.step == "on"
    answer(rig, on, "on")
    # The lease is still fresh from before the power cut: not a sign of anything.
    rig.tick(rig.now + 1)
    assert h1.phase is Phase.REBOOTING
    rig.lease("h1", rig.now + 1, boot="b2")  # the host boots: judged by its boot ID
    assert h1.phase is Phase.UP
    assert "HostReturnedWithoutReboot" not in rig.reasons("h1")


def test_heartbeat_after_an_off_that_did_not_take_ends_the_outage() -> None:
    rig = Rig()
    off = _off_sent(rig)
    h1 = rig.engine.hosts["h1"]
    rig.lease("h1", rig.now)
    answer(rig, off, "on")  # the device refused: the host is alive
    assert h1.phase is Phase.UP and not rig.of(m.ReleaseVMs)
    assert rig.engine.vms["web"].host == "h1"


def test_off_not_sent_is_issued_again_or_dropped_on_the_heartbeat() -> None:
    rig = Rig()
    off = _off_sent(rig)
    h1 = rig.engine.hosts["h1"]
    # The shell re-read the Lease, fed the renewal first, and ran nothing.
    rig.lease("h1", rig.now)
    rig.feed(
        m.FenceStepResult(
            rig.now, "h1", off.op_id, {"h1-f0": AgentResult("error", "not run")}, sent=False
        )
    )
    assert h1.phase is Phase.UP and not rig.of(m.ReleaseVMs)


def test_writes_that_failed_are_issued_again_with_backoff() -> None:
    rig = Rig(write_retry_base=1.0, write_retry_max=4.0)
    cluster(rig)
    rig.tick(1.0)
    rig.feed(m.WriteFailed(1.0, "Host", "h1"))
    rig.feed(m.WriteFailed(1.0, "HAVirtualMachine", "nope", placement_changed=True))
    assert rig.engine.next_deadline(1.0) == 2.0
    before = len(rig.of(m.WriteHostStatus))
    rig.tick(1.5)
    assert len(rig.of(m.WriteHostStatus)) == before
    rig.tick(2.0)
    writes = rig.of(m.WriteHostStatus)[before:]
    assert [w.host for w in writes] == ["h1"]
    rig.feed(m.WriteFailed(2.0, "Host", "h1"))  # again: twice the delay
    assert ("Host", "h1") in rig.engine._unwritten
    assert rig.engine._unwritten[("Host", "h1")][1] == 4.0
    rig.tick(4.0)
    rig.feed(m.WriteLanded(4.0, "Host", "h1"))
    assert rig.engine._unwritten == {}  # landed; the unknown VM was dropped


def test_placement_writes_carry_the_view_they_were_decided_on() -> None:
    rig = Rig()
    cluster(rig)
    from tests.core.core_helpers import vm_spec

    rig.feed(m.VMObserved(0.0, "web", vm_spec(), None, resource_version="41"))
    rig.tick(1.0)
    write = [w for w in rig.of(m.WriteVMStatus) if w.placement_changed][-1]
    assert write.resource_version == "41" and write.view_host is None
    rig.feed(m.WriteLanded(1.0, "HAVirtualMachine", "web", "42", write.status.host, 1))
    vm = rig.engine.vms["web"]
    assert (vm.resource_version, vm.view_host, vm.view_epoch) == ("42", write.status.host, 1)


def test_lease_expiry_is_judged_from_when_the_operator_saw_it() -> None:
    rig = Rig()
    rig.host("h1")
    # The agent's clock is an hour behind: its renewTime says nothing about freshness.
    rig.feed(m.LeaseObserved(100.0, "h1", 100.0 - 3600, LEASE, "b1"))
    h1 = rig.engine.hosts["h1"]
    assert h1.phase is Phase.UP and h1.lease_expiry() == 100.0 + LEASE
    rig.feed(m.LeaseObserved(105.0, "h1", 100.0 - 3595, LEASE, "b1"))
    assert h1.lease_expiry() == 105.0 + LEASE
    rig.tick(105.0 + LEASE - 0.5)
    assert h1.phase is Phase.UP
    rig.tick(105.0 + LEASE)
    assert h1.phase is Phase.CONNECTING


def test_fired_is_bounded() -> None:
    rig = Rig()
    cluster(rig)
    for i in range(400):
        rig.feed(
            m.HostObserved(
                rig.now,
                "h1",
                rig.engine.hosts["h1"].spec.model_copy(update={"maintenance": i % 2 == 0}),
            )
        )
    assert len(rig.engine.machine.fired) <= 256


def test_no_abandon_rows_are_data() -> None:
    for phase in (Phase.FENCING, Phase.REBOOTING):
        t = lookup(phase, Trigger.HEARTBEAT_DURING_FENCE)
        assert t is not None and t.target is phase and t.effects == ("defer_heartbeat",)


@settings(max_examples=60, deadline=None)
@given(
    renew_at=st.lists(st.floats(0.0, 400.0), max_size=4),
    answers=st.lists(st.sampled_from(["on", "off", "error", None]), min_size=1, max_size=8),
)
def test_after_off_the_host_leaves_its_step_and_nothing_moves_without_proof(
    renew_at: list[float], answers: list[str | None]
) -> None:
    """S1/S5 with deadlines and the no-abandon rule: whatever the devices answer (or do
    not) and whenever the agent renews, every step ends by its deadline, no VM leaves h1
    unless off was verified, and no "off" is issued while h1's lease is fresh."""
    rig = Rig()
    _off_sent(rig)
    h1 = rig.engine.hosts["h1"]
    renewals = sorted(rig.now + r for r in renew_at)
    pending = list(answers)
    end = rig.now + 1200
    while rig.now < end:
        t = rig.now + 1
        while renewals and renewals[0] <= t:
            rig.lease("h1", renewals.pop(0))
        keep_alive(rig, t, ["h2", "h3"])
        step = [a for a in rig.of(m.RunFenceStep) if a.op_id == h1.op_id]
        if step and pending:
            power = pending.pop(0)
            if power is not None:
                answer(rig, step[-1], power)
        if h1.op_id is not None:
            assert h1.op_deadline is not None and rig.now < h1.op_deadline
    released = rig.of(m.ReleaseVMs)
    verified = [
        e for e in rig.of(m.EmitEvent) if e.reason == "FenceOperationSucceeded" and e.name == "h1"
    ]
    assert bool(released) <= bool(verified)
    assert h1.op_id is None or h1.op_deadline is not None


def test_a_power_on_that_failed_is_tried_again() -> None:
    rig = Rig(fence_retry_base=7.0)
    verify_off = _off_sent(rig)
    answer(rig, verify_off, "off")
    verify = last(rig, m.RunFenceStep)
    assert isinstance(verify, m.RunFenceStep) and verify.step == "verify"
    answer(rig, verify, "off")
    on = last(rig, m.RunFenceStep)
    assert isinstance(on, m.RunFenceStep) and on.step == "on"
    answer(rig, on, "error")
    assert "PowerOnFailed" in rig.reasons("h1")
    keep_alive(rig, rig.now + 6, ["h2", "h3"])
    assert last(rig, m.RunFenceStep) is on  # waits for the retry
    keep_alive(rig, rig.now + 1, ["h2", "h3"])
    again = last(rig, m.RunFenceStep)
    assert isinstance(again, m.RunFenceStep) and again.step == "on" and again is not on
