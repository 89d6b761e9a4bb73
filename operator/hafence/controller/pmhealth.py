"""Power management checked before it matters (oVirt's PMHealthCheckIntervalInSec).

The leader reads every FenceAgent's power status once per ``interval`` seconds, each
agent at its own offset inside the interval (a hash of its name), so a thousand agents
are not asked at once.  At most one check per BMC (address and port) runs at a time,
and a BMC is asked at most once per ``bmc_gap`` seconds: a PDU feeding many hosts or a
chassis manager serving many blades is not flooded.  A host in an outage is never
checked: the fencing path owns its BMC then, and a check could stand in its way.

The result goes where ``hafence fence-agent test`` puts it (the FenceAgent's status:
lastTestTime, lastTestResult, powerState, the Reachable condition: one writer, the same
code) and into the metrics ``hafence_fence_agent_reachable`` and
``hafence_fence_attempts_total{action="status"}``, which the alert
HafenceFenceAgentUnreachable watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from hafence.api.fenceagent import KDUMP_TYPES
from hafence.api.host import NO_OUTAGE_PHASES
from hafence.controller.cache import Cache
from hafence.controller.leader import LeaderElector, NotLeader
from hafence.controller.logs import fields
from hafence.controller.metrics import Metrics, result_of
from hafence.core.engine import Engine
from hafence.fencing.agent_status import run_test
from hafence.fencing.errors import FenceError
from hafence.kube import Api, KubeError

log = logging.getLogger(__name__)

# Phases in which nobody else talks to the host's BMC: no outage, no fencing.
CHECKED_PHASES = NO_OUTAGE_PHASES
TICK = 0.5  # seconds between looks at what is due
CONCURRENCY = 4  # checks in flight at once, over every BMC

Labels = tuple[str, str, str, str]


def offset(namespace: str, name: str, interval: float) -> float:
    """Where in the interval this agent's check falls: stable, spread evenly."""
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * interval


class PMHealth:
    def __init__(
        self,
        api: Api,
        cache: Cache,
        elector: LeaderElector,
        metrics: Metrics,
        engines: Mapping[str, Engine],
        interval: float,
        *,
        bmc_gap: float | None = None,
    ) -> None:
        self.api = api
        self.cache = cache
        self.elector = elector
        self.metrics = metrics
        self.engines = engines
        self.interval = interval
        self.bmc_gap = min(5.0, interval / 2) if bmc_gap is None else bmc_gap
        self._due: dict[tuple[str, str], float] = {}
        self._busy: set[tuple[str, int | None]] = set()
        self._last_asked: dict[tuple[str, int | None], float] = {}
        self._labels: dict[tuple[str, str], Labels] = {}
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Forever: check while leading, stop checking while not (interval > 0)."""
        while True:
            await self.elector.wait_until_leader()
            log.info("power-management health checks every %gs", self.interval)
            leading = asyncio.create_task(self._lead(), name="pm-health")
            try:
                await self.elector.wait_until_not_leader()
            finally:
                leading.cancel()
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(leading, *self._tasks, return_exceptions=True)
                self._due.clear()

    async def _lead(self) -> None:
        start = time.monotonic()
        while True:
            self._schedule(start, time.monotonic())
            await asyncio.sleep(TICK)

    def _schedule(self, start: float, now: float) -> None:
        seen: set[tuple[str, str]] = set()
        for namespace in sorted(self.cache.namespaces()):
            for obj in list(self.cache.of_kind("FenceAgent", namespace)):
                name = obj["metadata"]["name"]
                key = (namespace, name)
                seen.add(key)
                spec = obj.get("spec") or {}
                if spec.get("type") in KDUMP_TYPES:
                    continue  # not a power device: nothing to read (controller/kdump.py)
                host = str((spec.get("hostRef") or {}).get("name", ""))
                labels = (namespace, name, host, str(spec.get("type", "")))
                old = self._labels.get(key)
                if old is not None and old != labels:
                    self.metrics.forget_agent(old)
                self._labels[key] = labels
                due = self._due.setdefault(key, start + offset(namespace, name, self.interval))
                if now < due or self._phase(namespace, host) not in CHECKED_PHASES:
                    continue  # not yet, or in an outage: checked once it is over
                bmc = (str(spec.get("address", "")), spec.get("port"))
                if bmc in self._busy or now < self._last_asked.get(bmc, -1e18) + self.bmc_gap:
                    continue  # this BMC's turn comes at a later tick
                self._busy.add(bmc)
                self._last_asked[bmc] = now
                self._due[key] = now + self.interval
                task = asyncio.create_task(self._check(key, labels, bmc), name=f"pm-{name}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        for key in set(self._labels) - seen:  # deleted agents: no stale series
            self.metrics.forget_agent(self._labels.pop(key))
            self._due.pop(key, None)

    def _phase(self, namespace: str, host: str) -> str | None:
        engine = self.engines.get(namespace)
        record = engine.hosts.get(host) if engine is not None else None
        return None if record is None else str(record.phase.value)

    async def _check(self, key: tuple[str, str], labels: Labels, bmc: tuple[str, Any]) -> None:
        namespace, name = key
        try:
            async with self._slots:
                if self._phase(namespace, labels[2]) not in CHECKED_PHASES:
                    self._due[key] = time.monotonic()  # an outage began meanwhile: later
                    return
                self.elector.check()  # S2: only the leader talks to power devices
                started = time.monotonic()
                outcome = await run_test(self.api, namespace, name)
                seconds = time.monotonic() - started
            ok = not isinstance(outcome, FenceError)
            result = result_of(outcome) if isinstance(outcome, FenceError) else "success"
            self.metrics.fence_action(labels[3], "status", result, seconds)
            self.metrics.agent_health(labels, ok, time.time())
            log.log(
                logging.INFO if ok else logging.WARNING,
                "power-management check of %s/%s (host %s): %s",
                namespace,
                name,
                labels[2],
                outcome.power_state if not isinstance(outcome, FenceError) else outcome,
                extra=fields(
                    namespace=namespace,
                    host=labels[2],
                    agent=name,
                    agent_type=labels[3],
                    kind="pm-health",
                    result=result,
                    duration=round(seconds, 3),
                ),
            )
        except NotLeader as exc:
            log.info("power-management check of %s/%s not run: %s", namespace, name, exc)
        except KubeError as exc:  # status not written: tried again next interval
            log.warning("power-management check of %s/%s not recorded: %s", namespace, name, exc)
        finally:
            with contextlib.suppress(KeyError):
                self._busy.remove(bmc)
