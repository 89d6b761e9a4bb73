"""One IPMI session for one fencing operation, in its own process.

``python -m hafence.fencing.ipmi_worker`` reads JSON lines on stdin: first the
device ({address, port, username, password, privlevel}), then one request per line
({"action": "status" | "on" | "off"}), and answers each request with one JSON line:
{"powerstate": ...} or {"error": KIND, "message": ...}.  At end of input it logs out
and exits.  The parent drives the operation (request, then the verifying status
polls) through this one process, so the whole operation costs one process start and
one RMCP+ session instead of one of each per device call.  It speaks the IPMI chassis
commands itself on pyghmi's session layer (Chassis Status, Chassis Control — what
ipmitool's ``chassis power`` and so fence_ipmilan send) rather than through pyghmi's
``Command``, whose OEM lookup doubles the start-up time and adds a Get Device ID
round trip to every login.

Why a process and not a thread: pyghmi's client keeps global session state and an I/O
thread shared by every session; concurrent logins from several threads to several
BMCs stall each other (measured: a 3-PDU group timing out), and a thread stuck in
pyghmi cannot be stopped.  Each worker installs :mod:`hafence.fencing.pyghmi_io`,
which mends pyghmi's lost wake-up (a reply read before its caller waits for it).
A process per operation isolates each BMC and is killed at our timeout (the parent
bounds every answer).  Start-up costs about 0.1-0.2 s.
"""

from __future__ import annotations

import json
import sys
from typing import IO, Any

from pyghmi import exceptions as pyghmi_exc
from pyghmi.ipmi.private import session as ipmi_session

from hafence.fencing import pyghmi_io

ACTIONS = ("status", "on", "off")
# IPMI 2.0 chassis commands (netfn 0), as ipmitool's `chassis power` sends them.
_CHASSIS_STATUS = 0x01
_CHASSIS_CONTROL = 0x02
_CONTROL = {"off": 0x00, "on": 0x01}  # power down, power up


def classify(text: str) -> str:
    low = text.lower()
    if "password" in low or "unauthorized" in low or "privilege" in low:
        return "auth"
    if (
        "timeout" in low
        or "timed out" in low
        or "no longer connected" in low
        or "logged out" in low
    ):
        return "unreachable"
    return "device"


class Session:
    """The device's session, opened at the first request and again after a broken one."""

    def __init__(self, device: dict[str, Any]) -> None:
        self.device = device
        self._ipmi: Any = None  # the pyghmi Session

    def _session(self) -> Any:
        if self._ipmi is None:
            self._ipmi = ipmi_session.Session(
                bmc=self.device["address"],
                userid=self.device["username"],
                password=self.device["password"],
                port=self.device["port"],
                privlevel=self.device["privlevel"],
                keepalive=False,
            )
        return self._ipmi

    def run(self, action: str) -> dict[str, Any]:
        if action not in ACTIONS:
            return {"error": "device", "message": f"unknown action {action!r}"}
        try:
            session = self._session()
            if action == "status":
                result: dict[str, Any] = session.raw_command(netfn=0, command=_CHASSIS_STATUS)
            else:
                result = session.raw_command(
                    netfn=0, command=_CHASSIS_CONTROL, data=[_CONTROL[action]]
                )
        except pyghmi_exc.PyghmiException as exc:
            return self._failed(classify(str(exc)), str(exc))
        except OSError as exc:
            return self._failed("unreachable", exc.strerror or str(exc))
        if result.get("error"):
            return self._failed(classify(str(result["error"])), str(result["error"]))
        if action != "status":
            return {"requested": action}
        data = result.get("data") or b""
        if not data:
            return {"error": "device", "message": "chassis status without data"}
        return {"powerstate": "on" if data[0] & 1 else "off"}

    def _failed(self, kind: str, message: str) -> dict[str, Any]:
        if kind != "device":
            # pyghmi marks a session that lost its BMC broken; the next request
            # logs in again rather than failing on a dead session for good.
            self._ipmi = None
        return {"error": kind, "message": message}

    def close(self) -> None:
        if self._ipmi is not None:
            try:
                self._ipmi.logout()
            except Exception:  # a BMC that is gone cannot be logged out of
                pass
            self._ipmi = None


def serve(stdin: IO[str], stdout: IO[str]) -> None:
    session = Session(json.loads(stdin.readline()))
    try:
        for line in stdin:
            if not line.strip():
                continue
            reply = session.run(str(json.loads(line).get("action")))
            stdout.write(json.dumps(reply) + "\n")
            stdout.flush()
    finally:
        session.close()


def main() -> int:
    pyghmi_io.install()  # else ~1 exchange in 3 sleeps 0.5-1 s on a reply in hand
    serve(sys.stdin, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
