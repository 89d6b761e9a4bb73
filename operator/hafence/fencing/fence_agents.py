"""Any ``fence_*`` agent of Debian's fence-agents package, run as a subprocess.

Arguments go to the agent's stdin as ``key=value`` lines (the agents' documented
"stdin" interface), so the password never appears on a command line.  Exit codes:
for ``status`` 0 = on, 2 = off, 1 = failure; for ``on``/``off`` 0 = done.  The agent
runs locally or, through a :data:`Runner` from :mod:`hafence.fencing.ssh`, on a
fence proxy host.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from hafence.api import grammar
from hafence.fencing.errors import (
    AuthFailed,
    DeviceError,
    FenceError,
    TimedOut,
    Unreachable,
    Unsupported,
    scrub,
)
from hafence.fencing.options import FLAGS, own_default
from hafence.fencing.protocol import BaseDriver, Credentials, DriverSettings, PowerState


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


# (program, stdin, timeout) -> Completed; raises TimedOut / Unreachable itself.
Runner = Callable[[str, bytes, float], Awaitable[Completed]]

AGENT_DIRS = ("/usr/sbin", "/sbin", "/usr/bin")


def find_agent(program: str) -> str:
    found = shutil.which(program, path=os.pathsep.join((*AGENT_DIRS, os.environ.get("PATH", ""))))
    if found is None:
        raise Unsupported(f"fence agent {program!r} is not installed (Debian fence-agents)")
    return found


async def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(proc.wait(), 5)


async def run_local(program: str, stdin: bytes, timeout: float) -> Completed:  # noqa: ASYNC109 — bounds a thread/process too
    """Run a fence agent here; on timeout its whole process group is killed."""
    path = find_agent(program)
    proc = await asyncio.create_subprocess_exec(
        path,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        env={
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "PYTHONWARNINGS": "ignore",
        },
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        await _kill(proc)
        raise TimedOut(f"{program}: no result within {timeout:g}s (killed)") from None
    except asyncio.CancelledError:
        await _kill(proc)
        raise
    assert proc.returncode is not None
    return Completed(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


_SECRET_KEYS = frozenset({"username", "password", "community"})

_LOG_LINE = re.compile(r"^\S+ \S+ (ERROR|DEBUG|INFO|WARNING): ", re.MULTILINE)
_AUTH = re.compile(
    r"unable to establish ipmi v2|password|authenticat|login failed|"
    r"unauthori[sz]ed|invalid user",
    re.IGNORECASE,
)
# "No Response from": net-snmp's words when a UDP device never answers (fence_*_snmp
# report it as a failed status, not as a connection error).
_UNREACH = re.compile(
    r"connection timed out|unable to connect|connection refused|"
    r"no route|name or service not known|timed out|no response from",
    re.IGNORECASE,
)


# fence-agents logs pexpect's whole object on EOF: thirty lines of fields, among them
# the prompts it waited for ('ssword:' would read as an authentication failure).  Only
# what the device or the helper program said ("before") is worth keeping.
_PEXPECT_FIELD = re.compile(
    r"^<\S+ object at 0x[0-9a-f]+>$|^End Of File \(EOF\)|^\d+: re\.compile|"
    r"^(command|args|buffer|after|match|match_index|exitstatus|flag_eof|pid|child_fd|closed|"
    r"timeout|delimiter|logfile\w*|maxread|ignorecase|searchwindowsize|delay\w+|searcher)"
    r"( \(last \d+ chars\))?:"
)
_PEXPECT_BEFORE = re.compile(r"^before \(last \d+ chars\): (.*)$")


def without_pexpect_dump(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        before = _PEXPECT_BEFORE.match(line)
        if before:
            said = before.group(1).strip("'\"").replace("\\r", " ").replace("\\n", " ").strip()
            if said:
                out.append(said)
        elif not _PEXPECT_FIELD.match(line):
            out.append(line)
    return out


_STDIN_KEY = re.compile(r"[a-z0-9][a-z0-9_.]{0,63}")


def _clean(value: str) -> bool:
    # fence-agents read stdin in text mode: '\r' ends a line as well as '\n'.
    return value == value.strip() and all(c.isprintable() for c in value)


def stdin_lines(values: Mapping[str, str], secret: frozenset[str] = frozenset()) -> bytes:
    """The ``key=value`` lines of an agent's stdin, each key and value checked here.

    The last line of defence: a line break in any value would add an option line
    (``passwd_script=...`` runs a command).  Values of ``secret`` keys are never
    quoted in the error.
    """
    lines = []
    for key, value in values.items():
        if not _STDIN_KEY.fullmatch(key):
            raise Unsupported(f"refusing fence-agent option name {key!r}")
        if not _clean(value):
            shown = "the Secret's value" if key in secret else repr(value)
            raise Unsupported(
                f"refusing to pass {key}: {shown} has a line break, control character "
                "or leading/trailing space"
            )
        if key in FLAGS:
            if value == "1":
                lines.append(f"{key}=1")
        else:
            lines.append(f"{key}={value}")
    return ("\n".join(lines) + "\n").encode()


def _is_snmp(program: str) -> bool:
    return program.endswith("_snmp") or program in ("fence_ifmib", "fence_raritan")


class FenceAgentDriver(BaseDriver):
    def __init__(
        self,
        settings: DriverSettings,
        program: str,
        address: str,
        port: int | None,
        plug: str | None,
        credentials: Credentials | None,
        options: Mapping[str, str],
        runner: Runner = run_local,
    ) -> None:
        super().__init__(settings)
        # A spec that never passed the API server (or an older CRD) is checked again.
        for error in (
            grammar.address_error(address),
            grammar.plug_error(plug) if plug is not None else None,
        ):
            if error:
                raise Unsupported(f"{settings.name}: {error}")
        for key, value in options.items():
            why = None if own_default(key, value) else grammar.forbidden_key(key.replace("-", "_"))
            if why:
                raise Unsupported(f"{settings.name}: option {key!r} {why}")
        self.program = program
        self.address = address
        self.port = port
        self.plug = plug
        self.options = dict(options)
        self.runner = runner
        self._credentials = credentials

    @property
    def set_timeout(self) -> float:
        return self.settings.timeout + self.settings.power_wait

    def _stdin(self, action: str) -> bytes:
        values: dict[str, str] = {"action": action, "ip": self.address}
        if self.port is not None:
            values["ipport"] = str(self.port)
        if self.plug is not None:
            values["plug"] = self.plug
        values.update({k: v for k, v in self.options.items() if k not in values})
        # The agent's own waits must end before our kill does.
        values.setdefault("power_timeout", str(int(self.settings.power_wait)))
        values.setdefault("verbose", "1")  # the only way to tell "bad password" apart
        if self._credentials is not None:
            values["username"] = self._credentials.username
            values["password"] = self._credentials.password
            if _is_snmp(self.program) and values.get("snmp_version", "") != "3":
                # SNMP v1/v2c authenticate by community; it is a credential too.
                values["community"] = self._credentials.password
        return stdin_lines(values, _SECRET_KEYS)

    def _scrub(self, text: str) -> str:
        creds = self._credentials
        return scrub(text, [creds.password] if creds else [])

    def _failure(self, action: str, done: Completed) -> FenceError:
        text = self._scrub(done.stderr + "\n" + done.stdout)
        lines = without_pexpect_dump([_LOG_LINE.sub("", ln).strip() for ln in text.splitlines()])
        lines = [
            ln
            for ln in lines
            if ln
            and "DeprecationWarning" not in ln
            and not ln.startswith("from pipes")
            # the command line, not an outcome ("-o PubkeyAuthentication=no")
            and not ln.startswith(("Executing:", "Running command:"))
        ]
        text = "\n".join(lines)
        detail = "; ".join(dict.fromkeys(lines))[-400:] or f"exit code {done.returncode}"
        message = f"{self.name}: {action} failed: {detail}"
        if _AUTH.search(text):
            return AuthFailed(message)
        if _UNREACH.search(text):
            return Unreachable(message)
        return DeviceError(message)

    async def _run(self, action: str, timeout: float) -> Completed:  # noqa: ASYNC109 — bounds a thread/process too
        try:
            return await self.runner(self.program, self._stdin(action), timeout)
        except TimedOut as exc:
            raise TimedOut(f"{self.name}: {action}: {self._scrub(str(exc))}") from None

    async def _get(self) -> PowerState:
        done = await self._run("status", self.settings.timeout)
        if done.returncode == 0:
            return "on"
        if done.returncode == 2:
            return "off"
        raise self._failure("status", done)

    async def _set(self, state: Literal["on", "off"]) -> None:
        done = await self._run(state, self.set_timeout)
        if done.returncode != 0:
            raise self._failure(state, done)
