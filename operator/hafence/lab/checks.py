"""What the scenarios look at: victims, recovery, observed times, the shared checks.

Everything here reads the real parts through the lab: the VM processes the checker
sampled, the watchers' view of Hosts and VMs, the timeline, and the power actions
each simulated BMC recorded.
"""

from __future__ import annotations

from hafence.lab.results import ScenarioResult
from hafence.lab.runner import RACK_SIZE, Lab, LabError
from hafence.lab.timeline import POWER_ACTIONS


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


def victim_vms(lab: Lab, victims: list[str], result: ScenarioResult) -> tuple[set[str], set[str]]:
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


def new_process(lab: Lab, name: str, result: ScenarioResult) -> str | None:
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


def recovered(lab: Lab, names: set[str], result: ScenarioResult) -> bool:
    return all(new_process(lab, n, result) for n in names)


def phase_seen(lab: Lab, host: str, phase: str, after: float) -> float | None:
    for e in lab.timeline.since(after):
        if e.kind == "host" and e.subject == host and e.data.get("phase") == phase:
            return e.t
    return None


def record_times(lab: Lab, result: ScenarioResult, ha: set[str]) -> None:
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
        seen = {v: phase_seen(lab, v, phase, t0) for v in result.victims}
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


def power_actions(lab: Lab, result: ScenarioResult) -> None:
    assert lab.dc is not None
    for name, host in lab.dc.hosts.items():
        acts = [
            a.name
            for a in list(host.bmc.actions)
            if a.time >= result.t0 and a.name in POWER_ACTIONS
        ]
        result.bmc_actions[name] = acts
    result.soft_fenced = sorted({h for t, h in lab.dc.soft_fence_requests if t >= result.t0})


def allowed_detection(lab: Lab, result: ScenarioResult, expiry: float | None) -> None:
    if expiry is None:
        return
    pol = lab.policy
    result.allowed["Connecting"] = expiry - result.t0
    # The grace grows with the VMs of each host; with several victims, the busiest.
    per_host = [
        sum(1 for where in result.moves.values() if where[:1] == [v]) for v in result.victims
    ]
    result.allowed["SoftFencing"] = result.allowed["Connecting"] + pol.grace(max(per_host))


def check_common(lab: Lab, result: ScenarioResult, ha: set[str], pets: set[str]) -> None:
    assert lab.checker is not None and lab.watchers is not None
    procs = lab.checker.running()
    for n in sorted(ha):
        hosts = procs.get(n, [])
        result.moves[n] = result.moves.get(n, [])[:1] + [h or "?" for h in hosts]
        result.check(
            f"HA VM {n} runs in exactly one process, restarted after the fault",
            new_process(lab, n, result) is not None,
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
    if lab.dc is not None and lab.dc.vm_driver == "libvirt":
        result.check(
            "no disk image was ever open in two qemu processes at once (sampled every 100 ms)",
            not lab.dc.disk_violations,
            "; ".join(lab.dc.disk_violations[:5]),
        )


def no_early_start(
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
