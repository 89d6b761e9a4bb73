"""Fence proof other than a verified off: FenceConfirmation (S6) and self-fencing."""

from __future__ import annotations

from hafence.api.confirmation import FenceConfirmationStatus
from hafence.core import messages as m
from hafence.core.transitions import Phase
from tests.core.core_helpers import (
    LEASE,
    Rig,
    answer,
    cluster,
    confirmation,
    keep_alive,
    last,
    place,
)


def isolate(rig: Rig) -> None:
    """h1's lease expires and every fence level fails."""
    keep_alive(rig, 30, ["h2", "h3"])
    check = last(rig, m.CheckPower)
    assert isinstance(check, m.CheckPower)
    rig.feed(m.PowerStatusResult(rig.now, "h1", check.op_id, "unknown"))
    soft = last(rig, m.SoftFence)
    assert isinstance(soft, m.SoftFence)
    rig.feed(m.SoftFenceResult(rig.now, "h1", soft.op_id, False, "ssh: timed out"))
    step = last(rig, m.RunFenceStep)
    assert isinstance(step, m.RunFenceStep)
    answer(rig, step, "error")
    assert rig.engine.hosts["h1"].phase is Phase.ISOLATED


def confirm(rig: Rig, name: str, created: float) -> m.WriteConfirmationStatus:
    rig.feed(m.ConfirmationObserved(rig.now, name, confirmation("h1"), created))
    writes = [w for w in rig.of(m.WriteConfirmationStatus) if w.name == name]
    assert len(writes) == 1
    return writes[0]


def test_confirmation_rules() -> None:
    rig = Rig()
    cluster(rig)
    place(rig, "web", "h1")
    early = confirm(rig, "early", 0.0)
    assert early.status.phase == "Rejected" and "fresh heartbeat" in (early.status.message or "")
    isolate(rig)
    assert rig.engine.vms["web"].host == "h1"
    stale = confirm(rig, "stale", LEASE - 5)  # made before the outage began
    assert stale.status.phase == "Rejected" and "stale" in (stale.status.message or "")
    ok = confirm(rig, "ok", rig.now)
    assert ok.status.phase == "Applied" and ok.status.outage_id == "h1-10"
    assert ok.status.released_vms == ["web"]
    assert rig.engine.hosts["h1"].phase is Phase.MANUALLY_FENCED
    assert rig.engine.vms["web"].host in ("h2", "h3")
    again = confirm(rig, "again", rig.now)
    assert again.status.phase == "Rejected" and "already proven off" in (again.status.message or "")
    ghost = rig.feed(m.ConfirmationObserved(rig.now, "ghost", confirmation("nope"), rig.now))
    assert any(
        isinstance(a, m.WriteConfirmationStatus) and a.status.phase == "Rejected" for a in ghost
    )


def test_confirmation_already_decided_is_not_reapplied() -> None:
    rig = Rig()
    cluster(rig)
    place(rig, "web", "h1")
    isolate(rig)
    done = FenceConfirmationStatus(phase="Applied", outage_id="h1-10")
    rig.feed(m.ConfirmationObserved(rig.now, "old", confirmation("h1"), rig.now, done))
    assert rig.engine.hosts["h1"].phase is Phase.ISOLATED
    assert not rig.of(m.WriteConfirmationStatus)
    # A second confirmation for the outage an applied one already covers is rejected (S6).
    second = confirm(rig, "second", rig.now)
    assert second.status.phase == "Rejected" and "already confirmed by old" in (
        second.status.message or ""
    )


def test_self_fence_needs_an_armed_watchdog_and_waits_expiry_plus_timeout_plus_margin() -> None:
    for armed in (False, True):
        rig = Rig(self_fence_safety_margin=15)
        cluster(rig, selfFencing={"enabled": True, "watchdogTimeoutSeconds": 30})
        rig.lease("h1", 0.0, watchdog=30.0 if armed else None)
        place(rig, "web", "h1")
        isolate(rig)
        keep_alive(rig, LEASE + 30 + 15 - 1, ["h2", "h3"])
        assert rig.engine.hosts["h1"].phase is Phase.ISOLATED
        keep_alive(rig, LEASE + 30 + 15, ["h2", "h3"])
        if armed:
            assert rig.engine.hosts["h1"].phase is Phase.SELF_FENCED
            assert "SelfFenceProven" in rig.reasons("h1")
            release = last(rig, m.ReleaseVMs)
            assert isinstance(release, m.ReleaseVMs) and release.proof == "self-fence"
        else:
            keep_alive(rig, 500, ["h2", "h3"])
            assert rig.engine.hosts["h1"].phase is not Phase.SELF_FENCED
            assert rig.engine.vms["web"].host == "h1"


def test_self_fencing_disabled_in_spec_is_no_proof() -> None:
    rig = Rig()
    cluster(rig)  # selfFencing disabled
    rig.lease("h1", 0.0, watchdog=30.0)  # even if the agent claims an armed watchdog
    place(rig, "web", "h1")
    isolate(rig)
    keep_alive(rig, 500, ["h2", "h3"])
    assert rig.engine.vms["web"].host == "h1"


def test_returning_without_reboot_after_confirmation_warns() -> None:
    rig = Rig()
    cluster(rig)
    place(rig, "web", "h1")
    isolate(rig)
    confirm(rig, "ok", rig.now)
    rig.lease("h1", rig.now + 1, boot="b1")
    assert rig.engine.hosts["h1"].phase is Phase.UP
    assert "HostReturnedWithoutReboot" in rig.reasons("h1")
    assert rig.engine.vms["web"].host != "h1"
