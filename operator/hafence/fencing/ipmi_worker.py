"""One pyghmi IPMI operation in its own process: ``python -m hafence.fencing.ipmi_worker``.

Reads a JSON request on stdin ({address, port, username, password, privlevel,
action}), writes one JSON line: {"powerstate": ...} or {"error": KIND, "message": ...}.

Why a process and not a thread: pyghmi's client keeps global session state and an I/O
thread shared by every session; concurrent logins from several threads to several
BMCs stall each other (measured: a 3-PDU group timing out), and a thread stuck in
pyghmi cannot be stopped.  A process per operation isolates each BMC and is killed
at our timeout.  Start-up costs about 0.1 s.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from pyghmi import exceptions as pyghmi_exc
from pyghmi.ipmi import command as ipmi_command


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


def run(request: dict[str, Any]) -> dict[str, Any]:
    try:
        cmd = ipmi_command.Command(
            bmc=request["address"],
            userid=request["username"],
            password=request["password"],
            port=request["port"],
            privlevel=request["privlevel"],
            keepalive=False,
        )
        if request["action"] == "status":
            result: dict[str, Any] = cmd.get_power()
        else:
            result = cmd.set_power(request["action"], wait=False)
        try:
            cmd.ipmi_session.logout()
        except Exception:
            pass
    except pyghmi_exc.PyghmiException as exc:
        return {"error": classify(str(exc)), "message": str(exc)}
    except OSError as exc:
        return {"error": "unreachable", "message": exc.strerror or str(exc)}
    if result.get("error"):
        return {"error": classify(str(result["error"])), "message": str(result["error"])}
    return {"powerstate": result.get("powerstate", result.get("pendingpowerstate"))}


def main() -> int:
    request = json.loads(sys.stdin.read())
    sys.stdout.write(json.dumps(run(request)) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
