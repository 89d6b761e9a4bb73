"""HA VMs their agent reports Failed on a healthy host: restarted elsewhere, bounded."""

from __future__ import annotations

import pytest

from hafence.api.vm import HAVirtualMachineStatus, RuntimeStatus
from hafence.core import messages as m
from hafence.core.persist import vm_status
from hafence.core.policy import Settings
from tests.core.core_helpers import Rig, cluster, keep_alive, place, vm_spec


def failed(rig: Rig, vm: str, host: str, epoch: int, msg: str = "crashed 6 times") -> None:
    rt = RuntimeStatus(host=host, state="Failed", placement_epoch=epoch, message=msg)
    rig.feed(m.VMRuntimeObserved(rig.now, vm, rt))


def placements(rig: Rig, vm: str) -> list[tuple[str, int, bool]]:
    return [(p.host, p.epoch, p.restart) for p in rig.of(m.PlaceVM) if p.vm == vm]


def test_failed_ha_vm_restarts_on_another_host_even_if_it_prefers_the_one_it_failed_on() -> None:
    rig = Rig()
    cluster(rig, n=3)
    place(rig, "web", "h1", preferredHosts=["h1"])
    failed(rig, "web", "h1", 1, "crashed 6 times (restart limit 5)")
    vm = rig.engine.vms["web"]
    assert vm.host in ("h2", "h3") and vm.holder == vm.host and vm.phase == "Scheduled"
    assert placements(rig, "web") == [(vm.host, 3, True)]
    assert vm.restart_count == 1 and vm.failed_restarts == 1
    assert vm.last_failure_reason == "failed on h1: crashed 6 times (restart limit 5)"
    assert rig.reasons("web") == ["VMFailed", "HAVMRestarted"]
    restarted = next(e for e in rig.of(m.EmitEvent) if e.reason == "HAVMRestarted")
    assert "after failed on h1: crashed 6 times" in restarted.message
    written = [w for w in rig.of(m.WriteVMStatus) if w.vm == "web"][-1]
    assert written.placement_changed and written.status.failed_restarts == 1
    assert written.status.restart_count == 1 and written.status.host == vm.host


@pytest.mark.parametrize(
    "report",
    [
        RuntimeStatus(host="h1", state="Failed", placement_epoch=0),  # an older placement
        RuntimeStatus(host="h2", state="Failed", placement_epoch=1),  # not the holder's agent
        RuntimeStatus(host="h1", state="Crashed", placement_epoch=1),  # still trying
        RuntimeStatus(host="h1", state="Stopped", placement_epoch=1),
    ],
)
def test_only_a_failed_report_of_the_holder_at_the_current_epoch_moves_the_vm(
    report: RuntimeStatus,
) -> None:
    rig = Rig()
    cluster(rig, n=3)
    place(rig, "web", "h1")
    rig.feed(m.VMRuntimeObserved(0.0, "web", report))
    vm = rig.engine.vms["web"]
    assert vm.host == "h1" and vm.holder == "h1" and vm.epoch == 1
    assert placements(rig, "web") == [] and vm.failed_restarts == 0


def test_failed_report_while_the_host_is_not_up_waits_for_it_to_be_back() -> None:
    rig = Rig(connecting_grace=10)
    cluster(rig, n=3)
    place(rig, "web", "h1")
    keep_alive(rig, 15, ["h2", "h3"])  # h1's lease expired at 10: Connecting
    assert rig.engine.hosts["h1"].phase.value == "Connecting"
    failed(rig, "web", "h1", 1)
    vm = rig.engine.vms["web"]
    assert vm.host == "h1" and placements(rig, "web") == []
    rig.lease("h1", rig.now)  # back Up: its VMs are reconciled from their runtime
    assert vm.host in ("h2", "h3") and vm.failed_restarts == 1
    assert placements(rig, "web") == [(vm.host, 3, True)]


def test_failure_restarts_follow_the_retry_schedule_and_give_up_at_the_limit() -> None:
    rig = Rig(max_failed_restarts=2, vm_retry_fast_interval=30)
    cluster(rig, n=3)
    hosts = ["h1", "h2", "h3"]
    place(rig, "db", "h1")
    vm = rig.engine.vms["db"]
    failed(rig, "db", "h1", 1)
    first = vm.host
    assert first in ("h2", "h3") and vm.failed_restarts == 1  # the first one at once
    keep_alive(rig, 10, hosts)
    failed(rig, "db", first, vm.epoch)
    assert vm.host is None and vm.phase == "Pending" and vm.next_placement == 40
    assert rig.engine.next_deadline(rig.now) is not None
    keep_alive(rig, 39, hosts)
    assert vm.host is None  # not before the schedule says
    keep_alive(rig, 40, hosts)
    second = vm.host
    assert second is not None and second != first and vm.restart_count == 2
    keep_alive(rig, 50, hosts)
    failed(rig, "db", second, vm.epoch, "command not found: /bin/nope")
    assert vm.phase == "Failed" and vm.host == second and vm.failed_restarts == 2
    assert vm.last_failure_reason == (
        f"failed on {second}: command not found: /bin/nope; not restarted again after "
        "2 restart(s) on other hosts (max_failed_restarts 2)"
    )
    status = [w for w in rig.of(m.WriteVMStatus) if w.vm == "db"][-1].status
    assert status.phase == "Failed" and status.last_failure_reason == vm.last_failure_reason
    keep_alive(rig, 4000, hosts)
    assert len(placements(rig, "db")) == 2 and vm.phase == "Failed"
    # The same report again (a re-list) changes nothing and says nothing twice.
    events = len(rig.of(m.EmitEvent))
    failed(rig, "db", second, vm.epoch, "command not found: /bin/nope")
    assert len(rig.of(m.EmitEvent)) == events


