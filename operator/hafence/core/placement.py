"""Where a VM may run: pure filtering and scoring over a snapshot of the hosts.

Filters: Up and not in maintenance, same cluster, host selector, anti-affinity group,
free cpu and memory, and S1's "only where it may still run" constraint.  Among the hosts
left, those whose heartbeat is on time come first: a host that has missed a renewal is
still Up (its lease has not expired) but may be the next host of a failing rack, and a VM
placed there waits a whole detection for nothing.  Then the VM's preferred hosts win in
their listed order; then the host with the most free memory (spreading the load), then
the most free cpu, then the name.  A late host is still a target when nothing else fits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hafence.api.vm import PRIORITY_RANK, HAVirtualMachineSpec


@dataclass(frozen=True)
class HostView:
    name: str
    cluster: str
    labels: Mapping[str, str]
    schedulable: bool  # Up and not in maintenance
    cpu_free: int
    memory_free: int
    groups: frozenset[str]  # anti-affinity groups already on the host
    late: bool = False  # Up, but its heartbeat missed a renewal


def priority_key(name: str, spec: HAVirtualMachineSpec) -> tuple[int, str]:
    return (PRIORITY_RANK[spec.priority], name)


def choose_host(
    spec: HAVirtualMachineSpec,
    hosts: Iterable[HostView],
    only: str | None = None,
    avoid: str | None = None,
) -> tuple[str | None, str]:
    """The host to place on, or None and a message saying why none fits.

    ``only``: the VM may still run there (its previous host, not proven off), so that is
    the one host it may be placed on.  ``avoid``: the VM just failed there (its agent
    gave up on it), so this try looks elsewhere.
    """
    place = spec.placement
    res = spec.resources
    reasons: dict[str, int] = {}
    fits: list[HostView] = []
    total = 0
    for h in hosts:
        if h.cluster != place.cluster:
            continue
        total += 1
        if only is not None and h.name != only:
            why = f"VM may still run on {only}"
        elif h.name == avoid:
            why = "the VM just failed there"
        elif not h.schedulable:
            why = "not Up"
        elif any(h.labels.get(k) != v for k, v in place.host_selector.items()):
            why = "host selector mismatch"
        elif place.anti_affinity_group is not None and place.anti_affinity_group in h.groups:
            why = f"anti-affinity group {place.anti_affinity_group}"
        elif h.cpu_free < res.cpu:
            why = "insufficient cpu"
        elif h.memory_free < res.memory_mi_b:
            why = "insufficient memory"
        else:
            fits.append(h)
            continue
        reasons[why] = reasons.get(why, 0) + 1
    if fits:
        on_time = [h for h in fits if not h.late]
        fits = on_time or fits
        by_name = {h.name: h for h in fits}
        for pref in place.preferred_hosts:
            if pref in by_name:
                return pref, ""
        best = min(fits, key=lambda h: (-h.memory_free, -h.cpu_free, h.name))
        return best.name, ""
    if total == 0:
        return None, f"no host in cluster {place.cluster}"
    detail = ", ".join(f"{n} {why}" for why, n in sorted(reasons.items()))
    return None, (
        f"0/{total} hosts of cluster {place.cluster} fit "
        f"(need {res.cpu} cpu, {res.memory_mi_b} MiB): {detail}"
    )
