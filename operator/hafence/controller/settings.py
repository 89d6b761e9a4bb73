"""The operator's settings, from command-line flags and ``HAFENCE_*`` environment variables.

A flag wins over its environment variable, which wins over the default.  Every value is
checked here, before anything starts, and a bad one is reported naming the flag or
variable it came from and the value.

| flag                           | environment                        | default             |
|--------------------------------|------------------------------------|---------------------|
| `--namespace NS` (repeatable)  | `HAFENCE_NAMESPACES` (`a,b`)       | all namespaces      |
| `--kubeconfig PATH`            | `HAFENCE_KUBECONFIG`               | in-cluster, else    |
|                                |                                    | `$KUBECONFIG`       |
| `--identity ID`                | `HAFENCE_IDENTITY`                 | `$HOSTNAME_<random>`|
| `--leader-lease-name NAME`     | `HAFENCE_LEADER_LEASE_NAME`        | `hafence-operator-` |
|                                |                                    | `leader`            |
| `--leader-lease-namespace NS`  | `HAFENCE_LEADER_LEASE_NAMESPACE`   | the pod's namespace,|
|                                |                                    | else the first      |
|                                |                                    | `--namespace`, else |
|                                |                                    | hafence-system      |
| `--leader-lease-duration S`    | `HAFENCE_LEADER_LEASE_DURATION`    | 15 (whole seconds)  |
| `--leader-renew-deadline S`    | `HAFENCE_LEADER_RENEW_DEADLINE`    | 10                  |
| `--leader-retry-period S`      | `HAFENCE_LEADER_RETRY_PERIOD`      | 2                   |
| `--metrics-bind-address H:P`   | `HAFENCE_METRICS_BIND_ADDRESS`     | in a pod            |
|                                |                                    | `0.0.0.0:8080`, else|
|                                |                                    | `127.0.0.1:8080`    |
| `--profile NAME`               | `HAFENCE_PROFILE`                  | `production`, `lab` |
| `--policy KEY=VALUE` (repeat.) | `HAFENCE_POLICY` (`k=v,k=v`)       | none                |
| `--log-level LEVEL`            | `HAFENCE_LOG_LEVEL`                | `info`              |
| `--log-format FORMAT`          | `HAFENCE_LOG_FORMAT`               | `text` (or `json`)  |
| `--pm-health-interval S`       | `HAFENCE_PM_HEALTH_INTERVAL`       | 3600, lab 60; 0: off|
| `--outage-history N`           | `HAFENCE_OUTAGE_HISTORY`           | 20 per host         |
| `--outage-max-age S`           | `HAFENCE_OUTAGE_MAX_AGE`           | 2592000 (30 days)   |
| `--kdump-listen H:P`           | `HAFENCE_KDUMP_LISTEN`             | off (kdump levels   |
|                                |                                    | fail); UDP, 7410 is |
|                                |                                    | fence_kdump's port  |

The fencing timings are the core's (:class:`hafence.core.policy.Settings`): the profile
picks a base, ``--policy`` overrides single fields of it (``--policy
soft_fence_timeout=20``), and :meth:`Settings.policy` builds the result.  A namespace's
FencingPolicy named ``default`` overrides that result field by field
(``controller/policies.py``): these flags are the fallback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from hafence.controller.leader import DEFAULT_LEASE_NAME
from hafence.core import policy as core_policy

Profile = Literal["production", "lab"]
PROFILES: tuple[Profile, ...] = ("production", "lab")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
# oVirt's PMHealthCheckIntervalInSec; the lab checks every minute so a test sees it.
PM_HEALTH_INTERVAL = {"production": 3600.0, "lab": 60.0}
OUTAGE_HISTORY = 20
OUTAGE_MAX_AGE = 30 * 24 * 3600.0

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
FALLBACK_LEASE_NAMESPACE = "hafence-system"

# The lab's timings: seconds instead of minutes, so a failure plays out while one
# watches.  They belong with the core's policy; they live here until
# hafence.core.policy offers profiles of its own.
LAB_POLICY: Mapping[str, float] = MappingProxyType(
    {
        "connecting_grace": 2.0,
        "connecting_grace_per_vm": 0.0,
        "connecting_grace_max": 5.0,
        "soft_fence_timeout": 5.0,
        "fence_retry_base": 5.0,
        "fence_retry_max": 30.0,
        "startup_quiet_period": 5.0,
        "vm_retry_fast_interval": 2.0,
        "vm_retry_slow_interval": 30.0,
        "self_fence_safety_margin": 3.0,
    }
)

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class SettingsError(ValueError):
    """A flag or environment variable has a bad value; the message names both."""


def _policy_fields() -> dict[str, type]:
    """The numeric fields of the core's policy settings, by name: what --policy may set."""
    hints = typing.get_type_hints(core_policy.Settings)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(core_policy.Settings)
        if hints[f.name] in (int, float)
    }


