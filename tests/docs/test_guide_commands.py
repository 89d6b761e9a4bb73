"""Every command of the user guide is exercised by a test: run here for real, or mapped.

What counts as a command, the substitutions, and the tables (RUN_HERE, RUN_ELSEWHERE,
NOT_RUN, MENTIONS) are in tests/docs/guide.py.  This module checks that the tables
account for every command of the guide, and runs the RUN_HERE ones, grouped by what a
user does (install, a datacenter's namespace, the samples, power management, an
isolated host, kind, the CLIs), each asserting on the command's real effect.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from hafence.kube import Api
from hafence.lab.bmc import BmcFarm
from hafence.lab.controlplane import ControlPlane, kubeconfig_text
from tests.operator.conftest import Heartbeats, OperatorProcess, wait_for

from .conftest import (
    PASSWORD,
    USER,
    Shell,
    ha_vm,
    host,
    ipmi_agent,
    ipmi_secret,
    ssh_to_nowhere,
    status,
)
from .guide import (
    COMMANDS,
    NOT_RUN,
    ROOT,
    RUN_ELSEWHERE,
    RUN_HERE,
    TABLES,
    command,
    commands_of,
    unaccounted,
)


def run(
    shell: Shell, text: str, *, ok: bool = True, secret_output: bool = False, **subs: str
) -> subprocess.CompletedProcess[str]:
    """Runs the guide's command `text` with `dc1` and the placeholders substituted."""
    line = re.sub(r"\bdc1\b", shell.namespace, command(text).text)
    for placeholder, value in subs.items():
        line = re.sub(rf"\b{placeholder}\b", value, line)
    done = shell.run(line)
    shown = "(output not shown: a credential)\n" if secret_output else done.stdout
    print(f"$ {line}\n{shown}{done.stderr}")
    if ok:
        assert done.returncode == 0, f"{line!r} exited {done.returncode}: {done.stderr}"
    return done


# ---- the guide is fully accounted for -----------------------------------------------------


def test_the_guide_has_commands() -> None:
    # The extractor works: a guide whose blocks stopped being found must not pass.
    files = {c.where.split(":")[0] for c in COMMANDS}
    assert {"README.md", "docs/deploy.md", "manifests/samples/README.md"} <= files, files
    assert len(COMMANDS) >= 25, COMMANDS


def test_every_guide_command_is_accounted_for() -> None:
    tables = set().union(*TABLES)
    overlap = [c for c in tables if sum(c in t for t in TABLES) > 1]
    assert not overlap, f"commands in more than one table: {overlap}"
    unmapped = unaccounted(COMMANDS)
    assert not unmapped, (
        "commands in the guide that no test runs or maps (add them to RUN_HERE with a "
        "test that runs them, to RUN_ELSEWHERE, to NOT_RUN with the reason, or to "
        "MENTIONS if it names a program rather than a command line):\n" + "\n".join(unmapped)
    )
    texts = {c.text for c in COMMANDS}
    stale = sorted(c for c in tables if c not in texts)
    assert not stale, f"mapped commands no longer in the guide: {stale}"
    missing = {t for t in RUN_HERE.values() if not callable(globals().get(t))}
    assert not missing, f"RUN_HERE names tests that do not exist: {missing}"


def test_a_new_command_is_named() -> None:
    """What the check above sees when someone adds commands to the guide."""
    markdown = (
        "In prose, `kubectl get pods -n dc1` lists pods; `kubectl` alone is a name.\n"
        "```bash\n"
        "$ kubectl get havms -n dc1   # HOST, PHASE\n"
        "kubectl -n dc1 create rolebinding x \\\n"
        "    --role=hafence-agent\n"
        "hafence annotate 'a # b'\n"
        "```\n"
        "```yaml\n"
        "kubectl: not a command in YAML\n"
        "```\n"
        "- `hafence power NAME off -n NS` then `kubectl delete -n x\n"
        "  deployment/y` across a line break.\n"
        "```sh\n"
        "make demo\n"
        "```\n"
    )
    found = commands_of("NEW.md", markdown)
    assert [c.text for c in found] == [
        "kubectl get pods -n dc1",
        "kubectl get havms -n dc1",
        "kubectl -n dc1 create rolebinding x --role=hafence-agent",
        "hafence annotate 'a # b'",
        "hafence power NAME off -n NS",
        "kubectl delete -n x deployment/y",
        "make demo",
    ]
    assert unaccounted(found) == [
        "NEW.md:1: kubectl get pods -n dc1",
        "NEW.md:3: kubectl get havms -n dc1",
        "NEW.md:4: kubectl -n dc1 create rolebinding x --role=hafence-agent",
        "NEW.md:6: hafence annotate 'a # b'",
        "NEW.md:11: hafence power NAME off -n NS",
        "NEW.md:11: kubectl delete -n x deployment/y",
    ]


