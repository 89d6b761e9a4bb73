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
