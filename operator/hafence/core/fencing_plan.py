"""Fence levels of one host and the verdict rules of a concurrent group.

A host's FenceAgents sorted by ``order`` form levels; agents sharing an order form a
*concurrent group* (two PDUs feeding two power supplies): "off" succeeds only if every
one of them is off, "on" if any one is on, and "status" is on if any is on, off if all
are off, unknown otherwise (a mix of off and errors proves nothing).

A level whose agents are all of type ``kdump`` is no power operation: it waits for a
fence_kdump message from the host (``WaitForKdump``), and a message received while it
waits is proof that the host runs its crash kernel, hence no VM; it never switches
power (a power cycle would destroy the dump).  A level mixing kdump and power agents
has no meaning (wait, or switch?): it fails at once, saying so, and the next level runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

FenceStep = Literal["status", "off", "verify", "on"]
LevelKind = Literal["power", "kdump", "mixed"]
FENCE_STEPS: tuple[FenceStep, ...] = ("status", "off", "verify", "on")
AgentPower = Literal["on", "off", "error"]
GroupPower = Literal["on", "off", "unknown"]


@dataclass(frozen=True)
class AgentRef:
    """What the core knows of one FenceAgent: enough to order and name it."""

    name: str
    host: str
    order: int
    agent_type: str
    timeout: float = 20.0  # spec.timeoutSeconds: one request
    power_wait: float = 60.0  # spec.powerWaitSeconds: polling for off/on to settle
    # A kdump agent: how long its level waits for a fence_kdump message (None: a power
    # device).  From the agent's ``timeout`` option (``api.fenceagent.kdump_timeout``).
    kdump_timeout: float | None = None

    @property
    def kdump(self) -> bool:
        return self.kdump_timeout is not None


@dataclass(frozen=True)
class Level:
    order: int
    agents: tuple[str, ...]  # FenceAgent names, sorted
    kind: LevelKind = "power"
    kdump_agents: tuple[str, ...] = ()  # the kdump ones (all of them unless "power")


def levels(agents: Iterable[AgentRef]) -> tuple[Level, ...]:
    by_order: dict[int, list[AgentRef]] = {}
    for a in agents:
        by_order.setdefault(a.order, []).append(a)
    out = []
    for order, refs in sorted(by_order.items()):
        names = tuple(sorted(a.name for a in refs))
        kdump = tuple(sorted(a.name for a in refs if a.kdump))
        kind: LevelKind = "power" if not kdump else "kdump" if kdump == names else "mixed"
        out.append(Level(order, names, kind, kdump))
    return tuple(out)


def power_agents(levels: Iterable[Level]) -> tuple[str, ...]:
    """The agents the power-status check asks: the first level of power devices (a
    kdump level has no power state to report)."""
    return next((lv.agents for lv in levels if lv.kind == "power"), ())


def mixed_level_message(lv: Level) -> str:
    power = [a for a in lv.agents if a not in lv.kdump_agents]
    return (
        f"order {lv.order} mixes kdump agents ({', '.join(lv.kdump_agents)}) with power "
        f"devices ({', '.join(power)}): a level either waits for a fence_kdump message or "
        "switches power; give the kdump agents an order of their own (usually the lowest)"
    )


@dataclass(frozen=True)
class AgentResult:
    """One agent's answer: the power state it saw after the operation, or an error."""

    power: AgentPower
    message: str = ""


def status_verdict(results: Mapping[str, AgentResult], agents: Iterable[str]) -> GroupPower:
    powers = [results[a].power if a in results else "error" for a in agents]
    if not powers:
        return "unknown"
    if any(p == "on" for p in powers):
        return "on"
    if all(p == "off" for p in powers):
        return "off"
    return "unknown"


def off_succeeded(results: Mapping[str, AgentResult], agents: Iterable[str]) -> bool:
    names = list(agents)
    return bool(names) and all(a in results and results[a].power == "off" for a in names)


def on_succeeded(results: Mapping[str, AgentResult], agents: Iterable[str]) -> bool:
    return any(a in results and results[a].power == "on" for a in agents)


def step_succeeded(
    step: FenceStep, results: Mapping[str, AgentResult], agents: Iterable[str]
) -> bool:
    """Whether a step lets the sequence go on at this level.

    ``status`` only needs an answer (on or off): a level whose devices cannot even
    report the power state is not trusted to switch it.  ``verify`` is the status
    after ``off`` and must say off.
    """
    names = list(agents)
    if step == "status":
        return status_verdict(results, names) != "unknown"
    if step == "off":
        return off_succeeded(results, names)
    if step == "verify":
        return status_verdict(results, names) == "off"
    return on_succeeded(results, names)


def describe(results: Mapping[str, AgentResult], agents: Iterable[str]) -> str:
    parts = []
    for a in agents:
        r = results.get(a)
        if r is None:
            parts.append(f"{a}=no answer")
        elif r.message and r.power == "error":
            parts.append(f"{a}=error ({r.message})")
        else:
            parts.append(f"{a}={r.power}")
    return ", ".join(parts)
