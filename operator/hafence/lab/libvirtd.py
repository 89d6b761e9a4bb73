"""A libvirt daemon of one virtual host: session-mode ``libvirtd`` with its own dirs.

Each virtual host gets a daemon of its own, so its agent sees only its own domains:
``libvirtd`` in session mode (``qemu:///session``) keeps its socket, domain
definitions and runtime state under ``$XDG_RUNTIME_DIR``, ``$XDG_CONFIG_HOME`` and
``$XDG_CACHE_HOME``, which the lab points into the host's directory::

    ROOT/run/libvirt/libvirt-sock          the socket (URI: ``uri``)
    ROOT/run/libvirt/qemu/run/NAME.pid     one per running domain (the qemu PID)
    ROOT/config/libvirt/qemu/NAME.xml      persistent definitions (survive a "reboot")
    ROOT/cache/libvirt/qemu/log/NAME.log   qemu's output
    ROOT/daemon.log

A session daemon refuses to run as root, so it runs as an unprivileged user
(``nobody``); the agent, as root, reaches it through the socket.  qemu's output goes
to files (``stdio_handler = "file"``), so no ``virtlogd`` is needed.

``power_off`` is the virtual BMC's "off": every qemu of this daemon is SIGKILLed at
once, then the daemon, and the runtime directory is emptied as a reboot empties
``/run``; definitions stay, like a real host's ``/etc/libvirt``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

LIBVIRTD = "/usr/sbin/libvirtd"
QEMU = "/usr/bin/qemu-system-x86_64"
# Where a session daemon caches what it probed of qemu (under its root).
CAPS_CACHE = Path("cache/libvirt/qemu/cache/capabilities")


def unavailable() -> str | None:
    """Why real libvirt VMs cannot run here, or None if they can."""
    for path, package in ((LIBVIRTD, "libvirt-daemon"), (QEMU, "qemu-system-x86")):
        if not os.access(path, os.X_OK):
            return f"{path} missing (Debian package {package})"
    if not shutil.which("setpriv"):
        return "setpriv missing (util-linux)"
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return "libvirt-python missing (pip install 'hafence[libvirt]')"
    if os.geteuid() != 0:
        return "the lab's libvirt daemons run as user nobody: needs root"
    return None


def domain_xml(name: str, disk: Path | None = None, memory_mib: int = 32) -> str:
    """A tiny TCG domain: no display, no NIC, the firmware on the serial console
    (``virsh console`` shows SeaBIOS), and optionally a raw disk on the shared
    directory.  The disk holds no OS: the guest finds nothing to boot and idles
    (~1 % CPU; SeaBIOS tries again every 60 s)."""
    disk_xml = (
        ""
        if disk is None
        else f"<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
        f"<source file='{disk}'/><target dev='vda' bus='virtio'/></disk>"
    )
    return (
        f"<domain type='qemu'><name>{name}</name>"
        f"<memory unit='MiB'>{memory_mib}</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/>"
        "<bios useserial='yes'/></os>"
        "<on_poweroff>destroy</on_poweroff><on_crash>destroy</on_crash>"
        f"<devices><emulator>{QEMU}</emulator>{disk_xml}"
        "<serial type='pty'/><console type='pty'/><video><model type='none'/></video>"
        "<memballoon model='none'/></devices></domain>"
    )


def qemu_processes(
    roots: dict[str, str], shared: Path
) -> list[tuple[int, str, str | None, list[str]]]:
    """(pid, guest name, host, disk images of ``shared`` it holds open) of every live
    qemu.  The host is the one whose daemon directory (``roots``: path -> host) the
    command line names (its monitor socket and keys live there)."""
    out = []
    prefix = f"{shared}/"
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(entry.path, "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if not argv or argv[0] != QEMU or "-name" not in argv:
            continue
        name = argv[argv.index("-name") + 1] if argv.index("-name") + 1 < len(argv) else ""
        guest = next((f[6:] for f in name.split(",") if f.startswith("guest=")), None)
        if guest is None:
            continue
        line = " ".join(argv)
        host = next((h for root, h in roots.items() if f"{root}/" in line), None)
        disks = []
        with contextlib.suppress(OSError):
            for fd in os.scandir(Path(entry.path, "fd")):
                with contextlib.suppress(OSError):
                    target = os.readlink(fd.path)
                    if target.startswith(prefix):
                        disks.append(target)
        out.append((int(entry.name), guest, host, sorted(set(disks))))
    return out


def make_disk(path: Path, size: int = 1 << 20, user: str = "nobody") -> Path:
    """A raw disk image the daemons' user can open (no OS on it: the guest idles)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.truncate(size)
    pw = pwd.getpwnam(user)
    for p in (path.parent, path):
        os.chown(p, pw.pw_uid, pw.pw_gid)
    return path


