"""A host's escalation through the engine, input by input (no simulator)."""

from __future__ import annotations

from hafence.core import messages as m
from hafence.core.transitions import Phase
from tests.core.core_helpers import (
    LEASE,
    Rig,
    answer,
    cluster,
    host_spec,
    keep_alive,
    last,
    outage_checked,
    place,
)


def test_full_escalation_to_restart_elsewhere() -> None:
    rig = Rig(connecting_grace=10, connecting_grace_per_vm=1, soft_fence_timeout=20)
    cluster(rig)
    place(rig, "web", "h1", prio="High")
    place(rig, "batch", "h1", ha=False)
    keep_alive(rig, LEASE, ["h2", "h3"])
    h1 = rig.engine.hosts["h1"]
    assert h1.phase is Phase.CONNECTING and h1.outage_id == "h1-10"
    # The power status is asked at once, in parallel with the grace (issue #13).
    check = last(rig, m.CheckPower)
    assert isinstance(check, m.CheckPower) and check.agents == ("h1-f0",)
    rig.feed(m.PowerStatusResult(rig.now, "h1", check.op_id, "on"))
    keep_alive(rig, LEASE + 11, ["h2", "h3"])
    assert h1.phase is Phase.CONNECTING  # grace = 10 + 1 per VM = 12
    assert not rig.of(m.SoftFence)
    keep_alive(rig, LEASE + 12, ["h2", "h3"])
    soft = last(rig, m.SoftFence)
    assert isinstance(soft, m.SoftFence)
    rig.feed(m.SoftFenceResult(rig.now, "h1", soft.op_id, True))
    keep_alive(rig, rig.now + 19, ["h2", "h3"])
    assert h1.phase is Phase.SOFT_FENCING and not rig.of(m.RunFenceStep)
    keep_alive(rig, rig.now + 1, ["h2", "h3"])
    assert rig.engine.vms["web"].phase == "Unknown"  # NonResponsive: VMs Unknown
    steps = []
    for power in ("on", "off", "off"):  # status, off, verify
        step = last(rig, m.RunFenceStep)
        assert isinstance(step, m.RunFenceStep)
        steps.append((step.step, step.operation))
        assert not rig.of(m.PlaceVM)  # S1: nothing moves before off is verified
        answer(rig, step, power)
    assert steps == [("status", "status"), ("off", "off"), ("verify", "status")]
    assert h1.phase is Phase.REBOOTING and h1.proof == "fence"
    on = last(rig, m.RunFenceStep)
    assert isinstance(on, m.RunFenceStep) and on.step == "on"
    release = last(rig, m.ReleaseVMs)
    assert isinstance(release, m.ReleaseVMs) and release.vms == ("batch", "web")
    placed = rig.of(m.PlaceVM)
    assert [(p.vm, p.restart) for p in placed] == [("web", True)]
    assert placed[0].host in ("h2", "h3") and placed[0].previous_host is None
    assert rig.engine.vms["batch"].phase == "Down"  # non-HA VMs stay Down
    assert "HAVMRestarted" in rig.reasons("web")
    # The host returns with a new boot ID: Up, nothing else moves.
    rig.lease("h1", rig.now + 30, boot="b2")
    assert h1.phase is Phase.UP and h1.outage_id is None
    assert len(rig.of(m.PlaceVM)) == 1


def test_power_off_skips_soft_fencing() -> None:
    rig = Rig()
    cluster(rig)
    outage_checked(rig, "off")
    assert not rig.of(m.SoftFence)
    assert "SoftFenceSkipped" in rig.reasons("h1")
    assert rig.engine.hosts["h1"].phase is Phase.FENCING


