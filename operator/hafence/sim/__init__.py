"""A virtual-time datacenter that drives the real core (no I/O, no clock).

Virtual hosts (power, boot ID, agent, network, running VMs, watchdog), virtual fence
devices (IPMI-like chassis control or PDU outlets; reachable or not, slow or not),
a virtual API store for the statuses the core writes, and a virtual clock.  Scenario
files (``tests/scenarios/*/cmds``) script commands per second; the run produces an
event log compared against a golden one, like Proxmox ha-manager's tests.
"""

from hafence.sim.runner import Simulation, run_scenario
from hafence.sim.scenario import Scenario, ScenarioError, parse_scenario

__all__ = ["Scenario", "ScenarioError", "Simulation", "parse_scenario", "run_scenario"]
