"""`hafence agent`: the host agent's command line.

    hafence agent --host NAME --namespace NS [--kubeconfig PATH] [--state-dir DIR]
                  [--lease-duration SECONDS] [--boot-id ID] ...

SIGTERM/SIGINT stop the agent and leave its VMs running (a service restart must not
take VMs down); ``--kill-vms-on-exit`` makes the exit kill them too (the lab's "pull
the plug" on a virtual host).  Exit codes: 0 after a clean stop, 2 for bad input
(flags, unknown Host), 1 for anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal
import sys
from pathlib import Path

from hafence.agent.drivers import Driver
from hafence.agent.heartbeat import BOOT_ID_PATH, read_boot_id
from hafence.agent.libvirt import LibvirtDriver
from hafence.agent.process import ProcessDriver
from hafence.agent.service import Agent, AgentConfig, AgentError
from hafence.agent.state import StateDir
from hafence.agent.vms import RestartPolicy
from hafence.api.base import DNS_LABEL, DNS_SUBDOMAIN
from hafence.api.lease import DEFAULT_LEASE_DURATION_SECONDS, LeaseError, validate_boot_id
from hafence.kube import load_api

log = logging.getLogger("hafence.agent")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hafence agent", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", required=True, help="name of this host's Host resource")
    p.add_argument("--namespace", "-n", required=True, help="namespace of the Host (datacenter)")
    p.add_argument("--kubeconfig", help="kubeconfig path (default: $KUBECONFIG, in-cluster)")
    p.add_argument(
        "--state-dir",
        default="/var/lib/hafence-agent",
        type=Path,
        help="where VM records live across agent restarts",
    )
    p.add_argument(
        "--enable-process-driver",
        action="store_true",
        help="run HAVirtualMachines with spec.runtime.driver=process: their command runs "
        "as this agent's user (root on a hypervisor), so whoever may write an "
        "HAVirtualMachine runs code here.  Off unless given; the lab passes it",
    )
    p.add_argument(
        "--lease-duration",
        type=int,
        default=DEFAULT_LEASE_DURATION_SECONDS,
        help="leaseDurationSeconds; the lease is renewed every third of it",
    )
    p.add_argument("--boot-id", help="override the boot ID (lab: virtual hosts share a kernel)")
    p.add_argument(
        "--boot-id-file",
        type=Path,
        default=BOOT_ID_PATH,
        help="where the kernel boot ID is read from",
    )
    p.add_argument(
        "--restart-limit",
        type=int,
        default=5,
        help="crashes of one VM per placement before it is Failed",
    )
    p.add_argument(
        "--restart-backoff",
        type=float,
        default=1.0,
        help="seconds before the first restart after a crash; doubles each time",
    )
    p.add_argument("--restart-backoff-max", type=float, default=60.0)
    p.add_argument(
        "--stop-grace",
        type=float,
        default=10.0,
        help="seconds between SIGTERM (or shutdown) and a forced stop",
    )
    p.add_argument(
        "--poll-interval",
        type=float,
        default=1.0,
        help="seconds between checks that the VMs still run",
    )
    p.add_argument("--watchdog-device", help="e.g. /dev/watchdog: fed while the lease is fresh")
    p.add_argument(
        "--kill-vms-on-exit",
        action="store_true",
        help="kill this host's VMs when the agent exits (lab: host power loss)",
    )
    p.add_argument("--log-level", default="INFO")
    return p


def _check(args: argparse.Namespace) -> str:
    """Validate flags early, naming flag and value; returns the boot ID."""
    if not re.match(DNS_SUBDOMAIN, args.host):
        raise AgentError(f"--host {args.host!r} is not a valid Kubernetes object name")
    if not re.match(DNS_LABEL, args.namespace):
        raise AgentError(f"--namespace {args.namespace!r} is not a valid namespace name")
    if args.lease_duration < 3:
        raise AgentError(f"--lease-duration {args.lease_duration!r} must be at least 3 seconds")
    for flag in ("restart_backoff", "restart_backoff_max", "poll_interval", "stop_grace"):
        if getattr(args, flag) <= 0:
            raise AgentError(f"--{flag.replace('_', '-')} {getattr(args, flag)!r} must be positive")
    if args.restart_limit < 0:
        raise AgentError(f"--restart-limit {args.restart_limit!r} must not be negative")
    try:
        return validate_boot_id(args.boot_id) if args.boot_id else read_boot_id(args.boot_id_file)
    except LeaseError as exc:
        raise AgentError(f"--boot-id: {exc}") from None
    except OSError as exc:
        raise AgentError(f"--boot-id-file: {exc}") from None


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if not isinstance(logging.getLevelName(args.log_level.upper()), int):
        print(
            f"hafence agent: --log-level {args.log_level!r} is not a logging level", file=sys.stderr
        )
        return 2
    logging.basicConfig(
        level=args.log_level.upper(),
        format=f"%(asctime)s %(levelname)s agent[{args.host}] %(message)s",
        stream=sys.stderr,
    )
    try:
        boot_id = _check(args)
        state = StateDir(args.state_dir)
        state.ensure()
    except (AgentError, OSError) as exc:
        print(f"hafence agent: {exc}", file=sys.stderr)
        return 2
    cfg = AgentConfig(
        host=args.host,
        namespace=args.namespace,
        state_dir=args.state_dir,
        boot_id=boot_id,
        lease_duration=args.lease_duration,
        policy=RestartPolicy(args.restart_limit, args.restart_backoff, args.restart_backoff_max),
        stop_grace=args.stop_grace,
        poll_interval=args.poll_interval,
        watchdog_device=args.watchdog_device,
        kill_vms_on_exit=args.kill_vms_on_exit,
    )
    # A call must end well within a renewal interval, or one hung request would stall
    # the heartbeat; the watchdog covers the rest.
    timeout = max(2.0, args.lease_duration / 3)
    try:
        api = load_api(args.kubeconfig, timeout=timeout)
        watch_api = load_api(args.kubeconfig, timeout=timeout)
    except Exception as exc:
        where = (
            f"--kubeconfig {args.kubeconfig!r}"
            if args.kubeconfig
            else "no --kubeconfig, $KUBECONFIG or in-cluster config"
        )
        print(f"hafence agent: {where}: {exc}", file=sys.stderr)
        return 2
    drivers: dict[str, Driver] = {"libvirt": LibvirtDriver()}
    if args.enable_process_driver:
        drivers["process"] = ProcessDriver(state)
    agent = Agent(cfg, api, watch_api, drivers)
    log.info(
        "starting: host %s/%s, instance %s, boot ID %s, state dir %s",
        cfg.namespace,
        cfg.host,
        cfg.instance_id,
        boot_id,
        cfg.state_dir,
    )

    async def run() -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, agent.request_stop)
        return await agent.run()

    try:
        return asyncio.run(run())
    except AgentError as exc:
        print(f"hafence agent: {exc}", file=sys.stderr)
        return 2
    except Exception:
        log.exception("agent failed")
        return 1
    finally:
        api.close()
        watch_api.close()
