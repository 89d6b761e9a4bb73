"""The split-brain checker: samples the real VM processes, not the resources.

Every ``interval`` seconds it lists the processes that carry the agent's VM marker
(``HAFENCE_VM=ns/name``) and attributes each to its virtual host.  A VM seen in two
live processes at once — on two hosts, or twice on one — is a violation of hafence's
first safety rule, recorded with both hosts and PIDs.  It also keeps every VM's
process history (host, PID, first and last seen), which the scenarios' checks and the
timeline read: "ha-1 started on hv-2" is a fact about a process, not about a status.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

Sampler = Callable[[], list[tuple[int, str, str | None]]]
Notify = Callable[[str, str, str], None]


@dataclass
class Sighting:
    key: str  # namespace/name
    host: str | None
    pid: int
    first_seen: float  # monotonic
    last_seen: float
    gone: float | None = None  # first sample without it

    @property
    def name(self) -> str:
        return self.key.split("/", 1)[-1]


@dataclass(frozen=True)
class Violation:
    time: float
    key: str
    where: tuple[tuple[str | None, int], ...]  # (host, pid)

    def describe(self) -> str:
        places = ", ".join(f"{h or '?'} (pid {p})" for h, p in self.where)
        return f"{self.key} ran in {len(self.where)} processes at once: {places}"


class InvariantChecker:
    def __init__(self, sample: Sampler, interval: float = 0.1, notify: Notify | None = None):
        self.sample = sample
        self.interval = interval
        self.notify = notify
        self.sightings: list[Sighting] = []
        self.violations: list[Violation] = []
        self.samples = 0
        self._live: dict[int, Sighting] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.sample_once()
        self._thread = threading.Thread(target=self._run, name="lab-invariants", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample_once()

    def sample_once(self) -> None:
        procs = self.sample()
        now = time.monotonic()
        with self._lock:
            self.samples += 1
            seen = set()
            for pid, key, host in procs:
                seen.add(pid)
                s = self._live.get(pid)
                if s is None or s.key != key:
                    s = Sighting(key, host, pid, now, now)
                    self._live[pid] = s
                    self.sightings.append(s)
                    if self.notify:
                        self.notify(
                            "process", s.name, f"process started on {host or '?'} (pid {pid})"
                        )
                s.last_seen = now
            for pid in list(self._live):
                if pid not in seen:
                    s = self._live.pop(pid)
                    s.gone = now
                    if self.notify:
                        self.notify(
                            "process", s.name, f"process gone from {s.host or '?'} (pid {pid})"
                        )
            by_key: dict[str, list[Sighting]] = {}
            for s in self._live.values():
                by_key.setdefault(s.key, []).append(s)
            for key, group in by_key.items():
                if len(group) > 1:
                    v = Violation(now, key, tuple(sorted((s.host, s.pid) for s in group)))
                    # One record per distinct overlap, not one per sample.
                    if not any(o.key == v.key and o.where == v.where for o in self.violations):
                        self.violations.append(v)
                        if self.notify:
                            self.notify("VIOLATION", key.split("/", 1)[-1], v.describe())

    # -- questions the checks ask ---------------------------------------------------
    def running(self) -> dict[str, list[str | None]]:
        """VM name -> hosts where a process of it lives now (from the last sample)."""
        with self._lock:
            out: dict[str, list[str | None]] = {}
            for s in self._live.values():
                out.setdefault(s.name, []).append(s.host)
            return out

    def started_between(self, names: set[str], t0: float, t1: float) -> list[Sighting]:
        """Processes of ``names`` first seen in [t0, t1]."""
        with self._lock:
            return [s for s in self.sightings if s.name in names and t0 <= s.first_seen <= t1]

    def first_start(self, name: str, after: float, host_not: set[str]) -> Sighting | None:
        with self._lock:
            for s in self.sightings:
                if s.name == name and s.first_seen >= after and s.host not in host_not:
                    return s
        return None
