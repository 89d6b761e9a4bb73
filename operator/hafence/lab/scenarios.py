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
kernel-crash  the host's kernel panics into kdump: agent and VMs die, it  kdump proof,
              sends fence_kdump messages while dumping, then reboots      no power action
============  ==========================================================  ==============

kernel-crash gives its victim a kdump FenceAgent (order 0, before the BMC) for the
scenario only, so the other scenarios' fence levels and timings stay what they were.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from hafence.core.isolation import CONFIRM_ANNOTATION
from hafence.kube import NotFound
from hafence.lab.checks import (
    allowed_detection,
    check_common,
    no_early_start,
    phase_seen,
    pick_host,
    pick_rack,
    power_actions,
    record_times,
    recovered,
    victim_vms,
)
from hafence.lab.resources import FENCE_AGENT_TIMEOUT
from hafence.lab.results import ScenarioResult
from hafence.lab.runner import RACK_SIZE, Lab, LabError


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    min_hosts: int
    run: Callable[[Lab, ScenarioResult], None]


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
    allowed_detection(lab, result, lab.lease_expiry(victim))
    pol = lab.policy
    budget = lab.config.agent_lease + pol.connecting_grace_max + pol.soft_fence_timeout + 30
    lab.wait_for(
        f"{victim} Connecting", lambda: phase_seen(lab, victim, "Connecting", result.t0), budget
    )
    lab.wait_for(
        f"{victim}'s heartbeat back (soft fence)",
        lambda: phase_seen(lab, victim, "Up", result.t0),
        budget,
    )
    record_times(lab, result, set())
    power_actions(lab, result)
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
    # SoftFencing lasts as long as the agent's restart (a second or two): the Host
    # watch may show it, or the status write may already carry Up (the writer sends the
    # latest status, and the lab's watch re-lists after a timeout).  The sshd's own
    # record of the restart between Connecting and Up is the same fact, seen first-hand.
    t = result.times
    soft = t.get("SoftFencing", t.get("soft_fence_done"))
    result.check(
        f"{victim} went Connecting → SoftFencing → Up",
        "Connecting" in t and "Up" in t and soft is not None and t["Connecting"] <= soft <= t["Up"],
        f"phases seen: {sorted(t)}",
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
    ha, pets = victim_vms(lab, [victim], result)
    old_boot = lab.dc.hosts[victim].boot_id
    result.t0 = lab.timeline.fault(
        victim, "network cut: the agent loses the API server (SSH too); the BMC still answers"
    )
    lab.dc.cut_network(victim)
    allowed_detection(lab, result, lab.lease_expiry(victim))
    lab.wait_for(
        f"HA VMs of {victim} ({', '.join(sorted(ha))}) running elsewhere",
        lambda: recovered(lab, ha, result),
        120,
    )
    lab.wait_for(
        f"{victim} back Up after its reboot",
        lambda: (
            lab.dc is not None
            and lab.dc.hosts[victim].boot_id != old_boot
            and phase_seen(lab, victim, "Up", result.t0)
        ),
        60,
    )
    record_times(lab, result, ha)
    power_actions(lab, result)
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
    no_early_start(lab, result, ha, off, f"{victim}'s power off")
    check_common(lab, result, ha, pets)


def power_loss(lab: Lab, result: ScenarioResult) -> None:
    assert lab.dc is not None and lab.watchers is not None
    victim = pick_host(lab)
    result.victims = [victim]
    ha, pets = victim_vms(lab, [victim], result)
    result.t0 = lab.timeline.fault(victim, "power loss: host and BMC down")
    # The power status is asked at lease expiry (the fast path's check): on a dead BMC
    # it times out during the grace, so the soft fence starts when the grace ends.
    expiry = lab.lease_expiry(victim)
    lab.dc.lose_power(victim, bmc_dead=True)
    allowed_detection(lab, result, expiry)
    lab.wait_for(
        f"{victim} Isolated (every fence level failed)",
        lambda: phase_seen(lab, victim, "Isolated", result.t0),
        180,
    )
    hold = 3.0 if lab.config.profile == "lab" else 10.0
    t_iso = lab.timeline.since(result.t0)[-1].t
    command = f"kubectl annotate host {victim} -n {lab.namespace} {CONFIRM_ANNOTATION}="
    lab.wait_for(
        f"the HostIsolated Event on {victim} says what to check and how to confirm",
        lambda: any(
            e.kind == "event"
            and e.subject == victim
            and e.data.get("reason") == "HostIsolated"
            and command in e.text
            and "check on site" in e.text.lower()
            for e in lab.timeline.since(result.t0)
        ),
        30,
    )
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
        lambda: recovered(lab, ha, result),
        60,
    )
    record_times(lab, result, ha)
    power_actions(lab, result)
    result.check(
        "no power action reached any BMC (the victim's is dead)",
        not any(result.bmc_actions.values()),
        f"{result.bmc_actions}",
    )
    result.check(f"{victim} was Isolated", "Isolated" in result.times, f"{sorted(result.times)}")
    no_early_start(lab, result, ha, t_confirm, "the confirmation")
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
    check_common(lab, result, ha, pets)


