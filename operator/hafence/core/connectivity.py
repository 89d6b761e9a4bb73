"""When many hosts of a cluster vanish at once: fence them, or suspect our own network?

The rule (its reasoning, next to oVirt's and Pacemaker's, is in docs/architecture.md):

- Only hosts not in maintenance count.  A host in an outage phase is *unreachable*,
  unless its BMC answered that its chassis is off during this outage: an answer from
  the BMC proves the operator's network reaches that host's power management, so it is
  no sign of the operator's own network failing.
- Fencing is skipped when the cluster's policy says so, the cluster has at least
  ``MIN_HOSTS`` counted hosts, and the unreachable ones are more than the threshold
  (a strict majority at the default 50 %).
- A cluster of one or two hosts never skips: a majority of two is both, so it cannot
  tell "one host lost its network" from "the operator lost the network" by counting.
  It relies on the fence itself being proof (Pacemaker's two_node does the same): a
  fence needs the BMC to answer, and a host whose BMC does not answer ends Isolated,
  waiting for a person.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hafence.core.policy import ClusterPolicy
from hafence.core.records import HostRecord
from hafence.core.transitions import OUTAGE_PHASES, Phase

# The smallest cluster in which a majority of unreachable hosts says more about the
# operator's network than about the hosts.
MIN_HOSTS = 3


@dataclass(frozen=True)
class Connectivity:
    """What the rule saw in one cluster."""

    counted: int  # hosts not in maintenance
    unreachable: int  # of them, in an outage and not proven off by their BMC
    proven_off: int  # in an outage, their BMC said "off"

    def broken(self, pol: ClusterPolicy) -> bool:
        return (
            pol.skip_if_connectivity_broken
            and self.counted >= MIN_HOSTS
            and self.unreachable * 100 > pol.connectivity_threshold_percent * self.counted
        )

    def describe(self, cluster: str, pol: ClusterPolicy) -> str:
        off = f", {self.proven_off} more proven off by their BMC" if self.proven_off else ""
        return (
            f"{self.unreachable}/{self.counted} hosts of cluster {cluster} unreachable{off} "
            f"(more than {pol.connectivity_threshold_percent}% of a cluster of "
            f"{MIN_HOSTS} or more): the operator's own network is the likelier fault"
        )


def proven_off(rec: HostRecord) -> bool:
    """The host's BMC said its chassis is off during this outage (``power_state`` is
    forgotten when an outage begins)."""
    return rec.phase in OUTAGE_PHASES and rec.power_state == "off"


def assess(members: Iterable[HostRecord]) -> Connectivity:
    counted = unreachable = off = 0
    for h in members:
        if h.phase is Phase.MAINTENANCE:
            continue
        counted += 1
        if h.phase in OUTAGE_PHASES:
            if proven_off(h):
                off += 1
            else:
                unreachable += 1
    return Connectivity(counted, unreachable, off)
