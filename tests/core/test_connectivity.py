"""The broken-connectivity rule (core/connectivity.py) and "a host that cannot be fenced
asks for a person": every way of not fencing ends in a needs-person phase, with the
confirmation command, and a confirmation is accepted there (still once, and never for an
Up host or an earlier outage)."""

from __future__ import annotations

from typing import Literal

from hypothesis import given, settings
from hypothesis import strategies as st

from hafence.core import connectivity
from hafence.core import messages as m
from hafence.core.fencing_plan import AgentResult
from hafence.core.persist import host_status
from hafence.core.policy import ClusterPolicy, Settings
from hafence.core.records import HostRecord
from hafence.core.transitions import NEEDS_PERSON_PHASES, OUTAGE_PHASES, Phase
from tests.core.core_helpers import LEASE, Rig, confirmation, host_spec, place

State = Literal["up", "unreachable", "off", "maintenance"]
POLICY = ClusterPolicy()


def record(i: int, state: State) -> HostRecord:
    rec = HostRecord(name=f"h{i}", spec=host_spec())
    rec.phase = {
        "up": Phase.UP,
        "unreachable": Phase.NON_RESPONSIVE,
        "off": Phase.SOFT_FENCING,
        "maintenance": Phase.MAINTENANCE,
    }[state]
    rec.power_state = "off" if state == "off" else "on"
    return rec


states = st.lists(st.sampled_from(["up", "unreachable", "off", "maintenance"]), max_size=12)


@settings(max_examples=300, deadline=None)
@given(states, st.integers(1, 100))
def test_rule_is_a_strict_majority_of_hosts_without_proof_in_clusters_of_three_or_more(
    cluster: list[State], threshold: int
) -> None:
    pol = ClusterPolicy(connectivity_threshold_percent=threshold)
    seen = connectivity.assess(record(i, s) for i, s in enumerate(cluster))
    counted = sum(1 for s in cluster if s != "maintenance")
    unreachable = cluster.count("unreachable")
    assert (seen.counted, seen.unreachable, seen.proven_off) == (
        counted,
        unreachable,
        cluster.count("off"),
    )
    assert seen.broken(pol) == (counted >= 3 and unreachable * 100 > threshold * counted)
    assert not seen.broken(ClusterPolicy(skip_if_connectivity_broken=False))


@settings(max_examples=200, deadline=None)
@given(states, st.data())
def test_proof_of_power_off_never_makes_fencing_less_allowed(
    cluster: list[State], data: st.DataObject
) -> None:
    """Turning an unreachable host into one whose BMC said "off" never turns an allowed
    fence into a skipped one."""
    if "unreachable" not in cluster:
        return
    i = data.draw(st.sampled_from([k for k, s in enumerate(cluster) if s == "unreachable"]))
    before = connectivity.assess(record(k, s) for k, s in enumerate(cluster)).broken(POLICY)
    proven = [*cluster[:i], "off", *cluster[i + 1 :]]
    after = connectivity.assess(record(k, s) for k, s in enumerate(proven)).broken(POLICY)
    assert after <= before


def test_small_clusters_never_skip_and_the_default_fences_half() -> None:
    for cluster in (["unreachable"], ["unreachable", "up"], ["unreachable", "unreachable"]):
        assert not connectivity.assess(record(i, s) for i, s in enumerate(cluster)).broken(POLICY)
    half = ["unreachable", "unreachable", "up", "up"]
    assert not connectivity.assess(record(i, s) for i, s in enumerate(half)).broken(POLICY)
    most = ["unreachable", "unreachable", "unreachable", "up", "up"]
    assert connectivity.assess(record(i, s) for i, s in enumerate(most)).broken(POLICY)


# ---------------------------------------------------------------- needs a person

Way = Literal["levels-fail", "no-power-management", "fencing-disabled", "connectivity"]


def drive(rig: Rig, way: Way, end: float) -> None:
    """h1 (and for "connectivity" h2, h3 too) lose their heartbeat at 0 + LEASE; the
    others renew.  Every power action for a lost host is answered the way ``way`` says:
    its BMC dead, or answering "on"."""
    lost = {"h1", "h2", "h3"} if way == "connectivity" else {"h1"}
    seen = 0
    t = rig.now
    while t < end:
        t += 1
        for h in rig.engine.hosts:
            if h not in lost and int(t) % 3 == 0:
                rig.lease(h, t)
        rig.tick(t)
        while seen < len(rig.actions):
            a = rig.actions[seen]
            seen += 1
            if isinstance(a, m.CheckPower):
                rig.feed(m.PowerStatusResult(t, a.host, a.op_id, "unknown"))
            elif isinstance(a, m.SoftFence):
                rig.feed(m.SoftFenceResult(t, a.host, a.op_id, False, "ssh: timed out"))
            elif isinstance(a, m.RunFenceStep):
                power = "error" if way == "levels-fail" else "on"
                results = {g: AgentResult(power) for g in a.agents}  # type: ignore[arg-type]
                rig.feed(m.FenceStepResult(t, a.host, a.op_id, results))


