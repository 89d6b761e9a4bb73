"""docs/lifecycle.md is generated from the core's transition table (h11-style: the
table is the single authority).  Regenerate with HAFENCE_REGOLD=1."""

from __future__ import annotations

import os
from pathlib import Path

from hafence.core.transitions import render_mermaid, render_table

DOC = Path(__file__).resolve().parents[2] / "docs" / "lifecycle.md"


def lifecycle_doc() -> str:
    return (
        "# Host lifecycle\n\n"
        "Generated from `operator/hafence/core/transitions.py` by "
        "`HAFENCE_REGOLD=1 pytest tests/docs`; do not edit by hand.\n\n"
        "Every phase change a host can make, with the trigger that causes it and the\n"
        "effects the core carries out. A VM leaves a host only on `release_vms`, which\n"
        "only a fence verified off, a FenceConfirmation or self-fence proof can cause (S1).\n\n"
        "```mermaid\n" + render_mermaid().rstrip() + "\n```\n\n"
        "## The table\n\n```\n" + render_table().rstrip() + "\n```\n"
    )


def test_lifecycle_doc_is_current() -> None:
    text = lifecycle_doc()
    if os.environ.get("HAFENCE_REGOLD"):
        DOC.write_text(text)
    assert DOC.read_text() == text, "docs/lifecycle.md is stale: HAFENCE_REGOLD=1 pytest tests/docs"
