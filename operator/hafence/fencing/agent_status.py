"""A FenceAgent's status: the one module that writes it.

Two things are recorded there:

- what a test of the agent found (:func:`run_test`: a power ``status`` through the
  driver): ``lastTestTime``, ``lastTestResult``, ``powerState``, ``message`` and the
  ``Reachable`` condition.  ``hafence fence-agent test``, ``hafence host test`` and the
  leader's power-management checks (controller/pmhealth.py) all test through it, so an
  agent's status reads the same whoever tested it;
- what became of its options (:mod:`hafence.fencing.metadata`): the ``OptionsValid``
  condition, with a test and whenever the leader sees a new generation
  (:func:`record_options`, controller/agentoptions.py).

Every condition keeps its ``lastTransitionTime`` while its status stays the same, and
other writers' conditions are kept.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from hafence.fencing.errors import FenceError
from hafence.fencing.metadata import OptionsReport, options_report
from hafence.fencing.protocol import FenceResult
from hafence.fencing.resolve import resolve_agent
from hafence.kube import Api, KubeError

REACHABLE = "Reachable"
OPTIONS_VALID = "OptionsValid"
MESSAGE_LIMIT = 1000  # characters of a message or condition message written


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _find(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def condition(
    type_: str,
    status: str,
    reason: str,
    message: str,
    generation: int | None,
    previous: list[dict[str, Any]],
    now: str,
) -> dict[str, Any]:
    """One condition, its transition time kept from ``previous`` while its status stays."""
    old = _find(previous, type_)
    since = old.get("lastTransitionTime") if old and old.get("status") == status else now
    out: dict[str, Any] = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message[:MESSAGE_LIMIT],
        "lastTransitionTime": since or now,
    }
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def options_condition(
    report: OptionsReport, generation: int | None, previous: list[dict[str, Any]], now: str
) -> dict[str, Any]:
    """The ``OptionsValid`` condition for ``report``."""
    if not report.checked:
        status, reason = "Unknown", "AgentNotInstalled"
    elif report.unknown:
        status, reason = "False", "UnknownOptions"
    else:
        status, reason = "True", "OptionsIgnored" if report.ignored else "OptionsKnown"
    return condition(OPTIONS_VALID, status, reason, report.message(), generation, previous, now)


def patch_after_test(
    current: dict[str, Any],
    outcome: FenceResult | FenceError,
    generation: int | None,
    options: OptionsReport | None = None,
) -> dict[str, Any]:
    """The status merge patch for one test (``current``: the status as it is now)."""
    now = _now()
    if isinstance(outcome, FenceResult):
        ok, state, reason = True, outcome.power_state, "StatusSucceeded"
        message = f"power {outcome.power_state} ({outcome.elapsed:.2f}s)"
    else:
        ok, state, reason = False, "unknown", type(outcome).__name__
        message = str(outcome)
    previous = current.get("conditions", [])
    replaced = {REACHABLE} | ({OPTIONS_VALID} if options is not None else set())
    conditions = [c for c in previous if c.get("type") not in replaced]
    if options is not None:
        conditions.append(options_condition(options, generation, previous, now))
    status = "True" if ok else "False"
    conditions.append(condition(REACHABLE, status, reason, message, generation, previous, now))
    patch: dict[str, Any] = {
        "lastTestTime": now,
        "lastTestResult": "Succeeded" if ok else "Failed",
        "powerState": state,
        "message": message[:MESSAGE_LIMIT],
        "conditions": conditions,
    }
    if generation is not None:
        patch["observedGeneration"] = generation
    return {"status": patch}


async def run_test(
    api: Api, namespace: str, name: str, report: list[str] | None = None
) -> FenceResult | FenceError:
    """Test one FenceAgent and record the outcome in its status; returns the outcome.

    ``report`` collects what became of the options (unknown, ignored, translated).
    """
    generation = None
    options: OptionsReport | None = None
    try:
        agent = await resolve_agent(api, namespace, name)
        generation = agent.generation
        options = await asyncio.to_thread(options_report, agent.spec)
        if report is not None:
            report.extend(options.lines())
        outcome: FenceResult | FenceError = await agent.driver.test()
    except FenceError as exc:
        outcome = exc
    try:
        obj = await asyncio.to_thread(api.get, "FenceAgent", namespace, name)
    except KubeError:
        return outcome  # the agent itself is missing: nothing to record on
    patch = patch_after_test(
        obj.get("status") or {}, outcome, generation or obj["metadata"].get("generation"), options
    )
    await asyncio.to_thread(api.patch, "FenceAgent", namespace, name, patch, status=True)
    return outcome


async def record_options(api: Api, obj: dict[str, Any], report: OptionsReport) -> dict[str, Any]:
    """Write the ``OptionsValid`` condition of the FenceAgent ``obj`` for ``report``
    unless it says that already (so the write's own watch event ends here); returns
    the condition.  Raises ``KubeError`` when the write fails."""
    meta = obj.get("metadata", {})
    conditions = (obj.get("status") or {}).get("conditions") or []
    wanted = options_condition(report, meta.get("generation"), conditions, _now())
    current = _find(conditions, OPTIONS_VALID)
    same = current is not None and all(
        current.get(k) == wanted.get(k)
        for k in ("status", "reason", "message", "observedGeneration")
    )
    if not same:
        kept = [c for c in conditions if c.get("type") != OPTIONS_VALID]
        patch = {"status": {"conditions": [*kept, wanted]}}
        await asyncio.to_thread(
            api.patch,
            "FenceAgent",
            meta.get("namespace", ""),
            meta.get("name", ""),
            patch,
            status=True,
        )
    return wanted
