"""The virtual datacenter: hosts, their agents and VMs, and their fence devices.

Physics kept deliberately simple and explicit:

- a host is powered when mains power is on, its chassis is on and, if PDUs feed it,
  at least one PDU outlet is on; losing power kills its VMs and its agent;
- a powered host boots for ``boot`` seconds and comes up with a new boot ID and a fresh
  agent (not ready until its first reconciliation, S3);
- BMCs live on the host's standby power (pulling the cable kills them), PDUs do not;
- an armed watchdog: an agent that cannot renew for the timeout kills its VMs; a host
  whose agent is dead or frozen is reset by the hardware watchdog.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    net: bool = True
    frozen: bool = False
    running: set[str] = field(default_factory=set)
    last_renew: float | None = None
    last_ok_renew: float = 0.0
    ready: bool = False
    watchdog_done: bool = False

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
