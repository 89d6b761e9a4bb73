"""What a scenario found: its checks, the times it observed, and the steps derived.

Times are seconds after the fault, as the lab observed them (watch events, the BMCs'
recorded actions, sampled VM processes); ``allowed`` holds, for the same milestones,
when the configured timeouts let them happen, so the operator's own overhead per step
is the difference (:meth:`ScenarioResult.overheads`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class ScenarioResult:
    scenario: str
    victims: list[str]
    t0: float = 0.0  # monotonic time of the fault
    checks: list[Check] = field(default_factory=list)
    # Seconds after the fault: first time each host phase / milestone was seen.
    times: dict[str, float] = field(default_factory=dict)
    # Seconds after the fault at which the configured timeouts allowed each step.
    allowed: dict[str, float] = field(default_factory=dict)
    bmc_actions: dict[str, list[str]] = field(default_factory=dict)  # power actions
    soft_fenced: list[str] = field(default_factory=list)
    moves: dict[str, list[str]] = field(default_factory=dict)  # VM -> hosts before/after
    pids_before: dict[str, int] = field(default_factory=dict)  # VM -> its process at the fault
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(c.ok for c in self.checks)

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks.append(Check(name, bool(ok), detail))

    def steps(self) -> dict[str, float | None]:
        """Durations of the recovery steps, in seconds (None: the step did not happen)."""
        t = self.times

        def span(a: str | None, b: str | None) -> float | None:
            if a is None or b is None or a not in t or b not in t:
                return None
            return t[b] - t[a]

        def first(*keys: str) -> str | None:
            return next((k for k in keys if k in t), None)

        soft_end = "Up" if self.scenario == "agent-crash" else first("NonResponsive", "Fencing")
        proof = first("Rebooting", "ManuallyFenced")
        release = span(proof, "vm_running")
        if len(self.victims) > 1:
            # Each host's VMs from that host's own proof; the slowest host counts.
            per_host = [
                t[f"{v}.vm_running"] - t[f"{v}.{p}"]
                for v in self.victims
                for p in ("Rebooting", "ManuallyFenced")
                if f"{v}.vm_running" in t and f"{v}.{p}" in t
            ]
            release = max(per_host) if per_host else None
        return {
            "detection": t.get("Connecting"),
            "grace": span("Connecting", "SoftFencing"),
            "soft_fence": span("SoftFencing", soft_end),
            "fence": span(first("NonResponsive", "Fencing"), "Rebooting"),
            "release_to_running": release,
            "confirm_to_running": span("confirm", "vm_running"),
            "total": t.get("Up") if self.scenario == "agent-crash" else t.get("vm_running"),
        }

    def overheads(self) -> dict[str, float | None]:
        """Time spent beyond what the configured timeouts allowed, per step."""
        t, a = self.times, self.allowed
        out: dict[str, float | None] = {}
        if "Connecting" in t and "Connecting" in a:
            out["detection"] = t["Connecting"] - a["Connecting"]
        if "SoftFencing" in t and "SoftFencing" in a and "Connecting" in t:
            # The grace counts from when the operator saw the lease expire.
            out["grace"] = (t["SoftFencing"] - t["Connecting"]) - (
                a["SoftFencing"] - a["Connecting"]
            )
        steps = self.steps()
        # Steps with no configured wait: all of their time is the operator's work
        # (plus the agent's start for a soft fence, and the BMC's round trips).
        for k in ("soft_fence", "fence", "release_to_running", "confirm_to_running"):
            v = steps[k]
            out[k] = None if v is None else v - a.get(k, 0.0)
        present = [v for v in out.values() if v is not None]
        out["total"] = sum(present) if present else None
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScenarioResult:
        """Back from :meth:`to_json` (for re-reading saved benchmark results)."""
        return cls(
            scenario=data["scenario"],
            victims=list(data["victims"]),
            checks=[Check(**c) for c in data["checks"]],
            times=dict(data["times"]),
            allowed=dict(data["allowed"]),
            bmc_actions=dict(data["bmc_actions"]),
            soft_fenced=list(data["soft_fenced"]),
            moves=dict(data["moves"]),
            pids_before=dict(data.get("pids_before", {})),
            error=data.get("error"),
        )

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["steps"] = {k: None if v is None else round(v, 3) for k, v in self.steps().items()}
        out["ok"] = self.ok
        out["times"] = {k: round(v, 3) for k, v in self.times.items()}
        out["allowed"] = {k: round(v, 3) for k, v in self.allowed.items()}
        out.pop("t0")
        return out
