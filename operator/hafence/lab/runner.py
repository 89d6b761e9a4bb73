"""One lab: a cluster, the CRDs, a datacenter of virtual hosts, the operator, watchers.

The Python API the end-to-end tests and the benchmark use::

    with Lab(LabConfig(hosts=3)) as lab:          # everything started, hosts Up, VMs Running
        result = lab.run("network-cut")           # a ScenarioResult: checks, times, actions
    # every process stopped, temp files removed

``hafence lab`` is a thin command line over it (hafence.lab.main).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from kubernetes import client as k8s

from hafence.api import KINDS
from hafence.api.crdgen import crd
from hafence.controller.settings import LAB_POLICY
from hafence.core.policy import Settings as PolicySettings
from hafence.kube import Api, Conflict, KubeError, load_api
from hafence.lab.binaries import BinariesUnavailable, ensure
from hafence.lab.controlplane import ControlPlane
from hafence.lab.datacenter import FENCE_TYPES, AgentTimings, Datacenter
from hafence.lab.invariants import InvariantChecker
from hafence.lab.kdump import free_udp_port
from hafence.lab.libvirtd import unavailable as libvirt_unavailable
from hafence.lab.ports import free_port
from hafence.lab.processes import stop_process_group
from hafence.lab.resources import manifests
from hafence.lab.timeline import Timeline, Watchers

RACK_SIZE = 2
PROFILES = ("lab", "production")
VM_DRIVERS = ("process", "libvirt")


class LabError(RuntimeError):
    pass


class LabTimeout(LabError):
    pass


@dataclass
class LabConfig:
    hosts: int = 3
    profile: str = "lab"  # the operator's timing profile
    kubeconfig: Path | None = None  # None: start a local control plane
    namespace: str | None = None
    lease_duration: int | None = None  # agents; None: 3 s (lab) or 10 s (production)
    operator_args: list[str] = field(default_factory=list)
    out: TextIO | None = field(default_factory=lambda: sys.stdout)
    spinner: bool | None = None
    keep_namespace: bool = True
    wait_scale: float = 1.0  # multiplies every wait's timeout
    self_fencing: int | None = None  # every Host self-fences with this watchdog timeout
    fence_type: str = "ipmilan"  # the hosts' power management: ipmilan, ilo2, apc_snmp
    vm_driver: str = "process"  # libvirt: qemu domains, a libvirt daemon per host
    # The operator's own kubeconfig (None: the lab's), e.g. through a fault proxy.
    operator_kubeconfig: Path | None = None
    agent_stop_grace: float = AgentTimings.stop_grace  # SIGTERM to SIGKILL of a VM

    def __post_init__(self) -> None:
        if self.hosts < 2:
            raise LabError(f"hosts {self.hosts!r}: a lab needs at least 2 hosts (one to fail)")
        if self.hosts > 20:
            raise LabError(f"hosts {self.hosts!r}: at most 20 on one machine")
        if self.profile not in PROFILES:
            raise LabError(f"profile {self.profile!r}: choose {' or '.join(PROFILES)}")
        if self.fence_type not in FENCE_TYPES:
            raise LabError(f"fence type {self.fence_type!r}: choose {', '.join(FENCE_TYPES)}")
        if self.vm_driver not in VM_DRIVERS:
            raise LabError(f"vm_driver {self.vm_driver!r}: choose {' or '.join(VM_DRIVERS)}")
        if self.vm_driver == "libvirt" and (why := libvirt_unavailable()) is not None:
            raise LabError(f"vm_driver 'libvirt': {why}")
        if self.lease_duration is not None and self.lease_duration < 3:
            raise LabError(f"lease_duration {self.lease_duration!r}: at least 3 seconds")

    @property
    def agent_lease(self) -> int:
        if self.lease_duration is not None:
            return self.lease_duration
        return 3 if self.profile == "lab" else 10

    def policy(self) -> PolicySettings:
        base = dict(LAB_POLICY) if self.profile == "lab" else {}
        return PolicySettings(**base)  # type: ignore[arg-type]


def host_layout(n: int) -> list[tuple[str, str]]:
    """hv-1..hv-N, two per rack (r1 = hv-1, hv-2; ...)."""
    return [(f"hv-{i}", f"r{(i - 1) // RACK_SIZE + 1}") for i in range(1, n + 1)]


class Lab:
    def __init__(self, config: LabConfig) -> None:
        self.config = config
        self.workdir = Path(tempfile.mkdtemp(prefix="hafence-lab-"))
        self.timeline = Timeline(config.out, spinner=config.spinner)
        self.namespace = config.namespace or f"hafence-lab-{secrets.token_hex(3)}"
        self.control_plane: ControlPlane | None = None
        self.kubeconfig: Path = config.kubeconfig or Path()
        self.api: Api | None = None
        self.dc: Datacenter | None = None
        self.operator: subprocess.Popen[bytes] | None = None
        self.operator_started = 0.0
        self.metrics_port = free_port()
        # The operator's fence_kdump listener; the kernel-crash scenario's kdump level.
        self.kdump_port = free_udp_port()
        self.watchers: Watchers | None = None
        self.checker: InvariantChecker | None = None
        self.policy = config.policy()

    # -- lifecycle ------------------------------------------------------------------
    def __enter__(self) -> Lab:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> None:
        tl = self.timeline
        if self.config.kubeconfig is None:
            tl.line("starting a local control plane (etcd + kube-apiserver on 127.0.0.1)...")
            self.control_plane = ControlPlane(log_dir=self.workdir)
            self.control_plane.start()
            self.kubeconfig = self.control_plane.kubeconfig
        self.api = load_api(str(self.kubeconfig))
        self._install_crds()
        self.api.core.create_namespace({"metadata": {"name": self.namespace}})
        layout = host_layout(self.config.hosts)
        layout_names = [name for name, _ in layout]
        self.dc = Datacenter(
            admin_kubeconfig=self.kubeconfig,
            namespace=self.namespace,
            workdir=self.workdir,
            host_names=layout,
            agent=AgentTimings(
                lease_duration=self.config.agent_lease, stop_grace=self.config.agent_stop_grace
            ),
            notify=tl.notify,
            fence_type=self.config.fence_type,
            vm_driver=self.config.vm_driver,
        )
        self.dc.start()
        objects = manifests(self.dc, self_fencing=self.config.self_fencing)
        vms = [o for o in objects if o["kind"] == "HAVirtualMachine"]
        self._apply([o for o in objects if o["kind"] != "HAVirtualMachine"])
        tl.line(
            f"namespace {self.namespace}: {len(layout)} hosts "
            f"({', '.join(f'{n} [{r}]' for n, r in layout)}), "
            f"{2 * len(layout)} VMs; sshd 127.0.0.1:{self.dc.shells.port}; "
            f"power management ({self.config.fence_type}): "
            + ", ".join(h.bmc.label for h in self.dc.hosts.values())
        )
        devices = {name: h.bmc for name, h in self.dc.hosts.items()}
        self.watchers = Watchers(str(self.kubeconfig), self.namespace, tl, devices)
        self.watchers.start()
        self.checker = InvariantChecker(self.dc.vm_processes, notify=None)
        self.checker.start()
        self._start_operator()
        self._wait_operator_loaded(len(layout))
        try:
            self.dc.boot_all()
        except RuntimeError as exc:  # a libvirtd that did not start, with its log
            raise LabError(str(exc)) from None
        tl.line(
            f"operator running (profile {self.config.profile}, quiet period "
            f"{self.policy.startup_quiet_period:g}s), agents booting (lease "
            f"{self.config.agent_lease}s); logs in {self.workdir}"
        )
        watchers = self.watchers
        dc = self.dc

        def all_up() -> bool:
            try:
                dc.check_booting()
            except RuntimeError as exc:
                raise LabError(str(exc)) from None
            return all(watchers.host_phase.get(h) == "Up" for h in layout_names)

        # Bounded by progress more than by the clock: N agents (Python processes)
        # starting at once took 30-45 s to be Up with 5 hosts on this 2-core machine
        # at load 15-20 (five imports of hafence.agent.main alone: 22 s), too close to
        # the 60 s this wait had; a host whose agent or libvirtd died fails the start
        # at once, with its log, instead of at the timeout.
        self.wait_for("every host Up", all_up, 240)
        # The VMs once the datacenter is up, so each starts on the host it prefers
        # instead of all of them on the first host that came up.
        self._apply(vms)
        self.wait_steady(first=True)
        # From here on VM processes are part of the timeline.
        self.checker.notify = tl.notify

    def close(self) -> None:
        # The operator first, while the watchers still record what it does on its way out.
        if self.operator is not None and self.operator.poll() is None:
            self.timeline.line("-- stopping the lab: operator, then agents, VMs, BMCs, sshd --")
        if self.operator is not None:
            stop_process_group(self.operator)
        if self.checker is not None:
            self.checker.stop()
        if self.watchers is not None:
            self.watchers.stop()
        if self.dc is not None:
            self.dc.close()
        if self.api is not None:
            if not self.config.keep_namespace and self.config.kubeconfig is not None:
                with contextlib.suppress(Exception):
                    self.api.core.delete_namespace(self.namespace)
            self.api.close()
        if self.control_plane is not None:
            self.control_plane.stop()
        if os.environ.get("HAFENCE_KEEP_LAB") is None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- setup steps ----------------------------------------------------------------
    def _install_crds(self) -> None:
        assert self.api is not None
        ext = k8s.ApiextensionsV1Api(self.api.client)
        for kind in KINDS:
            body = crd(kind)
            name = body["metadata"]["name"]
            try:
                ext.create_custom_resource_definition(body, _request_timeout=10)
            except k8s.exceptions.ApiException as exc:
                if exc.status != 409:
                    raise LabError(f"installing CRD {name}: {exc.status} {exc.reason}") from None
                current = ext.read_custom_resource_definition(name, _request_timeout=10)
                body["metadata"]["resourceVersion"] = current.metadata.resource_version
                ext.replace_custom_resource_definition(name, body, _request_timeout=10)
        names = {crd(k)["metadata"]["name"] for k in KINDS}

        def established() -> bool:
            for n in names:
                obj = ext.read_custom_resource_definition(n, _request_timeout=10)
                conds = {c.type: c.status for c in (obj.status.conditions or [])}
                if conds.get("Established") != "True":
                    return False
            return True

        self.wait_for("CRDs established", established, 60)
        api = self.api

        def servable() -> bool:
            # Established is not yet listable: the new storage answers 429 for a moment,
            # and an operator started then begins with a failed list.
            try:
                for kind in KINDS:
                    api.list(kind.kind, "default")
            except KubeError:
                return False
            return True

        self.wait_for("the new kinds served", servable, 30)

    def _apply(self, objects: list[dict[str, Any]]) -> None:
        assert self.api is not None
        for obj in objects:
            if obj["kind"] == "Secret":
                self.api.core.create_namespaced_secret(self.namespace, obj, _request_timeout=10)
            else:
                self.api.create(
                    obj["kind"], self.namespace, {k: v for k, v in obj.items() if k != "kind"}
                )

    def _start_operator(self) -> None:
        argv = [
            sys.executable, "-m", "hafence", "operator",
            "--kubeconfig", str(self.config.operator_kubeconfig or self.kubeconfig),
            "--namespace", self.namespace,
            "--profile", self.config.profile,
            "--identity", "hafence-lab",
            "--leader-lease-namespace", self.namespace,
            "--leader-lease-name", "hafence-lab-operator",
            "--metrics-bind-address", f"127.0.0.1:{self.metrics_port}",
            "--kdump-listen", f"127.0.0.1:{self.kdump_port}",
            *self.config.operator_args,
        ]  # fmt: skip
        env = dict(os.environ)
        env.pop("KUBECONFIG", None)
        for key in [k for k in env if k.startswith("HAFENCE_")]:
            env.pop(key)  # the lab's flags, not the caller's environment, configure it
        with open(self.workdir / "operator.log", "ab") as fh:
            self.operator = subprocess.Popen(
                argv,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        self.operator_started = time.monotonic()

    def operator_metrics(self) -> dict[str, float]:
        """The operator's Prometheus samples (name{labels} -> value); {} if unreachable."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                text = resp.read().decode()
        except OSError:
            return {}
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    continue
        return out

    def _wait_operator_loaded(self, hosts: int) -> None:
        """Boot the hosts once the operator leads and has loaded the datacenter.

        Its ``hafence_hosts`` gauge counts the Hosts of the engines it runs, which exist
        only after it won the election and rebuilt its state: hosts that come online
        from then on are seen by a running operator, as in a datacenter where the
        operator was deployed first.
        """

        def loaded() -> bool:
            samples = self.operator_metrics()
            return sum(v for k, v in samples.items() if k.startswith("hafence_hosts{")) >= hosts

        try:
            self.wait_for("the operator leading, datacenter loaded", loaded, 60)
            # Its quiet period starts when it leads (OperatorStarted), not when the
            # process started: the fast path's power check is held until it ends.
            self.operator_started = time.monotonic()
        except LabTimeout:
            self.timeline.line("  (no hafence_hosts gauge from the operator after 60s; going on)")

    # -- waiting --------------------------------------------------------------------
    def wait_for(self, what: str, pred: Callable[[], Any], timeout: float) -> Any:
        timeout *= self.config.wait_scale
        deadline = time.monotonic() + timeout
        with self.timeline.waiting(what):
            while True:
                self._check_alive()
                value = pred()
                if value:
                    return value
                if time.monotonic() > deadline:
                    raise LabTimeout(f"timed out after {timeout:.0f}s waiting for {what}")
                self.timeline.tick()
                time.sleep(0.1)

    def _check_alive(self) -> None:
        if self.operator is not None and self.operator.poll() is not None:
            raise LabError(
                f"the operator exited with {self.operator.returncode}; last lines of its log:\n"
                + self.log_tail("operator.log")
            )

    def log_tail(self, name: str, lines: int = 25) -> str:
        path = self.workdir / name
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def steady(self) -> bool:
        """Every host Up, every HA VM Running in exactly one process on its host."""
        assert self.watchers is not None and self.checker is not None and self.dc is not None
        if any(self.watchers.host_phase.get(h) != "Up" for h in self.dc.hosts):
            return False
        procs = self.checker.running()
        for name, (phase, host) in self.watchers.vm_state.items():
            if name.startswith("ha-") and (phase != "Running" or procs.get(name) != [host]):
                return False
            # No VM still being started either: a qemu domain takes seconds to start,
            # and a fault injected meanwhile would hit a host in mid-start.
            if phase in (None, "Pending", "Scheduled"):
                return False
        return bool(self.watchers.vm_state)

    def wait_steady(self, *, first: bool = False) -> None:
        timeout = 60.0 + (self.policy.startup_quiet_period if first else 0.0)
        self.wait_for("every host Up and every HA VM running", self.steady, timeout)
        if first:
            # No fault before the operator's start-up quiet period is over: it would
            # not fence yet, by design, and the figures would measure the quiet period.
            until = self.operator_started + self.policy.startup_quiet_period + 1
            if until > time.monotonic():
                self.wait_for(
                    "the operator's start-up quiet period",
                    lambda: time.monotonic() >= until,
                    until - time.monotonic() + 5,
                )

    # -- questions ------------------------------------------------------------------
    def vms_on(self, host: str) -> dict[str, bool]:
        """VMs whose process runs on ``host`` now: name -> highly available."""
        assert self.checker is not None
        return {
            n: n.startswith("ha-") for n, hosts in self.checker.running().items() if host in hosts
        }

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The real kubectl against the lab's cluster, as a user would type it."""
        if self.control_plane is not None:
            return self.control_plane.kubectl(*args, check=False)
        exe = shutil.which("kubectl")
        if exe is None:
            try:
                exe = str(ensure().kubectl)
            except BinariesUnavailable as exc:
                raise LabError(f"kubectl not found on PATH nor buildable: {exc}") from None
        return subprocess.run(
            [exe, "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            check=False,
        )

    def lease_expiry(self, host: str) -> float | None:
        """Monotonic time at which ``host``'s heartbeat Lease expires (renewTime + duration)."""
        assert self.api is not None
        try:
            lease = self.api.coordination.read_namespaced_lease(
                host, self.namespace, _request_timeout=5
            )
        except Exception:
            return None
        renew = lease.spec.renew_time
        if renew is None:
            return None
        wall = float(renew.timestamp()) + float(lease.spec.lease_duration_seconds or 0)
        return time.monotonic() + (wall - time.time())

    def patch_host(self, host: str, patch: dict[str, Any]) -> None:
        assert self.api is not None
        try:
            self.api.patch("Host", self.namespace, host, patch)
        except (Conflict, KubeError) as exc:
            raise LabError(str(exc)) from None
