"""What happens in the lab, in order: recorded, printed as it happens, summarized.

Sources, each on a thread of its own:

- watches on the namespace's Hosts (phase changes), HAVirtualMachines (phase and host
  changes) and core/v1 Events (what the operator says it did);
- the simulated BMCs' recorded power actions (what really reached each BMC);
- the lab itself (faults, confirmations) and the process checker (VM processes).

Each entry carries a monotonic time; the printer shows it as time since the current
scenario's fault ("+12.3s").  On a terminal a spinner line says what the lab waits
for; ``--output json`` prints the entries as JSON instead (see :meth:`Timeline.to_json`).
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from kubernetes import watch as k8s_watch

from hafence.kube import load_api
from hafence.lab.power import PowerDevice

POWER_ACTIONS = ("on", "off", "cycle", "reset", "shutdown")


@dataclass
class Entry:
    t: float  # monotonic
    kind: str  # fault, host, vm, event, bmc, ssh, power, process, lab, VIOLATION
    subject: str
    text: str
    scenario: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


class Timeline:
    def __init__(self, out: TextIO | None = sys.stdout, *, spinner: bool | None = None) -> None:
        self.out = out
        self.spinner = (out is not None and out.isatty()) if spinner is None else spinner
        self.entries: list[Entry] = []
        self.scenario: str | None = None
        self.t0: float | None = None  # the current scenario's fault time
        self.started = time.monotonic()
        self._lock = threading.RLock()
        self._status: str | None = None
        self._status_since = 0.0
        self._spin = itertools.cycle("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")
        self._last_plain_wait = 0.0

    # -- recording ------------------------------------------------------------------
    def add(
        self, kind: str, subject: str, text: str, *, t: float | None = None, **data: Any
    ) -> Entry:
        entry = Entry(
            t if t is not None else time.monotonic(), kind, subject, text, self.scenario, data
        )
        with self._lock:
            self.entries.append(entry)
            self._print(entry)
        return entry

    def notify(self, kind: str, subject: str, text: str) -> None:
        """The callback shape the datacenter and the checker call."""
        self.add(kind, subject, text)

    def begin(self, scenario: str, text: str) -> None:
        with self._lock:
            self.scenario = scenario
            self.t0 = None
            self._write(f"\n== {scenario}: {text}\n")

    def fault(self, subject: str, text: str) -> float:
        now = time.monotonic()
        with self._lock:
            self.t0 = now
            self.add("fault", subject, text, t=now)
        return now

    def since(self, t: float) -> list[Entry]:
        with self._lock:
            return [e for e in self.entries if e.t >= t]

    # -- printing -------------------------------------------------------------------
    def rel(self, t: float) -> str:
        base = self.t0 if self.t0 is not None else self.started
        return f"{t - base:+7.1f}s"

    def _print(self, e: Entry) -> None:
        if self.out is None:
            return
        mark = "!!" if e.kind == "VIOLATION" else "  "
        self._write(f"{mark}{self.rel(e.t)}  {e.kind:<8} {e.subject:<10} {e.text}\n")

    def _write(self, text: str) -> None:
        if self.out is None:
            return
        with self._lock:
            if self.spinner and self._status is not None:
                self.out.write("\r\033[K")
            self.out.write(text)
            if self.spinner and self._status is not None:
                self.out.write(self._status_line())
            self.out.flush()

    def _status_line(self) -> str:
        waited = time.monotonic() - self._status_since
        return f"{next(self._spin)} waiting: {self._status} ({waited:.0f}s)"

    @contextlib.contextmanager
    def waiting(self, what: str) -> Iterator[None]:
        with self._lock:
            self._status, self._status_since = what, time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                if self.spinner and self.out is not None:
                    self.out.write("\r\033[K")
                    self.out.flush()
                self._status = None

    def tick(self) -> None:
        """Redraw the spinner (called by waits every ~0.1 s)."""
        if self.out is None or self._status is None:
            return
        with self._lock:
            if self.spinner:
                self.out.write("\r\033[K" + self._status_line())
                self.out.flush()
            elif time.monotonic() - self._last_plain_wait >= 10:
                # Not a terminal: one line every 10 s, so logs show progress without noise.
                self._last_plain_wait = time.monotonic()
                waited = time.monotonic() - self._status_since
                self.out.write(f"  ... waiting: {self._status} ({waited:.0f}s)\n")
                self.out.flush()

    def line(self, text: str) -> None:
        self._write(text + "\n")

    def to_json(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{**asdict(e), "t": round(e.t - self.started, 3)} for e in self.entries]


# -- sources ------------------------------------------------------------------------


class Watchers:
    """Threads feeding the timeline from the API server and the BMCs; ``stop()`` ends them."""

    def __init__(
        self, kubeconfig: str, namespace: str, timeline: Timeline, bmcs: dict[str, PowerDevice]
    ) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.timeline = timeline
        self.bmcs = bmcs
        self.host_phase: dict[str, str | None] = {}
        self.vm_state: dict[str, tuple[str | None, str | None]] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._bmc_seen: dict[str, int] = {}
        self._event_seen: dict[str, int] = {}
        self._primed: dict[str, threading.Event] = {
            k: threading.Event() for k in ("Host", "HAVirtualMachine", "Event", "bmc")
        }

    def start(self) -> None:
        for target in (self._watch_hosts, self._watch_vms, self._watch_events, self._poll_bmcs):
            t = threading.Thread(target=target, name=f"lab-{target.__name__}", daemon=True)
            t.start()
            self._threads.append(t)
        deadline = time.monotonic() + 30
        for ev in self._primed.values():
            ev.wait(max(0.0, deadline - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=6)

    def _loop(self, kind: str, on_object: Any) -> None:
        api = load_api(self.kubeconfig)
        first = True
        try:
            while not self._stop.is_set():
                try:
                    listing = api.list(kind, self.namespace)
                    # Only the first listing primes the state silently: a later one (after
                    # a watch's timeout) carries changes made between the two watches.
                    for obj in listing.get("items", []):
                        on_object(obj, initial=first)
                    if first:
                        first = False
                        self._primed[kind].set()
                    rv = listing["metadata"]["resourceVersion"]
                    for ev in api.watch(kind, self.namespace, rv, timeout_seconds=5):
                        if self._stop.is_set():
                            return
                        if ev["type"] in ("ADDED", "MODIFIED"):
                            on_object(ev["object"], initial=False)
                except Exception:
                    if self._stop.wait(0.5):
                        return
        finally:
            api.close()

    def _watch_hosts(self) -> None:
        def on_host(obj: dict[str, Any], initial: bool) -> None:
            name = obj["metadata"]["name"]
            status = obj.get("status") or {}
            phase = status.get("phase")
            old = self.host_phase.get(name)
            self.host_phase[name] = phase
            if initial or phase == old:
                return
            fencing = status.get("fencing") or {}
            self.timeline.add(
                "host",
                name,
                f"{old or '-'} → {phase}",
                phase=phase,
                old=old,
                boot_id=status.get("bootID"),
                proof=fencing.get("proof"),
            )

        self._loop("Host", on_host)

    def _watch_vms(self) -> None:
        def on_vm(obj: dict[str, Any], initial: bool) -> None:
            name = obj["metadata"]["name"]
            status = obj.get("status") or {}
            state = (status.get("phase"), status.get("host"))
            old = self.vm_state.get(name)
            self.vm_state[name] = state
            if initial or state == old:
                return
            old_phase, old_host = old or (None, None)
            phase, host = state
            where = host or "-"
            if old_host and host and old_host != host:
                where = f"{old_host} → {host}"
            self.timeline.add(
                "vm",
                name,
                f"{old_phase or '-'} → {phase} on {where}",
                phase=phase,
                host=host,
                old_phase=old_phase,
                old_host=old_host,
            )

        self._loop("HAVirtualMachine", on_vm)

    def _watch_events(self) -> None:
        api = load_api(self.kubeconfig)
        first = True
        try:
            while not self._stop.is_set():
                try:
                    listing = api.core.list_namespaced_event(self.namespace, _request_timeout=10)
                    for ev in listing.items:
                        self._event(ev, initial=first)  # as for objects (_loop)
                    if first:
                        first = False
                        self._primed["Event"].set()
                    w = k8s_watch.Watch()
                    for item in w.stream(
                        api.core.list_namespaced_event,
                        self.namespace,
                        resource_version=listing.metadata.resource_version,
                        timeout_seconds=5,
                        _request_timeout=10,
                    ):
                        if self._stop.is_set():
                            return
                        if item["type"] in ("ADDED", "MODIFIED"):
                            self._event(item["object"], initial=False)
                except Exception:
                    if self._stop.wait(0.5):
                        return
        finally:
            api.close()

    def _event(self, ev: Any, initial: bool) -> None:
        uid = ev.metadata.uid
        count = ev.count or 1
        if self._event_seen.get(uid, 0) >= count:
            return
        self._event_seen[uid] = count
        if initial:
            return
        obj = ev.involved_object
        self.timeline.add(
            "event",
            obj.name or "?",
            f"{ev.type} {ev.reason}: {ev.message}",
            reason=ev.reason,
            type=ev.type,
            involved_kind=obj.kind,
        )

    def _poll_bmcs(self) -> None:
        for name, bmc in self.bmcs.items():
            self._bmc_seen[name] = len(bmc.actions)
        self._primed["bmc"].set()
        while not self._stop.wait(0.05):
            for name, bmc in self.bmcs.items():
                actions = list(bmc.actions)
                for action in actions[self._bmc_seen.get(name, 0) :]:
                    self.timeline.add(
                        "bmc",
                        name,
                        # "IPMI chassis (127.0.0.1:623)" -> "IPMI chassis power off (...)"
                        bmc.label.replace(" (", f" power {action.name} (", 1),
                        t=action.time,
                        action=action.name,
                    )
                self._bmc_seen[name] = len(actions)
