"""Reconcile decisions (hafence.agent.vms), pure: placement in, plan out."""

from __future__ import annotations

from typing import Any

from hafence.agent.drivers import LocalVM, Observed
from hafence.agent.vms import Placed, Reconciler, RestartPolicy

CMD = {"driver": "process", "process": {"command": ["/bin/sleep", "9"]}}


def placed(
    host: str | None,
    epoch: int = 1,
    strategy: str = "Always",
    reported: dict[str, Any] | None = None,
    runtime: Any = CMD,
) -> Placed:
    obj = {
        "metadata": {"namespace": "ns", "name": "vm"},
        "spec": {"runStrategy": strategy, "runtime": runtime},
        "status": {
            "host": host,
            "placementEpoch": epoch,
            **({"runtime": reported} if reported else {}),
        },
    }
    return Placed.from_object(obj, "h1")


def local(epoch: int = 1, **extra: str) -> LocalVM:
    return LocalVM(key="ns/vm", driver="process", epoch=epoch, pid=99, extra=dict(extra))


def test_starts_only_when_allowed() -> None:
    r = Reconciler("h1", RestartPolicy())
    vms = {"ns/vm": placed("h1")}
    assert r.plan(vms, {}, {}, now=0, may_start=False).start == []
    assert [p.key for p in r.plan(vms, {}, {}, now=0, may_start=True).start] == ["ns/vm"]


def test_stops_vm_placed_elsewhere_without_reporting() -> None:
    r = Reconciler("h1", RestartPolicy())
    plan = r.plan(
        {"ns/vm": placed("h2")},
        {"ns/vm": local()},
        {"ns/vm": Observed("running")},
        now=0,
        may_start=True,
    )
    assert [v.key for v in plan.stop] == ["ns/vm"] and plan.reports == {}


def test_crash_backoff_then_failed() -> None:
    r = Reconciler("h1", RestartPolicy(limit=2, backoff=1, backoff_max=10))
    vms = {"ns/vm": placed("h1")}
    dead = {"ns/vm": Observed("stopped", "exited with code 3")}
    plan = r.plan(vms, {"ns/vm": local()}, dead, now=100, may_start=True)
    assert plan.reports["ns/vm"]["state"] == "Crashed" and plan.start == []
    assert r.plan(vms, {}, {}, now=100.5, may_start=True).start == []  # backoff 1s
    assert len(r.plan(vms, {}, {}, now=101, may_start=True).start) == 1
    r.plan(vms, {"ns/vm": local()}, dead, now=102, may_start=True)
    assert r.tracks["ns/vm"].not_before == 104  # doubled
    plan = r.plan(vms, {"ns/vm": local()}, dead, now=110, may_start=True)
    assert plan.reports["ns/vm"]["state"] == "Failed"
    assert "crashed 3 times" in plan.reports["ns/vm"]["message"]
    assert r.plan(vms, {}, {}, now=1000, may_start=True).start == []
    # A new epoch: fresh budget.
    assert len(r.plan({"ns/vm": placed("h1", 2)}, {}, {}, now=1000, may_start=True).start) == 1


def test_budget_resumes_from_own_report_after_agent_restart() -> None:
    r = Reconciler("h1", RestartPolicy(limit=5))
    rep = {"host": "h1", "state": "Failed", "placementEpoch": 1, "restarts": 6, "message": "x"}
    assert (
        r.plan({"ns/vm": placed("h1", 1, reported=rep)}, {}, {}, now=0, may_start=True).start == []
    )
    other = {**rep, "host": "h0"}
    assert (
        len(
            Reconciler("h1", RestartPolicy())
            .plan({"ns/vm": placed("h1", 1, reported=other)}, {}, {}, now=0, may_start=True)
            .start
        )
        == 1
    )


def test_fenced_vm_fails_for_its_epoch_only() -> None:
    r = Reconciler("h1", RestartPolicy())
    fenced = {"ns/vm": local(1, fenced="killed by the watchdog")}
    plan = r.plan({"ns/vm": placed("h1", 1)}, fenced, {}, now=0, may_start=True)
    assert plan.reports["ns/vm"]["state"] == "Failed" and plan.start == []
    assert plan.forget_after_report == ["ns/vm"]
    plan = r.plan({"ns/vm": placed("h1", 2)}, fenced, {}, now=0, may_start=True)
    assert plan.forget == ["ns/vm"]


def test_bad_runtime_is_failed_naming_the_field() -> None:
    r = Reconciler("h1", RestartPolicy())
    plan = r.plan(
        {"ns/vm": placed("h1", runtime={"driver": "qemu"})}, {}, {}, now=0, may_start=True
    )
    assert plan.reports["ns/vm"]["state"] == "Failed"
    assert plan.reports["ns/vm"]["message"].startswith("spec.runtime.driver: "), plan.reports


def test_driver_doubt_is_unknown_never_a_crash() -> None:
    r = Reconciler("h1", RestartPolicy(limit=0))
    doubt = {"ns/vm": Observed("unknown", "libvirt: no answer within 10s")}
    for _ in range(3):
        plan = r.plan({"ns/vm": placed("h1")}, {"ns/vm": local()}, doubt, now=0, may_start=True)
        assert plan.reports["ns/vm"]["state"] == "Unknown"
        assert "no answer" in plan.reports["ns/vm"]["message"]
        assert plan.start == [] and plan.forget == [] and plan.stop == []


def test_stopped_is_reported_only_after_the_stop_verdict() -> None:
    r = Reconciler("h1", RestartPolicy())
    for obs in (Observed("running"), Observed("unknown", "daemon gone")):
        plan = r.plan(
            {"ns/vm": placed("h1", strategy="Halted")},
            {"ns/vm": local()},
            {"ns/vm": obs},
            now=0,
            may_start=True,
        )
        assert [v.key for v in plan.stop] == ["ns/vm"]
        assert "ns/vm" not in plan.reports and plan.forget == []
        track = plan.report_stop["ns/vm"]
        assert r.stop_report(track, None)["state"] == "Stopped"
        failed = r.stop_report(track, "destroy: no answer")
        assert failed["state"] == "StopFailed" and "may still run" in failed["message"]
    # Verified not running by observation: Stopped at once, record dropped.
    plan = r.plan(
        {"ns/vm": placed("h1", strategy="Halted")},
        {"ns/vm": local()},
        {"ns/vm": Observed("stopped", "exited with code 0")},
        now=0,
        may_start=True,
    )
    assert plan.reports["ns/vm"]["state"] == "Stopped" and plan.forget == ["ns/vm"]