def test_non_ha_vm_that_fails_stays_failed_on_its_host() -> None:
    rig = Rig()
    cluster(rig, n=3)
    place(rig, "batch", "h1", ha=False)
    failed(rig, "batch", "h1", 1, "exited with code 3")
    vm = rig.engine.vms["batch"]
    assert (vm.phase, vm.host, vm.failed_restarts) == ("Failed", "h1", 0)
    assert vm.last_failure_reason == "exited with code 3" and placements(rig, "batch") == []


def test_nowhere_else_fits_then_the_next_try_may_use_the_host_it_failed_on() -> None:
    rig = Rig(vm_retry_fast_interval=30)
    cluster(rig, n=2, cpu=4)
    place(rig, "filler", "h2", cpu=4)
    place(rig, "web", "h1", cpu=2)
    failed(rig, "web", "h1", 1)
    vm = rig.engine.vms["web"]
    assert vm.host is None and vm.holder is None and vm.phase == "Pending"
    assert "HAVMRestartFailed" in rig.reasons("web")
    assert vm.unschedulable is not None and "1 the VM just failed there" in vm.unschedulable
    keep_alive(rig, 30, ["h1", "h2"])
    assert vm.host == "h1" and vm.epoch == 3  # a new epoch: the agent's fresh budget
    assert placements(rig, "web") == [("h1", 3, True)]


def test_spec_edit_starts_a_fresh_count_and_re_places_a_vm_that_gave_up() -> None:
    rig = Rig(max_failed_restarts=1)
    cluster(rig, n=2)
    place(rig, "web", "h1")
    failed(rig, "web", "h1", 1)
    vm = rig.engine.vms["web"]
    assert vm.host == "h2"
    failed(rig, "web", "h2", vm.epoch)
    assert vm.phase == "Failed" and vm.host == "h2" and vm.failed_restarts == 1
    status = vm_status(vm).model_copy(update={"runtime": vm.runtime})
    rig.feed(m.VMObserved(rig.now, "web", vm_spec(), status))  # the same spec: nothing
    assert vm.phase == "Failed" and vm.host == "h2"
    rig.feed(m.VMObserved(rig.now, "web", vm_spec(cpu=2), status))  # a person edits it
    assert vm.host == "h1" and vm.failed_restarts == 1 and vm.phase == "Scheduled"
    assert [h for h, _, _ in placements(rig, "web")] == ["h2", "h1"]


def test_operator_restart_keeps_the_count_and_does_not_revive_a_vm_that_gave_up() -> None:
    rig = Rig(max_failed_restarts=1)
    cluster(rig, n=3)
    place(rig, "db", "h1")
    failed(rig, "db", "h1", 1)
    vm = rig.engine.vms["db"]
    failed(rig, "db", vm.host or "", vm.epoch)
    assert vm.phase == "Failed"
    saved = vm_status(vm).model_copy(update={"runtime": vm.runtime})
    assert HAVirtualMachineStatus.model_validate(saved.to_k8s()).failed_restarts == 1

    again = Rig(max_failed_restarts=1)
    cluster(again, n=3)
    again.feed(m.VMObserved(0.0, "db", vm_spec(), saved))
    restored = again.engine.vms["db"]
    assert (restored.phase, restored.host, restored.failed_restarts) == ("Failed", vm.host, 1)
    assert again.of(m.PlaceVM) == [] and "VMFailed" not in again.reasons("db")


def test_settings_reject_a_negative_limit() -> None:
    with pytest.raises(ValueError, match="max_failed_restarts must be >= 0, got -1"):
        Settings(max_failed_restarts=-1)
    assert Settings().failed_restart_delay(1) == 0.0
    assert Settings().failed_restart_delay(2) == Settings().vm_retry_fast_interval


def test_a_vm_that_ran_long_enough_before_failing_starts_a_fresh_count() -> None:
    rig = Rig(max_failed_restarts=1, failed_restart_reset=600)
    cluster(rig, n=3)
    hosts = ["h1", "h2", "h3"]
    place(rig, "web", "h1")
    vm = rig.engine.vms["web"]
    failed(rig, "web", "h1", 1)  # 1/1
    second = vm.host or ""
    rt = RuntimeStatus(host=second, state="Running", placement_epoch=vm.epoch)
    rig.feed(m.VMRuntimeObserved(rig.now, "web", rt))
    keep_alive(rig, 599, hosts)
    failed(rig, "web", second, vm.epoch)  # ran 599 s < 600: the row goes on, it gives up
    assert vm.phase == "Failed" and vm.failed_restarts == 1

    rig2 = Rig(max_failed_restarts=1, failed_restart_reset=600)
    cluster(rig2, n=3)
    place(rig2, "web", "h1")
    vm2 = rig2.engine.vms["web"]
    failed(rig2, "web", "h1", 1)
    second = vm2.host or ""
    rt = RuntimeStatus(host=second, state="Running", placement_epoch=vm2.epoch)
    rig2.feed(m.VMRuntimeObserved(rig2.now, "web", rt))
    keep_alive(rig2, 600, hosts)
    failed(rig2, "web", second, vm2.epoch)  # ran 600 s: a fresh row, restarted again
    assert vm2.phase == "Scheduled" and vm2.host not in (None, second)
    assert vm2.failed_restarts == 1 and vm2.restart_count == 2
