"""The user guide's commands, and how each one is exercised by a test.

The guide is README.md, docs/deploy.md, docs/agent.md, docs/lab.md and
manifests/samples/README.md.  Its commands are
- every line of a fenced block tagged sh/bash/shell/console/zsh (continuations joined,
  a trailing `# comment` dropped), and
- every code span in the prose that starts with kubectl, hafence, make, pytest or a
  hack/ script (the README's Troubleshooting list, "`kubectl get havms` shows...",
  "`make crds` regenerates..."), NAME/NS/REASON being placeholders.  Spans that only
  name a program or a method (`hafence agent`, `kubectl apply -k`) are listed in
  MENTIONS with the reason they are not command lines.
Today only README.md, docs/deploy.md and manifests/samples/README.md have shell blocks;
docs/agent.md has no code block, and docs/lab.md has an untagged usage synopsis
(`hafence lab [--scenario ...]`, not a command line), a placeholder for pasted output and
a Python example, none of them shell (its prose spans are extracted like the others').
All five are scanned so that a shell block added to any of them is caught.

Each command is either run here for real, by /bin/bash in the repository, with the real
kubectl and hafence first on PATH and $KUBECONFIG naming the test control plane (no
docker or kind on PATH), with these substitutions and nothing else:
- the namespace `dc1` -> the test's namespace; NAME, NS and REASON -> a host or agent of
  the test's datacenter, its namespace, a reason; a command without `-n` runs in the
  test's namespace, set as the kubeconfig context's namespace (as a user's would be);
- `kubectl -n hafence-system rollout status ...` gets `--timeout=1s`: no
  controller-manager runs here, so the rollout never completes (the test checks the
  command finds the Deployment and waits on it);
or it is mapped to the test that runs exactly that command (RUN_ELSEWHERE, whose node
ids are collected by pytest to prove they exist), or it cannot run here at all
(NOT_RUN: Docker, the whole suite, the whole lab, commands that rewrite the checkout or
need a kube-controller-manager or the Prometheus Operator), with the reason and the
tests that check the nearest thing; MENTIONS lists spans that are not command lines.
RUN_HERE names the test of tests/docs/test_guide_commands.py that runs the command.  A
command added to the guide and found in none of the four tables fails
test_every_guide_command_is_accounted_for there, naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

GUIDE = (
    "README.md",
    "docs/deploy.md",
    "docs/agent.md",
    "docs/lab.md",
    "manifests/samples/README.md",
)
SHELL_TAGS = {"sh", "bash", "shell", "console", "zsh"}
FENCE = re.compile(r"^\s*```\s*(\S*)")
PROSE_COMMAND = re.compile(r"`((?:kubectl |hafence |make |pytest |\./hack/|hack/)[^`]*)`")


@dataclass(frozen=True)
class Command:
    text: str
    where: str  # file:line


def _strip_comment(line: str) -> str:
    """Drop a trailing shell comment: a # after whitespace, outside quotes."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def commands_of(name: str, markdown: str) -> list[Command]:
    found: list[Command] = []
    tag: str | None = None  # inside a fence: its tag ("" when untagged)
    pending, start = "", 0
    prose, prose_start = "", 0  # a paragraph line, joined with the next while a span is open
    for number, line in enumerate(markdown.splitlines(), 1):
        fence = FENCE.match(line)
        if fence:
            tag = fence.group(1).lower() if tag is None else None
            continue
        if tag is None:
            if not prose:
                prose_start = number
            prose += line.strip() + " "
            if prose.count("`") % 2 == 0:
                for m in PROSE_COMMAND.finditer(prose):
                    found.append(Command(" ".join(m.group(1).split()), f"{name}:{prose_start}"))
                prose = ""
            continue
        if tag not in SHELL_TAGS:
            continue
        text = line.strip().removeprefix("$ ")
        if not pending:
            start = number
        if text.endswith("\\"):
            pending += text[:-1].strip() + " "
            continue
        command = _strip_comment(pending + text)
        pending = ""
        if command:
            found.append(Command(command, f"{name}:{start}"))
    return found


