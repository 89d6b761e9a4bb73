"""Operator settings: flags over environment over defaults, and errors naming the source."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hafence.controller.settings import (
    LAB_POLICY,
    Settings,
    SettingsError,
    parse_settings,
)
from hafence.core import policy as core_policy

NO_POD = Path("/nonexistent/serviceaccount/namespace")


def parse(*argv: str, env: dict[str, str] | None = None, sa: Path = NO_POD) -> Settings:
    return parse_settings(list(argv), env or {}, service_account_namespace=sa)


def test_defaults() -> None:
    s = parse()
    assert s == Settings()
    assert s.namespaces == ()
    assert (s.lease_name, s.lease_namespace) == ("hafence-operator-leader", "hafence-system")
    assert (s.lease_duration, s.renew_deadline, s.retry_period) == (15, 10.0, 2.0)
    assert (s.metrics_host, s.metrics_port) == ("127.0.0.1", 8080)
    assert s.profile == "production" and dict(s.policy_overrides) == {}
    assert s.policy() == core_policy.Settings()


def test_lease_namespace_defaults_to_the_pods(tmp_path: Path) -> None:
    sa = tmp_path / "namespace"
    sa.write_text("dc-paris\n")
    assert parse(sa=sa).lease_namespace == "dc-paris"
    assert parse("--leader-lease-namespace", "ops", sa=sa).lease_namespace == "ops"


def test_environment_then_flags_win() -> None:
    env = {
        "HAFENCE_NAMESPACES": "dc1, dc2",
        "HAFENCE_LEADER_LEASE_DURATION": "30",
        "HAFENCE_LEADER_RENEW_DEADLINE": "20",
        "HAFENCE_LEADER_RETRY_PERIOD": "4",
        "HAFENCE_METRICS_BIND_ADDRESS": "127.0.0.1:9100",
        "HAFENCE_PROFILE": "lab",
        "HAFENCE_POLICY": "soft_fence_timeout=7,max_concurrent_fences=3",
        "HAFENCE_IDENTITY": "from-env",
        "HAFENCE_LOG_LEVEL": "DEBUG",
    }
    s = parse(env=env)
    assert s.namespaces == ("dc1", "dc2")
    assert (s.lease_duration, s.renew_deadline, s.retry_period) == (30, 20.0, 4.0)
    assert (s.metrics_host, s.metrics_port) == ("127.0.0.1", 9100)
    assert (s.profile, s.identity, s.log_level) == ("lab", "from-env", "debug")

    s = parse(
        "--namespace", "dc3",
        "--leader-lease-duration", "25",
        "--metrics-bind-address", "[::1]:0",
        "--policy", "soft_fence_timeout=9",
        "--identity", "from-flag",
        env=env,
    )  # fmt: skip
    assert s.namespaces == ("dc3",)
    assert s.lease_duration == 25 and s.renew_deadline == 20.0  # from the environment
    assert (s.metrics_host, s.metrics_port) == ("::1", 0)
    assert s.identity == "from-flag"
    # Flags override the environment key by key; other keys from the environment stay.
    assert dict(s.policy_overrides) == {"soft_fence_timeout": 9.0, "max_concurrent_fences": 3.0}


def test_profile_and_overrides_build_the_core_policy() -> None:
    lab = parse("--profile", "lab").policy()
    for key, value in LAB_POLICY.items():
        assert getattr(lab, key) == value
    assert lab.soft_fence_timeout < core_policy.Settings().soft_fence_timeout

    tuned = parse("--profile", "lab", "--policy", "soft_fence_timeout=12",
                  "--policy", "max_concurrent_fences=2").policy()  # fmt: skip
    assert tuned.soft_fence_timeout == 12.0
    assert tuned.max_concurrent_fences == 2 and isinstance(tuned.max_concurrent_fences, int)
    assert tuned.connecting_grace == LAB_POLICY["connecting_grace"]


def test_lab_profile_names_only_real_policy_fields() -> None:
    names = {f.name for f in dataclasses.fields(core_policy.Settings)}
    assert set(LAB_POLICY) <= names


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--leader-lease-duration", "abc"], {},
         "--leader-lease-duration: 'abc' is not a whole number of seconds"),
        (["--leader-lease-duration", "2.5"], {},
         "--leader-lease-duration: '2.5' is not a whole number of seconds"),
        ([], {"HAFENCE_LEADER_LEASE_DURATION": "ten"},
         "HAFENCE_LEADER_LEASE_DURATION: 'ten' is not a whole number of seconds"),
        (["--leader-retry-period", "-1"], {},
         "--leader-retry-period: '-1' must be a positive number of seconds"),
        (["--leader-retry-period", "nan"], {},
         "--leader-retry-period: 'nan' must be a positive number of seconds"),
        (["--leader-renew-deadline", "15"], {},
         "--leader-renew-deadline: 15 must be less than the lease duration "
         "(--leader-lease-duration (default): 15)"),
        (["--leader-retry-period", "10"], {"HAFENCE_LEADER_RENEW_DEADLINE": "5"},
         "--leader-retry-period: 10 must be less than the renew deadline "
         "(HAFENCE_LEADER_RENEW_DEADLINE: 5)"),
        (["--metrics-bind-address", "8080"], {},
         "--metrics-bind-address: '8080' is not HOST:PORT"),
        ([], {"HAFENCE_METRICS_BIND_ADDRESS": "0.0.0.0:99999"},
         "HAFENCE_METRICS_BIND_ADDRESS: '0.0.0.0:99999' is not HOST:PORT"),
        (["--metrics-bind-address", ":8080"], {},
         "--metrics-bind-address: ':8080' has no host"),
        (["--namespace", "DC_1"], {}, "--namespace: 'DC_1' is not a valid namespace name"),
        ([], {"HAFENCE_NAMESPACES": "ok,Not-OK"},
         "HAFENCE_NAMESPACES='ok,Not-OK': 'Not-OK' is not a valid namespace name"),
        (["--leader-lease-name", "Leader!"], {},
         "--leader-lease-name: 'Leader!' is not a valid Lease name"),
        (["--profile", "fast"], {},
         "--profile: 'fast' is not a profile (choose production or lab)"),
        ([], {"HAFENCE_PROFILE": "prod"}, "HAFENCE_PROFILE: 'prod' is not a profile"),
        (["--policy", "soft_fence_timeout"], {}, "--policy: 'soft_fence_timeout' is not KEY=VALUE"),
        (["--policy", "no_such=1"], {}, "--policy: unknown policy key 'no_such' (known: "),
        (["--policy", "soft_fence_timeout=soon"], {},
         "--policy: soft_fence_timeout='soon' is not a number"),
        (["--policy", "max_concurrent_fences=1.5"], {},
         "--policy: max_concurrent_fences='1.5' must be a whole number"),
        ([], {"HAFENCE_POLICY": "soft_fence_timeout=inf"},
         "HAFENCE_POLICY='soft_fence_timeout=inf': soft_fence_timeout='inf' must be a finite"),
        (["--policy", "fence_retry_factor=0.5"], {},
         "fence_retry_factor must be >= 1, got 0.5"),
        (["--log-level", "loud"], {}, "--log-level: 'loud' is not a log level"),
    ],
)  # fmt: skip
def test_bad_values_name_the_flag_or_variable_and_the_value(
    argv: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as err:
        parse(*argv, env=env)
    assert message in str(err.value)


def test_unknown_flag_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse("--leader-lease", "10")
    assert exit_.value.code == 2
    assert "--leader-lease" in capsys.readouterr().err


def test_settings_are_frozen() -> None:
    s = parse("--policy", "soft_fence_timeout=3")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.profile = "lab"  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.policy_overrides["soft_fence_timeout"] = 4.0  # type: ignore[index]


def test_off_cluster_metrics_bind_loopback_in_a_pod_all(tmp_path: Path) -> None:
    assert (parse().metrics_host, parse().metrics_port) == ("127.0.0.1", 8080)
    sa = tmp_path / "namespace"
    sa.write_text("hafence-system\n")
    assert parse(sa=sa).metrics_host == "0.0.0.0"
    assert parse("--metrics-bind-address", "0.0.0.0:9000").metrics_host == "0.0.0.0"


def test_off_cluster_leader_lease_follows_the_watched_namespace(tmp_path: Path) -> None:
    assert parse("--namespace", "dc1", "--namespace", "dc2").lease_namespace == "dc1"
    assert parse(env={"HAFENCE_NAMESPACES": "dc3"}).lease_namespace == "dc3"
    assert parse("--namespace", "dc1", "--leader-lease-namespace", "ops").lease_namespace == "ops"
    sa = tmp_path / "namespace"
    sa.write_text("hafence-system\n")
    assert parse("--namespace", "dc1", sa=sa).lease_namespace == "hafence-system"


def test_log_format_and_health_interval() -> None:
    assert parse().log_format == "text"
    assert parse("--log-format", "JSON").log_format == "json"
    with pytest.raises(SettingsError, match=r"--log-format: 'xml' is not a log format"):
        parse("--log-format", "xml")
    assert parse().pm_health_interval == 3600.0
    assert parse("--profile", "lab").pm_health_interval == 60.0
    assert parse("--pm-health-interval", "0").pm_health_interval == 0.0
    assert parse(env={"HAFENCE_PM_HEALTH_INTERVAL": "5"}).pm_health_interval == 5.0
    with pytest.raises(SettingsError, match="--pm-health-interval"):
        parse("--pm-health-interval", "-3")
    assert parse("--outage-history", "3").outage_history == 3


def test_kdump_listener_is_off_unless_asked_for() -> None:
    assert parse().kdump_listen is None
    assert parse("--kdump-listen", "0.0.0.0:7410").kdump_listen == ("0.0.0.0", 7410)
    env = {"HAFENCE_KDUMP_LISTEN": "[::]:7410"}
    assert parse(env=env).kdump_listen == ("::", 7410)
    with pytest.raises(SettingsError) as err:
        parse("--kdump-listen", "7410")
    assert "--kdump-listen: '7410' is not HOST:PORT" in str(err.value)
