"""Fence proof other than a verified off: FenceConfirmation (S6) and self-fencing."""

from __future__ import annotations

from hafence.api.confirmation import FenceConfirmationStatus
from hafence.api.lease import peer_check_window
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
    outage_checked,
    place,
)


def isolate(rig: Rig) -> None:
    """h1's lease expires and every fence level fails."""
    outage_checked(rig, "unknown")
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


# Lease expiry + the agent's peer-check window + twice the granted timeout (the kernel
# pings once more when a crashed agent's file closes) + the margin.
PROOF_AT = LEASE + peer_check_window(LEASE) + 2 * 30 + 15


def self_fence_rig(**lease: object) -> Rig:
    rig = Rig(self_fence_safety_margin=15)
    cluster(rig, selfFencing={"enabled": True, "watchdogTimeoutSeconds": 30})
    rig.lease("h1", 0.0, **lease)  # type: ignore[arg-type]
    place(rig, "web", "h1")
    isolate(rig)
    return rig


def test_self_fence_needs_a_declared_device_and_waits_for_it_to_have_fired() -> None:
    rig = self_fence_rig(watchdog=30.0)
    keep_alive(rig, PROOF_AT - 1, ["h2", "h3"])
    assert rig.engine.hosts["h1"].phase is not Phase.SELF_FENCED
    assert rig.engine.vms["web"].host == "h1"
    keep_alive(rig, PROOF_AT + 1, ["h2", "h3"])
    assert rig.engine.hosts["h1"].phase is Phase.SELF_FENCED
    assert "SelfFenceProven" in rig.reasons("h1")
    release = last(rig, m.ReleaseVMs)
    assert isinstance(release, m.ReleaseVMs) and release.proof == "self-fence"


def test_no_device_no_proof_and_the_host_says_why() -> None:
    rig = self_fence_rig()
    assert "SelfFencingUnavailable" in rig.reasons("h1")
    writes = [w for w in rig.of(m.WriteHostStatus) if w.host == "h1"]
    conditions = {c.type: c for c in writes[-1].status.conditions}
    assert conditions["SelfFencingUnavailable"].status == "True"
    assert "no watchdog device" in conditions["SelfFencingUnavailable"].message
    keep_alive(rig, 500, ["h2", "h3"])
    assert rig.engine.hosts["h1"].phase is not Phase.SELF_FENCED
    assert rig.engine.vms["web"].host == "h1"


def test_device_armed_in_an_earlier_boot_is_no_proof() -> None:
    rig = self_fence_rig(watchdog=30.0, boot="b2", watchdog_boot="b1")
    keep_alive(rig, 500, ["h2", "h3"])
    assert rig.engine.vms["web"].host == "h1"


def test_agent_that_stopped_declaring_is_no_proof() -> None:
    rig = Rig(self_fence_safety_margin=15)
    cluster(rig, selfFencing={"enabled": True, "watchdogTimeoutSeconds": 30})
    rig.lease("h1", 0.0, watchdog=30.0)
    rig.lease("h1", 3.0)  # its last lease before the silence declares nothing
    place(rig, "web", "h1")
    isolate(rig)
    keep_alive(rig, 500, ["h2", "h3"])
    assert rig.engine.vms["web"].host == "h1"


def test_no_proof_while_most_peers_lost_the_api_server_too() -> None:
    """An API-server outage seen by most of the cluster: the agent may be feeding its
    device on its peers' word, so silence proves nothing until the peers have renewed
    without a gap for a lease + twice the timeout + the margin."""
    rig = self_fence_rig(watchdog=30.0)
    keep_alive(rig, 47, [])  # h2 and h3 silent too (last renewals at 30): all lost it
    back = 48.0
    keep_alive(rig, back + 200, ["h2", "h3"])
    assert rig.engine.hosts["h1"].phase is Phase.SELF_FENCED
    since = rig.engine.hosts["h1"].phase_since
    assert since is not None and since >= back + LEASE + 2 * 30 + 15


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


def land(rig: Rig, name: str) -> None:
    rig.feed(m.WriteLanded(rig.now, "FenceConfirmation", name))


def test_confirmations_are_forgotten_once_their_outage_is_over() -> None:
    rig = Rig()
    cluster(rig)
    place(rig, "web", "h1")
    confirm(rig, "early", 0.0)  # Rejected: h1 is Up, in no outage
    rig.tick(rig.now)
    assert "early" in rig.engine.confirmations  # its status has not landed yet
    land(rig, "early")
    rig.tick(rig.now)
    assert "early" not in rig.engine.confirmations
    isolate(rig)
    confirm(rig, "ok", rig.now)
    rig.feed(m.WriteFailed(rig.now, "FenceConfirmation", "ok", False, "transient: down"))
    confirm(rig, "again", rig.now)  # Rejected during the outage: it bears on it
    land(rig, "again")
    rig.tick(rig.now)
    assert {"ok", "again"} <= set(rig.engine.confirmations)
    # h1 is back (rebooted): the outage is over, but "ok"'s status is still unwritten.
    rig.lease("h1", rig.now, boot="b2")
    keep_alive(rig, rig.now + 3, ["h1", "h2", "h3"])
    assert rig.engine.hosts["h1"].phase is Phase.UP
    assert set(rig.engine.confirmations) == {"ok"}
    retry = [w for w in rig.of(m.WriteConfirmationStatus) if w.name == "ok"]
    assert len(retry) == 2 and retry[-1].status.phase == "Applied"
    land(rig, "ok")
    rig.tick(rig.now)
    assert not rig.engine.confirmations
    # Observed again (its status landed), it is only remembered: never applied twice (S6).
    writes = len(rig.of(m.WriteConfirmationStatus))
    rig.feed(m.ConfirmationObserved(rig.now, "ok", confirmation("h1"), 20.0, retry[-1].status))
    rig.tick(rig.now)
    assert len(rig.of(m.WriteConfirmationStatus)) == writes and not rig.engine.confirmations


def test_confirmations_of_a_deleted_host_are_forgotten() -> None:
    rig = Rig()
    cluster(rig)
    isolate(rig)
    confirm(rig, "ok", rig.now)
    land(rig, "ok")
    rig.tick(rig.now)
    assert "ok" in rig.engine.confirmations
    rig.feed(m.HostDeleted(rig.now, "h1"))
    rig.tick(rig.now)
    assert not rig.engine.confirmations
