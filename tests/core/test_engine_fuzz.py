"""Random, out-of-order and stale inputs straight into the engine (no simulator).

Whatever arrives, the core must not crash and, by its own view of the world:
never fence or soft fence a host whose lease is fresh (S5), never place a VM on a host
other than the one that may still run it (S1), release only from a host in a proven-off
phase, place only on Up hosts, and apply at most one confirmation per outage (S6).
Operator restarts in between restore everything from the statuses written so far.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hafence.api.confirmation import FenceConfirmationStatus
from hafence.api.host import HostStatus
from hafence.api.vm import HAVirtualMachineStatus, RuntimeStatus
from hafence.core import messages as m
from hafence.core.engine import Engine
from hafence.core.fencing_plan import AgentResult
from hafence.core.policy import ClusterPolicy, Settings
from hafence.core.transitions import RELEASED_PHASES, Phase
from tests.core.core_helpers import agent_spec, confirmation, host_spec, vm_spec

HOSTS = ("h1", "h2", "h3")
AGENTS = {"h1": [("h1-a", 1), ("h1-b", 1), ("h1-c", 2)], "h2": [("h2-a", 1)], "h3": []}
VMS = {"v1": "h1", "v2": "h1", "v3": "h2", "v4": "h3"}
# The broken-connectivity check is off here (3 hosts expire together all the time in
# random programs); the scenarios and the simulator property test cover it.
SETTINGS = Settings(
    startup_quiet_period=5,
    connecting_grace=3,
    soft_fence_timeout=5,
    fence_retry_base=5,
    self_fence_safety_margin=2,
    connectivity_settle=2,
    default_cluster_policy=ClusterPolicy(skip_if_connectivity_broken=False),
)

hosts = st.sampled_from(HOSTS)
step = st.one_of(
    st.tuples(
        st.just("lease"),
        hosts,
        st.sampled_from(["b1", "b2"]),
        st.booleans(),
        st.sampled_from([None, None, None, 5.0]),
    ),
    st.tuples(st.just("power"), hosts, st.sampled_from(["on", "off", "unknown"]), st.booleans()),
    st.tuples(st.just("soft"), hosts, st.booleans(), st.booleans()),
    st.tuples(
        st.just("fence"),
        hosts,
        st.lists(st.sampled_from(["on", "off", "off", "error"]), min_size=3, max_size=3),
        st.booleans(),
    ),
    # Answer whatever is in flight for the host, with the right kind of result.
    st.tuples(
        st.just("answer"),
        hosts,
        st.sampled_from(["on", "off", "unknown"]),
        st.booleans(),
        st.lists(st.sampled_from(["on", "off", "off", "error"]), min_size=3, max_size=3),
    ),
    st.tuples(
        st.just("answer"),
        hosts,
        st.sampled_from(["on", "off", "unknown"]),
        st.booleans(),
        st.lists(st.sampled_from(["on", "off", "off", "error"]), min_size=3, max_size=3),
    ),
    st.tuples(st.just("confirm"), hosts, st.integers(-20, 0)),
    st.tuples(
        st.just("runtime"),
        st.sampled_from(sorted(VMS)),
        hosts,
        st.sampled_from(["Running", "Stopped", "Failed"]),
        st.integers(-1, 1),
    ),
    st.tuples(st.just("maintenance"), hosts, st.booleans()),
    st.tuples(st.just("restart")),
    st.tuples(st.just("tick")),
)
program = st.lists(st.tuples(st.integers(0, 12), step), min_size=5, max_size=60)


class World:
    def __init__(self) -> None:
        self.now = 1000.0
        self.engine = Engine(SETTINGS)
        self.host_status: dict[str, HostStatus] = {}
        self.vm_status: dict[str, HAVirtualMachineStatus] = {
            vm: HAVirtualMachineStatus(phase="Running", host=h, placement_epoch=1, last_host=h)
            for vm, h in VMS.items()
        }
        self.runtime: dict[str, RuntimeStatus] = {}
        # The truth the core must respect (S1): the host each VM may run on and the
        # placement epoch it got there, until a ReleaseVMs of that host or that host's
        # agent reporting it Stopped/Failed at that epoch or later frees it.
        self.may_run: dict[str, tuple[str, int] | None] = {vm: (h, 1) for vm, h in VMS.items()}
        self.conf: dict[str, tuple[str, float]] = {}
        self.conf_status: dict[str, FenceConfirmationStatus] = {}
        self.maintenance = dict.fromkeys(HOSTS, False)
        self.leases: dict[str, m.LeaseObserved] = {}
        self.ops: dict[str, list[str]] = {h: [] for h in HOSTS}
        self.applied: list[str] = []
        self.offs: set[tuple[str, str, int, int]] = (
            set()
        )  # "off" sent: host, outage, attempt, level
        for h in HOSTS:
            self.leases[h] = m.LeaseObserved(self.now, h, self.now, 10.0, "b1", None, True)
        self.start()

    def start(self) -> None:
        self.engine = Engine(SETTINGS)
        self.feed(m.OperatorStarted(self.now))
        for h in HOSTS:
            self.feed(
                m.HostObserved(
                    self.now,
                    h,
                    host_spec(
                        maintenance=self.maintenance[h],
                        selfFencing={"enabled": h == "h3", "watchdogTimeoutSeconds": 5},
                    ),
                    {},
                    self.host_status.get(h),
                )
            )
            for name, order in AGENTS[h]:
                self.feed(m.FenceAgentObserved(self.now, name, agent_spec(h, order)))
        for vm in sorted(VMS):
            st_ = self.vm_status[vm].model_copy(update={"runtime": self.runtime.get(vm)})
            self.feed(m.VMObserved(self.now, vm, vm_spec(ha=vm != "v4"), st_))
        for name, (h, created) in sorted(self.conf.items()):
            self.feed(
                m.ConfirmationObserved(
                    self.now, name, confirmation(h), created, self.conf_status.get(name)
                )
            )
        for lease in self.leases.values():
            self.feed(
                m.LeaseObserved(
                    self.now,
                    lease.host,
                    lease.renew_time,
                    lease.duration,
                    lease.boot_id,
                    lease.watchdog_timeout,
                    lease.ready,
                    watchdog_boot_id=lease.watchdog_boot_id,
                )
            )

    def feed(self, ev: m.Input) -> None:
        self.check(self.engine.handle(ev))

    def tick(self) -> None:
        self.check(self.engine.tick(self.now))

    def check(self, actions: list[m.Action]) -> None:
        e = self.engine
        for a in actions:
            if isinstance(a, m.CheckPower | m.SoftFence | m.RunFenceStep):
                if isinstance(a, m.RunFenceStep) and a.step in ("verify", "on"):
                    # Allowed on a fresh lease once "off" was sent at that level (the
                    # no-abandon rule): neither disrupts anything.
                    sent = (a.host, a.outage_id, a.attempt, a.level)
                    assert sent in self.offs, f"{a.step} without an off: {a}"
                else:
                    assert not e.hosts[a.host].lease_fresh(self.now), f"S5: {a}"
                if isinstance(a, m.RunFenceStep) and a.step == "off":
                    self.offs.add((a.host, a.outage_id, a.attempt, a.level))
                self.ops[a.host].append(a.op_id)
            if isinstance(a, m.PlaceVM):
                assert a.previous_host in (None, a.host), f"S1: {a}"
                assert e.hosts[a.host].phase is Phase.UP, a
                cur = self.may_run.get(a.vm)
                assert cur is None or cur[0] == a.host, f"S1: {a} while it may run on {cur}"
                self.may_run[a.vm] = (a.host, a.epoch)
            if isinstance(a, m.ReleaseVMs):
                assert e.hosts[a.host].phase in RELEASED_PHASES, a
                for v in a.vms:
                    if (self.may_run.get(v) or ("", 0))[0] == a.host:
                        self.may_run[v] = None
            if isinstance(a, m.WriteHostStatus):
                self.host_status[a.host] = HostStatus.model_validate(a.status.to_k8s())
            if isinstance(a, m.WriteVMStatus):
                self.vm_status[a.vm] = HAVirtualMachineStatus.model_validate(a.status.to_k8s())
            if isinstance(a, m.WriteConfirmationStatus):
                self.conf_status[a.name] = a.status
                if a.status.phase == "Applied":
                    assert a.status.outage_id not in self.applied, f"S6: {a}"
                    self.applied.append(a.status.outage_id or "")
        for vm in e.vms.values():
            assert vm.host is None or vm.holder == vm.host, vm

    def op(self, host: str, current: bool) -> str:
        live = self.engine.hosts[host].op_id
        if current and live is not None:
            return live
        return self.ops[host][0] if self.ops[host] else "bogus"

    def run(self, dt: int, s: tuple[Any, ...]) -> None:
        self.now += dt
        kind = s[0]
        if kind == "lease":
            _, h, boot, ready, wd = s
            lease = m.LeaseObserved(self.now, h, self.now, 10.0, boot, wd, ready)
            self.leases[h] = lease
            self.feed(lease)
        elif kind == "power":
            self.feed(m.PowerStatusResult(self.now, s[1], self.op(s[1], s[3]), s[2]))
        elif kind == "soft":
            self.feed(m.SoftFenceResult(self.now, s[1], self.op(s[1], s[3]), s[2]))
        elif kind == "fence":
            names = [n for n, _ in AGENTS[s[1]]]
            results = {n: AgentResult(p) for n, p in zip(names, s[2], strict=False)}
            self.feed(m.FenceStepResult(self.now, s[1], self.op(s[1], s[3]), results))
        elif kind == "answer":
            _, h, power, ok, powers = s
            rec = self.engine.hosts[h]
            if rec.op_id is None:
                return
            names = [n for n, _ in AGENTS[h]]
            results = {n: AgentResult(p) for n, p in zip(names, powers, strict=False)}
            ev: m.Input
            if rec.step == "power-status":
                ev = m.PowerStatusResult(self.now, h, rec.op_id, power)
            elif rec.step == "soft-fence":
                ev = m.SoftFenceResult(self.now, h, rec.op_id, ok)
            else:
                ev = m.FenceStepResult(self.now, h, rec.op_id, results)
            self.feed(ev)
        elif kind == "confirm":
            name = f"c{len(self.conf)}"
            self.conf[name] = (s[1], self.now + s[2])
            self.feed(m.ConfirmationObserved(self.now, name, confirmation(s[1]), self.now + s[2]))
        elif kind == "runtime":
            _, vm, h, state, delta = s
            epoch = max(self.engine.vms[vm].epoch + delta, 0)
            rt = RuntimeStatus(host=h, state=state, placement_epoch=epoch)
            self.runtime[vm] = rt
            cur = self.may_run.get(vm)
            if cur is not None and cur[0] == h and state != "Running" and epoch >= cur[1]:
                self.may_run[vm] = None  # that agent stopped it and will not restart it
            self.feed(m.VMRuntimeObserved(self.now, vm, rt))
        elif kind == "maintenance":
            self.maintenance[s[1]] = s[2]
            self.feed(
                m.HostObserved(
                    self.now,
                    s[1],
                    host_spec(
                        maintenance=s[2],
                        selfFencing={"enabled": s[1] == "h3", "watchdogTimeoutSeconds": 5},
                    ),
                )
            )
        elif kind == "restart":
            self.start()
        else:
            self.tick()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program)
def test_engine_survives_any_input_order_and_keeps_its_invariants(
    prog: list[tuple[int, tuple[Any, ...]]],
) -> None:
    w = World()
    for dt, s in prog:
        w.run(dt, s)
        w.tick()