def test_mapped_tests_exist() -> None:
    ids = sorted(
        {i for ids in RUN_ELSEWHERE.values() for i in ids}
        | {i for n in NOT_RUN.values() for i in n.nearest}
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *ids],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    collected = proc.stdout.splitlines()
    absent = [
        i for i in ids if not any(c == i or c.startswith((i + "[", i + "::")) for c in collected)
    ]
    assert not absent, f"mapped tests not collected: {absent}\n{proc.stdout}{proc.stderr}"


# ---- the commands, run for real -------------------------------------------------------------


def _refuse_stale_crds() -> None:
    """Applying an old copy of a CRD would break the rest of the session's tests."""
    source = {p.name: p.read_text() for p in (ROOT / "crds").glob("*.yaml")}
    copy = {p.name: p.read_text() for p in (ROOT / "manifests/base/crds").glob("*.yaml")}
    if source != copy:
        pytest.fail("manifests/base/crds differs from crds/: run hack/sync_generated.py")


def _deployment(control_plane: ControlPlane, jsonpath: str) -> str:
    return control_plane.kubectl(
        "get",
        "deployment",
        "hafence-operator",
        "-n",
        "hafence-system",
        "-o",
        f"jsonpath={jsonpath}",
    ).stdout


@pytest.mark.controlplane
def test_install_commands(shell: Shell, control_plane: ControlPlane) -> None:
    _refuse_stale_crds()
    # docs/deploy.md first: server-side apply takes over fields that an earlier
    # client-side apply owns only with --force-conflicts, which the guide does not say.
    run(shell, "kubectl apply --server-side -k manifests/base")
    assert _deployment(control_plane, "{.spec.replicas}") == "1"
    for crd in ("hosts", "fenceagents", "havirtualmachines", "fenceconfirmations"):
        control_plane.kubectl("get", "crd", f"{crd}.hafence.io")
    waited = shell.run(
        command("kubectl -n hafence-system rollout status deployment/hafence-operator").text
        + " --timeout=1s"
    )
    # Found and waited on (no controller-manager here ever rolls it out).
    assert waited.returncode != 0
    assert "not found" not in waited.stderr, waited.stderr
    assert "Waiting for deployment" in waited.stdout + waited.stderr, waited

    run(shell, "kubectl apply -k manifests/base")
    assert _deployment(control_plane, "{.spec.replicas}") == "1"
    run(shell, "kubectl apply -k manifests/overlays/ha")
    assert _deployment(control_plane, "{.spec.replicas}") == "2"
    pdb = control_plane.kubectl("get", "pdb", "hafence-operator", "-n", "hafence-system")
    assert pdb.returncode == 0
    run(shell, "kubectl apply -k manifests/overlays/namespaced")
    env = _deployment(
        control_plane,
        '{.spec.template.spec.containers[0].env[?(@.name=="HAFENCE_NAMESPACES")].value}',
    )
    assert env == "dc1,dc2"
    for ns in ("dc1", "dc2"):
        control_plane.kubectl("get", "rolebinding", "hafence-operator", "-n", ns)

    listed = run(
        shell, "kubectl get validatingadmissionpolicy,validatingadmissionpolicybinding"
    ).stdout
    for policy in (
        "hafence-operator-never-writes-spec",
        "hafence-agent-never-places",
        "hafence-agent-own-host-only",
    ):
        assert f"validatingadmissionpolicy.admissionregistration.k8s.io/{policy} " in listed
        assert f"validatingadmissionpolicybinding.admissionregistration.k8s.io/{policy} " in (
            listed
        )

    # Uninstalling starts with the operator; the rest of the session keeps an install.
    run(shell, "kubectl delete -n hafence-system deployment/hafence-operator")
    gone = control_plane.kubectl(
        "get", "deployment", "hafence-operator", "-n", "hafence-system", check=False
    )
    assert gone.returncode != 0 and "NotFound" in gone.stderr, gone
    control_plane.kubectl(
        "apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "manifests/base")
    )


