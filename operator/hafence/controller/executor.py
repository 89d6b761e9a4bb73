"""Carry out the core's actions against the world, for one namespace (datacenter).

A dispatcher over the modules that do the work: power operations run as tasks
(``power.py``, results fed back through ``feed``), status writes run in the order the
core emitted them but for runs of one kind's writes, sent at once (``run``,
``status_writes.py``; their outcomes are returned to the caller, which gives them to
the core), Events go to the recorder, alerts and releases to the log.  Every power
operation and every write first checks leadership (S2).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from hafence.controller.cache import Cache
from hafence.controller.events import EventRecorder
from hafence.controller.kdump import KdumpWaits
from hafence.controller.leader import LeaderElector, NotLeader
from hafence.controller.lease_guard import LeaseGuard
from hafence.controller.metrics import Metrics
from hafence.controller.power import Feed, PowerOps
from hafence.controller.status_writes import StatusWriter
from hafence.core import messages as m
from hafence.fencing.kdump import KdumpListener
from hafence.kube import Api

log = logging.getLogger(__name__)

Handler = Callable[[Any], Awaitable[m.Input | None]]


# Actions that only log or post (no write awaited): they may follow a run of writes.
_AFTER_WRITES = (m.EmitEvent, m.PlaceVM)

Write = m.WriteVMStatus | m.WriteHostStatus


def _written(action: m.Action) -> str | None:
    """The object a write that may join a run is for (None: not such a write)."""
    if isinstance(action, m.WriteVMStatus):
        return action.vm
    if isinstance(action, m.WriteHostStatus):
        return action.host
    return None


def _write_run(actions: list[m.Action], start: int) -> tuple[list[Write], list[m.Action], int]:
    """The run of status writes of one kind, each for another object, from ``start``
    (Events and placement logs among them set aside), and where it ends; no run: none
    there.  One kind only: a Host's proof and the VM placements relying on it are
    never in flight together."""
    first = actions[start]
    if _written(first) is None:
        return [], [], start
    writes: list[Write] = []
    after: list[m.Action] = []
    names: set[str] = set()
    i = start
    while i < len(actions):
        action = actions[i]
        name = _written(action)
        if type(action) is type(first) and name is not None and name not in names:
            writes.append(cast(Write, action))
            names.add(name)
        elif isinstance(action, _AFTER_WRITES):
            after.append(action)
        else:
            break
        i += 1
    if len(writes) < 2:
        return [], [], start
    return writes, after, i


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
        kdump: KdumpListener | None = None,
    ) -> None:
        self.namespace = namespace
        self.cache = cache
        self.recorder = recorder
        self.guard = LeaseGuard(api, namespace, cache, observe_lease)
        self.power = PowerOps(api, namespace, cache, elector, metrics, feed, self.guard)
        self.writer = StatusWriter(api, namespace, cache, elector)
        self.kdump = KdumpWaits(namespace, cache, feed, self.guard, kdump)
        self._handlers: dict[type[Any], Handler] = {
            m.CheckPower: self._power,
            m.SoftFence: self._power,
            m.RunFenceStep: self._power,
            m.WaitForKdump: self._kdump,
            m.StepTimedOut: self._timed_out,
            m.WriteHostStatus: self.writer.host,
            m.WriteVMStatus: self.writer.vm,
            m.WriteConfirmationStatus: self.writer.confirmation,
            m.EmitEvent: self._event,
            m.Alert: self._alert,
            m.ReleaseVMs: self._release,
            m.PlaceVM: self._place,
        }

    async def run(self, actions: list[m.Action]) -> list[m.Input]:
        """Carry out ``actions`` in order; returns the write outcomes for the core.
        Raises NotLeader (leadership lost: nothing more may be done).

        In order, with one exception: a run of status writes of one kind (VM or Host)
        for distinct objects is written at once (a rack's expiry, release and placement
        batches are hundreds of them, and the namespace lock is held until they land).
        A write of the other kind, a second write of the same object or a power action
        ends the run, so a Host's proof still lands before the placements that follow
        it and one object's writes keep their order; the Events and placement logs
        inside the run follow its writes, in their order."""
        outcomes: list[m.Input] = []
        i = 0
        while i < len(actions):
            writes, after, i = _write_run(actions, i)
            if writes:
                outcomes += await self._write_together(writes)
                for action in after:
                    await self._handlers[type(action)](action)
                continue
            outcome = await self._handlers[type(actions[i])](actions[i])
            if outcome is not None:
                outcomes.append(outcome)
            i += 1
        return outcomes

    async def _write_together(self, writes: list[Write]) -> list[m.Input]:
        results = await asyncio.gather(
            *(self._handlers[type(w)](w) for w in writes), return_exceptions=True
        )
        for result in results:  # NotLeader first: it ends the leader's work
            if isinstance(result, NotLeader):
                raise result
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [r for r in results if r is not None and not isinstance(r, BaseException)]

    async def cancel(self) -> None:
        await self.power.cancel()
        await self.kdump.cancel()

    async def _power(self, action: m.CheckPower | m.SoftFence | m.RunFenceStep) -> None:
        self.power.start(action)

    async def _kdump(self, action: m.WaitForKdump) -> None:
        self.kdump.start(action)

    async def _timed_out(self, action: m.StepTimedOut) -> None:
        log.warning(
            "host %s/%s: %s got no result by the core's deadline (%s)",
            self.namespace,
            action.host,
            action.step,
            action.op_id,
        )
        if action.step == "kdump":
            self.kdump.timed_out(action)
        else:
            self.power.timed_out(action)

    async def _event(self, action: m.EmitEvent) -> None:
        obj = self.cache.get(action.kind, self.namespace, action.name)
        if obj is not None:
            self.recorder.post(obj, action.type, action.reason, action.message)

    async def _alert(self, action: m.Alert) -> None:
        level = logging.WARNING if action.active else logging.INFO
        log.log(
            level,
            "alert %s %s: %s",
            action.key,
            "raised" if action.active else "cleared",
            action.message,
        )

    async def _release(self, action: m.ReleaseVMs) -> None:
        log.warning(
            "host %s/%s proven off (%s, outage %s): releasing %s",
            self.namespace,
            action.host,
            action.proof,
            action.outage_id,
            ", ".join(action.vms) or "no VMs",
        )

    async def _place(self, action: m.PlaceVM) -> None:
        log.info(
            "VM %s/%s placed on %s (epoch %d)",
            self.namespace,
            action.vm,
            action.host,
            action.epoch,
        )
