"""``hafence power HOST {status,on,off,restart} -n NS``: oVirt's power-management menu.

Goes through the host's FenceAgents in priority order (``spec.order``, lower first);
agents sharing an order form a concurrent group (off needs all, on needs any).  The
first group that succeeds decides; a failed group falls through to the next one.
``restart`` is off (verified) then on.  Exit code 0 on success, 1 on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from hafence.fencing.errors import FenceError
from hafence.fencing.groups import GroupResult, run_group
from hafence.fencing.protocol import Operation
from hafence.fencing.resolve import ResolvedAgent, host_agent_groups
from hafence.kube import Api, KubeError, load_api

ACTIONS: dict[str, Operation] = {"status": "status", "on": "on", "off": "off", "restart": "reboot"}


async def power(
    groups: list[list[ResolvedAgent]], operation: Operation, report: list[str]
) -> GroupResult | None:
    """Try each group in order; the first success wins.  ``report`` collects lines."""
    last: GroupResult | None = None
    for group in groups:
        names = ",".join(a.name for a in group)
        if operation == "reboot":
            off = await run_group([a.driver for a in group], "off")
            report.append(f"order {group[0].spec.order} [{names}]: {off.message}")
            if not off.ok:
                last = off
                continue
            result = await run_group([a.driver for a in group], "on")
            result.operation = "reboot"
        else:
            result = await run_group([a.driver for a in group], operation)
        report.append(f"order {group[0].spec.order} [{names}]: {result.message}")
        if result.ok:
            return result
        last = result
    return last


async def run_power(
    api: Api, namespace: str, host: str, action: str, report: list[str]
) -> GroupResult | None:
    groups = await host_agent_groups(api, namespace, host)
    if not groups:
        raise FenceError(f"Host {namespace}/{host} has no FenceAgents")
    return await power(groups, ACTIONS[action], report)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hafence power")
    parser.add_argument("host")
    parser.add_argument("action", choices=sorted(ACTIONS))
    parser.add_argument("-n", "--namespace", required=True)
    parser.add_argument("--kubeconfig")
    args = parser.parse_args(argv)
    api = load_api(args.kubeconfig)
    report: list[str] = []
    try:
        result = asyncio.run(run_power(api, args.namespace, args.host, args.action, report))
    except (FenceError, KubeError) as exc:
        print(f"hafence power: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        api.close()
    for line in report:
        print(line)
    if result is None or not result.ok:
        print(f"{args.host}: {args.action} FAILED", file=sys.stderr)
        return 1
    print(f"{args.host}: {args.action} succeeded, power {result.power_state}")
    return 0
