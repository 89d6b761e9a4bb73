"""The outage record: a HostOutage per host outage, kept after the Events expire.

An observer of the core's action stream (:meth:`Outages.observe`, called by the
Reconciler for every batch of actions) and of the power results that go back to the
core (:meth:`Outages.result`).  From those it keeps, per host outage: the phases and
their times, every soft-fence and fence operation (agent, proxy, result, duration),
the proof that released the VMs, where each VM went and when it ran again.

It also logs one structured line per power step (host, outage, level, agent, result,
duration) at info level: the operator's log says what it did to a host's power without
anyone reading Events or code.

Writes are batched: the record is written (created, then its status patched) when the
host's phase changes and when the last released VM runs again, never per event.  The
record's name is the outage ID, so a new leader picks up the same record.  Retention:
at most ``history`` records per host, finished ones at most ``max_age`` seconds old.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hafence.api.base import API_VERSION
from hafence.api.confirmation import CONFIRMED_BY_ANNOTATION
from hafence.api.host import NO_OUTAGE_PHASES
from hafence.api.lease import HOST_LABEL
from hafence.api.outage import AttemptEntry, HostOutageStatus, PhaseEntry, Proof, ReleasedVM
from hafence.controller.cache import Cache
from hafence.controller.leader import LeaderElector, NotLeader
from hafence.controller.logs import fields
from hafence.controller.pools import RECORDS
from hafence.core import messages as m
from hafence.kube import Api, Conflict, KubeError, NotFound

log = logging.getLogger(__name__)

CLOSING_PHASES = NO_OUTAGE_PHASES  # the host is back (or in maintenance): the record closes
_VIA = re.compile(r"\bvia ([A-Za-z0-9][-A-Za-z0-9.]*)")


def _utc(t: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, dt.UTC).replace(microsecond=0)


@dataclass
class _Step:
    """A power operation issued by the core, waiting for its result."""

    kind: str  # power-status | soft-fence | fence
    host: str
    outage_id: str
    started: float  # wall clock, for the record
    started_mono: float
    agents: tuple[str, ...] = ()
    proxies: tuple[str, ...] = ()
    attempt: int | None = None
    level: int | None = None
    step: str | None = None


@dataclass
class _Record:
    namespace: str
    host: str
    outage_id: str
    status: HostOutageStatus
    written: bool = False  # exists on the API server (created or found)
    dirty: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Outages:
    def __init__(
        self,
        api: Api,
        cache: Cache,
        elector: LeaderElector,
        *,
        history: int = 20,
        max_age: float = 30 * 24 * 3600.0,
    ) -> None:
        self.api = api
        self.cache = cache
        self.elector = elector
        self.history = history
        self.max_age = max_age
        self._steps: dict[tuple[str, str], _Step] = {}
        self._records: dict[tuple[str, str], _Record] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- what the core does -------------------------------------------------------------
    def observe(self, namespace: str, actions: Iterable[m.Action]) -> None:
        """Every batch of actions the core emits, in order (never raises)."""
        try:
            for action in actions:
                self._action(namespace, action)
        except Exception:  # the record is a by-product: it must never stop fencing
            log.exception("outage record: action not recorded")

    def result(self, namespace: str, inp: m.Input) -> None:
        """A power result on its way back to the core."""
        try:
            if isinstance(
                inp, m.PowerStatusResult | m.SoftFenceResult | m.FenceStepResult | m.KdumpResult
            ):
                self._result(namespace, inp)
        except Exception:
            log.exception("outage record: result not recorded")

    def _action(self, ns: str, action: m.Action) -> None:
        now, mono = time.time(), time.monotonic()
        step: _Step | None = None
        if isinstance(action, m.CheckPower):
            step = _Step("power-status", action.host, action.outage_id, now, mono)
            step.agents, step.proxies, step.step = action.agents, action.proxies, "status"
        elif isinstance(action, m.SoftFence):
            step = _Step("soft-fence", action.host, action.outage_id, now, mono)
        elif isinstance(action, m.RunFenceStep):
            step = _Step("fence", action.host, action.outage_id, now, mono)
            step.agents, step.proxies, step.step = action.agents, action.proxies, action.step
            step.attempt, step.level = action.attempt, action.level
        elif isinstance(action, m.WaitForKdump):
            step = _Step("fence", action.host, action.outage_id, now, mono)
            step.agents, step.step = action.agents, "kdump"
            step.attempt, step.level = action.attempt, action.level
        if step is not None and isinstance(
            action, m.CheckPower | m.SoftFence | m.RunFenceStep | m.WaitForKdump
        ):
            self._steps[(ns, action.op_id)] = step
        if isinstance(action, m.WriteHostStatus):
            self._host_status(ns, action, now)
        elif isinstance(action, m.ReleaseVMs):
            rec = self._record_of(ns, action.host, action.outage_id, now)
            rec.status.proof = self._proof(ns, rec, action.proof, now)
            known = {v.name for v in rec.status.vms}
            rec.status.vms += [ReleasedVM(name=vm) for vm in action.vms if vm not in known]
            if not action.vms:
                rec.status.recovery_seconds = self._since_start(rec, now)
        elif isinstance(action, m.WriteConfirmationStatus):
            # The core knows nothing of annotations: who made the confirmation (as the
            # API server recorded it) joins its status here, before the executor writes.
            obj = self.cache.get("FenceConfirmation", ns, action.name) or {}
            by = (obj.get("metadata", {}).get("annotations") or {}).get(CONFIRMED_BY_ANNOTATION)
            action.status.confirmed_by = by
            outage = action.status.outage_id
            applied = self._records.get((ns, (outage or "").rsplit("-", 1)[0]))
            if action.status.phase == "Applied" and applied and applied.outage_id == outage:
                applied.status.proof = self._proof(ns, applied, "confirmation", now, action.name)
        elif isinstance(action, m.PlaceVM):
            # A restart elsewhere carries no previous host: a released VM is found by name.
            for other in self._records.values():
                vm = _vm(other, action.vm) if other.namespace == ns else None
                if vm is not None and other.host != action.host:
                    vm.to_host, vm.placed_time, vm.running_time = action.host, _utc(now), None
        elif isinstance(action, m.WriteVMStatus) and action.status.phase == "Running":
            self._vm_running(ns, action, now)

    def _host_status(self, ns: str, action: m.WriteHostStatus, now: float) -> None:
        status = action.status
        phase = status.phase
        fencing = status.fencing
        rec = self._records.get((ns, action.host))
        new_outage = fencing is not None and fencing.outage_id and phase not in CLOSING_PHASES
        if new_outage and fencing and (rec is None or rec.outage_id != fencing.outage_id):
            if rec is not None:
                self._close(rec, now)
            start = fencing.outage_start_time
            rec = self._record_of(
                ns, action.host, str(fencing.outage_id), start.timestamp() if start else now
            )
        if rec is None or phase is None:
            return
        if phase in CLOSING_PHASES:
            self._close(rec, now)
            return
        if not rec.status.phases or rec.status.phases[-1].phase != phase:
            since = status.phase_since or _utc(now)
            rec.status.phases.append(PhaseEntry(phase=phase, time=since))
            rec.status.state = phase  # type: ignore[assignment]  # an outage phase
            self._flush(rec)

    def _vm_running(self, ns: str, action: m.WriteVMStatus, now: float) -> None:
        for rec in list(self._records.values()):
            vm = _vm(rec, action.vm) if rec.namespace == ns else None
            if vm is None or vm.running_time is not None or vm.to_host is None:
                continue
            if action.status.host != vm.to_host:
                continue
            vm.running_time = _utc(now)
            if all(v.running_time is not None for v in rec.status.vms):
                rec.status.recovery_seconds = self._since_start(rec, now)
                self._flush(rec)
                if rec.status.state == "Closed":
                    self._records.pop((rec.namespace, rec.host), None)

    def _result(
        self,
        ns: str,
        inp: m.PowerStatusResult | m.SoftFenceResult | m.FenceStepResult | m.KdumpResult,
    ) -> None:
        step = self._steps.pop((ns, inp.op_id), None)
        if step is None:
            return
        seconds = round(max(time.monotonic() - step.started_mono, 0.0), 3)
        entries: list[AttemptEntry] = []
        if isinstance(inp, m.SoftFenceResult):
            entries.append(
                AttemptEntry(
                    kind="soft-fence",
                    start_time=_utc(step.started),
                    duration_seconds=seconds,
                    result="success" if inp.ok else "failure",
                    message=inp.message[:500],
                )
            )
        elif isinstance(inp, m.KdumpResult):
            # One entry for the level: the agent whose address sent the message, if any.
            agent = inp.agent or ",".join(step.agents)
            entries.append(
                AttemptEntry(
                    kind="fence",
                    start_time=_utc(step.started),
                    duration_seconds=seconds,
                    result="kdump" if inp.seen else "failure",
                    attempt=step.attempt,
                    level=step.level,
                    step="kdump",
                    agent=agent or None,
                    agent_type=self._agent_type(ns, inp.agent) if inp.agent else None,
                    message=inp.message[:500],
                )
            )
        elif isinstance(inp, m.PowerStatusResult):
            entries.append(
                AttemptEntry(
                    kind="power-status",
                    start_time=_utc(step.started),
                    duration_seconds=seconds,
                    result=inp.power,
                    step="status",
                    agent=",".join(step.agents) or None,
                    proxy=_proxy(inp.message, step.proxies),
                    message=inp.message[:500],
                )
            )
        else:
            for agent in step.agents:
                answer = inp.results.get(agent)
                entries.append(
                    AttemptEntry(
                        kind="fence",
                        start_time=_utc(step.started),
                        duration_seconds=seconds,
                        result=answer.power if answer is not None else "error",
                        attempt=step.attempt,
                        level=step.level,
                        step=step.step,
                        agent=agent,
                        agent_type=self._agent_type(ns, agent),
                        proxy=_proxy(answer.message if answer else "", step.proxies),
                        message=(answer.message if answer else "no answer")[:500],
                    )
                )
        for entry in entries:
            log.info(
                "%s %s of host %s/%s%s: %s in %.2fs",
                entry.kind,
                entry.step or "",
                ns,
                step.host,
                f" via {entry.agent}" if entry.agent else "",
                entry.result,
                seconds,
                extra=fields(
                    namespace=ns,
                    host=step.host,
                    outage=step.outage_id,
                    kind=entry.kind,
                    attempt=entry.attempt,
                    level=entry.level,
                    step=entry.step,
                    agent=entry.agent,
                    agent_type=entry.agent_type,
                    proxy=entry.proxy,
                    result=entry.result,
                    duration=seconds,
                    # Why it failed, as the record says it (no secrets: drivers' messages
                    # never carry credentials); a success says it in its result.
                    message=entry.message if entry.result in ("error", "failure") else None,
                ),
            )
        rec = self._records.get((ns, step.host))
        if rec is not None and rec.outage_id == step.outage_id:
            rec.status.attempts += entries

    # -- the record ---------------------------------------------------------------------
    def _record_of(self, ns: str, host: str, outage_id: str, start: float) -> _Record:
        rec = self._records.get((ns, host))
        if rec is None or rec.outage_id != outage_id:
            rec = _Record(
                ns, host, outage_id, HostOutageStatus(start_time=_utc(start), state="Connecting")
            )
            self._records[(ns, host)] = rec
        return rec

    def _close(self, rec: _Record, now: float) -> None:
        if rec.status.state == "Closed":
            return
        rec.status.state = "Closed"
        rec.status.end_time = _utc(now)
        # Steps whose answer never came (abandoned, or issued by a lost term): bounded memory.
        for key in [k for k, st in self._steps.items() if st.outage_id == rec.outage_id]:
            del self._steps[key]
        rec.status.phases.append(PhaseEntry(phase="Closed", time=_utc(now)))
        rec.status.duration_seconds = int(self._since_start(rec, now) or 0)
        self._flush(rec)
        if all(v.running_time is not None for v in rec.status.vms):
            self._records.pop((rec.namespace, rec.host), None)

    def _since_start(self, rec: _Record, now: float) -> float | None:
        start = rec.status.start_time
        return None if start is None else round(max(now - start.timestamp(), 0.0), 1)

    def _proof(
        self, ns: str, rec: _Record, kind: str, now: float, confirmation: str | None = None
    ) -> Proof:
        previous = rec.status.proof
        if kind == "confirmation":
            name = confirmation or (previous.confirmation if previous else None)
            obj = self.cache.get("FenceConfirmation", ns, name) if name else None
            meta = (obj or {}).get("metadata", {})
            return Proof(
                type="confirmation",
                time=previous.time if previous else _utc(now),
                confirmation=name,
                reason=((obj or {}).get("spec") or {}).get("reason"),
                confirmed_by=(meta.get("annotations") or {}).get(CONFIRMED_BY_ANNOTATION),
            )
        if kind == "self-fence":
            return Proof(type="self-fence", time=_utc(now))
        if kind == "kdump":  # the agent whose address sent the fence_kdump message
            heard = next(
                (a.agent for a in reversed(rec.status.attempts) if a.result == "kdump"), None
            )
            return Proof(type="kdump", time=_utc(now), agent=heard)
        # fence: the agent whose "off" (or verify) answer proved it
        agent = next(
            (
                a.agent
                for a in reversed(rec.status.attempts)
                if a.kind == "fence" and a.result == "off"
            ),
            None,
        )
        return Proof(type="fence", time=_utc(now), agent=agent)

    def _agent_type(self, ns: str, agent: str | None) -> str | None:
        obj = self.cache.get("FenceAgent", ns, agent) if agent else None
        value = ((obj or {}).get("spec") or {}).get("type")
        return str(value) if value is not None else None

    # -- writing ------------------------------------------------------------------------
    def _flush(self, rec: _Record) -> None:
        rec.dirty = True
        task = asyncio.get_running_loop().create_task(self._write(rec), name="outage-record")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, rec: _Record) -> None:
        async with rec.lock:  # one write at a time per record; a later one carries all
            if not rec.dirty:
                return
            rec.dirty = False
            body = {"status": rec.status.model_dump(by_alias=True, mode="json", exclude_none=True)}
            try:
                self.elector.check()
                if not rec.written:
                    await self._create(rec)
                await RECORDS.run(
                    self.api.patch, "HostOutage", rec.namespace, rec.outage_id, body, status=True
                )
            except NotLeader as exc:
                log.info("outage %s/%s not written: %s", rec.namespace, rec.outage_id, exc)
            except KubeError as exc:
                rec.dirty = True  # the next phase change writes it all
                log.warning("outage %s/%s not written: %s", rec.namespace, rec.outage_id, exc)

    async def _create(self, rec: _Record) -> None:
        host = self.cache.get("Host", rec.namespace, rec.host) or {}
        uid = host.get("metadata", {}).get("uid")
        meta: dict[str, Any] = {"name": rec.outage_id, "labels": {HOST_LABEL: rec.host}}
        if uid:
            meta["ownerReferences"] = [
                {"apiVersion": API_VERSION, "kind": "Host", "name": rec.host, "uid": uid}
            ]
        body = {
            "apiVersion": API_VERSION,
            "kind": "HostOutage",
            "metadata": meta,
            "spec": {"hostRef": {"name": rec.host}, "outageID": rec.outage_id},
        }
        try:
            await RECORDS.run(self.api.create, "HostOutage", rec.namespace, body)
        except Conflict:
            # Made by a previous leader: keep what it recorded before this replica saw it.
            existing = await RECORDS.run(self.api.get, "HostOutage", rec.namespace, rec.outage_id)
            _merge(rec.status, HostOutageStatus.model_validate(existing.get("status") or {}))
        rec.written = True
        await self._prune(rec.namespace, rec.host)

    async def _prune(self, ns: str, host: str) -> None:
        items = (await RECORDS.run(self.api.list, "HostOutage", ns, f"{HOST_LABEL}={host}"))[
            "items"
        ]
        items.sort(key=lambda o: (o.get("status") or {}).get("startTime") or "", reverse=True)
        cutoff = time.time() - self.max_age
        for index, obj in enumerate(items):
            status = obj.get("status") or {}
            ended = status.get("endTime")
            old = ended is not None and _seconds(ended) < cutoff
            if index >= self.history or old:
                name = obj["metadata"]["name"]
                try:
                    await RECORDS.run(self.api.delete, "HostOutage", ns, name)
                    log.info("outage record %s/%s deleted (retention)", ns, name)
                except NotFound:
                    pass


def _merge(mine: HostOutageStatus, older: HostOutageStatus) -> None:
    """Put what an earlier leader recorded in front of what this replica saw since."""
    mine.start_time = older.start_time or mine.start_time
    seen = {(p.phase, p.time) for p in mine.phases}
    mine.phases = [p for p in older.phases if (p.phase, p.time) not in seen] + mine.phases
    mine.attempts = older.attempts + mine.attempts
    mine.proof = mine.proof or older.proof
    names = {v.name for v in mine.vms}
    mine.vms = [v for v in older.vms if v.name not in names] + mine.vms


def _vm(rec: _Record | None, name: str) -> ReleasedVM | None:
    if rec is None:
        return None
    return next((v for v in rec.status.vms if v.name == name), None)


def _proxy(message: str, candidates: tuple[str, ...]) -> str | None:
    """The proxy an answer came through: the executor names it ("via NAME") on
    failures and on answers without a message of their own."""
    found = _VIA.findall(message)
    if found:
        return str(found[-1])
    return candidates[0] if len(candidates) == 1 else None


def _seconds(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def timeline(outage: Mapping[str, Any]) -> list[str]:
    """A HostOutage as lines of text, in time order, offsets from the outage start."""
    spec = outage.get("spec") or {}
    status = HostOutageStatus.model_validate(outage.get("status") or {})
    start = status.start_time
    base = start.timestamp() if start else 0.0

    def at(t: dt.datetime | None) -> str:
        return "      ?" if t is None else f"{t.timestamp() - base:+7.1f}s"

    host = (spec.get("hostRef") or {}).get("name", "?")
    rows: list[tuple[float, str]] = []
    for ph in status.phases:
        rows.append((ph.time.timestamp(), f"{at(ph.time)}  phase    {host:<10} {ph.phase}"))
    for a in status.attempts:
        what = a.kind if a.kind != "fence" else f"fence attempt {a.attempt} level {a.level}"
        agent = f" {a.agent}" + (f" ({a.agent_type})" if a.agent_type else "") if a.agent else ""
        via = f" via {a.proxy}" if a.proxy else ""
        took = f" in {a.duration_seconds:.2f}s" if a.duration_seconds is not None else ""
        step = f" {a.step}" if a.step and a.kind == "fence" else ""
        detail = f": {a.message}" if a.message and a.result in ("error", "failure") else ""
        rows.append(
            (
                a.start_time.timestamp(),
                f"{at(a.start_time)}  {'power' if a.kind != 'soft-fence' else 'ssh':<8} "
                f"{host:<10} {what}{step}{agent}{via}: {a.result}{took}{detail}",
            )
        )
    if status.proof is not None:
        p = status.proof
        said = ""
        if p.type == "confirmation":
            said = f" {p.confirmation} by {p.confirmed_by or '(unknown user)'}: {p.reason!r}"
        elif p.agent:
            said = f" by {p.agent}"
        rows.append((p.time.timestamp(), f"{at(p.time)}  proof    {host:<10} {p.type}{said}"))
    for vm in status.vms:
        if vm.placed_time is not None:
            rows.append(
                (
                    vm.placed_time.timestamp(),
                    f"{at(vm.placed_time)}  vm       {vm.name:<10} placed on {vm.to_host}",
                )
            )
        if vm.running_time is not None:
            rows.append(
                (
                    vm.running_time.timestamp(),
                    f"{at(vm.running_time)}  vm       {vm.name:<10} Running on {vm.to_host}",
                )
            )
        if vm.placed_time is None:
            rows.append((float("inf"), f"{'':>8}  vm       {vm.name:<10} released, not placed"))
    rows.sort(key=lambda r: r[0])
    head = (
        f"outage {spec.get('outageID', '?')} of host {host}: {status.state or '?'}, "
        f"started {start.isoformat() if start else '?'}"
    )
    tail = []
    if status.recovery_seconds is not None:
        tail.append(f"time to recovery: {status.recovery_seconds:.1f}s")
    if status.duration_seconds is not None:
        tail.append(f"outage lasted {status.duration_seconds}s")
    return [head, *(r[1] for r in rows), *tail]
