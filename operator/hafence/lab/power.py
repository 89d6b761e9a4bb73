"""The power of a simulated device: IPMI BMC, iLO2, PDU outlet.

The contract of every simulated power device (:class:`hafence.lab.bmc.SimulatedBmc`
is one too), so the lab's virtual host can be driven by any of them: ``power``,
``set_power(state)`` (by hand, and tells ``on_power_change``), the recorded
``actions``/``action_names``, ``power_delay`` (the state settles that long after a
command) and ``dead`` (the device stops answering).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

PowerCallback = Callable[[str], None]


@dataclass
class Action:
    name: str  # "on", "off", "cycle", "reset", "shutdown", "diag", "press"...
    time: float


class PowerDevice(Protocol):
    """What the lab's virtual host needs of the device that powers it."""

    label: str  # how the timeline names it: "iLO2 RIBCL/TLS (127.0.0.1:4431)"
    power: str
    dead: bool
    on_power_change: PowerCallback | None

    @property
    def actions(self) -> list[Action]: ...

    def set_power(self, state: str) -> None: ...


class SimulatedPower:
    def __init__(
        self,
        name: str,
        power: str = "on",
        on_power_change: PowerCallback | None = None,
        power_delay: float = 0.0,
    ) -> None:
        self.name = name
        self.label = name
        self.power = power
        self.on_power_change = on_power_change
        self.power_delay = power_delay
        self.actions: list[Action] = []
        self.dead = False
        self._lock = threading.Lock()

    @property
    def action_names(self) -> list[str]:
        with self._lock:
            return [a.name for a in self.actions]

    def record(self, name: str, new_power: str | None) -> None:
        """A command arrived: record it and (after ``power_delay``) apply it."""
        with self._lock:
            self.actions.append(Action(name, time.monotonic()))
        if new_power is None:
            return
        if self.power_delay > 0:
            timer = threading.Timer(self.power_delay, self.set_power, (new_power,))
            timer.daemon = True
            timer.start()
        else:
            self.set_power(new_power)

    def set_power(self, state: str) -> None:
        with self._lock:
            changed = state != self.power
            self.power = state
        if changed and self.on_power_change is not None:
            self.on_power_change(state)
