"""Making the VMs on this host match their placement, and reporting what runs.

Ownership (also in hafence.api.vm and docs/agent.md): the operator owns placement,
``status.host`` and ``status.placementEpoch``; this agent owns ``status.runtime`` of
the VMs placed on its host and writes nothing else.  It writes ``status.runtime``
only while the VM is placed here (or placed nowhere after having run here), so two
agents never fight over one VM's runtime status.

A VM should run here iff ``status.host`` is this host, ``spec.runStrategy`` is
Always, and this agent has not marked it Failed for the current placement epoch.
The crash budget (restarts, Failed) is per placement epoch: a new placement by the
operator starts it afresh.

Doubt never lets a VM go: ``Stopped`` is reported only for a VM verified stopped (the
driver observed it not running, or a stop returned after verifying it), ``StopFailed``
for a stop that could not be verified, and ``Unknown`` when the driver cannot tell
whether a VM placed here runs; neither restarts it nor counts a crash, and the record
is kept (the operator keeps the VM on this host until it is proven off).

This module decides; it does no I/O of its own: drivers act, the caller writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from hafence.agent.drivers import FENCED, LocalVM, Observed
from hafence.api.vm import Runtime


def vm_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


@dataclass(frozen=True)
class Placed:
    """What one HAVirtualMachine object says about this host."""

    key: str
    host: str | None
    epoch: int
    should_run: bool  # placed here and runStrategy Always
    runtime: Runtime | None
    runtime_error: str | None
    reported: Mapping[str, Any] | None  # status.runtime as last stored

    @classmethod
    def from_object(cls, obj: Mapping[str, Any], my_host: str) -> Placed:
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        host = status.get("host") or None
        runtime: Runtime | None = None
        error: str | None = None
        try:
            runtime = Runtime.model_validate(spec.get("runtime") or {})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            error = f"spec.runtime{'.' + where if where else ''}: {first.get('msg')}"
        return cls(
            key=vm_key(obj),
            host=host,
            epoch=int(status.get("placementEpoch") or 0),
            should_run=host == my_host and spec.get("runStrategy", "Always") == "Always",
            runtime=runtime,
            runtime_error=error,
            reported=status.get("runtime"),
        )

    def runtime_writable_by(self, my_host: str, local_here: bool) -> bool:
        if self.host == my_host:
            return True
        if self.host is None:
            rep = self.reported or {}
            return local_here or rep.get("host") == my_host
        return False


@dataclass(frozen=True)
class RestartPolicy:
    limit: int = 5
    backoff: float = 1.0
    backoff_max: float = 60.0

    def delay(self, restarts: int) -> float:
        """Wait before restart number ``restarts`` (1-based): doubling, capped."""
        return float(min(self.backoff * 2 ** max(restarts - 1, 0), self.backoff_max))


@dataclass
class Track:
    """The agent's memory of one VM for one placement epoch."""

    epoch: int
    restarts: int = 0
    failed: str | None = None
    not_before: float = 0.0  # monotonic: no (re)start before this
    last_exit: str = ""

    @classmethod
    def resume(cls, placed: Placed, my_host: str) -> Track:
        """Carry the crash budget over an agent restart from our own last report."""
        rep = placed.reported or {}
        track = cls(epoch=placed.epoch)
        if rep.get("host") == my_host and int(rep.get("placementEpoch") or 0) == placed.epoch:
            track.restarts = int(rep.get("restarts") or 0)
            if rep.get("state") == "Failed":
                track.failed = str(rep.get("message") or "Failed")
        return track


@dataclass
class Plan:
    """One reconcile pass's decisions."""

    stop: list[LocalVM] = field(default_factory=list)
    start: list[Placed] = field(default_factory=list)
    forget: list[str] = field(default_factory=list)  # local records of dead VMs
    resave: list[LocalVM] = field(default_factory=list)  # records whose epoch moved
    # Records of VMs the watchdog killed: kept until their Failed report is stored, so
    # an agent restart in between still knows not to run them again.
    forget_after_report: list[str] = field(default_factory=list)
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    # VMs in ``stop`` whose runtime this host reports: Stopped or StopFailed, once the
    # stop's outcome is known (``Reconciler.stop_report``).
    report_stop: dict[str, Track] = field(default_factory=dict)


def runtime_report(
    host: str, state: str, track: Track, *, message: str | None = None, pid: int | None = None
) -> dict[str, Any]:
    return {
        "host": host,
        "state": state,
        "placementEpoch": track.epoch,
        "restarts": track.restarts,
        "message": message,
        "pid": pid,
    }


