"""Host agent at idle: heartbeat write rate, API writes, CPU and RSS with 20 VMs.

Starts its own control plane (etcd + kube-apiserver on loopback), one Host, N process
VMs (``sleep``) placed on it, and a real ``hafence agent``.  Once every VM reports
Running it watches, from a second client, every write to the heartbeat Lease and to
the VMs during a window, and samples the agent's CPU time and RSS from /proc.

    .venv/bin/python bench/agent_idle.py [--vms 20] [--seconds 60] [--lease-duration 10]

Prints a Markdown block for bench/README.md ("Host agent").  A figure, not a test.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import watch

from hafence.agent.process import kill_all
from hafence.kube import Api, load_api
from hafence.lab.controlplane import ControlPlane

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def count_events(
    stop: threading.Event, counts: dict[str, int], key: str, fn: Any, *args: Any, **kwargs: Any
) -> None:
    w = watch.Watch()
    try:
        for event in w.stream(fn, *args, timeout_seconds=600, **kwargs):
            if stop.is_set():
                break
            if event["type"] == "MODIFIED":
                counts[key] += 1
    except Exception:
        if not stop.is_set():  # the control plane going away at the end is expected
            raise
    finally:
        w.stop()


def wait_running(api: Api, ns: str, n: int, timeout: float = 120) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        items = api.list("HAVirtualMachine", ns)["items"]
        running = [
            i
            for i in items
            if ((i.get("status") or {}).get("runtime") or {}).get("state") == "Running"
        ]
        if len(running) == n:
            return time.monotonic() - start
        time.sleep(0.1)
    raise SystemExit(f"only some of {n} VMs reached Running within {timeout}s")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vms", type=int, default=20)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--lease-duration", type=int, default=10)
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="hafence-bench-agent-"))
    state = work / "state"
    with ControlPlane() as cp:
        cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        cp.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        api = load_api(str(cp.kubeconfig))
        ns = "bench"
        api.core.create_namespace({"metadata": {"name": ns}})
        api.create(
            "Host",
            ns,
            {
                "metadata": {"name": "h1"},
                "spec": {
                    "address": "127.0.0.1",
                    "cluster": "bench",
                    "capacity": {"cpu": 64, "memoryMiB": 65536},
                    "selfFencing": {"enabled": True, "watchdogTimeoutSeconds": 60},
                },
            },
        )
        for i in range(args.vms):
            name = f"vm{i:02d}"
            api.create(
                "HAVirtualMachine",
                ns,
                {
                    "metadata": {"name": name},
                    "spec": {
                        "placement": {"cluster": "bench"},
                        "runtime": {
                            "driver": "process",
                            "process": {"command": ["/bin/sleep", "100000"]},
                        },
                    },
                },
            )
            api.patch(
                "HAVirtualMachine",
                ns,
                name,
                {"status": {"host": "h1", "placementEpoch": 1}},
                status=True,
            )
        log = open(work / "agent.log", "wb")  # noqa: SIM115 - the agent's stdout
        t0 = time.monotonic()
        agent = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hafence",
                "agent",
                "--host",
                "h1",
                "--namespace",
                ns,
                "--kubeconfig",
                str(cp.kubeconfig),
                "--enable-process-driver",
                "--state-dir",
                str(state),
                "--lease-duration",
                str(args.lease_duration),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_running(api, ns, args.vms)
            to_running = time.monotonic() - t0
            time.sleep(2)  # let the start-up writes settle before the window
            counts = {"lease": 0, "vm": 0}
            stop = threading.Event()
            watcher_api = load_api(str(cp.kubeconfig))
            threads = [
                threading.Thread(
                    target=count_events,
                    daemon=True,
                    args=(
                        stop,
                        counts,
                        "lease",
                        watcher_api.coordination.list_namespaced_lease,
                        ns,
                    ),
                ),
                threading.Thread(
                    target=count_events,
                    daemon=True,
                    args=(
                        stop,
                        counts,
                        "vm",
                        watcher_api.custom.list_namespaced_custom_object,
                        "hafence.io",
                        "v1alpha1",
                        ns,
                        "havirtualmachines",
                    ),
                ),
            ]
            for t in threads:
                t.start()
            time.sleep(1)
            c0, w0 = cpu_seconds(agent.pid), time.monotonic()
            base = dict(counts)
            rss = []
            while time.monotonic() - w0 < args.seconds:
                time.sleep(1)
                rss.append(rss_mib(agent.pid))
            c1, w1 = cpu_seconds(agent.pid), time.monotonic()
            lease_writes = counts["lease"] - base["lease"]
            vm_writes = counts["vm"] - base["vm"]
            stop.set()
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=30)
            killed = kill_all(state)
            log.close()
        window = w1 - w0
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        print(
            f"`{' '.join(['bench/agent_idle.py', *sys.argv[1:]])}` — {when}, "
            f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        )
        print()
        print("| figure | value |")
        print("|---|---|")
        print(
            f"| VMs placed / running / killed at the end | {args.vms} / {args.vms} / "
            f"{len(killed)} |"
        )
        print(f"| agent process start to all VMs reported Running | {to_running:.2f} s |")
        print(
            f"| lease duration / renew interval | {args.lease_duration} s / "
            f"{args.lease_duration / 3:.2f} s |"
        )
        print(
            f"| heartbeat Lease writes | {lease_writes} in {window:.0f} s = "
            f"{lease_writes / window:.3f}/s |"
        )
        print(f"| HAVirtualMachine writes at idle | {vm_writes} in {window:.0f} s |")
        print(f"| agent CPU at idle | {100 * (c1 - c0) / window:.2f} % of one core |")
        print(f"| agent RSS | {min(rss):.1f} to {max(rss):.1f} MiB |")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
