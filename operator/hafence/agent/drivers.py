"""The seam between the agent and whatever runs a VM: one protocol, two drivers.

A driver starts, stops and observes VMs and remembers them in the agent's state
directory, so a restarted agent re-adopts the VMs that kept running (a service
restart must never take VMs down, as with qemu under VDSM).

Doubt is a state of its own: an observation the driver could not make is
``unknown``, never "not running" (the VM may still run, so it is neither restarted
here nor reported Failed), and a stop returns only once the VM is verified gone,
raising ``StopError`` otherwise.  Every VM a driver starts carries a marker naming
its datacenter, VM, host and placement epoch, so ``discover`` finds what really runs
even without the state directory's records (S3).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from hafence.api.vm import Runtime

# LocalVM.extra keys
FENCED = "fenced"  # why the self-fencing watchdog killed it
BOOT_ID = "bootID"  # the boot the VM was started in
DOMAIN_UUID = "uuid"  # libvirt: the UUID of the domain that was started


class StartError(RuntimeError):
    """The VM could not be started; the message is meant for status.runtime.message."""


class StopError(RuntimeError):
    """The VM could not be verified stopped: it may still run."""


class DriverError(RuntimeError):
    """The driver could not tell what runs (its daemon failed or did not answer)."""


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


ObservedState = Literal["running", "stopped", "unknown"]


@dataclass(frozen=True)
class Observed:
    state: ObservedState
    detail: str = ""  # why it is not running ("exited with code 3") or why unknown

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def stopped(self) -> bool:
        """Verified not running: the only observation that lets a VM go."""
        return self.state == "stopped"

    @property
    def unknown(self) -> bool:
        return self.state == "unknown"


RUNNING = Observed("running")


class Driver(Protocol):
    name: str

    def start(self, key: str, epoch: int, runtime: Runtime) -> LocalVM: ...

    def observe(self, vm: LocalVM) -> Observed:
        """Never raises for a driver failure: that is an ``unknown`` observation."""
        ...

    def stop(self, vm: LocalVM, grace: float) -> None:
        """Ask the VM to stop, force it after ``grace`` seconds; returns once it is
        verified gone, StopError if it could not be."""
        ...

    def kill(self, vm: LocalVM) -> None:
        """Stop now, no grace (the self-fencing path); StopError if not verified gone."""
        ...

    def discover(self, namespace: str, runtimes: Iterable[Runtime]) -> list[LocalVM]:
        """Every VM of ``namespace`` this host's driver really runs, found by the marker
        it wrote when it started them.  ``runtimes`` are the namespace's VM runtimes
        (where else to look, e.g. libvirt URIs).  DriverError if it cannot tell."""
        ...