def rack_failure(lab: Lab, result: ScenarioResult) -> None:
    assert lab.dc is not None
    victims = pick_rack(lab)
    result.victims = victims
    ha, pets = victim_vms(lab, victims, result)
    rack = lab.dc.hosts[victims[0]].rack
    expiries = [lab.lease_expiry(v) for v in victims]
    result.t0 = lab.timeline.fault(
        rack, f"rack {rack} PDU failure: {', '.join(victims)} lose power, their BMCs still answer"
    )
    for v in victims:
        lab.dc.lose_power(v, bmc_dead=False)
    known = [e for e in expiries if e is not None]
    allowed_detection(lab, result, max(known) if known else None)
    lab.wait_for(
        f"HA VMs of rack {rack} ({', '.join(sorted(ha))}) running elsewhere",
        lambda: recovered(lab, ha, result),
        120,
    )
    lab.wait_for(
        f"{', '.join(victims)} back Up",
        lambda: all(phase_seen(lab, v, "Up", result.t0) for v in victims),
        60,
    )
    record_times(lab, result, ha)
    power_actions(lab, result)
    acts = result.bmc_actions
    others = {h: a for h, a in acts.items() if h not in victims and a}
    result.check("no power action reached a host outside the rack", not others, f"{others}")
    for v in victims:
        result.check(f"{v}'s BMC powered it back on", "on" in acts[v], f"{acts[v]}")
    for v in victims:
        # Each VM waits for its own host's proof, not for the whole rack's.
        mine = {n for n in ha if result.moves.get(n, [None])[0] == v}
        verified = phase_seen(lab, v, "Rebooting", result.t0)
        no_early_start(lab, result, mine, verified, f"{v} was verified off")
    check_common(lab, result, ha, pets)


def _event_time(lab: Lab, subject: str, reason: str, after: float) -> float | None:
    return next(
        (
            e.t
            for e in lab.timeline.since(after)
            if e.kind == "event" and e.subject == subject and e.data.get("reason") == reason
        ),
        None,
    )


def _kdump_timeout(lab: Lab) -> int:
    """The kdump level's wait: fence_kdump's 30 s default in production, 10 s in the lab."""
    return 10 if lab.config.profile == "lab" else 30


def kernel_crash(lab: Lab, result: ScenarioResult) -> None:
    assert lab.dc is not None and lab.api is not None
    victim = pick_host(lab)
    result.victims = [victim]
    host = lab.dc.hosts[victim]
    agent = f"{victim}-kdump"
    wait = _kdump_timeout(lab)
    lab.api.create(
        "FenceAgent",
        lab.namespace,
        {
            "metadata": {"name": agent, "labels": {"app.kubernetes.io/part-of": "hafence-lab"}},
            "spec": {
                "hostRef": {"name": victim},
                "type": "kdump",
                "address": host.address,  # where its fence_kdump messages come from
                "port": lab.kdump_port,
                "order": 0,
                "options": f"timeout={wait}",
            },
        },
    )
    try:
        _kernel_crash(lab, result, victim, agent, wait)
    finally:
        try:
            lab.api.delete("FenceAgent", lab.namespace, agent)
        except NotFound:
            pass


