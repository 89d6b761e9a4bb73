"""The shell around the core: one Engine per namespace (datacenter), fed by watch
events and by the clock, its actions carried out by an Executor.

Only the leader has engines.  On becoming leader it re-lists everything and rebuilds
each engine from what is persisted in status (so a restart or a failover resumes an
outage where it stood: same outage ID, attempt and level, no lost release); on losing
leadership it drops them and cancels every power operation in flight.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from typing import Any, TypeVar

from hafence.api.lease import HEARTBEAT_SELECTOR
from hafence.controller import clock
from hafence.controller.cache import Cache, resource_version_of
from hafence.controller.confirm import ConfirmAnnotations
from hafence.controller.events import EventRecorder
from hafence.controller.executor import Executor
from hafence.controller.leader import LeaderElector, NotLeader
from hafence.controller.lease_guard import renew_time
from hafence.controller.metrics import Metrics
from hafence.controller.observe import inputs_for, key
from hafence.controller.outages import Outages
from hafence.controller.policies import KIND as POLICY_KIND
from hafence.controller.policies import FencingPolicies
from hafence.controller.pools import READS
from hafence.core import messages as m
from hafence.core.engine import Engine
from hafence.core.policy import Settings as Policy
from hafence.fencing.kdump import KdumpListener
from hafence.kube import Api, KubeError

log = logging.getLogger(__name__)

# Replay order after (re)gaining leadership: hosts before what refers to them.
KINDS = ("Host", "FenceAgent", "Lease", "HAVirtualMachine", "FenceConfirmation")
# Seconds between ticks at most.  The monitor ticks when an input wakes it
# (Engine.wakes) or at the core's next deadline, which tests/core shows is exact (the
# scenarios and random failures log the same ticked every second or only then); this
# bounds what the core's model of time might still miss.
MAX_SLEEP = 5.0
# A released VM whose recovery is not measured within this long (it never ran again,
# or was deleted) is forgotten: the measurement is a histogram, not a ledger.
RECOVERY_WINDOW = 3600.0
# Before an Up host's lease is judged expired, the Leases are listed once more (at most
# this often per namespace): a watch stream that silently stopped after a network blip
# must not start outages -- the view is checked against the API server first.
LEASE_RECHECK_INTERVAL = 1.0
# While rebuilding, the loop is given back after this many objects: the leader's
# renewal runs on it, and 13,000 objects fed at one go held it past the renew deadline
# at 1,000 hosts (leadership lost in the middle of its own rebuild, bench/scale_shell).
REBUILD_SLICE = 64

T = TypeVar("T")


async def taking_turns(items: Iterable[T]) -> AsyncIterator[T]:
    """``items``, letting the loop run its other tasks every REBUILD_SLICE of them."""
    for i, item in enumerate(items):
        if i and i % REBUILD_SLICE == 0:
            await asyncio.sleep(0)
        yield item


def _log_failure(task: asyncio.Task[None]) -> None:
    """A background task's failure, in the log (nobody awaits it)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed", task.get_name(), exc_info=task.exception())


