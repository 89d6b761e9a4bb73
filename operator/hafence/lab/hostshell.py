"""The virtual hosts' SSH endpoint: one real OpenSSH sshd, one key per host.

Every virtual host gets a key pair of its own; its public key is authorized with a
forced command (``command="... lab-host NAME"``), so whatever the operator asks over
SSH with that key runs as *that* host's shell.  The shell understands what hafence's
soft fencing sends by default (``systemctl restart hafence-agent.service``) and turns
it into a request file the lab's supervisor picks up: the supervisor restarts the
host's agent (same boot ID, as ``systemctl restart`` would) and answers with a done
file, which is when the command returns, as ``systemctl restart`` returns once the
unit is started again.

A host that is powered off or cut from the network answers like an unreachable
machine: ssh's exit status 255 and its message on stderr.  (The connection to the
single sshd itself succeeds; the operator sees the same failure either way.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from hafence.lab.ports import free_port
from hafence.lab.sshd import SSHD, ensure_privsep_dir

# The forced command: stdlib only, run by sshd with the lab's Python.
_SHELL = r"""
import os, re, sys, time, uuid
host, root = sys.argv[1], sys.argv[2]
hdir = os.path.join(root, host)
cmd = os.environ.get("SSH_ORIGINAL_COMMAND", "").strip()
if os.path.exists(os.path.join(hdir, "unreachable")):
    sys.stderr.write(f"ssh: connect to host {host} port 22: No route to host\n")
    sys.exit(255)
if not re.fullmatch(r"(sudo )?systemctl restart hafence-agent(\.service)?", cmd):
    sys.stderr.write(f"{host}: lab host: {cmd or '(no command)'}: not available here\n")
    sys.exit(127)
token = uuid.uuid4().hex
req = os.path.join(hdir, f"restart-request.{token}")
done = os.path.join(hdir, f"restart-done.{token}")
with open(req + ".tmp", "w") as fh:
    fh.write(cmd)
os.rename(req + ".tmp", req)
deadline = time.monotonic() + float(sys.argv[3])
while time.monotonic() < deadline:
    if os.path.exists(done):
        result = open(done).read().strip()
        os.unlink(done)
        if result == "ok":
            sys.exit(0)
        sys.stderr.write(f"{host}: Job for hafence-agent.service failed: {result}\n")
        sys.exit(1)
    time.sleep(0.05)
sys.stderr.write(f"{host}: Job for hafence-agent.service timed out\n")
sys.exit(1)
"""


@dataclass(frozen=True)
class HostKey:
    """One host's SSH identity as hafence sees it: the private key goes into a Secret."""

    private_openssh: bytes
    public: str  # "ssh-ed25519 BASE64"


def new_key() -> HostKey:
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return HostKey(private, public.decode())


class HostShells:
    """``with HostShells(dir) as shells:`` runs sshd on ``127.0.0.1:shells.port``."""

    def __init__(self, workdir: Path, hosts_dir: Path, command_timeout: float = 30.0) -> None:
        self.dir = workdir
        self.hosts_dir = hosts_dir
        self.command_timeout = command_timeout
        self.port = free_port()
        self.user = _user()
        self._host_key = new_key()
        self.host_key: str = self._host_key.public
        self._authorized: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None

    def authorize(self, host: str, key: HostKey) -> None:
        """Let ``key`` in, as the shell of ``host`` (call before ``start``)."""
        # -S: the shell is stdlib only, and an interpreter without site starts faster
        # (a soft fence's restart is timed, bench/ttr.py).
        command = f"{sys.executable} -S {self.dir / 'lab-host.py'} {host} {self.hosts_dir} " + (
            f"{self.command_timeout:g}"
        )
        self._authorized.append(
            f'command="{command}",no-port-forwarding,no-agent-forwarding,'
            f"no-X11-forwarding,no-pty {key.public} lab-{host}"
        )

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "lab-host.py").write_text(_SHELL)
        hk = self.dir / "ssh_host_ed25519_key"
        hk.write_bytes(self._host_key.private_openssh)
        hk.chmod(0o600)
        auth = self.dir / "authorized_keys"
        auth.write_text("\n".join(self._authorized) + "\n")
        auth.chmod(0o600)
        config = self.dir / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {hk}",
                    f"PidFile {self.dir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {auth}",
                    "StrictModes no",
                    "UsePAM no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "PermitRootLogin prohibit-password",
                    f"AllowUsers {self.user}",
                    "LogLevel ERROR",
                    "",
                ]
            )
        )
        ensure_privsep_dir()
        if not Path(SSHD).exists():
            raise RuntimeError(f"{SSHD} not found: install Debian's openssh-server")
        log = open(self.dir / "sshd.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        _wait_port(self.port, self.proc, self.dir / "sshd.log")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> HostShells:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 10) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd not listening on 127.0.0.1:{port} after {timeout}s")
