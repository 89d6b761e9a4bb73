"""Virtual hosts on this machine, and the supervisor that plays their hardware.

A virtual host is what hafence would find in a datacenter, made of local parts:

- a **host agent** process (``hafence agent``, ``process`` VM driver), with a boot ID
  of its own and a state directory of its own; its VMs are processes;
- a **path to the API server** of its own: a :class:`~hafence.lab.faultproxy.FaultProxy`
  (a :class:`~hafence.lab.netcut.Forwarder`) that the lab can cut, as a network
  partition would, or fault on cue (reset, reject, stall);
- a **simulated IPMI BMC** on its own loopback UDP port whose power really acts on
  the host: *off* kills the agent and every VM process of the host at once (the host
  lost power), *on* starts a fresh agent with a NEW boot ID (the host booted);
- a **watchdog device** stand-in (:mod:`hafence.lab.watchdogdev`) with the kernel's
  semantics, outside the agent: when it fires the host resets (agent and VMs killed,
  a fresh agent with a NEW boot ID), as a hardware watchdog would;
- a **peer endpoint** of its agent on a loopback port, with the lab's shared peer
  token (the peer check before self-fencing on API loss);
- an **SSH identity** on the lab's sshd whose forced command is the host's shell:
  ``systemctl restart hafence-agent.service`` makes the supervisor restart the agent
  with the SAME boot ID;
- a **crash kernel** (:meth:`Datacenter.crash_kernel`): the kernel panics into kdump,
  the agent and every VM die at once, Debian's ``fence_kdump_send`` runs from the
  host's own loopback address (:mod:`hafence.lab.kdump`) while the dump is written,
  then the host reboots (new boot ID).  A power-off during the dump ends it: it is
  counted in ``dumps_interrupted``, the fault the kdump level exists to avoid.

Which VM process belongs to which virtual host is read from the process itself: each
host's agent runs with ``PATH`` starting with the host's own ``bin`` directory, which
the agent passes on to its VMs (see :func:`vm_processes`).

With ``vm_driver="libvirt"`` the VMs are real: each host also has a libvirt daemon of
its own (:mod:`hafence.lab.libvirtd`), its agent reaches it as ``qemu:///session``
(``--libvirt-uri-alias``), and each HA VM is a tiny qemu domain whose disk image lives
in the lab's ``shared`` directory (the datacenter's shared storage).  Power off kills
the agent and every qemu of that host's daemon at once; power on starts a fresh daemon
(definitions kept, runtime state gone, as after a reboot) and a fresh agent.  A qemu
belongs to the host whose daemon directory its command line names, and is the VM its
``-name guest=`` names.
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
from typing import Any

from hafence.agent.process import kill_all
from hafence.lab.bmc import BmcFarm
from hafence.lab.faultproxy import FaultProxy
from hafence.lab.hostshell import HostKey, HostShells, new_key
from hafence.lab.ilo2 import POWER_PRIV, Ilo2
from hafence.lab.kdump import KdumpSender, host_address
from hafence.lab.libvirtd import Libvirtd, domain_xml, make_disk, qemu_processes
from hafence.lab.netcut import server_of
from hafence.lab.pdu import ApcPdu, DualFeed
from hafence.lab.ports import free_port
from hafence.lab.power import PowerDevice
from hafence.lab.procs import children, kill_group, vm_processes
from hafence.lab.watchdogdev import StandInDevice

log = logging.getLogger("hafence.lab")

BMC_USER = "hafence-power"
# How a virtual host is fenced: IPMI (the default), the oVirt article's iLO2, or a
# pair of APC PDUs feeding its two power supplies (the samples' concurrent group).
FENCE_TYPES = ("ipmilan", "ilo2", "apc_snmp")
ILO2_OPTIONS = "ssl=yes,ssl_insecure=yes,inet4_only=yes"
VM_COMMAND = ["/bin/sleep", "infinity"]
# What the lab's libvirt VMs name as their URI; each agent maps it to its own daemon.
LAB_LIBVIRT_URI = "qemu:///session"

Notify = Callable[[str, str, str], None]  # (kind, subject, text)


def _noop(kind: str, subject: str, text: str) -> None:
    pass


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"({exc})"


@dataclass(frozen=True)
class AgentTimings:
    """Flags of the lab's agents (``hafence agent --help``)."""

    lease_duration: int = 3
    poll_interval: float = 0.5
    stop_grace: float = 2.0
    restart_backoff: float = 0.5
    peer_refresh: float = 2.0

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
            "--peer-refresh",
            f"{self.peer_refresh:g}",
        ]


