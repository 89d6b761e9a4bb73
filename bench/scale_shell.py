"""The operator as it runs, at the design's scale: a real API server, the real
``hafence operator`` process, N Hosts with a FenceAgent each and 10 x N HA VMs.

Starts its own control plane (etcd + kube-apiserver on loopback), creates the Hosts
(clusters of ``--cluster-size``), one IPMI FenceAgent per Host, ``--vms-per-host`` HA
VMs per Host already placed and reported Running (as an operator restart finds a
datacenter), then the load generator (``hafence.lab.loadgen``: every host's agent on
the wire -- Lease renewals, its Host read, its VM list and watch, runtime reports) and
the operator (production profile, power-management health checks off).  Once every
Host is Up and the operator's start-up writes are over, it measures a steady window:
the operator's CPU (% of one core) and RSS from /proc, API requests per second by
verb and resource from the API server's own ``/metrics`` (apiserver_request_total),
and the operator's share of them (the load generator counts its own).

Then a rack of ``--rack`` Hosts (spread over the clusters, as racks are) loses power:
their leases stop and their simulated IPMI BMCs (real RMCP+ on UDP, lab/bmc.py, all in
this process) answer "off".  From the fault it prints per Host (median / max):
detection (Host Connecting), fence start (Fencing), fence result (Rebooting: off
verified), all its VMs placed elsewhere, all of them reported Running by their new
hosts; and the time from the last fence result until every VM's placement is
written and until the new hosts report them Running, and the Events written.  A
fenced host powered on again boots (its agent returns with a new boot ID).

    .venv/bin/python bench/scale_shell.py [--hosts 1000] [--vms-per-host 10] [--rack 50]
        [--cluster-size 50] [--warmup 20] [--steady 60] [--operator-arg=--policy=K=V]
        [--py-spy stacks.txt]

Prints a Markdown block for bench/README.md ("Scale (shell)").  A figure, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hafence.lab.bmc import BmcFarm
from hafence.lab.controlplane import ControlPlane, free_port
from hafence.lab.loadgen import HOSTS, LEASES, VMS, Wire

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
NS = "scale"
LEADER_NS = "hafence-system"
BMC_USER = "admin"
BMC_PASSWORD = "bench-password"
WRITES = ("POST", "PUT", "PATCH", "DELETE", "APPLY")
# The API server's own requests (its kubernetes Service endpoints) and discovery.
NOT_OURS = ("", "endpoints")
CLOSED_UDP_PORT = 9  # discard: FenceAgents of hosts that never fail are never asked


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of ``pid``, by thread id."""
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / TICKS
    return out