@dataclass(frozen=True)
class Settings:
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    kubeconfig: str | None = None
    identity: str | None = None  # None: leader.default_identity()
    lease_name: str = DEFAULT_LEASE_NAME
    lease_namespace: str = FALLBACK_LEASE_NAMESPACE
    lease_duration: int = 15
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 8080
    profile: Profile = "production"
    policy_overrides: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    log_level: str = "info"
    log_format: str = "text"
    pm_health_interval: float = PM_HEALTH_INTERVAL["production"]  # 0: no checks
    outage_history: int = OUTAGE_HISTORY  # HostOutages kept per host
    outage_max_age: float = OUTAGE_MAX_AGE  # seconds a finished HostOutage is kept
    # The fence_kdump listener's UDP address (controller/kdump.py); None: no listener.
    kdump_listen: tuple[str, int] | None = None

    def policy(self) -> core_policy.Settings:
        """The core's policy: the profile's base with ``policy_overrides`` applied."""
        base = dict(LAB_POLICY) if self.profile == "lab" else {}
        values = {**base, **self.policy_overrides}
        types = _policy_fields()
        changes = {k: int(v) if types[k] is int else float(v) for k, v in values.items()}
        try:
            return core_policy.Settings(**changes)  # type: ignore[arg-type]
        except ValueError as exc:
            raise SettingsError(
                f"fencing policy (profile {self.profile}, --policy/HAFENCE_POLICY "
                f"overrides {dict(self.policy_overrides)}): {exc}"
            ) from None


