"""Virtual hosts on this machine, and the supervisor that plays their hardware.

A virtual host is what hafence would find in a datacenter, made of local parts:

- a **host agent** process (``hafence agent``, ``process`` VM driver), with a boot ID
  of its own and a state directory of its own; its VMs are processes;
- a **path to the API server** of its own: a :class:`~hafence.lab.netcut.Forwarder`
  that the lab can cut, as a network partition would;
- a **simulated IPMI BMC** on its own loopback UDP port whose power really acts on
  the host: *off* kills the agent and every VM process of the host at once (the host
  lost power), *on* starts a fresh agent with a NEW boot ID (the host booted);
- an **SSH identity** on the lab's sshd whose forced command is the host's shell:
  ``systemctl restart hafence-agent.service`` makes the supervisor restart the agent
  with the SAME boot ID.

Which VM process belongs to which virtual host is read from the process itself: each
host's agent runs with ``PATH`` starting with the host's own ``bin`` directory, which
the agent passes on to its VMs (see :func:`vm_processes`).
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hafence.agent.process import kill_all
from hafence.lab.bmc import BmcFarm, SimulatedBmc
from hafence.lab.hostshell import HostKey, HostShells, new_key
from hafence.lab.netcut import Forwarder, server_of
from hafence.lab.procs import children, kill_group, vm_processes

log = logging.getLogger("hafence.lab")

BMC_USER = "hafence-power"

Notify = Callable[[str, str, str], None]  # (kind, subject, text)


def _noop(kind: str, subject: str, text: str) -> None:
    pass


@dataclass(frozen=True)
class AgentTimings:
    """Flags of the lab's agents (``hafence agent --help``)."""

    lease_duration: int = 3
    poll_interval: float = 0.5
    stop_grace: float = 2.0
    restart_backoff: float = 0.5

    def argv(self) -> list[str]:
        return [
            "--lease-duration",
            str(self.lease_duration),
            "--poll-interval",
            f"{self.poll_interval:g}",
            "--stop-grace",
            f"{self.stop_grace:g}",
            "--restart-backoff",
            f"{self.restart_backoff:g}",
        ]


@dataclass
class VirtualHost:
    name: str
    rack: str
    dir: Path
    forwarder: Forwarder
    bmc: SimulatedBmc
    bmc_password: str
    ssh_key: HostKey
    boot_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    agent: subprocess.Popen[bytes] | None = None
    agent_pids: list[int] = field(default_factory=list)
    powered: bool = True
    boots: int = 0
    agent_restarts: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def state_dir(self) -> Path:
        return self.dir / "state"

    @property
    def bin_dir(self) -> Path:
        return self.dir / "bin"

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def agent_log(self) -> Path:
        return self.dir / "agent.log"

    @property
    def agent_alive(self) -> bool:
        return self.agent is not None and self.agent.poll() is None


