"""`hafence control-plane build|up|path`: the local etcd + kube-apiserver.

``up`` runs them until Ctrl-C or SIGTERM and watches them: should etcd or the
kube-apiserver die, it is reaped, its exit status and the end of its log are reported
on stderr, the other process is stopped, and ``up`` exits with status 1.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import threading
from pathlib import Path

from hafence.lab import binaries
from hafence.lab.controlplane import ControlPlane, ControlPlaneError

POLL = 0.5  # seconds between checks that etcd and the apiserver still run


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1..65535)")
    return int(text)


def _up(args: argparse.Namespace) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        cp = ControlPlane(
            log_dir=args.log_dir,
            data_dir=args.data_dir,
            etcd_port=args.etcd_port,
            apiserver_port=args.apiserver_port,
        )
        if args.log_dir is not None:
            args.log_dir.mkdir(parents=True, exist_ok=True)
        with cp:
            kubeconfig = cp.kubeconfig
            if args.kubeconfig is not None:
                shutil.copyfile(cp.kubeconfig, args.kubeconfig)
                args.kubeconfig.chmod(0o600)
                kubeconfig = args.kubeconfig
            print(f"export KUBECONFIG={kubeconfig}", flush=True)
            print(
                f"# kube-apiserver {cp.url} (pid {cp.apiserver.pid if cp.apiserver else '?'}), "
                f"etcd 127.0.0.1:{cp.etcd_port} (pid {cp.etcd.pid if cp.etcd else '?'}), "
                f"logs in {cp.log_dir}",
                flush=True,
            )
            while not stop.wait(POLL):
                dead = cp.exited()
                if dead:
                    for name, proc in dead:
                        print(
                            f"hafence control-plane: {name} (pid {proc.pid}) exited with "
                            f"status {proc.returncode}; the end of its log:\n"
                            f"{cp.log_tail(name, 15)}",
                            file=sys.stderr,
                            flush=True,
                        )
                    return 1
    except ControlPlaneError as exc:
        print(f"hafence control-plane: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hafence control-plane", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("build", help="find or build etcd, kube-apiserver, kubectl (cached)")
    sub.add_parser("path", help="print the directory of the binaries, if cached")
    up = sub.add_parser("up", help="run a control plane until Ctrl-C; prints its kubeconfig")
    up.add_argument("--apiserver-port", type=_port, help="default: a free port")
    up.add_argument("--etcd-port", type=_port, help="etcd's client port; default: a free port")
    up.add_argument(
        "--data-dir",
        type=Path,
        help="keep certificates, etcd's data and the kubeconfig here, reused by the next "
        "`up` (default: a temporary directory, removed at exit)",
    )
    up.add_argument("--kubeconfig", type=Path, help="also write the admin kubeconfig here")
    up.add_argument("--log-dir", type=Path, help="etcd.log, kube-apiserver.log (default: data dir)")
    args = parser.parse_args(argv)
    try:
        if args.action == "build":
            print(binaries.ensure().etcd.parent)
        elif args.action == "path":
            found = binaries.find()
            if found is None:
                print("not built yet: run `hafence control-plane build`", file=sys.stderr)
                return 1
            print(found.etcd.parent)
        else:
            return _up(args)
    except binaries.BinariesUnavailable as exc:
        print(f"hafence control-plane: {exc}", file=sys.stderr)
        return 1
    return 0
