"""FencingPolicy resources -> each namespace's core Settings, live, and their status.

The operator's flags are the base; the FencingPolicy named ``default`` in a namespace
wins field by field (``core.policy.from_resource``).  Any other FencingPolicy in the
namespace is ignored, and says so in its status (``inForce: false`` and an ``InForce``
condition): two policies are never merged.  A policy whose combination with the flags
is invalid (say its grace maximum below the flags' grace) is not applied either: the
namespace keeps the flags' settings and the condition names the field.

A change applies to the namespace's engine at once, without a restart: the engine's
settings are replaced between two inputs.  The operator writes only ``status``, and
only when it changed (its own status write comes back as a watch event).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from hafence.api.base import Condition, ConditionStatus
from hafence.api.fencingpolicy import (
    IN_FORCE_NAME,
    EffectiveCluster,
    EffectiveTimings,
    FencingPolicySpec,
    FencingPolicyStatus,
)
from hafence.controller.cache import Cache
from hafence.controller.leader import LeaderElector, NotLeader
from hafence.controller.pools import WRITES
from hafence.core.engine import Engine
from hafence.core.policy import ClusterPolicy, Settings, from_resource
from hafence.kube import Api, KubeError, NotFound

log = logging.getLogger(__name__)

KIND = "FencingPolicy"


def resolve(base: Settings, obj: dict[str, Any] | None) -> tuple[Settings, str | None]:
    """The Settings in force given the namespace's ``default`` FencingPolicy (or None),
    and why the policy could not be applied (None when it was, or there is none)."""
    if obj is None:
        return base, None
    try:
        spec = FencingPolicySpec.model_validate(obj.get("spec") or {})
        return from_resource(base, spec), None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "spec." + ".".join(str(p) for p in first["loc"])
        return base, f"{where}: {first['msg']}"
    except ValueError as exc:
        return base, f"with the operator's flags: {exc}"


def _effective(name: str, pol: ClusterPolicy, source: str) -> EffectiveCluster:
    return EffectiveCluster(
        cluster=name,
        fencing_enabled=pol.fencing_enabled,
        skip_if_connectivity_broken=pol.skip_if_connectivity_broken,
        connectivity_threshold_percent=pol.connectivity_threshold_percent,
        source=source,
    )


def timings(s: Settings) -> EffectiveTimings:
    return EffectiveTimings(
        connecting_grace_seconds=s.connecting_grace,
        connecting_grace_per_vm_seconds=s.connecting_grace_per_vm,
        connecting_grace_max_seconds=s.connecting_grace_max,
        soft_fence_timeout_seconds=s.soft_fence_timeout,
        fence_retry_base_seconds=s.fence_retry_base,
        fence_retry_factor=s.fence_retry_factor,
        fence_retry_max_seconds=s.fence_retry_max,
        max_concurrent_fences=s.max_concurrent_fences,
        startup_quiet_period_seconds=s.startup_quiet_period,
        vm_restart_fast_interval_seconds=s.vm_retry_fast_interval,
        vm_restart_fast_count=s.vm_retry_fast_count,
        vm_restart_slow_interval_seconds=s.vm_retry_slow_interval,
    )


def status_for(
    obj: dict[str, Any], settings: Settings, clusters: Iterable[str], problem: str | None
) -> FencingPolicyStatus:
    """The status of one FencingPolicy: in force (with what is effective per cluster),
    ignored (another one is in force), or invalid."""
    meta = obj.get("metadata", {})
    generation = meta.get("generation")

    def condition(status: ConditionStatus, reason: str, message: str) -> list[Condition]:
        return [Condition(type="InForce", status=status, reason=reason, message=message)]

    if meta.get("name") != IN_FORCE_NAME:
        message = (
            f"only the FencingPolicy named {IN_FORCE_NAME!r} is in force in a namespace; "
            f"this one is ignored (nothing is merged): move its fields into {IN_FORCE_NAME!r}"
        )
        return FencingPolicyStatus(
            observed_generation=generation,
            in_force=False,
            conditions=condition("False", "Ignored", message),
        )
    if problem is not None:
        message = f"not applied, the operator's flags stay in force: {problem}"
        return FencingPolicyStatus(
            observed_generation=generation,
            in_force=False,
            conditions=condition("False", "Invalid", message),
        )
    listed = set(settings.cluster_policies)
    return FencingPolicyStatus(
        observed_generation=generation,
        in_force=True,
        timings=timings(settings),
        default=_effective("*", settings.default_cluster_policy, "default"),
        clusters=[
            _effective(c, settings.cluster(c), "cluster" if c in listed else "default")
            for c in sorted(set(clusters) | listed)
        ],
        conditions=condition(
            "True", "Applied", "in force; fields left out keep the operator's flags"
        ),
    )


def _same(current: dict[str, Any] | None, wanted: dict[str, Any]) -> bool:
    """Equal as written by us (the API server adds nothing to a status)."""
    return bool(current) and current == wanted


class FencingPolicies:
    def __init__(self, api: Api, cache: Cache, elector: LeaderElector, base: Settings) -> None:
        self.api = api
        self.cache = cache
        self.elector = elector
        self.base = base

    def settings(self, namespace: str) -> Settings:
        return resolve(self.base, self.cache.get(KIND, namespace, IN_FORCE_NAME))[0]

    async def sync(self, namespace: str, engine: Engine | None) -> None:
        """Apply the namespace's policy to its engine and bring every FencingPolicy's
        status up to date."""
        settings, problem = resolve(self.base, self.cache.get(KIND, namespace, IN_FORCE_NAME))
        if engine is not None and engine.settings != settings:
            engine.set_settings(settings)
            log.info("namespace %s: fencing policy changed, in force now", namespace)
        clusters = {
            (h.get("spec") or {}).get("cluster", "") for h in self.cache.of_kind("Host", namespace)
        } - {""}
        for obj in list(self.cache.of_kind(KIND, namespace)):
            status = status_for(obj, settings, clusters, problem)
            if _same(obj.get("status"), status.to_k8s()):
                continue
            name = obj["metadata"]["name"]
            # A merge patch with the nulls kept: a field no longer true is cleared.
            body = {"status": status.model_dump(by_alias=True, mode="json")}
            try:
                self.elector.check()
                written = await WRITES.run(self.api.patch, KIND, namespace, name, body, status=True)
                self.cache.put(KIND, written)
            except (NotFound, NotLeader):
                pass
            except KubeError as exc:  # the next event or resync brings us back
                log.warning("FencingPolicy %s/%s status not written: %s", namespace, name, exc)
