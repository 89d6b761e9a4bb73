"""The `hafence` entry points: console script and `python -m hafence`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hafence.cli import COMMANDS

HAFENCE = str(Path(sys.executable).parent / "hafence")


def test_help_lists_every_subcommand() -> None:
    for argv in ([HAFENCE, "--help"], [sys.executable, "-m", "hafence", "--help"]):
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        for name in COMMANDS:
            assert f"  {name} " in out, (argv, name)


def test_unknown_command_is_a_clear_error() -> None:
    proc = subprocess.run([HAFENCE, "fence-everything"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unknown command 'fence-everything'" in proc.stderr


def test_every_subcommand_module_has_main() -> None:
    import importlib

    for name, (module, _) in COMMANDS.items():
        mod = importlib.import_module(module)
        assert callable(getattr(mod, "main", None)), name


def test_no_importable_package_named_operator() -> None:
    import operator

    # The source root is operator/, but the standard library's module must win.
    assert hasattr(operator, "itemgetter")
