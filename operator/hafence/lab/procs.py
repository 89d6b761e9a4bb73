"""Processes of the virtual hosts, read from /proc: which VM runs where, and kills.

A VM process carries ``HAFENCE_VM=namespace/name`` (the agent's marker) and, first in
its ``PATH``, the bin directory of the virtual host whose agent started it: the lab
runs each agent with such a ``PATH`` and the agent passes ``PATH`` on to its VMs.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from hafence.agent.process import ENV_VM


def first_path_entry(environ: bytes) -> str | None:
    for var in environ.split(b"\0"):
        if var.startswith(b"PATH="):
            return var[5:].split(b":", 1)[0].decode(errors="replace")
    return None


def vm_processes(bin_dirs: dict[str, str], namespace: str) -> list[tuple[int, str, str | None]]:
    """(pid, VM key, host) of every live VM process of ``namespace``.

    ``bin_dirs`` maps each virtual host's bin directory to its name: the first entry
    of a VM's ``PATH`` names the host whose agent started it (None: not one of ours).
    """
    out: list[tuple[int, str, str | None]] = []
    marker = f"{ENV_VM}={namespace}/".encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            environ = Path(entry.path, "environ").read_bytes()
        except OSError:
            continue
        if marker not in environ:
            continue
        key = next(
            (v[len(ENV_VM) + 1 :].decode() for v in environ.split(b"\0") if v.startswith(marker)),
            None,
        )
        if key is None or _zombie(int(entry.name)):
            continue
        out.append((int(entry.name), key, bin_dirs.get(first_path_entry(environ) or "")))
    return out


def _zombie(pid: int) -> bool:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return raw[raw.rfind(")") + 2 :].split()[0] in ("Z", "X")


def children(pid: int) -> list[int]:
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        if int(raw[raw.rfind(")") + 2 :].split()[1]) == pid:
            out.append(int(entry.name))
    return out


def kill_group(pid: int) -> None:
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
