"""Power operations of the core (CheckPower, SoftFence, RunFenceStep) as tasks.

Each runs in a task of its own, bounded by the budget the core gave it
(``core/deadlines.py``), and always ends with a result fed back to the core: the
devices' answers, a timeout failure when the budget passed (metric result "timeout"),
or a failure naming the error that ended it.  Only losing leadership ends one without
a result (the engines are dropped then).  A ``StepTimedOut`` from the core (its own
backstop deadline) cancels what still runs for that operation.

Before a disruptive step (soft fence, "off") the Lease is re-read (``lease_guard.py``);
right before a device is touched, leadership is checked again (S2).  Credentials and
SSH targets (``ssh_targets.py``) are read right before use, retried on transient errors
(``reads.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from hafence.api.fenceagent import FenceAgentSpec
from hafence.api.host import HostSpec
from hafence.controller import clock
from hafence.controller.cache import Cache
from hafence.controller.inflight import InFlight
from hafence.controller.leader import LeaderElector, NotLeader
from hafence.controller.lease_guard import LeaseGuard
from hafence.controller.metrics import Metrics, result_of
from hafence.controller.reads import read_with_retries
from hafence.controller.ssh_targets import SSHTargets
from hafence.core import fencing_plan as fp
from hafence.core import messages as m
from hafence.fencing.drivers import build_driver
from hafence.fencing.errors import FenceError
from hafence.fencing.protocol import Credentials, FenceResult
from hafence.fencing.resolve import load_credentials
from hafence.fencing.ssh import soft_fence  # paramiko loaded at start, not in a timed step
from hafence.kube import Api, KubeError

log = logging.getLogger(__name__)

Feed = Callable[[m.Input], Awaitable[None]]
PowerAction = m.CheckPower | m.SoftFence | m.RunFenceStep


class PowerOps:
    def __init__(
        self,
        api: Api,
        namespace: str,
        cache: Cache,
        elector: LeaderElector,
        metrics: Metrics,
        feed: Feed,
        guard: LeaseGuard,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.cache = cache
        self.elector = elector
        self.metrics = metrics
        self.feed = feed
        self.guard = guard
        self.ssh = SSHTargets(api, namespace, cache)
        self.inflight = InFlight()

    def start(self, action: PowerAction) -> None:
        self.inflight.start(action.op_id, self._run(action), f"{type(action).__name__}")

    def timed_out(self, action: m.StepTimedOut) -> None:
        """The core gave up on an operation: stop it and count the timeout."""
        self.inflight.stop(action.op_id)
        self._count_timeout(action.operation, action.agents)

    async def cancel(self) -> None:
        await self.inflight.stop_all()

    # -- one operation ---------------------------------------------------------------
    async def _run(self, action: PowerAction) -> None:
        result: m.Input
        try:
            self.elector.check()
            async with asyncio.timeout(action.timeout if action.timeout > 0 else None):
                result = await self._operate(action)
        except NotLeader as exc:
            log.warning("not running %s for %s: %s", type(action).__name__, action.host, exc)
            return
        except TimeoutError:
            why = f"timed out: no result within {action.timeout:g}s"
            log.warning("%s for host %s/%s %s", _what(action), self.namespace, action.host, why)
            if isinstance(action, m.SoftFence):
                self._count_timeout("soft-fence", ())
            else:
                operation = action.operation if isinstance(action, m.RunFenceStep) else "status"
                self._count_timeout(operation, action.agents)
            result = failure(action, why)
        except Exception as exc:  # a bug here must not leave the step without a result
            log.exception("%s for host %s/%s failed", _what(action), self.namespace, action.host)
            result = failure(action, f"{type(exc).__name__}: {exc}")
        try:
            await self.feed(result)
        except NotLeader as exc:
            log.warning("result of %s for %s not taken: %s", _what(action), action.host, exc)

    async def _operate(self, action: PowerAction) -> m.Input:
        disruptive = isinstance(action, m.SoftFence) or (
            isinstance(action, m.RunFenceStep) and action.operation == "off"
        )
        if disruptive and await self.guard.renewed_unseen(action.host):
            # The renewal went to the core first; nothing was run, nothing was sent.
            why = "not run: the host's lease was renewed meanwhile"
            if isinstance(action, m.SoftFence):
                return m.SoftFenceResult(clock.now(), action.host, action.op_id, False, why)
            assert isinstance(action, m.RunFenceStep)
            return m.FenceStepResult(
                clock.now(),
                action.host,
                action.op_id,
                {a: fp.AgentResult("error", why) for a in action.agents},
                sent=False,
            )
        if isinstance(action, m.SoftFence):
            return await self._soft_fence(action)
        if isinstance(action, m.CheckPower):
            results = await self._on_agents(action.agents, "status", action.proxies)
            return m.PowerStatusResult(
                clock.now(),
                action.host,
                action.op_id,
                fp.status_verdict(results, action.agents),
                fp.describe(results, action.agents),
            )
        results = await self._on_agents(action.agents, action.operation, action.proxies)
        return m.FenceStepResult(clock.now(), action.host, action.op_id, results)

    async def _soft_fence(self, action: m.SoftFence) -> m.SoftFenceResult:
        def result(ok: bool, message: str) -> m.SoftFenceResult:
            return m.SoftFenceResult(clock.now(), action.host, action.op_id, ok, message)

        host = self.cache.get("Host", self.namespace, action.host)
        if host is None:
            return result(False, "host no longer declared")
        spec = HostSpec.model_validate(host["spec"])
        if spec.ssh is None:
            return result(False, "no spec.ssh: soft fencing not configured")
        try:
            target = await self.ssh.of_host(action.host, spec)
            outcome = await soft_fence(
                target, spec.ssh.soft_fence_command, float(spec.ssh.timeout_seconds)
            )
        except (FenceError, KubeError) as exc:
            self.metrics.soft_fence(result_of(exc))
            return result(False, str(exc))
        ok = outcome.exit_status == 0
        self.metrics.soft_fence("success" if ok else "failure")
        message = f"exit {outcome.exit_status}" + (f": {outcome.output}" if outcome.output else "")
        return result(ok, message)

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
                    proxy = await self.ssh.of_proxy(proxy_name)
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
        return await read_with_retries(load_credentials, self.api, self.namespace, spec)

    def _count_timeout(self, operation: str, agents: tuple[str, ...]) -> None:
        if operation == "soft-fence":
            self.metrics.soft_fence("timeout")
            return
        for name in agents:
            obj = self.cache.get("FenceAgent", self.namespace, name) or {}
            driver = str((obj.get("spec") or {}).get("type", "unknown"))
            self.metrics.fence_action(driver, _action(operation), "timeout", 0.0)


def failure(action: PowerAction, why: str) -> m.Input:
    """The failure result of ``action``: what the core gets when it ended badly."""
    now = clock.now()
    if isinstance(action, m.SoftFence):
        return m.SoftFenceResult(now, action.host, action.op_id, False, why)
    if isinstance(action, m.CheckPower):
        return m.PowerStatusResult(now, action.host, action.op_id, "unknown", why)
    return m.FenceStepResult(
        now, action.host, action.op_id, {a: fp.AgentResult("error", why) for a in action.agents}
    )


def _what(action: PowerAction) -> str:
    if isinstance(action, m.RunFenceStep):
        return f"fence step {action.step}"
    return type(action).__name__


def _action(operation: str) -> Any:
    return "status" if operation in ("test", "verify") else operation
