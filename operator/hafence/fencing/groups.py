"""One operation on a concurrent group of agents at once, with oVirt's rules.

A concurrent group is the agents of one host sharing an ``order`` (two PDUs feeding
two power supplies).  The rules are the core's (``hafence.core.fencing_plan``), applied
here to the drivers' answers:

- ``off`` succeeds only when every agent reports off (one live supply keeps the host up);
- ``on`` succeeds when any agent reports on;
- ``status``/``test``: on if any is on; off if all are off; unknown on a mix of off and
  errors; when every agent fails the group fails;
- ``reboot``: the group goes off (all), then on (any).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from hafence.core import fencing_plan as fp
from hafence.fencing.errors import FenceError
from hafence.fencing.protocol import FenceDriver, FenceResult, Operation, PowerState


@dataclass
class GroupResult:
    operation: Operation
    ok: bool
    power_state: PowerState
    elapsed: float
    results: list[FenceResult] = field(default_factory=list)
    errors: list[tuple[str, FenceError]] = field(default_factory=list)

    @property
    def message(self) -> str:
        parts = [f"{r.agent}: {r.power_state}" for r in self.results]
        parts += [f"{name}: {type(err).__name__}: {err}" for name, err in self.errors]
        verdict = "succeeded" if self.ok else "failed"
        return f"{self.operation} {verdict} (power {self.power_state}): " + "; ".join(parts)


async def _each(
    drivers: Sequence[FenceDriver], operation: Operation
) -> tuple[list[FenceResult], list[tuple[str, FenceError]]]:
    async def one(driver: FenceDriver) -> FenceResult:
        fn = getattr(driver, operation)
        result: FenceResult = await fn()
        return result

    outcomes = await asyncio.gather(*(one(d) for d in drivers), return_exceptions=True)
    results: list[FenceResult] = []
    errors: list[tuple[str, FenceError]] = []
    for driver, outcome in zip(drivers, outcomes, strict=True):
        if isinstance(outcome, FenceError):
            errors.append((driver.name, outcome))
        elif isinstance(outcome, BaseException):
            raise outcome  # a bug or a cancellation, not a device failure
        else:
            results.append(outcome)
    return results, errors


def _combine(
    operation: Operation,
    results: list[FenceResult],
    errors: list[tuple[str, FenceError]],
    elapsed: float,
) -> GroupResult:
    """The group verdict, by the core's rules (``core/fencing_plan.py``, written once)."""
    answers: dict[str, fp.AgentResult] = {
        r.agent: fp.AgentResult(r.power_state if r.power_state in ("on", "off") else "error")
        for r in results
    }
    answers.update({name: fp.AgentResult("error", str(err)) for name, err in errors})
    names = list(answers)
    seen = fp.status_verdict(answers, names)
    state: PowerState = seen
    if operation == "off":
        ok = fp.off_succeeded(answers, names)
    elif operation in ("on", "reboot"):
        ok = fp.on_succeeded(answers, names)
    else:  # status, test: any answer is a result
        ok = bool(results)
    return GroupResult(operation, ok, state, elapsed, results, errors)


async def run_group(drivers: Sequence[FenceDriver], operation: Operation) -> GroupResult:
    """Run ``operation`` on every driver at once and judge the group by oVirt's rules."""
    if not drivers:
        raise ValueError("run_group needs at least one driver")
    start = time.monotonic()
    if operation == "reboot":
        off = await run_group(drivers, "off")
        if not off.ok:
            off.operation = "reboot"
            return off
        results, errors = await _each(drivers, "on")
        on = _combine("on", results, errors, time.monotonic() - start)
        on.operation = "reboot"
        on.results = off.results + on.results
        on.errors = off.errors + on.errors
        return on
    results, errors = await _each(drivers, operation)
    return _combine(operation, results, errors, time.monotonic() - start)