def guide_commands() -> list[Command]:
    return [c for name in GUIDE for c in commands_of(name, (ROOT / name).read_text())]


COMMANDS = guide_commands()


# ---- the tables: how each command of the guide is exercised ------------------------------

# command -> the test of this module that runs it
RUN_HERE: dict[str, str] = {
    # README "Installing into a cluster" and docs/deploy.md "Installing"
    "kubectl apply --server-side -k manifests/base": "test_install_commands",
    "kubectl -n hafence-system rollout status deployment/hafence-operator": (
        "test_install_commands"
    ),
    "kubectl apply -k manifests/base": "test_install_commands",
    "kubectl apply -k manifests/overlays/ha": "test_install_commands",
    "kubectl apply -k manifests/overlays/namespaced": "test_install_commands",
    "kubectl get validatingadmissionpolicy,validatingadmissionpolicybinding": (
        "test_install_commands"
    ),
    "kubectl delete -n hafence-system deployment/hafence-operator": "test_install_commands",
    # docs/deploy.md: a datacenter namespace and per-host agent identities
    "kubectl create namespace dc1": "test_datacenter_namespace_and_agent_identity",
    "kubectl apply --server-side -k manifests/overlays/datacenter -n dc1": (
        "test_datacenter_namespace_and_agent_identity"
    ),
    "kubectl -n dc1 create serviceaccount hafence-agent-hv-01": (
        "test_datacenter_namespace_and_agent_identity"
    ),
    "kubectl -n dc1 create rolebinding hafence-agent-hv-01 --role=hafence-agent "
    "--serviceaccount=dc1:hafence-agent-hv-01": "test_datacenter_namespace_and_agent_identity",
    "kubectl -n dc1 create token hafence-agent-hv-01 --duration=720h": (
        "test_datacenter_namespace_and_agent_identity"
    ),
    # manifests/samples/README.md
    "kubectl apply -n dc1 -f manifests/samples/": "test_samples_apply_and_list",
    "kubectl get hafence -n dc1": "test_samples_apply_and_list",
    # README "Declaring hosts and fence agents" and Troubleshooting
    "hafence fence-agent test hv-a1-ilo -n dc1": "test_power_management_commands",
    "kubectl get fenceagents -n dc1": "test_power_management_commands",
    "hafence power hv-a1 status -n dc1": "test_power_management_commands",
    "hafence fence-agent test NAME -n NS": "test_power_management_commands",
    # README "Confirming an isolated host" and Troubleshooting
    'kubectl annotate host hv-a3 -n dc1 hafence.io/confirm-rebooted="power cable pulled, '
    'checked on site"': "test_confirm_isolated_host_and_troubleshoot",
    "kubectl describe host NAME -n NS": "test_confirm_isolated_host_and_troubleshoot",
    "kubectl describe host NAME": "test_confirm_isolated_host_and_troubleshoot",
    "kubectl get havms": "test_confirm_isolated_host_and_troubleshoot",
    # docs/lab.md's form of the confirmation, on a host that is Up: Rejected
    "kubectl annotate host NAME hafence.io/confirm-rebooted=REASON": (
        "test_confirm_isolated_host_and_troubleshoot"
    ),
    # README "Fencing policies" and "Development"
    "hafence operator --help": "test_operator_help_and_local_control_plane",
    "hafence control-plane up": "test_operator_help_and_local_control_plane",
    "kubectl get host NAME -n NS -o jsonpath='{.status.fencing}'": (
        "test_confirm_isolated_host_and_troubleshoot"
    ),
    # docs/deploy.md "kind": without Docker and kind they take their documented skip
    "make kind-up": "test_kind_targets_skip_without_docker",
    "make kind-e2e": "test_kind_targets_skip_without_docker",
    "./hack/kind.sh kind-down": "test_kind_targets_skip_without_docker",
}


