"""``hafence outages [HOST] -n NS``: one host outage as a readable timeline.

Reads the HostOutage records the operator keeps (``kubectl get hostoutages`` lists
them); prints the newest one of HOST, or of the namespace without HOST, or the one
named with ``--outage ID``.  ``--list`` prints one line per kept record instead.
Exit code 0 when a record was printed, 1 when there is none, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from hafence.api.lease import HOST_LABEL
from hafence.controller.outages import timeline
from hafence.kube import KubeError, NotFound, load_api


def _newest_first(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(items, key=lambda o: (o.get("status") or {}).get("startTime") or "", reverse=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="hafence outages",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("host", nargs="?", help="the Host; default: any host")
    parser.add_argument("-n", "--namespace", required=True)
    parser.add_argument("--outage", metavar="ID", help="this outage (a HostOutage name)")
    parser.add_argument("--list", action="store_true", help="one line per record")
    parser.add_argument("--kubeconfig")
    args = parser.parse_args(argv)
    api = load_api(args.kubeconfig)
    try:
        if args.outage:
            items = [api.get("HostOutage", args.namespace, args.outage)]
        else:
            selector = f"{HOST_LABEL}={args.host}" if args.host else ""
            items = _newest_first(api.list("HostOutage", args.namespace, selector)["items"])
    except NotFound:
        print(f"hafence outages: no HostOutage {args.outage} in {args.namespace}", file=sys.stderr)
        return 1
    except KubeError as exc:
        print(f"hafence outages: {exc}", file=sys.stderr)
        return 1
    finally:
        api.close()
    if not items:
        whose = f"host {args.host}" if args.host else "any host"
        print(f"no outage recorded for {whose} in namespace {args.namespace}", file=sys.stderr)
        return 1
    if args.list:
        for obj in items:
            print(timeline(obj)[0])
        return 0
    print("\n".join(timeline(items[0])))
    return 0
