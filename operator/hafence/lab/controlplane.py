"""A real, local Kubernetes control plane: etcd + kube-apiserver on loopback.

envtest-style: generated CA and serving certificate, service-account signing keys,
RBAC authorization on, an admin client certificate written into a kubeconfig.  No
controller-manager or scheduler runs: hafence needs none (it schedules onto its own
hosts, not onto Nodes).  Used by the test fixtures and by ``hafence lab``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hafence.lab.binaries import Binaries, ensure
from hafence.lab.ports import free_port
from hafence.lab.processes import stop_process_group


class ControlPlaneError(RuntimeError):
    pass


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
    usage: list[x509.ObjectIdentifier] | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def write_pki(directory: Path) -> None:
    """CA, apiserver serving cert, admin client cert, service-account key pair."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("hafence-local-ca")
    ca = _cert(ca_name, ca_key, None, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _cert(
        _name("kube-apiserver"),
        server_key,
        (ca_name, ca_key),
        sans=[
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ],
        usage=[ExtendedKeyUsageOID.SERVER_AUTH],
    )
    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin = _cert(
        _name("hafence-admin", "system:masters"),
        admin_key,
        (ca_name, ca_key),
        usage=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    files = {
        "ca.crt": ca.public_bytes(serialization.Encoding.PEM),
        "server.crt": server.public_bytes(serialization.Encoding.PEM),
        "server.key": _pem_key(server_key),
        "admin.crt": admin.public_bytes(serialization.Encoding.PEM),
        "admin.key": _pem_key(admin_key),
        "sa.key": _pem_key(sa_key),
        "sa.pub": sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }
    for name, data in files.items():
        path = directory / name
        path.write_bytes(data)
        path.chmod(0o600)


def kubeconfig_text(
    server: str,
    ca: Path,
    cert: Path | None,
    key: Path | None,
    token: str | None = None,
    user: str = "admin",
) -> str:
    creds = (
        f"    token: {token}\n"
        if token
        else f"    client-certificate: {cert}\n    client-key: {key}\n"
    )
    return (
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: local\n  cluster:\n    server: {server}\n"
        f"    certificate-authority: {ca}\n"
        f"users:\n- name: {user}\n  user:\n{creds}"
        f"contexts:\n- name: local\n  context:\n    cluster: local\n    user: {user}\n"
        "current-context: local\n"
    )


class ControlPlane:
    """``with ControlPlane() as cp:`` gives ``cp.kubeconfig`` of a running apiserver.

    ``data_dir``: keep certificates, etcd's data and the kubeconfig there (reused by the
    next start, never deleted); default a temporary directory removed at stop.
    """

    def __init__(
        self,
        binaries: Binaries | None = None,
        log_dir: Path | None = None,
        *,
        data_dir: Path | None = None,
        etcd_port: int | None = None,
        apiserver_port: int | None = None,
    ) -> None:
        self.binaries = binaries or ensure()
        self.keep = data_dir is not None
        if data_dir is not None:
            data_dir.mkdir(parents=True, exist_ok=True)
            self.dir = data_dir
        else:
            self.dir = Path(tempfile.mkdtemp(prefix="hafence-cp-"))
        self.log_dir = log_dir or self.dir
        self.etcd_port = etcd_port or free_port()
        self.apiserver_port = apiserver_port or free_port()
        self.url = f"https://127.0.0.1:{self.apiserver_port}"
        self.kubeconfig = self.dir / "kubeconfig"
        self._procs: list[subprocess.Popen[bytes]] = []
        self.etcd: subprocess.Popen[bytes] | None = None
        self.apiserver: subprocess.Popen[bytes] | None = None

    # -- lifecycle -----------------------------------------------------------------
    def __enter__(self) -> ControlPlane:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self._procs.append(proc)
        return proc

    def start(self) -> None:
        pki = self.dir / "pki"
        if not (pki / "ca.crt").exists():  # a kept data dir keeps its certificates
            pki.mkdir(exist_ok=True)
            write_pki(pki)
        self.start_etcd()
        self.start_apiserver()
        self.kubeconfig.write_text(
            kubeconfig_text(self.url, pki / "ca.crt", pki / "admin.crt", pki / "admin.key")
        )

    def start_etcd(self) -> None:
        peer = free_port()
        self.etcd = self._spawn(
            "etcd",
            [
                str(self.binaries.etcd),
                "--data-dir",
                str(self.dir / "etcd"),
                "--listen-client-urls",
                f"http://127.0.0.1:{self.etcd_port}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{self.etcd_port}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-cluster",
                f"default=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",  # a test datastore: speed over durability
                "--log-level",
                "warn",
            ],
        )
        self._wait(f"http://127.0.0.1:{self.etcd_port}/health", "etcd", self.etcd)

    def start_apiserver(self) -> None:
        pki = self.dir / "pki"
        self.apiserver = self._spawn(
            "kube-apiserver",
            [
                str(self.binaries.kube_apiserver),
                "--etcd-servers",
                f"http://127.0.0.1:{self.etcd_port}",
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
                "--secure-port",
                str(self.apiserver_port),
                "--tls-cert-file",
                str(pki / "server.crt"),
                "--tls-private-key-file",
                str(pki / "server.key"),
                "--client-ca-file",
                str(pki / "ca.crt"),
                "--service-account-issuer",
                "https://kubernetes.default.svc",
                "--service-account-key-file",
                str(pki / "sa.pub"),
                "--service-account-signing-key-file",
                str(pki / "sa.key"),
                "--authorization-mode",
                "RBAC",
                "--service-cluster-ip-range",
                "10.0.0.0/24",
                "--disable-admission-plugins",
                "ServiceAccount",
                "--allow-privileged=true",
                "--cert-dir",
                str(self.dir / "certs"),
                "--v",
                "1",
            ],
        )
        self._wait(f"{self.url}/readyz", "kube-apiserver", self.apiserver, tls=True)

    def stop_apiserver(self) -> None:
        """Stop only the API server (agents lose contact; etcd keeps the state)."""
        if self.apiserver is not None:
            stop_process_group(self.apiserver)
            self.apiserver = None

    def stop(self) -> None:
        for proc in reversed(self._procs):
            stop_process_group(proc)
        self._procs.clear()
        if not self.keep and os.environ.get("HAFENCE_KEEP_CONTROL_PLANE") is None:
            shutil.rmtree(self.dir, ignore_errors=True)

    def exited(self) -> list[tuple[str, subprocess.Popen[bytes]]]:
        """The control plane's processes that have ended, reaped (no zombie is left)."""
        procs = (("etcd", self.etcd), ("kube-apiserver", self.apiserver))
        return [(name, p) for name, p in procs if p is not None and p.poll() is not None]

    # -- helpers -------------------------------------------------------------------
    def _wait(
        self,
        url: str,
        what: str,
        proc: subprocess.Popen[bytes],
        tls: bool = False,
        timeout: float = 120.0,
    ) -> None:
        ctx: ssl.SSLContext | None = None
        if tls:
            pki = self.dir / "pki"
            ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
            ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ControlPlaneError(
                    f"{what} exited with {proc.returncode}; log:\n{self.log_tail(what)}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise ControlPlaneError(f"{what} not ready after {timeout:.0f}s:\n{self.log_tail(what)}")

    def log_tail(self, what: str, lines: int = 30) -> str:
        path = self.log_dir / f"{what}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.binaries.kubectl), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and proc.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc
