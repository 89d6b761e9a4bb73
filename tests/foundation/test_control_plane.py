"""The local control plane: starts, serves with RBAC on, and leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hafence.lab import binaries
from hafence.lab.controlplane import ControlPlane


def test_start_serve_and_clean_up() -> None:
    with ControlPlane() as cp:
        workdir = cp.dir
        pids = [cp.etcd.pid, cp.apiserver.pid]  # type: ignore[union-attr]
        version = cp.kubectl("version", "-o", "json").stdout
        assert '"gitVersion": "v1.36' in version
        # RBAC is on: an unauthenticated request is refused.
        anon = subprocess.run(
            ["curl", "-sk", f"{cp.url}/api/v1/namespaces"], capture_output=True, text=True
        )
        if anon.returncode == 0:
            assert '"code": 403' in anon.stdout or '"code": 401' in anon.stdout
        auth = cp.kubectl("auth", "can-i", "--list").stdout
        assert "*.*" in auth  # the admin credential is system:masters
    assert not workdir.exists()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_stopped_even_when_the_body_fails() -> None:
    with pytest.raises(RuntimeError, match="boom"), ControlPlane() as cp:
        workdir, apiserver = cp.dir, cp.apiserver
        raise RuntimeError("boom")
    assert not workdir.exists()
    assert apiserver is not None and apiserver.poll() is not None


def test_missing_go_and_cache_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HAFENCE_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no `go` on it
    with pytest.raises(binaries.BinariesUnavailable, match="no Go toolchain"):
        binaries.ensure(log=False)


def test_kubebuilder_assets_are_used_when_set(tmp_path: Path, monkeypatch) -> None:
    found = binaries.find()
    assert found is not None, "the session's control plane should have built the cache"
    for name in binaries.BINARIES:
        os.symlink(found.etcd.parent / name, tmp_path / name)
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path))
    assert binaries.find() == binaries.Binaries(*(tmp_path / n for n in binaries.BINARIES))
    shutil.rmtree(tmp_path / "kubectl", ignore_errors=True)
    os.unlink(tmp_path / "kubectl")
    with pytest.raises(binaries.BinariesUnavailable, match="KUBEBUILDER_ASSETS"):
        binaries.find()


def test_up_takes_flags_and_reports_an_apiserver_that_dies(tmp_path: Path) -> None:
    """`hafence control-plane up --apiserver-port P --data-dir D --kubeconfig K`: the
    apiserver listens on P, K works; when the apiserver is killed under it, `up` reaps
    it, says so on stderr with its exit status, stops etcd and exits 1."""
    import signal
    import sys
    import time

    from hafence.lab.ports import free_port

    port = free_port()
    data, kubeconfig = tmp_path / "cp", tmp_path / "admin.kubeconfig"
    hafence = str(Path(sys.executable).parent / "hafence")
    argv = [hafence, "control-plane", "up", "--apiserver-port", str(port)]
    argv += ["--data-dir", str(data), "--kubeconfig", str(kubeconfig)]
    up = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert up.stdout is not None
        assert up.stdout.readline().strip() == f"export KUBECONFIG={kubeconfig}"
        info = up.stdout.readline()
        assert f"https://127.0.0.1:{port}" in info
        apiserver_pid = int(info.split("(pid ")[1].split(")")[0])
        etcd_pid = int(info.split("(pid ")[2].split(")")[0])
        found = binaries.find()
        assert found is not None
        ns = subprocess.run(
            [str(found.kubectl), "--kubeconfig", str(kubeconfig), "get", "ns", "default"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert ns.returncode == 0, ns.stderr
        os.kill(apiserver_pid, signal.SIGKILL)
        _, err = up.communicate(timeout=30)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert up.returncode == 1
    assert f"kube-apiserver (pid {apiserver_pid}) exited with status -9" in err
    assert (data / "pki" / "ca.crt").exists(), "a --data-dir is kept"
    deadline = time.monotonic() + 10
    while Path(f"/proc/{etcd_pid}").exists() and not _zombie(etcd_pid):
        assert time.monotonic() < deadline, "etcd left running"
        time.sleep(0.1)
