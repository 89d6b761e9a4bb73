"""`hafence lab`: a datacenter on this machine, and failures played out in it.

    hafence lab [--scenario agent-crash|network-cut|power-loss|rack-failure|kernel-crash|all|seed]
                [--hosts N] [--profile lab|production] [--output text|json]
                [--kubeconfig PATH | --use-current-cluster] [--repeat N]

Starts (or uses) a cluster, installs the CRDs, creates N virtual hosts (agent, BMC,
SSH, network path of their own) with their Hosts, FenceAgents, Secrets and VMs, runs
the operator as a subprocess, then the scenarios one after another, printing a
timeline and a summary.  Ctrl-C stops every process it started and removes its
temporary files.  Exit code: 0 if every check of every scenario passed, 1 if one
failed, 2 for bad flags, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from hafence.lab.datacenter import FENCE_TYPES
from hafence.lab.results import ScenarioResult
from hafence.lab.runner import Lab, LabConfig, LabError
from hafence.lab.scenarios import SCENARIOS, recover, run

ORDER = ("agent-crash", "network-cut", "power-loss", "rack-failure", "kernel-crash")
# The oVirt article's three experiments, on its datacenter: two hosts, an iLO each,
# production timings unless --profile says otherwise.
SEED = ("agent-crash", "network-cut", "power-loss")
GROUPS = {"all": ORDER, "seed": SEED}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hafence lab", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--scenario",
        default="all",
        choices=[*ORDER, *GROUPS],
        help="what to break (default: all, one after another; seed: the oVirt article's "
        "three experiments on two hosts at production timings)",
    )
    p.add_argument(
        "--hosts", type=int, help="virtual hosts (default 3; 5 with rack-failure; 2 with seed)"
    )
    p.add_argument(
        "--fence-type",
        choices=FENCE_TYPES,
        default="ipmilan",
        help="each host's power management: an IPMI BMC (default), an iLO2 (RIBCL over "
        "TLS, the oVirt article's options) or two APC PDUs feeding its two power supplies",
    )
    p.add_argument(
        "--profile",
        choices=["lab", "production"],
        help="the operator's timing profile; lab: seconds (default), "
        "production: the shipped defaults (default with seed)",
    )
    cluster = p.add_mutually_exclusive_group()
    cluster.add_argument("--kubeconfig", type=Path, help="use this cluster instead of a local one")
    cluster.add_argument(
        "--use-current-cluster",
        action="store_true",
        help="use the cluster of $KUBECONFIG / ~/.kube/config",
    )
    p.add_argument("--namespace", help="namespace to create (default hafence-lab-<random>)")
    p.add_argument(
        "--keep-namespace",
        action="store_true",
        help="with --kubeconfig/--use-current-cluster: leave the namespace "
        "(and its resources) behind for inspection instead of deleting it",
    )
    p.add_argument(
        "--lease-duration",
        type=int,
        help="agents' lease duration in seconds (default 3 lab, 10 production)",
    )
    p.add_argument(
        "--vm-driver",
        default="process",
        choices=["process", "libvirt"],
        help="the lab's VMs: processes (default), or qemu domains with a libvirt "
        "daemon per virtual host and disks on a shared directory (root, Debian's "
        "libvirt-daemon and qemu-system-x86)",
    )
    p.add_argument("--repeat", type=int, default=1, help="run the scenarios N times")
    p.add_argument(
        "--output",
        default="text",
        choices=["text", "json"],
        help="json: the timeline goes to stderr, one JSON document to stdout",
    )
    p.add_argument(
        "--operator-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra flag for `hafence operator` (repeatable), "
        "e.g. --operator-arg=--policy=soft_fence_timeout=10",
    )
    return p


def _kubeconfig(args: argparse.Namespace) -> Path | None:
    if args.kubeconfig:
        if not args.kubeconfig.is_file():
            raise LabError(f"--kubeconfig {str(args.kubeconfig)!r}: no such file")
        return Path(args.kubeconfig)
    if args.use_current_cluster:
        path = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or os.path.expanduser(
            "~/.kube/config"
        )
        if not Path(path).is_file():
            raise LabError(f"--use-current-cluster: no kubeconfig at {path!r} ($KUBECONFIG)")
        return Path(path)
    return None


def scenarios_for(name: str) -> list[str]:
    return list(GROUPS.get(name, (name,)))


def hosts_for(names: list[str], requested: int | None, seed: bool = False) -> int:
    need = max(SCENARIOS[n].min_hosts for n in names)
    if requested is None:
        return need if seed else max(3, need)
    short = [n for n in names if SCENARIOS[n].min_hosts > requested]
    if short:
        why = (
            "two racks of two and one more host"
            if need > 2
            else "one to fail and one to take its VMs"
        )
        raise LabError(
            f"--hosts {requested}: {', '.join(short)} needs at least {need} hosts ({why})"
        )
    return requested


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}s"


def summary_table(results: list[ScenarioResult]) -> str:
    cols = (
        "scenario",
        "result",
        "hosts",
        "detect",
        "soft fence",
        "fence",
        "→running",
        "total",
        "power actions",
    )
    rows = []
    for r in results:
        st = r.steps()
        acts = "; ".join(f"{h}: {' '.join(a)}" for h, a in r.bmc_actions.items() if a) or "none"
        failed = sum(not c.ok for c in r.checks) + (r.error is not None)
        rows.append(
            (
                r.scenario,
                "PASS" if r.ok else f"FAIL ({failed})",
                ",".join(r.victims),
                _fmt(st["detection"]),
                _fmt(st["soft_fence"]),
                _fmt(st["fence"]),
                _fmt(
                    st["confirm_to_running"]
                    if st["confirm_to_running"] is not None
                    else st["release_to_running"]
                ),
                _fmt(st["total"]),
                acts,
            )
        )
    widths = [max(len(str(x)) for x in col) for col in zip(cols, *rows, strict=False)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    out = sys.stderr if args.output == "json" else sys.stdout
    try:
        if args.repeat < 1:
            raise LabError(f"--repeat {args.repeat!r}: must be at least 1")
        if args.lease_duration is not None and args.lease_duration < 3:
            raise LabError(f"--lease-duration {args.lease_duration!r}: at least 3 seconds")
        names = scenarios_for(args.scenario)
        config = LabConfig(
            hosts=hosts_for(names, args.hosts, seed=args.scenario == "seed"),
            profile=args.profile or ("production" if args.scenario == "seed" else "lab"),
            kubeconfig=_kubeconfig(args),
            namespace=args.namespace,
            lease_duration=args.lease_duration,
            operator_args=list(args.operator_arg),
            keep_namespace=args.keep_namespace,
            out=out,
            fence_type=args.fence_type,
            vm_driver=args.vm_driver,
        )
    except LabError as exc:
        print(f"hafence lab: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # also when started in the background
    results: list[ScenarioResult] = []
    try:
        with Lab(config) as lab:
            try:
                for _ in range(args.repeat):
                    for name in names:
                        result = run(lab, name)
                        results.append(result)
                        recover(lab, result)
            except LabError as exc:
                # The log goes with the lab's temp files: show it while it exists.
                print(
                    f"hafence lab: {exc}\noperator log (last lines):\n"
                    f"{lab.log_tail('operator.log')}",
                    file=sys.stderr,
                )
            if results:
                out.write("\n" + summary_table(results) + "\n")
            if args.output == "json":
                doc: dict[str, Any] = {
                    "namespace": lab.namespace,
                    "profile": config.profile,
                    "hosts": config.hosts,
                    "results": [r.to_json() for r in results],
                    "timeline": lab.timeline.to_json(),
                    "ok": bool(results) and all(r.ok for r in results),
                }
                json.dump(doc, sys.stdout, indent=2)
                sys.stdout.write("\n")
    except KeyboardInterrupt:
        print("\nhafence lab: interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    except LabError as exc:
        print(f"hafence lab: {exc}", file=sys.stderr)
        return 1
    ran_all = len(results) == len(names) * args.repeat
    return 0 if ran_all and all(r.ok for r in results) else 1
