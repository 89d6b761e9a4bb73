"""Options checked against each real agent's own ``-o metadata``."""

from __future__ import annotations

import pytest

from hafence.api.fenceagent import OVIRT_AGENT_TYPES, FenceAgentSpec
from hafence.fencing import metadata
from hafence.fencing.drivers import build_driver
from hafence.fencing.fence_agents import FenceAgentDriver
from hafence.fencing.metadata import agent_parameters, check_options, options_report
from hafence.fencing.protocol import Credentials

ARTICLE = "ssl=yes,ssl_insecure=yes,inet4_only=yes"


def spec(type_: str, options: str, address: str = "127.0.0.1") -> FenceAgentSpec:
    return FenceAgentSpec.model_validate(
        {
            "hostRef": {"name": "h1"},
            "type": type_,
            "address": address,
            "credentialsSecretRef": {"name": "bmc"},
            "options": options,
        }
    )


def test_the_articles_ilo2_options() -> None:
    report = options_report(spec("ilo2", ARTICLE))
    assert report.valid and report.checked
    assert report.options == {"ssl": "1", "ssl_insecure": "1"}
    assert list(report.ignored) == ["inet4_only"]
    assert "fence_ilo2 has no IP-family option" in report.ignored["inet4_only"]
    assert "127.0.0.1 is IPv4 already" in report.ignored["inet4_only"]


def test_inet4_only_passes_where_the_agent_has_it() -> None:
    report = options_report(spec("wti", "inet4_only=yes,secure=yes"))
    assert report.options == {"inet4_only": "1", "ssh": "1"}  # secure is deprecated: ssh
    assert report.translated == {"secure": "ssh"}
    assert report.valid and not report.ignored


def test_an_unknown_option_is_reported_and_not_passed() -> None:
    report = options_report(spec("ilo2", "ssl=yes,lanplus=yes,ribcl_version=2.0,colour=red"))
    assert report.unknown == ["lanplus", "colour"]
    assert not report.valid
    assert report.options == {"ssl": "1", "ribcl_version": "2.0"}
    assert "options unknown to fence_ilo2 (not passed): lanplus, colour" in report.message()
    # TLS options on an agent without TLS are ignored, not unknown.
    snmp = options_report(spec("apc_snmp", "ssl_insecure=yes,snmp_version=1"))
    assert snmp.valid and snmp.ignored == {"ssl_insecure": "fence_apc_snmp does not use TLS"}


def test_the_driver_gives_the_agent_only_what_it_knows() -> None:
    driver = build_driver(spec("ilo2", ARTICLE + ",colour=red"), Credentials("u", "pw-x"))
    assert isinstance(driver, FenceAgentDriver)
    stdin = driver._stdin("status").decode().splitlines()
    assert "ssl=1" in stdin and "ssl_insecure=1" in stdin
    assert not [ln for ln in stdin if ln.startswith(("inet4_only", "colour"))]


@pytest.mark.parametrize("type_", OVIRT_AGENT_TYPES)
def test_hafence_defaults_are_known_to_every_agent(type_: str) -> None:
    report = options_report(spec(type_, "secure=yes"))
    assert report.checked and report.valid, report.message()


def test_metadata_is_read_once_per_binary() -> None:
    metadata._read.cache_clear()
    first = agent_parameters("fence_ilo2")
    again = agent_parameters("fence_ilo2")
    assert first is again and first is not None
    assert metadata._read.cache_info().misses == 1
    assert {"ssl", "ssl_insecure", "notls", "tls1.0", "ipport"} <= first.names
    assert "inet4_only" not in first.names


def test_an_agent_not_installed_is_said_unchecked() -> None:
    report = check_options("fence_not_installed_here", {"ssl": "1"}, "127.0.0.1")
    assert not report.checked and report.options == {"ssl": "1"}
    assert "not installed here" in report.message()
