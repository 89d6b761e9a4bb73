"""Tunable policies of the core, with oVirt's behaviour as the default where it exists.

Every duration is in seconds.  The core never reads a clock: the callers pass ``now``
and these settings turn it into deadlines.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

from hafence.api.fencingpolicy import ClusterFencing, FencingPolicySpec

_T = TypeVar("_T")


@dataclass(frozen=True)
class ClusterPolicy:
    """Per-cluster fencing policy: oVirt's cluster "Fencing Policy" fields, with the
    connectivity rule of ``connectivity.py`` (docs/architecture.md, "Fencing when many
    hosts vanish")."""

    fencing_enabled: bool = True
    # oVirt's skipFencingIfConnectivityBroken + hostsWithBrokenConnectivityThreshold.
    # oVirt ships it off and compares with >=, which made a two-host cluster (1/2 =
    # 50 %) never fence once switched on.  Here it is on, the comparison is a strict
    # majority (> threshold) and it applies only to clusters of at least
    # connectivity.MIN_HOSTS hosts, counting a host whose BMC said "off" as reachable.
    skip_if_connectivity_broken: bool = True
    connectivity_threshold_percent: int = 50


@dataclass(frozen=True)
class Settings:
    # oVirt's TimeoutToResetVdsInSeconds + DelayResetPerVmInSeconds * VMs, bounded:
    # a loaded host gets longer to come back before anyone touches it.
    connecting_grace: float = 10.0
    connecting_grace_per_vm: float = 0.5
    connecting_grace_max: float = 60.0
    # How long to wait for the heartbeat after a soft fence (agent restart) returned.
    soft_fence_timeout: float = 30.0
    # Isolated hosts: fencing retried after base * factor**(attempt-1), capped.
    fence_retry_base: float = 60.0
    fence_retry_factor: float = 2.0
    fence_retry_max: float = 900.0
    max_concurrent_fences: int = 5
    # After a cluster-wide connectivity loss ends, hosts come back one by one: the
    # first ones back must not make fencing of the others (about to return) allowed.
    connectivity_settle: float = 15.0
    # oVirt's DisableFenceAtStartupInSec: right after start-up the view of the
    # heartbeats is not trustworthy yet.
    startup_quiet_period: float = 60.0
    # oVirt's HA restart schedule: every 30 s ten times, then every 30 min.
    vm_retry_fast_interval: float = 30.0
    vm_retry_fast_count: int = 10
    vm_retry_slow_interval: float = 1800.0
    # An HA VM its agent reports Failed on a healthy host (crash budget spent there, or
    # it cannot start) is restarted on another host of its cluster at most this many
    # times in a row; then it stays Failed.  Three hosts failing one VM in a row says the
    # VM is broken, not the hosts.  The row is broken by editing the VM's spec, or by
    # the VM having run this long at its placement before it failed (seconds, counted
    # from its first Running report for that placement this operator saw).
    max_failed_restarts: int = 3
    failed_restart_reset: float = 3600.0
    # Added to lease expiry + watchdog timeout before self-fencing counts as proof.
    self_fence_safety_margin: float = 15.0
    # Host.status.lastHeartbeatTime is refreshed at most this often (plus on every
    # phase change): one status write per lease renewal would load the API server.
    # Liveness is the Lease's job; the field is read by people only (the Heartbeat
    # column): kubelet's nodeStatusReportFrequency (5 min) since node Leases exist.
    # At 1,000 hosts: 3.3 writes/s instead of 17.
    heartbeat_status_interval: float = 300.0
    # How many proxy hosts of each kind a fence action offers the shell.
    max_proxy_candidates: int = 3
    # Added to every operation's own timeouts (``core/deadlines.py``): the shell's work
    # around a device call.  The core waits that long again before it gives up on a
    # shell that never answered.
    step_margin: float = 5.0
    # A status write that failed is issued again after base * 2**(failures-1), capped.
    write_retry_base: float = 0.25
    write_retry_max: float = 5.0
    default_cluster_policy: ClusterPolicy = field(default_factory=ClusterPolicy)
    cluster_policies: Mapping[str, ClusterPolicy] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in (
            "connecting_grace",
            "connecting_grace_per_vm",
            "soft_fence_timeout",
            "fence_retry_base",
            "startup_quiet_period",
            "vm_retry_fast_interval",
            "vm_retry_slow_interval",
            "self_fence_safety_margin",
            "failed_restart_reset",
            "step_margin",
            "write_retry_base",
            "write_retry_max",
        ):
            value = getattr(self, name)
            if value < 0:
                raise ValueError(f"Settings.{name} must be >= 0, got {value!r}")
        if self.connecting_grace_max < self.connecting_grace:
            raise ValueError(
                f"Settings.connecting_grace_max ({self.connecting_grace_max!r}) must be >= "
                f"connecting_grace ({self.connecting_grace!r})"
            )
        if self.fence_retry_factor < 1:
            raise ValueError(
                f"Settings.fence_retry_factor must be >= 1, got {self.fence_retry_factor!r}"
            )
        if self.max_failed_restarts < 0:
            raise ValueError(
                f"Settings.max_failed_restarts must be >= 0, got {self.max_failed_restarts!r}"
            )
        if self.max_concurrent_fences < 1:
            raise ValueError(
                f"Settings.max_concurrent_fences must be >= 1, got {self.max_concurrent_fences!r}"
            )
        for cname, pol in {
            "<default>": self.default_cluster_policy,
            **dict(self.cluster_policies),
        }.items():
            if not 1 <= pol.connectivity_threshold_percent <= 100:
                raise ValueError(
                    f"cluster {cname}: connectivity_threshold_percent must be 1..100, "
                    f"got {pol.connectivity_threshold_percent!r}"
                )

    def cluster(self, name: str) -> ClusterPolicy:
        return self.cluster_policies.get(name, self.default_cluster_policy)

    def grace(self, vm_count: int) -> float:
        """Connecting grace for a host running ``vm_count`` VMs."""
        grown = self.connecting_grace + self.connecting_grace_per_vm * max(vm_count, 0)
        return min(grown, self.connecting_grace_max)

    def fence_retry_delay(self, attempt: int) -> float:
        """Delay before fencing attempt ``attempt + 1`` of an Isolated host."""
        delay = self.fence_retry_base * self.fence_retry_factor ** max(attempt - 1, 0)
        return min(delay, self.fence_retry_max)

    def write_retry_delay(self, failures: int) -> float:
        """Delay before issuing again a status write that failed ``failures`` times."""
        return min(self.write_retry_base * 2.0 ** max(failures - 1, 0), self.write_retry_max)

    def failed_restart_delay(self, restarts: int) -> float:
        """Delay before failure restart number ``restarts`` (1-based): the first at once
        (oVirt restarts an HA VM that went down right away), the next ones on the VM
        retry schedule, so a VM that fails everywhere does not hop hosts in a hot loop."""
        return 0.0 if restarts <= 1 else self.vm_retry_delay(restarts - 1)

    def vm_retry_delay(self, failed_attempts: int) -> float:
        """Delay before the next placement try after ``failed_attempts`` failures."""
        if failed_attempts <= self.vm_retry_fast_count:
            return self.vm_retry_fast_interval
        return self.vm_retry_slow_interval

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def _cluster_policy(base: ClusterPolicy, entry: ClusterFencing | None) -> ClusterPolicy:
    if entry is None:
        return base
    return ClusterPolicy(
        fencing_enabled=_pick(entry.fencing_enabled, base.fencing_enabled),
        skip_if_connectivity_broken=_pick(
            entry.skip_if_connectivity_broken, base.skip_if_connectivity_broken
        ),
        connectivity_threshold_percent=_pick(
            entry.connectivity_threshold_percent, base.connectivity_threshold_percent
        ),
    )


def _pick(value: _T | None, fallback: _T) -> _T:
    return fallback if value is None else value


def from_resource(base: Settings, spec: FencingPolicySpec | None) -> Settings:
    """``base`` (the operator's flags) with a FencingPolicy's fields applied: the resource
    wins field by field; what it leaves out keeps ``base``.  Raises ValueError (naming
    the Settings field) when the combination is invalid, e.g. a grace maximum from the
    resource below a grace from the flags."""
    if spec is None:
        return base
    d = spec.default
    changes: dict[str, object] = {}
    if d is not None:
        fields: dict[str, object] = {
            "connecting_grace": d.connecting_grace_seconds,
            "connecting_grace_per_vm": d.connecting_grace_per_vm_seconds,
            "connecting_grace_max": d.connecting_grace_max_seconds,
            "soft_fence_timeout": d.soft_fence_timeout_seconds,
            "max_concurrent_fences": d.max_concurrent_fences,
            "startup_quiet_period": d.startup_quiet_period_seconds,
        }
        if d.fence_retry is not None:
            fields |= {
                "fence_retry_base": d.fence_retry.base_seconds,
                "fence_retry_factor": d.fence_retry.factor,
                "fence_retry_max": d.fence_retry.max_seconds,
            }
        if d.vm_restart is not None:
            fields |= {
                "vm_retry_fast_interval": d.vm_restart.fast_interval_seconds,
                "vm_retry_fast_count": d.vm_restart.fast_count,
                "vm_retry_slow_interval": d.vm_restart.slow_interval_seconds,
            }
        changes = {k: v for k, v in fields.items() if v is not None}
    default = _cluster_policy(base.default_cluster_policy, d)
    clusters = dict(base.cluster_policies)
    for entry in spec.clusters:
        clusters[entry.cluster] = _cluster_policy(clusters.get(entry.cluster, default), entry)
    return base.with_overrides(**changes, default_cluster_policy=default, cluster_policies=clusters)
