"""Native Redfish driver: ComputerSystem PowerState and ComputerSystem.Reset over HTTPS.

A dozen lines of HTTP on the standard library rather than pyghmi's Redfish client or
sushy: pyghmi checks a certificate only through a fingerprint callback (no CA
verification by default), and sushy brings requests/stevedore and its own retry and
session logic whose time bounds we would have to fight.  Here every request has our
timeout, TLS is verified against the system trust store by default, and only the
options ``ssl_insecure=yes`` turns verification off.  An operation (a status read, or
a power request and its verifying polls) runs over one keep-alive connection: one
TCP connect and one TLS handshake (see :mod:`hafence.fencing.session`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import socket
import ssl
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

from hafence.fencing.errors import (
    AuthFailed,
    DeviceError,
    TimedOut,
    TLSError,
    Unreachable,
    scrub,
)
from hafence.fencing.options import flag
from hafence.fencing.protocol import Credentials, DriverSettings, PowerState
from hafence.fencing.session import SessionDriver

_RESET = {"on": "On", "off": "ForceOff"}
T = TypeVar("T")


class RedfishDriver(SessionDriver):
    def __init__(
        self,
        settings: DriverSettings,
        address: str,
        port: int | None,
        credentials: Credentials,
        options: Mapping[str, str],
        system: str | None = None,
    ) -> None:
        super().__init__(settings)
        secure = flag(options, "ssl", True)
        scheme = "https" if secure else "http"
        default_port = 443 if secure else 80
        host = f"[{address}]" if ":" in address else address
        self.base = f"{scheme}://{host}:{port or default_port}"
        self._host = address
        self._port = port or default_port
        self._conn: http.client.HTTPConnection | None = None
        self._conn_used = False
        self.system = system or options.get("systems_uri")
        self._credentials = credentials
        self._auth = (
            "Basic "
            + base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()
        )
        self._context: ssl.SSLContext | None = None
        if secure:
            if flag(options, "ssl_insecure"):
                self._context = ssl._create_unverified_context()  # asked for explicitly
            else:
                self._context = ssl.create_default_context()
        self._system_path: str | None = None

    # -- one keep-alive HTTPS connection per operation ----------------------------
    def _connection(self) -> http.client.HTTPConnection:
        conn = self._conn
        if conn is None:
            if self._context is not None:
                conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self.settings.timeout, context=self._context
                )
            else:
                conn = http.client.HTTPConnection(
                    self._host, self._port, timeout=self.settings.timeout
                )
            self._conn = conn
            self._conn_used = False
        return conn

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        """Close ``conn`` (even under a thread still blocked on it) and forget it."""
        if self._conn is conn:
            self._conn = None
        sock = conn.sock
        if sock is not None:
            # close() alone does not wake a thread blocked in recv(); shutdown() does.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        conn.close()

    async def _end_session(self) -> None:
        if self._conn is not None:
            self._drop(self._conn)

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except asyncio.CancelledError:
            # Our bound fired: the thread may still wait on the socket; the next
            # call of the operation starts on a new connection.
            if self._conn is not None:
                self._drop(self._conn)
            raise

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        where = f"{self.name}: {method} {path}"
        reused = self._conn is not None and self._conn_used
        try:
            try:
                status, reason, raw = self._exchange(method, path, body)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                if not reused:
                    raise
                # The device closed an idle keep-alive connection before our request
                # reached it: a new connection is a first attempt, not a retry.
                status, reason, raw = self._exchange(method, path, body)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            raise Unreachable(f"{where}: the connection was closed by the device") from None
        if status in (401, 403):
            raise AuthFailed(f"{where}: {status} {reason}: credentials refused")
        if status >= 400:
            detail = scrub(raw[:300].decode(errors="replace"), [self._credentials.password])
            raise DeviceError(f"{where}: {status} {reason} {detail}".strip())
        if not raw:
            return {}
        try:
            out: dict[str, Any] = json.loads(raw)
        except ValueError:
            raise DeviceError(f"{where}: the answer is not JSON") from None
        return out

    def _exchange(
        self, method: str, path: str, body: dict[str, Any] | None
    ) -> tuple[int, str, bytes]:
        where = f"{self.name}: {method} {path}"
        conn = self._connection()
        data = json.dumps(body).encode() if body is not None else None
        try:
            conn.request(
                method,
                path,
                body=data,
                headers={
                    "Authorization": self._auth,
                    "Accept": "application/json",
                    "Content-Type": "application/json",
                },
            )
            response = conn.getresponse()
            raw = response.read()
            self._conn_used = True
            if response.will_close:
                self._drop(conn)
            return response.status, response.reason, raw
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            self._drop(conn)
            raise
        except ssl.SSLCertVerificationError as exc:
            self._drop(conn)
            raise TLSError(
                f"{where}: TLS certificate not trusted "
                f"({exc.verify_message}); set ssl_insecure=yes in the "
                "options only if that is acceptable"
            ) from None
        except TimeoutError:
            self._drop(conn)
            raise TimedOut(f"{where}: no answer within {self.settings.timeout:g}s") from None
        except (OSError, http.client.HTTPException) as exc:
            self._drop(conn)
            raise Unreachable(f"{where}: {getattr(exc, 'strerror', None) or exc}") from None

    def _system(self) -> str:
        if self._system_path is None:
            if self.system:
                self._system_path = (
                    self.system
                    if self.system.startswith("/")
                    else f"/redfish/v1/Systems/{self.system}"
                )
            else:
                members = self._request("GET", "/redfish/v1/Systems").get("Members", [])
                if len(members) != 1:
                    raise DeviceError(
                        f"{self.name}: {len(members)} systems on this "
                        "Redfish service: name one as the agent's plug"
                    )
                self._system_path = str(members[0]["@odata.id"])
        return self._system_path

    def _get_sync(self) -> PowerState:
        state = self._request("GET", self._system()).get("PowerState")
        if state in ("On", "PoweringOff"):
            return "on"
        if state in ("Off", "PoweringOn"):
            return "off"
        raise DeviceError(f"{self.name}: unexpected PowerState {state!r}")

    def _set_sync(self, state: Literal["on", "off"]) -> None:
        system = self._system()
        self._request(
            "POST", f"{system}/Actions/ComputerSystem.Reset", {"ResetType": _RESET[state]}
        )

    async def _get(self) -> PowerState:
        return await self._in_thread(self._get_sync)

    async def _set(self, state: Literal["on", "off"]) -> None:
        await self._in_thread(lambda: self._set_sync(state))
