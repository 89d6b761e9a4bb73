"""What each accepted fence type needs on the machine that runs its ``fence_*`` agent.

One row per oVirt type the CRD accepts: the Debian program that drives it (from
:data:`hafence.fencing.options.AGENT_TYPES`) and the Debian packages that program needs
at run time.  Debian's fence-agents package only *recommends* telnet, ssh and snmp and
does not mention gnutls-cli at all, so an install with ``--no-install-recommends`` (the
image, ``make setup``) gets agents that die with "The command was not found" before they
reach the network.  The packages were found by running each agent against a closed
loopback port (tests/fencing/test_agent_types.py does that for every row) and are what
the Makefile's ``FENCE_AGENT_PACKAGES`` and the Dockerfile install (a test checks both).
"""

from __future__ import annotations

from dataclasses import dataclass

from hafence.api.fenceagent import OVIRT_AGENT_TYPES
from hafence.fencing.options import AGENT_TYPES

BASE_PACKAGES = ("fence-agents",)

# Per program: what it spawns.  telnet is the default transport of the telnet/ssh
# agents (``secure`` switches to ssh), gnutls-cli carries fence_ilo's RIBCL over TLS,
# ipmitool is fence_ipmilan's transport, net-snmp's tools are the SNMP agents'.
_PROGRAM_PACKAGES: dict[str, tuple[str, ...]] = {
    "fence_apc": ("telnet", "openssh-client"),
    "fence_apc_snmp": ("snmp",),
    "fence_bladecenter": ("telnet", "openssh-client"),
    "fence_cisco_ucs": (),  # python3-pycurl, a dependency of fence-agents
    "fence_drac5": ("telnet", "openssh-client"),
    "fence_eps": (),  # http.client only
    "fence_hpblade": ("telnet", "openssh-client"),
    "fence_idrac": ("ipmitool",),
    "fence_ilo": ("gnutls-bin",),
    "fence_ilo2": ("gnutls-bin",),
    "fence_ilo3": ("ipmitool",),
    "fence_ilo4": ("ipmitool",),
    "fence_ilo5": ("ipmitool",),
    "fence_ilo_ssh": ("openssh-client", "telnet"),
    "fence_ipmilan": ("ipmitool",),
    "fence_redfish": (),  # python3-requests, a dependency of fence-agents
    "fence_rsa": ("telnet", "openssh-client"),
    "fence_rsb": ("telnet", "openssh-client"),
    "fence_wti": ("telnet", "openssh-client"),
}

# Agents of fence-agents 4.12.1 (Debian bookworm) that cannot work as shipped, with why.
# hafence refuses them with this text instead of letting a traceback reach the operator.
KNOWN_BROKEN: dict[str, str] = {
    "fence_eps": (
        "fence_eps of Debian's fence-agents 4.12.1 crashes when given a username "
        "(Python 2 code: string.strip, base64.encodestring); it works only against an "
        "EPS without a password"
    ),
}


@dataclass(frozen=True)
class AgentRuntime:
    type: str  # oVirt's name, as in FenceAgent spec.type
    program: str  # the fence_* agent
    packages: tuple[str, ...]  # Debian packages it needs, fence-agents included


def runtime(type_name: str) -> AgentRuntime:
    program = AGENT_TYPES[type_name].fence_agent
    return AgentRuntime(type_name, program, BASE_PACKAGES + _PROGRAM_PACKAGES[program])


RUNTIMES: dict[str, AgentRuntime] = {t: runtime(t) for t in OVIRT_AGENT_TYPES}


def required_packages() -> list[str]:
    """Every Debian package some accepted type needs, sorted."""
    return sorted({p for r in RUNTIMES.values() for p in r.packages})
