"""The core at the design's scale, no I/O: 1,000 hosts, 20 clusters, 10,000 HA VMs.

Builds an Engine as an operator restart would (every Host, FenceAgent, Lease and placed,
Running HAVirtualMachine observed), then drives it on a simulated clock the way the
shell does (hafence.controller.reconciler): every host renews its lease every 10/3 s,
and the monitor ticks the engine and asks for its next deadline every 0.5 s.  Only the
time spent inside the core (handle / tick / next_deadline) is measured, as this
process's CPU time (the core is single-threaded and does no I/O).

Then a rack of 50 hosts (2-3 per cluster) hangs: their leases stop, their BMCs answer
(power "on", then each fence operation succeeds one simulated second after it was
asked), SSH soft fencing times out.  Measured: core time from the last fence result
(the last host's "verify off") to every VM of the rack placed elsewhere, the core time
of all 50 proofs with their releases and placements, the VMs re-placed, and that no VM
ever had two placements (each PlaceVM checked against the VM's last placement, which
only a ReleaseVMs of that host clears).

    .venv/bin/python bench/scale_core.py [--runs 3] [--hosts 1000] [--clusters 20]
        [--vms 10000] [--rack 50] [--warmup 60] [--steady 60] [--long 300]
        [--max-fences 50]

Prints a Markdown block for bench/README.md ("Scale (core)").  A figure, not a test.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hafence.api.fenceagent import FenceAgentSpec
from hafence.api.host import HostSpec
from hafence.api.vm import HAVirtualMachineSpec, HAVirtualMachineStatus, RuntimeStatus
from hafence.core import Engine, Settings
from hafence.core import messages as m
from hafence.core.fencing_plan import AgentResult

LEASE = 10.0
RENEW = LEASE / 3  # the agent's renewal interval (production)
# The shell ticks at deadlines and wakes (MAX_SLEEP 5 s at most); a tick every 0.5 s,
# as it once did, is a ceiling on what its ticks cost.
TICK = 0.5
FENCE_STEP = 1.0  # simulated seconds a BMC takes per operation
SOFT_FENCE = 10.0  # simulated seconds before SSH to a hung host times out


@dataclass
class Layout:
    hosts: list[str]
    cluster_of: dict[str, str]
    vm_host: dict[str, str]
    rack: list[str]


def layout(n_hosts: int, n_clusters: int, n_vms: int, rack_size: int) -> Layout:
    per = n_hosts // n_clusters
    hosts = [f"c{c:02d}-h{j:03d}" for c in range(n_clusters) for j in range(per)]
    cluster_of = {h: h.split("-")[0] for h in hosts}
    vm_host = {f"vm{i:05d}": hosts[i % len(hosts)] for i in range(n_vms)}
    # A rack spans clusters (failure domains): the first hosts of every cluster in turn.
    by_pos = sorted(hosts, key=lambda h: (int(h.split("-h")[1]), h))
    return Layout(hosts, cluster_of, vm_host, by_pos[:rack_size])


def host_spec(cluster: str) -> HostSpec:
    return HostSpec.model_validate(
        {
            "address": "h.example",
            "cluster": cluster,
            "capacity": {"cpu": 64, "memoryMiB": 262144},
            "ssh": {
                "privateKeySecretRef": {"name": "k", "key": "id"},
                "hostKey": "ssh-ed25519 AAAA",
            },
        }
    )


def agent_spec(host: str) -> FenceAgentSpec:
    return FenceAgentSpec.model_validate(
        {
            "hostRef": {"name": host},
            "type": "ipmilan",
            "address": f"{host}-bmc",
            "order": 1,
            "credentialsSecretRef": {"name": "c"},
        }
    )


def vm_spec(cluster: str, i: int) -> HAVirtualMachineSpec:
    return HAVirtualMachineSpec.model_validate(
        {
            "highlyAvailable": True,
            "priority": ("High", "Medium", "Low")[i % 3],
            "resources": {"cpu": 2, "memoryMiB": 4096},
            "placement": {"cluster": cluster},
            "runtime": {"driver": "process", "process": {"command": ["sleep", "inf"]}},
        }
    )


class PlacementCheck:
    """Every VM has at most one placement: a PlaceVM is legal only if the VM's last
    placement is the same host or was cleared by a ReleaseVMs of that host."""

    def __init__(self, placed: dict[str, str]) -> None:
        self.placed: dict[str, str | None] = dict(placed)
        self.violations: list[str] = []
        self.replaced: list[tuple[str, str]] = []

    def see(self, actions: Iterable[m.Action]) -> None:
        for a in actions:
            if isinstance(a, m.ReleaseVMs):
                for v in a.vms:
                    if self.placed.get(v) == a.host:
                        self.placed[v] = None
            elif isinstance(a, m.PlaceVM):
                cur = self.placed.get(a.vm)
                if cur not in (None, a.host):
                    self.violations.append(f"{a.vm} placed on {a.host} while on {cur}")
                self.placed[a.vm] = a.host
                self.replaced.append((a.vm, a.host))


@dataclass
class Driver:
    """Feeds the engine, times the core, answers its BMC/SSH actions on the sim clock."""

    engine: Engine
    check: PlacementCheck
    cpu: float = 0.0
    calls: int = 0
    actions: int = 0
    power: dict[str, str] = field(default_factory=dict)
    queue: list[tuple[float, int, m.Input]] = field(default_factory=list)
    seq: itertools.count[int] = field(default_factory=itertools.count)
    on_proof: Callable[[str, float], None] | None = None
    now: float = 0.0  # the simulated clock

    def core(self, fn: Callable[[], list[m.Action]]) -> list[m.Action]:
        t0 = time.process_time()
        out = fn()
        self.cpu += time.process_time() - t0
        self.calls += 1
        self.actions += len(out)
        self.check.see(out)
        self.respond(out)
        return out

    def handle(self, ev: m.Input) -> list[m.Action]:
        return self.core(lambda: self.engine.handle(ev))

    def tick(self, now: float) -> None:
        self.core(lambda: self.engine.tick(now))
        t0 = time.process_time()
        self.engine.next_deadline(now)
        self.cpu += time.process_time() - t0

    def later(self, at: float, ev: m.Input) -> None:
        heapq.heappush(self.queue, (at, next(self.seq), ev))

    def respond(self, actions: list[m.Action]) -> None:
        for a in actions:
            if isinstance(a, m.CheckPower):
                self.later(self.now + FENCE_STEP, m.PowerStatusResult(0, a.host, a.op_id, "on"))
            elif isinstance(a, m.SoftFence):
                self.later(
                    self.now + SOFT_FENCE,
                    m.SoftFenceResult(0, a.host, a.op_id, False, "ssh: connection timed out"),
                )
            elif isinstance(a, m.RunFenceStep):
                if a.operation != "status":
                    self.power[a.host] = a.operation
                state = self.power.get(a.host, "on")
                results = {ag: AgentResult(state) for ag in a.agents}  # type: ignore[arg-type]
                self.later(self.now + FENCE_STEP, m.FenceStepResult(0, a.host, a.op_id, results))

    def run_due(self, now: float) -> None:
        self.now = now
        while self.queue and self.queue[0][0] <= now:
            at, _, ev = heapq.heappop(self.queue)
            self.now = at
            ev = ev.__class__(**{**ev.__dict__, "now": at})
            proof = isinstance(ev, m.FenceStepResult) and self._is_verify_off(ev)
            cpu0 = self.cpu
            self.handle(ev)
            if proof and self.on_proof is not None:
                assert isinstance(ev, m.FenceStepResult)
                self.on_proof(ev.host, self.cpu - cpu0)
        self.now = now

    def _is_verify_off(self, ev: m.FenceStepResult) -> bool:
        rec = self.engine.hosts.get(ev.host)
        return (
            rec is not None
            and rec.step == "verify"
            and rec.op_id == ev.op_id
            and all(r.power == "off" for r in ev.results.values())
        )


def load(lay: Layout, settings: Settings, placed: bool) -> tuple[Engine, float, PlacementCheck]:
    """Observe everything (as an operator restart does); CPU seconds to the first tick.
    ``placed``: the VMs carry their persisted placement (restore); else the core places
    all of them."""
    engine = Engine(settings)
    check = PlacementCheck(lay.vm_host if placed else {})
    t0 = time.process_time()
    now = 0.0
    engine.handle(m.OperatorStarted(now))
    for h in lay.hosts:
        engine.handle(m.HostObserved(now, h, host_spec(lay.cluster_of[h])))
        engine.handle(m.FenceAgentObserved(now, f"{h}-ipmi", agent_spec(h)))
    for i, h in enumerate(lay.hosts):
        engine.handle(m.LeaseObserved(now, h, now - (i % 1000) * RENEW / 1000, LEASE, "b1"))
    for i, (vm, h) in enumerate(lay.vm_host.items()):
        status = None
        if placed:
            status = HAVirtualMachineStatus(
                phase="Running",
                host=h,
                placement_epoch=1,
                last_host=h,
                runtime=RuntimeStatus(host=h, state="Running", placement_epoch=1),
            )
        check.see(engine.handle(m.VMObserved(now, vm, vm_spec(lay.cluster_of[h], i), status)))
    check.see(engine.tick(now))
    return engine, time.process_time() - t0, check


@dataclass
class Run:
    load_restore: float
    load_fresh: float
    steady_pct: float
    long_pct: float
    long_writes: float
    last_proof_to_placed: float
    all_proofs: float
    replaced: int
    expected: int
    violations: list[str]
    sim_failure_to_placed: float


def one_run(args: argparse.Namespace) -> Run:
    lay = layout(args.hosts, args.clusters, args.vms, args.rack)
    settings = Settings(max_concurrent_fences=args.max_fences)
    _, load_fresh, fresh_check = load(lay, settings, placed=False)
    assert len(fresh_check.replaced) == args.vms, "fresh load: not every VM was placed"
    engine, load_restore, check = load(lay, settings, placed=True)
    drv = Driver(engine, check)
    offsets = {h: (i % 1000) * RENEW / 1000 for i, h in enumerate(lay.hosts)}
    renewals: list[tuple[float, str]] = []
    for h, off in offsets.items():
        t = off + RENEW
        while t < args.warmup + max(args.steady, args.long) + 900:
            renewals.append((t, h))
            t += RENEW
    renewals.sort()
    dead: set[str] = set()
    pos = 0

    def advance(to: float) -> None:
        nonlocal pos
        t = drv.now
        while t < to:
            t = min(t + TICK, to)
            while pos < len(renewals) and renewals[pos][0] <= t:
                at, h = renewals[pos]
                pos += 1
                if h not in dead:
                    drv.now = at
                    drv.run_due(at)
                    drv.handle(m.LeaseObserved(at, h, at, LEASE, "b1"))
            drv.run_due(t)
            drv.tick(t)

    # Steady state, measured after a warm-up (the start-up quiet period, and the load's
    # own status writes are followed by the first round of periodic heartbeat writes).
    advance(args.warmup)
    cpu0, actions0 = drv.cpu, drv.actions
    advance(args.warmup + args.steady)
    steady_cpu = drv.cpu - cpu0
    # Host.status heartbeat writes come every ~heartbeat_status_interval + one renewal
    # per host, so one minute may see about half of them: the long window averages.
    if args.long > args.steady:
        advance(args.warmup + args.long)
    long_cpu = drv.cpu - cpu0
    long_writes = (drv.actions - actions0) / max(args.long, args.steady)

    # The rack hangs.
    rack = set(lay.rack)
    rack_vms = {v for v, h in lay.vm_host.items() if h in rack}
    proofs: dict[str, float] = {}  # host -> core seconds of handling its "verify off"
    unplaced_after: dict[str, int] = {}  # host -> its VMs not yet placed after that

    def on_proof(host: str, secs: float) -> None:
        proofs[host] = secs
        mine = [v for v, h in lay.vm_host.items() if h == host]
        unplaced_after[host] = sum(1 for v in mine if check.placed.get(v) in (None, host))

    drv.on_proof = on_proof
    failed_at = drv.now
    dead.update(rack)
    placed_at: float | None = None
    while placed_at is None and drv.now < failed_at + 900:
        advance(drv.now + TICK)
        moved = {v for v in rack_vms if check.placed.get(v) not in (None, *rack)}
        if moved == rack_vms:
            placed_at = drv.now
    last_host = next(reversed(proofs)) if proofs else None
    if last_host is not None and unplaced_after[last_host]:
        # Not all placed by the proof's own handling: count up to the end instead.
        proofs[last_host] = float("nan")
    return Run(
        load_restore=load_restore,
        load_fresh=load_fresh,
        steady_pct=100.0 * steady_cpu / args.steady,
        long_pct=100.0 * long_cpu / max(args.long, args.steady),
        long_writes=long_writes,
        last_proof_to_placed=proofs[last_host] if last_host else float("nan"),
        all_proofs=sum(proofs.values()),
        replaced=len([1 for v, _ in check.replaced if v in rack_vms]),
        expected=len(rack_vms),
        violations=check.violations,
        sim_failure_to_placed=(placed_at - failed_at) if placed_at is not None else float("nan"),
    )


def fmt(values: list[float], unit: str, scale: float = 1.0, digits: int = 1) -> str:
    vs = [v * scale for v in values]
    return f"{statistics.median(vs):.{digits}f} {unit} ({min(vs):.{digits}f}-{max(vs):.{digits}f})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--hosts", type=int, default=1000)
    p.add_argument("--clusters", type=int, default=20)
    p.add_argument("--vms", type=int, default=10000)
    p.add_argument("--rack", type=int, default=50)
    p.add_argument("--steady", type=float, default=60.0, help="simulated seconds measured")
    p.add_argument("--long", type=float, default=300.0, help="simulated seconds, long window")
    p.add_argument("--warmup", type=float, default=60.0, help="simulated seconds before")
    p.add_argument("--max-fences", type=int, default=50, help="Settings.max_concurrent_fences")
    args = p.parse_args(argv)
    runs = [one_run(args) for _ in range(args.runs)]
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    py = platform.python_version()
    cores = os.cpu_count()
    rows: list[tuple[str, Any]] = [
        (
            "load, operator restart (all objects observed, VMs placed) to first tick",
            fmt([r.load_restore for r in runs], "s", digits=2),
        ),
        (
            f"load, fresh (the core places all {args.vms} VMs)",
            fmt([r.load_fresh for r in runs], "s", digits=2),
        ),
        (
            f"steady core CPU, {args.steady:g} simulated s after {args.warmup:g} s of warm-up "
            "(% of one core)",
            fmt([r.steady_pct for r in runs], "%", digits=2),
        ),
        (
            f"steady core CPU over {max(args.long, args.steady):g} simulated s (% of one core)",
            fmt([r.long_pct for r in runs], "%", digits=2),
        ),
        (
            f"steady core actions per simulated second over {max(args.long, args.steady):g} s "
            "(all Host.status heartbeat writes)",
            fmt([r.long_writes for r in runs], "/s", digits=1),
        ),
        (
            "rack: core time from the last fence result to all its VMs placed",
            fmt([r.last_proof_to_placed for r in runs], "ms", 1000.0),
        ),
        (
            f"rack: core time of all {args.rack} proofs (releases + placements)",
            fmt([r.all_proofs for r in runs], "ms", 1000.0),
        ),
        (
            "rack: VMs re-placed / VMs on the rack",
            " ; ".join(f"{r.replaced}/{r.expected}" for r in runs),
        ),
        (
            "rack: simulated time from the hang to all VMs placed",
            fmt([r.sim_failure_to_placed for r in runs], "s", digits=1),
        ),
        ("VMs with two placements at once", " ; ".join(str(len(r.violations)) for r in runs)),
    ]
    cmd = "bench/scale_core.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(
        f"`.venv/bin/python {cmd.strip()}` — {stamp}, {platform.machine()}, {cores} cores "
        f"(nproc), Python {py}, runs={args.runs}, median (min-max)\n"
    )
    print("| figure | value |")
    print("|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    bad = [v for r in runs for v in r.violations]
    if bad or any(r.replaced != r.expected for r in runs):
        print("\nFAILED:", bad[:5], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
