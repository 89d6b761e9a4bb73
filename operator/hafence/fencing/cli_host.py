"""``hafence host test NAME -n NS``: what an oVirt admin checks before trusting a host.

One line per check, ``OK``, ``FAIL`` or ``SKIP``:

- ``ssh``: the host answers over SSH with its pinned host key (or known_hosts Secret)
  and accepts the operator's key (runs ``true``);
- ``soft-fence command``: the first program of ``spec.ssh.softFenceCommand`` exists on
  the host (``command -v`` over SSH; the command itself is not run);
- ``fence agent NAME``: each FenceAgent answers a power status, recorded in its status
  exactly as ``hafence fence-agent test`` records it.

Exit code 0 when nothing failed (a skipped check is not a failure: a Host without
``spec.ssh`` is never soft fenced), 1 when a check failed, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shlex
import sys
from dataclasses import dataclass

from hafence.api.host import HostSpec
from hafence.fencing.agent_status import run_test
from hafence.fencing.errors import FenceError
from hafence.fencing.protocol import SSHTarget
from hafence.fencing.resolve import ssh_target
from hafence.kube import Api, KubeError, NotFound, load_api

# A program name we are willing to put on a remote shell line (quoted besides).
_PROGRAM = re.compile(r"^[A-Za-z0-9_./+-]+$")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass
class Check:
    name: str
    verdict: str  # OK | FAIL | SKIP
    detail: str

    def line(self) -> str:
        return f"{self.verdict:<4}  {self.name}: {self.detail}"


def first_program(command: str) -> str:
    """The program a soft-fence command runs first (leading VAR=value words skipped)."""
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise ValueError(f"cannot parse softFenceCommand: {exc}") from None
    words = [w for w in words if not _ASSIGNMENT.match(w)] or [""]
    if not _PROGRAM.match(words[0]):
        raise ValueError(
            f"softFenceCommand starts with {words[0]!r}, not a program name "
            "(letters, digits, '_', '.', '/', '+', '-')"
        )
    return words[0]


async def _ssh_checks(api: Api, namespace: str, name: str, spec: HostSpec) -> list[Check]:
    from hafence.fencing.ssh import run_command  # paramiko: loaded when first needed

    ssh = spec.ssh
    if ssh is None:
        why = "no spec.ssh: never soft fenced, cannot be a fence proxy"
        return [Check("ssh", "SKIP", why), Check("soft-fence command", "SKIP", why)]
    timeout = float(ssh.timeout_seconds)
    try:
        target: SSHTarget = await asyncio.to_thread(ssh_target, api, namespace, name, spec)
        done = await run_command(target, "true", timeout)
    except FenceError as exc:
        reason = f"{type(exc).__name__}: {exc}"
        return [Check("ssh", "FAIL", reason), Check("soft-fence command", "SKIP", "no SSH")]
    where = f"{ssh.user}@{spec.address}:{ssh.port}"
    key = "pinned host key" if ssh.host_key else "host key from the known_hosts Secret"
    if done.returncode != 0:
        ssh_check = Check("ssh", "FAIL", f"{where}: `true` exited {done.returncode}")
    else:
        ssh_check = Check("ssh", "OK", f"{where}, {key} matched")
    try:
        program = first_program(ssh.soft_fence_command)
    except ValueError as exc:
        return [ssh_check, Check("soft-fence command", "FAIL", str(exc))]
    # PATH as a root login shell would have it: systemctl and friends live in sbin.
    probe = f"PATH=$PATH:/usr/sbin:/sbin command -v -- {shlex.quote(program)}"
    try:
        found = await run_command(target, probe, timeout)
    except FenceError as exc:
        return [ssh_check, Check("soft-fence command", "FAIL", f"{type(exc).__name__}: {exc}")]
    if found.returncode == 0 and found.stdout.strip():
        check = Check("soft-fence command", "OK", f"{program} is {found.stdout.strip()}")
    else:
        check = Check("soft-fence command", "FAIL", f"{program} not found on the host")
    return [ssh_check, check]


async def _agent_checks(api: Api, namespace: str, name: str) -> list[Check]:
    items = (await asyncio.to_thread(api.list, "FenceAgent", namespace))["items"]
    mine = sorted(
        (o for o in items if (o.get("spec") or {}).get("hostRef", {}).get("name") == name),
        key=lambda o: (o["spec"].get("order", 1), o["metadata"]["name"]),
    )
    if not mine:
        return [Check("fence agents", "FAIL", "none: the host cannot be hard-fenced")]
    checks = []
    for obj in mine:
        agent = obj["metadata"]["name"]
        outcome = await run_test(api, namespace, agent)
        label = (
            f"fence agent {agent} ({obj['spec'].get('type')}, order {obj['spec'].get('order', 1)})"
        )
        if isinstance(outcome, FenceError):
            checks.append(Check(label, "FAIL", f"{type(outcome).__name__}: {outcome}"))
        else:
            detail = f"power {outcome.power_state} ({outcome.elapsed:.2f}s)"
            checks.append(Check(label, "OK", detail))
    return checks


async def test_host(api: Api, namespace: str, name: str) -> list[Check]:
    """Every check of one Host, in order; raises KubeError when it cannot be read."""
    try:
        obj = await asyncio.to_thread(api.get, "Host", namespace, name)
    except NotFound:
        return [Check("host", "FAIL", f"Host {namespace}/{name} not found")]
    spec = HostSpec.model_validate(obj["spec"])
    return [
        *(await _ssh_checks(api, namespace, name, spec)),
        *(await _agent_checks(api, namespace, name)),
    ]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="hafence host",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    test = sub.add_parser("test", help="SSH, soft-fence command and every fence agent")
    test.add_argument("name")
    test.add_argument("-n", "--namespace", required=True)
    test.add_argument("--kubeconfig")
    args = parser.parse_args(argv)
    api = load_api(args.kubeconfig)
    try:
        checks = asyncio.run(test_host(api, args.namespace, args.name))
    except KubeError as exc:
        print(f"hafence host test: {exc}", file=sys.stderr)
        return 1
    finally:
        api.close()
    for check in checks:
        print(check.line())
    failed = [c for c in checks if c.verdict == "FAIL"]
    print(
        f"{args.name}: {len(failed)} of {len(checks)} checks failed"
        if failed
        else f"{args.name}: ok"
    )
    return 1 if failed else 0
