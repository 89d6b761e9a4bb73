"""oVirt's options strings and per-type table (pure: no peers needed)."""

from __future__ import annotations

import pytest

from hafence.fencing.drivers import build_driver
from hafence.fencing.errors import Unsupported
from hafence.fencing.fence_agents import FenceAgentDriver, stdin_lines
from hafence.fencing.ipmi import IpmiDriver
from hafence.fencing.options import agent_type, effective_options, parse_options
from hafence.fencing.protocol import Credentials
from hafence.fencing.redfish import RedfishDriver
from hafence.lab.targets import fence_agent_spec as spec


def test_parse_forms() -> None:
    assert parse_options("") == {}
    assert parse_options("ssl=yes,ssl_insecure=yes,inet4_only=yes") == {
        "ssl": "1",
        "ssl_insecure": "1",
        "inet4_only": "1",
    }
    assert parse_options(" lanplus , privlvl = operator,ssl=No, x=TRUE,y=0 ,delay=10") == {
        "lanplus": "1",
        "privlvl": "operator",
        "ssl": "0",
        "x": "1",
        "y": "0",
        "delay": "10",
    }


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("ssl=yes,,lanplus", "doubled comma"),
        ("ssl=", "'ssl='"),
        ("bad key=1", "'bad key=1'"),
        ("a=b=c", "'a=b=c'"),
        ("passwd=hunter2", "'passwd'"),
        ("lanplus,lanplus", "names a key twice"),
        ("x=a\nb", "no line breaks"),
    ],
)
def test_malformed_names_the_token(text: str, bad: str) -> None:
    with pytest.raises(Unsupported) as err:
        parse_options(text)
    assert bad in str(err.value)
    assert "hunter2" not in str(err.value)


def test_unknown_agent_type() -> None:
    with pytest.raises(Unsupported, match="unknown fence agent type 'bogus'"):
        agent_type("bogus")
    assert agent_type("fence_virsh").fence_agent == "fence_virsh"


def test_per_type_defaults_and_secure_mapping() -> None:
    assert effective_options(agent_type("ilo4"), "") == {"lanplus": "1", "power_wait": "4"}
    assert effective_options(agent_type("ilo4"), "power_wait=9")["power_wait"] == "9"
    assert effective_options(agent_type("drac7"), "")["privlvl"] == "operator"
    assert effective_options(agent_type("ilo2"), "secure=yes") == {"ssl": "1"}
    assert effective_options(agent_type("apc"), "secure=yes") == {
        "secure": "1",
        "ssh_options": "-o ConnectTimeout=10",  # not fence_apc's SSH protocol 1
    }


def test_driver_choice() -> None:
    creds = Credentials("u", "p4ssword")
    assert isinstance(build_driver(spec("ipmilan", 623), creds), IpmiDriver)
    assert isinstance(build_driver(spec("idrac", 623), creds), IpmiDriver)
    assert isinstance(build_driver(spec("redfish", 443), creds), RedfishDriver)
    apc = build_driver(spec("apc", 23, plug="4", options="secure=yes"), creds)
    assert isinstance(apc, FenceAgentDriver) and apc.program == "fence_apc"
    stdin = apc._stdin("off").decode()
    # oVirt's secure reaches fence_apc under the name that obsoletes it.
    assert "plug=4\n" in stdin and "ssh=1\n" in stdin and "ipport=23\n" in stdin
    with pytest.raises(Unsupported, match="privlvl='root'"):
        build_driver(spec("ipmilan", 623, options="privlvl=root"), creds)


def test_false_flags_are_left_out() -> None:
    assert stdin_lines({"ssl": "0", "lanplus": "1", "delay": "0"}) == b"lanplus=1\ndelay=0\n"