@dataclass(frozen=True)
class NotRun:
    why: str
    nearest: tuple[str, ...]  # node ids of the tests that check the nearest thing


# command -> tests that run exactly that command (none today: every command that can
# run here is run above; kept so that a command moved to another test is mapped here)
RUN_ELSEWHERE: dict[str, tuple[str, ...]] = {
    "kubectl get hostoutages -n NS": (
        "tests/operator/test_outages.py::test_a_fenced_outage_is_recorded_with_its_story",
    ),
    "hafence outages HOST -n NS": (
        "tests/operator/test_outages.py::test_a_fenced_outage_is_recorded_with_its_story",
    ),
    "hafence outages -n NS --list": (
        "tests/operator/test_outages.py::test_a_fenced_outage_is_recorded_with_its_story",
    ),
    "hafence host test NAME -n NS": (
        "tests/fencing/test_host_cli.py::test_host_test_checks_ssh_soft_fence_command_and_agents",
    ),
    "hafence crds -o - | kubectl apply --server-side -f -": (
        "tests/api/test_crds_generated.py::test_crds_to_stdout_apply_with_kubectl",
    ),
    "kubectl get fc": ("tests/api/test_schema_in_apiserver.py::test_every_sample_is_created",),
    "kubectl get fencingpolicies": (
        "tests/api/test_fencingpolicy.py::test_full_policy_accepted_and_listed",
        "tests/operator/test_fencing_policy.py::"
        "test_policy_applies_live_and_a_second_one_is_ignored",
    ),
}

E2E = "tests/e2e/test_scenarios.py::"
NOT_RUN: dict[str, NotRun] = {
    "make demo": NotRun(
        "plays every lab scenario (minutes); test_make_recipes checks it runs "
        "`hafence lab --scenario all`, and the e2e tests play each scenario through the "
        "lab's Python API (no test runs the `hafence lab` CLI end to end)",
        (
            E2E + "test_agent_crash_is_soft_fenced",
            E2E + "test_network_cut_is_hard_fenced_and_ha_vms_move",
            E2E + "test_power_loss_waits_for_confirmation",
            E2E + "test_rack_failure_fences_each_host_of_the_rack",
            E2E + "test_kernel_crash_is_proven_by_kdump_without_power_action",
            "tests/docs/test_guide_commands.py::test_make_recipes",
        ),
    ),
    "make test": NotRun(
        "is this test suite itself; test_make_recipes checks it runs `pytest -q tests`",
        ("tests/docs/test_guide_commands.py::test_make_recipes",),
    ),
    "docker build -t registry.example.com/infra/hafence:0.1.0 .": NotRun(
        "needs a Docker engine (none on this project's machines); the Dockerfile is "
        "linted and the wheel is built from exactly the build context",
        (
            "tests/deploy/test_deploy_image.py::test_hadolint_is_clean",
            "tests/deploy/test_deploy_image.py::test_final_stage_is_slim_non_root_without_build_tools",
            "tests/deploy/test_deploy_image.py::test_build_context_builds_the_wheel",
        ),
    ),
    "hafence lab --scenario all": NotRun(
        "what `make demo` runs (see there)",
        (E2E + "test_network_cut_is_hard_fenced_and_ha_vms_move",),
    ),
    "hafence lab --vm-driver libvirt --scenario all": NotRun(
        "every scenario on real qemu VMs, minutes; the e2e test plays them in turn in one "
        "libvirt lab through the lab's Python API",
        ("tests/e2e/test_libvirt_lab.py::test_scenario_on_real_vms",),
    ),
    "hafence lab --scenario seed": NotRun(
        "the article's three experiments at production timings, minutes; the e2e test "
        "plays the same scenarios on two hosts through the lab's Python API",
        ("tests/e2e/test_seed.py::test_seed_datacenter_recovers_from_the_three_experiments",),
    ),
    "hafence lab --scenario all --output json": NotRun(
        "the lab end to end, minutes (see `make demo`)",
        (E2E + "test_network_cut_is_hard_fenced_and_ha_vms_move",),
    ),
    "make lint": NotRun(
        "the repository's lint gate (ruff, mypy --strict, import-linter over the whole "
        "tree), not a behaviour of hafence; no test runs it",
        (),
    ),
    "make crds": NotRun(
        "rewrites tracked files of the checkout (crds/, manifests/base/crds); the tests "
        "check that what it would write is what is there",
        (
            "tests/api/test_crds_generated.py::test_crd_file_matches_models",
            "tests/api/test_crds_generated.py::test_no_extra_crd_files",
            "tests/deploy/test_deploy_manifests.py::test_generated_copies_are_in_sync",
        ),
    ),
    "hack/sync_generated.py": NotRun(
        "rewrites tracked files (manifests/base/crds, the PrometheusRule); see `make crds`",
        ("tests/deploy/test_deploy_manifests.py::test_generated_copies_are_in_sync",),
    ),
    "kubectl delete -k manifests/base": NotRun(
        "waits for Namespace hafence-system to be finalized, which takes "
        "kube-controller-manager's namespace controller (none here), and would delete "
        "the CRDs, with every resource of the session's other tests",
        (),
    ),
    "kubectl apply -k manifests/monitoring": NotRun(
        "needs the Prometheus Operator's CRDs (ServiceMonitor, PrometheusRule); the "
        "rendered objects are checked against the metrics Service",
        (
            "tests/deploy/test_deploy_monitoring.py::test_service_monitor_scrapes_the_metrics_service",
        ),
    ),
    "./hack/promtool.sh": NotRun(
        "builds promtool from the Go module proxy (about 8 minutes, once); the rule "
        "tests use it when it is cached and skip otherwise",
        (
            "tests/deploy/test_deploy_monitoring.py::test_promtool_checks_the_rules",
            "tests/deploy/test_deploy_monitoring.py::test_alerts_fire_when_they_should_and_only_then",
        ),
    ),
    "pytest tests/deploy": NotRun(
        "a test suite itself (part of `make test`)", ("tests/deploy/test_deploy_install.py",)
    ),
    "docker push registry.example.com/infra/hafence:0.1.0": NotRun(
        "needs Docker and a registry off this machine (tests never leave loopback)",
        ("tests/deploy/test_deploy_image.py::test_hadolint_is_clean",),
    ),
}


