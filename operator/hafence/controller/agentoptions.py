"""The ``OptionsValid`` condition and Event of every FenceAgent the leader sees.

Each FenceAgent's options are checked against its fence_* agent's own parameter list
(:mod:`hafence.fencing.metadata`) when the leader first sees it and whenever its
generation changes.  An unknown option is a Warning Event (``FenceAgentOptionsUnknown``)
and ``OptionsValid=False``; options ignored because the agent has no equivalent are a
Normal Event (``FenceAgentOptionsIgnored``).  The status is written only when the
condition changes, so the write's own watch event ends here.  Reading an agent's
metadata once runs it (then it is cached), so this also warms the cache a fence would
otherwise fill on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydantic import ValidationError

from hafence.api.fenceagent import FenceAgentSpec
from hafence.controller.events import EventRecorder
from hafence.controller.leader import LeaderElector
from hafence.fencing.agent_status import record_options
from hafence.fencing.errors import FenceError
from hafence.fencing.metadata import options_report
from hafence.kube import Api, KubeError

log = logging.getLogger(__name__)


class AgentOptionsChecker:
    def __init__(self, api: Api, recorder: EventRecorder, elector: LeaderElector) -> None:
        self.api = api
        self.recorder = recorder
        self.elector = elector
        self._seen: dict[str, tuple[int | None, str]] = {}  # uid -> (generation, message)
        # Seen before this replica led (the initial list usually is): checked once it does.
        self._pending: dict[str, dict[str, Any]] = {}
        self._waiter: asyncio.Task[None] | None = None

    async def seen(self, obj: dict[str, Any]) -> None:
        """A watch event: checked now when leading, else kept until leadership."""
        if self.elector.is_leader:
            await self.observe(obj)
            return
        self._pending[obj.get("metadata", {}).get("uid", "")] = obj
        if self._waiter is None or self._waiter.done():
            self._waiter = asyncio.create_task(self._when_leading())

    async def _when_leading(self) -> None:
        await self.elector.wait_until_leader()
        while self._pending:
            _, obj = self._pending.popitem()
            try:
                await self.observe(obj)
            except Exception:  # one bad object must not stop the others' checks
                log.exception("FenceAgent options check failed")

    async def observe(self, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata", {})
        uid, generation = meta.get("uid", ""), meta.get("generation")
        try:
            spec = FenceAgentSpec.model_validate(obj.get("spec", {}))
            report = await asyncio.to_thread(options_report, spec)
        except (ValidationError, FenceError) as exc:
            log.debug("FenceAgent %s: options not checked: %s", meta.get("name"), exc)
            return
        try:
            condition = await record_options(self.api, obj, report)
        except KubeError as exc:
            log.warning("FenceAgent %s: OptionsValid not written: %s", meta.get("name"), exc)
            return
        if self._seen.get(uid) == (generation, condition["message"]):
            return
        self._seen[uid] = (generation, condition["message"])
        if report.unknown:
            await self.recorder.warning(obj, "FenceAgentOptionsUnknown", condition["message"])
        elif report.ignored:
            await self.recorder.normal(obj, "FenceAgentOptionsIgnored", condition["message"])

    def forget(self, obj: dict[str, Any]) -> None:
        uid = obj.get("metadata", {}).get("uid", "")
        self._seen.pop(uid, None)
        self._pending.pop(uid, None)
