"""A FenceAgent's options checked against its ``fence_*`` agent's own parameter list.

Every fence-agents program describes itself with ``-o metadata`` (XML: each parameter,
the deprecated names and what obsoletes them).  An agent given a name it does not know
logs "Ignoring unknown option" and carries on, so a typo or an option of another type
silently changes nothing; here each option is sorted before it reaches the agent:

- known to the agent: passed on (a deprecated name under the name that obsoletes it);
- a connection option the agent has no equivalent for (``inet4_only`` on fence_ilo2,
  which hands the address to gnutls-cli as given; ``ssl`` on a telnet agent): *ignored*,
  said so, not passed;
- anything else: *unknown*, reported (``hafence fence-agent test``, the FenceAgent's
  ``OptionsValid`` condition, an Event) and not passed.  Fencing still runs: a typo in an
  option must not leave a host unfenceable, but it must not go unseen either.

The metadata is static per installed program, so it is read once per binary (path and
modification time) and kept.  Native drivers (IPMI, Redfish) are checked against the
agent they stand in for, whose options they honour.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from hafence.api.fenceagent import FenceAgentSpec
from hafence.fencing.errors import Unsupported
from hafence.fencing.fence_agents import find_agent
from hafence.fencing.options import FLAGS, agent_type, effective_options

# Connection options oVirt's UI offers for every type; where an agent has no
# equivalent they are ignored (said so), never an error.
_IP_FAMILY = ("inet4_only", "inet6_only")
_TLS = ("ssl", "ssl_secure", "ssl_insecure", "notls", "tls1.0")
# Set by the driver itself on every run (fence_agents.FenceAgentDriver._stdin).
_DRIVER_SET = frozenset({"action", "ip", "ipport", "plug", "power_timeout", "verbose"})


@dataclass(frozen=True)
class AgentParameters:
    program: str
    names: frozenset[str]
    obsoleted_by: dict[str, str] = field(default_factory=dict)  # deprecated -> current


@dataclass
class OptionsReport:
    """What happens to each option of one FenceAgent."""

    program: str
    options: dict[str, str]  # what the agent is given
    unknown: list[str] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)  # name -> why
    translated: dict[str, str] = field(default_factory=dict)  # given name -> agent's name
    checked: bool = True  # False: the agent is not installed here, nothing was checked

    @property
    def valid(self) -> bool:
        return not self.unknown

    def lines(self) -> list[str]:
        out = []
        if not self.checked:
            out.append(f"options not checked: {self.program} is not installed here")
        if self.unknown:
            out.append(f"options unknown to {self.program} (not passed): {', '.join(self.unknown)}")
        out.extend(f"option {k} ignored: {why}" for k, why in self.ignored.items())
        out.extend(f"option {k} passed as {v}" for k, v in self.translated.items())
        return out

    def message(self) -> str:
        return "; ".join(self.lines()) or f"every option is known to {self.program}"


def _parse(program: str, xml_text: str) -> AgentParameters:
    root = ET.fromstring(xml_text)
    names: set[str] = set()
    obsoleted: dict[str, str] = {}
    for param in root.iter("parameter"):
        name = param.get("name")
        if not name:
            continue
        names.add(name)
        old = param.get("obsoletes")
        if old:
            obsoleted[old] = name
    return AgentParameters(program, frozenset(names), obsoleted)


@functools.cache
def _read(path: str, mtime_ns: int) -> AgentParameters:
    del mtime_ns  # part of the cache key only: a new package version is read again
    done = subprocess.run(
        [path, "-o", "metadata"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
        check=False,
    )
    try:
        return _parse(os.path.basename(path), done.stdout)
    except ET.ParseError:
        raise Unsupported(
            f"{path} -o metadata gave no parameter list (exit code {done.returncode})"
        ) from None


def agent_parameters(program: str) -> AgentParameters | None:
    """The program's parameters, or None when it is not installed on this machine."""
    try:
        path = find_agent(program)
    except Unsupported:
        return None
    return _read(path, os.stat(path).st_mtime_ns)


def _no_family_reason(program: str, address: str) -> str:
    why = f"{program} has no IP-family option; it connects to the address as given"
    try:
        version = ipaddress.ip_address(address).version
    except ValueError:
        return why
    return f"{why} ({address} is IPv{version} already)"


def check_options(program: str, options: dict[str, str], address: str) -> OptionsReport:
    """Sort ``options`` (parsed, defaults filled in) against ``program``'s own list."""
    params = agent_parameters(program)
    if params is None:
        return OptionsReport(program, dict(options), checked=False)
    report = OptionsReport(program, {})
    for key, value in options.items():
        if key in FLAGS and value != "1":
            continue  # a false flag is an absent one (fence_agents.stdin_lines)
        if key in _DRIVER_SET or (key in params.names and key not in params.obsoleted_by):
            report.options[key] = value
        elif key in params.obsoleted_by:
            report.options.setdefault(params.obsoleted_by[key], value)
            report.translated[key] = params.obsoleted_by[key]
        elif key in _IP_FAMILY:
            report.ignored[key] = _no_family_reason(program, address)
        elif key in _TLS:
            report.ignored[key] = f"{program} does not use TLS"
        elif key == "secure":  # oVirt's generic "secure" field, mapped per type
            report.ignored[key] = f"{program} has no secure-transport option"
        else:
            report.unknown.append(key)
    return report


def options_report(spec: FenceAgentSpec) -> OptionsReport:
    """The report for one FenceAgent, as its driver will see its options."""
    kind = agent_type(spec.type)
    return check_options(kind.fence_agent, effective_options(kind, spec.options), spec.address)