# code spans that name a program, a method or a script, not a line to type
MENTIONS: dict[str, str] = {
    "hafence agent": "the host agent program; its flags are tested in tests/agent/test_cli.py",
    "hafence operator": "the operator program (its --help is run above)",
    "hafence lab": "the lab program (see `make demo`)",
    "kubectl apply -k": "the install method; the full commands are in the sh blocks",
    "kubectl create token": "names the command whose full form is in an sh block",
    "kubectl describe": "names the command; `kubectl describe host NAME -n NS` is run",
    "kubectl annotate": "names the command; the full annotate line is in the guide's sh "
    "blocks and the lab's power-loss scenario runs it",
    "hack/kind.sh": "the script behind `make kind-*`, run above",
    "hafence host test": "names the command; `hafence host test NAME -n NS` is run",
    "hafence fence-agent test": "names the command; `hafence fence-agent test NAME -n NS` is run",
    "hafence operator --namespace NS --profile lab ...": (
        "how the lab starts the operator, flags elided; not a line to type"
    ),
}


def command(text: str) -> Command:
    """The guide's command with this text: a test runs what the guide says, not a copy."""
    for c in COMMANDS:
        if c.text == text:
            return c
    raise AssertionError(f"the guide no longer has the command {text!r}: update RUN_HERE")


TABLES = (RUN_HERE, RUN_ELSEWHERE, NOT_RUN, MENTIONS)


def unaccounted(commands: list[Command]) -> list[str]:
    tables = set().union(*TABLES)
    return [f"{c.where}: {c.text}" for c in commands if c.text not in tables]
