"""VM placement through the engine: initial placement, retries, runtime, Halted."""

from __future__ import annotations

from hafence.api.vm import RuntimeStatus
from hafence.core import messages as m
from tests.core.core_helpers import Rig, cluster, keep_alive, vm_spec


def test_unschedulable_vm_follows_the_retry_schedule_and_is_placed_when_capacity_appears() -> None:
    rig = Rig(vm_retry_fast_interval=30, vm_retry_fast_count=3, vm_retry_slow_interval=600)
    cluster(rig, n=2, cpu=2, mem=2048)
    rig.feed(m.VMObserved(0.0, "big", vm_spec(cpu=4, mem=1024)))
    vm = rig.engine.vms["big"]
    assert vm.phase == "Pending" and vm.attempts == 1 and vm.next_placement == 30
    assert "VMUnschedulable" in rig.reasons("big")
    status = [w for w in rig.of(m.WriteVMStatus) if w.vm == "big"][-1].status
    cond = status.conditions[0]
    assert (cond.type, cond.status, cond.reason) == ("Scheduled", "False", "Unschedulable")
    keep_alive(rig, 200, ["h1", "h2"])
    # Tries at 0, then 3 fast retries at 30, 60, 90; after that the slow interval.
    assert vm.attempts == 4 and vm.next_placement == 90 + 600
    assert rig.reasons("big").count("VMUnschedulable") == 1  # not one event per try
    # A bigger host joins: tried at once, not at the next slow retry.
    rig.feed(
        m.HostObserved(
            rig.now,
            "h9",
            rig.engine.hosts["h1"].spec.model_copy(
                update={
                    "capacity": rig.engine.hosts["h1"].spec.capacity.model_copy(update={"cpu": 8})
                }
            ),
        )
    )
    rig.lease("h9", rig.now)
    assert vm.host == "h9" and vm.phase == "Scheduled" and vm.unschedulable is None


def test_priority_and_anti_affinity_in_one_pass() -> None:
    rig = Rig()
    cluster(rig, n=2, cpu=4, mem=8192)
    for name, prio in (("a", "Low"), ("b", "High"), ("c", "High")):
        rig.feed(m.VMObserved(0.0, name, vm_spec(prio=prio, cpu=2, antiAffinityGroup="g")))
    placed = [(p.vm, p.host) for p in rig.of(m.PlaceVM)]
    # Each VM is observed alone, so they go in arrival order; anti-affinity keeps one per
    # host and the third (whatever its priority) waits.
    assert len({h for _, h in placed}) == len(placed) == 2
    assert rig.engine.vms["c"].phase == "Pending"


def test_runtime_drives_vm_phase() -> None:
    rig = Rig()
    cluster(rig, n=1)
    # Not HA: a Failed report leaves it Failed where it is (HA VMs: test_failed_restart).
    rig.feed(m.VMObserved(0.0, "web", vm_spec(ha=False)))
    vm = rig.engine.vms["web"]
    assert vm.phase == "Scheduled" and vm.host == "h1" and vm.epoch == 1
    rig.feed(
        m.VMRuntimeObserved(
            0.0, "web", RuntimeStatus(host="h1", state="Running", placement_epoch=0)
        )
    )
    assert vm.phase == "Scheduled"  # a report about an older placement
    rig.feed(
        m.VMRuntimeObserved(
            0.0, "web", RuntimeStatus(host="h1", state="Running", placement_epoch=1)
        )
    )
    assert vm.phase == "Running"
    rig.feed(
        m.VMRuntimeObserved(
            0.0,
            "web",
            RuntimeStatus(host="h1", state="Failed", placement_epoch=1, message="crashed 5 times"),
        )
    )
    assert vm.phase == "Failed" and vm.last_failure_reason == "crashed 5 times"
    assert vm.host == "h1"  # the agent says it failed, not that it cannot run there


def test_halted_vm_moves_only_after_its_agent_reports_it_stopped() -> None:
    rig = Rig()
    cluster(rig, n=2)
    rig.feed(m.VMObserved(0.0, "web", vm_spec(preferredHosts=["h1"])))
    vm = rig.engine.vms["web"]
    assert vm.host == "h1"
    rig.feed(
        m.VMObserved(
            1.0, "web", vm_spec(preferredHosts=["h1"]).model_copy(update={"run_strategy": "Halted"})
        )
    )
    assert vm.host is None and vm.holder == "h1" and vm.phase == "Down" and vm.epoch == 2
    # Started again, preferring h2: it may only go back to h1 until h1 says it stopped.
    rig.feed(m.VMObserved(2.0, "web", vm_spec(preferredHosts=["h2"])))
    assert vm.host == "h1"
    rig.feed(
        m.VMObserved(
            3.0, "web", vm_spec(preferredHosts=["h2"]).model_copy(update={"run_strategy": "Halted"})
        )
    )
    rig.feed(
        m.VMRuntimeObserved(
            4.0, "web", RuntimeStatus(host="h1", state="Stopped", placement_epoch=vm.epoch)
        )
    )
    assert vm.holder is None
    rig.feed(m.VMObserved(5.0, "web", vm_spec(preferredHosts=["h2"])))
    assert vm.host == "h2"


def test_doubt_from_the_agent_keeps_the_vm_on_its_host() -> None:
    """StopFailed and Unknown mean "it may still run there": never a release, never
    Failed; only Stopped (verified) lets a Halted VM go elsewhere."""
    rig = Rig()
    cluster(rig, n=2)
    rig.feed(m.VMObserved(0.0, "web", vm_spec(preferredHosts=["h1"])))
    vm = rig.engine.vms["web"]
    doubt = RuntimeStatus(host="h1", state="Unknown", placement_epoch=1, message="libvirt down")
    rig.feed(m.VMRuntimeObserved(0.5, "web", doubt))
    assert vm.phase == "Unknown" and vm.host == "h1"
    halted = vm_spec(preferredHosts=["h2"]).model_copy(update={"run_strategy": "Halted"})
    rig.feed(m.VMObserved(1.0, "web", halted))
    for state in ("StopFailed", "Unknown"):
        rig.feed(
            m.VMRuntimeObserved(
                2.0, "web", RuntimeStatus(host="h1", state=state, placement_epoch=vm.epoch)
            )
        )
        assert vm.holder == "h1"
    rig.feed(m.VMObserved(3.0, "web", vm_spec(preferredHosts=["h2"])))
    assert vm.host == "h1"  # started again: only where it may still run
