"""Manifests as datacenter admins write them, right and wrong, against the real API
server (one kubectl call per directory), and the same grammar at runtime.

Each file of manifests/bad/ starts with ``# expect: FRAGMENT``: the API server's
message for that object must contain it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from hafence.agent.domain_policy import DomainPolicy, parse
from hafence.api import KINDS
from hafence.fencing.drivers import build_driver
from hafence.fencing.errors import Unsupported
from hafence.fencing.protocol import Credentials

HERE = Path(__file__).resolve().parent / "manifests"
MODELS = {k.kind: k.spec for k in KINDS}


def _docs(directory: str) -> list[tuple[Path, dict]]:  # type: ignore[type-arg]
    return [(p, yaml.safe_load(p.read_text())) for p in sorted((HERE / directory).glob("*.yaml"))]


def _expect(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), path
    return first.removeprefix("# expect: ")


def _dry_run_apply(control_plane, namespace: str, directory: str):  # type: ignore[no-untyped-def]
    return control_plane.kubectl(
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "-n",
        namespace,
        "-f",
        str(HERE / directory),
        check=False,
    )


def test_there_are_at_least_60_bad_manifests() -> None:
    assert len(_docs("bad")) >= 60


@pytest.mark.controlplane
def test_api_server_refuses_each_bad_manifest_with_its_message(
    control_plane, namespace: str
) -> None:
    out = _dry_run_apply(control_plane, namespace, "bad")
    assert out.returncode != 0
    errors: dict[str, str] = {}
    for block in re.split(r"\n(?=Error from server|The )", out.stderr):
        m = re.search(r'(?:"|/)([a-z0-9-]+)" is invalid', block) or re.search(
            r'name: "([a-z0-9-]+)"', block
        )
        if m:
            errors[m.group(1)] = errors.get(m.group(1), "") + block
    assert "created (server dry run)" not in out.stdout, out.stdout
    for path, doc in _docs("bad"):
        name = doc["metadata"]["name"]
        assert name in errors, f"{name} was accepted:\n{out.stdout}\n{out.stderr}"
        assert _expect(path) in errors[name], errors[name]
        assert "should match '^" not in errors[name], errors[name]  # no raw regex


@pytest.mark.controlplane
def test_api_server_accepts_the_good_manifests(control_plane, namespace: str) -> None:
    out = _dry_run_apply(control_plane, namespace, "good")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("(server dry run)") == len(_docs("good"))


def test_what_the_api_accepts_the_runtime_accepts() -> None:
    for _path, doc in _docs("good"):
        spec = MODELS[doc["kind"]].model_validate(doc["spec"])
        if doc["kind"] == "FenceAgent":
            build_driver(spec, Credentials("u", "p"))  # type: ignore[arg-type]
        lv = spec.runtime.libvirt if doc["kind"] == "HAVirtualMachine" else None  # type: ignore[attr-defined]
        if lv is not None and lv.domain_xml is not None:
            # The agent's default policy, with libvirt's default image directory.
            DomainPolicy((Path("/var/lib/libvirt/images"),)).check(parse(lv.domain_xml))


def test_what_the_runtime_refuses_the_api_refuses() -> None:
    # Every bad manifest fails the runtime models too (the API server's verdict is
    # checked above); where the runtime refuses a field, so does the CRD.
    # Cross-field CEL rules the runtime meets elsewhere (a missing Secret is a
    # ConfigError when read; a blank reason is never applied).
    api_only = {"agent-no-credentials", "confirm-blank-reason"}
    for _path, doc in _docs("bad"):
        if doc["metadata"]["name"] in api_only:
            continue
        try:
            spec = MODELS[doc["kind"]].model_validate(doc["spec"])
        except ValidationError:
            continue
        assert doc["kind"] == "FenceAgent", doc
        with pytest.raises(Unsupported):
            build_driver(spec, Credentials("u", "p"))  # type: ignore[arg-type]
