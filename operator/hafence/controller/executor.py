"""Carry out the core's actions against the world, for one namespace (datacenter).

Power operations (CheckPower, SoftFence, RunFenceStep) run as background tasks: their
results come back to the core as inputs through ``feed``.  Status writes run in the
order the core emitted them (a host's proof is written before the placements that rely
on it).  Every power operation and every write first checks leadership (S2); a
placement write also carries a resourceVersion precondition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from hafence.api.fenceagent import FenceAgentSpec
from hafence.api.host import HostSpec
from hafence.api.lease import LeaseError, parse_microtime
from hafence.controller.cache import Cache
from hafence.controller.events import EventRecorder
from hafence.controller.leader import LeaderElector, NotLeader
from hafence.controller.metrics import Metrics, result_of
from hafence.core import fencing_plan as fp
from hafence.core import messages as m
from hafence.fencing.drivers import build_driver
from hafence.fencing.errors import FenceError
from hafence.fencing.protocol import Credentials, FenceResult, SSHTarget
from hafence.fencing.resolve import load_credentials, ssh_target
from hafence.kube import Api, Conflict, KubeError, NotFound

log = logging.getLogger(__name__)

Feed = Callable[[m.Input], Awaitable[None]]
_PLACEMENT_RETRIES = 5


class Executor:
    def __init__(
        self,
        api: Api,
        namespace: str,
        cache: Cache,
        elector: LeaderElector,
        recorder: EventRecorder,
        metrics: Metrics,
        feed: Feed,
        observe_lease: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        self.observe_lease = observe_lease
        self.api = api
        self.namespace = namespace
        self.cache = cache
        self.elector = elector
        self.recorder = recorder
        self.metrics = metrics
        self.feed = feed
        self.tasks: set[asyncio.Task[None]] = set()

    async def run(self, actions: list[m.Action]) -> None:
        for action in actions:
            if isinstance(action, m.CheckPower | m.SoftFence | m.RunFenceStep):
                self._spawn(action)
            elif isinstance(action, m.WriteHostStatus):
                await self._write_status("Host", action.host, action.status)
            elif isinstance(action, m.WriteVMStatus):
                await self._write_vm(action)
            elif isinstance(action, m.WriteConfirmationStatus):
                await self._write_status("FenceConfirmation", action.name, action.status)
            elif isinstance(action, m.EmitEvent):
                obj = self.cache.get(action.kind, self.namespace, action.name)
                if obj is not None:
                    self.recorder.post(obj, action.type, action.reason, action.message)
            elif isinstance(action, m.Alert):
                level = logging.WARNING if action.active else logging.INFO
                log.log(
                    level,
                    "alert %s %s: %s",
                    action.key,
                    "raised" if action.active else "cleared",
                    action.message,
                )
            elif isinstance(action, m.ReleaseVMs):
                log.warning(
                    "host %s/%s proven off (%s, outage %s): releasing %s",
                    self.namespace,
                    action.host,
                    action.proof,
                    action.outage_id,
                    ", ".join(action.vms) or "no VMs",
                )
            elif isinstance(action, m.PlaceVM):
                log.info(
                    "VM %s/%s placed on %s (epoch %d)",
                    self.namespace,
                    action.vm,
                    action.host,
                    action.epoch,
                )

    async def cancel(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    # -- power operations ------------------------------------------------------------
    def _spawn(self, action: m.CheckPower | m.SoftFence | m.RunFenceStep) -> None:
        task = asyncio.create_task(self._power(action), name=f"{type(action).__name__}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _power(self, action: m.CheckPower | m.SoftFence | m.RunFenceStep) -> None:
        try:
            self.elector.check()
            disruptive = isinstance(action, m.SoftFence) or (
                isinstance(action, m.RunFenceStep) and action.operation == "off"
            )
            result: m.Input
            if disruptive and await self._lease_renewed_unseen(action.host):
                # The renewal went to the core first: if it made the host Up the step
                # is abandoned and this result ignored; if not, the step failed
                # without touching the host, and escalation goes on from there.
                now, why = time.time(), "not run: the host's lease was renewed meanwhile"
                if isinstance(action, m.SoftFence):
                    result = m.SoftFenceResult(now, action.host, action.op_id, False, why)
                else:
                    assert isinstance(action, m.RunFenceStep)
                    result = m.FenceStepResult(
                        now,
                        action.host,
                        action.op_id,
                        {a: fp.AgentResult("error", why) for a in action.agents},
                    )
                await self.feed(result)
                return
            if isinstance(action, m.SoftFence):
                result = await self._soft_fence(action)
            elif isinstance(action, m.CheckPower):
                results = await self._on_agents(action.agents, "status", action.proxies)
                result = m.PowerStatusResult(
                    time.time(),
                    action.host,
                    action.op_id,
                    fp.status_verdict(results, action.agents),
                    fp.describe(results, action.agents),
                )
            else:
                results = await self._on_agents(action.agents, action.operation, action.proxies)
                result = m.FenceStepResult(time.time(), action.host, action.op_id, results)
            await self.feed(result)
        except NotLeader as exc:
            log.warning("not running %s for %s: %s", type(action).__name__, action.host, exc)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not kill the loop; the core times out the step
            log.exception("%s for host %s failed", type(action).__name__, action.host)

    async def _lease_renewed_unseen(self, host: str) -> bool:
        """S5 at the boundary: re-read the host's Lease right before a disruptive step.

        The core decided on the watch's view; if that view is stale (a watch stream
        that stalled, an operator shutting down) the lease may have been renewed since.
        A renewal we have not seen is fed to the core as a normal observation and the
        step is not run.  Compares renewTime values, so no clock is trusted."""
        try:
            lease = await asyncio.to_thread(
                self.api.coordination.read_namespaced_lease,
                host,
                self.namespace,
                _request_timeout=self.api.timeout,
            )
        except Exception as exc:  # unreadable: the watch's view stands
            log.warning(
                "host %s/%s: lease not re-read before fencing: %s", self.namespace, host, exc
            )
            return False
        obj: dict[str, Any] = self.api.client.sanitize_for_serialization(lease)
        seen = self.cache.get("Lease", self.namespace, host) or {}
        renewed = _renew_time(obj)
        if renewed is None or renewed == _renew_time(seen):
            return False
        log.warning(
            "host %s/%s: lease renewed at %s, unseen by the watch: not fencing",
            self.namespace,
            host,
            renewed,
        )
        await self.observe_lease(obj)
        return True

    async def _soft_fence(self, action: m.SoftFence) -> m.SoftFenceResult:
        host = self.cache.get("Host", self.namespace, action.host)
        if host is None:
            return m.SoftFenceResult(
                time.time(), action.host, action.op_id, False, "host no longer declared"
            )
        spec = HostSpec.model_validate(host["spec"])
        if spec.ssh is None:
            return m.SoftFenceResult(
                time.time(),
                action.host,
                action.op_id,
                False,
                "no spec.ssh: soft fencing not configured",
            )
        from hafence.fencing.ssh import soft_fence  # paramiko: loaded when first needed

        try:
            target = await self._ssh_target(action.host, spec)
            outcome = await soft_fence(
                target, spec.ssh.soft_fence_command, float(spec.ssh.timeout_seconds)
            )
        except (FenceError, KubeError) as exc:
            self.metrics.soft_fence(result_of(exc))
            return m.SoftFenceResult(time.time(), action.host, action.op_id, False, str(exc))
        ok = outcome.exit_status == 0
        self.metrics.soft_fence("success" if ok else "failure")
        message = f"exit {outcome.exit_status}" + (f": {outcome.output}" if outcome.output else "")
        return m.SoftFenceResult(time.time(), action.host, action.op_id, ok, message)

    async def _on_agents(
        self, agents: tuple[str, ...], operation: str, proxies: tuple[str, ...]
    ) -> dict[str, fp.AgentResult]:
        """One operation on every agent of a level at once (a concurrent group)."""
        answers = await asyncio.gather(
            *(self._on_agent(name, operation, proxies) for name in agents)
        )
        return dict(zip(agents, answers, strict=True))

    async def _on_agent(
        self, name: str, operation: str, proxies: tuple[str, ...]
    ) -> fp.AgentResult:
        obj = self.cache.get("FenceAgent", self.namespace, name)
        if obj is None:
            return fp.AgentResult("error", "fence agent no longer declared")
        spec = FenceAgentSpec.model_validate(obj["spec"])
        errors: list[str] = []
        for proxy_name in proxies or ("operator",):
            started = time.monotonic()
            try:
                credentials = await self._credentials(spec)
                proxy = None
                if proxy_name != "operator":
                    proxy = await self._proxy_target(proxy_name)
                driver = build_driver(spec, credentials, proxy, name=name)
                self.elector.check()  # S2: right before touching the power
                result: FenceResult = await getattr(driver, operation)()
            except FenceError as exc:
                self.metrics.fence_action(
                    spec.type, _action(operation), result_of(exc), time.monotonic() - started
                )
                errors.append(f"via {proxy_name}: {exc}")
                continue
            except KubeError as exc:
                errors.append(f"via {proxy_name}: {exc}")
                continue
            self.metrics.fence_action(
                spec.type, _action(operation), "success", time.monotonic() - started
            )
            power = result.power_state
            return fp.AgentResult(
                power if power in ("on", "off") else "error",
                f"via {proxy_name}" + (f": {result.message}" if result.message else ""),
            )
        return fp.AgentResult("error", "; ".join(errors))

    async def _credentials(self, spec: FenceAgentSpec) -> Credentials | None:
        return await asyncio.to_thread(load_credentials, self.api, self.namespace, spec)

    async def _proxy_target(self, host_name: str) -> SSHTarget:
        obj = self.cache.get("Host", self.namespace, host_name)
        if obj is None:
            raise KubeError(f"proxy host {host_name} no longer declared")
        return await self._ssh_target(host_name, HostSpec.model_validate(obj["spec"]))

    async def _ssh_target(self, name: str, spec: HostSpec) -> SSHTarget:
        return await asyncio.to_thread(ssh_target, self.api, self.namespace, name, spec)

    # -- status writes ---------------------------------------------------------------
    async def _write_status(
        self, kind: str, name: str, status: BaseModel, resource_version: str | None = None
    ) -> dict[str, Any] | None:
        self.elector.check()
        body = _status_patch(status)
        current = self.cache.get(kind, self.namespace, name)
        if current is not None:
            _stamp(body, current, kind)
        patch = {"status": body}
        try:
            obj = await asyncio.to_thread(
                self.api.patch,
                kind,
                self.namespace,
                name,
                patch,
                status=True,
                resource_version=resource_version,
            )
        except NotFound:
            return None  # deleted meanwhile: its DELETED event tells the core
        self.cache.put(kind, obj)
        return obj

    async def _write_vm(self, action: m.WriteVMStatus) -> None:
        if not action.placement_changed:
            try:
                await self._write_status("HAVirtualMachine", action.vm, action.status)
            except KubeError as exc:
                log.warning("VM %s/%s status not written: %s", self.namespace, action.vm, exc)
            return
        # A placement write: guarded by the resourceVersion we decided on.  A conflict
        # from the agent's runtime report is retried; one from another writer of the
        # placement means we are not alone (S2) and must stop.
        expected = _placement(self.cache.get("HAVirtualMachine", self.namespace, action.vm))
        for _ in range(_PLACEMENT_RETRIES):
            current = self.cache.get("HAVirtualMachine", self.namespace, action.vm)
            if current is None:
                return
            if _placement(current) != expected:
                raise NotLeader(
                    f"placement of VM {self.namespace}/{action.vm} changed by another "
                    f"writer ({_placement(current)} != {expected})"
                )
            try:
                await self._write_status(
                    "HAVirtualMachine",
                    action.vm,
                    action.status,
                    current["metadata"]["resourceVersion"],
                )
                return
            except Conflict:
                fresh = await asyncio.to_thread(
                    self.api.get, "HAVirtualMachine", self.namespace, action.vm
                )
                self.cache.put("HAVirtualMachine", fresh)
        raise KubeError(f"placement of VM {self.namespace}/{action.vm} kept conflicting")


def _renew_time(lease: Mapping[str, Any]) -> datetime | None:
    """A Lease's renewTime as a time: the watch and a GET serialize it differently."""
    raw = (lease.get("spec") or {}).get("renewTime")
    try:
        return parse_microtime(raw) if isinstance(raw, str) else None
    except LeaseError:
        return None


