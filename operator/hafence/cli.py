"""`hafence` command line: one dispatcher, each subcommand owned by its layer.

Every subcommand module exposes ``main(argv: list[str]) -> int`` and parses its own
arguments, so a layer's flags live beside the code that uses them.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module with main(argv), one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "operator": (
        "hafence.controller.main",
        "run the operator (the engine) in or against a cluster",
    ),
    "agent": (
        "hafence.agent.main",
        "run the host agent on a hypervisor (heartbeat, VMs, watchdog)",
    ),
    "lab": ("hafence.lab.main", "a datacenter on this machine: control plane, hosts, failures"),
    "fence-agent": ("hafence.fencing.cli", "fence agent tools: `fence-agent test NAME -n NS`"),
    "power": (
        "hafence.fencing.cli_power",
        "power a host through its fence agents: status|on|off|restart",
    ),
    "crds": (
        "hafence.api.cli",
        "write the CustomResourceDefinitions generated from the API models",
    ),
    "outages": (
        "hafence.controller.cli_outages",
        "a host's outage record as a timeline: `outages [HOST] -n NS`",
    ),
    "host": ("hafence.fencing.cli_host", "host checks: `host test NAME -n NS`"),
    "control-plane": (
        "hafence.lab.cli_controlplane",
        "build or run the local etcd + kube-apiserver",
    ),
}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: hafence COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "`hafence COMMAND --help` describes each command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"hafence: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    code: int = module.main(rest)
    return code


if __name__ == "__main__":
    sys.exit(main())
