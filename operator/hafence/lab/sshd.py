"""A real OpenSSH sshd on a loopback port, with generated host and client keys.

For the fencing tests (soft fencing, fence-proxy execution) and the lab's virtual
hosts.  Everything lives in a private directory removed on stop; the daemon runs in
the foreground (``-D``) as a child process, so stopping it is killing one pid.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from hafence.lab.ports import free_port
from hafence.lab.processes import stop_process_group

SSHD = "/usr/sbin/sshd"


def ensure_privsep_dir() -> None:
    """sshd refuses to start without its privilege separation directory, which
    Debian's unit creates at boot: a fresh machine that never ran the unit lacks it."""
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)


def keygen(path: Path, kind: str = "ed25519") -> tuple[str, str]:
    """(private key text, public key 'TYPE BASE64') written at ``path``/``path``.pub."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "", "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    public = " ".join(path.with_suffix(".pub").read_text().split()[:2])
    return path.read_text(), public


class Sshd:
    """``with Sshd() as sshd:`` -> sshd.port, sshd.host_key, sshd.client_key, sshd.user."""

    def __init__(self, port: int | None = None, extra_config: str = "") -> None:
        self.port = port or free_port()
        self.user = getpass.getuser()
        self.extra_config = extra_config
        self.dir = Path(tempfile.mkdtemp(prefix="hafence-sshd-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.host_key = ""
        self.client_key = ""
        self.client_public_key = ""

    @property
    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {self.host_key}"

    def authorize(self, public_key: str) -> None:
        with (self.dir / "authorized_keys").open("a") as f:
            f.write(public_key + "\n")

    def start(self, timeout: float = 10.0) -> Sshd:
        os.chmod(self.dir, 0o700)
        _, self.host_key = keygen(self.dir / "host_ed25519")
        self.client_key, self.client_public_key = keygen(self.dir / "client_ed25519")
        self.authorize(self.client_public_key)
        config = self.dir / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\n"
            f"HostKey {self.dir / 'host_ed25519'}\n"
            f"AuthorizedKeysFile {self.dir / 'authorized_keys'}\n"
            f"PidFile {self.dir / 'sshd.pid'}\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
            "UsePAM no\nStrictModes no\nPrintMotd no\nLogLevel ERROR\n"
            f"AllowUsers {self.user}\n{self.extra_config}\n"
        )
        ensure_privsep_dir()
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "sshd.log", "wb"),  # noqa: SIM115
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.dir / "sshd.log").read_text(errors="replace")
                self.stop()
                raise RuntimeError(f"sshd exited at start: {log[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not listen on 127.0.0.1:{self.port} within {timeout}s")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc, grace=5)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Sshd:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