def thread_names(pid: int) -> dict[int, str]:
    """Python's names of the threads of ``pid`` (py-spy dump; empty without py-spy):
    Python 3.11 does not name its threads for the kernel."""
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        return {}
    dump = subprocess.run(
        [str(spy), "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30
    )
    found = re.findall(r'^Thread (0x[0-9a-fA-F]+|\d+) \([^)]*\): "([^"]*)"', dump.stdout, re.M)
    return {int(tid, 0): re.sub(r"[_-]?\d+$", "", name) for tid, name in found}


def threads_pct(
    pid: int, before: dict[int, float], after: dict[int, float], window: float
) -> dict[str, float]:
    """% of one core per Python thread name (a pool's threads summed) over a window."""
    names = thread_names(pid)
    out: dict[str, float] = defaultdict(float)
    for tid, cpu in after.items():
        out[names.get(tid, "?")] += 100 * (cpu - before.get(tid, 0.0)) / window
    return {n: round(v, 2) for n, v in sorted(out.items(), key=lambda kv: -kv[1]) if v >= 0.05}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Layout:
    hosts: list[str]
    cluster_of: dict[str, str]
    vm_host: dict[str, str]
    rack: list[str]


def layout(n_hosts: int, per_host: int, rack: int, cluster_size: int) -> Layout:
    hosts = [f"h{i:04d}" for i in range(n_hosts)]
    clusters = max(1, n_hosts // cluster_size)
    cluster_of = {h: f"c{i % clusters:02d}" for i, h in enumerate(hosts)}
    vm_host = {f"vm{i * per_host + j:05d}": h for i, h in enumerate(hosts) for j in range(per_host)}
    # A rack spreads over the clusters (a cluster is a failure domain that survives a
    # rack): hosts are dealt to clusters in turn, so the first ``rack`` hosts are 2-3
    # per cluster of 50 at 1,000 hosts (25 of each cluster at 100).
    return Layout(hosts, cluster_of, vm_host, hosts[:rack])


async def gather_bounded(n: int, jobs: Iterable[Callable[[], Any]]) -> None:
    sem = asyncio.Semaphore(n)

    async def one(job: Callable[[], Any]) -> None:
        async with sem:
            await job()

    await asyncio.gather(*(one(j) for j in jobs))


async def must(wire: Wire, verb: str, path: str, body: Any, ctype: str = "application/json") -> Any:
    for attempt in range(5):
        status, obj = await wire.call(verb, path, body=body, content_type=ctype, deadline=60)
        if status < 300:
            return obj
        if status not in (429, 500, 503, 504) or attempt == 4:
            raise RuntimeError(f"{verb} {path}: {status} {obj}")
        await asyncio.sleep(0.5 * 2**attempt)
    return None


async def populate(
    wire: Wire, lay: Layout, bmc_ports: dict[str, int], vm_res: dict[str, int]
) -> None:
    await must(
        wire,
        "POST",
        f"/api/v1/namespaces/{NS}/secrets",
        {
            "metadata": {"name": "bmc"},
            "stringData": {"username": BMC_USER, "password": BMC_PASSWORD},
        },
    )
    capacity = {"cpu": 4096, "memoryMiB": 4096 * 1024}

    def host(h: str) -> Callable[[], Any]:
        return lambda: must(
            wire,
            "POST",
            HOSTS.format(ns=NS),
            {
                "apiVersion": "hafence.io/v1alpha1",
                "kind": "Host",
                "metadata": {"name": h},
                "spec": {
                    "address": "127.0.0.1",
                    "cluster": lay.cluster_of[h],
                    "capacity": capacity,
                },
            },
        )

    def agent(h: str) -> Callable[[], Any]:
        return lambda: must(
            wire,
            "POST",
            f"/apis/hafence.io/v1alpha1/namespaces/{NS}/fenceagents",
            {
                "apiVersion": "hafence.io/v1alpha1",
                "kind": "FenceAgent",
                "metadata": {"name": f"{h}-ipmi"},
                "spec": {
                    "hostRef": {"name": h},
                    "type": "ipmilan",
                    "address": "127.0.0.1",
                    "port": bmc_ports.get(h, CLOSED_UDP_PORT),
                    "options": "lanplus=1",
                    "credentialsSecretRef": {"name": "bmc"},
                    "timeoutSeconds": 5,
                    "powerWaitSeconds": 1,
                },
            },
        )

    async def vm(name: str, h: str) -> None:
        await must(
            wire,
            "POST",
            VMS.format(ns=NS),
            {
                "apiVersion": "hafence.io/v1alpha1",
                "kind": "HAVirtualMachine",
                "metadata": {"name": name},
                "spec": {
                    "placement": {"cluster": lay.cluster_of[h]},
                    "resources": vm_res,
                    "runtime": {"driver": "process", "process": {"command": ["/bin/sleep", "1d"]}},
                },
            },
        )
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        await must(
            wire,
            "PATCH",
            f"{VMS.format(ns=NS)}/{name}/status",
            {
                "status": {
                    "phase": "Running",
                    "host": h,
                    "lastHost": h,
                    "placementEpoch": 1,
                    "runtime": {
                        "host": h,
                        "state": "Running",
                        "placementEpoch": 1,
                        "restarts": 0,
                        "pid": 4242,
                        "updatedTime": now,
                    },
                }
            },
            "application/merge-patch+json",
        )

    await gather_bounded(32, [host(h) for h in lay.hosts] + [agent(h) for h in lay.hosts])
    await gather_bounded(
        32,
        [(lambda n=n, h=h: vm(n, h)) for n, h in lay.vm_host.items()],  # type: ignore[misc]
    )


_METRIC = re.compile(r"^apiserver_request_total\{([^}]*)\} ([0-9.e+]+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def operator_ticks(port: int) -> float:
    """hafence_monitor_ticks_total from the operator's own /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith("hafence_monitor_ticks_total "):
            return float(line.split()[1])
    return 0.0


async def apiserver_requests(wire: Wire) -> Counter[str]:
    """apiserver_request_total summed by "VERB resource[/subresource]"."""
    async with wire.session().get(wire.server + "/metrics") as resp:
        text = await resp.text()
    out: Counter[str] = Counter()
    for line in text.splitlines():
        m = _METRIC.match(line)
        if not m:
            continue
        labels = dict(_LABEL.findall(m.group(1)))
        res = labels.get("resource", "") + (
            "/" + labels["subresource"] if labels.get("subresource") else ""
        )
        out[f"{labels.get('verb', '?')} {res}"] += int(float(m.group(2)))
    return out


class Loadgen:
    """The load generator process and its JSON-lines control."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def ask(self, msg: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        await self.proc.stdin.drain()
        line = await self.proc.stdout.readline()
        if not line:
            raise SystemExit("the load generator ended")
        answer: dict[str, Any] = json.loads(line)
        return answer


@dataclass
class Observer:
    """Host phases and VM placements as a watch delivers them, stamped on arrival."""

    wire: Wire
    phases: dict[str, list[tuple[float, str]]] = field(default_factory=lambda: defaultdict(list))
    # Host -> phase -> the core's own time of that transition (status.phaseSince): how
    # much of what the watch shows late is the writes', not the decision's.
    decided: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    vms: dict[str, dict[str, Any]] = field(default_factory=dict)
    placed_at: dict[str, float] = field(default_factory=dict)  # VM -> left its rack host
    running_at: dict[str, float] = field(default_factory=dict)  # VM -> Running elsewhere
    watch_from: dict[str, str] = field(default_factory=dict)
    rack_vms: dict[str, str] = field(default_factory=dict)  # VM -> its rack host

    async def start(self) -> list[asyncio.Task[None]]:
        for kind, path in (("Host", HOSTS), ("VM", VMS)):
            _, listed = await self.wire.call("GET", path.format(ns=NS), deadline=120)
            for obj in listed["items"]:
                self._seen(kind, obj)
            self.watch_from[kind] = listed["metadata"]["resourceVersion"]
        return [asyncio.create_task(self._watch(k, p)) for k, p in (("Host", HOSTS), ("VM", VMS))]

    async def _watch(self, kind: str, path: str) -> None:
        while True:

            def on(event: dict[str, Any]) -> None:
                obj = event["object"]
                self.watch_from[kind] = obj["metadata"]["resourceVersion"]
                self._seen(kind, obj)

            try:
                await self.wire.watch(
                    path.format(ns=NS),
                    {"resourceVersion": self.watch_from[kind], "timeoutSeconds": "600"},
                    on,
                )
            except Exception as exc:
                print(f"# observer watch of {kind} ended: {exc}", file=sys.stderr)
                await asyncio.sleep(0.5)

    def _seen(self, kind: str, obj: dict[str, Any]) -> None:
        now = time.time()
        name = obj["metadata"]["name"]
        status = obj.get("status") or {}
        if kind == "Host":
            phase = status.get("phase") or ""
            seen = self.phases[name]
            if not seen or seen[-1][1] != phase:
                seen.append((now, phase))
                since = status.get("phaseSince")
                if since:
                    self.decided[name][phase] = datetime.fromisoformat(since).timestamp()
            return
        self.vms[name] = obj
        was = self.rack_vms.get(name)
        if was is None:
            return
        host = status.get("host")
        if host and host != was and name not in self.placed_at:
            self.placed_at[name] = now
        rt = status.get("runtime") or {}
        if (
            host
            and host != was
            and rt.get("host") == host
            and rt.get("state") == "Running"
            and rt.get("placementEpoch") == status.get("placementEpoch")
            and name not in self.running_at
        ):
            self.running_at[name] = now

    def first(self, host: str, phase: str, after: float) -> float | None:
        return next((t for t, p in self.phases.get(host, []) if p == phase and t >= after), None)

    def all_up(self, hosts: Iterable[str]) -> bool:
        return all((self.phases.get(h) or [(0, "")])[-1][1] == "Up" for h in hosts)


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} / {max(values):.2f} s"


async def wait_for(pred: Callable[[], bool], within: float, what: str) -> float:
    start = time.monotonic()
    while not pred():
        if time.monotonic() - start > within:
            raise SystemExit(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(0.2)
    return time.monotonic() - start


async def requests_now(wire: Wire, loadgen: Loadgen) -> tuple[Counter[str], dict[str, Any]]:
    """The API server's request counts and the load generator's, read at once: read one
    after the other, the second lagged by the first's ~0.5 s at 1,000 hosts, 150 of
    300 renewals a second counted as the operator's."""
    server, stats = await asyncio.gather(apiserver_requests(wire), loadgen.ask({"cmd": "stats"}))
    return server, stats


async def quiet_writes(wire: Wire, loadgen: Loadgen, limit: float, within: float) -> float:
    """Wait until the operator's writes fall below ``limit``/s over 5 s (start-up over)."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        a, la = await requests_now(wire, loadgen)
        await asyncio.sleep(5)
        b, lb = await requests_now(wire, loadgen)
        ops = operator_share(a, b, la["requests"], lb["requests"])
        if sum(v for k, v in ops.items() if k.split()[0] in WRITES) / 5 <= limit:
            return time.monotonic() - start
    return time.monotonic() - start


# The agents' 300 renewals a second: their difference from the load generator's count
# is noise of +-10/s under load (the server counts a request when done, the load
# generator when sent), larger than the operator's one Lease, counted on a watch instead.
AGENTS_ONLY = ("PUT leases",)


async def leader_writes(wire: Wire, done: asyncio.Event) -> int:
    """Writes of the operator's leader Lease (the only Lease it writes) until ``done``,
    counted on a watch of its namespace."""
    path = LEASES.format(ns=LEADER_NS)
    _, listed = await wire.call("GET", path)
    seen = 0

    def on(event: dict[str, Any]) -> None:
        nonlocal seen
        seen += event.get("type") in ("ADDED", "MODIFIED")

    query = {"resourceVersion": listed["metadata"]["resourceVersion"], "timeoutSeconds": "600"}
    watch = asyncio.create_task(wire.watch(path, query, on))
    await done.wait()
    watch.cancel()
    await asyncio.gather(watch, return_exceptions=True)
    return seen


def operator_share(
    before: Counter[str], after: Counter[str], lg_before: dict[str, int], lg_after: dict[str, int]
) -> Counter[str]:
    """API requests in a window minus the load generator's own (the rest is the
    operator's and this script's few reads); the agents' kinds of request left out."""
    out: Counter[str] = Counter()
    for key in set(after) | set(lg_after):
        if key.split(" ", 1)[1].split("/")[0] in NOT_OURS or key in AGENTS_ONLY:
            continue
        total = after.get(key, 0) - before.get(key, 0)
        lg = lg_after.get(key, 0) - lg_before.get(key, 0)
        if total - lg > 0:
            out[key] = total - lg
    return out


async def bench(args: argparse.Namespace, cp: ControlPlane, work: Path) -> list[str]:
    lines: list[str] = []
    lay = layout(args.hosts, args.vms_per_host, args.rack, args.cluster_size)
    wire = Wire(cp.kubeconfig, connections=32)
    loop = asyncio.get_running_loop()
    for ns in (NS, LEADER_NS):
        await must(wire, "POST", "/api/v1/namespaces", {"metadata": {"name": ns}})

    farm = BmcFarm()
    fault_mono = math.inf  # no command is "after the fault" until there is one
    power_on: dict[str, float] = {}
    power_off: dict[str, float] = {}
    booted: list[str] = []

    def on_change(host: str) -> Callable[[str], None]:
        def changed(state: str) -> None:
            when = time.time()
            (power_on if state == "on" else power_off).setdefault(host, when)
            if state == "on":
                loop.call_soon_threadsafe(booted.append, host)

        return changed

    for h in lay.rack:
        farm.add(h, BMC_USER, BMC_PASSWORD, on_power_change=on_change(h))
    bmc_ports = {h: farm[h].port for h in lay.rack}

    t0 = time.monotonic()
    await populate(wire, lay, bmc_ports, {"cpu": 2, "memoryMiB": 4096})
    t_populate = time.monotonic() - t0

    lg_proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hafence.lab.loadgen",
        "--kubeconfig",
        str(cp.kubeconfig),
        "--namespace",
        NS,
        "--hosts",
        ",".join(lay.hosts),
        "--lease-duration",
        str(args.lease_duration),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=open(work / "loadgen.log", "wb"),  # noqa: SIM115, ASYNC230 - the child's
    )
    loadgen = Loadgen(lg_proc)
    assert lg_proc.stdout is not None
    await lg_proc.stdout.readline()  # {"started": N}

    async def leases_ready() -> int:
        _, listed = await wire.call("GET", LEASES.format(ns=NS), deadline=60)
        return sum(
            1
            for i in listed["items"]
            if (i["metadata"].get("annotations") or {}).get("hafence.io/ready") == "true"
        )

    start = time.monotonic()
    while await leases_ready() < len(lay.hosts):
        if time.monotonic() - start > 300:
            raise SystemExit("the load generator's leases did not all become ready")
        await asyncio.sleep(1)

    metrics_port = free_port()
    op_log = open(work / "operator.log", "wb")  # noqa: SIM115, ASYNC230 - the child's
    operator = subprocess.Popen(  # noqa: ASYNC220 - started once, its pid is what we read
        [
            sys.executable,
            "-m",
            "hafence",
            "operator",
            "--kubeconfig",
            str(cp.kubeconfig),
            "--namespace",
            NS,
            "--leader-lease-namespace",
            LEADER_NS,
            "--metrics-bind-address",
            f"127.0.0.1:{metrics_port}",
            "--pm-health-interval",
            "0",
            *args.operator_arg,
        ],
        stdout=op_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        obs = Observer(wire)
        tasks = await obs.start()
        t_start = time.monotonic()
        to_up = await wait_for(lambda: obs.all_up(lay.hosts), 600, "every Host Up")
        settle = await quiet_writes(wire, loadgen, max(1.0, args.hosts / 100), 300)
        t_ready = time.monotonic() - t_start
        await asyncio.sleep(args.warmup)

        # -- steady window ------------------------------------------------------------
        window_over = asyncio.Event()
        leader = asyncio.create_task(leader_writes(wire, window_over))
        a0, l0 = await requests_now(wire, loadgen)
        c0, w0 = cpu_seconds(operator.pid), time.monotonic()
        k0, t0 = operator_ticks(metrics_port), thread_cpu(operator.pid)
        api_pid = cp.apiserver.pid if cp.apiserver else None
        etcd_pid = cp.etcd.pid if cp.etcd else None
        others = {
            n: (p, cpu_seconds(p))
            for n, p in (("kube-apiserver", api_pid), ("etcd", etcd_pid), ("loadgen", lg_proc.pid))
            if p
        }
        rss = []
        while time.monotonic() - w0 < args.steady:
            await asyncio.sleep(1)
            rss.append(rss_mib(operator.pid))
        c1, w1 = cpu_seconds(operator.pid), time.monotonic()
        k1, t1 = operator_ticks(metrics_port), thread_cpu(operator.pid)
        a1, l1 = await requests_now(wire, loadgen)
        window_over.set()
        if args.py_spy:  # after the window: the sampler's own cost stays out of it
            await profile(operator.pid, args.steady, args.py_spy)
        window = w1 - w0
        other_cpu = {n: 100 * (cpu_seconds(p) - c) / window for n, (p, c) in others.items()}
        ops = operator_share(a0, a1, l0["requests"], l1["requests"])
        ops["PUT leases"] = await leader
        total = Counter({k: a1[k] - a0.get(k, 0) for k in a1 if a1[k] - a0.get(k, 0) > 0})
        op_writes = sum(v for k, v in ops.items() if k.split()[0] in WRITES)

        print(  # a run stopped during the rack still leaves its steady figures
            "# steady: "
            + json.dumps(
                {
                    "operator_cpu_pct": round(100 * (c1 - c0) / window, 2),
                    "operator_rss_mib": max(rss),
                    "operator_ticks_per_s": round((k1 - k0) / window, 2),
                    "operator_threads_pct": threads_pct(operator.pid, t0, t1, window),
                    "operator_writes_per_s": round(op_writes / window, 3),
                    "operator": {k: round(v / window, 3) for k, v in ops.items()},
                    "beside": other_cpu,
                    "loadgen_errors": l1["errors"],
                }
            ),
            file=sys.stderr,
            flush=True,
        )

        # -- the rack loses power -----------------------------------------------------
        for vm, h in lay.vm_host.items():
            if h in set(lay.rack):
                obs.rack_vms[vm] = h
        events0 = await count_events(wire)
        a2 = await apiserver_requests(wire)
        fault = time.time()
        fault_mono = time.monotonic()
        for h in lay.rack:
            farm[h].set_power("off")
        power_off.clear()
        await loadgen.ask({"cmd": "fail", "hosts": lay.rack})
        n_rack_vms = len(obs.rack_vms)
        try:
            await wait_for(
                lambda: len(obs.running_at) >= n_rack_vms,
                args.rack_timeout,
                "the rack's VMs Running",
            )
        except SystemExit as exc:  # print what was reached: that is the finding
            print(f"# {exc}", file=sys.stderr)
        # Powered on by the fence: those hosts boot (their agents return, empty).
        if booted:
            await loadgen.ask({"cmd": "boot", "hosts": sorted(set(booted))})
        await asyncio.sleep(2)
        a3 = await apiserver_requests(wire)
        events1 = await count_events(wire)
        for t in tasks:
            t.cancel()
    finally:
        operator.send_signal(signal.SIGTERM)
        try:
            operator.wait(timeout=30)
        except subprocess.TimeoutExpired:
            operator.kill()
        op_log.close()
        try:
            await loadgen.ask({"cmd": "quit"})
        except (SystemExit, BrokenPipeError, ConnectionResetError):
            pass
        try:
            await asyncio.wait_for(lg_proc.wait(), 20)
        except TimeoutError:
            lg_proc.kill()
        # What the simulated BMCs answered (they all share pyghmi's one I/O thread in
        # this process: a farm gone deaf fails every fence, which is not the operator's).
        answered = [a.time - fault_mono for h in lay.rack for a in farm[h].actions]
        answered = [t for t in answered if t >= 0]
        farm.close()
        await wire.close()

    # -- figures ------------------------------------------------------------------------
    def rel(t: float | None) -> float | None:
        return None if t is None else t - fault

    per: dict[str, list[float]] = defaultdict(list)
    proofs = []
    for h in lay.rack:
        for label, phase in (
            ("detect", "Connecting"),
            ("fencing", "Fencing"),
            ("proof", "Rebooting"),
        ):
            t = rel(obs.first(h, phase, fault))
            if t is not None:
                per[label].append(t)
                decided = obs.decided[h].get(phase)
                if decided is not None and decided >= fault:
                    per[label + " decided"].append(decided - fault)
                if label == "proof":
                    proofs.append(t + fault)
        mine = [v for v, hh in obs.rack_vms.items() if hh == h]
        placed = [obs.placed_at[v] for v in mine if v in obs.placed_at]
        running = [obs.running_at[v] for v in mine if v in obs.running_at]
        if len(placed) == len(mine):
            per["placed"].append(max(placed) - fault)
        if len(running) == len(mine):
            per["running"].append(max(running) - fault)
    last_proof = max(proofs) if proofs else fault
    last_placed = max(obs.placed_at.values(), default=fault)
    last_running = max(obs.running_at.values(), default=fault)
    rack_ops = Counter({k: a3[k] - a2.get(k, 0) for k in a3 if a3[k] - a2.get(k, 0) > 0})

    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    cmd = " ".join(["bench/scale_shell.py", *sys.argv[1:]])
    lines.append(
        f"Command: `.venv/bin/python {cmd}` — {when}, {platform.machine()}, "
        f"{os.cpu_count()} cores (shared), Python {platform.python_version()}"
    )
    lines.append("")
    lines.append(
        f"{len(lay.hosts)} Hosts in {len(set(lay.cluster_of.values()))} clusters, "
        f"{len(lay.vm_host)} HA VMs, rack of {len(lay.rack)} Hosts ({n_rack_vms} VMs), "
        f"agent lease {args.lease_duration} s"
    )
    lines.append("")
    lines.append("| figure | value |")
    lines.append("|---|---|")
    lines.append(f"| set-up: objects created | {t_populate:.0f} s |")
    lines.append(
        "| operator start to every Host Up / start-up writes over | "
        f"{to_up:.1f} s / {t_ready:.1f} s (settle {settle:.0f} s) |"
    )
    lines.append(f"| steady window | {window:.0f} s after {args.warmup:.0f} s warm-up |")
    lines.append(f"| **operator CPU, steady** | **{100 * (c1 - c0) / window:.1f} % of one core** |")
    lg_errors = {k: v for k, v in l1["errors"].items() if v - l0["errors"].get(k, 0) > 0}
    lines.append(
        f"| load generator, steady | {(l1['renewals'] - l0['renewals']) / window:.1f} renewals/s"
        f" of {len(lay.hosts) / (args.lease_duration / 3):.1f} due; errors: "
        + (", ".join(f"{k} {v - l0['errors'].get(k, 0)}" for k, v in lg_errors.items()) or "none")
        + " |"
    )
    lines.append(f"| **operator RSS, steady** | **{min(rss):.0f}-{max(rss):.0f} MiB** |")
    lines.append(
        "| CPU beside it, steady | "
        + ", ".join(f"{n} {v:.0f} %" for n, v in other_cpu.items())
        + " |"
    )
    lines.append(
        f"| **operator writes, steady** | **{op_writes / window:.2f}/s** "
        f"({op_writes / window / (len(lay.hosts) / 100):.2f}/s per 100 hosts): "
        + ", ".join(
            f"{k} {v / window:.2f}" for k, v in sorted(ops.items()) if k.split()[0] in WRITES
        )
        + " |"
    )
    lines.append(
        "| operator reads, steady | "
        + (
            ", ".join(
                f"{k} {v / window:.2f}/s"
                for k, v in sorted(ops.items())
                if k.split()[0] not in WRITES
            )
            or "none"
        )
        + " |"
    )
    lines.append(
        "| API requests/s, steady, all clients | "
        + ", ".join(f"{k} {v / window:.1f}" for k, v in sorted(total.items()) if v / window >= 0.05)
        + " |"
    )
    lines.append(
        f"| rack: detection (Connecting), median / max from the fault | {fmt(per['detect'])} |"
    )
    lines.append(f"| rack: fence started (Fencing) | {fmt(per['fencing'])} |")
    lines.append(f"| rack: fence result (Rebooting: off verified) | {fmt(per['proof'])} |")
    lines.append(
        "| rack: the same three as the core decided them (status.phaseSince) | "
        f"{fmt(per['detect decided'])} ; {fmt(per['fencing decided'])} ; "
        f"{fmt(per['proof decided'])} |"
    )
    lines.append(f"| rack: all of a host's VMs placed elsewhere | {fmt(per['placed'])} |")
    lines.append(f"| rack: all of a host's VMs Running elsewhere | {fmt(per['running'])} |")
    lines.append(
        f"| **rack: last fence result to every VM placed / Running** | "
        f"**{last_placed - last_proof:.2f} s** / {last_running - last_proof:.2f} s "
        f"({len(obs.placed_at)}/{n_rack_vms} placed, {len(obs.running_at)} Running) |"
    )
    lines.append(
        f"| rack: Events written | {events1[0] - events0[0]} objects "
        f"({events1[1] - events0[1]} occurrences) |"
    )
    lines.append(
        "| rack: API writes, fault to +2 s after all Running | "
        + ", ".join(f"{k} {v}" for k, v in sorted(rack_ops.items()) if k.split()[0] in WRITES)
        + " |"
    )
    lines.append(
        f"| rack: simulated BMCs, power commands received after the fault | {len(answered)}"
        + (f", the last at +{max(answered):.1f} s" if answered else "")
        + " |"
    )
    log_text = (work / "operator.log").read_text(errors="replace")
    relisted = sum(
        int(m.group(1))
        for m in re.finditer(r"(\d+) lease renewal\(s\) in \S+ not delivered", log_text)
    )
    # An expected stand-down (the bench stopping the operator) is logged at INFO.
    lost = len(re.findall(r" WARNING hafence\.controller\.leader: \S+ stopped leading ", log_text))
    lines.append(
        f"| operator log: leadership lost | {lost} times; "
        f"lease renewals the watch had not delivered, fed from a re-list: {relisted} |"
    )
    return lines


async def count_events(wire: Wire) -> tuple[int, int]:
    _, listed = await wire.call("GET", f"/api/v1/namespaces/{NS}/events", deadline=60)
    items = listed.get("items", [])
    return len(items), sum(int(i.get("count") or 1) for i in items)


async def profile(pid: int, seconds: float, out: Path) -> None:
    """py-spy's collapsed stacks of the steady operator (``--py-spy``)."""
    spy = Path(sys.executable).with_name("py-spy")
    proc = await asyncio.create_subprocess_exec(
        str(spy),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(int(seconds)),
        "--format",
        "raw",
        "--rate",
        "200",
        "--gil",  # only the thread holding the GIL: where the CPU goes, not who waits
        "--output",
        str(out),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    await proc.wait()
    print(f"# py-spy: collapsed stacks of {seconds:.0f} s in {out}", file=sys.stderr)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hosts", type=int, default=1000)
    p.add_argument("--vms-per-host", type=int, default=10)
    p.add_argument("--rack", type=int, default=50)
    p.add_argument("--cluster-size", type=int, default=50)
    p.add_argument("--lease-duration", type=int, default=10)
    p.add_argument("--warmup", type=float, default=20.0)
    p.add_argument("--steady", type=float, default=60.0)
    p.add_argument("--rack-timeout", type=float, default=300.0)
    p.add_argument(
        "--py-spy",
        type=Path,
        help="after the steady window, record the operator's stacks for as long into "
        "this file (py-spy's collapsed format; pip install py-spy)",
    )
    p.add_argument(
        "--operator-arg", action="append", default=[], help="passed to `hafence operator`"
    )
    args = p.parse_args()

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # unwind: the control plane, operator and BMCs stop

    signal.signal(signal.SIGTERM, stop)
    work = Path(tempfile.mkdtemp(prefix="hafence-bench-scale-"))
    with ControlPlane(log_dir=work) as cp:
        cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        cp.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        lines = asyncio.run(bench(args, cp, work))
    print("\n".join(lines))
    print(f"\n(logs in {work})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
