"""The agent's event loop: heartbeat, the S3 sweep, reconcile passes, self-fencing.

Contact with the API server is "lost" from the first failed lease renewal until a
fresh list of the VMs has been taken *and* every local VM not placed here has been
stopped (the S3 sweep); only then does the lease say ``ready`` again, and only then
may VMs be started.  While contact is lost the agent keeps running what is placed
here (it cannot know better) and starts nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hafence import __version__
from hafence.agent.drivers import Driver, LocalVM, StartError
from hafence.agent.heartbeat import LeaseWriter
from hafence.agent.libvirt import LibvirtDriver
from hafence.agent.localvms import LocalVMs
from hafence.agent.peers import Peer, PeerChecker, PeerServer, State, own_state
from hafence.agent.placement import PlacementCache
from hafence.agent.state import StateDir
from hafence.agent.vms import Placed, Reconciler, RestartPolicy
from hafence.agent.watchdog import DeviceError, Liveness, Watchdog, arm_device, open_device
from hafence.agent.watcher import KIND, VMWatcher, placed_on
from hafence.api.host import HostSpec, SelfFencing
from hafence.api.lease import (
    HEARTBEAT_SELECTOR,
    HeartbeatInfo,
    LeaseError,
    WatchdogDeclaration,
    api_timeout,
    lease_annotations,
    peer_check_window,
    renew_interval,
)
from hafence.kube import Api, NotFound

log = logging.getLogger("hafence.agent")


class AgentError(RuntimeError):
    """A fatal, user-facing error at start (bad flag, unknown Host)."""


@dataclass
class AgentConfig:
    host: str
    namespace: str
    state_dir: Path
    boot_id: str
    lease_duration: int = 10
    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    stop_grace: float = 10.0
    poll_interval: float = 1.0
    host_refresh: float = 30.0
    watch_timeout: int = 60
    watchdog_device: str | None = None
    kill_vms_on_exit: bool = False
    # The peer check (hafence.agent.peers): the shared token, where to listen, what to
    # declare in the lease (default: the listening address), how often to re-list.
    peer_token: bytes | None = None
    peer_listen: tuple[str, int] | None = None
    peer_advertise: str | None = None
    peer_refresh: float = 30.0


def _norm(report: dict[str, Any] | Any) -> dict[str, Any]:
    if not isinstance(report, dict):
        return {}
    return {k: v for k, v in report.items() if v is not None and k != "updatedTime"}


class Agent:
    def __init__(
        self, cfg: AgentConfig, api: Api, watch_api: Api, drivers: dict[str, Driver]
    ) -> None:
        self.cfg = cfg
        self.api = api
        self.watch_api = watch_api
        self.drivers = drivers
        self.state = StateDir(cfg.state_dir)
        self.reconciler = Reconciler(cfg.host, cfg.policy)
        self.lease = LeaseWriter(
            api,
            host=cfg.host,
            namespace=cfg.namespace,
            instance_id=cfg.instance_id,
            lease_duration_seconds=cfg.lease_duration,
        )
        self.liveness = Liveness()
        self.watchdog = Watchdog(self._self_fence, liveness=self.liveness)
        self.cluster: str | None = None
        self.peers: list[Peer] = []
        self.self_fencing_unavailable: str | None = None
        self._release_device = False
        self._peers_read_at = 0.0
        self.peer_server: PeerServer | None = None
        self.peer_checker: PeerChecker | None = None
        self.cache = PlacementCache()
        self.local = LocalVMs(self.state, drivers, boot_id=cfg.boot_id, stop_grace=cfg.stop_grace)
        self.swept = False
        self.renewals = 0
        self._written: dict[str, dict[str, Any]] = {}
        self._pass_lock = asyncio.Lock()
        self._kick = asyncio.Event()
        self._stopping = asyncio.Event()
        self._last_renewal: float | None = None
        self._host_read_at = 0.0
        self._sweep_failing = False

    # -- start-up ---------------------------------------------------------------------
    def adopt(self) -> None:
        if self.local.adopt():
            log.info("adopted %d VM records from %s", len(self.local.vms), self.cfg.state_dir)
        cached = self.state.read_host()
        self.peers = [
            Peer(str(p["host"]), str(p["endpoint"]))
            for p in cached.get("peers") or []
            if isinstance(p, dict) and "host" in p and "endpoint" in p
        ]
        self.cluster = cached.get("cluster") or None
        sf = cached.get("selfFencing") or {}
        if sf.get("enabled"):
            # Armed before we can reach the API server: the previous agent declared the
            # device in the lease, so the operator counts on it from its last renewal.
            silent = max(0.0, time.time() - float(cached.get("lastRenewal") or time.time()))
            self._arm(int(sf["watchdogTimeoutSeconds"]), time.monotonic() - silent)
            log.info(
                "self-fencing re-armed from the state dir (%ss, last renewal %.1fs ago)",
                sf["watchdogTimeoutSeconds"],
                silent,
            )

    def _apply_host(self, obj: dict[str, Any]) -> None:
        try:
            spec = HostSpec.model_validate(obj.get("spec") or {})
        except ValueError as exc:
            raise AgentError(
                f"Host {self.cfg.namespace}/{self.cfg.host}: invalid spec: {exc}"
            ) from None
        self.cluster = spec.cluster
        self._set_self_fencing(spec.self_fencing)

    def _arm(self, timeout: int, last_renewal: float) -> None:
        """Arm self-fencing: open and arm the device (once), or say why there is none.
        A device that cannot be armed is no reason to stop: the host keeps its VMs and
        the operator is told self-fencing is unavailable (it never counts on it)."""
        cfg = self.cfg
        device = self.watchdog.device
        if cfg.watchdog_device is None:
            self.self_fencing_unavailable = (
                "the agent has no --watchdog-device: an agent-internal watchdog proves nothing"
            )
        elif device is not None and self.watchdog.timeout not in (None, timeout):
            # Declared already: never the magic close here, even if this fails.
            try:
                device.set_timeout(timeout)
                granted = device.get_timeout()
            except DeviceError as exc:
                self.self_fencing_unavailable = f"changing the timeout: {exc}"
                log.error("self-fencing unavailable: %s", self.self_fencing_unavailable)
                self.watchdog.set_granted(None)
            else:
                self.watchdog.set_granted(granted)
                log.info(
                    "watchdog device %s: %ds asked, %ds granted", device.name, timeout, granted
                )
        elif device is None:
            try:
                device = open_device(cfg.watchdog_device)
                granted = arm_device(device, timeout)
            except DeviceError as exc:
                self.self_fencing_unavailable = str(exc)
                log.error("self-fencing unavailable: %s", exc)
                device = None
            else:
                self.self_fencing_unavailable = None
                self.watchdog.set_granted(granted)
                log.info(
                    "watchdog device %s armed: %ds asked, %ds granted",
                    device.name,
                    timeout,
                    granted,
                )
        window = cfg.lease_duration + peer_check_window(cfg.lease_duration)
        self.watchdog.arm(timeout, window, last_renewal, device)
        self._release_device = False

    def _set_self_fencing(self, sf: SelfFencing) -> None:
        if sf.enabled:
            last = self._last_renewal if self._last_renewal is not None else time.monotonic()
            self._arm(sf.watchdog_timeout_seconds, last)
        elif self.watchdog.armed_timeout is not None:
            log.info("self-fencing disarmed (Host spec.selfFencing.enabled is false)")
            self.watchdog.disarm()
            self.self_fencing_unavailable = None
            # The device is released only after a lease without its declaration.
            self._release_device = self.watchdog.device is not None
        self._persist_host()

    def declaration(self) -> WatchdogDeclaration | None:
        wd = self.watchdog
        if wd.armed_timeout is None or wd.device is None or wd.granted is None:
            return None
        return WatchdogDeclaration(wd.device.name, wd.granted, self.cfg.boot_id)

    def _persist_host(self) -> None:
        timeout = self.watchdog.armed_timeout
        data: dict[str, Any] = {
            "selfFencing": {
                "enabled": timeout is not None,
                "watchdogTimeoutSeconds": int(timeout or 0),
            },
            "cluster": self.cluster,
            "peers": [{"host": p.host, "endpoint": p.endpoint} for p in self.peers],
        }
        if self._last_renewal is not None:
            data["lastRenewal"] = time.time() - (time.monotonic() - self._last_renewal)
        self.state.write_host(data)

    def _get_host(self) -> dict[str, Any]:
        return self.api.get("Host", self.cfg.namespace, self.cfg.host)

    async def read_host(self) -> bool:
        """The Host must exist; an unreachable API server is waited for, with backoff.
        False if the agent was asked to stop meanwhile."""
        delay = 0.5
        while True:
            try:
                obj = await asyncio.to_thread(self._get_host)
            except NotFound:
                raise AgentError(
                    f"--host {self.cfg.host!r}: no Host of that name in namespace "
                    f"{self.cfg.namespace!r}"
                ) from None
            except Exception as exc:
                log.warning(
                    "reading Host %s/%s: %s; retrying in %.1fs",
                    self.cfg.namespace,
                    self.cfg.host,
                    str(exc).splitlines()[0][:200],
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                if self._stopping.is_set():
                    return False
                delay = min(delay * 2, 10.0)
                continue
            self._apply_host(obj)
            self._host_read_at = time.monotonic()
            return True

    # -- the watch feed -------------------------------------------------------------
    def _on_watch(self, kind: str, payload: Any) -> None:
        self.cache.apply(kind, payload)
        self._kick.set()

    # -- reconcile ------------------------------------------------------------------
    def _start_vm(self, placed: Placed) -> dict[str, Any] | None:
        assert placed.runtime is not None
        try:
            vm = self.local.start(
                placed.key,
                placed.epoch,
                placed.runtime,
                allowed=lambda: self.swept and not self.watchdog.fired,
            )
        except StartError as exc:
            log.error("starting %s failed: %s", placed.key, exc)
            return self.reconciler.start_failed(placed, str(exc))
        if vm is None:
            return None
        log.info("started %s (epoch %d, pid %s)", placed.key, placed.epoch, vm.pid)
        return self.reconciler.started(placed, vm)

    def _stop_vm(self, vm: LocalVM) -> None:
        log.info("stopping %s (pid %s): not placed on %s", vm.key, vm.pid, self.cfg.host)
        self.local.stop(vm)

    async def reconcile(self, *, may_start: bool) -> list[str]:
        """One pass; returns the keys of the VMs whose stop failed (they may still run)."""
        failed_stops: list[str] = []
        async with self._pass_lock:
            if not self.cache.synced:
                return failed_stops  # nothing is known yet: an empty cache is not "placed nowhere"
            placed = {
                k: Placed.from_object(o, self.cfg.host)
                for k, o in self.cache.relevant(self.cfg.host, self.local).items()
            }
            observed = await asyncio.to_thread(self.local.observe_all)
            plan = self.reconciler.plan(
                placed,
                self.local.snapshot(),
                observed,
                now=time.monotonic(),
                may_start=may_start and not self.watchdog.fired,
            )
            results = await asyncio.gather(
                *(asyncio.to_thread(self._stop_vm, vm) for vm in plan.stop),
                return_exceptions=True,
            )
            for vm, res in zip(plan.stop, results, strict=True):
                error = None
                if isinstance(res, BaseException):
                    error = str(res) or type(res).__name__
                    log.error("stopping %s failed, it may still run: %s", vm.key, error)
                    failed_stops.append(vm.key)
                track = plan.report_stop.get(vm.key)
                if track is not None:
                    plan.reports[vm.key] = self.reconciler.stop_report(track, error)
            for key in plan.forget:
                self.local.forget(key)
            for vm in plan.resave:
                self.local.resave(vm)
            for p in plan.start:
                report = await asyncio.to_thread(self._start_vm, p)
                if report is not None:
                    plan.reports[p.key] = report
            for key, report in plan.reports.items():
                stored = _norm(self.cache.stored_runtime(key))
                want = _norm(report)
                if want in (stored, self._written.get(key)):
                    if key in plan.forget_after_report and want == stored:
                        self.local.forget(key)
                    continue
                if await self._write_runtime(key, report) and key in plan.forget_after_report:
                    self.local.forget(key)
        return failed_stops

    async def _write_runtime(self, key: str, report: dict[str, Any]) -> bool:
        namespace, _, name = key.partition("/")
        body = {**report, "updatedTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        try:
            await asyncio.to_thread(
                self.api.patch, KIND, namespace, name, {"status": {"runtime": body}}, status=True
            )
        except NotFound:
            return False
        except Exception as exc:
            log.warning("writing status.runtime of %s: %s", key, str(exc).splitlines()[0][:200])
            return False
        self._written[key] = _norm(report)
        return True

    async def reconcile_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.cfg.poll_interval)
            self._kick.clear()
            try:
                await self.reconcile(may_start=self.swept)
            except Exception:
                log.exception("reconcile pass failed")

    # -- heartbeat and S3 -----------------------------------------------------------
    async def sweep(self) -> None:
        """S3: with a fresh list, stop every VM of this datacenter that runs here and is
        not placed here (recorded or found by the drivers' marks); then ready."""
        # Only the VMs placed here: any other VM found running here is not placed here
        # and is stopped (S3).  Discovery still asks every libvirt URI the agent knows
        # (configured and already connected) besides the ones these VMs name.
        listed = await asyncio.to_thread(
            functools.partial(
                self.api.list, KIND, self.cfg.namespace, field_selector=placed_on(self.cfg.host)
            )
        )
        self._on_watch("snapshot", listed)
        runtimes = []
        for obj in listed.get("items", []):
            placed = Placed.from_object(obj, self.cfg.host)
            if placed.runtime is not None:
                runtimes.append(placed.runtime)
        await asyncio.to_thread(self.local.discover, self.cfg.namespace, runtimes)
        failed = await self.reconcile(may_start=False)
        if failed:
            raise RuntimeError(f"could not stop {', '.join(failed)}: not ready")
        self.swept = True
        log.info(
            "S3 sweep done: %d VMs running here, all placed on %s",
            len(self.local.vms),
            self.cfg.host,
        )
        self._kick.set()

    def vm_count(self) -> int:
        return self.local.running_count()

    async def heartbeat_once(self) -> bool:
        if not self.swept:
            # The Lease's version is read while the sweep runs, so the renewal after it
            # is one PUT: a restarted agent's first ready renewal is what ends a soft
            # fence, and it is timed (#13).
            prime = asyncio.create_task(asyncio.to_thread(self.lease.prime))
            try:
                await self.sweep()
            except Exception as exc:
                # Once per outage at WARNING: the retries follow the heartbeat's backoff.
                level = logging.DEBUG if self._sweep_failing else logging.WARNING
                log.log(level, "S3 sweep: %s", str(exc).splitlines()[0][:200])
                self._sweep_failing = True
            else:
                self._sweep_failing = False
            finally:
                # A failed read only leaves the version for renew() to read itself.
                await asyncio.gather(prime, return_exceptions=True)
        if time.monotonic() - self._host_read_at > self.cfg.host_refresh:
            try:
                obj = await asyncio.to_thread(self._get_host)
                self._apply_host(obj)
                self._host_read_at = time.monotonic()
            except Exception as exc:
                log.warning("re-reading Host: %s", str(exc).splitlines()[0][:200])
        timeout = self.watchdog.armed_timeout
        declared = self.declaration()
        annotations = lease_annotations(
            boot_id=self.cfg.boot_id,
            agent_version=__version__,
            vm_count=self.vm_count(),
            ready=self.swept,
            watchdog=declared,
            self_fencing_unavailable=self.self_fencing_unavailable if timeout else None,
            cluster=self.cluster,
            peer_endpoint=self.peer_endpoint(),
        )
        release = self._release_device and declared is None
        started = time.monotonic()
        try:
            await asyncio.to_thread(self.lease.renew, datetime.now(UTC), annotations)
        except Exception as exc:
            if self.swept:
                log.warning("lost contact with the API server: %s", str(exc).splitlines()[0][:200])
            self.swept = False
            await self._refresh_peers()
            return False
        self.renewals += 1
        if self.renewals == 1:
            log.info("heartbeat: first lease renewal landed (ready=%s)", self.swept)
        self._last_renewal = started
        self.watchdog.renewed(started)
        if release:
            self._release_device = False
            self.watchdog.release()
        if timeout is not None:
            self._persist_host()
        await self._refresh_peers()
        return True

    async def _refresh_peers(self) -> None:
        """Re-list the peers when due: after the renewal, whether or not it landed (a
        restarted agent's first renewal is what ends a soft fence; the peers matter only
        once the API server is gone)."""
        if self.peer_checker is None or (
            self.peers and time.monotonic() - self._peers_read_at <= self.cfg.peer_refresh
        ):
            return
        self._peers_read_at = time.monotonic()
        try:
            self.peers = await asyncio.to_thread(self._list_peers)
        except Exception as exc:
            level = logging.WARNING if self.swept else logging.DEBUG
            log.log(level, "listing peers: %s", str(exc).splitlines()[0][:200])

    def peer_endpoint(self) -> str | None:
        if self.peer_server is None:
            return None
        if self.cfg.peer_advertise:
            return self.cfg.peer_advertise
        assert self.cfg.peer_listen is not None
        return f"{self.cfg.peer_listen[0]}:{self.peer_server.port}"

    def _list_peers(self) -> list[Peer]:
        """Agents of this host's cluster that declare a peer endpoint in their lease."""
        leases = self.api.coordination.list_namespaced_lease(
            self.cfg.namespace, label_selector=HEARTBEAT_SELECTOR, _request_timeout=self.api.timeout
        )
        out = []
        for lease in leases.items:
            try:
                info = HeartbeatInfo.from_lease(self.api.client.sanitize_for_serialization(lease))
            except LeaseError:
                continue
            if info.host != self.cfg.host and info.cluster == self.cluster and info.peer_endpoint:
                out.append(Peer(info.host, info.peer_endpoint))
        return sorted(out, key=lambda p: p.host)

    def _peer_state(self) -> State:
        last = self._last_renewal
        age = None if last is None else time.monotonic() - last
        return own_state(age, self.cfg.lease_duration)

    async def heartbeat_loop(self) -> None:
        interval = renew_interval(self.cfg.lease_duration)
        backoff = min(0.5, interval)
        alive_for = interval + api_timeout(self.cfg.lease_duration) + 1.0
        while True:
            self.liveness.stamp("heartbeat loop", alive_for)
            ok = await self.heartbeat_once()
            if ok:
                delay, backoff = interval, min(0.5, interval)
            else:
                delay, backoff = backoff, min(backoff * 2, interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return

    # -- self-fencing (watchdog thread) -----------------------------------------------
    def _self_fence(self, reason: str) -> None:
        self.swept = False
        for key in self.local.kill_all(f"killed by the self-fencing watchdog: {reason}"):
            log.error("self-fencing: killed %s", key)

    # -- run ----------------------------------------------------------------------------
    async def _wait_stop(self) -> None:
        await self._stopping.wait()

    async def liveness_loop(self) -> None:
        """Stamps that the event loop runs: a loop stuck in a call stops the feeding."""
        while True:
            self.liveness.stamp("event loop", 2.0)
            await asyncio.sleep(0.2)

    def _start_peers(self) -> None:
        cfg = self.cfg
        if cfg.peer_token is None:
            return
        if cfg.peer_listen is not None:
            self.peer_server = PeerServer(
                cfg.host,
                cfg.peer_token,
                cfg.peer_listen,
                self._peer_state,
            )
            self.peer_server.start()
        interval = renew_interval(cfg.lease_duration)
        self.peer_checker = PeerChecker(
            cfg.host,
            cfg.peer_token,
            peers=lambda: list(self.peers),
            last_renewal=self.watchdog.last_renewal,
            enabled=lambda: self.watchdog.armed_timeout is not None,
            confirm=self.watchdog.outage_confirmed,
            in_danger_after=1.5 * interval,
            # Two intervals: one to ask again, one for our own first renewal after the
            # outage ends (peers that reconnect first must not make us kill our VMs).
            # At most the lease duration: the operator's window assumes no more.
            validity=2 * interval,
        )
        self.peer_checker.start()

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self) -> int:
        self.adopt()
        self._start_peers()
        self.watchdog.start()
        loop = asyncio.get_running_loop()

        def kick() -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nothing to wake
                loop.call_soon_threadsafe(self._kick.set)

        for driver in self.drivers.values():
            if isinstance(driver, LibvirtDriver):
                # Lifecycle events arrive on libvirt's thread: a pass now, not at the poll.
                driver.on_event = kick

        def post(kind: str, payload: Any) -> None:
            loop.call_soon_threadsafe(self._on_watch, kind, payload)

        watcher = VMWatcher(
            self.watch_api,
            self.cfg.namespace,
            post,
            host=self.cfg.host,
            watch_timeout=self.cfg.watch_timeout,
        )
        try:
            if not await self.read_host():
                return 0
            watcher.start()
            tasks = [
                asyncio.create_task(self.heartbeat_loop(), name="heartbeat"),
                asyncio.create_task(self.reconcile_loop(), name="reconcile"),
                asyncio.create_task(self.liveness_loop(), name="liveness"),
            ]
            stop = asyncio.create_task(self._wait_stop())
            done, _ = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
            for task in [*tasks, stop]:
                task.cancel()
            await asyncio.gather(*tasks, stop, return_exceptions=True)
            for task in done:
                exc = None if task.cancelled() else task.exception()
                if exc is not None:
                    raise exc
        finally:
            watcher.stop()
            if self.peer_checker is not None:
                self.peer_checker.stop()
            if self.peer_server is not None:
                self.peer_server.close()
            self.watchdog.stop()
            if self.cfg.kill_vms_on_exit:
                killed = self.local.kill_all()
                log.info("killed %d VMs on exit (--kill-vms-on-exit)", len(killed))
        log.info("agent stopped; %d VMs left running", self.vm_count())
        return 0
