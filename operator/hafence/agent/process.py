"""The ``process`` driver: a VM is a child process running ``spec.runtime.process.command``.

It is what the lab's VMs are.  Each process starts in a session of its own, so
stopping or restarting the agent (SIGTERM, ``systemctl restart``) leaves it running,
and the agent re-adopts it from the state directory.  Identity is proven, not assumed
from a PID: the process must carry ``HAFENCE_VM=namespace/name`` in its initial
environment and have the start time recorded when it was spawned, so a recycled PID
is never signalled.

The environment also names the host (``HAFENCE_VM_HOST``) and the placement epoch
(``HAFENCE_VM_EPOCH``): ``discover`` reads them back from ``/proc`` to find every VM
process this host's agents started, records or not.  Only session leaders count (the
VM's own children inherit its environment), and only this host's (the lab's virtual
hosts share one ``/proc``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from hafence.agent.drivers import RUNNING, LocalVM, Observed, StartError, StopError
from hafence.agent.state import StateDir
from hafence.api.vm import Runtime

ENV_VM = "HAFENCE_VM"
ENV_EPOCH = "HAFENCE_VM_EPOCH"
ENV_HOST = "HAFENCE_VM_HOST"
# The VM gets a small environment of its own: the agent's (kubeconfig paths and the
# like) is none of its business.
_PASS_ENV = ("PATH", "LANG", "LC_ALL", "TZ")


def _fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may contain spaces and parentheses: the fields start after the last ')'.
    return raw[raw.rfind(")") + 2 :].split()


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a process, None if it is gone."""
    fields = _fields(pid)
    return None if fields is None else (fields[0], int(fields[19]))


def _environ(raw: bytes) -> dict[str, str]:
    out = {}
    for var in raw.split(b"\0"):
        name, sep, value = var.partition(b"=")
        if sep:
            out[name.decode(errors="replace")] = value.decode(errors="replace")
    return out


def marked_processes(namespace: str, host: str) -> list[tuple[int, int, str, int]]:
    """(pid, start time, VM key, epoch) of every live VM process of ``namespace`` that
    an agent of ``host`` started, found by its environment marker."""
    out = []
    prefix = f"{ENV_VM}={namespace}/".encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            raw = Path(entry.path, "environ").read_bytes()
        except OSError:
            continue
        if prefix not in raw:
            continue
        env = _environ(raw)
        fields = _fields(pid)
        # A session leader (field 6 is the session ID) in its own session: the VM, not
        # one of its children, which inherit the marker.
        if fields is None or fields[0] in ("Z", "X") or int(fields[3]) != pid:
            continue
        if env.get(ENV_HOST) != host or not env.get(ENV_VM, "").startswith(f"{namespace}/"):
            continue
        try:
            epoch = int(env.get(ENV_EPOCH, "0"))
        except ValueError:
            epoch = 0
        out.append((pid, int(fields[19]), env[ENV_VM], epoch))
    return out


def start_time(pid: int) -> int | None:
    st = _stat(pid)
    return None if st is None else st[1]


def is_our_vm(pid: int, key: str, recorded_start: int | None) -> bool:
    """True if ``pid`` is alive and is the VM ``key`` we started (not a recycled PID)."""
    st = _stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    if recorded_start is not None and st[1] != recorded_start:
        return False
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        # Unreadable environ (another user): the start time alone must do.
        return recorded_start is not None
    return f"{ENV_VM}={key}".encode() in environ.split(b"\0")


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        # Started with start_new_session: the VM leads its own process group, so its
        # children (a real qemu's helpers, a shell's pipeline) go with it.
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


class ProcessDriver:
    name = "process"

    def __init__(self, state: StateDir, host: str) -> None:
        self.state = state
        self.host = host
        # Children of this agent process: polled (and so reaped) here.  Adopted VMs
        # (started by an earlier agent) are watched through /proc instead.
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, key: str, epoch: int, runtime: Runtime) -> LocalVM:
        if runtime.process is None:
            raise StartError("spec.runtime.process is missing for driver 'process'")
        command = list(runtime.process.command)
        exe = command[0]
        resolved = exe if "/" in exe else shutil.which(exe)
        if resolved is None or not os.path.isfile(resolved):
            raise StartError(
                f"spec.runtime.process.command[0] {exe!r}: no such executable"
                + ("" if "/" in exe else " on PATH")
            )
        if not os.access(resolved, os.X_OK):
            raise StartError(f"spec.runtime.process.command[0] {exe!r}: not executable")
        env = {k: os.environ[k] for k in _PASS_ENV if k in os.environ}
        env[ENV_VM] = key
        env[ENV_EPOCH] = str(epoch)
        env[ENV_HOST] = self.host
        log = open(self.state.log_path(key), "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                cwd="/",
            )
        except OSError as exc:
            raise StartError(
                f"spec.runtime.process.command[0] {exe!r}: {exc.strerror or exc}"
            ) from None
        finally:
            log.close()
        self._children[proc.pid] = proc
        return LocalVM(
            key=key, driver=self.name, epoch=epoch, pid=proc.pid, start_time=start_time(proc.pid)
        )

    def observe(self, vm: LocalVM) -> Observed:
        if vm.pid is None:
            return Observed("stopped", "no process recorded")
        child = self._children.get(vm.pid)
        if child is not None:
            code = child.poll()
            if code is None:
                return RUNNING
            del self._children[vm.pid]
            if code < 0:
                return Observed("stopped", f"killed by signal {signal.Signals(-code).name}")
            return Observed("stopped", f"exited with code {code}")
        if is_our_vm(vm.pid, vm.key, vm.start_time):
            return RUNNING
        return Observed("stopped", "process gone")

    def _gone(self, vm: LocalVM) -> bool:
        return self.observe(vm).stopped

    def stop(self, vm: LocalVM, grace: float) -> None:
        if vm.pid is None or self._gone(vm):
            return
        _signal_group(vm.pid, signal.SIGTERM)
        if self._wait_gone(vm, grace):
            return
        _signal_group(vm.pid, signal.SIGKILL)
        if not self._wait_gone(vm, 5.0):
            raise StopError(f"pid {vm.pid} still runs 5s after SIGKILL")

    def kill(self, vm: LocalVM) -> None:
        if vm.pid is None or self._gone(vm):
            return
        _signal_group(vm.pid, signal.SIGKILL)
        if not self._wait_gone(vm, 2.0):
            raise StopError(f"pid {vm.pid} still runs 2s after SIGKILL")

    def discover(self, namespace: str, runtimes: Iterable[Runtime]) -> list[LocalVM]:
        return [
            LocalVM(key=key, driver=self.name, epoch=epoch, pid=pid, start_time=started)
            for pid, started, key, epoch in marked_processes(namespace, self.host)
        ]

    def _wait_gone(self, vm: LocalVM, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._gone(vm):
                return True
            time.sleep(0.02)
        return self._gone(vm)


def kill_all(state_dir: Path) -> list[str]:
    """Kill every process VM recorded in ``state_dir`` now ("pull the host's plug").

    For the lab, which kills a virtual host as agent + VMs; the agent is killed by the
    caller.  Returns the keys of the VMs that were killed.
    """
    killed: list[str] = []
    for vm in StateDir(state_dir).load_all():
        if vm.driver != "process" or vm.pid is None:
            continue
        if is_our_vm(vm.pid, vm.key, vm.start_time):
            _signal_group(vm.pid, signal.SIGKILL)
            killed.append(vm.key)
    return killed
