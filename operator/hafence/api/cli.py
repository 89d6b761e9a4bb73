"""`hafence crds`: write crds/*.yaml from the models (what `make crds` runs).

``hafence crds -o -`` writes every CRD to stdout as one multi-document YAML stream,
for ``hafence crds -o - | kubectl apply --server-side -f -``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hafence.api import KINDS
from hafence.api.crdgen import render


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="hafence crds",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--output",
        "-o",
        default="crds",
        help="directory to write into (default: crds), or - for stdout",
    )
    args = parser.parse_args(argv)
    if args.output == "-":
        sys.stdout.write("---\n".join(render(kind) for kind in KINDS))
        return 0
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        path = out / f"{kind.crd_name}.yaml"
        path.write_text(render(kind))
        print(path)
    return 0
