"""Scenario files: a setup block, then commands at virtual seconds.

::

    # one line saying what the scenario proves
    settings grace=10 quiet=0
    host host1 cluster=a cpu=8 mem=16384 ssh selffence=60 labels=rack=r1
    fence host1-ipmi host=host1 type=ipmilan order=1
    vm web cluster=a prio=High cpu=2 mem=2048 on=host1 [ha=no] [group=g] [prefer=h2,h3]
    at 30 kill-agent host1
    at 40 crashes-forever web host1     (or: anywhere)
    run 300

Every error names the line and the offending word.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SETTINGS_KEYS = {
    "grace": "connecting_grace",
    "grace_per_vm": "connecting_grace_per_vm",
    "grace_max": "connecting_grace_max",
    "soft_fence_timeout": "soft_fence_timeout",
    "retry": "fence_retry_base",
    "retry_max": "fence_retry_max",
    "max_fences": "max_concurrent_fences",
    "quiet": "startup_quiet_period",
    "vm_retry": "vm_retry_fast_interval",
    "vm_retry_count": "vm_retry_fast_count",
    "vm_retry_slow": "vm_retry_slow_interval",
    "margin": "self_fence_safety_margin",
    "failed_restarts": "max_failed_restarts",
}
SIM_KEYS = {"lease", "boot", "ssh_timeout", "crash_budget", "kdump_interval"}
COMMANDS = {
    "power-off": 1,
    "power-on": 1,
    "pull-power": 1,
    "restore-power": 1,
    "reboot": 1,
    "cut-network": 1,
    "restore-network": 1,
    "cut-api": 1,
    "restore-api": 1,
    "kill-agent": 1,
    "start-agent": 1,
    "pause-agent": 2,
    "freeze": 1,
    "thaw": 1,
    "bmc-dead": 1,
    "bmc-alive": 1,
    "bmc-slow": 2,
    "bmc-fail-off": 1,
    "bmc-ok": 1,
    "confirm": 1,
    "restart-operator": 0,
    "maintenance": 2,
    "confirm-if-off": 1,
    "heal": 0,
    "crashes-forever": 2,
    "kernel-crash": 2,
    "stops-crashing": 1,
}


class ScenarioError(ValueError):
    pass


@dataclass
class HostDef:
    name: str
    cluster: str
    cpu: int = 8
    mem: int = 16384
    ssh: bool = False
    selffence: int | None = None
    device: bool = True  # selffence with a watchdog device declared (flag `nodevice`: none)
    labels: dict[str, str] = field(default_factory=dict)
    pm: bool = True
    proxy: list[str] = field(default_factory=lambda: ["operator", "cluster", "any"])


@dataclass
class FenceDef:
    name: str
    host: str
    type: str = "ipmilan"
    order: int = 1
    timeout: int = 5


@dataclass
class VMDef:
    name: str
    cluster: str
    prio: str = "Medium"
    cpu: int = 1
    mem: int = 1024
    on: str | None = None
    ha: bool = True
    group: str | None = None
    prefer: list[str] = field(default_factory=list)
    selector: dict[str, str] = field(default_factory=dict)


@dataclass
class Command:
    at: int
    verb: str
    args: tuple[str, ...]
    line: int


@dataclass
class Scenario:
    description: str = ""
    settings: dict[str, float] = field(default_factory=dict)
    sim: dict[str, float] = field(default_factory=dict)
    hosts: list[HostDef] = field(default_factory=list)
    fences: list[FenceDef] = field(default_factory=list)
    vms: list[VMDef] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    duration: int = 300
    # The scenario shows a breach on purpose (e.g. a wrong human confirmation).
    expect_violations: bool = False


def _kv(words: list[str], lineno: int) -> tuple[dict[str, str], set[str]]:
    pairs: dict[str, str] = {}
    flags: set[str] = set()
    for w in words:
        if "=" in w:
            k, _, v = w.partition("=")
            if not k or not v:
                raise ScenarioError(f"line {lineno}: bad key=value {w!r}")
            pairs[k] = v
        else:
            flags.add(w)
    return pairs, flags


def _int(value: str, key: str, lineno: int) -> int:
    try:
        return int(value)
    except ValueError:
        raise ScenarioError(f"line {lineno}: {key}={value!r} is not an integer") from None


def _labels(value: str) -> dict[str, str]:
    out = {}
    for part in value.split(","):
        k, _, v = part.partition(":")
        out[k] = v
    return out


def _check(pairs: dict[str, str], flags: set[str], allowed: set[str], lineno: int) -> None:
    for k in list(pairs) + sorted(flags):
        if k not in allowed:
            raise ScenarioError(f"line {lineno}: unknown option {k!r}")


def parse_scenario(text: str) -> Scenario:
    sc = Scenario()
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if not sc.description:
                sc.description = line.lstrip("# ").strip()
            continue
        words = line.split()
        kw, rest = words[0], words[1:]
        if kw == "settings":
            pairs, flags = _kv(rest, lineno)
            _check(pairs, flags, set(SETTINGS_KEYS) | SIM_KEYS, lineno)
            for k, val in pairs.items():
                try:
                    num = float(val)
                except ValueError:
                    raise ScenarioError(f"line {lineno}: {k}={val!r} is not a number") from None
                (sc.sim if k in SIM_KEYS else sc.settings)[k] = num
        elif kw == "host":
            if not rest:
                raise ScenarioError(f"line {lineno}: host needs a name")
            pairs, flags = _kv(rest[1:], lineno)
            _check(
                pairs,
                flags,
                {"cluster", "cpu", "mem", "ssh", "selffence", "labels", "pm", "proxy", "nodevice"},
                lineno,
            )
            h = HostDef(rest[0], pairs.get("cluster", "a"), ssh="ssh" in flags)
            h.device = "nodevice" not in flags
            h.cpu = _int(pairs.get("cpu", "8"), "cpu", lineno)
            h.mem = _int(pairs.get("mem", "16384"), "mem", lineno)
            if "selffence" in pairs:
                h.selffence = _int(pairs["selffence"], "selffence", lineno)
            if "labels" in pairs:
                h.labels = _labels(pairs["labels"])
            h.pm = pairs.get("pm", "on") != "off"
            if "proxy" in pairs:
                h.proxy = pairs["proxy"].split(",")
            sc.hosts.append(h)
        elif kw == "fence":
            pairs, flags = _kv(rest[1:], lineno)
            _check(pairs, flags, {"host", "type", "order", "timeout"}, lineno)
            if not rest or "host" not in pairs:
                raise ScenarioError(f"line {lineno}: fence needs a name and host=")
            sc.fences.append(
                FenceDef(
                    rest[0],
                    pairs["host"],
                    pairs.get("type", "ipmilan"),
                    _int(pairs.get("order", "1"), "order", lineno),
                    _int(pairs.get("timeout", "5"), "timeout", lineno),
                )
            )
        elif kw == "vm":
            pairs, flags = _kv(rest[1:], lineno)
            _check(
                pairs,
                flags,
                {"cluster", "prio", "cpu", "mem", "on", "ha", "group", "prefer", "selector"},
                lineno,
            )
            if not rest:
                raise ScenarioError(f"line {lineno}: vm needs a name")
            if pairs.get("prio", "Medium") not in ("High", "Medium", "Low"):
                raise ScenarioError(f"line {lineno}: prio={pairs['prio']!r} is not High/Medium/Low")
            v = VMDef(rest[0], pairs.get("cluster", "a"), pairs.get("prio", "Medium"))
            v.cpu = _int(pairs.get("cpu", "1"), "cpu", lineno)
            v.mem = _int(pairs.get("mem", "1024"), "mem", lineno)
            v.on = pairs.get("on")
            v.ha = pairs.get("ha", "yes") != "no"
            v.group = pairs.get("group")
            v.prefer = pairs["prefer"].split(",") if "prefer" in pairs else []
            v.selector = _labels(pairs["selector"]) if "selector" in pairs else {}
            sc.vms.append(v)
        elif kw == "at":
            if len(rest) < 2:
                raise ScenarioError(f"line {lineno}: 'at SECONDS COMMAND ...'")
            at = _int(rest[0], "at", lineno)
            verb, args = rest[1], tuple(rest[2:])
            if verb not in COMMANDS:
                raise ScenarioError(f"line {lineno}: unknown command {verb!r}")
            if len(args) != COMMANDS[verb] and not (verb == "confirm" and len(args) == 2):
                raise ScenarioError(
                    f"line {lineno}: {verb} takes {COMMANDS[verb]} argument(s), got {args}"
                )
            sc.commands.append(Command(at, verb, args, lineno))
        elif kw == "expect-violations":
            sc.expect_violations = True
        elif kw == "run":
            if len(rest) != 1:
                raise ScenarioError(f"line {lineno}: 'run SECONDS'")
            sc.duration = _int(rest[0], "run", lineno)
        else:
            raise ScenarioError(f"line {lineno}: unknown keyword {kw!r}")
    names = {h.name for h in sc.hosts}
    for f in sc.fences:
        if f.host not in names:
            raise ScenarioError(f"fence {f.name}: host={f.host!r} is not a declared host")
    for v in sc.vms:
        if v.on is not None and v.on not in names:
            raise ScenarioError(f"vm {v.name}: on={v.on!r} is not a declared host")
    sc.commands.sort(key=lambda c: (c.at, c.line))
    return sc