def rig_for(way: Way) -> Rig:
    policies = {"a": ClusterPolicy(fencing_enabled=False)} if way == "fencing-disabled" else {}
    rig = Rig(Settings(startup_quiet_period=0.0, cluster_policies=policies))
    rig.engine.namespace = "dc1"
    n = 5 if way == "connectivity" else 2
    for i in range(1, n + 1):
        rig.host(f"h{i}", agents=0 if way == "no-power-management" else 1)
        rig.lease(f"h{i}", 0.0)
    place(rig, "web", "h1")
    return rig


@settings(max_examples=20, deadline=None)
@given(
    st.sampled_from(["levels-fail", "no-power-management", "fencing-disabled", "connectivity"]),
    st.integers(0, 100),
)
def test_a_host_that_cannot_be_fenced_asks_for_a_person_and_takes_a_confirmation(
    way: Way, wait: int
) -> None:
    rig = rig_for(way)
    drive(rig, way, 60 + wait)
    h1 = rig.engine.hosts["h1"]
    assert h1.phase in NEEDS_PERSON_PHASES, (way, h1.phase)
    assert rig.engine.vms["web"].host == "h1"  # nothing moved without proof (S1)
    isolated = [e for e in rig.of(m.EmitEvent) if e.name == "h1" and e.reason == "HostIsolated"]
    assert isolated and isolated[0].type == "Warning"
    assert (
        'kubectl annotate host h1 -n dc1 hafence.io/confirm-rebooted="<how you know it is off>"'
        in isolated[-1].message
    )
    assert "check on site" in isolated[-1].message.lower()
    assert any(a.key == "HostIsolated/h1" and a.active for a in rig.of(m.Alert))
    if way in ("fencing-disabled", "connectivity"):
        (cond,) = [c for c in host_status(h1, 1).conditions if c.type == "FencingAllowed"]
        assert (cond.type, cond.status) == ("FencingAllowed", "False")
        assert cond.reason.startswith("FenceSkipped") and cond.message
        assert not [s for s in rig.of(m.RunFenceStep) if s.host == "h1"]

    def confirm(name: str, created: float) -> str | None:
        rig.feed(m.ConfirmationObserved(rig.now, name, confirmation("h1"), created))
        return rig.engine.confirmations[name].phase

    assert h1.outage_start is not None
    assert confirm("before-outage", h1.outage_start - 5) == "Rejected"
    assert confirm("ok", rig.now) == "Applied"
    assert rig.engine.hosts["h1"].phase is Phase.MANUALLY_FENCED
    assert rig.engine.vms["web"].host not in (None, "h1")
    assert confirm("twice", rig.now) == "Rejected"


def test_a_confirmation_for_an_up_host_is_rejected() -> None:
    rig = rig_for("levels-fail")
    rig.feed(m.ConfirmationObserved(LEASE / 2, "early", confirmation("h2"), LEASE / 2))
    assert rig.engine.confirmations["early"].phase == "Rejected"


def test_a_skipped_host_is_fenced_once_the_policy_allows_it() -> None:
    """Isolated by policy is not the end: re-enabling fencing fences at the next tick."""
    rig = rig_for("fencing-disabled")
    drive(rig, "fencing-disabled", 60)
    assert rig.engine.hosts["h1"].phase is Phase.ISOLATED
    rig.engine.settings = Settings(startup_quiet_period=0.0)
    rig.tick(rig.now + 1)
    assert rig.engine.hosts["h1"].phase is Phase.FENCING
    assert [s.step for s in rig.of(m.RunFenceStep) if s.host == "h1"] == ["status"]


def test_two_host_cluster_fences_the_host_that_lost_its_network() -> None:
    rig = Rig()
    for h in ("h1", "h2"):
        rig.host(h)
        rig.lease(h, 0.0)
    drive(rig, "levels-fail", 40)  # BMC dead: but it was tried, not skipped
    assert [s.step for s in rig.of(m.RunFenceStep) if s.host == "h1"][:1] == ["status"]
    assert not [r for r in rig.reasons("h1") if r.startswith("FenceSkipped")]
    assert rig.engine.hosts["h1"].phase in OUTAGE_PHASES
