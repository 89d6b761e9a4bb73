"""The whole datacenter as the core sees it: ``handle(input)`` and ``tick(now)``.

Both return the actions to execute, in order.  Status writes come last, hosts before
VMs: a host's proof ("fenced for outage X") is persisted before the VM placements that
rely on it, so a crash between the two re-releases the VMs on restart instead of losing
the release.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

from hafence.api.fenceagent import kdump_timeout
from hafence.api.lease import peer_check_window
from hafence.core import connectivity, triggers
from hafence.core import fencing_plan as fp
from hafence.core import messages as m
from hafence.core.host import HostMachine
from hafence.core.persist import confirmation_status, host_status, restore_host, vm_status
from hafence.core.policy import Settings
from hafence.core.records import ConfirmationRecord, HostRecord, VMRecord
from hafence.core.transitions import OUTAGE_PHASES, RELEASED_PHASES, Phase, Trigger
from hafence.core.vms import VMBook


class Engine:
    def __init__(self, settings: Settings | None = None, namespace: str = "") -> None:
        self.settings = settings or Settings()
        self.namespace = namespace  # named in messages that tell a person what to run
        self.hosts: dict[str, HostRecord] = {}
        self.agents: dict[str, fp.AgentRef] = {}
        self.confirmations: dict[str, ConfirmationRecord] = {}
        self.quiet_until: float | None = None
        self.machine = HostMachine(self)
        self.vmbook = VMBook(self.settings, self.act, self._vm_event)
        self._out: list[m.Action] = []
        self._dirty_hosts: set[str] = set()
        self._dirty_confirmations: set[str] = set()
        # Confirmations whose status write has not landed yet (kept in memory till then).
        self._unlanded_confirmations: set[str] = set()
        self._alerts: set[str] = set()
        self._settling: dict[str, float] = {}
        self._orphan_leases: dict[str, m.LeaseObserved] = {}
        self._last_release: tuple[str, ...] = ()
        # Writes that failed: (kind, name) -> (failures in a row, retry time, placement).
        self._unwritten: dict[tuple[str, str], tuple[int, float, bool]] = {}
        self._handlers: dict[type[Any], Callable[[Any], set[str] | None]] = {
            m.LeaseObserved: self._on_lease,
            m.VMObserved: self._on_vm,
            m.VMRuntimeObserved: self._on_vm_runtime,
            m.PowerStatusResult: self._on_power_status,
            m.SoftFenceResult: self._on_soft_fence,
            m.FenceStepResult: self._on_fence_step,
            m.KdumpResult: self._on_kdump,
            m.ConfirmationObserved: self._on_confirmation,
            m.OperatorStarted: self._on_started,
            m.HostObserved: self._on_host,
            m.HostDeleted: self._on_host_deleted,
            m.FenceAgentObserved: self._on_agent,
            m.FenceAgentDeleted: self._on_agent_deleted,
            m.VMDeleted: self._on_vm_deleted,
            m.WriteFailed: self._on_write_failed,
            m.WriteLanded: self._on_write_landed,
        }

    def set_settings(self, settings: Settings) -> None:
        """A changed FencingPolicy: in force from the next input or tick on."""
        self.settings = settings
        self.vmbook.settings = settings

    @property
    def vms(self) -> dict[str, VMRecord]:
        return self.vmbook.vms

    # ------------------------------------------------------------ public API

    def handle(self, ev: m.Input) -> list[m.Action]:
        """Take one input; returns the actions to execute, in order.  Only the hosts the
        input concerns are evaluated here (``tick`` evaluates every host)."""
        now = ev.now
        targets = self._dispatch(ev)
        hosts = (
            self.hosts.values()
            if targets is None
            else (self.hosts[n] for n in sorted(targets) if n in self.hosts)
        )
        for rec in list(hosts):
            triggers.evaluate(self.machine, rec, now)
        if self.vmbook.wake:
            self.vmbook.schedule(now, self.hosts)
        return self._flush()

    def tick(self, now: float) -> list[m.Action]:
        for key in sorted(self._alerts):
            if key.startswith("FenceSkippedBrokenConnectivity/"):
                self._connectivity(key.partition("/")[2], now)
        for rec in list(self.hosts.values()):
            triggers.evaluate(self.machine, rec, now)
        self.vmbook.schedule(now, self.hosts)
        self._retry_writes(now)
        for cluster, until in list(self._settling.items()):
            if until <= now:
                del self._settling[cluster]  # bounded: a past delay holds nothing
        self._forget_confirmations()
        return self._flush()

    def expiring(self, now: float) -> list[str]:
        """Hosts whose lease counts as expired at ``now`` while the core still has them
        Up: the shell may look at the Leases once more before ``tick`` acts on it (a
        watch that silently stopped delivering must not start outages)."""
        return sorted(
            h.name
            for h in self.hosts.values()
            if h.phase is Phase.UP and h.lease_seen and not h.lease_fresh(now)
        )

    def next_deadline(self, now: float) -> float | None:
        """The earliest time after ``now`` at which ``tick`` may have something to do (for
        shells that sleep between ticks); None when only an input can change anything.
        Ticking every second regardless is fine too."""
        times: list[float] = list(self._settling.values())
        if self.quiet_until is not None:
            times.append(self.quiet_until)
        for h in self.hosts.values():
            times += self._host_deadlines(h)
        times.extend(at for _, at, _ in self._unwritten.values() if at != math.inf)
        for v in self.vmbook.vms.values():
            if v.phase == "Pending" and v.next_placement is not None:
                times.append(v.next_placement)
        future = [t for t in times if t > now]
        return min(future) if future else None

    def _host_deadlines(self, h: HostRecord) -> list[float]:
        """The times at which the passing of time alone may change what ``h`` needs."""
        times: list[float] = []
        exp = h.lease_expiry()
        if exp is not None:
            times.append(exp)
            if h.outage_start is not None:
                times.append(h.outage_start + self.settings.grace(self.vm_count(h.name)))
            if h.watchdog_timeout is not None:
                fires_within = 2 * max(
                    h.watchdog_timeout, h.spec.self_fencing.watchdog_timeout_seconds
                )
                margin = self.settings.self_fence_safety_margin
                times.append(exp + peer_check_window(h.lease_duration) + fires_within + margin)
                if h.outage_start is not None:
                    # The proof also waits for its peers to have been fresh long enough
                    # (triggers.self_fence_proven).
                    times += [
                        p.fresh_since + h.lease_duration + fires_within + margin
                        for p in self.hosts.values()
                        if p.fresh_since is not None
                        and p.name != h.name
                        and p.spec.cluster == h.spec.cluster
                    ]
        if h.step == "soft-fence-wait" and h.step_since is not None:
            times.append(h.step_since + self.settings.soft_fence_timeout)
        if h.next_retry is not None:
            times.append(h.next_retry)
        if h.op_deadline is not None:
            times.append(h.op_deadline)
        return times

    def wakes(self, ev: m.Input, actions: list[m.Action], scheduled: float | None) -> bool:
        """Whether a shell that sleeps until ``scheduled`` (``next_deadline`` after its
        last tick; None: until an input) must tick now, having handled ``ev``.

        Only a renewal that produced nothing lets it sleep on, and only when none of its
        host's deadlines moved before ``scheduled`` (a renewal nearly always moves them
        later): a tick evaluates every host and VM, so a datacenter's ticks should
        follow its deadlines, not its renewals (300 a second at 1,000 hosts).
        """
        if actions or not isinstance(ev, m.LeaseObserved):
            return True
        h = self.hosts.get(ev.host)
        if h is None:
            return False
        return any(
            t > ev.now and (scheduled is None or t < scheduled) for t in self._host_deadlines(h)
        )

    # ------------------------------------------------------------ inputs

    def _dispatch(self, ev: m.Input) -> set[str] | None:
        """Apply an input; returns the hosts to evaluate (None: all)."""
        return self._handlers[type(ev)](ev)

    def _on_lease(self, ev: m.LeaseObserved) -> set[str] | None:
        self._lease(ev)
        return {ev.host}

    def _on_vm(self, ev: m.VMObserved) -> set[str] | None:
        self.vmbook.observe(ev.now, ev.name, ev.spec, ev.status, self.hosts, ev.resource_version)
        return self._after_vm(ev.name, ev.now)

    def _on_vm_runtime(self, ev: m.VMRuntimeObserved) -> set[str] | None:
        self.vmbook.observe_runtime(ev.now, ev.vm, ev.runtime, self.hosts)
        return self._after_vm(ev.vm, ev.now)

    def _after_vm(self, name: str, now: float) -> set[str] | None:
        vm = self.vmbook.vms.get(name)
        host = self.hosts.get((vm.holder if vm else None) or "")
        if host is not None and host.phase in RELEASED_PHASES:
            self._rerelease(host, now)
        return set()

    def _on_power_status(self, ev: m.PowerStatusResult) -> set[str] | None:
        rec = self.hosts.get(ev.host)
        if rec is not None:
            self.machine.on_power_status(rec, ev)
        return {ev.host}

    def _on_soft_fence(self, ev: m.SoftFenceResult) -> set[str] | None:
        rec = self.hosts.get(ev.host)
        if rec is not None:
            self.machine.on_soft_fence(rec, ev)
        return {ev.host}

    def _on_fence_step(self, ev: m.FenceStepResult) -> set[str] | None:
        rec = self.hosts.get(ev.host)
        if rec is not None:
            self.machine.on_fence_step(rec, ev)
        return {ev.host}

    def _on_kdump(self, ev: m.KdumpResult) -> set[str] | None:
        rec = self.hosts.get(ev.host)
        if rec is not None:
            self.machine.on_kdump(rec, ev)
        return {ev.host}

    def _on_confirmation(self, ev: m.ConfirmationObserved) -> set[str] | None:
        self._confirmation(ev)
        return {ev.spec.host_ref.name}

    def _on_started(self, ev: m.OperatorStarted) -> set[str] | None:
        self.quiet_until = ev.now + self.settings.startup_quiet_period
        return None

    def _on_host(self, ev: m.HostObserved) -> set[str] | None:
        rec = self.hosts.get(ev.name)
        orphan = None
        if rec is None:
            rec = self.hosts[ev.name] = HostRecord(name=ev.name, spec=ev.spec)
            if ev.status is not None and ev.status.phase is not None:
                restore_host(rec, ev.status)
                self._rerelease(rec, ev.now)
            else:
                rec.phase_since = ev.now
                self._dirty_hosts.add(ev.name)
            orphan = self._orphan_leases.pop(ev.name, None)
        capacity_grew = rec.spec.capacity != ev.spec.capacity or rec.labels != ev.labels
        rec.spec = ev.spec
        rec.labels = dict(ev.labels)
        if capacity_grew:
            self.vmbook.retry_now(rec.spec.cluster, ev.now)
        if orphan is not None:
            self._lease(orphan)
        return {ev.name}

    def _on_host_deleted(self, ev: m.HostDeleted) -> set[str] | None:
        self.hosts.pop(ev.name, None)
        self._dirty_hosts.discard(ev.name)
        self._unwritten.pop(("Host", ev.name), None)
        self._orphan_leases.pop(ev.name, None)
        return None

    def _on_agent(self, ev: m.FenceAgentObserved) -> set[str] | None:
        self.agents[ev.name] = fp.AgentRef(
            ev.name,
            ev.spec.host_ref.name,
            ev.spec.order,
            ev.spec.type,
            float(ev.spec.timeout_seconds),
            float(ev.spec.power_wait_seconds),
            kdump_timeout(ev.spec.type, ev.spec.options),
        )
        host = self.hosts.get(ev.spec.host_ref.name)
        if host is not None and host.phase is Phase.ISOLATED and host.next_retry is None:
            host.next_retry = ev.now  # power management appeared: try it
        return None

    def _on_agent_deleted(self, ev: m.FenceAgentDeleted) -> set[str] | None:
        self.agents.pop(ev.name, None)
        return None

    def _on_vm_deleted(self, ev: m.VMDeleted) -> set[str] | None:
        self._unwritten.pop(("HAVirtualMachine", ev.name), None)
        cluster = self.vmbook.delete(ev.name)
        if cluster is not None:
            self.vmbook.retry_now(cluster, ev.now)
        return None

    def _on_write_failed(self, ev: m.WriteFailed) -> set[str] | None:
        key = (ev.kind, ev.name)
        failures, _, placement = self._unwritten.get(key, (0, 0.0, False))
        failures += 1
        self._unwritten[key] = (
            failures,
            ev.now + self.settings.write_retry_delay(failures),
            placement or ev.placement_changed,
        )
        return set()

    def _on_write_landed(self, ev: m.WriteLanded) -> set[str] | None:
        key = (ev.kind, ev.name)
        entry = self._unwritten.get(key)
        if entry is not None and entry[1] == math.inf:
            del self._unwritten[key]  # the retry that was in flight landed
        elif entry is not None:
            # An older write landed while a newer one waits for its retry: the failure
            # count restarts, the retry stays.
            self._unwritten[key] = (0, entry[1], entry[2])
        if ev.kind == "HAVirtualMachine":
            self.vmbook.written(ev.name, ev.resource_version, ev.host, ev.epoch)
        elif ev.kind == "FenceConfirmation" and key not in self._unwritten:
            self._unlanded_confirmations.discard(ev.name)
        return set()

    def _retry_writes(self, now: float) -> None:
        """Issue again, from the current state, every failed write whose backoff ended."""
        for key, (failures, at, placement) in sorted(self._unwritten.items()):
            if at > now:
                continue
            kind, name = key
            if kind == "Host" and name in self.hosts:
                self._dirty_hosts.add(name)
            elif kind == "FenceConfirmation" and name in self.confirmations:
                self._dirty_confirmations.add(name)
            elif kind == "HAVirtualMachine" and name in self.vmbook.vms:
                self.vmbook.dirty[name] = self.vmbook.dirty.get(name, False) or placement
            else:
                del self._unwritten[key]
                continue
            # In flight: no second retry until this one is reported on.
            self._unwritten[key] = (failures, math.inf, placement)

    def _lease(self, ev: m.LeaseObserved) -> None:
        rec = self.hosts.get(ev.host)
        if rec is None:
            self._orphan_leases[ev.host] = ev  # the Host may be listed after its Lease
            return
        changed = ev.renew_time != rec.renew_time or ev.boot_id != rec.boot_id
        if not rec.lease_fresh(ev.now):
            rec.fresh_since = ev.now  # a gap (or first sight): freshness starts again
        if not rec.lease_seen:
            # First sight (also after a restart): fresh for one duration from now, as
            # client-go judges a leader lease it has just met; the agent's renewTime is
            # another machine's clock and is never compared with ours.  A host restored
            # in an outage is not "back" on that: only a renewal seen later says so.
            rec.renewed_at = ev.now
            rec.renewal_seen = rec.phase not in OUTAGE_PHASES and rec.phase not in RELEASED_PHASES
        elif changed:
            rec.renewed_at = ev.now
            rec.renewal_seen = True
        written = rec.heartbeat_written
        if ev.boot_id != rec.boot_id or (
            changed
            and (
                written is None
                or ev.renew_time - written >= self.settings.heartbeat_status_interval
            )
        ):
            self._dirty_hosts.add(rec.name)
        rec.lease_seen = True
        rec.renew_time = ev.renew_time
        rec.lease_duration = ev.duration
        rec.boot_id = ev.boot_id
        rec.watchdog_timeout = ev.watchdog_timeout
        rec.watchdog_boot_id = ev.watchdog_boot_id
        rec.ready = ev.ready
        self._self_fencing_available(rec, ev)

    def _self_fencing_available(self, rec: HostRecord, ev: m.LeaseObserved) -> None:
        """No device, no proof: say so on the Host (condition + Event) once per reason."""
        reason = None
        if rec.spec.self_fencing.enabled and (
            ev.watchdog_timeout is None or ev.watchdog_boot_id != ev.boot_id
        ):
            reason = ev.self_fencing_unavailable or (
                "the agent's lease declares no watchdog device armed for this boot"
            )
        if reason != rec.self_fencing_unavailable:
            rec.self_fencing_unavailable = reason
            self._dirty_hosts.add(rec.name)
            if reason is not None:
                self.event(
                    rec.name,
                    "SelfFencingUnavailable",
                    f"{reason}: this host is never counted as off by self-fencing",
                    "Warning",
                )

    def _rerelease(self, rec: HostRecord, now: float) -> None:
        """A host proven off must hold no VM (a crash may have cut a release short)."""
        if rec.phase in RELEASED_PHASES and self.vmbook.on_host(rec.name):
            self.vmbook.release(rec, rec.proof or "fence", now)

    def _confirmation(self, ev: m.ConfirmationObserved) -> None:
        known = self.confirmations.get(ev.name)
        if known is not None:
            return
        rec = ConfirmationRecord(ev.name, ev.spec.host_ref.name, ev.spec.reason, ev.created_at)
        self.confirmations[ev.name] = rec
        st = ev.status
        if st is not None and st.phase in ("Applied", "Rejected"):
            rec.phase, rec.message, rec.outage_id = st.phase, st.message, st.outage_id
            return
        host = self.hosts.get(rec.host)
        verdict = self._confirmation_verdict(rec, host, ev.now)
        if verdict is not None:
            rec.phase, rec.message = "Rejected", verdict
            self.event(rec.name, "ConfirmationRejected", verdict, "Warning", "FenceConfirmation")
        else:
            assert host is not None
            rec.phase, rec.outage_id, rec.applied_at = "Applied", host.outage_id, ev.now
            rec.message = f"host {host.name} treated as off for outage {host.outage_id}"
            self.event(
                host.name,
                "ConfirmationApplied",
                f"FenceConfirmation {rec.name}: {rec.reason}",
                "Warning",
            )
            self.machine.fire(host, Trigger.CONFIRMED, ev.now, proof="confirmation")
            rec.released = tuple(
                v.name
                for v in self.vmbook.vms.values()
                if v.last_failure_reason is not None
                and v.epoch
                and v.holder is None
                and v.last_failure_reason.startswith(f"host {host.name} confirmation")
            )
        self._dirty_confirmations.add(rec.name)

    def _forget_confirmations(self) -> None:
        """Bounded memory: a confirmation is forgotten once its status has landed and it
        no longer bears on its host: the host is gone, in no outage, or in another
        outage than the one it was applied to.  S6 holds without the record: observed
        again, the confirmation carries its status and is only remembered; and one
        made before an outage began is rejected as stale for it."""
        for name, rec in list(self.confirmations.items()):
            host = self.hosts.get(rec.host)
            ongoing = host.outage_id if host is not None else None
            if ongoing is not None and rec.outage_id in (None, ongoing):
                continue  # this outage's (a Rejected one names none): still bears on it
            if name in self._unlanded_confirmations or name in self._dirty_confirmations:
                continue
            del self.confirmations[name]

    def _confirmation_verdict(
        self, rec: ConfirmationRecord, host: HostRecord | None, now: float
    ) -> str | None:
        if host is None:
            return f"host {rec.host} does not exist"
        if host.lease_fresh(now) or host.phase in (Phase.UP, Phase.PENDING):
            return f"host {rec.host} is {host.phase.value} with a fresh heartbeat"
        if host.phase is Phase.MAINTENANCE:
            return f"host {rec.host} is in maintenance"
        if host.phase in RELEASED_PHASES:
            return (
                f"host {rec.host} is already proven off ({host.proof}) for outage {host.outage_id}"
            )
        assert host.phase in OUTAGE_PHASES and host.outage_start is not None
        if rec.created_at < math.floor(host.outage_start):
            return (
                f"stale: made before outage {host.outage_id} of host {rec.host} began; "
                "create a new FenceConfirmation"
            )
        for other in self.confirmations.values():
            if other.phase == "Applied" and other.outage_id == host.outage_id:
                return f"outage {host.outage_id} was already confirmed by {other.name}"
        return None

    # ------------------------------------------------------------ HostContext

    def quiet(self, now: float) -> bool:
        return self.quiet_until is not None and now < self.quiet_until

    def agent_refs(self, names: tuple[str, ...]) -> tuple[fp.AgentRef | None, ...]:
        return tuple(self.agents.get(n) for n in names)

    def levels(self, host: str) -> tuple[fp.Level, ...]:
        rec = self.hosts.get(host)
        if rec is None or not rec.spec.power_management.enabled:
            return ()
        return fp.levels(a for a in self.agents.values() if a.host == host)

    def vm_count(self, host: str) -> int:
        return self.vmbook.count_on(host)

    def fence_hold(self, rec: HostRecord, now: float) -> tuple[str, str] | None:
        if self.quiet(now):
            return "FenceSkippedQuietPeriod", "operator just started: quiet period"
        cluster = rec.spec.cluster
        pol = self.settings.cluster(cluster)
        if not pol.fencing_enabled:
            return "FenceSkippedDisabled", f"fencing is disabled for cluster {cluster}"
        broken = self._connectivity(cluster, now)
        if broken is not None:
            return "FenceSkippedBrokenConnectivity", broken
        if now < self._settling.get(cluster, now):
            return (
                "FenceDelayedConnectivitySettling",
                f"cluster {cluster} just regained connectivity: waiting "
                f"{self.settings.connectivity_settle:g}s for its hosts to report",
            )
        fencing = sum(1 for h in self.hosts.values() if h.phase is Phase.FENCING)
        if fencing >= self.settings.max_concurrent_fences:
            return (
                "FenceDelayedConcurrency",
                f"{fencing} fence(s) running, the most allowed at once "
                f"({self.settings.max_concurrent_fences}): waiting for a free slot",
            )
        return None

    def _connectivity(self, cluster: str, now: float) -> str | None:
        """Why fencing in ``cluster`` is skipped for broken connectivity, or None.
        Raises/clears the cluster's alert and starts the settling delay on recovery."""
        pol = self.settings.cluster(cluster)
        seen = connectivity.assess(h for h in self.hosts.values() if h.spec.cluster == cluster)
        key = f"FenceSkippedBrokenConnectivity/{cluster}"
        if seen.broken(pol):
            msg = seen.describe(cluster, pol)
            self.alert(key, True, msg)
            return msg
        if key in self._alerts:
            self.alert(key, False)
            self._settling[cluster] = now + self.settings.connectivity_settle
        return None

    def proxies(self, rec: HostRecord) -> tuple[str, ...]:
        out: list[str] = []
        limit = self.settings.max_proxy_candidates
        for pref in rec.spec.power_management.proxy_preference:
            if pref == "operator":
                out.append("operator")
                continue
            same = pref == "cluster"
            cands = sorted(
                h.name
                for h in self.hosts.values()
                if h.name != rec.name
                and h.phase is Phase.UP
                and not h.spec.maintenance
                and (h.spec.cluster == rec.spec.cluster) == same
            )
            out.extend(c for c in cands[:limit] if c not in out)
        return tuple(out)

    def release_vms(self, rec: HostRecord, proof: str, now: float) -> None:
        self._last_release = self.vmbook.release(rec, proof, now)
        self.vmbook.retry_now(rec.spec.cluster, now)

    def vms_unknown(self, rec: HostRecord, now: float) -> None:
        self.vmbook.host_unknown(rec.name)

    def vms_back(self, rec: HostRecord, now: float) -> None:
        self.vmbook.host_back(rec.name, now)

    def host_up(self, rec: HostRecord, now: float) -> None:
        self.vmbook.host_back(rec.name, now)
        self.vmbook.retry_now(rec.spec.cluster, now)

    def act(self, action: m.Action) -> None:
        self._out.append(action)

    def event(
        self,
        name: str,
        reason: str,
        message: str,
        type: Literal["Normal", "Warning"] = "Normal",
        kind: Literal["Host", "HAVirtualMachine", "FenceConfirmation"] = "Host",
    ) -> None:
        self._out.append(m.EmitEvent(kind, name, reason, message, type))

    def _vm_event(
        self, name: str, reason: str, message: str, type: Literal["Normal", "Warning"]
    ) -> None:
        self._out.append(m.EmitEvent("HAVirtualMachine", name, reason, message, type))

    def alert(self, key: str, active: bool, message: str = "") -> None:
        if active == (key in self._alerts):
            return
        if active:
            self._alerts.add(key)
        else:
            self._alerts.discard(key)
        self._out.append(
            m.Alert(
                key, active, message, "critical" if key.startswith("HostIsolated") else "warning"
            )
        )

    def dirty_host(self, name: str) -> None:
        self._dirty_hosts.add(name)

    # ------------------------------------------------------------ output

    def _flush(self) -> list[m.Action]:
        out = self._out
        self._out = []
        for name in sorted(self._dirty_hosts):
            rec = self.hosts.get(name)
            if rec is not None:
                rec.heartbeat_written = rec.renew_time
                out.append(m.WriteHostStatus(name, host_status(rec, self.vm_count(name))))
        for name in sorted(self._dirty_confirmations):
            out.append(
                m.WriteConfirmationStatus(name, confirmation_status(self.confirmations[name]))
            )
            self._unlanded_confirmations.add(name)
        for name, placed in sorted(self.vmbook.dirty.items()):
            vm = self.vmbook.vms.get(name)
            if vm is not None:
                out.append(
                    m.WriteVMStatus(
                        name,
                        vm_status(vm),
                        placed,
                        vm.resource_version,
                        vm.view_host,
                        vm.view_epoch,
                    )
                )
        self._dirty_hosts.clear()
        self._dirty_confirmations.clear()
        self.vmbook.dirty.clear()
        return out
