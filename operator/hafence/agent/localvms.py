"""The VMs this host runs: their records in the state directory, through their drivers.

Shared by the event loop (start, stop, observe) and the watchdog thread (kill all), so
every change of the set goes through one lock; a VM started concurrently with a
self-fence is either in the set the watchdog kills or never started.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from hafence.agent.drivers import (
    BOOT_ID,
    DOMAIN_UUID,
    FENCED,
    Driver,
    LocalVM,
    Observed,
    StartError,
)
from hafence.agent.state import StateDir
from hafence.api.vm import Runtime

log = logging.getLogger("hafence.agent")


class LocalVMs:
    def __init__(
        self, state: StateDir, drivers: dict[str, Driver], *, boot_id: str, stop_grace: float
    ) -> None:
        self.state = state
        self.drivers = drivers
        self.boot_id = boot_id
        self.stop_grace = stop_grace
        self.vms: dict[str, LocalVM] = {}
        self.lock = threading.Lock()

    def __contains__(self, key: object) -> bool:
        return key in self.vms

    def snapshot(self) -> dict[str, LocalVM]:
        with self.lock:
            return dict(self.vms)

    def running_count(self) -> int:
        return sum(1 for vm in self.vms.values() if not vm.extra.get(FENCED))

    def adopt(self) -> int:
        """Load the records an earlier agent left; returns how many were adopted."""
        self.state.ensure()
        for vm in self.state.load_all():
            if vm.driver not in self.drivers:
                log.error("state record of %s names unknown driver %r; ignored", vm.key, vm.driver)
                continue
            booted = vm.extra.get(BOOT_ID)
            if vm.driver == "process" and booted and booted != self.boot_id:
                # Its process died with the previous boot: not a crash of the VM, and
                # not something to stop.  Placement decides afresh whether it runs.
                log.info("%s did not survive the reboot (boot %s); record dropped", vm.key, booted)
                self.state.forget(vm.key)
                continue
            self.vms[vm.key] = vm
        return len(self.vms)

    def observe_all(self) -> dict[str, Observed]:
        out: dict[str, Observed] = {}
        for key, vm in self.snapshot().items():
            if vm.extra.get(FENCED):
                out[key] = Observed("stopped", "killed by the watchdog")
                continue
            try:
                out[key] = self.drivers[vm.driver].observe(vm)
            except Exception as exc:
                log.warning("observing %s: %s", key, exc)
                out[key] = Observed("unknown", str(exc))  # never restart on doubt
        return out

    def discover(self, namespace: str, runtimes: list[Runtime]) -> int:
        """Add what the drivers really run to the records (S3: the sweep then stops what
        is not placed here, whether or not a record of it survived).  A second instance
        of a recorded VM is stopped at once: one VM, one instance.  Raises if a driver
        cannot tell (the sweep fails: nothing proves this host runs only its own VMs).
        Returns how many VMs were found without a record."""
        added = 0
        for driver in self.drivers.values():
            for found in driver.discover(namespace, runtimes):
                with self.lock:
                    known = self.vms.get(found.key)
                    if known is None:
                        found.extra[BOOT_ID] = self.boot_id
                        self.vms[found.key] = found
                        self.state.save(found)
                        added += 1
                        log.warning(
                            "%s runs here without a record (%s %s): adopted for the S3 sweep",
                            found.key,
                            found.driver,
                            found.domain or found.pid,
                        )
                        continue
                if _same(known, found):
                    continue
                log.warning(
                    "%s runs twice here (%s and %s): stopping the unrecorded one",
                    found.key,
                    known.domain or known.pid,
                    found.domain or found.pid,
                )
                driver.stop(found, self.stop_grace)
        return added

    def start(
        self, key: str, epoch: int, runtime: Runtime, allowed: Callable[[], bool]
    ) -> LocalVM | None:
        """Start a VM if ``allowed()`` still holds under the lock; StartError if it fails."""
        with self.lock:
            if not allowed():
                return None
            driver = self.drivers.get(runtime.driver)
            if driver is None:
                raise StartError(
                    f"spec.runtime.driver {runtime.driver!r} is not enabled on this agent"
                    + (
                        " (start it with --enable-process-driver)"
                        if runtime.driver == "process"
                        else ""
                    )
                )
            vm = driver.start(key, epoch, runtime)
            vm.extra[BOOT_ID] = self.boot_id
            self.vms[key] = vm
            self.state.save(vm)
        return vm

    def stop(self, vm: LocalVM) -> None:
        """Stop and forget ``vm``; on StopError (or any driver failure) the record is
        kept: the VM may still run, and is this host's until proven otherwise."""
        self.drivers[vm.driver].stop(vm, self.stop_grace)
        self.forget(vm.key)

    def forget(self, key: str) -> None:
        with self.lock:
            self.vms.pop(key, None)
            self.state.forget(key)

    def resave(self, vm: LocalVM) -> None:
        with self.lock:
            if vm.key in self.vms:
                self.state.save(vm)

    def kill_all(self, fenced_reason: str | None = None) -> list[str]:
        """Kill every VM now.  With a reason, keep the records marked as fenced (the
        VMs must not run again under their epoch); without, drop them."""
        killed: list[str] = []
        with self.lock:
            for vm in list(self.vms.values()):
                if vm.extra.get(FENCED):
                    continue
                try:
                    self.drivers[vm.driver].kill(vm)  # verified, or it raises
                except Exception:
                    log.exception("killing %s failed", vm.key)
                    continue
                killed.append(vm.key)
                if fenced_reason is None:
                    self.vms.pop(vm.key, None)
                    self.state.forget(vm.key)
                else:
                    vm.extra[FENCED] = fenced_reason
                    self.state.save(vm)
        return killed


def _same(a: LocalVM, b: LocalVM) -> bool:
    if a.driver != b.driver:
        return False
    if a.driver == "process":
        return a.pid == b.pid
    # Not by URI: two spellings may name one daemon.  Records from before UUIDs were
    # kept name the domain only.
    ua, ub = a.extra.get(DOMAIN_UUID), b.extra.get(DOMAIN_UUID)
    return ua == ub if ua and ub else a.domain == b.domain
