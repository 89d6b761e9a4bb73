"""The agent's state directory: one record per local VM, plus what must outlive a restart.

Layout::

    STATE/vms/NAMESPACE_NAME.json   a LocalVM (namespaces are DNS labels: no "_")
    STATE/vms/NAMESPACE_NAME.log    stdout+stderr of a process VM
    STATE/host.json                 last Host.selfFencing seen and last renewal time

Records are written atomically (write, fsync, rename) so a crash never leaves half a
record that would hide a running VM from the next agent.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hafence.agent.drivers import LocalVM


def _atomic_write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class StateDir:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.vms = root / "vms"

    def ensure(self) -> None:
        try:
            self.vms.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(f"--state-dir {str(self.root)!r} is not usable: {exc}") from None

    def _base(self, key: str) -> Path:
        namespace, _, name = key.partition("/")
        return self.vms / f"{namespace}_{name}"

    def log_path(self, key: str) -> Path:
        return self._base(key).with_suffix(".log")

    def save(self, vm: LocalVM) -> None:
        _atomic_write(self._base(vm.key).with_suffix(".json"), asdict(vm))

    def forget(self, key: str) -> None:
        self._base(key).with_suffix(".json").unlink(missing_ok=True)

    def load_all(self) -> list[LocalVM]:
        out: list[LocalVM] = []
        if not self.vms.is_dir():
            return out
        for path in sorted(self.vms.glob("*.json")):
            try:
                raw = json.loads(path.read_text())
                out.append(LocalVM(**raw))
            except (OSError, ValueError, TypeError):
                # A record we cannot read names no VM we could act on; keep it for a
                # human rather than deleting evidence.
                continue
        return out

    def read_host(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.root / "host.json").read_text())
        except (OSError, ValueError):
            return {}
        return data

    def write_host(self, data: dict[str, Any]) -> None:
        _atomic_write(self.root / "host.json", data)