@contextlib.contextmanager
def libvirt_root(prefix: str = "hafence-libvirtd-") -> Iterator[Path]:
    """A fresh directory the daemon's user can reach (pytest's and most temporary
    directories are root-only), removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


class Libvirtd:
    """``caps_seed``: a directory the lab's daemons share their qemu capability cache
    through.  A fresh daemon probes qemu (several qemu runs, seconds on a busy
    machine) on its first use; the first daemon of a lab leaves its cache there and
    the others start from a copy, which libvirt validates itself (same qemu binary,
    same libvirt) and would probe again if it did not match."""

    def __init__(self, root: Path, user: str = "nobody", caps_seed: Path | None = None) -> None:
        self.root = root
        self.user = pwd.getpwnam(user)
        self.caps_seed = caps_seed
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.root / "run" / "libvirt" / "libvirt-sock"

    @property
    def uri(self) -> str:
        return f"qemu+unix:///session?socket={self.socket_path}"

    def _dirs(self) -> dict[str, Path]:
        return {
            "HOME": self.root / "home",
            "XDG_RUNTIME_DIR": self.root / "run",
            "XDG_CONFIG_HOME": self.root / "config",
            "XDG_CACHE_HOME": self.root / "cache",
        }

    def start(self, timeout: float = 30.0) -> None:
        for parent in self.root.resolve().parents:
            if not parent.stat().st_mode & 0o001:
                raise RuntimeError(
                    f"libvirtd for {self.root}: user {self.user.pw_name} cannot reach it "
                    f"({parent} is not world-searchable); use a directory like /tmp/NAME"
                )
        dirs = self._dirs()
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        conf = dirs["XDG_CONFIG_HOME"] / "libvirt"
        conf.mkdir(exist_ok=True)
        (conf / "qemu.conf").write_text('stdio_handler = "file"\n')
        self._seed_caps()
        for top, subdirs, files in os.walk(self.root):
            for path in [top, *(os.path.join(top, n) for n in subdirs + files)]:
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
        env = {"PATH": "/usr/sbin:/usr/bin:/bin", **{k: str(v) for k, v in dirs.items()}}
        uid, gid = str(self.user.pw_uid), str(self.user.pw_gid)
        with open(self.root / "daemon.log", "ab") as log:
            self.proc = subprocess.Popen(
                ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", LIBVIRTD],
                env=env,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"libvirtd for {self.root} exited with code {self.proc.returncode}; "
                    f"see {self.root / 'daemon.log'}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"libvirtd for {self.root}: no socket within {timeout:g}s")
            time.sleep(0.05)
        self._warm_up()
        self._share_caps()

    def _seed_caps(self) -> None:
        if self.caps_seed is None or not self.caps_seed.is_dir():
            return
        mine = self.root / CAPS_CACHE
        for src in self.caps_seed.glob("*.xml"):
            if not (mine / src.name).exists():
                mine.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, mine / src.name)

    def _share_caps(self) -> None:
        if self.caps_seed is None or any(self.caps_seed.glob("*.xml")):
            return
        self.caps_seed.mkdir(parents=True, exist_ok=True)
        for src in (self.root / CAPS_CACHE).glob("*.xml"):
            tmp = self.caps_seed / f".{src.name}.tmp"
            shutil.copyfile(src, tmp)
            tmp.rename(self.caps_seed / src.name)  # whole, for a daemon starting now

    def _warm_up(self) -> None:
        """The first call of a fresh daemon probes qemu's capabilities (seconds on a
        busy machine): done here, so an agent's first start does not pay it."""
        import libvirt

        conn = libvirt.open(self.uri)
        try:
            conn.getDomainCapabilities(QEMU, "x86_64", "pc", "qemu")
        finally:
            conn.close()

    def _answers(self) -> bool:
        if not self.socket_path.exists():
            return False
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(str(self.socket_path))
            except OSError:
                return False
        return True

    def qemu_pids(self) -> dict[str, int]:
        """Domain name -> qemu PID of every domain this daemon runs (from its pid files,
        checked against the process's command line)."""
        out = {}
        run = self.root / "run" / "libvirt" / "qemu" / "run"
        for pidfile in run.glob("*.pid"):
            if pidfile.stem == "driver":
                continue
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text().strip())
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if f"guest={pidfile.stem}".encode() in b" ".join(cmdline):
                    out[pidfile.stem] = pid
        return out

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """The daemon dies; its qemu processes keep running, as with a real libvirtd."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # the daemon only: qemu runs in sessions of its own
            self.proc.wait()

    def power_off(self) -> list[str]:
        """Every domain dies at once, then the daemon; /run is emptied (a reboot).
        Returns the names of the domains that were running."""
        pids = self.qemu_pids()
        for pid in pids.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.kill()
        shutil.rmtree(self.root / "run", ignore_errors=True)
        return sorted(pids)

    def stop(self) -> None:
        """Lab teardown: like power_off, and the definitions go too."""
        self.power_off()