def test_no_fence_operation_while_the_lease_is_fresh() -> None:
    rig = Rig()
    cluster(rig)
    outage_checked(rig, "off")
    status = last(rig, m.RunFenceStep)
    assert isinstance(status, m.RunFenceStep)
    # The agent renews (not yet ready) while the status step is in flight.
    rig.lease("h1", rig.now, boot="b1", ready=False)
    answer(rig, status, "on")
    assert last(rig, m.RunFenceStep) is status  # S5: "off" held back
    keep_alive(rig, rig.now + LEASE - 1, ["h2", "h3"])
    assert last(rig, m.RunFenceStep) is status
    keep_alive(rig, rig.now + 2, ["h2", "h3"])  # lease expired again: same outage goes on
    off = last(rig, m.RunFenceStep)
    assert isinstance(off, m.RunFenceStep) and off.step == "off"
    assert off.outage_id == status.outage_id


def test_stale_results_are_ignored() -> None:
    rig = Rig()
    cluster(rig)
    keep_alive(rig, 30, ["h2", "h3"])
    check = last(rig, m.CheckPower)
    assert isinstance(check, m.CheckPower)
    rig.feed(m.PowerStatusResult(rig.now, "h1", "h1-10/0/power-status/999", "off"))
    assert rig.engine.hosts["h1"].phase is Phase.SOFT_FENCING


def test_every_level_failing_isolates_and_retries_with_backoff() -> None:
    rig = Rig(fence_retry_base=60, fence_retry_factor=2)
    cluster(rig)
    rig.host("h1", agents=2)  # re-observed with two levels
    place(rig, "web", "h1")
    outage_checked(rig, "off")
    for level in (1, 2):
        step = last(rig, m.RunFenceStep)
        assert isinstance(step, m.RunFenceStep) and step.level == level
        answer(rig, step, "error")
    h1 = rig.engine.hosts["h1"]
    assert h1.phase is Phase.ISOLATED and h1.next_retry == rig.now + 60
    assert any(a.active and a.key == "HostIsolated/h1" for a in rig.of(m.Alert))
    assert rig.engine.vms["web"].host == "h1"  # nothing moves
    n = len(rig.of(m.RunFenceStep))
    keep_alive(rig, rig.now + 59, ["h2", "h3"])
    assert len(rig.of(m.RunFenceStep)) == n
    keep_alive(rig, rig.now + 1, ["h2", "h3"])
    retry = last(rig, m.RunFenceStep)
    assert isinstance(retry, m.RunFenceStep) and retry.attempt == 2 and retry.level == 1


def test_reboot_during_the_outage_keeps_vms_in_place() -> None:
    # The new boot proves the VMs died, but the agent may have restarted them in place
    # before the operator sees the heartbeat: moving them could run them twice.
    rig = Rig()
    cluster(rig)
    place(rig, "web", "h1")
    keep_alive(rig, 25, ["h2", "h3"])
    assert rig.engine.hosts["h1"].phase is Phase.SOFT_FENCING
    rig.lease("h1", rig.now, boot="b2")
    assert rig.engine.hosts["h1"].phase is Phase.UP
    assert "HostRebooted" in rig.reasons("h1")
    assert not rig.of(m.ReleaseVMs) and not rig.of(m.PlaceVM)
    assert rig.engine.vms["web"].host == "h1"


def test_heartbeat_back_with_same_boot_keeps_vms() -> None:
    rig = Rig()
    cluster(rig)
    place(rig, "web", "h1")
    keep_alive(rig, 25, ["h2", "h3"])
    rig.lease("h1", rig.now, boot="b1")
    assert rig.engine.hosts["h1"].phase is Phase.UP
    assert not rig.of(m.ReleaseVMs) and rig.engine.vms["web"].host == "h1"


def test_maintenance_is_never_fenced() -> None:
    rig = Rig()
    cluster(rig)
    rig.feed(
        m.HostObserved(
            0.0, "h1", rig.engine.hosts["h1"].spec.model_copy(update={"maintenance": True})
        )
    )
    keep_alive(rig, 200, ["h2", "h3"])
    assert rig.engine.hosts["h1"].phase is Phase.MAINTENANCE
    assert not rig.of(m.CheckPower) and not rig.of(m.RunFenceStep)


