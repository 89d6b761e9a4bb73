"""Native Redfish driver: ComputerSystem PowerState and ComputerSystem.Reset over HTTPS.

A dozen lines of HTTP on the standard library rather than pyghmi's Redfish client or
sushy: pyghmi checks a certificate only through a fingerprint callback (no CA
verification by default), and sushy brings requests/stevedore and its own retry and
session logic whose time bounds we would have to fight.  Here every request has our
timeout, TLS is verified against the system trust store by default, and only the
options ``ssl_insecure=yes`` turns verification off.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any, Literal

from hafence.fencing.errors import (
    AuthFailed,
    DeviceError,
    TimedOut,
    TLSError,
    Unreachable,
    scrub,
)
from hafence.fencing.options import flag
from hafence.fencing.protocol import BaseDriver, Credentials, DriverSettings, PowerState

_RESET = {"on": "On", "off": "ForceOff"}


class RedfishDriver(BaseDriver):
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

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={
                "Authorization": self._auth,
                "Accept": "application/json",
                "Content-Type": "application/json",
            },
        )
        where = f"{self.name}: {method} {path}"
        try:
            with urllib.request.urlopen(
                request, timeout=self.settings.timeout, context=self._context
            ) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise AuthFailed(f"{where}: {exc.code} {exc.reason}: credentials refused") from None
            detail = scrub(exc.read(300).decode(errors="replace"), [self._credentials.password])
            raise DeviceError(f"{where}: {exc.code} {exc.reason} {detail}".strip()) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise TLSError(
                    f"{where}: TLS certificate not trusted "
                    f"({reason.verify_message}); set ssl_insecure=yes in the "
                    "options only if that is acceptable"
                ) from None
            if isinstance(reason, TimeoutError):
                raise TimedOut(f"{where}: no answer within {self.settings.timeout:g}s") from None
            raise Unreachable(f"{where}: {reason}") from None
        except TimeoutError:
            raise TimedOut(f"{where}: no answer within {self.settings.timeout:g}s") from None
        except OSError as exc:
            raise Unreachable(f"{where}: {exc.strerror or exc}") from None
        if not raw:
            return {}
        try:
            out: dict[str, Any] = json.loads(raw)
        except ValueError:
            raise DeviceError(f"{where}: the answer is not JSON") from None
        return out

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
        return await asyncio.to_thread(self._get_sync)

    async def _set(self, state: Literal["on", "off"]) -> None:
        await asyncio.to_thread(self._set_sync, state)