class Reconciler:
    def __init__(self, host: str, policy: RestartPolicy) -> None:
        self.host = host
        self.policy = policy
        self.tracks: dict[str, Track] = {}

    def track(self, placed: Placed) -> Track:
        track = self.tracks.get(placed.key)
        if track is None or track.epoch != placed.epoch:
            track = Track.resume(placed, self.host)
            self.tracks[placed.key] = track
        return track

    def plan(
        self,
        vms: Mapping[str, Placed],
        local: Mapping[str, LocalVM],
        observed: Mapping[str, Observed],
        *,
        now: float,
        may_start: bool,
    ) -> Plan:
        """Decide a pass.  ``may_start`` is False until the S3 sweep of this connection
        is done: without fresh placement the agent only stops, never starts."""
        plan = Plan()
        for key in sorted(set(vms) | set(local)):
            placed = vms.get(key)
            vm = local.get(key)
            obs = observed.get(key)
            if vm is not None and vm.extra.get(FENCED):
                self._fenced(plan, placed, vm)
                continue
            if placed is None or not placed.should_run:
                writable = placed is not None and placed.runtime_writable_by(
                    self.host, vm is not None
                )
                if vm is not None and obs is not None and obs.stopped:
                    plan.forget.append(key)
                elif vm is not None:
                    # Running, or the driver cannot tell: stop it; the report waits
                    # for the stop's verdict.
                    plan.stop.append(vm)
                    if placed is not None and writable:
                        plan.report_stop[key] = self.track(placed)
                    writable = False
                if placed is not None and writable:
                    plan.reports[key] = runtime_report(self.host, "Stopped", self.track(placed))
                if placed is None:
                    self.tracks.pop(key, None)
                continue
            track = self.track(placed)
            if vm is not None and (obs is None or obs.unknown):
                detail = obs.detail if obs is not None else "not observed"
                plan.reports[key] = runtime_report(
                    self.host,
                    "Unknown",
                    track,
                    message=f"cannot tell whether it runs: {detail}",
                    pid=vm.pid,
                )
                continue
            if vm is not None and obs is not None and obs.running:
                if vm.epoch != placed.epoch:
                    # Re-placed here while running (same host, new decision): the
                    # record must name the epoch the VM now runs under.
                    vm.epoch = placed.epoch
                    plan.resave.append(vm)
                plan.reports[key] = runtime_report(self.host, "Running", track, pid=vm.pid)
                continue
            if vm is not None:
                # It was running here and is gone while it should run: a crash.
                plan.forget.append(key)
                track.restarts += 1
                track.last_exit = obs.detail if obs is not None else "gone"
                if track.restarts > self.policy.limit:
                    track.failed = (
                        f"crashed {track.restarts} times "
                        f"(restart limit {self.policy.limit}); last: {track.last_exit}"
                    )
                else:
                    delay = self.policy.delay(track.restarts)
                    track.not_before = now + delay
                    plan.reports[key] = runtime_report(
                        self.host,
                        "Crashed",
                        track,
                        message=f"{track.last_exit}; restart {track.restarts} of "
                        f"{self.policy.limit} in {delay:g}s",
                    )
                    continue
            if track.failed is not None:
                plan.reports[key] = runtime_report(self.host, "Failed", track, message=track.failed)
                continue
            if placed.runtime_error is not None:
                track.failed = placed.runtime_error
                plan.reports[key] = runtime_report(self.host, "Failed", track, message=track.failed)
                continue
            if may_start and now >= track.not_before:
                plan.start.append(placed)
        return plan

    def _fenced(self, plan: Plan, placed: Placed | None, vm: LocalVM) -> None:
        """A VM the watchdog killed stays down for that placement epoch: only a new
        placement by the operator may run it again (never a race with a re-placement
        elsewhere that the operator made while this host was silent)."""
        reason = vm.extra[FENCED]
        if placed is None or placed.epoch != vm.epoch or placed.host != self.host:
            plan.forget.append(vm.key)  # re-placed or gone: nothing left to report
            return
        track = self.track(placed)
        track.failed = reason
        plan.reports[vm.key] = runtime_report(self.host, "Failed", track, message=reason)
        plan.forget_after_report.append(vm.key)

    def stop_report(self, track: Track, error: str | None) -> dict[str, Any]:
        """The report after a stop: Stopped only if it was verified."""
        if error is None:
            return runtime_report(self.host, "Stopped", track)
        return runtime_report(
            self.host, "StopFailed", track, message=f"stop failed, it may still run: {error}"
        )

    def started(self, placed: Placed, vm: LocalVM) -> dict[str, Any]:
        return runtime_report(self.host, "Running", self.track(placed), pid=vm.pid)

    def start_failed(self, placed: Placed, message: str) -> dict[str, Any]:
        track = self.track(placed)
        track.failed = message
        return runtime_report(self.host, "Failed", track, message=message)
