"""The host agent (hafence's VDSM): heartbeat Lease, the VMs placed on its host, watchdog.

The operator owns placement (``status.host``, ``status.placementEpoch``); the agent
owns ``status.runtime`` of the VMs placed on its host: what it observes.  See
docs/agent.md and hafence.api.vm.
"""
