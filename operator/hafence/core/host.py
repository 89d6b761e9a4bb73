"""One host's escalation: which trigger an input amounts to, and the table's effects.

The phases and their transitions live in ``transitions.py``; this module never sets a
phase itself, it fires triggers.  Everything outside one host (the other hosts, the VMs,
the fencing policies, emitting actions) comes through ``HostContext``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Protocol

from hafence.core import fencing_plan as fp
from hafence.core import isolation, triggers
from hafence.core.messages import (
    Action,
    CheckPower,
    FenceStepResult,
    PowerStatusResult,
    RunFenceStep,
    SoftFence,
    SoftFenceResult,
)
from hafence.core.policy import Settings
from hafence.core.records import HostRecord
from hafence.core.transitions import (
    Phase,
    Transition,
    Trigger,
    lookup,
)

FENCE_STEPS = ("status", "off", "verify", "on")


class HostContext(Protocol):
    settings: Settings
    namespace: str

    @property
    def hosts(self) -> Mapping[str, HostRecord]: ...  # peers, for the self-fence proof

    def quiet(self, now: float) -> bool: ...
    def levels(self, host: str) -> tuple[fp.Level, ...]: ...
    def vm_count(self, host: str) -> int: ...
    def fence_hold(self, rec: HostRecord, now: float) -> tuple[str, str] | None: ...
    def proxies(self, rec: HostRecord) -> tuple[str, ...]: ...
    def release_vms(self, rec: HostRecord, proof: str, now: float) -> None: ...
    def vms_unknown(self, rec: HostRecord, now: float) -> None: ...
    def vms_back(self, rec: HostRecord, now: float) -> None: ...
    def host_up(self, rec: HostRecord, now: float) -> None: ...
    def act(self, action: Action) -> None: ...
    def event(
        self,
        name: str,
        reason: str,
        message: str,
        type: Literal["Normal", "Warning"] = "Normal",
    ) -> None: ...
    def alert(self, key: str, active: bool, message: str = "") -> None: ...
    def dirty_host(self, name: str) -> None: ...


class HostMachine:
    def __init__(self, ctx: HostContext) -> None:
        self.ctx = ctx
        self.fired: list[tuple[str, Transition]] = []  # for tests: every transition taken

    # ------------------------------------------------------------ the table

    def fire(self, rec: HostRecord, trigger: Trigger, now: float, proof: str = "") -> bool:
        t = lookup(rec.phase, trigger)
        if t is None:
            return False
        self.fired.append((rec.name, t))
        if t.target is not rec.phase:
            rec.phase_since = now
        rec.phase = t.target
        self.ctx.dirty_host(rec.name)
        for effect in t.effects:
            self._effect(effect, rec, t, now, proof)
        return True

    def _effect(self, name: str, rec: HostRecord, t: Transition, now: float, proof: str) -> None:
        ctx = self.ctx
        if name == "begin_outage":
            expiry = rec.lease_expiry()
            start = now if t.source is Phase.MAINTENANCE or expiry is None else expiry
            rec.clear_outage()
            rec.power_state = None  # asked again: an old "off" proves nothing now
            rec.outage_start = start
            rec.outage_id = f"{rec.name}-{int(start)}"
            rec.boot_id_at_outage = rec.boot_id
            grace = ctx.settings.grace(ctx.vm_count(rec.name))
            ctx.event(
                rec.name,
                "HostConnecting",
                f"heartbeat lease expired; outage {rec.outage_id}; soft fencing "
                f"after {grace:g}s of grace",
                "Warning",
            )
        elif name == "end_outage":
            ctx.event(rec.name, "HostUp", f"heartbeat fresh, boot ID {rec.boot_id}")
            if rec.outage_id is not None:
                ctx.alert(f"HostIsolated/{rec.name}", False)
            rec.clear_outage()
            ctx.host_up(rec, now)
        elif name == "warn_if_same_boot":
            if t.source in (Phase.REBOOTING, Phase.MANUALLY_FENCED) and (
                rec.boot_id == rec.boot_id_at_outage
            ):
                msg = (
                    f"host was {rec.proof}-proven off for outage {rec.outage_id} but came "
                    f"back with the same boot ID {rec.boot_id}; its VMs are placed "
                    "elsewhere, so its agent must stop them"
                )
                ctx.event(rec.name, "HostReturnedWithoutReboot", msg, "Warning")
                ctx.alert(f"HostReturnedWithoutReboot/{rec.name}", True, msg)
        elif name == "check_power_or_soft_fence":
            if ctx.levels(rec.name):
                self._set_step(rec, "power-status", now)
            else:
                self._soft_fence(rec, now)
        elif name == "soft_fence":
            self._soft_fence(rec, now)
        elif name == "note_reboot":
            ctx.event(
                rec.name,
                "HostRebooted",
                f"new boot ID {rec.boot_id} (was {rec.boot_id_at_outage}): the host "
                "rebooted during the outage; its VMs restart where they are placed",
            )
        elif name == "vms_unknown":
            ctx.vms_unknown(rec, now)
        elif name == "vms_back":
            ctx.vms_back(rec, now)
        elif name == "fence_first_level":
            rec.attempt += 1
            rec.level_index = 0
            rec.next_retry = None
            rec.held = None
            self._start_level(rec, now)
        elif name == "fence_next_level":
            rec.level_index += 1
            self._start_level(rec, now)
        elif name == "release_vms":
            rec.proof = proof
            ctx.release_vms(rec, proof, now)
        elif name == "power_on":
            self._set_step(rec, "on", now)
        elif name == "alert_isolated":
            msg = isolation.needs_person(rec, bool(ctx.levels(rec.name)), ctx.namespace)
            ctx.event(rec.name, "HostIsolated", msg, "Warning")
            ctx.alert(f"HostIsolated/{rec.name}", True, f"host {rec.name} isolated: {msg}")
        elif name == "schedule_retry":
            rec.step, rec.step_pending = None, False
            if ctx.levels(rec.name):
                rec.next_retry = now + ctx.settings.fence_retry_delay(rec.attempt)
        elif name == "retry_when_allowed":
            rec.step, rec.step_pending = None, False
            rec.next_retry = now  # every evaluation asks the policy again
        elif name == "abandon_ops":
            rec.op_id = None
            rec.step = None
            rec.step_pending = False
            rec.next_retry = None
        else:  # pragma: no cover - the table names only the effects above
            raise AssertionError(f"unknown effect {name}")

    # ------------------------------------------------------------ steps

    def _soft_fence(self, rec: HostRecord, now: float) -> None:
        if rec.spec.ssh is None:
            self.ctx.event(rec.name, "SoftFenceFailed", "no ssh configured", "Warning")
            self.fire(rec, Trigger.SOFT_FENCE_FAILED, now)
            return
        self.ctx.event(rec.name, "SoftFenceStarted", "restarting the host agent over SSH")
        self._set_step(rec, "soft-fence", now)

    def _start_level(self, rec: HostRecord, now: float) -> None:
        levels = self.ctx.levels(rec.name)
        if rec.level_index >= len(levels):
            self._level_failed(rec, now, "the level's fence agents are gone")
            return
        lv = levels[rec.level_index]
        self.ctx.event(
            rec.name,
            "FenceOperationStarted",
            f"attempt {rec.attempt}, level {rec.level_index + 1}/{len(levels)} "
            f"(order {lv.order}: {', '.join(lv.agents)}): status, off, verify off, on",
        )
        self._set_step(rec, "status", now)

    def _set_step(self, rec: HostRecord, step: str, now: float) -> None:
        rec.step = step
        rec.step_since = now
        rec.step_pending = True
        rec.op_id = None
        self.ctx.dirty_host(rec.name)
        self.issue(rec, now)

    def issue(self, rec: HostRecord, now: float) -> None:
        """Send the current step's action unless one is in flight or a rule holds it."""
        if not rec.step_pending or rec.op_id is not None or rec.step is None:
            return
        if self.ctx.quiet(now) or rec.lease_fresh(now):  # S5: never touch a fresh host
            return
        assert rec.outage_id is not None
        rec.op_seq += 1
        op = f"{rec.outage_id}/{rec.attempt}/{rec.step}/{rec.op_seq}"
        levels = self.ctx.levels(rec.name)
        if rec.step == "power-status":
            if not levels:
                rec.step_pending = False
                self.fire(rec, Trigger.POWER_ON, now)
                return
            self.ctx.act(
                CheckPower(rec.name, op, rec.outage_id, levels[0].agents, self.ctx.proxies(rec))
            )
        elif rec.step == "soft-fence":
            self.ctx.act(SoftFence(rec.name, op, rec.outage_id))
        elif rec.step in FENCE_STEPS:
            if rec.level_index >= len(levels):
                rec.step_pending = False
                if rec.step == "on":
                    return
                self._level_failed(rec, now, "the level's fence agents are gone")
                return
            lv = levels[rec.level_index]
            step: fp.FenceStep = rec.step  # type: ignore[assignment]
            operation: Literal["status", "off", "on"] = (
                "status" if step in ("status", "verify") else step  # type: ignore[assignment]
            )
            rec.agent = ",".join(lv.agents)
            self.ctx.act(
                RunFenceStep(
                    rec.name,
                    op,
                    rec.outage_id,
                    rec.attempt,
                    lv.order,
                    step,
                    operation,
                    lv.agents,
                    self.ctx.proxies(rec),
                )
            )
        else:
            return
        rec.op_id = op
        rec.step_since = now
        rec.last_result = "pending"
        self.ctx.dirty_host(rec.name)

    # ------------------------------------------------------------ results

    def _take(self, rec: HostRecord, op_id: str, steps: tuple[str, ...]) -> bool:
        if rec.op_id is None or op_id != rec.op_id or rec.step not in steps:
            # Stale (an abandoned operation, one from before a restart) or the answer
            # to another kind of action: ignored.
            return False
        rec.op_id = None
        rec.step_pending = False
        self.ctx.dirty_host(rec.name)
        return True

    def on_power_status(self, rec: HostRecord, ev: PowerStatusResult) -> None:
        if not self._take(rec, ev.op_id, ("power-status",)):
            return
        rec.power_state = ev.power
        rec.last_result = ev.power
        if ev.power == "off":
            self.ctx.event(
                rec.name,
                "SoftFenceSkipped",
                "power status says off: no soft fencing, straight to fencing",
            )
            self.fire(rec, Trigger.POWER_OFF, ev.now)
        else:
            self.fire(rec, Trigger.POWER_ON, ev.now)

    def on_soft_fence(self, rec: HostRecord, ev: SoftFenceResult) -> None:
        if not self._take(rec, ev.op_id, ("soft-fence",)):
            return
        if ev.ok:
            rec.step = "soft-fence-wait"
            rec.step_since = ev.now
            rec.last_result = "ok"
        else:
            rec.last_result = f"failed: {ev.message}"
            self.ctx.event(rec.name, "SoftFenceFailed", ev.message or "SSH failed", "Warning")
            self.fire(rec, Trigger.SOFT_FENCE_FAILED, ev.now)

    def on_fence_step(self, rec: HostRecord, ev: FenceStepResult) -> None:
        if not self._take(rec, ev.op_id, FENCE_STEPS):
            return
        now = ev.now
        levels = self.ctx.levels(rec.name)
        if rec.level_index >= len(levels):
            self._level_failed(rec, now, "the level's fence agents are gone")
            return
        agents = levels[rec.level_index].agents
        step: fp.FenceStep = rec.step  # type: ignore[assignment]
        ok = fp.step_succeeded(step, ev.results, agents)
        desc = fp.describe(ev.results, agents)
        rec.last_result = ("ok: " if ok else "failed: ") + desc
        if step in ("status", "verify"):
            rec.power_state = fp.status_verdict(ev.results, agents)
        if step == "on":
            if ok:
                rec.power_state = "on"
                self.ctx.event(rec.name, "PowerOnSucceeded", f"powered on: {desc}")
            else:
                self.ctx.event(
                    rec.name,
                    "PowerOnFailed",
                    f"power on failed ({desc}); the host stays off",
                    "Warning",
                )
            return
        if not ok:
            self._level_failed(rec, now, f"{step} failed: {desc}")
        elif step == "status":
            self._set_step(rec, "off", now)
        elif step == "off":
            self._set_step(rec, "verify", now)
        else:
            self.ctx.event(
                rec.name,
                "FenceOperationSucceeded",
                f"attempt {rec.attempt}, level {rec.level_index + 1}: off verified ({desc})",
            )
            self.fire(rec, Trigger.OFF_VERIFIED, now, proof="fence")

    def _level_failed(self, rec: HostRecord, now: float, why: str) -> None:
        levels = self.ctx.levels(rec.name)
        self.ctx.event(
            rec.name,
            "FenceOperationFailed",
            f"attempt {rec.attempt}, level {rec.level_index + 1}: {why}",
            "Warning",
        )
        if rec.level_index + 1 < len(levels):
            self.fire(rec, Trigger.LEVEL_FAILED, now)
        else:
            self.fire(rec, Trigger.ALL_LEVELS_FAILED, now)

    # ------------------------------------------------------------ time and heartbeats

    def evaluate(self, rec: HostRecord, now: float) -> None:
        """Fire whatever the host's inputs and ``now`` call for (see ``triggers.py``)."""
        triggers.evaluate(self, rec, now)

    def hold(self, rec: HostRecord, reason: str, message: str) -> None:
        """Report once per reason why escalation waits."""
        if rec.held != reason:
            rec.held, rec.held_message = reason, message
            self.ctx.event(rec.name, reason, message, "Warning")
            self.ctx.dirty_host(rec.name)

    def restart_soft_fencing(self, rec: HostRecord, now: float) -> None:
        """A host restored in SoftFencing without a step: start the phase over."""
        self._effect("check_power_or_soft_fence", rec, _RESTART, now, "")

    def start_level(self, rec: HostRecord, now: float) -> None:
        self._start_level(rec, now)


_RESTART = Transition(Phase.SOFT_FENCING, Trigger.GRACE_OVER, Phase.SOFT_FENCING)
