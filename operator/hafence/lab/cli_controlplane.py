"""`hafence control-plane build|up|path`: the local etcd + kube-apiserver."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading

from hafence.lab import binaries
from hafence.lab.controlplane import ControlPlane


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hafence control-plane", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("build", help="find or build etcd, kube-apiserver, kubectl (cached)")
    sub.add_parser("path", help="print the directory of the binaries, if cached")
    sub.add_parser("up", help="run a control plane until Ctrl-C; prints its kubeconfig")
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
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            with ControlPlane() as cp:
                print(f"export KUBECONFIG={cp.kubeconfig}", flush=True)
                with contextlib.suppress(KeyboardInterrupt):
                    stop.wait()
    except binaries.BinariesUnavailable as exc:
        print(f"hafence control-plane: {exc}", file=sys.stderr)
        return 1
    return 0
