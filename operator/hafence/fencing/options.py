"""oVirt's power-management options: the options string and the per-type table.

oVirt stores a fence agent's extra settings as one string, ``ssl=yes,ssl_insecure=yes``:
comma-separated ``key[=value]`` tokens, spaces allowed around them, bare keys meaning
"yes".  It also maps its generic *port*, *slot* and *secure* fields onto each agent's
own option names and adds per-type defaults (engine-config's FenceAgentMapping,
FenceAgentDefaultParams and VdsFenceOptionMapping).  This module is that table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from hafence.api import grammar
from hafence.fencing.errors import Unsupported

_TRUE = {"yes", "true", "1", "on"}
_FALSE = {"no", "false", "0", "off"}

# fence-agents boolean flags: written to an agent's stdin only when true, because an
# agent treats a present flag as set whatever its value.
FLAGS = frozenset(
    {
        "lanplus",
        "ssl",
        "ssl_secure",
        "ssl_insecure",
        "notls",
        "inet4_only",
        "inet6_only",
        "secure",
        "verbose",
        "cmd_prompt_nologin",
        "missing_as_off",
        "auto_power_off",
    }
)


def parse_options(text: str) -> dict[str, str]:
    """``'ssl=yes, lanplus ,privlvl=operator'`` -> ``{'ssl': '1', 'lanplus': '1', ...}``.

    The grammar (characters, refused keys) is :mod:`hafence.api.grammar`'s, the one
    the CRD enforces.  Booleans are normalised to ``'1'``/``'0'``; other values are
    kept verbatim (trimmed).  Raises :class:`Unsupported` saying what is wrong.
    """
    try:
        tokens = grammar.parse_options(text)
    except ValueError as exc:
        raise Unsupported(f"spec.options: {exc}") from None
    out: dict[str, str] = {}
    for key, value in tokens:
        low = (value or "").lower()
        if value is None or low in _TRUE:
            out[key] = "1"
        elif low in _FALSE:
            out[key] = "0"
        else:
            out[key] = value
    return out


def flag(options: Mapping[str, str], key: str, default: bool = False) -> bool:
    value = options.get(key)
    return default if value is None else value == "1"


@dataclass(frozen=True)
class AgentType:
    """One oVirt power-management type: how it is driven and what it defaults to."""

    name: str
    fence_agent: str  # the Debian fence_* program for it
    native: str | None = None  # "ipmi" | "redfish" when a native driver speaks it
    secure_option: str | None = None  # oVirt's "secure" field -> this agent option
    defaults: Mapping[str, str] = field(default_factory=dict)
    default_port: int | None = None


_IPMI_DEFAULTS = {"lanplus": "1", "power_wait": "4"}

AGENT_TYPES: dict[str, AgentType] = {
    t.name: t
    for t in (
        AgentType("ipmilan", "fence_ipmilan", native="ipmi", default_port=623),
        AgentType("ilo3", "fence_ilo3", native="ipmi", defaults=_IPMI_DEFAULTS, default_port=623),
        AgentType("ilo4", "fence_ilo4", native="ipmi", defaults=_IPMI_DEFAULTS, default_port=623),
        AgentType("ilo5", "fence_ilo5", native="ipmi", defaults=_IPMI_DEFAULTS, default_port=623),
        AgentType(
            "idrac", "fence_idrac", native="ipmi", defaults={"lanplus": "1"}, default_port=623
        ),
        # oVirt: drac7 is ipmilan with operator privilege and lanplus.
        AgentType(
            "drac7",
            "fence_idrac",
            native="ipmi",
            defaults={"lanplus": "1", "privlvl": "operator"},
            default_port=623,
        ),
        AgentType(
            "redfish",
            "fence_redfish",
            native="redfish",
            secure_option="ssl",
            defaults={"ssl": "1"},
            default_port=443,
        ),
        # fence_apc's own ssh_options ask for SSH protocol 1, which OpenSSH dropped.
        AgentType(
            "apc",
            "fence_apc",
            secure_option="secure",
            defaults={"ssh_options": "-o ConnectTimeout=10"},
        ),
        AgentType("apc_snmp", "fence_apc_snmp"),
        AgentType("bladecenter", "fence_bladecenter", secure_option="secure"),
        AgentType("cisco_ucs", "fence_cisco_ucs", secure_option="ssl"),
        AgentType("drac5", "fence_drac5", secure_option="secure"),
        AgentType("eps", "fence_eps"),
        AgentType("hpblade", "fence_hpblade"),
        AgentType("ilo", "fence_ilo", secure_option="ssl"),
        AgentType("ilo2", "fence_ilo2", secure_option="ssl"),
        # fence_ilo_ssh falls back to telnet without "secure"; the type says ssh.
        AgentType("ilo_ssh", "fence_ilo_ssh", secure_option="secure", defaults={"secure": "1"}),
        AgentType("rsa", "fence_rsa", secure_option="secure"),
        AgentType("rsb", "fence_rsb"),
        AgentType("wti", "fence_wti", secure_option="secure"),
    )
}

_FENCE_NAME = re.compile(r"^fence_[a-z0-9_]+$")


def agent_type(name: str) -> AgentType:
    """The table entry for an oVirt type name or a literal ``fence_*`` program name."""
    if name in AGENT_TYPES:
        return AGENT_TYPES[name]
    if _FENCE_NAME.match(name):
        return AgentType(name, name)
    raise Unsupported(
        f"unknown fence agent type {name!r} (oVirt types: {', '.join(sorted(AGENT_TYPES))}, "
        "or any fence_* agent)"
    )


def own_default(key: str, value: str) -> bool:
    """Whether ``key=value`` is one of hafence's own per-type defaults (such as fence_apc's
    ``ssh_options``): a constant of ours, never a value from a resource."""
    return any(t.defaults.get(key) == value for t in AGENT_TYPES.values())


def effective_options(kind: AgentType, text: str) -> dict[str, str]:
    """The parsed options with oVirt's ``secure`` mapped and per-type defaults filled in."""
    opts = parse_options(text)
    if "secure" in opts and kind.secure_option and kind.secure_option != "secure":
        opts.setdefault(kind.secure_option, opts.pop("secure"))
    for key, value in kind.defaults.items():
        opts.setdefault(key, value)
    return opts