def _kernel_crash(lab: Lab, result: ScenarioResult, victim: str, agent: str, wait: int) -> None:
    assert lab.dc is not None and lab.api is not None
    host = lab.dc.hosts[victim]
    ha, pets = victim_vms(lab, [victim], result)
    old_boot = host.boot_id
    dumps, interrupted = host.dumps, host.dumps_interrupted
    pol = lab.policy
    # Long enough for the worst case to reach the kdump level and hear a message: lease
    # expiry, the longest grace, the power check, the soft fence, the level's wait.  The
    # dump ends earlier, a few messages after the proof (below): what is checked is what
    # happens during the dump, and a reboot waited for costs every run.
    dump = (
        lab.config.agent_lease
        + pol.connecting_grace_max
        + FENCE_AGENT_TIMEOUT
        + pol.soft_fence_timeout
        + wait
        + 5
    )
    # No configured wait in the soft-fence step: the BMC answers the power check at once
    # (the chassis is on) and the soft fence fails at once (no sshd in a kdump initrd).
    expiry = lab.lease_expiry(victim)
    result.t0 = lab.timeline.fault(
        victim,
        f"kernel crash: agent and VMs die, fence_kdump messages from {host.address} for "
        f"{dump:g}s, then a reboot",
    )
    lab.dc.crash_kernel(victim, ("127.0.0.1", lab.kdump_port), dump_seconds=dump)
    allowed_detection(lab, result, expiry)
    lab.wait_for(
        f"HA VMs of {victim} ({', '.join(sorted(ha))}) running elsewhere",
        lambda: recovered(lab, ha, result),
        dump + 30,
    )
    proof = lab.wait_for(
        f"{victim} proven off by its kdump messages",
        lambda: _event_time(lab, victim, "KdumpDetected", result.t0),
        dump + 30,
    )
    after = 3.0  # fence_kdump messages go on after the proof: nothing may interrupt them
    lab.wait_for(
        f"{after:g}s of dump after the proof",
        lambda: time.monotonic() - proof > after or not host.kdump,
        after + 30,
    )
    lab.dc.finish_dump(victim)
    lab.wait_for(
        f"{victim} back Up after its dump and reboot",
        lambda: (
            lab.dc is not None
            and lab.dc.hosts[victim].boot_id != old_boot
            and phase_seen(lab, victim, "Up", result.t0)
        ),
        dump + 60,
    )
    record_times(lab, result, ha)
    power_actions(lab, result)
    detected = _event_time(lab, victim, "KdumpDetected", result.t0)
    if detected is not None:
        result.times["kdump_detected"] = detected - result.t0
    result.check(
        f"the kdump level heard {victim}'s fence_kdump message (KdumpDetected)",
        detected is not None,
        f"events: {[e.text for e in lab.timeline.since(result.t0) if e.subject == victim][-5:]}",
    )
    result.check(
        "no power action reached any BMC (the dump was never interrupted)",
        not any(result.bmc_actions.values()),
        f"{result.bmc_actions}",
    )
    result.check(
        f"{victim} wrote its dump and rebooted by itself",
        host.dumps == dumps + 1 and host.dumps_interrupted == interrupted,
        f"dumps {host.dumps - dumps}, interrupted {host.dumps_interrupted - interrupted}",
    )
    proofs = [
        ((o.get("status") or {}).get("proof") or {})
        for o in lab.api.list("HostOutage", lab.namespace)["items"]
        if ((o.get("spec") or {}).get("hostRef") or {}).get("name") == victim
    ]
    result.check(
        f"{victim}'s HostOutage record names the kdump proof and {agent}",
        any(p.get("type") == "kdump" and p.get("agent") == agent for p in proofs),
        f"proofs: {proofs}",
    )
    no_early_start(lab, result, ha, detected, f"the kdump proof ({agent})")
    check_common(lab, result, ha, pets)


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
        Scenario(
            "kernel-crash",
            "a host's kernel crashes into kdump: its messages are proof, no power action",
            2,
            kernel_crash,
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
        power_actions(lab, result) if result.t0 else None
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
