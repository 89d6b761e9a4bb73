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

from hafence.agent.domain_policy import DomainPolicy
from hafence.agent.drivers import Driver
from hafence.agent.heartbeat import BOOT_ID_PATH, read_boot_id
from hafence.agent.libvirt import LibvirtDriver
from hafence.agent.peers import read_token
from hafence.agent.process import ProcessDriver
from hafence.agent.service import Agent, AgentConfig, AgentError
from hafence.agent.state import StateDir
from hafence.agent.vms import RestartPolicy
from hafence.api.base import DNS_LABEL, DNS_SUBDOMAIN
from hafence.api.lease import (
    DEFAULT_LEASE_DURATION_SECONDS,
    LeaseError,
    api_timeout,
    validate_boot_id,
    validate_peer_endpoint,
)
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
    p.add_argument(
        "--libvirt-uri",
        action="append",
        default=[],
        metavar="URI",
        help="a libvirt daemon of this host, swept for stray domains at start-up "
        "(repeatable; the URIs of the namespace's libvirt VMs are swept too)",
    )
    p.add_argument(
        "--libvirt-uri-alias",
        action="append",
        default=[],
        metavar="SPEC_URI=URI",
        help="connect to URI where a VM's spec names SPEC_URI (like libvirt's uri_aliases, "
        "per agent: the lab's virtual hosts each have a daemon of their own)",
    )
    p.add_argument(
        "--libvirt-image-dir",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="a directory whose files a VM's domainXML may use as disk images, firmware "
        "variables and kernels (repeatable); without one, only diskless domains",
    )
    p.add_argument(
        "--libvirt-unrestricted-domain-xml",
        action="store_true",
        help="define any domainXML a VM gives: host devices, host paths, qemu arguments "
        "(root on this host for whoever may write an HAVirtualMachine).  Off unless "
        "given: the agent defines only a safe subset (docs/deploy.md, Security notes)",
    )
    p.add_argument(
        "--libvirt-timeout",
        type=float,
        default=10.0,
        help="seconds a libvirt call may take before its VM counts as unknown",
    )
    p.add_argument(
        "--watchdog-device",
        help="the watchdog device self-fencing arms, e.g. /dev/watchdog0 (the lab's "
        "stand-in: lab-stand-in:SOCKET); without one a Host's self-fencing is unavailable",
    )
    p.add_argument(
        "--peer-token-file",
        type=Path,
        help="the namespace's shared peer token (Secret hafence-peer-token): enables the "
        "peer check before self-fencing on API loss",
    )
    p.add_argument(
        "--peer-listen",
        help="HOST:PORT of this agent's peer endpoint (PORT 0: any free port)",
    )
    p.add_argument(
        "--peer-advertise", help="HOST:PORT peers reach the endpoint at (default: --peer-listen)"
    )
    p.add_argument(
        "--peer-refresh",
        type=float,
        default=30.0,
        help="seconds between lists of the peers (their leases)",
    )
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
    for flag in (
        "restart_backoff",
        "restart_backoff_max",
        "poll_interval",
        "stop_grace",
        "libvirt_timeout",
    ):
        if getattr(args, flag) <= 0:
            raise AgentError(f"--{flag.replace('_', '-')} {getattr(args, flag)!r} must be positive")
    if args.peer_refresh <= 0:
        raise AgentError(f"--peer-refresh {args.peer_refresh!r} must be positive")
    for flag in ("peer_listen", "peer_advertise"):
        value = getattr(args, flag)
        if value is not None:
            try:
                # Port 0 (any free port) only for listening; it is declared as bound.
                host, _, port = value.rpartition(":")
                zero = flag == "peer_listen" and port == "0"
                validate_peer_endpoint(f"{host}:1" if zero else value)
            except LeaseError as exc:
                raise AgentError(f"--{flag.replace('_', '-')}: {exc}") from None
    if args.peer_listen and not args.peer_token_file:
        raise AgentError("--peer-listen needs --peer-token-file: peer answers are signed")
    for alias in args.libvirt_uri_alias:
        name, sep, uri = alias.partition("=")
        if not sep or not name or not uri or any(c.isspace() for c in alias):
            raise AgentError(
                f"--libvirt-uri-alias {alias!r}: expected SPEC_URI=URI, e.g. "
                "qemu:///session=qemu+unix:///session?socket=/run/h1/libvirt-sock"
            )
    for d in args.libvirt_image_dir:
        if not d.is_absolute() or not d.is_dir():
            raise AgentError(
                f"--libvirt-image-dir {str(d)!r} is not an absolute path of a directory"
            )
    if args.restart_limit < 0:
        raise AgentError(f"--restart-limit {args.restart_limit!r} must not be negative")
    try:
        return validate_boot_id(args.boot_id) if args.boot_id else read_boot_id(args.boot_id_file)
    except LeaseError as exc:
        raise AgentError(f"--boot-id: {exc}") from None
    except OSError as exc:
        raise AgentError(f"--boot-id-file: {exc}") from None


def _endpoint(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


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
        token = read_token(args.peer_token_file) if args.peer_token_file else None
    except (AgentError, OSError, ValueError) as exc:
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
        peer_token=token,
        peer_listen=_endpoint(args.peer_listen) if args.peer_listen else None,
        peer_advertise=args.peer_advertise,
        peer_refresh=args.peer_refresh,
    )
    # A call must end well within a renewal interval, or one hung request would stall
    # the heartbeat; the watchdog covers the rest.
    timeout = api_timeout(args.lease_duration)
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
    drivers: dict[str, Driver] = {
        "libvirt": LibvirtDriver(
            args.host,
            uris=args.libvirt_uri,
            aliases={a.partition("=")[0]: a.partition("=")[2] for a in args.libvirt_uri_alias},
            timeout=args.libvirt_timeout,
            policy=DomainPolicy(
                tuple(args.libvirt_image_dir), unrestricted=args.libvirt_unrestricted_domain_xml
            ),
        ),
    }
    if args.enable_process_driver:
        drivers["process"] = ProcessDriver(state, args.host)
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
