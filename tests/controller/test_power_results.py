"""Every power operation ends with a result fed back to the core: a bug in a driver or
the shell is a failure naming the error, a driver that never answers is a timeout
failure (metric result "timeout") at the budget the core gave."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hafence.controller import power
from hafence.controller.cache import Cache
from hafence.controller.metrics import Metrics
from hafence.core import messages as m

AGENT = {
    "metadata": {"namespace": "dc", "name": "h1-ipmi", "resourceVersion": "1"},
    "spec": {"hostRef": {"name": "h1"}, "type": "ipmilan", "address": "127.0.0.1"},
}


class _Leader:
    def check(self) -> int:
        return 1


class _Guard:
    async def renewed_unseen(self, host: str) -> bool:
        return False


class _Hangs:
    async def off(self) -> Any:
        await asyncio.sleep(3600)


def _run(action: m.RunFenceStep) -> tuple[list[m.Input], Metrics]:
    fed: list[m.Input] = []
    metrics = Metrics()

    async def feed(inp: m.Input) -> None:
        fed.append(inp)

    async def main() -> None:
        cache = Cache()
        cache.put("FenceAgent", AGENT)
        ops = power.PowerOps(None, "dc", cache, _Leader(), metrics, feed, _Guard())  # type: ignore[arg-type]
        ops.start(action)
        await ops.inflight.join()

    asyncio.run(main())
    return fed, metrics


def _step(timeout: float) -> m.RunFenceStep:
    return m.RunFenceStep("h1", "op-1", "h1-1", 1, 1, "off", "off", ("h1-ipmi",), (), timeout)


def test_a_bug_in_the_shell_is_a_failure_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("driver table corrupt")

    monkeypatch.setattr(power, "build_driver", broken)
    fed, _ = _run(_step(5.0))
    assert len(fed) == 1 and isinstance(fed[0], m.FenceStepResult)
    result = fed[0].results["h1-ipmi"]
    assert result.power == "error" and "RuntimeError: driver table corrupt" in result.message
    assert fed[0].sent


def test_a_driver_that_never_answers_times_out_at_the_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(power, "build_driver", lambda *_, **__: _Hangs())
    fed, metrics = _run(_step(0.2))
    assert len(fed) == 1 and isinstance(fed[0], m.FenceStepResult)
    assert "timed out" in fed[0].results["h1-ipmi"].message
    sample = metrics.fence_attempts.labels(driver="ipmilan", action="off", result="timeout")
    assert sample._value.get() == 1
