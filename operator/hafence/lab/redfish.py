"""sushy-tools' Redfish emulator (fake systems driver) on loopback, over TLS.

A generated self-signed certificate (SAN 127.0.0.1) serves HTTPS; HTTP basic auth
uses a generated bcrypt htpasswd file.  It is served by cheroot rather than the
emulator's own Werkzeug server, which closes the connection after every response:
real BMCs keep HTTP/1.1 connections alive, and the driver's one connection per
operation is tested against that.  The fake driver applies a power change 1-11 s
after the request (random, like slow hardware); ``power_delay`` fixes that delay so
tests and benchmarks are repeatable (``None`` keeps the emulator's own).  ``systems``
puts more than one system behind the service, as a chassis manager or a multi-node
enclosure does.  Each emulator keeps its power states to itself (see start()).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

import bcrypt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hafence.lab.ports import free_port
from hafence.lab.processes import stop_process_group

SYSTEM_UUID = "27946b59-9e44-4fa7-8e91-f3527a1ef094"
# More systems behind the same BMC (a chassis manager, a multi-node enclosure): the
# wrong one must never be acted on.
OTHER_SYSTEM_UUIDS = (
    "5b2a9c0e-6f3d-4b1e-9a57-0c8e2d4f6a11",
    "9e4d1f7a-2c6b-4e3a-8d95-b1f0c7a3e522",
)

_LAUNCHER = """
import random, sys
delay = sys.argv.pop(1)
if delay != "default":
    from sushy_tools.emulator.resources.systems import fakedriver
    class _Fixed:
        def randint(self, a, b):
            return int(delay)
    fakedriver.random = _Fixed()
import flask
def _serve(app, host, port, ssl_context=None, **_):
    # Werkzeug closes every connection after one response; BMCs keep them alive.
    from cheroot import wsgi
    from cheroot.ssl.builtin import BuiltinSSLAdapter
    server = wsgi.Server((host, port), app, numthreads=4)
    server.ssl_adapter = BuiltinSSLAdapter(
        app.config["SUSHY_EMULATOR_SSL_CERT"], app.config["SUSHY_EMULATOR_SSL_KEY"]
    )
    server.safe_start()
flask.Flask.run = _serve
from sushy_tools.emulator.main import main
sys.exit(main())
"""


def self_signed(cert: Path, key: Path, common_name: str = "hafence-redfish-emulator") -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)


class RedfishEmulator:
    """``with RedfishEmulator(user, password) as rf:`` -> rf.port, rf.cert (CA file)."""

    def __init__(
        self,
        username: str,
        password: str,
        *,
        power: str = "On",
        power_delay: int | None = 0,
        port: int | None = None,
        systems: int = 1,
    ) -> None:
        if not 1 <= systems <= 1 + len(OTHER_SYSTEM_UUIDS):
            raise ValueError(f"systems={systems}: 1 to {1 + len(OTHER_SYSTEM_UUIDS)}")
        self.system_ids = [SYSTEM_UUID, *OTHER_SYSTEM_UUIDS][:systems]
        self.username = username
        self._password = password
        self.power = power
        self.power_delay = power_delay
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="hafence-redfish-"))
        self.cert = self.dir / "cert.pem"
        self.key = self.dir / "key.pem"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def system_path(self) -> str:
        return f"/redfish/v1/Systems/{SYSTEM_UUID}"

    def power_state(self, system_id: str) -> str:
        """The emulator's own PowerState of a system ("On", "Off"), read over HTTPS."""
        request = urllib.request.Request(f"{self.url}/redfish/v1/Systems/{system_id}")
        token = base64.b64encode(f"{self.username}:{self._password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        context = ssl.create_default_context(cafile=str(self.cert))
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            state: str = json.load(response)["PowerState"]
            return state

    def start(self, timeout: float = 20.0) -> RedfishEmulator:
        self_signed(self.cert, self.key)
        htpasswd = self.dir / "htpasswd"
        digest = bcrypt.hashpw(self._password.encode(), bcrypt.gensalt(rounds=4)).decode()
        htpasswd.write_text(f"{self.username}:{digest}\n")
        config = self.dir / "emulator.conf"
        systems = [
            {
                "uuid": uuid,
                "name": "host" if i == 0 else f"host{i + 1}",
                "power_state": self.power,
                "external_notifier": False,
                "nics": [],
            }
            for i, uuid in enumerate(self.system_ids)
        ]
        config.write_text(
            f"SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n"
            f"SUSHY_EMULATOR_LISTEN_PORT = {self.port}\n"
            f"SUSHY_EMULATOR_SSL_CERT = {str(self.cert)!r}\n"
            f"SUSHY_EMULATOR_SSL_KEY = {str(self.key)!r}\n"
            f"SUSHY_EMULATOR_AUTH_FILE = {str(htpasswd)!r}\n"
            f"SUSHY_EMULATOR_FAKE_DRIVER = True\n"
            # Power states live in this emulator's own directory: by default every
            # emulator on the machine shares /tmp/sushy-emulator/fakedriver.sqlite, so one
            # emulator's "off" is another's (same system UUIDs), across tests and runs.
            f"SUSHY_EMULATOR_STATE_DIR = {str(self.dir / 'state')!r}\n"
            f"SUSHY_EMULATOR_FAKE_SYSTEMS = {systems!r}\n"
            f"EXTERNAL_NOTIFICATION_URL = 'http://127.0.0.1:9'\n"
        )
        delay = "default" if self.power_delay is None else str(self.power_delay)
        log = open(self.dir / "emulator.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, delay, "--config", str(config), "--fake"],
            stdout=log,
            stderr=log,
            start_new_session=True,
            cwd=self.dir,
            env={**os.environ, "HOME": str(self.dir)},
        )
        log.close()
        context = ssl.create_default_context(cafile=str(self.cert))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                text = (self.dir / "emulator.log").read_text(errors="replace")
                self.stop()
                raise RuntimeError(f"sushy-emulator exited at start: {text[-800:]}")
            try:
                urllib.request.urlopen(f"{self.url}/redfish/v1/", timeout=1, context=context)
                return self
            except urllib.error.HTTPError:
                return self  # it answers (e.g. 401): up
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"sushy-emulator did not answer on {self.url} within {timeout}s")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc, grace=5)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedfishEmulator:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
