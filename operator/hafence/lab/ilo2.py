"""An HP iLO2 management processor speaking RIBCL over TLS on loopback.

What Debian's ``fence_ilo2`` does, read from /usr/sbin/fence_ilo2, and what this
emulator answers (a real iLO2 with firmware 2.29, RIBCL 2.22):

1. opens TLS through ``gnutls-cli --crlf`` (``--insecure`` only with ``ssl_insecure``:
   the certificate here is self-signed, so without it gnutls-cli refuses the server);
2. sends a bare ``<?xml version="1.0"?>`` and waits for ``</RIBCL>``; iLO answers a
   syntax-error RESPONSE inside ``<RIBCL VERSION="2.22">``, and the agent reads the
   RIBCL version from it (>= 2: it then asks GET_FW_VERSION);
3. ``<RIBCL VERSION="2.0">``, ``<LOGIN USER_LOGIN=.. PASSWORD=..>``, ``<RIB_INFO
   MODE="read"><GET_FW_VERSION/>``: the answer's MANAGEMENT_PROCESSOR "iLO2" and
   FIRMWARE_VERSION > 1.29 make it use ``<HOLD_PWR_BTN TOGGLE="yes"/>`` for both off
   and on (an iLO answers ``SET_HOST_POWER`` below RIBCL 2.21, PRESS/HOLD_PWR_BTN above);
4. per status: a LOGIN block with ``<SERVER_INFO MODE="read"><GET_HOST_POWER_STATUS/>``,
   expecting ``HOST_POWER="ON"``; all on the one connection, one RIBCL document.

Accounts have iLO privileges; the article's power-only account has only
``RESET_SERVER_PRIV`` ("Virtual Power and Reset"), which every power command needs and
reading the power state does not.  Power commands are recorded as actions and change
the power as :class:`~hafence.lab.power.SimulatedPower` does; ``RESET_SERVER`` calls
``on_reset`` (the lab reboots the host).  ``dead`` makes it accept and never answer.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from xml.sax.saxutils import unescape

from hafence.lab.power import PowerCallback, SimulatedPower
from hafence.lab.redfish import self_signed

POWER_PRIV = "RESET_SERVER_PRIV"
ALL_PRIVS = frozenset(
    {"ADMIN_PRIV", "REMOTE_CONS_PRIV", POWER_PRIV, "VIRTUAL_MEDIA_PRIV", "CONFIG_ILO_PRIV"}
)
_TAG = re.compile(r"<[^<>]*>")
_ATTR = re.compile(r"([A-Z_]+)\s*=\s*(\"[^\"]*\"|'[^']*')")
_ENTITIES = {"&quot;": '"', "&apos;": "'"}


def _attrs(tag: str) -> dict[str, str]:
    return {k: unescape(v[1:-1], _ENTITIES) for k, v in _ATTR.findall(tag)}


class Ilo2(SimulatedPower):
    def __init__(
        self,
        name: str,
        users: dict[str, tuple[str, frozenset[str]]],  # login -> (password, privileges)
        *,
        power: str = "on",
        on_power_change: PowerCallback | None = None,
        power_delay: float = 0.0,
        processor: str = "iLO2",
        firmware: str = "2.29",
        ribcl_version: str = "2.22",
    ) -> None:
        super().__init__(name, power, on_power_change, power_delay)
        self.users = users
        self.processor, self.firmware, self.ribcl_version = processor, firmware, ribcl_version
        self.on_reset: Callable[[], None] | None = None
        self.logins: list[tuple[str, bool]] = []  # (login, accepted)
        self._dir = Path(tempfile.mkdtemp(prefix="hafence-ilo2-"))
        self.cert = self._dir / "cert.pem"
        self._key = self._dir / "key.pem"
        self_signed(self.cert, self._key, common_name=f"{name}-ilo2")
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.load_cert_chain(self.cert, self._key)
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self.label = f"iLO2 RIBCL/TLS (127.0.0.1:{self.port})"
        self._closed = threading.Event()
        self._conns: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept, name=f"ilo2-{name}", daemon=True)
        self._thread.start()

    # -- the server ---------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                raw, _ = self._sock.accept()
            except TimeoutError:
                continue  # closing a socket does not wake accept(): look at _closed
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        self._conns.add(raw)
        try:
            raw.settimeout(60)
            with self._tls.wrap_socket(raw, server_side=True) as conn:
                session = _Session(self, conn)
                while not self._closed.is_set():
                    data = conn.recv(4096)
                    if not data:
                        return
                    if self.dead:
                        self._closed.wait()  # accepted, never answered: a hung iLO
                        return
                    session.feed(data.decode(errors="replace"))
        except (OSError, ssl.SSLError):
            return  # a client that refused our certificate, or went away
        finally:
            self._conns.discard(raw)

    # -- what the commands do -----------------------------------------------------------
    def hold_button(self, toggle: bool) -> None:
        if self.power == "on":
            self.record("off", "off")
        elif toggle:
            self.record("on", "on")
        else:
            self.record("hold-while-off", None)

    def press_button(self) -> None:
        # A momentary press starts a host that is off; a running OS may ignore it.
        self.record("press", "on" if self.power == "off" else None)

    def reset(self) -> None:
        self.record("reset", None)
        if self.on_reset is not None:
            self.on_reset()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._sock.close()
        for conn in list(self._conns):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        for path in (self.cert, self._key):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self._dir.rmdir()

    def __enter__(self) -> Ilo2:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _Session:
    """One TLS connection: a stream of RIBCL tags, answered as they complete."""

    def __init__(self, ilo: Ilo2, conn: ssl.SSLSocket) -> None:
        self.ilo, self.conn = ilo, conn
        self.buffer = ""
        self.user: str | None = None
        self.privileges: frozenset[str] = frozenset()
        self.mode = "read"

    def feed(self, text: str) -> None:
        self.buffer += text
        while True:
            match = _TAG.search(self.buffer)
            if match is None:
                return
            self.buffer = self.buffer[match.end() :]
            self.tag(match.group(0))

    def answer(self, status: str = "0x0000", message: str = "No error", body: str = "") -> None:
        v = self.ilo.ribcl_version
        text = (
            f'<?xml version="1.0"?>\r\n<RIBCL VERSION="{v}">\r\n<RESPONSE\r\n'
            f"    STATUS=\"{status}\"\r\n    MESSAGE='{message}'\r\n     />\r\n"
            f"{body}</RIBCL>\r\n"
        )
        self.conn.sendall(text.encode())

    def tag(self, tag: str) -> None:
        name = tag.strip("<>/? \r\n").split(None, 1)[0].upper() if tag.strip("<>/? ") else ""
        closing = tag.startswith("</")
        attrs = _attrs(tag)
        if name == "XML":
            self.answer("0x0001", 'Syntax error: Line #0: syntax error near "" in the line: ""')
        elif name in ("RIBCL", "RIB_INFO", "SERVER_INFO") and not closing:
            self.mode = attrs.get("MODE", "read").lower()
        elif closing:
            if name == "LOGIN":
                self.user, self.privileges = None, frozenset()
        elif name == "LOGIN":
            self.login(attrs.get("USER_LOGIN", ""), attrs.get("PASSWORD", ""))
        elif self.user is None:
            self.answer("0x005F", "Login credentials rejected.")
        else:
            self.command(name, attrs)

    def login(self, user: str, password: str) -> None:
        account = self.ilo.users.get(user)
        ok = account is not None and account[0] == password
        self.ilo.logins.append((user, ok))
        if account is None or not ok:
            self.user = None
            self.answer("0x005F", "Login credentials rejected.")
            return
        self.user, self.privileges = user, account[1]

    def command(self, name: str, attrs: dict[str, str]) -> None:
        ilo = self.ilo
        if name == "GET_FW_VERSION":
            self.answer(
                body=f'<GET_FW_VERSION\r\n    FIRMWARE_VERSION = "{ilo.firmware}"\r\n'
                f'    FIRMWARE_DATE = "Jul 16 2015"\r\n'
                f'    MANAGEMENT_PROCESSOR = "{ilo.processor}"\r\n'
                f'    LICENSE_TYPE = "iLO 2 Advanced"\r\n    />\r\n'
            )
        elif name == "GET_HOST_POWER_STATUS":
            self.answer(
                body=f'<GET_HOST_POWER\r\n    HOST_POWER="{ilo.power.upper()}"\r\n    />\r\n'
            )
        elif name in ("SET_HOST_POWER", "HOLD_PWR_BTN", "PRESS_PWR_BTN", "RESET_SERVER"):
            if self.mode != "write":
                self.answer("0x0001", f'{name} requires MODE="write".')
            elif POWER_PRIV not in self.privileges:
                self.answer(
                    "0x0023",
                    f"User does NOT have correct privilege for action. {POWER_PRIV} required.",
                )
            else:
                self.power_command(name, attrs)
                self.answer()
        else:
            self.answer("0x0001", f"Syntax error: unknown command {name}.")

    def power_command(self, name: str, attrs: dict[str, str]) -> None:
        ilo = self.ilo
        if name == "SET_HOST_POWER":
            want = attrs.get("HOST_POWER", "").lower()
            state = "on" if want in ("on", "yes") else "off"
            ilo.record(state, state)
        elif name == "HOLD_PWR_BTN":
            ilo.hold_button(attrs.get("TOGGLE", "").lower() == "yes")
        elif name == "PRESS_PWR_BTN":
            ilo.press_button()
        else:
            ilo.reset()