class Datacenter:
    """The virtual hosts of one lab namespace; ``close()`` stops every process it started."""

    def __init__(
        self,
        *,
        admin_kubeconfig: Path,
        namespace: str,
        workdir: Path,
        host_names: list[tuple[str, str]],  # (name, rack)
        agent: AgentTimings,
        notify: Notify = _noop,
    ) -> None:
        self.admin_kubeconfig = admin_kubeconfig
        self.namespace = namespace
        self.workdir = workdir
        self.timings = agent
        self.notify = notify
        # pyghmi's shared I/O thread is kept awake by hafence.lab.bmc's anchor socket.
        self.farm = BmcFarm()
        self.hosts_dir = workdir / "hosts"
        self.shells = HostShells(workdir / "sshd", self.hosts_dir)
        self.hosts: dict[str, VirtualHost] = {}
        self._host_names = host_names
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.soft_fence_requests: list[tuple[float, str]] = []  # (monotonic, host)

    def vm_processes(self) -> list[tuple[int, str, str | None]]:
        """(pid, VM key, host) of every VM process of this lab's namespace, right now."""
        bins = {str(h.bin_dir): h.name for h in self.hosts.values()}
        return vm_processes(bins, self.namespace)

    # -- building -------------------------------------------------------------------
    def start(self) -> None:
        """Forwarders, BMCs and sshd; the agents start with :meth:`boot_all`."""
        target = server_of(self.admin_kubeconfig)
        for name, rack in self._host_names:
            hdir = self.hosts_dir / name
            hdir.mkdir(parents=True)
            fwd = Forwarder(*target, name=name)
            # IPMI 2.0 passwords are at most 20 bytes.
            password = secrets.token_urlsafe(12)
            bmc = self.farm.add(
                name,
                BMC_USER,
                password,
                power="on",
                on_power_change=functools.partial(self._power_changed, name),
            )
            # A power cycle or hard reset reboots the host; the simulator changes no
            # power state for them, so the host is told here.
            for action in ("power_cycle", "power_reset"):
                setattr(bmc, action, functools.partial(self._reboot, name, getattr(bmc, action)))
            host = VirtualHost(name, rack, hdir, fwd, bmc, password, new_key())
            host.bin_dir.mkdir()
            host.state_dir.mkdir()
            fwd.kubeconfig(self.admin_kubeconfig, host.kubeconfig)
            self.shells.authorize(name, host.ssh_key)
            self.hosts[name] = host
        self.shells.start()
        self._supervisor = threading.Thread(
            target=self._supervise, name="lab-supervisor", daemon=True
        )
        self._supervisor.start()

    def boot_all(self) -> None:
        for host in self.hosts.values():
            with host.lock:
                self._start_agent(host, new_boot=False)

    # -- what the hardware does -----------------------------------------------------
    def _agent_argv(self, host: VirtualHost) -> list[str]:
        return [
            sys.executable,
            "-m",
            "hafence",
            "agent",
            "--host",
            host.name,
            "--namespace",
            self.namespace,
            "--kubeconfig",
            str(host.kubeconfig),
            "--state-dir",
            str(host.state_dir),
            "--enable-process-driver",
            "--boot-id",
            host.boot_id,
            *self.timings.argv(),
        ]

    def _start_agent(self, host: VirtualHost, *, new_boot: bool) -> None:
        if new_boot:
            host.boot_id = str(uuid.uuid4())
            host.boots += 1
        env = dict(os.environ)
        env["PATH"] = f"{host.bin_dir}:{env.get('PATH', '/usr/bin:/bin')}"
        env.pop("KUBECONFIG", None)
        with open(host.agent_log, "ab") as fh:
            host.agent = subprocess.Popen(
                self._agent_argv(host),
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        host.agent_pids.append(host.agent.pid)

    def _kill_agent(self, host: VirtualHost) -> list[int]:
        """SIGKILL the agent; returns the children it had (VMs it may not have recorded)."""
        proc = host.agent
        if proc is None or proc.poll() is not None:
            return []
        # Frozen first, so it cannot start a VM between our look at its children and
        # the kill.
        try:
            os.kill(proc.pid, signal.SIGSTOP)
        except ProcessLookupError:
            return []
        kids = children(proc.pid)
        proc.kill()
        proc.wait(5)
        return kids

    def _kill_vms(self, host: VirtualHost, kids: list[int]) -> list[str]:
        killed = set(kill_all(host.state_dir))
        for pid in kids:
            kill_group(pid)
        for pid, key, owner in self.vm_processes():
            if owner == host.name:
                kill_group(pid)
                killed.add(key)
        return sorted(killed)

    def _power_changed(self, name: str, state: str) -> None:
        host = self.hosts[name]
        with host.lock:
            if state == "off" and host.powered:
                host.powered = False
                killed = self._kill_vms(host, self._kill_agent(host))
                # The fault that cut the host off (a hung NIC, say) does not survive
                # the power cycle.
                host.forwarder.restore()
                self._sync_reachable(host)
                self.notify(
                    "power",
                    name,
                    "powered off: agent and "
                    + (f"VMs {', '.join(killed)} killed" if killed else "no VMs killed"),
                )
            elif state == "on" and not host.powered:
                host.powered = True
                self._start_agent(host, new_boot=True)
                self._sync_reachable(host)
                self.notify("power", name, f"powered on: agent booting, boot ID {host.boot_id[:8]}")

    def _reboot(self, name: str, record: Callable[[], None]) -> None:
        record()
        self._power_changed(name, "off")
        self._power_changed(name, "on")

    def _sync_reachable(self, host: VirtualHost) -> None:
        marker = host.dir / "unreachable"
        if host.powered and not host.forwarder.is_cut:
            marker.unlink(missing_ok=True)
        else:
            marker.touch()

    # -- faults the scenarios inject ------------------------------------------------
    def crash_agent(self, name: str) -> None:
        """SIGKILL the agent only: its VMs keep running, nothing restarts it."""
        host = self.hosts[name]
        with host.lock:
            self._kill_agent(host)

    def cut_network(self, name: str) -> None:
        host = self.hosts[name]
        with host.lock:
            host.forwarder.cut()
            self._sync_reachable(host)

    def restore_network(self, name: str) -> None:
        host = self.hosts[name]
        with host.lock:
            host.forwarder.restore()
            self._sync_reachable(host)

    def lose_power(self, name: str, *, bmc_dead: bool) -> None:
        """The host loses power; with ``bmc_dead`` its BMC goes silent too."""
        host = self.hosts[name]
        host.bmc.dead = bmc_dead
        host.bmc.set_power("off")

    def repair(self, name: str) -> None:
        """Someone fixes the host: BMC answers again, power on, network back."""
        host = self.hosts[name]
        host.bmc.dead = False
        self.restore_network(name)
        if not host.powered:
            host.bmc.set_power("on")
        elif not host.agent_alive:
            with host.lock:
                self._start_agent(host, new_boot=False)

    # -- the supervisor: soft-fence requests ----------------------------------------
    def _supervise(self) -> None:
        while not self._stop.wait(0.05):
            for host in self.hosts.values():
                for req in sorted(host.dir.glob("restart-request.*")):
                    if req.name.endswith(".tmp"):
                        continue
                    token = req.name.split(".", 1)[1]
                    req.unlink(missing_ok=True)
                    self.soft_fence_requests.append((time.monotonic(), host.name))
                    result = self._restart_agent(host)
                    (host.dir / f"restart-done.{token}").write_text(result)

    def _restart_agent(self, host: VirtualHost) -> str:
        with host.lock:
            if not host.powered:
                return "host is powered off"
            if host.agent_alive and host.agent is not None:
                host.agent.terminate()  # systemctl: SIGTERM, VMs stay up
                try:
                    host.agent.wait(self.timings.stop_grace + 5)
                except subprocess.TimeoutExpired:
                    host.agent.kill()
                    host.agent.wait(5)
            self._start_agent(host, new_boot=False)
            host.agent_restarts += 1
        self.notify("ssh", host.name, "soft fence: agent restarted (same boot ID)")
        return "ok"

    # -- teardown -------------------------------------------------------------------
    def close(self) -> None:
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
        for host in self.hosts.values():
            with host.lock:
                host.bmc.on_power_change = None
                self._kill_vms(host, self._kill_agent(host))
                host.forwarder.close()
        self.shells.close()
        self.farm.close()
        # VMs whose records were never written, by their marker.
        for pid, _key, owner in self.vm_processes():
            if owner is not None:
                kill_group(pid)
