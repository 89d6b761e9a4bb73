"""How long each operation the core issues may take: every step ends (S1's liveness).

The budget of an operation is what its parts are configured to take at most, so a
device that never answers costs its own timeouts, not forever:

- a fence agent's ``status`` is one request bounded by its ``timeoutSeconds``; ``off`` and
  ``on`` are a request, polling for ``powerWaitSeconds``, and a last status request
  (``fencing/protocol.py``);
- the agents of a level run concurrently, so a level costs its slowest agent; the proxy
  candidates are tried one after the other, so it costs that once per candidate;
- a kdump level waits its agents' kdump timeout (fence_kdump's ``timeout`` option), in
  the operator's own listener: no proxy;
- a soft fence is one SSH command bounded by the Host's ``ssh.timeoutSeconds`` (plus the
  second the SSH layer adds to stop its thread);
- ``Settings.step_margin`` covers the shell's own work around it (a Secret read, an SSH
  target's host key, starting a worker process).

The shell gets the budget with the action and answers with a timeout failure when it
passes; the core's deadline is budget + margin again, a backstop for a shell that never
answers at all (a lost task, a bug).
"""

from __future__ import annotations

from collections.abc import Iterable

from hafence.core.fencing_plan import AgentRef
from hafence.core.policy import Settings


def agent_budget(agent: AgentRef | None, operation: str) -> float:
    if agent is None:  # gone meanwhile: the shell answers at once
        return 0.0
    if operation == "kdump":
        return agent.kdump_timeout or 0.0
    if operation == "status":
        return agent.timeout
    return 2 * agent.timeout + agent.power_wait


def fence_budget(
    settings: Settings, agents: Iterable[AgentRef | None], operation: str, proxies: int
) -> float:
    slowest = max((agent_budget(a, operation) for a in agents), default=0.0)
    return max(proxies, 1) * (slowest + settings.step_margin)


def soft_fence_budget(settings: Settings, ssh_timeout: float) -> float:
    return ssh_timeout + 1.0 + settings.step_margin


def deadline(settings: Settings, now: float, budget: float) -> float:
    """When the core stops waiting for an operation issued at ``now``."""
    return now + budget + settings.step_margin