@dataclass
class VirtualHost:
    name: str
    rack: str
    dir: Path
    forwarder: FaultProxy
    bmc: PowerDevice  # an IPMI BMC, an iLO2 or two PDU outlets (Datacenter.fence_type)
    bmc_password: str
    ssh_key: HostKey
    address: str = "127.0.0.1"  # where its kdump messages come from
    boot_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    agent: subprocess.Popen[bytes] | None = None
    agent_pids: list[int] = field(default_factory=list)
    powered: bool = True
    boots: int = 0
    agent_restarts: int = 0
    kdump: KdumpSender | None = None  # while the crash kernel runs
    dumps: int = 0
    dumps_interrupted: int = 0
    watchdog: StandInDevice | None = None
    peer_port: int = 0  # fixed across agent restarts, as on a real host
    watchdog_resets: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)
    libvirtd: Libvirtd | None = None

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
        fence_type: str = "ipmilan",
        vm_driver: str = "process",
    ) -> None:
        if fence_type not in FENCE_TYPES:
            raise ValueError(f"fence type {fence_type!r}: choose {', '.join(FENCE_TYPES)}")
        self.fence_type = fence_type
        self.ilos: dict[str, Ilo2] = {}
        self.pdus: list[ApcPdu] = []
        self.feeds: dict[str, DualFeed] = {}
        self.pdu_community = secrets.token_urlsafe(12)
        self.vm_driver = vm_driver
        self.shared = workdir / "shared"  # libvirt: the VMs' disk images
        self.disk_violations: list[str] = []
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
        self.peer_token = workdir / "peer-token"

    def vm_processes(self) -> list[tuple[int, str, str | None]]:
        """(pid, VM key, host) of every VM process of this lab's namespace, right now."""
        if self.vm_driver == "libvirt":
            roots = {str(h.libvirtd.root): h.name for h in self.hosts.values() if h.libvirtd}
            found = qemu_processes(roots, self.shared)
            self._check_disks(found)
            # Only this lab's daemons: other qemu on the machine are none of its business.
            found = [f for f in found if f[2] is not None]
            return [(pid, f"{self.namespace}/{guest}", host) for pid, guest, host, _ in found]
        bins = {str(h.bin_dir): h.name for h in self.hosts.values()}
        return vm_processes(bins, self.namespace)

    def _check_disks(self, found: list[tuple[int, str, str | None, list[str]]]) -> None:
        """No disk image of the shared storage open in two qemu processes at once."""
        holders: dict[str, list[str]] = {}
        for pid, guest, host, disks in found:
            for disk in disks:
                holders.setdefault(disk, []).append(f"{guest} pid {pid} on {host or '?'}")
        for disk, who in holders.items():
            if len(who) > 1:
                self.disk_violations.append(f"{disk} open by {len(who)} qemu: {', '.join(who)}")

    def vm_runtime(self, name: str) -> dict[str, object]:
        """``spec.runtime`` of the lab VM ``name``: a process, or a qemu domain with its
        disk on the shared storage."""
        if self.vm_driver != "libvirt":
            return {"driver": "process", "process": {"command": VM_COMMAND}}
        disk = make_disk(self.shared / f"{name}.img")
        xml = domain_xml(name, disk)
        return {"driver": "libvirt", "libvirt": {"uri": LAB_LIBVIRT_URI, "domainXML": xml}}

    # -- building -------------------------------------------------------------------
    def start(self) -> None:
        """Forwarders, BMCs and sshd; the agents start with :meth:`boot_all`."""
        target = server_of(self.admin_kubeconfig)
        if self.vm_driver == "libvirt":
            # The daemons run as nobody: every directory down to theirs must be searchable.
            for d in (self.workdir, self.hosts_dir):
                d.mkdir(parents=True, exist_ok=True)
                d.chmod(0o755)
            self.shared.mkdir(exist_ok=True)
        self.peer_token.write_text(secrets.token_hex(32))
        self.peer_token.chmod(0o600)
        for index, (name, rack) in enumerate(self._host_names):
            hdir = self.hosts_dir / name
            hdir.mkdir(parents=True)
            fwd = FaultProxy(*target, name=name)
            # IPMI 2.0 passwords are at most 20 bytes.
            password = secrets.token_urlsafe(12)
            if self.fence_type == "apc_snmp":
                # SNMP v1 authenticates by community: the Secret's password is the PDUs'.
                password = self.pdu_community
            device = self._power_device(name, password)
            host = VirtualHost(
                name, rack, hdir, fwd, device, password, new_key(), address=host_address(index)
            )
            if self.vm_driver == "libvirt":
                hdir.chmod(0o755)  # the daemon runs as nobody
                host.libvirtd = Libvirtd(hdir / "libvirt", caps_seed=self.workdir / "libvirt-caps")
            host.bin_dir.mkdir()
            host.state_dir.mkdir()
            host.peer_port = free_port()
            host.watchdog = StandInDevice(
                hdir / "watchdog.sock", functools.partial(self._watchdog_fired, name)
            ).start()
            fwd.kubeconfig(self.admin_kubeconfig, host.kubeconfig)
            self.shells.authorize(name, host.ssh_key)
            self.hosts[name] = host
        self.shells.start()
        self._supervisor = threading.Thread(
            target=self._supervise, name="lab-supervisor", daemon=True
        )
        self._supervisor.start()

    def _power_device(self, name: str, password: str) -> PowerDevice:
        """The host's power management as ``fence_type`` says: a BMC, an iLO2, two PDUs."""
        changed = functools.partial(self._power_changed, name)
        if self.fence_type == "ilo2":
            ilo = Ilo2(
                name, {BMC_USER: (password, frozenset({POWER_PRIV}))}, on_power_change=changed
            )
            ilo.on_reset = functools.partial(self._reboot, name, lambda: None)
            self.ilos[name] = ilo
            return ilo
        if self.fence_type == "apc_snmp":
            if not self.pdus:
                self.pdus = [
                    ApcPdu(n, write_community=self.pdu_community) for n in ("pdu-a", "pdu-b")
                ]
            outlet = len(self.feeds) + 1
            feed = DualFeed(name, [(pdu, pdu.add_outlet(outlet, name)) for pdu in self.pdus])
            feed.on_power_change = changed
            self.feeds[name] = feed
            return feed
        bmc = self.farm.add(name, BMC_USER, password, power="on", on_power_change=changed)
        bmc.label = f"IPMI chassis (127.0.0.1:{bmc.port})"
        # A power cycle or hard reset reboots the host; the simulator changes no
        # power state for them, so the host is told here.
        for action in ("power_cycle", "power_reset"):
            setattr(bmc, action, functools.partial(self._reboot, name, getattr(bmc, action)))
        return bmc

    def fence_agents(self, host: VirtualHost) -> list[tuple[str, dict[str, Any]]]:
        """(name, FenceAgent spec without its Secret and timings) of one host."""
        base = {"hostRef": {"name": host.name}, "address": "127.0.0.1", "order": 1}
        if self.fence_type == "ilo2":
            ilo = self.ilos[host.name]
            # The article's device and options (the certificate is self-signed).
            spec = {"type": "ilo2", "port": ilo.port, "options": ILO2_OPTIONS}
            return [(f"{host.name}-ilo", base | spec)]
        if self.fence_type == "apc_snmp":
            feed = self.feeds[host.name]
            return [
                (
                    f"{host.name}-{pdu.name}",
                    base
                    | {
                        "type": "apc_snmp",
                        "port": pdu.port,
                        "plug": str(next(n for n, o in pdu.outlets.items() if o is outlet)),
                        "options": "snmp_version=1",
                    },
                )
                for pdu, outlet in feed.feeds
            ]
        bmc = self.farm[host.name]
        spec = {"type": "ipmilan", "port": bmc.port, "options": "lanplus=1"}
        return [(f"{host.name}-ipmi", base | spec)]

    def boot_all(self) -> None:
        for host in self.hosts.values():
            with host.lock:
                if host.libvirtd is not None:
                    host.libvirtd.start()
                self._start_agent(host, new_boot=False)

    def check_booting(self) -> None:
        """RuntimeError naming the host (and the end of its log) if a powered host's
        agent or libvirt daemon has exited: while the lab starts, nothing restarts it."""
        for host in self.hosts.values():
            with host.lock:
                if not host.powered or host.kdump is not None:
                    continue
                if host.agent is not None and host.agent.poll() is not None:
                    raise RuntimeError(
                        f"{host.name}: its agent exited with {host.agent.returncode} while "
                        f"booting; last lines of {host.agent_log}:\n{_tail(host.agent_log)}"
                    )
                daemon = host.libvirtd
                if (
                    daemon is not None
                    and daemon.proc is not None
                    and daemon.proc.poll() is not None
                ):
                    log_path = daemon.root / "daemon.log"
                    raise RuntimeError(
                        f"{host.name}: its libvirtd exited with {daemon.proc.returncode}; "
                        f"last lines of {log_path}:\n{_tail(log_path)}"
                    )

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
            "--peer-token-file",
            str(self.peer_token),
            "--peer-listen",
            f"127.0.0.1:{host.peer_port}",
            *(
                ["--watchdog-device", f"lab-stand-in:{host.watchdog.path}"]
                if host.watchdog is not None
                else []
            ),
            *self.timings.argv(),
            *self._libvirt_argv(host),
        ]

    def _libvirt_argv(self, host: VirtualHost) -> list[str]:
        if host.libvirtd is None:
            return []
        uri = host.libvirtd.uri
        return [
            "--libvirt-uri",
            uri,
            "--libvirt-uri-alias",
            f"{LAB_LIBVIRT_URI}={uri}",
            "--libvirt-image-dir",  # the VMs' disks: the only host files a domain may use
            str(self.shared),
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

    def _boot(self, host: VirtualHost) -> None:
        """The host boots (power on, watchdog reset, after a dump): its libvirt daemon
        first, fresh (the reset killed it and emptied its /run), then a fresh agent
        with a new boot ID."""
        if host.libvirtd is not None:
            host.libvirtd.start()
        self._start_agent(host, new_boot=True)

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
        if host.libvirtd is not None:
            killed.update(f"{self.namespace}/{d}" for d in host.libvirtd.power_off())
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
                if host.kdump is not None:
                    self._stop_dump(host)
                    host.dumps_interrupted += 1
                killed = self._kill_vms(host, self._kill_agent(host))
                if host.watchdog is not None:
                    host.watchdog.reset()  # no power, no watchdog
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
                self._boot(host)
                self._sync_reachable(host)
                self.notify("power", name, f"powered on: agent booting, boot ID {host.boot_id[:8]}")

    def _reboot(self, name: str, record: Callable[[], None]) -> None:
        record()
        self._power_changed(name, "off")
        self._power_changed(name, "on")

    def _watchdog_fired(self, name: str) -> None:
        """The watchdog device reset the host: everything on it dies, it boots again."""
        host = self.hosts[name]
        with host.lock:
            if not host.powered or self._stop.is_set():
                return
            killed = self._kill_vms(host, self._kill_agent(host))
            if host.watchdog is not None:
                host.watchdog.reset()
            host.watchdog_resets += 1
            host.forwarder.restore()  # the fault that cut the host off does not survive
            self._boot(host)
            self._sync_reachable(host)
        self.notify(
            "watchdog",
            name,
            "watchdog fired: host reset ("
            + (f"VMs {', '.join(killed)} killed" if killed else "no VMs killed")
            + f"), booting with boot ID {host.boot_id[:8]}",
        )

    def _sync_reachable(self, host: VirtualHost) -> None:
        marker = host.dir / "unreachable"
        if host.powered and not host.forwarder.is_cut and host.kdump is None:
            marker.unlink(missing_ok=True)
        else:
            marker.touch()

    # -- faults the scenarios inject ------------------------------------------------
    def freeze_agent(self, name: str) -> None:
        """SIGSTOP the agent (a hung agent): it keeps its files open and does nothing."""
        host = self.hosts[name]
        with host.lock:
            if host.agent is not None and host.agent.poll() is None:
                os.kill(host.agent.pid, signal.SIGSTOP)

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

    def crash_kernel(self, name: str, kdump_target: tuple[str, int], dump_seconds: float) -> None:
        """The kernel panics into kdump: agent and VMs die now (the crash kernel runs
        none of them) and the chassis stays on; fence_kdump_send sends to
        ``kdump_target`` (the operator's listener) every second for ``dump_seconds``,
        then the host reboots with a new boot ID."""
        host = self.hosts[name]
        with host.lock:
            if not host.powered or host.kdump is not None:
                raise RuntimeError(f"{name}: cannot crash: powered off or already dumping")
            killed = self._kill_vms(host, self._kill_agent(host))
            host.kdump = KdumpSender(host.address, kdump_target, log=host.dir / "kdump.log")
            host.dumps += 1
            self._sync_reachable(host)  # no sshd in a kdump initrd
            sender = host.kdump
        timer = threading.Timer(dump_seconds, self._dump_done, (host, sender))
        timer.daemon = True
        timer.start()
        self.notify(
            "kdump",
            name,
            f"kernel crash: dumping, fence_kdump messages from {host.address}; "
            + (f"VMs {', '.join(killed)} killed" if killed else "no VMs killed"),
        )

    def finish_dump(self, name: str) -> None:
        """The dump is written now (before ``dump_seconds``): the host reboots."""
        host = self.hosts[name]
        sender = host.kdump
        if sender is not None:
            self._dump_done(host, sender)

    def _stop_dump(self, host: VirtualHost) -> None:
        if host.kdump is not None:
            host.kdump.stop()
            host.kdump = None

    def _dump_done(self, host: VirtualHost, sender: KdumpSender) -> None:
        with host.lock:
            if host.kdump is not sender:  # powered off meanwhile, or the lab closed
                return
            self._stop_dump(host)
            self._boot(host)
            self._sync_reachable(host)
        self.notify("kdump", host.name, f"dump written, rebooted: boot ID {host.boot_id[:8]}")

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
        elif host.kdump is not None:
            with host.lock:  # the dump is cut short: the host reboots now
                self._stop_dump(host)
                self._start_agent(host, new_boot=True)
                self._sync_reachable(host)
        elif not host.agent_alive:
            with host.lock:
                self._start_agent(host, new_boot=False)

    # -- the supervisor: soft-fence requests ----------------------------------------
    def _supervise(self) -> None:
        # Polled, like a unit's job queue; 20 ms keeps the poll out of a timed restart.
        while not self._stop.wait(0.02):
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
            if host.watchdog is not None:
                host.watchdog.close()  # first: stopping the agents must not reset hosts
        for host in self.hosts.values():
            with host.lock:
                host.bmc.on_power_change = None
                self._stop_dump(host)
                self._kill_vms(host, self._kill_agent(host))
                host.forwarder.close()
        self.shells.close()
        self.farm.close()
        for ilo in self.ilos.values():
            ilo.close()
        for pdu in self.pdus:
            pdu.close()
        # VMs whose records were never written, by their marker.
        for pid, _key, owner in self.vm_processes():
            if owner is not None:
                kill_group(pid)
