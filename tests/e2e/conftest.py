"""A lab per test: virtual hosts, their BMCs and sshd, and the operator as a subprocess.

The lab uses the session's control plane (tests/conftest.py) in a namespace of its own;
its timeline goes to stdout, which pytest shows when a test fails.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hafence.lab.results import ScenarioResult
from hafence.lab.runner import Lab, LabConfig
from hafence.lab.scenarios import run


@pytest.fixture
def lab_factory(kubeconfig: str) -> Iterator[Callable[..., Lab]]:
    labs: list[Lab] = []

    def make(hosts: int = 3, profile: str = "lab", operator_args: tuple[str, ...] = ()) -> Lab:
        lab = Lab(
            LabConfig(
                hosts=hosts,
                profile=profile,
                operator_args=list(operator_args),
                kubeconfig=Path(kubeconfig),
                out=sys.stdout,
                spinner=False,
            )
        )
        labs.append(lab)
        lab.start()
        return lab

    yield make
    for lab in labs:
        if lab.operator is not None and lab.operator.poll() is None:
            print("\n--- operator log (tail) ---\n" + lab.log_tail("operator.log", 40))
        lab.close()


def failed(result: ScenarioResult) -> str:
    lines = [f"error: {result.error}"] if result.error else []
    lines += [f"{c.name}: {c.detail}" for c in result.checks if not c.ok]
    return "\n".join(lines)


def play(lab: Lab, scenario: str) -> ScenarioResult:
    return run(lab, scenario)
