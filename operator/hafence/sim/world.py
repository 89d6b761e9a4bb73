"""The virtual datacenter: hosts, their agents and VMs, and their fence devices.

Physics kept deliberately simple and explicit:

- a host is powered when mains power is on, its chassis is on and, if PDUs feed it,
  at least one PDU outlet is on; losing power kills its VMs and its agent;
- a powered host boots for ``boot`` seconds and comes up with a new boot ID and a fresh
  agent (not ready until its first reconciliation, S3);
- BMCs live on the host's standby power (pulling the cable kills them), PDUs do not;
- self-fencing (``selffence=``): a live agent that cannot renew kills its VMs when its
  feeding window ends (lease + peer-check window; the peer check itself is not
  modelled); a host whose agent is dead or frozen is reset only by a declared watchdog
  device (the default; ``nodevice``: nothing resets it and its VMs run on);
- a kernel crash (``kernel-crash HOST SECONDS``): the kernel panics into kdump, the
  agent and the VMs die at once, the chassis stays on; the crash kernel sends a
  fence_kdump message every ``kdump_interval`` seconds (the first at once) while it
  writes the dump for SECONDS, then the host reboots (``boot`` seconds, a new boot
  ID).  Power lost or a reset during the dump destroys it (``dump interrupted``);
- a VM that "crashes forever" on a host keeps dying there: the agent spends its crash
  restart budget (``crash_budget`` seconds of virtual time) and then reports it Failed
  for that placement epoch, stopped, never started again under that epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hafence.core.fencing_plan import AgentResult
from hafence.sim.scenario import FenceDef, HostDef

PDU_TYPES = frozenset(
    {
        "apc",
        "apc_snmp",
        "wti",
        "eps",
        "fence_apc",
        "fence_apc_snmp",
        "fence_wti",
        "fence_eps",
        "fence_raritan",
        "fence_cdu",
    }
)


@dataclass
class VHost:
    d: HostDef
    ac: bool = True
    chassis: bool = True
    outlets: dict[str, bool] = field(default_factory=dict)
    boot_seq: int = 1
    booted: bool = True
    boot_done_at: float | None = None
    agent: bool = True
    paused_until: float = 0.0
    net: bool = True  # the host's network: API server and SSH
    api: bool = True  # the host -> API server path only (SSH still works)
    sweep_at: float | None = None  # the agent's S3 sweep, one second after reconnecting
    frozen: bool = False
    running: set[str] = field(default_factory=set)
    last_renew: float | None = None
    last_ok_renew: float = 0.0
    ready: bool = True  # hosts start Up and swept: the scenario begins mid-life
    watchdog_done: bool = False
    # A kernel crash: when the crash kernel started sending and until when it writes.
    dump_start: float | None = None
    dump_until: float | None = None

    @property
    def name(self) -> str:
        return self.d.name

    @property
    def powered(self) -> bool:
        return self.ac and self.chassis and (not self.outlets or any(self.outlets.values()))

    @property
    def boot_id(self) -> str:
        return f"{self.name}-boot{self.boot_seq}"

    @property
    def armed(self) -> bool:
        return self.d.selffence is not None

    def dumping(self, now: float) -> bool:
        return self.dump_until is not None and self.powered and now < self.dump_until

    def os_alive(self) -> bool:
        return self.powered and self.booted and not self.frozen

    def agent_working(self, now: float) -> bool:
        return self.os_alive() and self.agent and now >= self.paused_until


@dataclass
class VDevice:
    d: FenceDef
    dead: bool = False
    slow: float = 0.0
    fail_off: bool = False

    @property
    def pdu(self) -> bool:
        return self.d.type in PDU_TYPES


HOST_VERBS = frozenset(
    {
        "power-off",
        "power-on",
        "pull-power",
        "restore-power",
        "reboot",
        "cut-network",
        "restore-network",
        "cut-api",
        "restore-api",
        "kill-agent",
        "start-agent",
        "pause-agent",
        "freeze",
        "thaw",
        "kernel-crash",
    }
)
DEVICE_VERBS = frozenset({"bmc-dead", "bmc-alive", "bmc-slow", "bmc-fail-off", "bmc-ok"})


class World:
    """Hosts and fence devices, and what happens to them second by second."""

    def __init__(
        self,
        hosts: list[HostDef],
        fences: list[FenceDef],
        boot_seconds: float,
        log: Callable[[str, str], None],
        violation: Callable[[str], None],
    ) -> None:
        self.hosts = {d.name: VHost(d) for d in hosts}
        self.devices = {d.name: VDevice(d) for d in fences}
        for dev in self.devices.values():
            if dev.pdu:
                self.hosts[dev.d.host].outlets[dev.d.name] = True
        self.boot_seconds = boot_seconds
        self.crash_budget = 5.0
        self.feed_window = 10.0
        # VM -> hosts it crashes on ("*": every host); (host, VM, epoch) the agent gave
        # up on; (host, VM) -> when the agent last started it.
        self.crashing: dict[str, set[str]] = {}
        self.given_up: set[tuple[str, str, int]] = set()
        self.started: dict[tuple[str, str], float] = {}
        self.log = log
        self.violation = violation
        self.now = 0.0

    # ------------------------------------------------------------ devices

    def device(self, name: str, op: str) -> tuple[AgentResult, float]:
        """Run ``op`` (status/off/on) on a device: its answer and how long it took."""
        dev = self.devices[name]
        host = self.hosts[dev.d.host]
        if dev.dead or (not dev.pdu and not host.ac):
            return AgentResult("error", "timed out"), float(dev.d.timeout)
        delay = dev.slow or 1.0
        if op == "off" and dev.fail_off:
            return AgentResult("error", "device refused off"), delay
        if op in ("off", "on"):
            was = host.powered
            if dev.pdu:
                host.outlets[name] = op == "on"
            else:
                host.chassis = op == "on"
            self.power_changed(host, was)
        if dev.pdu:
            return AgentResult("on" if host.outlets[name] else "off"), delay
        return AgentResult("on" if host.powered else "off"), delay

    # ------------------------------------------------------------ physics

    def _interrupt_dump(self, h: VHost, why: str) -> None:
        if h.dump_until is not None and self.now < h.dump_until:
            self.log("world", f"{h.name}: dump interrupted ({why})")
        h.dump_start = h.dump_until = None

    def kernel_crash(self, h: VHost, seconds: float) -> None:
        if h.running:
            self.log("world", f"{h.name}: kernel crash: VMs {sorted(h.running)} died with it")
        h.running.clear()
        h.booted = False
        h.ready = False
        h.dump_start, h.dump_until = self.now, self.now + seconds
        h.boot_done_at = self.now + seconds + self.boot_seconds
        self.log("world", f"{h.name}: crash kernel: dumping for {seconds:g}s, then reboot")

    def kdump_message(
        self, h: VHost, since: float, timeout: float, interval: float
    ) -> float | None:
        """When the first fence_kdump message at or after ``since`` arrives, if it does
        within ``timeout`` (messages every ``interval`` seconds while dumping)."""
        if h.dump_start is None or h.dump_until is None or not h.powered:
            return None
        k = max(0, -int(-(since - h.dump_start) // interval))  # ceil
        at = h.dump_start + k * interval
        if at < h.dump_until and at - since <= timeout:
            return at
        return None

    def power_changed(self, h: VHost, was: bool) -> None:
        if was and not h.powered:
            self._interrupt_dump(h, "power lost")
            h.frozen = False  # a hung kernel does not survive losing power
            h.running.clear()
            h.booted = False
            h.boot_done_at = None
            h.ready = False
            self.log("world", f"{h.name}: power lost")
        elif not was and h.powered:
            h.booted = False
            h.boot_done_at = self.now + self.boot_seconds
            self.log("world", f"{h.name}: powered on, booting")

    def reset(self, h: VHost, why: str) -> None:
        self._interrupt_dump(h, why)
        h.running.clear()
        h.booted = False
        h.frozen = False
        h.ready = False
        h.boot_done_at = self.now + self.boot_seconds
        self.log("world", f"{h.name}: reset ({why}), booting")

    def step(self) -> None:
        for h in self.hosts.values():
            if (
                h.powered
                and not h.booted
                and h.boot_done_at is not None
                and self.now >= h.boot_done_at
            ):
                h.booted = True
                h.dump_start = h.dump_until = None
                h.boot_seq += 1
                h.agent = True
                h.paused_until = 0.0
                h.ready = False
                h.last_renew = None
                h.sweep_at = None
                h.watchdog_done = False
                h.last_ok_renew = self.now
                self.log("world", f"{h.name}: booted, boot ID {h.boot_id}")
            if not h.armed or (not h.os_alive() and not h.frozen):
                continue
            assert h.d.selffence is not None
            if h.watchdog_done:
                continue
            if h.frozen or not h.agent:
                # Nothing inside the host acts; only a device can (it fires a timeout
                # after the last feed, which was no later than the last renewal here).
                if h.d.device and self.now - h.last_ok_renew >= h.d.selffence:
                    self.reset(h, "hardware watchdog")
            elif self.now - h.last_ok_renew < self.feed_window:
                continue
            elif not h.net or not h.api or self.now < h.paused_until:
                h.watchdog_done = True
                if h.running:
                    self.log(
                        "world", f"{h.name}: watchdog: agent killed its VMs {sorted(h.running)}"
                    )
                h.running.clear()

    def check_split_brain(self) -> None:
        where: dict[str, list[str]] = {}
        for h in self.hosts.values():
            if h.powered and not h.frozen:
                for v in h.running:
                    where.setdefault(v, []).append(h.name)
        for v, hs in sorted(where.items()):
            if len(hs) > 1:
                self.violation(f"split brain: {v} runs on {', '.join(sorted(hs))}")

    def running_elsewhere(self, vm: str, host: str) -> list[str]:
        return sorted(
            h.name
            for h in self.hosts.values()
            if h.name != host and vm in h.running and h.powered and not h.frozen
        )

    # ------------------------------------------------------------ VM crashes

    def crashes(self, vm: str, host: str) -> bool:
        where = self.crashing.get(vm, set())
        return host in where or "*" in where

    def vm_failed(self, h: VHost, vm: str, epoch: int) -> str | None:
        """The agent's verdict on a VM placed on ``h`` at ``epoch``: the reason it gave up
        (the VM is stopped there), or None (it runs, started now if it was not)."""
        key = (h.name, vm, epoch)
        if key in self.given_up:
            return "crashed 6 times (restart limit 5); last: exited with code 1"
        if vm not in h.running:
            h.running.add(vm)
            self.started[(h.name, vm)] = self.now
            self.log("world", f"{h.name}: agent started {vm}")
        since = self.started.setdefault((h.name, vm), self.now)
        if self.crashes(vm, h.name) and self.now - since >= self.crash_budget:
            h.running.discard(vm)
            self.given_up.add(key)
            self.log("world", f"{h.name}: {vm} keeps crashing: the agent gives up (Failed)")
            return self.vm_failed(h, vm, epoch)
        return None

    def vm_command(self, verb: str, args: tuple[str, ...], line: int, vms: set[str]) -> None:
        if args[0] not in vms:
            raise ValueError(f"line {line}: {args[0]!r} is not a VM")
        if verb == "stops-crashing":
            self.crashing.pop(args[0], None)
            return
        where = "*" if args[1] == "anywhere" else args[1]
        if where != "*" and where not in self.hosts:
            raise ValueError(f"line {line}: {args[1]!r} is neither a host nor 'anywhere'")
        self.crashing.setdefault(args[0], set()).add(where)
        for h in self.hosts.values():
            if args[0] in h.running:
                self.started[(h.name, args[0])] = self.now  # the crashes begin now

    # ------------------------------------------------------------ commands

    def command(self, verb: str, args: tuple[str, ...], line: int) -> None:
        arg = args[0] if args else ""
        if verb in DEVICE_VERBS:
            dev = self.devices.get(arg)
            if dev is None:
                raise ValueError(f"line {line}: {arg!r} is not a fence device")
            if verb == "bmc-dead":
                dev.dead = True
            elif verb == "bmc-alive":
                dev.dead = False
            elif verb == "bmc-slow":
                dev.slow = float(args[1])
            elif verb == "bmc-fail-off":
                dev.fail_off = True
            else:
                dev.dead, dev.slow, dev.fail_off = False, 0.0, False
            return
        h = self.hosts.get(arg)
        if h is None:
            raise ValueError(f"line {line}: {arg!r} is not a host")
        if verb in ("power-off", "power-on", "pull-power", "restore-power"):
            was = h.powered
            if verb in ("power-off", "power-on"):
                h.chassis = verb == "power-on"
            else:
                h.ac = verb == "restore-power"
            self.power_changed(h, was)
        elif verb == "reboot":
            self.reset(h, "rebooted")
        elif verb == "kernel-crash":
            self.kernel_crash(h, float(args[1]))
        elif verb in ("cut-network", "restore-network"):
            h.net = verb == "restore-network"
            h.ready = h.ready and not h.net  # reconnecting: S3 sweep before ready
        elif verb in ("cut-api", "restore-api"):
            h.api = verb == "restore-api"
            h.ready = h.ready and not h.api
        elif verb in ("kill-agent", "start-agent"):
            h.agent = verb == "start-agent"
            h.ready = False
        elif verb == "pause-agent":
            h.paused_until = self.now + float(args[1])
        elif verb in ("freeze", "thaw"):
            h.frozen = verb == "freeze"
            h.ready = False
        if not h.ready:
            h.sweep_at = None

    def heal(self) -> None:
        """Everything back to normal: power, network, agents, devices."""
        for dev in self.devices.values():
            dev.dead, dev.slow, dev.fail_off = False, 0.0, False
        for h in self.hosts.values():
            was = h.powered
            h.ac = h.chassis = True
            for o in h.outlets:
                h.outlets[o] = True
            h.net = h.api = True
            h.frozen = False
            h.paused_until = 0.0
            if h.os_alive():
                h.agent = True
            self.power_changed(h, was)
