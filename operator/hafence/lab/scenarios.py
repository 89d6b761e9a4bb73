"""The lab's failure scenarios: what is broken, what must follow, and the checks.

Each scenario picks its victims among the hosts running VMs right now, injects the
fault, waits for the outcome (bounded), and checks it against the real parts: the
power actions each simulated BMC recorded, the VM processes the checker sampled, the
resources and the soft-fence requests the virtual hosts' shells received.  Timing is
recorded (for the timeline and ``bench/ttr.py``) but never checked.

============  ==========================================================  ==============
scenario      fault                                                       expected
============  ==========================================================  ==============
agent-crash   the host's agent is SIGKILLed; its VMs keep running         soft fence
network-cut   the host's agent loses the API server; its BMC answers      hard fence
power-loss    the host and its BMC lose power                             Isolated, then
                                                                          confirmation
rack-failure  a rack's PDU fails: its hosts lose power, BMCs answer       hard fences
============  ==========================================================  ==============
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from hafence.lab.resources import FENCE_AGENT_TIMEOUT
from hafence.lab.runner import RACK_SIZE, Lab, LabError
from hafence.lab.timeline import POWER_ACTIONS

CONFIRM_ANNOTATION = "hafence.io/confirm-rebooted"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class ScenarioResult:
    scenario: str
    victims: list[str]
    t0: float = 0.0  # monotonic time of the fault
    checks: list[Check] = field(default_factory=list)
    # Seconds after the fault: first time each host phase / milestone was seen.
    times: dict[str, float] = field(default_factory=dict)
    # Seconds after the fault at which the configured timeouts allowed each step.
    allowed: dict[str, float] = field(default_factory=dict)
    bmc_actions: dict[str, list[str]] = field(default_factory=dict)  # power actions
    soft_fenced: list[str] = field(default_factory=list)
    moves: dict[str, list[str]] = field(default_factory=dict)  # VM -> hosts before/after
    pids_before: dict[str, int] = field(default_factory=dict)  # VM -> its process at the fault
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(c.ok for c in self.checks)

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks.append(Check(name, bool(ok), detail))

    def steps(self) -> dict[str, float | None]:
        """Durations of the recovery steps, in seconds (None: the step did not happen)."""
        t = self.times

        def span(a: str | None, b: str | None) -> float | None:
            if a is None or b is None or a not in t or b not in t:
                return None
            return t[b] - t[a]

        def first(*keys: str) -> str | None:
            return next((k for k in keys if k in t), None)

        soft_end = "Up" if self.scenario == "agent-crash" else first("NonResponsive", "Fencing")
        proof = first("Rebooting", "ManuallyFenced")
        release = span(proof, "vm_running")
        if len(self.victims) > 1:
            # Each host's VMs from that host's own proof; the slowest host counts.
            per_host = [
                t[f"{v}.vm_running"] - t[f"{v}.{p}"]
                for v in self.victims
                for p in ("Rebooting", "ManuallyFenced")
                if f"{v}.vm_running" in t and f"{v}.{p}" in t
            ]
            release = max(per_host) if per_host else None
        return {
            "detection": t.get("Connecting"),
            "grace": span("Connecting", "SoftFencing"),
            "soft_fence": span("SoftFencing", soft_end),
            "fence": span(first("NonResponsive", "Fencing"), "Rebooting"),
            "release_to_running": release,
            "confirm_to_running": span("confirm", "vm_running"),
            "total": t.get("Up") if self.scenario == "agent-crash" else t.get("vm_running"),
        }

    def overheads(self) -> dict[str, float | None]:
        """Time spent beyond what the configured timeouts allowed, per step."""
        t, a = self.times, self.allowed
        out: dict[str, float | None] = {}
        if "Connecting" in t and "Connecting" in a:
            out["detection"] = t["Connecting"] - a["Connecting"]
        if "SoftFencing" in t and "SoftFencing" in a and "Connecting" in t:
            # The grace counts from when the operator saw the lease expire.
            out["grace"] = (t["SoftFencing"] - t["Connecting"]) - (
                a["SoftFencing"] - a["Connecting"]
            )
        steps = self.steps()
        # Steps with no configured wait: all of their time is the operator's work
        # (plus the agent's start for a soft fence, and the BMC's round trips).
        for k in ("soft_fence", "fence", "release_to_running", "confirm_to_running"):
            v = steps[k]
            out[k] = None if v is None else v - a.get(k, 0.0)
        present = [v for v in out.values() if v is not None]
        out["total"] = sum(present) if present else None
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScenarioResult:
        """Back from :meth:`to_json` (for re-reading saved benchmark results)."""
        return cls(
            scenario=data["scenario"],
            victims=list(data["victims"]),
            checks=[Check(**c) for c in data["checks"]],
            times=dict(data["times"]),
            allowed=dict(data["allowed"]),
            bmc_actions=dict(data["bmc_actions"]),
            soft_fenced=list(data["soft_fenced"]),
            moves=dict(data["moves"]),
            pids_before=dict(data.get("pids_before", {})),
            error=data.get("error"),
        )

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["steps"] = {k: None if v is None else round(v, 3) for k, v in self.steps().items()}
        out["ok"] = self.ok
        out["times"] = {k: round(v, 3) for k, v in self.times.items()}
        out["allowed"] = {k: round(v, 3) for k, v in self.allowed.items()}
        out.pop("t0")
        return out


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    min_hosts: int
    run: Callable[[Lab, ScenarioResult], None]


# -- shared steps -------------------------------------------------------------------


def pick_host(lab: Lab) -> str:
    """The host with a running non-HA VM and an HA VM, else the one running most VMs."""
    assert lab.dc is not None
    best: tuple[int, int, str] | None = None
    for name in lab.dc.hosts:
        vms = lab.vms_on(name)
        score = (-int(any(not ha for ha in vms.values())), -sum(vms.values()), name)
        if sum(vms.values()) and (best is None or score < best):
            best = score
    if best is None:
        raise LabError("no host runs an HA VM: nothing to fail")
    return best[2]


def pick_rack(lab: Lab) -> list[str]:
    assert lab.dc is not None
    racks: dict[str, list[str]] = {}
    for host in lab.dc.hosts.values():
        racks.setdefault(host.rack, []).append(host.name)
    total = len(lab.dc.hosts)
    best: tuple[int, int, str] | None = None
    for rack, names in racks.items():
        if len(names) != RACK_SIZE or 2 * len(names) >= total:
            continue
        vms = [lab.vms_on(n) for n in names]
        pets = sum(1 for v in vms for ha in v.values() if not ha)
        has = sum(1 for v in vms for ha in v.values() if ha)
        score = (-pets, -has, rack)
        if has and (best is None or score < best):
            best = score
    if best is None:
        raise LabError("no rack of 2 hosts runs HA VMs and is less than half the hosts")
    return racks[best[2]]


def _before(lab: Lab, victims: list[str], result: ScenarioResult) -> tuple[set[str], set[str]]:
    assert lab.checker is not None
    ha: set[str] = set()
    pets: set[str] = set()
    for v in victims:
        for name, is_ha in lab.vms_on(v).items():
            (ha if is_ha else pets).add(name)
            result.moves[name] = [v]
    for s in lab.checker.sightings:
        if s.name in result.moves and s.gone is None and s.host in victims:
            result.pids_before[s.name] = s.pid
    return ha, pets


def _new_process(lab: Lab, name: str, result: ScenarioResult) -> str | None:
    """The host where ``name`` runs in exactly one process, a new one; else None.

    A failed host that was fenced and rebooted is a fine place for it: what matters is
    one process, started after the fault (the old one is gone), that the status agrees.
    """
    assert lab.checker is not None and lab.watchers is not None
    hosts = lab.checker.running().get(name, [])
    if len(hosts) != 1 or hosts[0] is None:
        return None
    live = [s for s in lab.checker.sightings if s.name == name and s.gone is None]
    if len(live) != 1 or live[0].pid == result.pids_before.get(name):
        return None
    phase, host = lab.watchers.vm_state.get(name, (None, None))
    if phase != "Running" or host != hosts[0]:
        return None
    return hosts[0]


def _recovered(lab: Lab, names: set[str], result: ScenarioResult) -> bool:
    return all(_new_process(lab, n, result) for n in names)


def _phase_seen(lab: Lab, host: str, phase: str, after: float) -> float | None:
    for e in lab.timeline.since(after):
        if e.kind == "host" and e.subject == host and e.data.get("phase") == phase:
            return e.t
    return None


def _record_times(lab: Lab, result: ScenarioResult, ha: set[str]) -> None:
    t0 = result.t0
    phases = (
        "Connecting",
        "SoftFencing",
        "NonResponsive",
        "Fencing",
        "Rebooting",
        "Isolated",
        "ManuallyFenced",
        "Up",
    )
    for phase in phases:
        seen = {v: _phase_seen(lab, v, phase, t0) for v in result.victims}
        for victim, t in seen.items():
            if t is not None and len(seen) > 1:
                result.times.setdefault(f"{victim}.{phase}", t - t0)
        if all(t is not None for t in seen.values()):
            # Several victims: when the last of them got there.
            result.times.setdefault(phase, max(t for t in seen.values() if t is not None) - t0)
    for e in lab.timeline.since(t0):
        if e.kind == "bmc" and e.subject in result.victims and e.data.get("action") == "off":
            result.times.setdefault("bmc_off", e.t - t0)
        if e.kind == "ssh" and e.subject in result.victims:
            result.times.setdefault("soft_fence_done", e.t - t0)
    assert lab.checker is not None
    starts = {n: lab.checker.first_start(n, t0, set()) for n in ha}
    if ha and all(s is not None for s in starts.values()):
        result.times["vm_running"] = max(s.first_seen for s in starts.values() if s) - t0
    if len(result.victims) > 1:
        for v in result.victims:
            mine = [s for n, s in starts.items() if s and result.moves.get(n, [None])[0] == v]
            if mine:
                result.times[f"{v}.vm_running"] = max(s.first_seen for s in mine) - t0


def _power_actions(lab: Lab, result: ScenarioResult) -> None:
    assert lab.dc is not None
    for name, host in lab.dc.hosts.items():
        acts = [
            a.name
            for a in list(host.bmc.actions)
            if a.time >= result.t0 and a.name in POWER_ACTIONS
        ]
        result.bmc_actions[name] = acts
    result.soft_fenced = sorted({h for t, h in lab.dc.soft_fence_requests if t >= result.t0})


def _allowed_detection(lab: Lab, result: ScenarioResult, expiry: float | None) -> None:
    if expiry is None:
        return
    pol = lab.policy
    result.allowed["Connecting"] = expiry - result.t0
    # The grace grows with the VMs of each host; with several victims, the busiest.
    per_host = [
        sum(1 for where in result.moves.values() if where[:1] == [v]) for v in result.victims
    ]
    result.allowed["SoftFencing"] = result.allowed["Connecting"] + pol.grace(max(per_host))


def _check_common(lab: Lab, result: ScenarioResult, ha: set[str], pets: set[str]) -> None:
    assert lab.checker is not None and lab.watchers is not None
    procs = lab.checker.running()
    for n in sorted(ha):
        hosts = procs.get(n, [])
        result.moves[n] = result.moves.get(n, [])[:1] + [h or "?" for h in hosts]
        result.check(
            f"HA VM {n} runs in exactly one process, restarted after the fault",
            _new_process(lab, n, result) is not None,
            f"processes on {hosts}, before: pid {result.pids_before.get(n)}",
        )
    for n in sorted(pets):
        phase, _ = lab.watchers.vm_state.get(n, (None, None))
        result.check(
            f"non-HA VM {n} stays down",
            not procs.get(n) and phase != "Running",
            f"processes on {procs.get(n, [])}, phase {phase}",
        )
    result.check(
        "no VM ever ran on two hosts at once (sampled every 100 ms)",
        not lab.checker.violations,
        "; ".join(v.describe() for v in lab.checker.violations),
    )


def _no_early_start(
    lab: Lab, result: ScenarioResult, ha: set[str], proof_time: float | None, proof: str
) -> None:
    """S1: no HA VM of a victim starts elsewhere before the victim is proven off."""
    assert lab.checker is not None
    if proof_time is None:
        result.check(f"VMs moved only after {proof}", False, f"{proof} never seen")
        return
    early = lab.checker.started_between(ha, result.t0, proof_time)
    result.check(
        f"no VM restarted elsewhere before {proof}",
        not early,
        ", ".join(f"{s.name} on {s.host} at +{s.first_seen - result.t0:.1f}s" for s in early),
    )


# -- the scenarios ------------------------------------------------------------------


def agent_crash(lab: Lab, result: ScenarioResult) -> None:
    assert lab.dc is not None and lab.checker is not None
    victim = pick_host(lab)
    result.victims = [victim]
    vms = lab.vms_on(victim)
    pids = {s.name: s.pid for s in lab.checker.sightings if s.host == victim and s.gone is None}
    for n in vms:
        result.moves[n] = [victim]
    result.t0 = lab.timeline.fault(victim, "agent killed (SIGKILL); its VMs keep running")
    lab.dc.crash_agent(victim)
    _allowed_detection(lab, result, lab.lease_expiry(victim))
    pol = lab.policy
    budget = lab.config.agent_lease + pol.connecting_grace_max + pol.soft_fence_timeout + 30
    lab.wait_for(
        f"{victim} Connecting", lambda: _phase_seen(lab, victim, "Connecting", result.t0), budget
    )
    lab.wait_for(
        f"{victim}'s heartbeat back (soft fence)",
        lambda: _phase_seen(lab, victim, "Up", result.t0),
        budget,
    )
    _record_times(lab, result, set())
    _power_actions(lab, result)
    result.check(
        f"soft fence (agent restart over SSH) reached {victim}",
        result.soft_fenced == [victim],
        f"soft-fenced: {result.soft_fenced}",
    )
    result.check(
        "no power action reached any BMC",
        not any(result.bmc_actions.values()),
        f"{result.bmc_actions}",
    )
    result.check(
        f"{victim} went Connecting → SoftFencing → Up",
        all(k in result.times for k in ("Connecting", "SoftFencing", "Up")),
        f"phases seen: {sorted(result.times)}",
    )
    now = {s.name: s.pid for s in lab.checker.sightings if s.host == victim and s.gone is None}
    result.check(
        f"the VMs of {victim} kept running, same processes",
        all(now.get(n) == p for n, p in pids.items()) and bool(pids),
        f"before {pids}, after {now}",
    )
    result.check(
        "no VM ever ran on two hosts at once (sampled every 100 ms)",
        not lab.checker.violations,
        "; ".join(v.describe() for v in lab.checker.violations),
    )


def network_cut(lab: Lab, result: ScenarioResult) -> None:
    assert lab.dc is not None
    victim = pick_host(lab)
    result.victims = [victim]
    ha, pets = _before(lab, [victim], result)
    old_boot = lab.dc.hosts[victim].boot_id
    result.t0 = lab.timeline.fault(
        victim, "network cut: the agent loses the API server (SSH too); the BMC still answers"
    )
    lab.dc.cut_network(victim)
    _allowed_detection(lab, result, lab.lease_expiry(victim))
    lab.wait_for(
        f"HA VMs of {victim} ({', '.join(sorted(ha))}) running elsewhere",
        lambda: _recovered(lab, ha, result),
        120,
    )
    lab.wait_for(
        f"{victim} back Up after its reboot",
        lambda: (
            lab.dc is not None
            and lab.dc.hosts[victim].boot_id != old_boot
            and _phase_seen(lab, victim, "Up", result.t0)
        ),
        60,
    )
    _record_times(lab, result, ha)
    _power_actions(lab, result)
    acts = result.bmc_actions
    result.check(f"power off reached {victim}'s BMC", "off" in acts[victim], f"{acts[victim]}")
    others = {h: a for h, a in acts.items() if h != victim and a}
    result.check("no power action reached another host's BMC", not others, f"{others}")
    off = next(
        (
            e.t
            for e in lab.timeline.since(result.t0)
            if e.kind == "bmc" and e.subject == victim and e.data.get("action") == "off"
        ),
        None,
    )
    _no_early_start(lab, result, ha, off, f"{victim}'s power off")
    _check_common(lab, result, ha, pets)


def power_loss(lab: Lab, result: ScenarioResult) -> None:
    assert lab.dc is not None and lab.watchers is not None
    victim = pick_host(lab)
    result.victims = [victim]
    ha, pets = _before(lab, [victim], result)
    result.t0 = lab.timeline.fault(victim, "power loss: host and BMC down")
    # Before soft fencing, the operator asks the BMC for the power status: a dead BMC
    # makes that wait for the FenceAgent's timeout, a configured wait.
    result.allowed["soft_fence"] = FENCE_AGENT_TIMEOUT
    expiry = lab.lease_expiry(victim)
    lab.dc.lose_power(victim, bmc_dead=True)
    _allowed_detection(lab, result, expiry)
    lab.wait_for(
        f"{victim} Isolated (every fence level failed)",
        lambda: _phase_seen(lab, victim, "Isolated", result.t0),
        180,
    )
    hold = 3.0 if lab.config.profile == "lab" else 10.0
    t_iso = lab.timeline.since(result.t0)[-1].t
    lab.wait_for(
        f"{hold:g}s: nothing may restart without a confirmation",
        lambda: time.monotonic() - t_iso > hold,
        hold + 30,
    )
    reason = "lab: power cut, host checked off on site"
    t_confirm = lab.timeline.add(
        "lab", victim, f"kubectl annotate host {victim} {CONFIRM_ANNOTATION}={reason!r}"
    ).t
    proc = lab.kubectl(
        "annotate",
        "--overwrite",
        "-n",
        lab.namespace,
        "host",
        victim,
        f"{CONFIRM_ANNOTATION}={reason}",
    )
    result.check("kubectl annotate accepted", proc.returncode == 0, proc.stderr.strip())
    result.times["confirm"] = t_confirm - result.t0
    lab.wait_for(
        f"HA VMs of {victim} ({', '.join(sorted(ha))}) running elsewhere",
        lambda: _recovered(lab, ha, result),
        60,
    )
    _record_times(lab, result, ha)
    _power_actions(lab, result)
    result.check(
        "no power action reached any BMC (the victim's is dead)",
        not any(result.bmc_actions.values()),
        f"{result.bmc_actions}",
    )
    result.check(f"{victim} was Isolated", "Isolated" in result.times, f"{sorted(result.times)}")
    _no_early_start(lab, result, ha, t_confirm, "the confirmation")
    early_status = [
        e
        for e in lab.timeline.since(result.t0)
        if e.t < t_confirm
        and e.kind == "vm"
        and e.subject in ha
        and e.data.get("host") not in (victim, None)
    ]
    result.check(
        "no HA VM was placed elsewhere before the confirmation",
        not early_status,
        "; ".join(f"{e.subject}: {e.text}" for e in early_status),
    )
    _check_common(lab, result, ha, pets)


def rack_failure(lab: Lab, result: ScenarioResult) -> None:
    assert lab.dc is not None
    victims = pick_rack(lab)
    result.victims = victims
    ha, pets = _before(lab, victims, result)
    rack = lab.dc.hosts[victims[0]].rack
    expiries = [lab.lease_expiry(v) for v in victims]
    result.t0 = lab.timeline.fault(
        rack, f"rack {rack} PDU failure: {', '.join(victims)} lose power, their BMCs still answer"
    )
    for v in victims:
        lab.dc.lose_power(v, bmc_dead=False)
    known = [e for e in expiries if e is not None]
    _allowed_detection(lab, result, max(known) if known else None)
    lab.wait_for(
        f"HA VMs of rack {rack} ({', '.join(sorted(ha))}) running elsewhere",
        lambda: _recovered(lab, ha, result),
        120,
    )
    lab.wait_for(
        f"{', '.join(victims)} back Up",
        lambda: all(_phase_seen(lab, v, "Up", result.t0) for v in victims),
        60,
    )
    _record_times(lab, result, ha)
    _power_actions(lab, result)
    acts = result.bmc_actions
    others = {h: a for h, a in acts.items() if h not in victims and a}
    result.check("no power action reached a host outside the rack", not others, f"{others}")
    for v in victims:
        result.check(f"{v}'s BMC powered it back on", "on" in acts[v], f"{acts[v]}")
    for v in victims:
        # Each VM waits for its own host's proof, not for the whole rack's.
        mine = {n for n in ha if result.moves.get(n, [None])[0] == v}
        verified = _phase_seen(lab, v, "Rebooting", result.t0)
        _no_early_start(lab, result, mine, verified, f"{v} was verified off")
    _check_common(lab, result, ha, pets)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("agent-crash", "the host agent crashes: soft fencing restarts it", 2, agent_crash),
        Scenario(
            "network-cut",
            "a host loses the API server, its BMC answers: hard fence",
            2,
            network_cut,
        ),
        Scenario(
            "power-loss", "a host and its BMC lose power: Isolated until confirmed", 2, power_loss
        ),
        Scenario(
            "rack-failure",
            "a rack loses power, BMCs answer: its hosts are fenced",
            2 * RACK_SIZE + 1,
            rack_failure,
        ),
    )
}


def run(lab: Lab, name: str) -> ScenarioResult:
    """Run one scenario, then repair its victims and wait for the datacenter to settle."""
    scenario = SCENARIOS[name]
    result = ScenarioResult(name, [])
    lab.timeline.begin(name, scenario.title)
    try:
        scenario.run(lab, result)
    except LabError as exc:
        result.error = str(exc)
        _power_actions(lab, result) if result.t0 else None
        lab.timeline.line(f"  FAILED: {exc}")
    for c in result.checks:
        lab.timeline.line(
            f"  {'ok  ' if c.ok else 'FAIL'} {c.name}"
            + ("" if c.ok or not c.detail else f": {c.detail}")
        )
    return result


def recover(lab: Lab, result: ScenarioResult) -> None:
    """Repair what the scenario broke and wait until every host is Up again."""
    assert lab.dc is not None
    for v in result.victims:
        if v in lab.dc.hosts:
            lab.dc.repair(v)
    lab.wait_steady()