def test_fencing_disabled_and_concurrency_limit() -> None:
    from hafence.core.policy import ClusterPolicy, Settings

    settings = Settings(
        startup_quiet_period=0,
        max_concurrent_fences=1,
        cluster_policies={"b": ClusterPolicy(fencing_enabled=False)},
    )
    rig = Rig(settings)
    for i in range(1, 8):
        rig.host(f"h{i}")
        rig.lease(f"h{i}", 0.0)
    rig.host("x1", cluster="b")
    rig.lease("x1", 0.0)
    rig.host("x2", cluster="b")
    rig.lease("x2", 0.0)
    rig.host("x3", cluster="b")
    rig.lease("x3", 0.0)
    alive = ["h3", "h4", "h5", "h6", "h7", "x2", "x3"]
    keep_alive(rig, 23, alive)
    for c in rig.of(m.CheckPower):
        rig.feed(m.PowerStatusResult(rig.now, c.host, c.op_id, "off"))
    fencing = {h for h, r in rig.engine.hosts.items() if r.phase is Phase.FENCING}
    assert fencing == {"h1"}
    assert "FenceDelayedConcurrency" in rig.reasons("h2")
    assert "FenceSkippedDisabled" in rig.reasons("x1")
    assert {s.host for s in rig.of(m.RunFenceStep)} == {"h1"}


def test_proxy_preference() -> None:
    rig = Rig()
    cluster(rig, powerManagement={"proxyPreference": ["cluster", "operator"]})
    rig.host("y1", cluster="b")
    rig.lease("y1", 0.0)
    keep_alive(rig, 30, ["h2", "h3", "y1"])
    check = last(rig, m.CheckPower)
    assert isinstance(check, m.CheckPower) and check.proxies == ("h2", "h3", "operator")


def test_next_deadline_points_at_the_grace_end() -> None:
    rig = Rig(connecting_grace=10, connecting_grace_per_vm=0)
    cluster(rig, n=1)
    assert rig.engine.next_deadline(0.0) == LEASE
    rig.tick(LEASE)
    assert rig.engine.next_deadline(LEASE) == LEASE + 10


def test_a_renewal_that_moves_no_deadline_earlier_lets_the_shell_sleep() -> None:
    """Engine.wakes: what the operator's monitor ticks for between deadlines."""
    rig = Rig(connecting_grace=10, connecting_grace_per_vm=0)
    cluster(rig, n=2)
    rig.tick(0.0)
    scheduled = rig.engine.next_deadline(0.0)
    assert scheduled == LEASE
    # A routine renewal pushes its host's expiry later: no tick needed before LEASE.
    ev = m.LeaseObserved(3.0, "h1", 3.0, LEASE, "b1", None, True)
    assert not rig.engine.wakes(ev, rig.feed(ev), scheduled)
    # A renewal with a much shorter lease brings its expiry before what was scheduled.
    short = m.LeaseObserved(4.0, "h2", 4.0, 2.0, "b1", None, True)
    assert rig.engine.wakes(short, rig.feed(short), scheduled)
    # Any other input, or any input that acted, always wakes it.
    assert rig.engine.wakes(m.HostObserved(5.0, "h1", host_spec()), [], scheduled)
    assert rig.engine.wakes(ev, [m.Alert("k", True, "x")], scheduled)


def test_host_without_ssh_skips_soft_fencing_and_goes_on_to_fencing() -> None:
    """What the README promises for a Host without spec.ssh: no SSH attempt, a
    SoftFenceFailed event, then NonResponsive and fencing as usual."""
    rig = Rig(connecting_grace=2, connecting_grace_per_vm=0)
    cluster(rig)
    rig.host("h1", ssh=None)  # the same host, its ssh block removed
    place(rig, "web", "h1")
    outage_checked(rig, "on", until=LEASE + 3)
    assert not rig.of(m.SoftFence)
    assert "SoftFenceFailed" in rig.reasons("h1")
    step = last(rig, m.RunFenceStep)
    assert isinstance(step, m.RunFenceStep) and step.step == "status"
    assert rig.engine.vms["web"].phase == "Unknown"
