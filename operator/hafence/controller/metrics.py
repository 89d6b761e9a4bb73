"""Prometheus metrics of the operator, and the HTTP server for them and the probes.

Metrics (one registry per :class:`Metrics`; this table goes into the user guide):

| metric                           | type      | labels                    | meaning               |
|----------------------------------|-----------|---------------------------|-----------------------|
| `hafence_hosts`                  | gauge     | `phase`                   | hosts per phase       |
| `hafence_vms`                    | gauge     | `phase`                   | HA VMs per phase      |
| `hafence_fence_attempts_total`   | counter   | `driver`,`action`,`result`| power actions sent    |
| `hafence_fence_duration_seconds` | histogram | `driver`,`action`         | one power action      |
| `hafence_soft_fences_total`      | counter   | `result`                  | SSH agent restarts    |
| `hafence_vm_recovery_seconds`    | histogram |                           | fault to VM running   |
| `hafence_fence_agent_reachable`  | gauge     |`datacenter`,`fence_agent`,| last health check of |
|                                  |           | `host`,`driver`           | the agent: 1 answered |
| `hafence_fence_agent_last_check_timestamp_seconds` | gauge | (the same)  | when it was checked   |
| `hafence_fence_held_hosts`       | gauge     | `reason`                  | hosts not fenced now  |
| `hafence_leader`                 | gauge     |                           | 1 if leading, else 0  |
| `hafence_leader_epoch`           | gauge     |                           | latest epoch seen     |

- `phase`: every phase of the API is exported, 0 when empty, so a phase that empties
  drops to 0 instead of keeping its last value.
- `driver`: the fence agent type (`ipmilan`, `redfish`, `apc`...); `action`: `status`,
  `off` or `on`; `result`: `success`, `failure` or `timeout`.
- Soft fence `result`: `success` (heartbeat came back), `failure` (the command failed),
  `timeout` (no heartbeat afterwards).
- `hafence_fence_held_hosts`: hosts in an outage whose fencing waits or is skipped, by
  the reason of their Event (`FenceSkippedBrokenConnectivity`, `FenceSkippedDisabled`:
  a policy skips it; `FenceSkippedQuietPeriod`, `FenceDelayedConnectivitySettling`,
  `FenceDelayedConcurrency`: a short wait), every reason exported, 0 when none.
- `hafence_vm_recovery_seconds`: from the host fault being detected (heartbeat lost)
  to the HA VM running on another host.
- `hafence_leader_epoch`: the epoch on the leader Lease as this replica last saw it.
- `hafence_fence_agent_reachable`: written by the leader's power-management health
  check (``--pm-health-interval``, controller/pmhealth.py) for hosts not in an outage;
  the series of a deleted FenceAgent is removed. A driver's own timeout counts as
  `result="timeout"` in `hafence_fence_attempts_total`, any other error as `failure`.

HTTP endpoints (:class:`MetricsServer`, default ``0.0.0.0:8080`` in a cluster):

- ``GET /metrics``: the Prometheus text format.
- ``GET /healthz``: liveness, 200 whenever the event loop gets to answer; a blocked
  loop times the probe out, which is the point.
- ``GET /readyz``: 200 once :meth:`MetricsServer.set_ready` was called with True
  (the operator's watches are up), else 503.  A standby replica is ready too:
  readiness says "this process works", not "this process leads".
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Literal, get_args

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from hafence.api.host import HostPhase
from hafence.api.vm import VMPhase
from hafence.fencing.errors import TimedOut

log = logging.getLogger(__name__)

# `datacenter` is the FenceAgent's namespace: a label named `namespace` would collide
# with the scrape target's own (Prometheus would rename ours to exported_namespace).
AGENT_LABELS = ("datacenter", "fence_agent", "host", "driver")

FenceAction = Literal["status", "off", "on"]
FenceResult = Literal["success", "failure", "timeout"]
SoftFenceResult = Literal["success", "failure", "timeout"]

HOST_PHASES: tuple[str, ...] = get_args(HostPhase)
# The reasons the core gives for not fencing a host yet (its Events' reasons).
HOLD_REASONS: tuple[str, ...] = (
    "FenceSkippedBrokenConnectivity",
    "FenceSkippedDisabled",
    "FenceSkippedQuietPeriod",
    "FenceDelayedConnectivitySettling",
    "FenceDelayedConcurrency",
)
VM_PHASES: tuple[str, ...] = get_args(VMPhase)

# Power actions last from a fraction of a second (IPMI status) to a couple of
# minutes (a slow BMC powering on); VM recovery from seconds to oVirt's 30 minutes.
FENCE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
RECOVERY_BUCKETS = (
    1.0,
    2.0,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    45.0,
    60.0,
    90.0,
    120.0,
    180.0,
    300.0,
    600.0,
    1800.0,
)


class Metrics:
    """The operator's metrics; a registry of their own unless one is given."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.hosts = Gauge("hafence_hosts", "Hosts in each phase.", ["phase"], registry=r)
        self.vms = Gauge("hafence_vms", "HA VMs in each phase.", ["phase"], registry=r)
        self.fence_attempts = Counter(
            "hafence_fence_attempts",
            "Power actions sent through a fence agent, by agent type, action and result.",
            ["driver", "action", "result"],
            registry=r,
        )
        self.fence_duration = Histogram(
            "hafence_fence_duration_seconds",
            "Duration of one power action through a fence agent.",
            ["driver", "action"],
            buckets=FENCE_BUCKETS,
            registry=r,
        )
        self.soft_fences = Counter(
            "hafence_soft_fences",
            "SSH soft fences (agent restarts), by result.",
            ["result"],
            registry=r,
        )
        self.vm_recovery = Histogram(
            "hafence_vm_recovery_seconds",
            "From a host fault being detected to its HA VM running on another host.",
            buckets=RECOVERY_BUCKETS,
            registry=r,
        )
        self.agent_reachable = Gauge(
            "hafence_fence_agent_reachable",
            "1 if the fence agent answered its last power-management health check, else 0.",
            AGENT_LABELS,
            registry=r,
        )
        self.agent_checked = Gauge(
            "hafence_fence_agent_last_check_timestamp_seconds",
            "When the fence agent's power status was last checked (Unix time).",
            AGENT_LABELS,
            registry=r,
        )
        self.fence_held = Gauge(
            "hafence_fence_held_hosts",
            "Hosts in an outage that are not fenced now, by the reason (policy or wait).",
            ["reason"],
            registry=r,
        )
        self.ticks = Counter(
            "hafence_monitor_ticks",
            "Ticks of the core (each evaluates every host and VM of a datacenter).",
            registry=r,
        )
        self.leader = Gauge("hafence_leader", "1 while this replica leads, else 0.", registry=r)
        self.leader_epoch = Gauge(
            "hafence_leader_epoch", "Latest leader epoch seen on the leader Lease.", registry=r
        )
        self.set_host_phases({})
        self.set_vm_phases({})
        self.set_fence_holds({})

    def set_host_phases(self, counts: Mapping[str, int]) -> None:
        """Replace the host counts; phases missing from ``counts`` become 0."""
        _set_phases(self.hosts, HOST_PHASES, counts, "host")

    def set_vm_phases(self, counts: Mapping[str, int]) -> None:
        _set_phases(self.vms, VM_PHASES, counts, "VM")

    def set_fence_holds(self, counts: Mapping[str, int]) -> None:
        """Replace the held-host counts by reason; reasons missing become 0."""
        for reason in (*HOLD_REASONS, *sorted(set(counts) - set(HOLD_REASONS))):
            self.fence_held.labels(reason=reason).set(counts.get(reason, 0))

    def fence_action(
        self, driver: str, action: FenceAction, result: FenceResult, seconds: float
    ) -> None:
        """One power action through one fence agent finished."""
        self.fence_attempts.labels(driver=driver, action=action, result=result).inc()
        self.fence_duration.labels(driver=driver, action=action).observe(seconds)

    def agent_health(
        self, labels: tuple[str, str, str, str], reachable: bool, checked_at: float
    ) -> None:
        """A health check of one fence agent: (datacenter, fence_agent, host, driver)."""
        self.agent_reachable.labels(*labels).set(1 if reachable else 0)
        self.agent_checked.labels(*labels).set(checked_at)

    def forget_agent(self, labels: tuple[str, str, str, str]) -> None:
        for gauge in (self.agent_reachable, self.agent_checked):
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)

    def soft_fence(self, result: SoftFenceResult) -> None:
        self.soft_fences.labels(result=result).inc()

    def vm_recovered(self, seconds: float) -> None:
        """An HA VM runs elsewhere, ``seconds`` after its host's fault was detected."""
        self.vm_recovery.observe(seconds)

    def set_leader(self, leading: bool, epoch: int) -> None:
        self.leader.set(1 if leading else 0)
        self.leader_epoch.set(epoch)

    def track_leader(self, is_leader: Callable[[], bool], epoch: Callable[[], int]) -> None:
        """Read leadership at scrape time, e.g. ``track_leader(lambda: e.is_leader,
        lambda: e.observed_epoch)`` for a LeaderElector ``e``: never stale."""
        self.leader.set_function(lambda: 1.0 if is_leader() else 0.0)
        self.leader_epoch.set_function(lambda: float(epoch()))

    def render(self) -> bytes:
        data: bytes = generate_latest(self.registry)
        return data