class Reconciler:
    def __init__(
        self,
        api: Api,
        policy: Policy,
        namespaces: tuple[str, ...],
        elector: LeaderElector,
        recorder: EventRecorder,
        metrics: Metrics,
        kdump: KdumpListener | None = None,
    ) -> None:
        self.api = api
        self.kdump = kdump  # the fence_kdump listener, shared by every namespace
        self.policy = policy
        self.namespaces = namespaces
        self.elector = elector
        self.recorder = recorder
        self.metrics = metrics
        self.cache = Cache()
        self.confirm = ConfirmAnnotations(api, self.cache, elector)
        self.outages = Outages(api, self.cache, elector)
        self.policies = FencingPolicies(api, self.cache, elector, policy)
        self.engines: dict[str, Engine] = {}
        self.executors: dict[str, Executor] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._wake = asyncio.Event()
        # True from the end of the rebuild after gaining leadership until it is lost:
        # watch events feed engines only then (before, the rebuild sees them anyway).
        self._active = False
        self._missed: list[tuple[str, dict[str, Any], bool]] = []
        # The resourceVersion of every object the rebuild fed: a missed event for an
        # object still at that version is not fed twice (at start-up, kopf's first
        # listing delivers every object while the rebuild runs).
        self._rebuilt: dict[tuple[str, str, str], str] = {}
        self._recovering: dict[tuple[str, str], float] = {}
        self._lease_checked: dict[str, float] = {}
        # Renewals the Lease watch delivered that no turn of the namespace's lock has fed
        # yet, the latest inputs of each Lease: whoever takes the lock next feeds them
        # first (``_renewals_first``), a task of their own if nobody else does.
        self._renewals: dict[str, dict[str, list[m.Input]]] = {}
        self._renewal_feeds: dict[str, asyncio.Task[None]] = {}
        # Each namespace's next deadline as of its last tick (None: none).
        self._scheduled: dict[str, float | None] = {}

    # -- inputs from the watches ---------------------------------------------------
    async def observe(self, kind: str, obj: dict[str, Any], deleted: bool = False) -> None:
        if deleted:
            self.cache.delete(kind, obj)
        elif not self.cache.put(kind, obj):
            return  # older than what we know
        if not self.elector.is_leader:
            return
        if kind == POLICY_KIND:  # not an input of the core but its settings; idempotent
            namespace = key(obj)[0]
            async with self._lock(namespace):
                await self.policies.sync(namespace, self.engines.get(namespace))
            self._wake.set()  # the deadlines follow the settings
            return
        if not self._active:
            # The rebuild read the cache before this arrived: fed once it is done.
            self._missed.append((kind, obj, deleted))
            return
        namespace, _ = key(obj)
        if kind == "Host" and not deleted:
            await self.confirm.handle(obj, self.engines.get(namespace))
        if namespace not in self.engines and kind == "Host" and not deleted:
            await self._start_engine(namespace, clock.now())
            return
        await self.feed(namespace, inputs_for(kind, obj, clock.now(), deleted=deleted))

    async def observe_leases(self, batch: list[tuple[dict[str, Any], bool]]) -> None:
        """Heartbeat Leases from the Lease watch, (lease, deleted) a batch at a time: into
        the cache at once, and to the core at the next turn of the namespace's lock,
        before anything else that turn does -- never one turn per renewal, and never
        the watch waiting for the lock.  Waiting there, at 1,000 hosts, a failing
        rack's writes held a thousand renewals back (bench/README.md, Scale (shell)),
        every tick and power result queued among them."""
        now = clock.now()
        touched: set[str] = set()
        for obj, deleted in batch:
            if deleted:
                self.cache.delete("Lease", obj)
            elif not self.cache.put("Lease", obj):
                continue  # older than what we know
            if not self.elector.is_leader:
                continue
            if not self._active:
                self._missed.append(("Lease", obj, deleted))
                continue
            namespace, name = key(obj)
            pending = self._renewals.setdefault(namespace, {})
            pending[name] = inputs_for("Lease", obj, now, deleted=deleted)
            touched.add(namespace)
        for namespace in touched:
            feeding = self._renewal_feeds.get(namespace)
            if feeding is None or feeding.done():
                task = asyncio.create_task(self._feed_renewals(namespace), name="renewals")
                task.add_done_callback(_log_failure)
                self._renewal_feeds[namespace] = task

    async def _feed_renewals(self, namespace: str) -> None:
        while self._renewals.get(namespace) and namespace in self.engines:
            await self.feed(namespace, ())

    def _renewals_first(self, namespace: str) -> list[m.Input]:
        """The renewals waiting for this turn of the lock, taken: the turn feeds them
        before anything else, so a tick or a power result never judges a lease the cache
        has seen renewed and the core has not."""
        return [inp for inputs in self._renewals.pop(namespace, {}).values() for inp in inputs]

    async def observe_again(self, kind: str, obj: dict[str, Any], deleted: bool) -> None:
        """Feed an object the cache already holds (it arrived while rebuilding)."""
        namespace, name = key(obj)
        current = self.cache.get(kind, namespace, name)
        if deleted and current is None:
            await self.feed(namespace, inputs_for(kind, obj, clock.now(), deleted=True))
        elif current is not None:
            if self._rebuilt.get((kind, namespace, name)) == resource_version_of(current):
                return  # the rebuild fed this very version
            await self.feed(namespace, inputs_for(kind, current, clock.now()))

    async def feed(self, namespace: str, inputs: Iterable[m.Input]) -> None:
        async with self._lock(namespace):
            engine = self.engines.get(namespace)
            if engine is None:
                return
            wake = await self._handle(namespace, engine, self._renewals_first(namespace))
            wake = await self._handle(namespace, engine, inputs) or wake
        if wake:
            self._wake.set()

    async def _handle(self, namespace: str, engine: Engine, inputs: Iterable[m.Input]) -> bool:
        """Inputs to the core and their actions carried out (the caller holds the lock);
        True: the monitor must tick."""
        wake = False
        for inp in inputs:
            actions = engine.handle(inp)
            wake = wake or engine.wakes(inp, actions, self._scheduled.get(namespace))
            await self._run(namespace, actions)
        return wake

    async def _feed_one(self, namespace: str, inp: m.Input) -> None:
        self.outages.result(namespace, inp)
        await self.feed(namespace, [inp])

    async def _run(self, namespace: str, actions: list[m.Action]) -> None:
        """Carry out actions; the outcomes of their writes go back to the core (whose
        answer to a failure is a retry later, never at once: this ends)."""
        engine = self.engines.get(namespace)
        while actions and engine is not None:
            self.outages.observe(namespace, actions)
            self._measure_recovery(namespace, actions)
            try:
                outcomes = await self.executors[namespace].run(actions)
            except NotLeader as exc:
                log.error("lost leadership while acting in %s: %s", namespace, exc)
                self._wake.set()
                return
            actions = [a for o in outcomes for a in engine.handle(o)]

    def _measure_recovery(self, namespace: str, actions: list[m.Action]) -> None:
        """hafence_vm_recovery_seconds: from the fault (the outage start of the host that
        released the VM) to the VM reported Running again."""
        engine = self.engines.get(namespace)
        for action in actions:
            if isinstance(action, m.ReleaseVMs) and engine is not None:
                host = engine.hosts.get(action.host)
                if host is not None and host.outage_start is not None:
                    for vm in action.vms:
                        self._recovering[(namespace, vm)] = host.outage_start
            elif isinstance(action, m.WriteVMStatus) and action.status.phase == "Running":
                started = self._recovering.pop((namespace, action.vm), None)
                if started is not None:
                    self.metrics.vm_recovered(max(clock.now() - started, 0.0))
        self._prune_recovering(clock.now())

    def _prune_recovering(self, now: float) -> None:
        for key_, started in list(self._recovering.items()):
            namespace, vm = key_
            engine = self.engines.get(namespace)
            if engine is None or vm not in engine.vms or now - started > RECOVERY_WINDOW:
                del self._recovering[key_]

    async def _lease_reread(self, namespace: str, lease: dict[str, Any]) -> None:
        """A Lease the executor re-read before a disruptive step: into the cache and
        straight to the core, whatever the watches are doing."""
        self.cache.put("Lease", lease)
        await self.feed(namespace, inputs_for("Lease", lease, clock.now()))

    def _lock(self, namespace: str) -> asyncio.Lock:
        return self._locks.setdefault(namespace, asyncio.Lock())

    # -- leadership --------------------------------------------------------------------
    async def run(self) -> None:
        """Forever: wait for leadership, act while leading, stand down when it ends."""
        while True:
            epoch = await self.elector.wait_until_leader()
            log.info("leading (epoch %d): rebuilding state from the API server", epoch)
            try:
                await self._start_leading()
            except KubeError as exc:  # e.g. 429 while the apiserver warms up: try again
                log.warning("could not rebuild state, retrying: %s", exc)
                await self._stop_leading()
                await asyncio.sleep(1.0)
                continue
            self._active = True
            missed, self._missed = self._missed, []
            async for kind, obj, deleted in taking_turns(missed):
                await self.observe_again(kind, obj, deleted)
            self._rebuilt = {}
            monitor = asyncio.create_task(self._monitor(), name="monitor")
            try:
                await self.elector.wait_until_not_leader()
            finally:
                monitor.cancel()
                await asyncio.gather(monitor, return_exceptions=True)
                await self._stop_leading()
            log.warning("not leading any more: standing by")

    async def _start_leading(self) -> None:
        started = time.monotonic()
        objects = 0
        for kind in (POLICY_KIND, *KINDS):
            listed = await READS.run(self._list, kind)
            objects += len(listed)
            async for obj in taking_turns(listed):
                self.cache.put(kind, obj)
        listed_at = time.monotonic()
        now = clock.now()
        namespaces = {key(o)[0] for o in self._all("Host")}
        for namespace in sorted(namespaces):
            await self._start_engine(namespace, now)
        log.info(
            "state rebuilt in %.1fs: %d objects listed in %.1fs, %d namespaces fed in %.1fs",
            time.monotonic() - started,
            objects,
            listed_at - started,
            len(namespaces),
            time.monotonic() - listed_at,
        )

    async def _start_engine(self, namespace: str, now: float) -> None:
        async with self._lock(namespace):
            if namespace in self.engines:
                return
            engine = Engine(self.policies.settings(namespace), namespace)
            self.engines[namespace] = engine
            self.executors[namespace] = Executor(
                self.api,
                namespace,
                self.cache,
                self.elector,
                self.recorder,
                self.metrics,
                functools.partial(self._feed_one, namespace),
                functools.partial(self._lease_reread, namespace),
                self.kdump,
            )
            await self.policies.sync(namespace, engine)
            await self._run(namespace, engine.handle(m.OperatorStarted(now)))
            for kind in KINDS:
                async for obj in taking_turns(list(self.cache.of_kind(kind, namespace))):
                    self._rebuilt[(kind, namespace, key(obj)[1])] = resource_version_of(obj)
                    for inp in inputs_for(kind, obj, now):
                        await self._run(namespace, engine.handle(inp))
        self._wake.set()

    async def _stop_leading(self) -> None:
        self._active = False
        self._missed = []
        self._renewals = {}
        self._rebuilt = {}
        for namespace in list(self.engines):
            async with self._lock(namespace):  # let a batch of actions finish first
                self.engines.pop(namespace, None)
                self._scheduled.pop(namespace, None)
        executors = list(self.executors.values())
        self.executors.clear()
        for executor in executors:
            await executor.cancel()
        self._update_metrics()

    def _list(self, kind: str) -> list[dict[str, Any]]:
        targets: tuple[str | None, ...] = self.namespaces or (None,)
        out: list[dict[str, Any]] = []
        for namespace in targets:
            if kind == "Lease":
                out += self.api.list_leases(namespace, HEARTBEAT_SELECTOR)
            else:
                out += self.api.list(kind, namespace)["items"]
        return out

    def _all(self, kind: str) -> list[dict[str, Any]]:
        return [o for ns in self.cache.namespaces() for o in self.cache.of_kind(kind, ns)]

    # -- time ------------------------------------------------------------------------
    async def _monitor(self) -> None:
        """Tick every engine when its next deadline comes (at most MAX_SLEEP apart)."""
        while True:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # time must keep passing for the core
                log.exception("monitor tick failed")
                await asyncio.sleep(MAX_SLEEP)

    async def _recheck_leases(self, namespace: str, now: float) -> None:
        """List the namespace's Leases and feed the renewals the watch did not deliver."""
        engine = self.engines.get(namespace)
        if engine is None or not engine.expiring(now):
            return
        if now - self._lease_checked.get(namespace, -math.inf) < LEASE_RECHECK_INTERVAL:
            return
        self._lease_checked[namespace] = now
        try:
            leases = await READS.run(self.api.list_leases, namespace, HEARTBEAT_SELECTOR)
        except KubeError as exc:
            log.warning("leases of %s not re-listed before expiry: %s", namespace, exc)
            return
        fresh = []
        for lease in leases:
            _, name = key(lease)
            seen = self.cache.get("Lease", namespace, name)
            renewed = seen is None or renew_time(seen) != renew_time(lease)
            if renewed and self.cache.put("Lease", lease):
                fresh.append(lease)
        if fresh:
            log.warning(
                "%d lease renewal(s) in %s not delivered by the watch: fed from a re-list",
                len(fresh),
                namespace,
            )
        now = clock.now()
        await self.feed(namespace, [i for lease in fresh for i in inputs_for("Lease", lease, now)])

    async def _tick(self) -> None:
        # Cleared before, not after: an input handled while this tick awaits its writes
        # must wake the next one.
        self._wake.clear()
        self.metrics.ticks.inc()
        now = clock.now()
        deadlines: list[float] = []
        for namespace in list(self.engines):
            await self._recheck_leases(namespace, now)
            async with self._lock(namespace):
                engine = self.engines.get(namespace)
                if engine is None:
                    continue
                # The tick sets its own next deadline: no wake needed.
                await self._handle(namespace, engine, self._renewals_first(namespace))
                await self._run(namespace, engine.tick(now))
                nxt = self._scheduled[namespace] = engine.next_deadline(now)
                if nxt is not None:
                    deadlines.append(nxt)
        self._update_metrics()
        delay = MAX_SLEEP
        if deadlines:
            delay = min(max(min(deadlines) - clock.now(), 0.01), MAX_SLEEP)
        try:
            await asyncio.wait_for(self._wake.wait(), delay)
        except TimeoutError:
            pass

    def _update_metrics(self) -> None:
        hosts: Counter[str] = Counter()
        vms: Counter[str] = Counter()
        held: Counter[str] = Counter()
        for engine in self.engines.values():
            hosts.update(h.phase.value for h in engine.hosts.values())
            vms.update(v.phase for v in engine.vms.values())
            held.update(h.held for h in engine.hosts.values() if h.held and h.outage_id)
        self.metrics.set_host_phases(hosts)
        self.metrics.set_vm_phases(vms)
        self.metrics.set_fence_holds(held)
