"""``hafence fence-agent test NAME -n NS``: oVirt's Test button.

Resolves the FenceAgent and its Secret from the cluster, runs ``status`` through the
driver, prints the power state, and records the result in the FenceAgent's status
(lastTestTime, lastTestResult, powerState, message, a ``Reachable`` condition), and
says what became of each option: unknown to the agent, ignored, or translated
(:mod:`hafence.fencing.metadata`), also as the ``OptionsValid`` condition.
Exit code 0 when the device answered, 1 when it did not, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from typing import Any

from hafence.fencing.errors import FenceError
from hafence.fencing.metadata import (
    OPTIONS_CONDITION,
    OptionsReport,
    options_condition,
    options_report,
)
from hafence.fencing.protocol import FenceResult
from hafence.fencing.resolve import resolve_agent
from hafence.kube import Api, KubeError, load_api


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_status_patch(
    current: dict[str, Any],
    outcome: FenceResult | FenceError,
    generation: int | None,
    options: OptionsReport | None = None,
) -> dict[str, Any]:
    """The status merge patch for one test, keeping other conditions and transition times."""
    now = _now()
    if isinstance(outcome, FenceResult):
        ok, state, reason = True, outcome.power_state, "StatusSucceeded"
        message = f"power {outcome.power_state} ({outcome.elapsed:.2f}s)"
    else:
        ok, state, reason = False, "unknown", type(outcome).__name__
        message = str(outcome)
    status = "True" if ok else "False"
    replaced = {"Reachable"} | ({OPTIONS_CONDITION} if options is not None else set())
    conditions = [c for c in current.get("conditions", []) if c.get("type") not in replaced]
    if options is not None:
        conditions.append(
            options_condition(options, generation, current.get("conditions", []), now)
        )
    previous = next(
        (c for c in current.get("conditions", []) if c.get("type") == "Reachable"), None
    )
    since = (
        previous.get("lastTransitionTime") if previous and previous.get("status") == status else now
    )
    condition: dict[str, Any] = {
        "type": "Reachable",
        "status": status,
        "reason": reason,
        "message": message[:1000],
        "lastTransitionTime": since,
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    patch: dict[str, Any] = {
        "lastTestTime": now,
        "lastTestResult": "Succeeded" if ok else "Failed",
        "powerState": state,
        "message": message[:1000],
        "conditions": [*conditions, condition],
    }
    if generation is not None:
        patch["observedGeneration"] = generation
    return {"status": patch}


async def run_test(
    api: Api, namespace: str, name: str, report: list[str] | None = None
) -> FenceResult | FenceError:
    """Test one FenceAgent and record the outcome in its status; returns the outcome.

    ``report`` collects what became of the options (unknown, ignored, translated).
    """
    generation = None
    options: OptionsReport | None = None
    try:
        agent = await resolve_agent(api, namespace, name)
        generation = agent.generation
        options = await asyncio.to_thread(options_report, agent.spec)
        if report is not None:
            report.extend(options.lines())
        outcome: FenceResult | FenceError = await agent.driver.test()
    except FenceError as exc:
        outcome = exc
    try:
        obj = await asyncio.to_thread(api.get, "FenceAgent", namespace, name)
    except KubeError:
        return outcome  # the agent itself is missing: nothing to record on
    patch = test_status_patch(
        obj.get("status") or {}, outcome, generation or obj["metadata"].get("generation"), options
    )
    await asyncio.to_thread(api.patch, "FenceAgent", namespace, name, patch, status=True)
    return outcome


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
