"""`hafence crds`: write crds/*.yaml from the models (what `make crds` runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hafence.api import KINDS
from hafence.api.crdgen import render


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hafence crds", description=__doc__)
    parser.add_argument(
        "--output",
        "-o",
        type=Path,
        default=Path("crds"),
        help="directory to write into (default: crds)",
    )
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        path = args.output / f"{kind.crd_name}.yaml"
        path.write_text(render(kind))
        print(path)
    return 0
