"""Small builders for driving the core directly in unit tests."""

from __future__ import annotations

from typing import Any

from hafence.api.confirmation import FenceConfirmationSpec
from hafence.api.fenceagent import FenceAgentSpec
from hafence.api.host import HostSpec
from hafence.api.vm import HAVirtualMachineSpec, HAVirtualMachineStatus
from hafence.core import messages as m
from hafence.core.engine import Engine
from hafence.core.fencing_plan import AgentResult
from hafence.core.policy import Settings

LEASE = 10.0


def host_spec(cluster: str = "a", cpu: int = 8, mem: int = 16384, **extra: Any) -> HostSpec:
    spec: dict[str, Any] = {
        "address": "h.example",
        "cluster": cluster,
        "capacity": {"cpu": cpu, "memoryMiB": mem},
        "ssh": {"privateKeySecretRef": {"name": "k", "key": "id"}, "hostKey": "ssh-ed25519 AAAA"},
    }
    spec.update(extra)
    return HostSpec.model_validate(spec)


def agent_spec(host: str, order: int = 1, type: str = "ipmilan") -> FenceAgentSpec:
    return FenceAgentSpec.model_validate(
        {
            "hostRef": {"name": host},
            "type": type,
            "address": "bmc",
            "order": order,
            "credentialsSecretRef": {"name": "c"},
        }
    )


def vm_spec(
    cluster: str = "a",
    prio: str = "Medium",
    cpu: int = 1,
    mem: int = 1024,
    ha: bool = True,
    **placement: Any,
) -> HAVirtualMachineSpec:
    return HAVirtualMachineSpec.model_validate(
        {
            "highlyAvailable": ha,
            "priority": prio,
            "resources": {"cpu": cpu, "memoryMiB": mem},
            "placement": {"cluster": cluster, **placement},
            "runtime": {"driver": "process", "process": {"command": ["true"]}},
        }
    )


def confirmation(host: str) -> FenceConfirmationSpec:
    return FenceConfirmationSpec.model_validate({"hostRef": {"name": host}, "reason": "seen"})


class Rig:
    """An engine plus the bookkeeping a unit test needs: every action, by type."""

    def __init__(self, settings: Settings | None = None, **overrides: Any) -> None:
        base = settings or Settings(startup_quiet_period=0.0)
        self.engine = Engine(base.with_overrides(**overrides) if overrides else base)
        self.actions: list[m.Action] = []
        self.now = 0.0

    def feed(self, ev: m.Input) -> list[m.Action]:
        out = self.engine.handle(ev)
        self.actions.extend(out)
        return out

    def tick(self, now: float) -> list[m.Action]:
        self.now = now
        out = self.engine.tick(now)
        self.actions.extend(out)
        return out

    def run_until(self, end: float, step: float = 1.0) -> None:
        t = self.now
        while t < end:
            t += step
            self.tick(t)

    def host(self, name: str, agents: int = 1, **spec: Any) -> None:
        self.feed(m.HostObserved(self.now, name, host_spec(**spec)))
        for i in range(agents):
            self.feed(m.FenceAgentObserved(self.now, f"{name}-f{i}", agent_spec(name, order=i + 1)))

    def lease(
        self,
        host: str,
        at: float,
        boot: str = "b1",
        watchdog: float | None = None,
        ready: bool = True,
        watchdog_boot: str | None = None,
    ) -> list[m.Action]:
        """``watchdog``: a device declared armed with that granted timeout, in boot
        ``watchdog_boot`` (default: this lease's boot)."""
        armed_in = (watchdog_boot or boot) if watchdog is not None else None
        return self.feed(
            m.LeaseObserved(at, host, at, LEASE, boot, watchdog, ready, watchdog_boot_id=armed_in)
        )

    def of(self, kind: type[Any]) -> list[Any]:
        return [a for a in self.actions if isinstance(a, kind)]

    def reasons(self, name: str | None = None) -> list[str]:
        return [a.reason for a in self.of(m.EmitEvent) if name is None or a.name == name]


def cluster(rig: Rig, n: int = 3, **spec: object) -> None:
    for i in range(1, n + 1):
        rig.host(f"h{i}", **spec)  # type: ignore[arg-type]
        rig.lease(f"h{i}", 0.0)


def keep_alive(rig: Rig, end: float, hosts: list[str]) -> None:
    """Advance to ``end``, renewing the given hosts' leases every 3 s."""
    t = rig.now
    while t < end:
        t += 1
        for h in hosts:
            if int(t) % 3 == 0:
                rig.lease(h, t)
        rig.tick(t)


def outage_checked(rig: Rig, power: str, until: float = 30) -> None:
    """h1's lease expires (h2 and h3 kept alive until ``until``); its power check, the
    outage's first operation, answers ``power``."""
    keep_alive(rig, until, ["h2", "h3"])
    check = last(rig, m.CheckPower)
    assert isinstance(check, m.CheckPower)
    rig.feed(m.PowerStatusResult(rig.now, "h1", check.op_id, power))


def place(rig: Rig, vm: str, host: str, **spec: object) -> None:
    status = HAVirtualMachineStatus(phase="Running", host=host, placement_epoch=1, last_host=host)
    rig.feed(m.VMObserved(rig.now, vm, vm_spec(**spec), status))  # type: ignore[arg-type]


def last(rig: Rig, kind: type) -> object:
    return rig.of(kind)[-1]


def answer(rig: Rig, action: m.RunFenceStep, power: str) -> None:
    rig.feed(
        m.FenceStepResult(
            rig.now, action.host, action.op_id, {a: AgentResult(power) for a in action.agents}
        )
    )  # type: ignore[arg-type]
