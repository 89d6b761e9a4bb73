"""The fault lab: real parts with a fault proxy on every path to the API server.

A :class:`~hafence.lab.runner.Lab` of three virtual hosts -- real agents, VM processes,
simulated IPMI BMCs over UDP, sshd -- whose operator reaches the API server only through
a :class:`~hafence.lab.faultproxy.FaultProxy` of its own (each agent's path is one too,
``lab.dc.hosts[name].forwarder``).  Beside it, what the cases judge by:

- the lab's split-brain checker: every 100 ms, the real VM processes by their
  ``HAFENCE_VM`` marker; a VM in two processes at once is a violation;
- :class:`History`: every version of every Host and HAVirtualMachine, from watches on
  the admin path (never faulted), judged in resourceVersion order: a VM's *holder*
  (``status.lastHost``, else ``status.host``: the host that may run it) changes only
  after that host's proof of power off, or after its agent reported the VM Stopped or
  Failed for the current placement (S1);
- :class:`Tally`: faults injected per kind and what came of them, for the issue's note.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hafence.kube import Api, load_api
from hafence.lab.bmc import SimulatedBmc
from hafence.lab.faultproxy import FaultProxy
from hafence.lab.netcut import server_of
from hafence.lab.runner import Lab, LabConfig

PROVEN = ("Rebooting", "ManuallyFenced", "SelfFenced")
RELEASED_BY_AGENT = ("Stopped", "Failed")


def holder(status: dict[str, Any]) -> str | None:
    """The host that may run the VM (the core's VMRecord.holder as persisted)."""
    return status.get("lastHost") or status.get("host")


@dataclass(frozen=True)
class Version:
    rv: int
    kind: str
    name: str
    status: dict[str, Any]
    spec: dict[str, Any]


class History:
    """List+watch of Hosts and HAVirtualMachines; every version, in order."""

    KINDS = ("Host", "HAVirtualMachine")

    def __init__(self, kubeconfig: str, namespace: str) -> None:
        self.kubeconfig, self.namespace = kubeconfig, namespace
        self._lock = threading.Lock()
        self._versions: dict[tuple[str, str, int], Version] = {}
        self._stop = threading.Event()
        self._primed = {k: threading.Event() for k in self.KINDS}
        self._threads = [
            threading.Thread(target=self._loop, args=(k,), daemon=True) for k in self.KINDS
        ]
        for t in self._threads:
            t.start()
        for ev in self._primed.values():
            ev.wait(30)

    def close(self) -> None:
        # The threads may sit in a watch read (up to its 5 s timeout): daemons, they
        # end with it; nothing waits for them.
        self._stop.set()

    def _add(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        v = Version(
            int(meta.get("resourceVersion") or 0),
            kind,
            str(meta.get("name")),
            obj.get("status") or {},
            obj.get("spec") or {},
        )
        with self._lock:
            self._versions[(kind, v.name, v.rv)] = v

    def _loop(self, kind: str) -> None:
        api = load_api(self.kubeconfig)
        try:
            while not self._stop.is_set():
                try:
                    listing = api.list(kind, self.namespace)
                    for obj in listing.get("items", []):
                        self._add(kind, obj)
                    self._primed[kind].set()
                    rv = listing["metadata"]["resourceVersion"]
                    for ev in api.watch(kind, self.namespace, rv, timeout_seconds=5):
                        if self._stop.is_set():
                            return
                        if ev.get("type") in ("ADDED", "MODIFIED"):
                            self._add(kind, ev["object"])
                except Exception:
                    if self._stop.wait(0.2):
                        return
        finally:
            api.close()

    def versions(self) -> list[Version]:
        with self._lock:
            return sorted(self._versions.values(), key=lambda v: v.rv)

    def of(self, kind: str, name: str, since: int = 0) -> list[Version]:
        return [v for v in self.versions() if v.kind == kind and v.name == name and v.rv > since]

    def last_rv(self) -> int:
        vs = self.versions()
        return vs[-1].rv if vs else 0

    # -- judgements --------------------------------------------------------------------
    def unproven_moves(self) -> list[str]:
        """Every change of a VM's holder not preceded by its old host's proof or by its
        agent's Stopped/Failed report for the current placement epoch (S1)."""
        hosts: dict[str, dict[str, Any]] = {}
        vms: dict[str, dict[str, Any]] = {}
        out = []
        for v in self.versions():
            if v.kind == "Host":
                hosts[v.name] = v.status
                continue
            before = vms.get(v.name)
            vms[v.name] = v.status
            if before is None:
                continue
            old, new = holder(before), holder(v.status)
            if old is None or new == old:
                continue
            h = hosts.get(old, {})
            proven = (h.get("fencing") or {}).get("proof") is not None or h.get("phase") in PROVEN
            epoch = int(before.get("placementEpoch") or 0)
            reported = any(
                rt.get("host") == old
                and rt.get("state") in RELEASED_BY_AGENT
                and int(rt.get("placementEpoch") or 0) >= epoch
                for rt in (before.get("runtime") or {}, v.status.get("runtime") or {})
            )
            if not (proven or reported):
                out.append(
                    f"{v.name} (rv {v.rv}) left {old} for {new} without proof: host {h}, "
                    f"runtime {before.get('runtime')}"
                )
        return out

    def moves(self, since: int = 0) -> int:
        count, last = 0, dict[str, str | None]()
        for v in self.versions():
            if v.kind != "HAVirtualMachine":
                continue
            old = last.get(v.name)
            last[v.name] = holder(v.status)
            if v.rv > since and old is not None and holder(v.status) != old:
                count += 1
        return count

    def steps(self, host: str, since: int) -> list[tuple[str, str | None, str | None]]:
        """(phase, fencing.lastAction, fencing.lastResult) the Host went through."""
        out: list[tuple[str, str | None, str | None]] = []
        for v in self.of("Host", host, since):
            f = v.status.get("fencing") or {}
            pair = (str(v.status.get("phase")), f.get("lastAction"), f.get("lastResult"))
            if not out or out[-1] != pair:
                out.append(pair)
        return out


@dataclass
class Tally:
    """Faults injected per kind, and the counts the issue's note reports."""

    faults: Counter[str] = field(default_factory=Counter)
    cases: list[str] = field(default_factory=list)
    steps_entered: int = 0
    steps_stuck: int = 0
    writes_failed: int = 0  # "status not written" in the operator's log, re-issued
    # Failed and never landed: a case converges only if its proof, placements and
    # reports landed (it fails otherwise), so a passing module counts 0.
    writes_lost: int = 0
    moves: int = 0

    def report(self, two_hosts: int, unproven: int) -> str:
        lines = [f"  {kind}: {n}" for kind, n in sorted(self.faults.items())]
        return "\n".join(
            [
                "fault lab tally:",
                *lines,
                f"  steps entered {self.steps_entered}, stuck {self.steps_stuck}",
                f"  operator writes failed and re-issued {self.writes_failed}, "
                f"lost {self.writes_lost}",
                f"  VM moves {self.moves}, without proof {unproven}, VMs on two hosts {two_hosts}",
                *(f"  case: {c}" for c in self.cases),
            ]
        )


@dataclass
class FaultLab:
    lab: Lab
    proxy: FaultProxy  # the operator's path
    history: History
    tally: Tally
    tmp: Path

    @property
    def api(self) -> Api:
        assert self.lab.api is not None
        return self.lab.api

    @property
    def namespace(self) -> str:
        return self.lab.namespace

    def host(self, name: str) -> dict[str, Any]:
        return self.api.get("Host", self.namespace, name).get("status") or {}

    def vm(self, name: str) -> dict[str, Any]:
        return self.api.get("HAVirtualMachine", self.namespace, name).get("status") or {}

    def bmc(self, name: str) -> SimulatedBmc:
        assert self.lab.dc is not None
        return self.lab.dc.farm[name]

    def agent_proxy(self, name: str) -> FaultProxy:
        assert self.lab.dc is not None
        return self.lab.dc.hosts[name].forwarder

    def operator_log(self) -> str:
        return (self.lab.workdir / "operator.log").read_text(errors="replace")

    def agent_log(self, name: str) -> str:
        assert self.lab.dc is not None
        return self.lab.dc.hosts[name].agent_log.read_text(errors="replace")

    def wait(self, what: str, pred: Callable[[], Any], timeout: float = 60) -> Any:
        return self.lab.wait_for(what, pred, timeout)

    def up(self) -> list[str]:
        assert self.lab.watchers is not None
        return sorted(h for h, p in self.lab.watchers.host_phase.items() if p == "Up")

    def settled(self) -> bool:
        """Every HA VM Running in exactly one process, on the host it is placed on,
        which is Up (a host fenced by an earlier case may still be booting)."""
        assert self.lab.watchers is not None and self.lab.checker is not None
        procs = self.lab.checker.running()
        up = self.up()
        return all(
            phase == "Running" and host in up and procs.get(name) == [host]
            for name, (phase, host) in self.lab.watchers.vm_state.items()
            if name.startswith("ha-")
        )

    def victim(self) -> tuple[str, list[str]]:
        """Once settled: an Up host running HA VMs (the one with most), with another
        Up host to take them; and its HA VMs."""

        def pick() -> tuple[str, list[str]] | None:
            if not self.settled():
                return None
            up = self.up()
            ranked = sorted(
                ((sorted(n for n, ha in self.lab.vms_on(h).items() if ha), h) for h in up),
                key=lambda t: (-len(t[0]), t[1]),
            )
            if len(up) < 2 or not ranked or not ranked[0][0]:
                return None
            return ranked[0][1], ranked[0][0]

        found: tuple[str, list[str]] = self.wait("a victim and a host to take its VMs", pick, 90)
        return found

    def two_hosts(self) -> list[str]:
        assert self.lab.checker is not None
        return [v.describe() for v in self.lab.checker.violations]

    def check_safety(self) -> None:
        assert self.two_hosts() == [], self.two_hosts()
        assert self.history.unproven_moves() == [], self.history.unproven_moves()

    def fence(self, victim: str, vms: list[str], case: str, log_start: int, rv0: int) -> None:
        """Wait for the fence of ``victim`` to complete and the lab to settle, then
        judge: every step left, every VM moved with proof, the writes landed."""
        assert self.lab.checker is not None
        checker = self.lab.checker

        def elsewhere() -> bool:
            running = checker.running()
            return all(running.get(n) and victim not in running[n] for n in vms)

        self.wait(f"{victim}'s HA VMs running elsewhere", elsewhere, 120)

        def powered_on() -> bool:
            steps = self.history.steps(victim, rv0)
            if any(a == "on" and (r or "").startswith("ok") for _, a, r in steps):
                return True
            # A host that boots fast renews with its new boot ID before the "on" step's
            # own result is in: the core ends the outage on the boot ID (the power-on is
            # moot) and never writes on:ok.
            proven = any(p in PROVEN for p, _, _ in steps)
            up = self.host(victim).get("phase") == "Up"
            return proven and up and self.bmc(victim).power == "on"

        # The fence completes with the power-on; the host then boots (a new boot ID)
        # while the next case runs: it needs an Up host, not this one.
        self.wait(f"{victim} powered on again", powered_on, 60)
        self.wait("the VMs settled", self.settled, 60)
        self.check_safety()
        steps = self.history.steps(victim, rv0)
        self.record(case, steps, log_start, rv0)
        assert any(p in PROVEN for p, _, _ in steps), steps
        for n in vms:
            st = self.vm(n)
            assert st["host"] != victim and st["phase"] == "Running", st

    def record(
        self, case: str, steps: list[tuple[str, str | None, str | None]], log_start: int, rv0: int
    ) -> None:
        entered = sum(1 for _, action, result in steps if action and result == "pending")
        stuck = 1 if steps and steps[-1][2] == "pending" else 0
        failed = self.operator_log()[log_start:].count("status not written")
        moves = self.history.moves(rv0)
        self.tally.steps_entered += entered
        self.tally.steps_stuck += stuck
        self.tally.writes_failed += failed
        self.tally.moves += moves
        story = " -> ".join(f"{p}/{a or '-'}:{(r or '-')[:24]}" for p, a, r in steps)
        self.tally.cases.append(
            f"{case}: {entered} steps, {failed} writes re-issued, {moves} moves; {story}"
        )


def start(kubeconfig: str, tmp: Path) -> Iterator[FaultLab]:
    proxy = FaultProxy(*server_of(Path(kubeconfig)), name="operator")
    cfg = proxy.kubeconfig(Path(kubeconfig), tmp / "operator.kubeconfig")
    lab = Lab(
        LabConfig(
            hosts=3,
            kubeconfig=Path(kubeconfig),
            out=sys.stdout,
            spinner=False,
            operator_kubeconfig=cfg,
            # A VM may take its time to stop: the stop-report case holds one in its
            # SIGTERM handler while the operator takes in the spec changes.
            agent_stop_grace=15.0,
            # The leader lease outlasts every fault here: these cases are about
            # fencing and writes, not failover (tests/operator/test_hard_fencing.py).
            # No power-management checks: they would take the BMC cues meant for
            # the fence.
            operator_args=[
                "--leader-lease-duration",
                "30",
                "--leader-renew-deadline",
                "20",
                "--pm-health-interval",
                "0",
            ],
        )
    )
    history: History | None = None
    tally = Tally()
    try:
        lab.start()
        assert lab.api is not None
        # Cheaper fences than the lab's (every case fences once): no soft fence first
        # (tests/e2e has it, over the lab's sshd), and the old fault test's BMC timings.
        for obj in lab.api.list("Host", lab.namespace)["items"]:
            lab.patch_host(obj["metadata"]["name"], {"spec": {"ssh": None}})
        for obj in lab.api.list("FenceAgent", lab.namespace)["items"]:
            lab.api.patch(
                "FenceAgent",
                lab.namespace,
                obj["metadata"]["name"],
                {"spec": {"timeoutSeconds": 3, "powerWaitSeconds": 3}},
            )
        history = History(kubeconfig, lab.namespace)
        yield FaultLab(lab, proxy, history, tally, tmp)
    finally:
        unproven = history.unproven_moves() if history is not None else []
        two = [v.describe() for v in lab.checker.violations] if lab.checker else []
        print(tally.report(len(two), len(unproven)))
        if lab.operator is not None and lab.operator.poll() is None:
            print("\n--- operator log (tail) ---\n" + lab.log_tail("operator.log", 60))
        if history is not None:
            history.close()
        lab.close()
        proxy.close()


def wait_file(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.01)
    return False
