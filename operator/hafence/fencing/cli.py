"""``hafence fence-agent test NAME -n NS``: oVirt's Test button.

Resolves the FenceAgent and its Secret from the cluster, runs ``status`` through the
driver, prints the power state, and records the result in the FenceAgent's status
(:mod:`hafence.fencing.agent_status`: lastTestTime, lastTestResult, powerState, message,
the ``Reachable`` condition), and says what became of each option: unknown to the agent,
ignored, or translated (:mod:`hafence.fencing.metadata`), also as the ``OptionsValid``
condition.  Exit code 0 when the device answered, 1 when it did not, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from hafence.fencing.agent_status import run_test
from hafence.fencing.errors import FenceError
from hafence.kube import KubeError, load_api


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hafence fence-agent")
    sub = parser.add_subparsers(dest="command", required=True)
    test = sub.add_parser("test", help="run status through the agent and record the result")
    test.add_argument("name")
    test.add_argument("-n", "--namespace", required=True)
    test.add_argument("--kubeconfig")
    args = parser.parse_args(argv)
    api = load_api(args.kubeconfig)
    report: list[str] = []
    try:
        outcome = asyncio.run(run_test(api, args.namespace, args.name, report))
    except KubeError as exc:
        print(f"hafence fence-agent test: {exc}", file=sys.stderr)
        return 1
    finally:
        api.close()
    for line in report:
        print(f"{args.name}: {line}")
    if isinstance(outcome, FenceError):
        print(f"{args.name}: FAILED: {type(outcome).__name__}: {outcome}", file=sys.stderr)
        return 1
    print(f"{args.name}: power {outcome.power_state} ({outcome.elapsed:.2f}s)")
    return 0
