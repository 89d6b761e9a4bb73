"""One host's escalation: the table's effects, the steps, and their results.

The phases and their transitions live in ``transitions.py``; this module never sets a
phase itself, it fires triggers.  Which trigger the heartbeat and the passing of time
amount to is ``triggers.py``, which drives this machine (it imports this module; this
one never imports it).  Everything outside one host (the other hosts, the VMs, the
fencing policies, emitting actions) comes through ``HostContext``.

Every operation issued gets a deadline (``deadlines.py``); one that passes without a
result is a failure like any other (``expire``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Literal, Protocol

from hafence.core import deadlines, isolation
from hafence.core import fencing_plan as fp
from hafence.core.fencing_plan import FENCE_STEPS
from hafence.core.messages import (
    Action,
    CheckPower,
    FenceStepResult,
    KdumpResult,
    PowerStatusResult,
    RunFenceStep,
    SoftFence,
    SoftFenceResult,
    StepTimedOut,
    WaitForKdump,
)
from hafence.core.policy import Settings
from hafence.core.records import HostRecord
from hafence.core.transitions import (
    Phase,
    Transition,
    Trigger,
    lookup,
)

FIRED_KEPT = 256  # transitions remembered for tests: a bounded window, not a log


class HostContext(Protocol):
    settings: Settings
    namespace: str

    @property
    def hosts(self) -> Mapping[str, HostRecord]: ...  # peers, for the self-fence proof

    def quiet(self, now: float) -> bool: ...
    def levels(self, host: str) -> tuple[fp.Level, ...]: ...
    def agent_refs(self, names: tuple[str, ...]) -> tuple[fp.AgentRef | None, ...]: ...
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
        # For tests: the latest transitions taken (bounded: the operator runs for months).
        self.fired: deque[tuple[str, Transition]] = deque(maxlen=FIRED_KEPT)

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
            asked = "power status asked now; " if fp.power_agents(ctx.levels(rec.name)) else ""
            unless = " unless the chassis is off" if asked else ""
            ctx.event(
                rec.name,
                "HostConnecting",
                f"heartbeat lease expired; outage {rec.outage_id}; {asked}soft fencing "
                f"after {grace:g}s of grace{unless}",
                "Warning",
            )
        elif name == "check_power":
            # The power-off fast path (docs/architecture.md): asked while the grace runs,
            # so a chassis that is off is known at once.  A status read disrupts nothing.
            if fp.power_agents(ctx.levels(rec.name)):
                self._set_step(rec, "power-status", now)
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
            if rec.step == "power-status" and rec.step_pending:
                return  # asked at lease expiry, no answer yet: that answer decides
            if rec.step == "power-status" and rec.power_state == "off":
                self.fire(rec, Trigger.POWER_OFF, now)  # e.g. restored from status
            elif rec.step == "power-status" or not fp.power_agents(ctx.levels(rec.name)):
                self._soft_fence(rec, now)  # it said on, or nothing: a soft fence
            else:
                self._set_step(rec, "power-status", now)  # agents added since: ask
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
            rec.off_sent = rec.heartbeat_deferred = False
            self._start_level(rec, now)
        elif name == "fence_next_level":
            rec.level_index += 1
            rec.off_sent = rec.heartbeat_deferred = False
            self._start_level(rec, now)
        elif name == "defer_heartbeat":
            rec.heartbeat_deferred = True
            ctx.event(
                rec.name,
                "HeartbeatDuringFence",
                f'heartbeat (boot ID {rec.boot_id}) after "off" was sent: the fence '
                "operation completes (verify off, release, power on); the host is judged "
                "by the boot ID it renews with after the power-on",
                "Warning",
            )
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
            rec.op_id = rec.op_deadline = None
            rec.step = None
            rec.step_pending = rec.off_sent = rec.heartbeat_deferred = False
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
        if lv.kind == "mixed":
            self._level_failed(rec, now, fp.mixed_level_message(lv))
            return
        # The outage's power check asked this level and every agent said off: its
        # devices answer, so a status step would only ask again.  Skipping it costs no
        # safety: the proof is "off" sent, then verified off, as at any level.
        known_off = (
            rec.attempt == 1
            and rec.level_index == 0
            and lv.kind == "power"
            and rec.power_state == "off"
        )
        if lv.kind == "kdump":
            what = "waiting for a fence_kdump message (no power action)"
        elif known_off:
            what = "off, verify off, on (the power check said off)"
        else:
            what = "status, off, verify off, on"
        self.ctx.event(
            rec.name,
            "FenceOperationStarted",
            f"attempt {rec.attempt}, level {rec.level_index + 1}/{len(levels)} "
            f"(order {lv.order}: {', '.join(lv.agents)}): {what}",
        )
        first = "kdump" if lv.kind == "kdump" else "off" if known_off else "status"
        self._set_step(rec, first, now)

    def _set_step(self, rec: HostRecord, step: str, now: float) -> None:
        rec.step = step
        rec.step_since = now
        rec.step_pending = True
        rec.op_id = rec.op_deadline = None
        self.ctx.dirty_host(rec.name)
        self.issue(rec, now)

    def issue(self, rec: HostRecord, now: float) -> None:
        """Send the current step's action unless one is in flight or a rule holds it."""
        if not rec.step_pending or rec.op_id is not None or rec.step is None:
            return
        if self.ctx.quiet(now):
            return
        if rec.step == "on" and rec.next_retry is not None and now < rec.next_retry:
            return  # a power-on that failed waits for its retry
        # S5: never touch a host with a fresh lease -- except to finish a fence whose
        # "off" was sent (verify it, power the host back on): neither disrupts anything.
        if rec.lease_fresh(now) and not (rec.off_sent and rec.step in ("verify", "on")):
            return
        assert rec.outage_id is not None
        rec.op_seq += 1
        op = f"{rec.outage_id}/{rec.attempt}/{rec.step}/{rec.op_seq}"
        levels = self.ctx.levels(rec.name)
        settings = self.ctx.settings
        if rec.step == "power-status":
            agents = fp.power_agents(levels)
            if not agents:
                rec.step_pending = False
                self.fire(rec, Trigger.POWER_ON, now)
                return
            proxies = self.ctx.proxies(rec)
            budget = deadlines.fence_budget(
                settings, self.ctx.agent_refs(agents), "status", len(proxies)
            )
            self.ctx.act(CheckPower(rec.name, op, rec.outage_id, agents, proxies, budget))
        elif rec.step == "soft-fence":
            ssh = rec.spec.ssh
            budget = deadlines.soft_fence_budget(
                settings, float(ssh.timeout_seconds) if ssh is not None else 0.0
            )
            self.ctx.act(SoftFence(rec.name, op, rec.outage_id, budget))
        elif rec.step == "kdump":
            if rec.level_index >= len(levels) or levels[rec.level_index].kind != "kdump":
                rec.step_pending = False
                self._level_failed(rec, now, "the level's kdump agents are gone")
                return
            lv = levels[rec.level_index]
            rec.agent = ",".join(lv.agents)
            # The operator's own listener waits: no proxy, one candidate.
            budget = deadlines.fence_budget(settings, self.ctx.agent_refs(lv.agents), "kdump", 1)
            self.ctx.act(
                WaitForKdump(
                    rec.name,
                    op,
                    rec.outage_id,
                    rec.attempt,
                    lv.order,
                    lv.agents,
                    now,
                    budget - settings.step_margin,
                )
            )
        elif rec.step in FENCE_STEPS:
            if rec.level_index >= len(levels):
                rec.step_pending = False
                if rec.step == "on":
                    return
                self._level_failed(rec, now, "the level's fence agents are gone")
                return
            lv = levels[rec.level_index]
            step: fp.FenceStep = rec.step
            operation: Literal["status", "off", "on"] = (
                "status" if step in ("status", "verify") else step  # type: ignore[assignment]
            )
            rec.agent = ",".join(lv.agents)
            proxies = self.ctx.proxies(rec)
            budget = deadlines.fence_budget(
                settings, self.ctx.agent_refs(lv.agents), operation, len(proxies)
            )
            if step == "off":
                rec.off_sent = True
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
                    proxies,
                    budget,
                )
            )
        else:
            return
        rec.op_id = op
        rec.op_timeout = budget
        rec.op_deadline = deadlines.deadline(settings, now, budget)
        rec.step_since = now
        rec.last_result = "pending"
        self.ctx.dirty_host(rec.name)

    def expire(self, rec: HostRecord, now: float) -> None:
        """The operation in flight passed its deadline without a result: it failed."""
        if rec.op_id is None or rec.op_deadline is None or now < rec.op_deadline:
            return
        op, step = rec.op_id, rec.step or ""
        why = f"no result within {rec.op_timeout + self.ctx.settings.step_margin:g}s"
        self.ctx.event(rec.name, "StepTimedOut", f"{step}: {why}: treated as failed", "Warning")
        levels = self.ctx.levels(rec.name)
        if step == "power-status":
            agents = fp.power_agents(levels)
            self.ctx.act(StepTimedOut(rec.name, op, step, agents, "status"))
            self.on_power_status(rec, PowerStatusResult(now, rec.name, op, "unknown", why))
        elif step == "soft-fence":
            self.ctx.act(StepTimedOut(rec.name, op, step, (), "soft-fence"))
            self.on_soft_fence(rec, SoftFenceResult(now, rec.name, op, False, f"timed out: {why}"))
        elif step == "kdump":
            agents = levels[rec.level_index].agents if rec.level_index < len(levels) else ()
            self.ctx.act(StepTimedOut(rec.name, op, step, agents, "kdump"))
            self.on_kdump(rec, KdumpResult(now, rec.name, op, False, "", f"timed out: {why}"))
        else:
            agents = levels[rec.level_index].agents if rec.level_index < len(levels) else ()
            operation = "status" if step in ("status", "verify") else step
            self.ctx.act(StepTimedOut(rec.name, op, step, agents, operation))
            results = {a: fp.AgentResult("error", f"timed out: {why}") for a in agents}
            self.on_fence_step(rec, FenceStepResult(now, rec.name, op, results))

    # ------------------------------------------------------------ results

    def _take(self, rec: HostRecord, op_id: str, steps: tuple[str, ...]) -> bool:
        if rec.op_id is None or op_id != rec.op_id or rec.step not in steps:
            # Stale (an abandoned operation, one from before a restart) or the answer
            # to another kind of action: ignored.
            return False
        rec.op_id = rec.op_deadline = None
        rec.step_pending = False
        self.ctx.dirty_host(rec.name)
        return True

    def on_power_status(self, rec: HostRecord, ev: PowerStatusResult) -> None:
        if not self._take(rec, ev.op_id, ("power-status",)):
            return
        rec.power_state = ev.power
        rec.last_result = ev.power
        if rec.phase is Phase.CONNECTING:
            # The fast path: asked at lease expiry.  Only "off" from every agent of the
            # level (fencing_plan.status_verdict) counts; "on" or no answer changes
            # nothing: the grace runs on, then the soft fence (no answer is not off).
            if ev.power == "off":
                self.ctx.event(
                    rec.name,
                    "SoftFenceSkipped",
                    "power status says off during the connecting grace: grace and soft "
                    "fencing skipped, straight to fencing (off, verify off)",
                )
                self.fire(rec, Trigger.POWER_OFF, ev.now)
            return
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
        if not ev.sent:
            # The shell saw a renewal first and ran nothing: nothing was switched, so
            # nothing is committed; the step is issued again if the core still wants it.
            rec.step_pending = True
            if rec.step == "off":
                rec.off_sent = False
            rec.last_result = "not run: " + fp.describe(ev.results, tuple(ev.results))
            return
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
            # Only a renewal seen from now on says how the host came back (by its boot
            # ID): the lease may still be fresh from before the power was cut.
            rec.renewal_seen = False
            if ok:
                rec.power_state = "on"
                self.ctx.event(rec.name, "PowerOnSucceeded", f"powered on: {desc}")
            else:
                # The operation completes: "on" is tried again on the fence retry
                # schedule until it works or the host comes back by other means.
                delay = self.ctx.settings.fence_retry_delay(rec.attempt)
                rec.step_pending = True
                rec.next_retry = now + delay
                self.ctx.event(
                    rec.name,
                    "PowerOnFailed",
                    f"power on failed ({desc}); the host stays off, power on again in {delay:g}s",
                    "Warning",
                )
            return
        if not ok:
            self._level_failed(rec, now, f"{step} failed: {desc}")
        elif step == "status":
            self._set_step(rec, "off", now)
        elif step == "off":
            self._set_step(rec, "verify", now)
        elif (
            rec.renewed_at is not None
            and rec.step_since is not None
            and rec.renewed_at > rec.step_since  # inputs carry strictly growing times
        ):
            # A renewal was observed after this status read was asked: the host may have
            # been powered on (by hand, a power-restore policy) after the device looked,
            # so "off" is no proof of now.  Ask again: a host that runs answers on, the
            # level fails and its heartbeat counts; one still off is proven off.
            self.ctx.event(
                rec.name,
                "FenceVerifyRepeated",
                "heartbeat seen while off was being verified: verifying again",
                "Warning",
            )
            self._set_step(rec, "verify", now)
        else:
            self.ctx.event(
                rec.name,
                "FenceOperationSucceeded",
                f"attempt {rec.attempt}, level {rec.level_index + 1}: off verified ({desc})",
            )
            self.fire(rec, Trigger.OFF_VERIFIED, now, proof="fence")

    def on_kdump(self, rec: HostRecord, ev: KdumpResult) -> None:
        """A kdump level's answer.  A message heard while it waited is proof: the host
        runs its crash kernel, hence no VM (S1); its VMs are released and nothing is
        switched -- the host reboots by itself when its dump is written and comes back
        Up by its heartbeat (a new boot ID)."""
        if not self._take(rec, ev.op_id, ("kdump",)):
            return
        now = ev.now
        if not ev.seen:
            rec.last_result = f"failed: {ev.message or 'no fence_kdump message'}"
            self._level_failed(rec, now, f"kdump: {ev.message or 'no fence_kdump message'}")
            return
        if rec.lease_fresh(now):
            # A host that renews its lease is not in its crash kernel: the message is
            # spoofed, stale or from a misdeclared address.  Never proof (S5: a host
            # with a fresh lease is never "fenced").
            rec.last_result = f"failed: kdump message ignored, lease fresh ({ev.message})"
            self.ctx.event(
                rec.name,
                "KdumpMessageIgnored",
                f"fence_kdump message ({ev.message}) while the host's lease is fresh: "
                "not proof (spoofed, or a wrong address in a kdump FenceAgent?)",
                "Warning",
            )
            self._level_failed(rec, now, "kdump message while the lease is fresh")
            return
        rec.last_result = f"ok: {ev.message}"
        rec.agent = ev.agent or rec.agent
        self.ctx.event(
            rec.name,
            "KdumpDetected",
            f"attempt {rec.attempt}, level {rec.level_index + 1}: {ev.message}: the host "
            "runs its crash kernel, hence no VM; its VMs are released, no power action "
            "(it would destroy the dump); the host reboots by itself",
            "Warning",
        )
        self.fire(rec, Trigger.KDUMP_DETECTED, now, proof="kdump")

    def _level_failed(self, rec: HostRecord, now: float, why: str) -> None:
        levels = self.ctx.levels(rec.name)
        # The operation at this level is over: a heartbeat counts again (a host whose
        # "off" did not take is alive).
        rec.off_sent = rec.heartbeat_deferred = False
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