def _placement(obj: Mapping[str, Any] | None) -> tuple[Any, Any]:
    status = (obj or {}).get("status") or {}
    return status.get("host"), status.get("placementEpoch", 0)


def _status_patch(status: BaseModel) -> dict[str, Any]:
    """A merge patch that *replaces* our fields: None must clear a stale value, so nulls
    are kept; the agent's part of a VM status (``runtime``) is never touched."""
    body: dict[str, Any] = status.model_dump(by_alias=True, mode="json")
    body.pop("runtime", None)
    return body


def _stamp(body: dict[str, Any], current: Mapping[str, Any], kind: str) -> None:
    """Kubernetes' condition conventions, which only the shell can keep: the generation
    this status was computed from, and ``lastTransitionTime`` kept while a condition's
    status stays the same (the core has no clock of its own to remember it by)."""
    generation = current.get("metadata", {}).get("generation")
    if "observedGeneration" in body:
        body["observedGeneration"] = generation
    conditions = body.get("conditions")
    if kind == "Host" and isinstance(conditions, list) and body.get("phase"):
        phase = body["phase"]
        conditions.append(
            {
                "type": "Available",
                "status": "True" if phase == "Up" else "False",
                "reason": phase,
                "message": f"host is {phase}",
            }
        )
    if not isinstance(conditions, list):
        return
    previous = {c.get("type"): c for c in (current.get("status") or {}).get("conditions", [])}
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for condition in conditions:
        before = previous.get(condition.get("type"))
        if before is not None and before.get("status") == condition.get("status"):
            condition["lastTransitionTime"] = before.get("lastTransitionTime") or now
        else:
            condition["lastTransitionTime"] = now
        condition["observedGeneration"] = generation


def _action(operation: str) -> Any:
    return "status" if operation == "test" else operation
