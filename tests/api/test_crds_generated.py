"""crds/ is generated from the models: a stale file fails here (run `make crds`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hafence.api import KINDS
from hafence.api.crdgen import render

CRDS = Path(__file__).resolve().parents[2] / "crds"


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_crd_file_matches_models(kind):
    path = CRDS / f"{kind.crd_name}.yaml"
    assert path.exists(), f"{path} missing: run `make crds`"
    assert path.read_text() == render(kind), f"{path} is stale: run `make crds`"


def test_no_extra_crd_files():
    expected = {f"{k.crd_name}.yaml" for k in KINDS}
    assert {p.name for p in CRDS.glob("*.yaml")} == expected


def test_crds_to_stdout_apply_with_kubectl(control_plane) -> None:
    """The guide's `hafence crds -o - | kubectl apply --server-side -f -`: one stream,
    every CRD, applied (the same CRDs the session installed: nothing changes)."""
    import subprocess
    import sys

    import yaml

    hafence = str(Path(sys.executable).parent / "hafence")
    out = subprocess.run([hafence, "crds", "-o", "-"], capture_output=True, text=True, check=True)
    docs = list(yaml.safe_load_all(out.stdout))
    assert [d["metadata"]["name"] for d in docs] == [k.crd_name for k in KINDS]
    applied = control_plane.kubectl("apply", "--server-side", "-f", "-", input=out.stdout)
    assert applied.stdout.count("serverside-applied") == len(KINDS), applied.stdout