def build_parser(prog: str = "hafence operator") -> argparse.ArgumentParser:
    """The flags, all as raw strings: values are checked by :func:`parse_settings`."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Run the hafence operator. Each flag can also be set by the "
        "environment variable named in its help; the flag wins.",
    )
    p.add_argument(
        "--namespace",
        action="append",
        metavar="NS",
        help="watch this namespace (repeatable); default: all [HAFENCE_NAMESPACES=a,b]",
    )
    p.add_argument(
        "--kubeconfig",
        metavar="PATH",
        help="kubeconfig file; default: in-cluster, else $KUBECONFIG [HAFENCE_KUBECONFIG]",
    )
    p.add_argument(
        "--identity",
        metavar="ID",
        help="this replica's name in the leader Lease; default: $HOSTNAME "
        "plus a random suffix [HAFENCE_IDENTITY]",
    )
    p.add_argument(
        "--leader-lease-name",
        metavar="NAME",
        help=f"default {DEFAULT_LEASE_NAME} [HAFENCE_LEADER_LEASE_NAME]",
    )
    p.add_argument(
        "--leader-lease-namespace",
        metavar="NS",
        help="default: the pod's namespace, else the first --namespace, else "
        f"{FALLBACK_LEASE_NAMESPACE} [HAFENCE_LEADER_LEASE_NAMESPACE]",
    )
    p.add_argument(
        "--leader-lease-duration",
        metavar="SECONDS",
        help="whole seconds, default 15 [HAFENCE_LEADER_LEASE_DURATION]",
    )
    p.add_argument(
        "--leader-renew-deadline",
        metavar="SECONDS",
        help="default 10, less than the lease duration [HAFENCE_LEADER_RENEW_DEADLINE]",
    )
    p.add_argument(
        "--leader-retry-period",
        metavar="SECONDS",
        help="default 2, less than the renew deadline [HAFENCE_LEADER_RETRY_PERIOD]",
    )
    p.add_argument(
        "--metrics-bind-address",
        metavar="HOST:PORT",
        help="/metrics, /healthz, /readyz; default 0.0.0.0:8080 in a pod, else "
        "127.0.0.1:8080 [HAFENCE_METRICS_BIND_ADDRESS]",
    )
    p.add_argument(
        "--profile",
        metavar="NAME",
        help="timing profile: production (default) or lab [HAFENCE_PROFILE]",
    )
    p.add_argument(
        "--policy",
        action="append",
        metavar="KEY=VALUE",
        help="override one field of the fencing policy (repeatable), e.g. "
        "soft_fence_timeout=20 [HAFENCE_POLICY=k=v,k=v]",
    )
    p.add_argument(
        "--log-level",
        metavar="LEVEL",
        help="debug, info (default), warning or error [HAFENCE_LOG_LEVEL]",
    )
    p.add_argument(
        "--log-format",
        metavar="FORMAT",
        help="text (default) or json: one JSON object per line [HAFENCE_LOG_FORMAT]",
    )
    p.add_argument(
        "--pm-health-interval",
        metavar="SECONDS",
        help="read every FenceAgent's power status this often, spread over the interval; "
        "0 turns it off; default 3600, lab profile 60 [HAFENCE_PM_HEALTH_INTERVAL]",
    )
    p.add_argument(
        "--outage-history",
        metavar="N",
        help=f"HostOutage records kept per host, default {OUTAGE_HISTORY} [HAFENCE_OUTAGE_HISTORY]",
    )
    p.add_argument(
        "--outage-max-age",
        metavar="SECONDS",
        help="finished HostOutage records older than this are deleted, default "
        f"{OUTAGE_MAX_AGE:.0f} (30 days) [HAFENCE_OUTAGE_MAX_AGE]",
    )
    p.add_argument(
        "--kdump-listen",
        metavar="HOST:PORT",
        help="receive fence_kdump messages on this UDP address (kdump FenceAgents), e.g. "
        "0.0.0.0:7410; default: no listener [HAFENCE_KDUMP_LISTEN]",
    )
    return p


def parse_settings(
    argv: Sequence[str],
    environ: Mapping[str, str],
    *,
    service_account_namespace: Path = SERVICE_ACCOUNT_NAMESPACE,
) -> Settings:
    """Settings from ``argv`` (without the program name) and ``environ``.

    Raises SettingsError for a bad value, and SystemExit (argparse) for an unknown
    flag or ``--help``.
    """
    args = build_parser().parse_args(list(argv))
    src = _Sources(args, environ)

    namespaces: tuple[str, ...] = ()
    if args.namespace:
        namespaces = tuple(_namespace("--namespace", n) for n in args.namespace)
    elif environ.get("HAFENCE_NAMESPACES", "").strip():
        raw = environ["HAFENCE_NAMESPACES"]
        names = [n.strip() for n in raw.split(",") if n.strip()]
        namespaces = tuple(_namespace(f"HAFENCE_NAMESPACES={raw!r}", n) for n in names)

    pod_namespace = None
    with contextlib.suppress(OSError):  # not in a pod
        pod_namespace = service_account_namespace.read_text().strip() or None
    lease_namespace = src.get("leader_lease_namespace")
    if lease_namespace is None:
        # Off-cluster the operator may be allowed only the namespaces it watches: its
        # Lease goes where it has rights rather than into a namespace nobody made.
        lease_namespace = pod_namespace or (namespaces or (FALLBACK_LEASE_NAMESPACE,))[0]
    else:
        lease_namespace = _namespace(src.where("leader_lease_namespace"), lease_namespace)

    lease_name = src.get("leader_lease_name") or DEFAULT_LEASE_NAME
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", lease_name) or len(lease_name) > 253:
        raise SettingsError(
            f"{src.where('leader_lease_name')}: {lease_name!r} is not a valid "
            "Lease name (lowercase letters, digits, '-', '.')"
        )

    lease_duration = src.number("leader_lease_duration", 15, whole=True)
    renew_deadline = src.number("leader_renew_deadline", 10.0)
    retry_period = src.number("leader_retry_period", 2.0)
    if renew_deadline >= lease_duration:
        raise SettingsError(
            f"{src.where('leader_renew_deadline')}: {renew_deadline:g} must be less than "
            f"the lease duration ({src.where('leader_lease_duration')}: {lease_duration:g})"
        )
    if retry_period >= renew_deadline:
        raise SettingsError(
            f"{src.where('leader_retry_period')}: {retry_period:g} must be less than "
            f"the renew deadline ({src.where('leader_renew_deadline')}: {renew_deadline:g})"
        )

    # In a pod the kubelet's probes and Prometheus come from outside; off-cluster the
    # metrics are nobody else's business unless asked for.
    default_bind = "0.0.0.0:8080" if pod_namespace is not None else "127.0.0.1:8080"
    host, port = _bind_address(
        src.where("metrics_bind_address"), src.get("metrics_bind_address") or default_bind
    )

    profile_name = src.get("profile") or "production"
    if profile_name not in PROFILES:
        raise SettingsError(
            f"{src.where('profile')}: {profile_name!r} is not a profile "
            f"(choose {' or '.join(PROFILES)})"
        )
    profile: Profile = profile_name

    overrides: dict[str, float] = {}
    env_policy = environ.get("HAFENCE_POLICY", "")
    for item in (i.strip() for i in env_policy.split(",")):
        if item:
            key, value = _policy_item(f"HAFENCE_POLICY={env_policy!r}", item)
            overrides[key] = value
    for item in args.policy or ():
        key, value = _policy_item("--policy", item)
        overrides[key] = value

    log_level = (src.get("log_level") or "info").lower()
    if log_level not in LOG_LEVELS:
        raise SettingsError(
            f"{src.where('log_level')}: {log_level!r} is not a log level "
            f"(choose {', '.join(LOG_LEVELS)})"
        )

    log_format = (src.get("log_format") or "text").lower()
    if log_format not in LOG_FORMATS:
        raise SettingsError(
            f"{src.where('log_format')}: {log_format!r} is not a log format "
            f"(choose {' or '.join(LOG_FORMATS)})"
        )
    raw_interval = (src.get("pm_health_interval") or "").strip()
    pm_interval = (
        0.0
        if raw_interval in ("0", "0.0")
        else src.number("pm_health_interval", PM_HEALTH_INTERVAL[profile])
    )
    history = src.number("outage_history", OUTAGE_HISTORY, whole=True)
    max_age = src.number("outage_max_age", OUTAGE_MAX_AGE)
    raw_kdump = (src.get("kdump_listen") or "").strip()
    kdump_listen = _bind_address(src.where("kdump_listen"), raw_kdump) if raw_kdump else None

    settings = Settings(
        namespaces=namespaces,
        kubeconfig=src.get("kubeconfig") or None,
        identity=src.get("identity") or None,
        lease_name=lease_name,
        lease_namespace=lease_namespace,
        lease_duration=int(lease_duration),
        renew_deadline=renew_deadline,
        retry_period=retry_period,
        metrics_host=host,
        metrics_port=port,
        profile=profile,
        policy_overrides=MappingProxyType(overrides),
        log_level=log_level,
        log_format=log_format,
        pm_health_interval=pm_interval,
        outage_history=int(history),
        outage_max_age=max_age,
        kdump_listen=kdump_listen,
    )
    settings.policy()  # the core checks the combination now, not at the first fence
    return settings


class _Sources:
    """Where each value comes from: the flag if given, else its HAFENCE_* variable."""

    def __init__(self, args: argparse.Namespace, environ: Mapping[str, str]) -> None:
        self._args = args
        self._environ = environ

    @staticmethod
    def _flag(dest: str) -> str:
        return "--" + dest.replace("_", "-")

    @staticmethod
    def _env(dest: str) -> str:
        return "HAFENCE_" + dest.upper()

    def get(self, dest: str) -> str | None:
        value: str | None = getattr(self._args, dest)
        if value is not None:
            return value
        return self._environ.get(self._env(dest)) or None

    def where(self, dest: str) -> str:
        if getattr(self._args, dest) is not None:
            return self._flag(dest)
        if self._environ.get(self._env(dest)):
            return self._env(dest)
        return f"{self._flag(dest)} (default)"

    def number(self, dest: str, default: float, *, whole: bool = False) -> float:
        raw = self.get(dest)
        if raw is None:
            return default
        kind = "a whole number of seconds" if whole else "a number of seconds"
        try:
            value = int(raw) if whole else float(raw)
        except ValueError:
            raise SettingsError(f"{self.where(dest)}: {raw!r} is not {kind}") from None
        if not (value > 0 and math.isfinite(value)):
            raise SettingsError(f"{self.where(dest)}: {raw!r} must be a positive number of seconds")
        return value


def _namespace(where: str, name: str) -> str:
    if not _DNS_LABEL.fullmatch(name) or len(name) > 63:
        raise SettingsError(
            f"{where}: {name!r} is not a valid namespace name "
            "(lowercase letters, digits and '-', at most 63)"
        )
    return name


def _bind_address(where: str, raw: str) -> tuple[str, int]:
    host, sep, port_text = raw.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise SettingsError(f"{where}: {raw!r} is not HOST:PORT with a port of 0..65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # [::]:8080
    if not host:
        raise SettingsError(f"{where}: {raw!r} has no host (use 0.0.0.0:PORT for all)")
    return host, int(port_text)


def _policy_item(where: str, item: str) -> tuple[str, float]:
    key, sep, raw = item.partition("=")
    key, raw = key.strip(), raw.strip()
    fields = _policy_fields()
    if not sep:
        raise SettingsError(f"{where}: {item!r} is not KEY=VALUE")
    if key not in fields:
        raise SettingsError(
            f"{where}: unknown policy key {key!r} (known: {', '.join(sorted(fields))})"
        )
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{where}: {key}={raw!r} is not a number") from None
    if fields[key] is int and not value.is_integer():
        raise SettingsError(f"{where}: {key}={raw!r} must be a whole number")
    if not math.isfinite(value):
        raise SettingsError(f"{where}: {key}={raw!r} must be a finite number")
    return key, value
