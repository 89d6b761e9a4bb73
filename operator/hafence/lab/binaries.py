"""Find or build the control-plane binaries: etcd, kube-apiserver and kubectl.

There is no Docker here, so no kind: tests and the lab run a real kube-apiserver and
etcd as processes, envtest-style.  The binaries come from, in this order:

1. ``$KUBEBUILDER_ASSETS`` (controller-runtime's envtest convention), when set;
2. the cache (``$HAFENCE_CACHE`` or ``~/.cache/hafence``), when built before;
3. a build from the Go module proxy, written into the cache.

kube-apiserver cannot be ``go install``-ed: k8s.io/kubernetes' go.mod replaces its
staging modules with local paths.  A throw-away wrapper module requires
k8s.io/kubernetes and replaces each staging module with its published ``v0.X.Y``;
the list is read from the go.mod that ``go mod download -json`` returns, so a new
Kubernetes version needs no edit here.  etcd's server is already a dependency of
that module graph and builds from the same wrapper.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.8"  # the version k8s.io/kubernetes v1.36.3 itself requires
# Bump when the build recipe changes, so stale caches are rebuilt, not trusted.
BUILD_REVISION = 2

BINARIES = ("etcd", "kube-apiserver", "kubectl")
_PACKAGES = {
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "kubectl": "k8s.io/kubernetes/cmd/kubectl",
    "etcd": "go.etcd.io/etcd/server/v3",
}
_STAGING = re.compile(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", re.MULTILINE)


class BinariesUnavailable(RuntimeError):
    """The binaries are neither provided, cached nor buildable here."""


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kubectl: Path


def cache_dir() -> Path:
    root = os.environ.get("HAFENCE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hafence"
    )
    name = f"control-plane-{KUBERNETES_VERSION}-etcd-{ETCD_VERSION}-r{BUILD_REVISION}"
    return Path(root) / name


def _complete(directory: Path) -> Binaries | None:
    paths = [directory / name for name in BINARIES]
    if all(p.is_file() and os.access(p, os.X_OK) for p in paths):
        return Binaries(*paths)
    return None


def find() -> Binaries | None:
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        found = _complete(Path(assets))
        if found is None:
            raise BinariesUnavailable(
                f"KUBEBUILDER_ASSETS={assets!r} does not hold all of {', '.join(BINARIES)}"
            )
        return found
    return _complete(cache_dir())


def ensure(log: bool = True) -> Binaries:
    """Return usable binaries, building them into the cache when needed."""
    found = find()
    if found is not None:
        return found
    if shutil.which("go") is None:
        raise BinariesUnavailable(
            "no control-plane binaries cached in "
            f"{cache_dir()} and no Go toolchain to build them: install Go "
            "(https://go.dev/doc/install) or set KUBEBUILDER_ASSETS to a directory "
            f"holding {', '.join(BINARIES)}"
        )
    return build(log=log)


def _go(args: list[str], cwd: Path, log: bool) -> str:
    env = dict(os.environ, GOFLAGS="-mod=mod", CGO_ENABLED="0")
    if log:
        print(f"[control-plane] go {' '.join(args)}", file=sys.stderr, flush=True)
    proc = subprocess.run(
        ["go", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise BinariesUnavailable(
            f"`go {' '.join(args)}` failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    return proc.stdout


def _version_ldflags() -> str:
    """Stamp the version, as Kubernetes' hack/lib/version.sh does (else "v0.0.0-master")."""
    major, minor, _ = KUBERNETES_VERSION.removeprefix("v").split(".")
    values = {
        "gitVersion": KUBERNETES_VERSION,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
    }
    return " ".join(
        f"-X {pkg}.{key}={value}"
        for pkg in ("k8s.io/client-go/pkg/version", "k8s.io/component-base/version")
        for key, value in values.items()
    )


def build(log: bool = True) -> Binaries:
    target = cache_dir()
    with tempfile.TemporaryDirectory(prefix="hafence-cp-build-") as tmp:
        work = Path(tmp)
        info = json.loads(
            _go(["mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"], work, log)
        )
        staging = sorted(set(_STAGING.findall(Path(info["GoMod"]).read_text())))
        published = "v0." + KUBERNETES_VERSION.removeprefix("v1.")
        replaces = "\n".join(f"\t{mod} => {mod} {published}" for mod in staging)
        (work / "go.mod").write_text(
            "module hafence.local/control-plane\n\ngo 1.26\n\n"
            f"require (\n\tk8s.io/kubernetes {KUBERNETES_VERSION}\n"
            f"\tgo.etcd.io/etcd/server/v3 {ETCD_VERSION}\n)\n\n"
            f"replace (\n{replaces}\n)\n"
        )
        (work / "tools.go").write_text(
            "//go:build tools\n\npackage tools\n\n"
            + "".join(f'import _ "{pkg}"\n' for pkg in _PACKAGES.values())
        )
        _go(["mod", "tidy"], work, log)
        staged = work / "bin"
        ldflags = "-s -w " + _version_ldflags()
        for name, pkg in _PACKAGES.items():
            _go(
                ["build", "-trimpath", f"-ldflags={ldflags}", "-o", str(staged / name), pkg],
                work,
                log,
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=target.parent))
        for name in BINARIES:
            shutil.copy2(staged / name, partial / name)
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)  # atomic: a half-built cache is never "found"
    found = _complete(target)
    assert found is not None
    return found


def main() -> None:
    bins = ensure()
    print(bins.etcd.parent)


if __name__ == "__main__":
    main()
