"""The seam between the agent and whatever runs a VM: one protocol, two drivers.

A driver starts, stops and observes VMs and remembers them in the agent's state
directory, so a restarted agent re-adopts the VMs that kept running (a service
restart must never take VMs down, as with qemu under VDSM).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from hafence.api.vm import Runtime

# LocalVM.extra keys
FENCED = "fenced"  # why the self-fencing watchdog killed it
BOOT_ID = "bootID"  # the boot the VM was started in


class StartError(RuntimeError):
    """The VM could not be started; the message is meant for status.runtime.message."""


@dataclass
class LocalVM:
    """A VM this host runs (or ran): enough to find it again after an agent restart."""

    key: str  # "namespace/name"
    driver: str
    epoch: int
    pid: int | None = None
    start_time: int | None = None  # /proc/PID/stat starttime, guards against PID reuse
    uri: str | None = None
    domain: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Observed:
    running: bool
    detail: str = ""  # why it is not running, e.g. "exited with code 3"


class Driver(Protocol):
    name: str

    def start(self, key: str, epoch: int, runtime: Runtime) -> LocalVM: ...

    def observe(self, vm: LocalVM) -> Observed: ...

    def stop(self, vm: LocalVM, grace: float) -> None:
        """Ask the VM to stop, force it after ``grace`` seconds; returns once it is gone."""
        ...

    def kill(self, vm: LocalVM) -> None:
        """Stop now, no grace: the self-fencing path."""
        ...
