"""Time to recovery in the lab: real agents, BMCs, sshd and operator on this machine.

    .venv/bin/python bench/ttr.py [--runs 3] [--profile lab|production|both]
                                  [--scenario NAME ...] [--hosts N] [--vm-driver process|libvirt]
                                  [--json FILE]

Runs each scenario ``--runs`` times in one lab per profile (``--hosts`` virtual hosts;
default 3, or 5 with rack-failure) and prints, per scenario, the median and min-max of each step:

    detection            fault → the host seen Connecting
    grace                Connecting → SoftFencing (the configured connecting grace)
    soft fence           SoftFencing → heartbeat back (agent-crash) or NonResponsive
    fence                NonResponsive → power off verified (Rebooting)
    release → running    host proven off (Rebooting / ManuallyFenced) → HA VM process
                         running on another host
    confirm → running    the user's confirmation → HA VM process running elsewhere
    total                fault → HA VM running elsewhere (agent-crash: heartbeat back)

and the operator's overhead per step: the time beyond what the configured timeouts
allowed (detection: beyond the lease's expiry, from its renewTime; grace: beyond the
connecting grace; steps with no configured wait count whole).  "production" runs the
operator with its shipped defaults and the agents with their default 10 s lease; the
quiet period after start-up is waited out once, before the first fault.

The oVirt article's datacenter and its three experiments (``hafence lab --scenario
seed``): ``--hosts 2 --profile production --scenario agent-crash --scenario network-cut
--scenario power-loss``.

It prints figures; it asserts nothing (tests never time anything).
"""

from __future__ import annotations

import argparse
import json
import platform
import signal
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from hafence.lab.results import ScenarioResult
from hafence.lab.runner import Lab, LabConfig, LabError
from hafence.lab.scenarios import SCENARIOS, recover, run

ORDER = ("agent-crash", "network-cut", "power-loss", "rack-failure", "kernel-crash")
STEPS = ("detection", "grace", "soft_fence", "fence", "release_to_running",
         "confirm_to_running", "total")  # fmt: skip
LABELS = {
    "detection": "detection",
    "grace": "grace",
    "soft_fence": "soft fence",
    "fence": "fence",
    "release_to_running": "release→running",
    "confirm_to_running": "confirm→running",
    "total": "total",
}


def _stat(values: list[float]) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.2f}"
    return f"{med:.2f} ({min(values):.2f}..{max(values):.2f})"


def table(title: str, results: list[ScenarioResult], key: str) -> str:
    names = [n for n in ORDER if any(r.scenario == n for r in results)]
    rows: list[list[str]] = []
    for name in names:
        rs = [r for r in results if r.scenario == name]
        row = [name, f"{sum(r.ok for r in rs)}/{len(rs)}"]
        for step in STEPS:
            vals = [
                v
                for r in rs
                if (v := (r.steps() if key == "steps" else r.overheads()).get(step)) is not None
            ]
            row.append(_stat(vals))
        rows.append(row)
    head = ["scenario", "ok", *(LABELS[s] for s in STEPS)]
    widths = [max(len(c) for c in col) for col in zip(head, *rows, strict=False)]
    out = [f"{title} (seconds: median (min-max))"]
    out.append("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def bench(
    profile: str, scenarios: list[str], runs: int, hosts: int, vm_driver: str = "process"
) -> tuple[list[ScenarioResult], Lab]:
    results: list[ScenarioResult] = []
    log = open(Path(f"/tmp/hafence-ttr-{profile}.log"), "w")  # noqa: SIM115 - closed below
    config = LabConfig(hosts=hosts, profile=profile, out=log, spinner=False, vm_driver=vm_driver)
    try:
        with Lab(config) as lab:
            for i in range(runs):
                for name in scenarios:
                    print(f"  [{profile}] run {i + 1}/{runs}: {name} ...", end="", flush=True)
                    t = time.monotonic()
                    result = run(lab, name)
                    results.append(result)
                    print(f" {'ok' if result.ok else 'FAILED'} ({time.monotonic() - t:.0f}s)")
                    if not result.ok:
                        for c in result.checks:
                            if not c.ok:
                                print(f"      check failed: {c.name}: {c.detail}")
                        if result.error:
                            print(f"      {result.error}")
                    recover(lab, result)
    finally:
        log.close()
    return results, lab


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    # SIGTERM (and SIGINT even in the background) unwind through the labs' cleanup.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    p = argparse.ArgumentParser(prog="bench/ttr.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--profile", default="both", choices=["lab", "production", "both"])
    p.add_argument("--scenario", action="append", choices=ORDER)
    p.add_argument(
        "--hosts", type=int, help="virtual hosts (default 3; 5 with rack-failure; at least 2)"
    )
    p.add_argument(
        "--vm-driver",
        default="process",
        choices=["process", "libvirt"],
        help="libvirt: real qemu VMs (the lab's --vm-driver)",
    )
    p.add_argument("--json", type=Path, help="also write every result as JSON here")
    p.add_argument("--from-json", type=Path, help="print the tables of a saved --json run")
    args = p.parse_args(argv)
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        for profile, items in saved.items():
            results = [ScenarioResult.from_json(d) for d in items]
            print(f"\n## profile {profile} (from {args.from_json})")
            print(table("time per step", results, "steps"))
            print()
            print(table("operator overhead beyond the configured timeouts", results, "overheads"))
        return 0
    scenarios = args.scenario or list(ORDER)
    need = max(SCENARIOS[s].min_hosts for s in scenarios)
    hosts = args.hosts if args.hosts is not None else max(3, need)
    if hosts < need:
        p.error(f"--hosts {hosts}: {', '.join(scenarios)} needs at least {need} hosts")
    profiles = ["lab", "production"] if args.profile == "both" else [args.profile]
    print(
        f"# bench/ttr.py — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}"
    )
    print(f"# command: bench/ttr.py {' '.join(argv)}".rstrip())
    dump: dict[str, Any] = {}
    for profile in profiles:
        try:
            results, lab = bench(profile, scenarios, args.runs, hosts, args.vm_driver)
        except LabError as exc:
            print(f"\n{profile}: the lab failed: {exc}")
            return 1
        pol = lab.policy
        print(
            f"\n## profile {profile}, {hosts} hosts, {args.vm_driver} VMs: agent lease "
            f"{lab.config.agent_lease}s, connecting "
            f"grace {pol.connecting_grace:g}s (+{pol.connecting_grace_per_vm:g}/VM, max "
            f"{pol.connecting_grace_max:g}), soft fence timeout {pol.soft_fence_timeout:g}s"
        )
        print(table("time per step", results, "steps"))
        print()
        print(table("operator overhead beyond the configured timeouts", results, "overheads"))
        dump[profile] = [r.to_json() for r in results]
    if args.json:
        args.json.write_text(json.dumps(dump, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