@pytest.mark.controlplane
def test_datacenter_namespace_and_agent_identity(
    control_plane: ControlPlane, shell: Shell, tmp_path: Path
) -> None:
    shell.namespace = f"dc-{uuid.uuid4().hex[:8]}"  # `create namespace` needs a new one
    run(shell, "kubectl create namespace dc1")
    control_plane.kubectl("get", "namespace", shell.namespace)
    run(shell, "kubectl apply --server-side -k manifests/overlays/datacenter -n dc1")
    control_plane.kubectl("get", "role", "hafence-agent", "-n", shell.namespace)
    control_plane.kubectl("get", "serviceaccount", "hafence-agent", "-n", shell.namespace)

    run(shell, "kubectl -n dc1 create serviceaccount hafence-agent-hv-01")
    run(
        shell,
        "kubectl -n dc1 create rolebinding hafence-agent-hv-01 --role=hafence-agent "
        "--serviceaccount=dc1:hafence-agent-hv-01",
    )
    token = run(
        shell, "kubectl -n dc1 create token hafence-agent-hv-01 --duration=720h", secret_output=True
    ).stdout.strip()
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["sub"] == f"system:serviceaccount:{shell.namespace}:hafence-agent-hv-01"
    assert claims["exp"] - claims["iat"] == 720 * 3600  # this API server sets no cap

    # The token alone, as the host's kubeconfig holds it (no client certificate); in a
    # 0600 file, never on a command line.
    agent_kubeconfig = tmp_path / "agent.kubeconfig"
    agent_kubeconfig.touch(mode=0o600)
    agent_kubeconfig.write_text(
        kubeconfig_text(
            control_plane.url,
            control_plane.dir / "pki" / "ca.crt",
            None,
            None,
            token=token,
            user="hafence-agent-hv-01",
        )
    )

    def can_i(*args: str) -> str:
        kubectl = [str(control_plane.binaries.kubectl), "--kubeconfig", str(agent_kubeconfig)]
        got = subprocess.run(
            [*kubectl, "auth", "can-i", *args, "-n", shell.namespace],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return got.stdout.strip()

    assert can_i("update", "leases.coordination.k8s.io") == "yes"
    assert can_i("patch", "havirtualmachines.hafence.io", "--subresource=status") == "yes"
    assert can_i("get", "secrets") == "no"
    assert can_i("create", "fenceconfirmations.hafence.io") == "no"


@pytest.mark.controlplane
def test_samples_apply_and_list(control_plane: ControlPlane, shell: Shell) -> None:
    shell.namespace = f"dc-{uuid.uuid4().hex[:8]}"
    run(shell, "kubectl create namespace dc1")
    run(shell, "kubectl apply -n dc1 -f manifests/samples/")
    docs = [
        d
        for path in sorted((ROOT / "manifests/samples").glob("*.yaml"))
        for d in yaml.safe_load_all(path.read_text())
        if d
    ]
    for d in docs:
        got = control_plane.kubectl(
            "get", d["kind"].lower(), d["metadata"]["name"], "-n", shell.namespace, check=False
        )
        assert got.returncode == 0, f"{d['kind']} {d['metadata']['name']}: {got.stderr}"
    listed = run(shell, "kubectl get hafence -n dc1").stdout
    ours = [d for d in docs if d["apiVersion"].startswith("hafence.io/")]
    assert {d["kind"] for d in ours} == {
        "Host",
        "FenceAgent",
        "HAVirtualMachine",
        "FenceConfirmation",
    }
    for d in ours:
        plural = {"HAVirtualMachine": "havirtualmachine"}.get(d["kind"], d["kind"].lower())
        assert f"{plural}.hafence.io/{d['metadata']['name']} " in listed, (d, listed)
    assert "CHANGE-ME" not in listed  # the category shows no Secret


@pytest.mark.controlplane
def test_power_management_commands(api: Api, namespace: str, shell: Shell, bmcs: BmcFarm) -> None:
    # The README's names: host hv-a1 with its agent hv-a1-ilo, here an ipmilan agent on
    # a simulated BMC (an iLO2 speaks IPMI too; no iLO2 simulator exists here).
    bmc = bmcs.add("hv-a1", USER, PASSWORD, power="on")
    ipmi_secret(api, namespace)
    api.create("Host", namespace, host("hv-a1"))
    api.create("FenceAgent", namespace, ipmi_agent("hv-a1-ilo", "hv-a1", bmc))

    done = run(shell, "hafence fence-agent test hv-a1-ilo -n dc1")
    assert done.stdout.startswith("hv-a1-ilo: power on"), done.stdout
    st = status(api, "FenceAgent", namespace, "hv-a1-ilo")
    assert st["lastTestResult"] == "Succeeded" and st["powerState"] == "on", st
    assert st["lastTestTime"]

    table = run(shell, "kubectl get fenceagents -n dc1").stdout.splitlines()
    assert table[0].split()[:6] == ["NAME", "HOST", "TYPE", "ORDER", "POWER", "REACHABLE"]
    assert table[1].split()[:6] == ["hv-a1-ilo", "hv-a1", "ipmilan", "1", "on", "True"], table

    done = run(shell, "hafence power hv-a1 status -n dc1")
    lines = done.stdout.splitlines()
    assert lines[0].startswith("order 1 [hv-a1-ilo]: status succeeded (power on)"), lines
    assert lines[-1] == "hv-a1: status succeeded, power on", lines
    assert bmc.action_names == []  # neither a test nor a status switches power

    # Troubleshooting: a failing test says why.  Refused credentials, then a dead BMC.
    ipmi_secret(api, namespace, "wrong", password="N0t-the-pw")
    api.create("FenceAgent", namespace, ipmi_agent("hv-a1-bad", "hv-a1", bmc, secret="wrong"))
    done = run(
        shell, "hafence fence-agent test NAME -n NS", ok=False, NAME="hv-a1-bad", NS=namespace
    )
    assert done.returncode == 1, done
    assert "AuthFailed" in done.stderr and "authentication failed" in done.stderr, done.stderr
    bmc.dead = True
    done = run(
        shell, "hafence fence-agent test NAME -n NS", ok=False, NAME="hv-a1-ilo", NS=namespace
    )
    assert done.returncode == 1, done
    assert "TimedOut" in done.stderr and "no result within 3s" in done.stderr, done.stderr
    reachable = [
        c
        for c in status(api, "FenceAgent", namespace, "hv-a1-ilo")["conditions"]
        if c["type"] == "Reachable"
    ]
    assert reachable[0]["status"] == "False" and reachable[0]["reason"] == "TimedOut"
    for out in (done.stdout, done.stderr):
        assert PASSWORD not in out and "N0t-the-pw" not in out


@pytest.mark.controlplane
def test_confirm_isolated_host_and_troubleshoot(
    api: Api,
    namespace: str,
    shell: Shell,
    heartbeats: Heartbeats,
    start_operator: Callable[..., OperatorProcess],
    tmp_path: Path,
) -> None:
    # hv-a3 lost power with its BMC: no fence agent answers for it, nor its SSH port.
    for name in ("hv-a1", "hv-a2", "hv-a3"):
        body = host(name)
        if name == "hv-a3":
            body["spec"]["ssh"] = ssh_to_nowhere(api, namespace, tmp_path)
        api.create("Host", namespace, body)
        heartbeats.start(name)
    api.create("HAVirtualMachine", namespace, ha_vm("db-primary", preferred="hv-a3"))
    op = start_operator("--policy", "startup_quiet_period=0")
    wait_for(
        lambda: status(api, "HAVirtualMachine", namespace, "db-primary").get("host") == "hv-a3",
        what="db-primary on hv-a3",
    )
    table = run(shell, "kubectl get havms").stdout.splitlines()  # the context's namespace
    assert table[0].split()[:4] == ["NAME", "PHASE", "HOST", "PRIORITY"], table
    assert table[1].split()[0] == "db-primary" and table[1].split()[2:4] == ["hv-a3", "High"]

    heartbeats.stop("hv-a3")
    wait_for(
        lambda: status(api, "Host", namespace, "hv-a3").get("phase") == "Isolated",
        what="hv-a3 Isolated",
    )
    assert status(api, "HAVirtualMachine", namespace, "db-primary")["host"] == "hv-a3"

    # Troubleshooting an Isolated host, before confirming it.
    described = run(shell, "kubectl describe host NAME", NAME="hv-a3").stdout
    assert "Namespace:    " + namespace in described and "HostIsolated" in described
    described = run(shell, "kubectl describe host NAME -n NS", NAME="hv-a3", NS=namespace).stdout
    for reason in ("HostConnecting", "SoftFenceStarted", "SoftFenceFailed", "HostIsolated"):
        assert reason in described, described
    fencing = run(
        shell,
        "kubectl get host NAME -n NS -o jsonpath='{.status.fencing}'",
        NAME="hv-a3",
        NS=namespace,
    ).stdout
    got = json.loads(fencing)
    print(got)
    # "outage ID, attempt, level, last action and its result"
    assert got["outageID"].startswith("hv-a3-"), got
    assert got["lastAction"] == "soft-fence", got
    assert "Unable to connect" in got["lastResult"], got

    run(
        shell,
        'kubectl annotate host hv-a3 -n dc1 hafence.io/confirm-rebooted="power cable pulled, '
        'checked on site"',
    )
    (fc,) = wait_for(
        lambda: api.list("FenceConfirmation", namespace)["items"], what="a FenceConfirmation"
    )
    assert fc["spec"] == {
        "hostRef": {"name": "hv-a3"},
        "reason": "power cable pulled, checked on site",
    }
    wait_for(
        lambda: (
            status(api, "FenceConfirmation", namespace, fc["metadata"]["name"]).get("phase")
            == "Applied"
        ),
        what="the confirmation Applied",
    )
    moved = wait_for(
        lambda: (
            status(api, "HAVirtualMachine", namespace, "db-primary").get("host")
            in ("hv-a1", "hv-a2")
        ),
        what="db-primary restarted elsewhere",
    )
    assert moved
    described = run(shell, "kubectl describe host NAME -n NS", NAME="hv-a3", NS=namespace).stdout
    assert "ConfirmationApplied" in described, described
    fencing = run(
        shell,
        "kubectl get host NAME -n NS -o jsonpath='{.status.fencing}'",
        NAME="hv-a3",
        NS=namespace,
    ).stdout
    assert json.loads(fencing)["proof"] == "confirmation", fencing

    # docs/lab.md's form, for a host that is Up: the confirmation is Rejected.
    run(
        shell,
        "kubectl annotate host NAME hafence.io/confirm-rebooted=REASON",
        NAME="hv-a1",
        REASON="wrong-host",
    )
    rejected = wait_for(
        lambda: [
            st
            for fc in api.list("FenceConfirmation", namespace)["items"]
            if fc["spec"]["hostRef"]["name"] == "hv-a1"
            and (st := fc.get("status") or {}).get("phase")
        ],
        what="a verdict on the confirmation for hv-a1",
    )
    assert rejected[0]["phase"] == "Rejected" and "Up" in rejected[0]["message"], rejected

    assert op.proc.poll() is None, op.output()


def test_kind_targets_skip_without_docker(shell: Shell) -> None:
    # PATH has no docker and no kind: each says it skips and why, and succeeds.
    for text in ("make kind-up", "make kind-e2e", "./hack/kind.sh kind-down"):
        done = run(shell, text)
        assert done.stdout.startswith("skipped:") and "docker" in done.stdout.lower(), done.stdout


def test_make_recipes(shell: Shell) -> None:
    """`make demo` and `make test` cannot run here (see NOT_RUN): what they would run."""
    for target, recipe in (
        ("demo", ".venv/bin/hafence lab --scenario all"),
        ("test", ".venv/bin/pytest -q tests"),
    ):
        done = shell.run(f"make -n {target}")
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[-1] == recipe, done.stdout


def test_operator_help_and_local_control_plane(shell: Shell, tmp_path: Path) -> None:
    helped = run(shell, "hafence operator --help").stdout
    flags = set(re.findall(r"^  (--[a-z-]+)", helped, re.M)) - {"--help"}
    assert {"--profile", "--policy", "--namespace"} <= flags, helped
    # "each flag has a HAFENCE_* environment variable"
    for flag in flags:
        variable = "HAFENCE_" + flag[2:].replace("-", "_").upper()
        assert f"[{variable}" in helped, f"{flag} names no {variable}:\n{helped}"

    # `hafence control-plane up` runs until Ctrl-C and prints its kubeconfig.
    log = tmp_path / "control-plane-up.log"
    with open(log, "w") as err:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            ["/bin/bash", "-c", "exec " + command("hafence control-plane up").text],
            cwd=ROOT,
            env=shell.env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,
        )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # bounded: the CLI gives up after 120 s
        assert first.startswith("export KUBECONFIG="), first + log.read_text()
        kubeconfig = first.strip().removeprefix("export KUBECONFIG=")
        ready = shell.run(f"kubectl --kubeconfig {kubeconfig} get --raw /readyz")
        assert ready.stdout == "ok", ready
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(30) == 0, log.read_text()
        assert not Path(kubeconfig).exists()  # its directory is removed on the way out
    finally:
        if proc.poll() is None:
            # Ctrl-C first: the CLI stops etcd and kube-apiserver (their own sessions)
            # on its way out; a SIGKILL would leave them running.
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
