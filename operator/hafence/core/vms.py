"""The VMs' side of the core: placement records, release, restarts and retries.

Two kinds of HA restart elsewhere: after the VM's host is proven off (``release``), and
after the agent of a healthy (Up) host reports the VM ``Failed`` at its current placement
(``_restart_failed``).  The agent's Failed means the VM is not running there and will not
be started again under that placement epoch (docs/agent.md), so only such a report, from
the host that may run the VM (its holder) about the current epoch, frees the VM (S1).
Failure restarts skip the host the VM just failed on for the first try, are spaced by the
VM retry schedule, and stop after ``Settings.max_failed_restarts`` in a row (Failed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

from hafence.api.vm import HAVirtualMachineSpec, HAVirtualMachineStatus, RuntimeStatus
from hafence.core import placement
from hafence.core.messages import Action, PlaceVM, ReleaseVMs
from hafence.core.persist import restore_vm
from hafence.core.policy import Settings
from hafence.core.records import HostRecord, VMRecord
from hafence.core.transitions import Phase

Emit = Callable[[str, str, str, Literal["Normal", "Warning"]], None]


class VMBook:
    def __init__(self, settings: Settings, act: Callable[[Action], None], emit: Emit) -> None:
        self.settings = settings
        self.vms: dict[str, VMRecord] = {}
        self._act = act
        self._emit = emit
        self.dirty: dict[str, bool] = {}  # name -> placement changed
        # host -> VMs placed there or that may still run there (kept in step with
        # every change of VMRecord.host/holder: the scale target is 10,000 VMs).
        self._by_host: dict[str, set[str]] = {}
        self.wake = True  # something may have become placeable: schedule on next call
        # Names of VMs that may be Pending (a superset, pruned by schedule): keeps the
        # scheduler and the retries off the thousands of VMs that are simply running.
        self.pending: set[str] = set()

    # ------------------------------------------------------------ bookkeeping

    def _dirty(self, rec: VMRecord, placement_changed: bool = False) -> None:
        self.dirty[rec.name] = self.dirty.get(rec.name, False) or placement_changed

    def _unindex(self, rec: VMRecord) -> None:
        for where in (rec.host, rec.holder):
            if where is not None:
                self._by_host.get(where, set()).discard(rec.name)

    def _index(self, rec: VMRecord) -> None:
        for where in (rec.host, rec.holder):
            if where is not None:
                self._by_host.setdefault(where, set()).add(rec.name)

    def _set_holder(self, rec: VMRecord, holder: str | None) -> None:
        self._unindex(rec)
        rec.holder = holder
        self._index(rec)

    def on_host(self, host: str) -> list[VMRecord]:
        """VMs placed on ``host`` or that may still run there."""
        return [self.vms[n] for n in sorted(self._by_host.get(host, ()))]

    def count_on(self, host: str) -> int:
        return sum(1 for n in self._by_host.get(host, ()) if self.vms[n].host == host)

    def observe(
        self,
        now: float,
        name: str,
        spec: HAVirtualMachineSpec,
        status: HAVirtualMachineStatus | None,
        hosts: Mapping[str, HostRecord],
        resource_version: str = "",
    ) -> None:
        rec = self.vms.get(name)
        if rec is not None and resource_version:
            # The view a placement decision is made on: this object (S2 precondition).
            rec.resource_version = resource_version
            if status is not None:
                rec.view_host, rec.view_epoch = status.host, status.placement_epoch
        if rec is None:
            rec = self.vms[name] = VMRecord(name=name, spec=spec)
            self.wake = True
            self.pending.add(name)
            rec.resource_version = resource_version
            if status is not None:
                rec.view_host, rec.view_epoch = status.host, status.placement_epoch
            if status is not None and status.phase is not None:
                restore_vm(rec, status)
                self._index(rec)
            else:
                rec.phase = "Pending" if spec.run_strategy == "Always" else "Down"
                self._dirty(rec)
        else:
            changed = rec.spec != spec
            rec.spec = spec
            if changed:
                self._spec_changed(rec, now)
        if status is not None:
            self.observe_runtime(now, name, status.runtime, hosts)

    def _spec_changed(self, rec: VMRecord, now: float) -> None:
        # A person acted on the VM (fixed its command, ...): failures count afresh, and
        # a VM that stays Failed on its host is re-placed by the runtime check that
        # follows in ``observe``.
        rec.failed_restarts = 0
        if rec.spec.run_strategy == "Halted":
            if rec.host is not None:
                self._move(rec, None)
            if rec.phase != "Down":
                rec.phase = "Down"
                rec.unschedulable = None
                self._dirty(rec)
        elif rec.phase in ("Down", "Pending", "Failed") and rec.host is None:
            self.pending.add(rec.name)
            rec.phase = "Pending"
            rec.next_placement = now
            self.wake = True
            self._dirty(rec)

    def written(self, name: str, resource_version: str, host: str | None, epoch: int) -> None:
        """A status write of ours landed: the object as it now is becomes the view."""
        rec = self.vms.get(name)
        if rec is not None and resource_version:
            rec.resource_version = resource_version
            rec.view_host, rec.view_epoch = host, epoch

    def delete(self, name: str) -> str | None:
        rec = self.vms.pop(name, None)
        self.dirty.pop(name, None)
        self.pending.discard(name)
        if rec is None:
            return None
        self._unindex(rec)
        return rec.cluster

    def _move(self, rec: VMRecord, host: str | None) -> None:
        rec.running_since = None
        self._unindex(rec)
        rec.host = host
        rec.epoch += 1
        if host is not None:
            rec.holder = host
        self._index(rec)
        self._dirty(rec, placement_changed=True)

    # ------------------------------------------------------------ runtime

    def observe_runtime(
        self, now: float, name: str, rt: RuntimeStatus | None, hosts: Mapping[str, HostRecord]
    ) -> None:
        rec = self.vms.get(name)
        if rec is None:
            return
        rec.runtime = rt
        if rt is None:
            return
        # The holder's agent says the VM is stopped there, having seen the current
        # placement: it will not run it again (S3), so the VM may go elsewhere (S1).
        if (
            rt.host == rec.holder
            and rt.host != rec.host
            and rt.state in ("Stopped", "Failed")
            and rt.placement_epoch >= rec.epoch
        ):
            self._set_holder(rec, rec.host)
            self.wake = True
            self._dirty(rec)
        if rec.host is None or rt.host != rec.host or rt.placement_epoch != rec.epoch:
            return
        host = hosts.get(rec.host)
        if host is None or host.phase is not Phase.UP:
            return
        self._phase_from_runtime(rec, now)

    def _phase_from_runtime(self, rec: VMRecord, now: float) -> None:
        rt = rec.runtime
        phase = rec.phase
        if rt is None or rt.host != rec.host or rt.placement_epoch != rec.epoch:
            phase = "Scheduled"
        elif rt.state == "Running":
            phase = "Running"
            if rec.running_since is None:
                rec.running_since = now
        elif rt.state in ("Unknown", "StopFailed"):
            phase = "Unknown"  # its agent cannot tell: it may run there, it stays there
        elif rt.state == "Failed":
            message = rt.message or "failed on its host"
            since = rec.running_since
            if since is not None and now - since >= self.settings.failed_restart_reset:
                rec.failed_restarts = 0  # it ran long enough here: not a row of failures
            if self._restartable(rec):
                self._restart_failed(rec, message, now)
                return
            phase = "Failed"
            reason, detail = message, message
            if rec.spec.highly_available and rec.spec.run_strategy == "Always":
                detail = (
                    f"{message}; not restarted again after {rec.failed_restarts} "
                    "restart(s) on other hosts "
                    f"(max_failed_restarts {self.settings.max_failed_restarts})"
                )
                reason = f"failed on {rec.host}: {detail}"
            if rec.last_failure_reason != reason:
                rec.last_failure_reason = reason
                self._emit(
                    rec.name, "VMFailed", f"agent of {rec.host} gave up: {detail}", "Warning"
                )
                self._dirty(rec)
        else:
            phase = "Scheduled"
        if phase != rec.phase:
            rec.phase = phase
            self._dirty(rec)

    def _restartable(self, rec: VMRecord) -> bool:
        """May a Failed report (already checked: from ``rec.host``, current epoch) move
        the VM?  S1: only if that host is also the one that may run it (the holder), so
        its agent's "Failed" (stopped, never started again under this epoch) is the
        word of the only host that could run it."""
        return (
            rec.spec.highly_available
            and rec.spec.run_strategy == "Always"
            and rec.holder == rec.host
            and rec.failed_restarts < self.settings.max_failed_restarts
        )

    def _restart_failed(self, rec: VMRecord, message: str, now: float) -> None:
        failed_on = rec.host
        rec.failed_restarts += 1
        rec.last_failure_reason = f"failed on {failed_on}: {message}"
        self._emit(
            rec.name,
            "VMFailed",
            f"agent of {failed_on} gave up: {message}; restarting on another host "
            f"({rec.failed_restarts}/{self.settings.max_failed_restarts})",
            "Warning",
        )
        self._set_holder(rec, None)
        self._move(rec, None)
        rec.phase = "Pending"
        self.pending.add(rec.name)
        rec.restart_pending = True
        rec.attempts = 0
        rec.avoid = failed_on
        rec.unschedulable = rec.unschedulable_since = None
        rec.next_placement = now + self.settings.failed_restart_delay(rec.failed_restarts)
        self.wake = True

    # ------------------------------------------------------------ host changes

    def host_unknown(self, host: str) -> None:
        for rec in self.on_host(host):
            if rec.host == host and rec.phase in ("Scheduled", "Running", "Failed"):
                rec.phase = "Unknown"
                self._dirty(rec)
                self._emit(
                    rec.name,
                    "VMSetUnknown",
                    f"host {host} is not responding: the VM may still run there",
                    "Warning",
                )

    def host_back(self, host: str, now: float) -> None:
        for rec in self.on_host(host):
            if rec.host == host:
                self._phase_from_runtime(rec, now)

    def release(self, host: HostRecord, proof: str, now: float) -> tuple[str, ...]:
        released = []
        for rec in sorted(self.on_host(host.name), key=lambda v: v.name):
            released.append(rec.name)
            self._set_holder(rec, None)
            was_placed = rec.host == host.name
            if was_placed:
                self._move(rec, None)
            self._dirty(rec)
            if not was_placed:
                continue
            rec.last_failure_reason = f"host {host.name} {proof}-proven off"
            self._emit(
                rec.name,
                "VMReleased",
                f"host {host.name} is proven off ({proof}, outage {host.outage_id})",
                "Normal",
            )
            if rec.spec.highly_available and rec.spec.run_strategy == "Always":
                rec.phase = "Pending"
                self.pending.add(rec.name)
                rec.restart_pending = True
                rec.next_placement = now
                rec.attempts = 0
            else:
                rec.phase = "Down"
        if released:
            assert host.outage_id is not None
            self._act(ReleaseVMs(host.name, host.outage_id, proof, tuple(released)))
        return tuple(released)

    def retry_now(self, cluster: str, now: float) -> None:
        """Capacity appeared in ``cluster``: Pending VMs there try again now."""
        self.wake = True
        for rec in self._pending():
            if rec.cluster == cluster:
                rec.next_placement = now

    def _pending(self) -> list[VMRecord]:
        out = []
        for name in sorted(self.pending):
            rec = self.vms.get(name)
            if rec is None or rec.phase != "Pending":
                self.pending.discard(name)
            else:
                out.append(rec)
        return out

    # ------------------------------------------------------------ scheduling

    def schedule(self, now: float, hosts: Mapping[str, HostRecord]) -> None:
        self.wake = False
        due = [
            v
            for v in self._pending()
            if v.spec.run_strategy == "Always"
            and (v.next_placement is None or v.next_placement <= now)
        ]
        if not due:
            return
        due.sort(key=lambda v: placement.priority_key(v.name, v.spec))
        views = self._views(hosts, {v.cluster for v in due}, now)
        for rec in due:
            target, why = placement.choose_host(
                rec.spec, views.values(), only=rec.holder, avoid=rec.avoid
            )
            rec.avoid = None  # only the first try after a failure looks elsewhere
            if target is None:
                self._unschedulable(rec, now, why)
                continue
            previous = rec.holder
            self._move(rec, target)
            rec.phase = "Scheduled"
            rec.attempts = 0
            rec.next_placement = None
            rec.unschedulable = rec.unschedulable_since = None
            restart = rec.restart_pending
            if restart:
                rec.restart_count += 1
                rec.restart_pending = False
                self._emit(
                    rec.name,
                    "HAVMRestarted",
                    f"placed on {target} after {rec.last_failure_reason}",
                    "Normal",
                )
            else:
                self._emit(rec.name, "VMPlaced", f"placed on {target}", "Normal")
            self._act(PlaceVM(rec.name, target, rec.epoch, previous, restart))
            v = views[target]
            groups = v.groups
            if rec.spec.placement.anti_affinity_group is not None:
                groups = groups | {rec.spec.placement.anti_affinity_group}
            views[target] = placement.HostView(
                v.name,
                v.cluster,
                v.labels,
                v.schedulable,
                v.cpu_free - rec.spec.resources.cpu,
                v.memory_free - rec.spec.resources.memory_mi_b,
                groups,
                v.late,
            )

    def _unschedulable(self, rec: VMRecord, now: float, why: str) -> None:
        rec.attempts += 1
        rec.next_placement = now + self.settings.vm_retry_delay(rec.attempts)
        if rec.unschedulable != why:
            if rec.unschedulable is None:
                rec.unschedulable_since = now
                reason = "HAVMRestartFailed" if rec.restart_pending else "VMUnschedulable"
                self._emit(rec.name, reason, why, "Warning")
            rec.unschedulable = why
        self._dirty(rec)

    def _views(
        self, hosts: Mapping[str, HostRecord], clusters: set[str], now: float
    ) -> dict[str, placement.HostView]:
        """Free capacity of the hosts of ``clusters``, from the VM-by-host index."""
        views = {}
        for h in hosts.values():
            if h.spec.cluster not in clusters:
                continue
            cpu = mem = 0
            groups: set[str] = set()
            for name in self._by_host.get(h.name, ()):
                v = self.vms[name]
                cpu += v.spec.resources.cpu
                mem += v.spec.resources.memory_mi_b
                if v.spec.placement.anti_affinity_group is not None:
                    groups.add(v.spec.placement.anti_affinity_group)
            views[h.name] = placement.HostView(
                name=h.name,
                cluster=h.spec.cluster,
                labels=h.labels,
                schedulable=h.phase is Phase.UP and not h.spec.maintenance,
                cpu_free=h.spec.capacity.cpu - cpu,
                memory_free=h.spec.capacity.memory_mi_b - mem,
                groups=frozenset(groups),
                late=h.heartbeat_late(now),
            )
        return views
