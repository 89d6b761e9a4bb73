"""Runs a scenario second by second: world physics, agents, the core, the log."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable
from typing import Literal

from hafence.api.confirmation import FenceConfirmationSpec, FenceConfirmationStatus
from hafence.api.fenceagent import KDUMP_TYPES, FenceAgentSpec
from hafence.api.host import HostSpec, HostStatus
from hafence.api.lease import peer_check_window
from hafence.api.vm import HAVirtualMachineSpec, HAVirtualMachineStatus, RuntimeStatus
from hafence.core import fencing_plan as fp
from hafence.core import messages as m
from hafence.core.engine import Engine
from hafence.core.policy import Settings
from hafence.sim.scenario import SETTINGS_KEYS, Command, Scenario, parse_scenario
from hafence.sim.world import DEVICE_VERBS, HOST_VERBS, VHost, World

SIM_DEFAULTS = {
    "lease": 10.0,
    "boot": 20.0,
    "ssh_timeout": 10.0,
    "crash_budget": 5.0,
    "kdump_interval": 10.0,  # fence_kdump_send's default
}


def _host_spec(h: VHost) -> HostSpec:
    d = h.d
    spec: dict[str, object] = {
        "address": f"{d.name}.sim",
        "cluster": d.cluster,
        "capacity": {"cpu": d.cpu, "memoryMiB": d.mem},
        "powerManagement": {"enabled": d.pm, "proxyPreference": d.proxy},
    }
    if d.ssh:
        spec["ssh"] = {
            "privateKeySecretRef": {"name": "k", "key": "id"},
            "hostKey": "ssh-ed25519 AAAA",
            "timeoutSeconds": 10,
        }
    if d.selffence is not None:
        spec["selfFencing"] = {"enabled": True, "watchdogTimeoutSeconds": d.selffence}
    return HostSpec.model_validate(spec)


Ticks = Literal["every-second", "deadline"]


class Simulation:
    """``ticks="every-second"`` ticks the core every simulated second; ``"deadline"``
    ticks it as the operator does: when an input wakes it (``Engine.wakes``) or its
    ``next_deadline`` has come.  The same scenario must log the same in both: a time
    the core depends on and ``next_deadline`` misses would show as a difference."""

    def __init__(self, scenario: Scenario, ticks: Ticks = "every-second") -> None:
        self.sc = scenario
        self.ticks = ticks
        self._wake = True
        self._scheduled: float | None = None
        self.sim = {**SIM_DEFAULTS, **scenario.sim}
        values = {SETTINGS_KEYS[k]: v for k, v in scenario.settings.items()}
        for k in ("max_concurrent_fences", "vm_retry_fast_count", "max_failed_restarts"):
            if k in values:
                values[k] = int(values[k])
        values.setdefault("startup_quiet_period", 0.0)
        self.settings = Settings(**values)  # type: ignore[arg-type]
        self.now = 0.0
        self.lines: list[str] = []
        self.violations: list[str] = []
        self.world = World(
            scenario.hosts, scenario.fences, self.sim["boot"], self.log, self.violation
        )
        self.world.crash_budget = self.sim["crash_budget"]
        # The agent feeds its device (and keeps its VMs) this long after its last renewal.
        self.world.feed_window = self.sim["lease"] + peer_check_window(self.sim["lease"])
        self.hosts = self.world.hosts
        self.devices = self.world.devices
        self.host_specs = {n: _host_spec(h) for n, h in self.hosts.items()}
        self.vm_specs: dict[str, HAVirtualMachineSpec] = {}
        # The virtual API server: what the core wrote, and the agents' runtime reports.
        self.host_status: dict[str, HostStatus] = {}
        self.vm_status: dict[str, HAVirtualMachineStatus] = {}
        self.runtime: dict[str, RuntimeStatus] = {}
        self.confirmations: dict[str, tuple[FenceConfirmationSpec, float]] = {}
        self.conf_status: dict[str, FenceConfirmationStatus] = {}
        self.leases: dict[str, m.LeaseObserved] = {}
        self.pending: list[tuple[float, int, int, m.Input]] = []
        self._seq = itertools.count()
        self.generation = 0
        self.engine_down_until: float | None = None
        self.engine = Engine(self.settings)
        self.fences_issued: list[tuple[float, str, str]] = []
        for v in scenario.vms:
            self.vm_specs[v.name] = HAVirtualMachineSpec.model_validate(
                {
                    "highlyAvailable": v.ha,
                    "priority": v.prio,
                    "resources": {"cpu": v.cpu, "memoryMiB": v.mem},
                    "placement": {
                        "cluster": v.cluster,
                        "hostSelector": v.selector,
                        "preferredHosts": v.prefer,
                        "antiAffinityGroup": v.group,
                    },
                    "runtime": {"driver": "process", "process": {"command": ["sleep", "inf"]}},
                }
            )
            if v.on is not None:
                self.vm_status[v.name] = HAVirtualMachineStatus(
                    phase="Running", host=v.on, placement_epoch=1, last_host=v.on
                )
                self.hosts[v.on].running.add(v.name)
                self.runtime[v.name] = RuntimeStatus(host=v.on, state="Running", placement_epoch=1)

    # ------------------------------------------------------------ logging

    def log(self, who: str, text: str) -> None:
        self.lines.append(f"{int(self.now):5d}  {who:<14} {text}")

    def violation(self, text: str) -> None:
        self.violations.append(f"t={self.now:g} {text}")
        self.log("VIOLATION", text)

    # ------------------------------------------------------------ the core

    def feed(self, ev: m.Input) -> None:
        if self.engine_down_until is not None:
            return
        actions = self.engine.handle(ev)
        self._wake = self._wake or self.engine.wakes(ev, actions, self._scheduled)
        self.execute(actions)

    def start_engine(self) -> None:
        self.engine = Engine(self.settings)
        self._wake = True
        self.feed(m.OperatorStarted(self.now))
        for name, spec in self.host_specs.items():
            self.feed(
                m.HostObserved(
                    self.now, name, spec, self.hosts[name].d.labels, self.host_status.get(name)
                )
            )
        for index, dev in enumerate(self.devices.values()):
            fa: dict[str, object] = {
                "hostRef": {"name": dev.d.host},
                "type": dev.d.type,
                "address": f"{dev.d.name}.mgmt",
                "order": dev.d.order,
                "credentialsSecretRef": {"name": "creds"},
                "timeoutSeconds": dev.d.timeout,
            }
            if dev.d.type in KDUMP_TYPES:
                # The address the host's kdump messages come from; `timeout=` is the wait.
                fa["address"] = f"192.0.2.{index + 1}"
                fa["options"] = f"timeout={dev.d.timeout}"
                del fa["credentialsSecretRef"], fa["timeoutSeconds"]
            self.feed(m.FenceAgentObserved(self.now, dev.d.name, FenceAgentSpec.model_validate(fa)))
        for name, vspec in self.vm_specs.items():
            status = self.vm_status.get(name)
            if status is not None:
                status = status.model_copy(update={"runtime": self.runtime.get(name)})
            self.feed(m.VMObserved(self.now, name, vspec, status))
        for name, (cspec, created) in self.confirmations.items():
            self.feed(
                m.ConfirmationObserved(self.now, name, cspec, created, self.conf_status.get(name))
            )
        for lease in self.leases.values():
            self.feed(lease.__class__(**{**lease.__dict__, "now": self.now}))

    def later(self, delay: float, ev: m.Input) -> None:
        heapq.heappush(self.pending, (self.now + delay, next(self._seq), self.generation, ev))

    def execute(self, actions: Iterable[m.Action]) -> None:
        for a in actions:
            if isinstance(a, m.EmitEvent):
                who = (
                    a.name
                    if a.kind == "Host"
                    else (f"vm/{a.name}" if a.kind == "HAVirtualMachine" else f"fc/{a.name}")
                )
                self.log(who, f"{a.reason}: {a.message}")
            elif isinstance(a, m.Alert):
                self.log(
                    "alert",
                    f"{'RAISE' if a.active else 'clear'} {a.key}"
                    + (f": {a.message}" if a.active else ""),
                )
            elif isinstance(a, m.WriteHostStatus):
                old = self.host_status.get(a.host)
                if old is None or old.phase != a.status.phase:
                    self.log(a.host, f"phase {old.phase if old else '-'} -> {a.status.phase}")
                self.host_status[a.host] = a.status
            elif isinstance(a, m.WriteVMStatus):
                old_vm = self.vm_status.get(a.vm)
                before = f"{old_vm.phase}@{old_vm.host}" if old_vm else "-"
                after = f"{a.status.phase}@{a.status.host}"
                if before != after:
                    self.log(
                        f"vm/{a.vm}", f"{before} -> {after} (epoch {a.status.placement_epoch})"
                    )
                elif (
                    a.status.placement_attempts
                    and a.status.next_placement_time
                    and (old_vm is None or old_vm.placement_attempts != a.status.placement_attempts)
                ):
                    nxt = a.status.next_placement_time.timestamp()
                    self.log(
                        f"vm/{a.vm}",
                        f"placement try {a.status.placement_attempts} failed; next at {nxt:g}",
                    )
                self.vm_status[a.vm] = a.status
            elif isinstance(a, m.WriteConfirmationStatus):
                self.conf_status[a.name] = a.status
                self.log(f"fc/{a.name}", f"{a.status.phase}: {a.status.message}")
            elif isinstance(a, m.CheckPower):
                self._check_power(a)
            elif isinstance(a, m.SoftFence):
                self._soft_fence(a)
            elif isinstance(a, m.RunFenceStep):
                self._fence_step(a)
            elif isinstance(a, m.WaitForKdump):
                self._wait_for_kdump(a)
            elif isinstance(a, m.PlaceVM):
                if a.previous_host not in (None, a.host):
                    self.violation(
                        f"S1: {a.vm} placed on {a.host} while it may run on {a.previous_host}"
                    )
                for other in self.world.running_elsewhere(a.vm, a.host):
                    self.violation(f"S1: {a.vm} placed on {a.host} while it runs on {other}")
            elif isinstance(a, m.ReleaseVMs):
                running = [
                    v
                    for v in a.vms
                    if v in self.hosts[a.host].running
                    and self.hosts[a.host].powered
                    and not self.hosts[a.host].frozen
                ]
                if running and a.proof != "confirmation":
                    self.violation(
                        f"S1: released {running} from {a.host} ({a.proof}) "
                        "while they still run there"
                    )

    # ------------------------------------------------------------ devices

    def _s5_check(self, host: str, what: str) -> None:
        lease = self.leases.get(host)
        if lease is not None and self.now < lease.renew_time + lease.duration:
            self.violation(f"S5: {what} on {host} while its lease is fresh")

    def _check_power(self, a: m.CheckPower) -> None:
        self._s5_check(a.host, "power-status")
        self.log(
            "op",
            f"power-status {a.host} via {a.proxies[0] if a.proxies else '-'}: "
            f"{', '.join(a.agents)}",
        )
        results = {}
        delay = 0.0
        for ag in a.agents:
            results[ag], d = self.world.device(ag, "status")
            delay = max(delay, d)
        power = fp.status_verdict(results, a.agents)
        self.later(
            delay, m.PowerStatusResult(0, a.host, a.op_id, power, fp.describe(results, a.agents))
        )

    def _soft_fence(self, a: m.SoftFence) -> None:
        self._s5_check(a.host, "soft fence")
        h = self.hosts[a.host]
        self.log("op", f"soft-fence {a.host} (ssh)")
        if h.os_alive() and h.net:
            h.agent = True
            h.paused_until = 0.0
            self.log("world", f"{a.host}: agent restarted over ssh")
            self.later(2, m.SoftFenceResult(0, a.host, a.op_id, True))
        else:
            self.later(
                self.sim["ssh_timeout"],
                m.SoftFenceResult(0, a.host, a.op_id, False, "ssh: connection timed out"),
            )

    def _fence_step(self, a: m.RunFenceStep) -> None:
        if a.operation == "off":
            # S5 is about "off" (and the soft fence): "on" after a verified off may go to
            # a host whose lease is fresh (the no-abandon rule, docs/architecture.md).
            self._s5_check(a.host, f"fence {a.operation}")
        if a.operation != "status":
            self.fences_issued.append((self.now, a.host, a.operation))
        via = a.proxies[0] if a.proxies else "-"
        self.log("op", f"fence {a.host} level {a.level} {a.step} via {via}: {', '.join(a.agents)}")
        results = {}
        delay = 0.0
        for ag in a.agents:
            results[ag], d = self.world.device(ag, a.operation)
            delay = max(delay, d)
        self.later(delay, m.FenceStepResult(0, a.host, a.op_id, results))

    def _wait_for_kdump(self, a: m.WaitForKdump) -> None:
        """The operator's listener: a message from the host at or after ``since``."""
        self.log(
            "op",
            f"kdump {a.host} level {a.level}: wait {a.timeout:g}s for a fence_kdump "
            f"message ({', '.join(a.agents)})",
        )
        h = self.hosts[a.host]
        at = self.world.kdump_message(h, a.since, a.timeout, self.sim["kdump_interval"])
        agent = a.agents[0] if a.agents else ""
        if at is None:
            self.later(
                a.timeout,
                m.KdumpResult(0, a.host, a.op_id, False, "", f"no message in {a.timeout:g}s"),
            )
        else:
            self.later(
                at - self.now,
                m.KdumpResult(0, a.host, a.op_id, True, agent, f"fence_kdump message ({agent})"),
            )

    # ------------------------------------------------------------ physics

    def agents(self) -> None:
        for h in self.hosts.values():
            if not h.agent_working(self.now) or not h.net or not h.api:
                continue
            if h.ready:
                self._reconcile(h)
            elif h.sweep_at is None:
                h.sweep_at = self.now + 1  # (re)connected: renew as not ready, sweep next
            elif self.now >= h.sweep_at:
                h.sweep_at = None
                self._reconcile(h)
            interval = self.sim["lease"] / 3
            sent = self.leases.get(h.name)
            if (
                h.last_renew is None
                or self.now - h.last_renew >= interval
                or sent is None
                or sent.ready != h.ready
                or sent.boot_id != h.boot_id
            ):
                h.last_renew = self.now
                h.last_ok_renew = self.now
                h.watchdog_done = False
                lease = m.LeaseObserved(
                    self.now,
                    h.name,
                    self.now,
                    self.sim["lease"],
                    h.boot_id,
                    None if h.d.selffence is None or not h.d.device else float(h.d.selffence),
                    h.ready,
                    watchdog_boot_id=h.boot_id if h.d.device else None,
                )
                self.leases[h.name] = lease
                self.feed(lease)

    def _reconcile(self, h: VHost) -> None:
        for name in sorted(self.vm_specs):
            st = self.vm_status.get(name)
            placed_here = (
                st is not None
                and st.host == h.name
                and self.vm_specs[name].run_strategy == "Always"
            )
            epoch = st.placement_epoch if st is not None else 0
            failed = None
            if placed_here:
                failed = self.world.vm_failed(h, name, epoch)
            elif name in h.running:
                h.running.discard(name)
                self.log(
                    "world", f"{h.name}: agent stopped {name} (placed on {st.host if st else None})"
                )
            rt = None
            if failed is not None:
                rt = RuntimeStatus(
                    host=h.name, state="Failed", placement_epoch=epoch, message=failed
                )
            elif placed_here:
                rt = RuntimeStatus(host=h.name, state="Running", placement_epoch=epoch)
            elif st is not None and st.host is None and st.last_host == h.name:
                rt = RuntimeStatus(host=h.name, state="Stopped", placement_epoch=epoch)
            if rt is not None and self.runtime.get(name) != rt:
                self.runtime[name] = rt
                self.feed(m.VMRuntimeObserved(self.now, name, rt))
        h.ready = True

    # ------------------------------------------------------------ commands

    def command(self, c: Command) -> None:
        self.log("cmd", " ".join((c.verb, *c.args)))
        arg = c.args[0] if c.args else ""
        if c.verb in HOST_VERBS or c.verb in DEVICE_VERBS:
            self.world.command(c.verb, c.args, c.line)
        elif c.verb == "heal":
            self.world.heal()
        elif c.verb in ("crashes-forever", "stops-crashing"):
            self.world.vm_command(c.verb, c.args, c.line, set(self.vm_specs))
        elif c.verb in ("confirm", "confirm-if-off"):
            if arg not in self.hosts:
                raise ValueError(f"line {c.line}: {arg!r} is not a host")
            if c.verb == "confirm-if-off" and self.hosts[arg].powered:
                return  # the property tests' person only confirms what is true
            name = c.args[1] if len(c.args) > 1 else f"confirm-{arg}-{int(self.now)}"
            spec = FenceConfirmationSpec.model_validate(
                {"hostRef": {"name": arg}, "reason": "checked on site"}
            )
            self.confirmations[name] = (spec, self.now)
            self.feed(m.ConfirmationObserved(self.now, name, spec, self.now))
        elif c.verb == "restart-operator":
            self.generation += 1
            self.pending.clear()
            self.start_engine()
        elif c.verb == "maintenance":
            if arg not in self.hosts:
                raise ValueError(f"line {c.line}: {arg!r} is not a host")
            on = c.args[1] == "on"
            self.host_specs[arg] = self.host_specs[arg].model_copy(update={"maintenance": on})
            self.feed(m.HostObserved(self.now, arg, self.host_specs[arg], self.hosts[arg].d.labels))

    # ------------------------------------------------------------ the loop

    def _tick(self) -> None:
        due = self._scheduled is not None and self._scheduled <= self.now
        if self.ticks == "deadline" and not (self._wake or due):
            return
        self._wake = False
        self.execute(self.engine.tick(self.now))
        self._scheduled = self.engine.next_deadline(self.now)

    def run(self) -> str:
        self.log(
            "sim",
            f"start: {len(self.hosts)} hosts, {len(self.devices)} fence devices, "
            f"{len(self.vm_specs)} VMs",
        )
        self.start_engine()
        commands = list(self.sc.commands)
        for t in range(int(self.sc.duration) + 1):
            self.now = self.world.now = float(t)
            while commands and commands[0].at <= t:
                self.command(commands.pop(0))
            self.world.step()
            self.agents()
            while self.pending and self.pending[0][0] <= self.now:
                _, _, gen, ev = heapq.heappop(self.pending)
                if gen == self.generation:
                    self.feed(ev.__class__(**{**ev.__dict__, "now": self.now}))
            self._tick()
            self.world.check_split_brain()
        self.log(
            "sim",
            "end: "
            + "; ".join(
                f"{n}={(st.phase if st else '-')}" for n, st in sorted(self.host_status.items())
            ),
        )
        self.log(
            "sim",
            "vms: "
            + "; ".join(f"{n}={st.phase}@{st.host}" for n, st in sorted(self.vm_status.items())),
        )
        return "\n".join(self.lines) + "\n"


def run_scenario(text: str, ticks: Ticks = "every-second") -> Simulation:
    """Parse and run a scenario (the text of a ``cmds`` file); the caller reads files."""
    sim = Simulation(parse_scenario(text), ticks)
    sim.run()
    return sim
