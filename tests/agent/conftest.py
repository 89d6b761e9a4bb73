"""Fixtures for the host agent: real agent processes against the real API server.

Each agent runs as ``python -m hafence agent`` with a state dir of its own; teardown
stops it and kills every VM process recorded in that state dir, even on failure.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hafence.agent.process import kill_all
from hafence.lab.libvirtd import Libvirtd, libvirt_root, unavailable
from hafence.lab.netcut import Forwarder, server_of


@dataclass
class AgentProc:
    host: str
    namespace: str
    state_dir: Path
    log: Path
    proc: subprocess.Popen[bytes]
    argv: list[str] = field(default_factory=list)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


@pytest.fixture
def start_agent(kubeconfig: str, tmp_path: Path) -> Iterator[Callable[..., AgentProc]]:
    agents: list[AgentProc] = []

    def start(
        host: str,
        namespace: str,
        *extra: str,
        kubeconfig_path: str | None = None,
        state_dir: Path | None = None,
        boot_id: str = "0123abcd-0000-4000-8000-000000000001",
        lease_duration: int = 3,
        process_driver: bool = True,
    ) -> AgentProc:
        sd = state_dir or tmp_path / f"state-{host}"
        log = tmp_path / f"agent-{host}-{len(agents)}.log"
        argv = [
            sys.executable,
            "-m",
            "hafence",
            "agent",
            "--host",
            host,
            "--namespace",
            namespace,
            "--kubeconfig",
            kubeconfig_path or kubeconfig,
            "--state-dir",
            str(sd),
            "--lease-duration",
            str(lease_duration),
            *(["--enable-process-driver"] if process_driver else []),
            "--boot-id",
            boot_id,
            "--poll-interval",
            "0.2",
            "--stop-grace",
            "2",
            "--restart-backoff",
            "0.2",
            "--restart-backoff-max",
            "1",
            *extra,
        ]
        with open(log, "ab") as fh:
            proc = subprocess.Popen(
                argv,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        agent = AgentProc(host, namespace, sd, log, proc, argv)
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.stop()
        kill_all(agent.state_dir)


@pytest.fixture
def proxied_kubeconfig(kubeconfig: str, tmp_path: Path) -> Iterator[tuple[str, Forwarder]]:
    """A kubeconfig whose server is the lab's cuttable forwarder in front of the real
    API server (its port stays held while cut, so nobody else takes it)."""
    proxy = Forwarder(*server_of(Path(kubeconfig)), "agent-api")
    path = proxy.kubeconfig(Path(kubeconfig), tmp_path / "kubeconfig-proxied")
    yield str(path), proxy
    proxy.close()


@pytest.fixture(scope="module")
def libvirt_daemon() -> Iterator[Libvirtd]:
    """A real session-mode libvirtd for the module (hafence.lab.libvirtd)."""
    if (why := unavailable()) is not None:
        pytest.skip(why)
    with libvirt_root() as root:
        d = Libvirtd(root)
        d.start()
        try:
            yield d
        finally:
            d.stop()
