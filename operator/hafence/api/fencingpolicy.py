"""FencingPolicy: a datacenter's fencing policy, owned by Git like the rest.

One per namespace is in force: the one named ``default`` (any other gets an ``InForce``
condition saying it is ignored; nothing is merged).  ``spec.default`` holds oVirt's
cluster fencing-policy fields and the timings a datacenter tunes; ``spec.clusters``
overrides the fencing-policy fields for single clusters.  A field left out keeps the
operator's value (its flags, then the built-in defaults).  The operator writes only
``status``: what is in force, per cluster.
"""

from __future__ import annotations

from pydantic import Field

from hafence.api.base import (
    CONDITIONS_EXTRA,
    DNS_LABEL,
    Condition,
    Kind,
    Model,
    PrinterColumn,
    cel,
)

IN_FORCE_NAME = "default"

_THRESHOLD = (
    "Skip fencing when more than this percentage of a cluster's hosts (of three or more) "
    "is unreachable at once, 1..100 (oVirt's hostsWithBrokenConnectivityThreshold)."
)


class ClusterFencing(Model):
    """oVirt's cluster "Fencing Policy" fields."""

    fencing_enabled: bool | None = Field(
        default=None, description="Fence unreachable hosts at all (oVirt: fencingEnabled)."
    )
    skip_if_connectivity_broken: bool | None = Field(
        default=None,
        description="Skip fencing when most of a cluster vanishes at once: the operator's "
        "network is then the likelier fault (oVirt: skipFencingIfConnectivityBroken).",
    )
    connectivity_threshold_percent: int | None = Field(
        default=None, ge=1, le=100, description=_THRESHOLD
    )


class FenceRetry(Model):
    """Fencing of an Isolated host is retried after base * factor**(attempt-1), capped."""

    base_seconds: float | None = Field(default=None, ge=0)
    factor: float | None = Field(default=None, ge=1)
    max_seconds: float | None = Field(default=None, ge=0)


class VMRestart(Model):
    """HA VM restart schedule (oVirt: every 30 s ten times, then every 30 min)."""

    fast_interval_seconds: float | None = Field(default=None, ge=0)
    fast_count: int | None = Field(default=None, ge=0)
    slow_interval_seconds: float | None = Field(default=None, ge=0)


class DefaultPolicy(ClusterFencing):
    model_config = ClusterFencing.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "!has(self.connectingGraceSeconds) || !has(self.connectingGraceMaxSeconds)"
                    " || self.connectingGraceMaxSeconds >= self.connectingGraceSeconds",
                    "connectingGraceMaxSeconds must be at least connectingGraceSeconds "
                    "(e.g. 60 with a grace of 10)",
                    fieldPath=".connectingGraceMaxSeconds",
                )
            ]
        }
    }

    connecting_grace_seconds: float | None = Field(
        default=None,
        ge=0,
        description="How long a host may miss its heartbeat before it is soft fenced "
        "(oVirt: TimeoutToResetVdsInSeconds).",
    )
    connecting_grace_per_vm_seconds: float | None = Field(
        default=None,
        ge=0,
        alias="connectingGracePerVMSeconds",
        description="Added per VM on the host (oVirt: DelayResetPerVmInSeconds).",
    )
    connecting_grace_max_seconds: float | None = Field(
        default=None, ge=0, description="The grace never grows beyond this."
    )
    soft_fence_timeout_seconds: float | None = Field(
        default=None, ge=0, description="Wait for the heartbeat after the SSH soft fence."
    )
    fence_retry: FenceRetry | None = None
    max_concurrent_fences: int | None = Field(
        default=None, ge=1, description="Hosts being fenced at once in the datacenter."
    )
    startup_quiet_period_seconds: float | None = Field(
        default=None,
        ge=0,
        description="No fencing this long after the operator starts leading "
        "(oVirt: DisableFenceAtStartupInSec).",
    )
    vm_restart: VMRestart | None = None


class ClusterEntry(ClusterFencing):
    cluster: str = Field(
        min_length=1, max_length=63, pattern=DNS_LABEL, description="The Hosts' spec.cluster."
    )


class FencingPolicySpec(Model):
    default: DefaultPolicy | None = None
    clusters: list[ClusterEntry] = Field(
        default_factory=list,
        max_length=256,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.all(c, self.exists_one(d, d.cluster == c.cluster))",
                    "each cluster may be listed once: merge the entries of a cluster "
                    "listed twice into one",
                )
            ]
        },
    )


class EffectiveCluster(Model):
    cluster: str
    fencing_enabled: bool
    skip_if_connectivity_broken: bool
    connectivity_threshold_percent: int
    source: str = Field(description="'cluster' (its own entry) or 'default'.")


class EffectiveTimings(Model):
    connecting_grace_seconds: float
    connecting_grace_per_vm_seconds: float = Field(alias="connectingGracePerVMSeconds")
    connecting_grace_max_seconds: float
    soft_fence_timeout_seconds: float
    fence_retry_base_seconds: float
    fence_retry_factor: float
    fence_retry_max_seconds: float
    max_concurrent_fences: int
    startup_quiet_period_seconds: float
    vm_restart_fast_interval_seconds: float
    vm_restart_fast_count: int
    vm_restart_slow_interval_seconds: float


class FencingPolicyStatus(Model):
    observed_generation: int | None = None
    in_force: bool | None = Field(
        default=None, description="True when this policy is the one the operator applies."
    )
    timings: EffectiveTimings | None = None
    default: EffectiveCluster | None = Field(
        default=None, description="What a cluster without an entry gets."
    )
    clusters: list[EffectiveCluster] = Field(
        default_factory=list,
        description="What is in force for every cluster listed or with Hosts (the "
        "Hosts as of the policy's last change or the operator's start).",
    )
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=CONDITIONS_EXTRA)


FENCING_POLICY = Kind(
    kind="FencingPolicy",
    plural="fencingpolicies",
    short_names=("hfp", "fencepolicy"),
    spec=FencingPolicySpec,
    status=FencingPolicyStatus,
    description="A datacenter's fencing policy: defaults and per-cluster entries. Only the "
    "one named 'default' in a namespace is in force; fields left out keep the operator's.",
    printer_columns=(
        PrinterColumn(name="InForce", type="boolean", json_path=".status.inForce"),
        PrinterColumn(name="Fencing", type="boolean", json_path=".status.default.fencingEnabled"),
        PrinterColumn(
            name="SkipBroken",
            type="boolean",
            json_path=".status.default.skipIfConnectivityBroken",
        ),
        PrinterColumn(
            name="Threshold",
            type="integer",
            json_path=".status.default.connectivityThresholdPercent",
        ),
        PrinterColumn(
            name="Grace", type="number", json_path=".status.timings.connectingGraceSeconds"
        ),
        PrinterColumn(
            name="SoftFence",
            type="number",
            json_path=".status.timings.softFenceTimeoutSeconds",
        ),
        PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
    ),
)