def result_of(exc: BaseException) -> FenceResult:
    """The metric result of a failed power action: a driver's own timeout is "timeout"."""
    return "timeout" if isinstance(exc, TimedOut) else "failure"


def _set_phases(
    gauge: Gauge, phases: tuple[str, ...], counts: Mapping[str, int], what: str
) -> None:
    unknown = set(counts) - set(phases)
    if unknown:
        # A phase the API does not define means a bug upstream; keep it visible
        # rather than dropping the count.
        log.error("unknown %s phase(s) in metrics: %s", what, ", ".join(sorted(unknown)))
    for phase in (*phases, *sorted(unknown)):
        gauge.labels(phase=phase).set(counts.get(phase, 0))


class MetricsServer:
    """Serves /metrics, /healthz and /readyz on ``host:port`` (port 0: any free one)."""

    def __init__(self, metrics: Metrics, host: str = "0.0.0.0", port: int = 8080) -> None:
        self.metrics = metrics
        self.host = host
        self._port = port
        self._ready = False
        self._runner: web.AppRunner | None = None
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._app = app

    @property
    def ready(self) -> bool:
        return self._ready

    def set_ready(self, ready: bool) -> None:
        self._ready = ready

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port 0)."""
        if self._runner is not None:
            for address in self._runner.addresses:
                if isinstance(address, tuple) and len(address) >= 2:
                    return int(address[1])
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        runner = web.AppRunner(self._app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise OSError(
                exc.errno,
                f"metrics server cannot listen on {self.host}:{self._port}: {exc.strerror}",
            ) from None
        self._runner = runner
        log.info("metrics and probes on %s", self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self._ready:
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready: watches not started\n")
