"""Build a driver from a FenceAgentSpec: the one place that picks the transport.

Native drivers serve what they speak (IPMI types -> pyghmi, ``redfish`` -> Redfish);
every other type runs its Debian ``fence_*`` agent.  With a fence proxy, the agent
always runs on the proxy host over SSH (the BMC network is reachable only from there).
"""

from __future__ import annotations

from hafence.api import grammar
from hafence.api.fenceagent import KDUMP_TYPES, FenceAgentSpec
from hafence.fencing.agent_types import KNOWN_BROKEN
from hafence.fencing.errors import Unsupported
from hafence.fencing.fence_agents import FenceAgentDriver
from hafence.fencing.ipmi import IpmiDriver
from hafence.fencing.metadata import check_options
from hafence.fencing.options import agent_type, effective_options
from hafence.fencing.protocol import Credentials, DriverSettings, FenceDriver, SSHTarget


def redfish_system(plug: str | None, opts: dict[str, str]) -> str | None:
    """The path of the one system a Redfish FenceAgent names (spec.plug, as an id or a
    path, or ``systems_uri`` in options), the same for the native driver and for
    fence_redfish; None if it names none.  Unsupported if it names two, or a path
    outside the Systems collection."""
    named: dict[str, str] = {}  # without a trailing slash -> as given
    for where, value in (
        ("spec.plug", plug),
        ("options systems_uri", opts.pop("systems_uri", None)),
    ):
        if value is None:
            continue
        if not grammar.matches(grammar.REDFISH_SYSTEM, value):
            raise Unsupported(f"{where} {value!r} {grammar.MSG_REDFISH_SYSTEM}")
        path = value if value.startswith("/") else grammar.REDFISH_SYSTEMS + value
        named.setdefault(path.rstrip("/"), path)
    if len(named) > 1:
        raise Unsupported(
            f"spec.plug and options systems_uri names two systems ({', '.join(named)}): "
            "give one of them"
        )
    return next(iter(named.values()), None)


def build_driver(
    spec: FenceAgentSpec,
    credentials: Credentials | None,
    proxy: SSHTarget | None = None,
    *,
    name: str = "",
    poll_interval: float = 0.25,
) -> FenceDriver:
    """A driver for one FenceAgent.  Raises :class:`Unsupported` for a bad type/options."""
    if spec.type in KDUMP_TYPES:
        raise Unsupported(
            f"{spec.type}: not a power device: a kdump level waits for the host's "
            "fence_kdump messages in the operator's listener (--kdump-listen)"
        )
    kind = agent_type(spec.type)
    broken = KNOWN_BROKEN.get(kind.fence_agent)
    if broken is not None and credentials is not None and not (proxy is None and kind.native):
        raise Unsupported(f"{spec.type}: {broken}")
    opts = effective_options(kind, spec.options)
    port = spec.port
    if port is None and "ipport" in opts:
        try:
            port = int(opts.pop("ipport"))
        except ValueError:
            raise Unsupported(f"options: ipport={opts.get('ipport')!r} is not a port") from None
    settings = DriverSettings(
        name=(f"{name} " if name else "")
        + f"({spec.type} {spec.address}{f':{port}' if port else ''})",
        timeout=float(spec.timeout_seconds),
        power_wait=float(spec.power_wait_seconds),
        poll_interval=poll_interval,
    )
    if proxy is None and kind.native:
        # fence-agents' own pacing: the native drivers poll on power_wait_seconds instead.
        opts.pop("power_wait", None)
    if proxy is None and kind.native == "ipmi":
        if credentials is None:
            raise Unsupported(f"{settings.name}: IPMI needs credentials")
        return IpmiDriver(
            settings, spec.address, port or kind.default_port or 623, credentials, opts
        )
    if proxy is None and kind.native == "redfish":
        from hafence.fencing.redfish import RedfishDriver

        if credentials is None:
            raise Unsupported(f"{settings.name}: Redfish needs credentials")
        system = redfish_system(spec.plug, opts)
        return RedfishDriver(settings, spec.address, port, credentials, opts, system=system)
    runner = None
    if proxy is not None:
        from hafence.fencing.ssh import proxy_runner

        runner = proxy_runner(proxy)
        settings.name += f" via {proxy.label()}"
    if kind.native == "ipmi":
        opts.setdefault("lanplus", "1")
    plug = spec.plug
    if kind.native == "redfish":
        # fence_redfish ignores plug and, without systems_uri, acts on the last system
        # it lists: name the declared one, the one the native driver would act on.
        system = redfish_system(plug, opts)
        if system is None:
            raise Unsupported(
                f"{settings.name}: Redfish through fence_redfish needs the system: set "
                "spec.plug (a system id or /redfish/v1/Systems/...) or systems_uri in options"
            )
        opts["systems_uri"] = system
        plug = None
    # Only what the agent knows reaches it; the rest is reported (fencing.metadata).
    opts = check_options(kind.fence_agent, opts, spec.address).options
    if runner is None:
        return FenceAgentDriver(
            settings, kind.fence_agent, spec.address, port, plug, credentials, opts
        )
    return FenceAgentDriver(
        settings, kind.fence_agent, spec.address, port, plug, credentials, opts, runner=runner
    )
