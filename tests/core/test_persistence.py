"""Status round trips and operator restarts: no second fence, no lost release."""

from __future__ import annotations

from hafence.api.host import HostStatus
from hafence.api.vm import HAVirtualMachineStatus
from hafence.core import messages as m
from hafence.core.persist import host_status, to_datetime, to_seconds
from hafence.core.policy import Settings
from hafence.core.transitions import Phase
from tests.core.core_helpers import (
    Rig,
    agent_spec,
    answer,
    cluster,
    keep_alive,
    last,
    outage_checked,
    place,
    vm_spec,
)


def latest_status(rig: Rig, host: str) -> HostStatus:
    return [w for w in rig.of(m.WriteHostStatus) if w.host == host][-1].status


def latest_vm(rig: Rig, vm: str) -> HAVirtualMachineStatus:
    return [w for w in rig.of(m.WriteVMStatus) if w.vm == vm][-1].status


def restart(old: Rig, quiet: float = 20.0) -> Rig:
    """A new engine fed what the shell would read back from the API server."""
    rig = Rig(Settings(startup_quiet_period=quiet))
    rig.now = old.now
    rig.feed(m.OperatorStarted(rig.now))
    for name, rec in old.engine.hosts.items():
        status = latest_status(old, name)
        # Through the wire format, as the shell would read it.
        status = HostStatus.model_validate(status.to_k8s())
        rig.feed(m.HostObserved(rig.now, name, rec.spec, rec.labels, status))
        for agent in old.engine.agents.values():
            if agent.host == name:
                rig.feed(m.FenceAgentObserved(rig.now, agent.name, agent_spec(name, agent.order)))
    for name, vm in old.engine.vms.items():
        writes = [w for w in old.of(m.WriteVMStatus) if w.vm == name]
        status = (
            writes[-1].status
            if writes
            else HAVirtualMachineStatus(
                phase="Running", host=vm.host, placement_epoch=vm.epoch, last_host=vm.holder
            )
        )
        rig.feed(
            m.VMObserved(
                rig.now, name, vm.spec, HAVirtualMachineStatus.model_validate(status.to_k8s())
            )
        )
    for name, rec in old.engine.hosts.items():
        if rec.renew_time is not None and rec.boot_id is not None:
            rig.feed(
                m.LeaseObserved(
                    rig.now,
                    name,
                    rec.renew_time,
                    rec.lease_duration,
                    rec.boot_id,
                    rec.watchdog_timeout,
                    rec.ready,
                    watchdog_boot_id=rec.watchdog_boot_id,
                )
            )
    return rig


def test_time_conversion_round_trip() -> None:
    assert to_seconds(to_datetime(1234.5)) == 1234.5
    assert to_datetime(None) is None and to_seconds(None) is None


def test_host_status_round_trip_keeps_the_outage() -> None:
    rig = Rig()
    cluster(rig)
    place(rig, "web", "h1")
    outage_checked(rig, "off")
    status = latest_status(rig, "h1")
    assert status.phase == "Fencing" and status.fencing is not None
    # The check said off: the fence starts with "off" (no status step, issue #13).
    assert status.fencing.outage_id == "h1-10" and status.fencing.last_action == "off"
    assert status.fencing.last_result == "pending"
    assert status.fencing.boot_id_at_outage == "b1"
    assert host_status(rig.engine.hosts["h1"], 1).vm_count == 1


def test_restart_mid_fence_resumes_the_same_attempt_after_the_quiet_period() -> None:
    rig = Rig()
    cluster(rig)
    place(rig, "web", "h1")
    outage_checked(rig, "off")
    off = last(rig, m.RunFenceStep)
    assert isinstance(off, m.RunFenceStep) and off.step == "off"
    # Crash with "off" in flight.
    new = restart(rig, quiet=20)
    h1 = new.engine.hosts["h1"]
    assert h1.phase is Phase.FENCING and h1.outage_id == "h1-10" and h1.step == "off"
    assert not new.of(m.RunFenceStep)
    keep_alive(new, new.now + 19, ["h2", "h3"])
    assert not new.of(m.RunFenceStep)  # quiet period
    keep_alive(new, new.now + 1, ["h2", "h3"])
    again = last(new, m.RunFenceStep)
    assert isinstance(again, m.RunFenceStep)
    assert (again.step, again.attempt, again.outage_id) == ("off", 1, "h1-10")
    answer(new, again, "off")
    verify = last(new, m.RunFenceStep)
    assert isinstance(verify, m.RunFenceStep)
    answer(new, verify, "off")
    assert len(new.of(m.ReleaseVMs)) == 1
    # And a restart after the release neither fences nor releases again.
    third = restart(new, quiet=0)
    keep_alive(third, third.now + 100, ["h2", "h3"])
    assert not [s for s in third.of(m.RunFenceStep) if s.step != "on"]
    assert not third.of(m.ReleaseVMs) and not third.of(m.PlaceVM)


def test_release_cut_short_by_a_crash_is_redone_on_restart() -> None:
    rig = Rig()
    cluster(rig)
    place(rig, "web", "h1")
    outage_checked(rig, "off")
    for power in ("off", "off"):  # off, verify (the check said off: no status step)
        step = last(rig, m.RunFenceStep)
        assert isinstance(step, m.RunFenceStep)
        answer(rig, step, power)
    assert rig.engine.hosts["h1"].phase is Phase.REBOOTING
    # The host status was written, the VM status was not: the VM still says h1.
    new = Rig(Settings(startup_quiet_period=20))
    new.now = rig.now
    new.feed(m.OperatorStarted(new.now))
    for name, rec in rig.engine.hosts.items():
        new.feed(m.HostObserved(new.now, name, rec.spec, {}, latest_status(rig, name)))
    stale = HAVirtualMachineStatus(phase="Unknown", host="h1", placement_epoch=1, last_host="h1")
    new.feed(m.VMObserved(new.now, "web", vm_spec(), stale))
    for h in ("h2", "h3"):
        new.lease(h, new.now)
    release = last(new, m.ReleaseVMs)
    assert isinstance(release, m.ReleaseVMs) and release.vms == ("web",)
    assert new.engine.vms["web"].host in ("h2", "h3")
    assert new.engine.vms["web"].epoch > 1
