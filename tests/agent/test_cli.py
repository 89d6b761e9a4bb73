"""Bad agent flags fail at once, naming the flag and the value (no API server needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hafence.agent.main import main


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--host", "Not_A_Name"], "--host 'Not_A_Name'"),
        (["--lease-duration", "1"], "--lease-duration 1"),
        (["--boot-id", "not a boot id"], "--boot-id: boot ID 'not a boot id'"),
        (["--boot-id-file", "/nonexistent/boot_id"], "--boot-id-file: cannot read"),
        (["--restart-backoff", "0"], "--restart-backoff 0.0"),
        (["--log-level", "LOUD"], "--log-level 'LOUD'"),
        (["--libvirt-image-dir", "images"], "--libvirt-image-dir 'images' is not an absolute"),
        (
            ["--libvirt-image-dir", "/nonexistent/images"],
            "--libvirt-image-dir '/nonexistent/images'",
        ),
        (["--kubeconfig", "/nonexistent/kubeconfig"], "--kubeconfig '/nonexistent/kubeconfig'"),
    ],
)
def test_bad_flags(
    extra: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    boot_file = tmp_path / "boot_id"
    boot_file.write_text("0123abcd-0000-4000-8000-000000000001\n")
    argv = [
        "--host",
        "h1",
        "--namespace",
        "dc1",
        "--state-dir",
        str(tmp_path / "s"),
        "--boot-id-file",
        str(boot_file),
    ]
    # Later flags win in argparse: the bad value overrides the good one above.
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err
    assert needle in err, err


def test_state_dir_unusable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert (
        main(
            [
                "--host",
                "h1",
                "--namespace",
                "dc1",
                "--state-dir",
                str(blocker / "x"),
                "--boot-id",
                "0123abcd-0000-4000-8000-000000000001",
            ]
        )
        == 2
    )
    assert f"--state-dir '{blocker / 'x'}'" in capsys.readouterr().err


def test_the_agent_starts_without_building_the_core_api_models() -> None:
    """The agent's first heartbeat after a soft fence waits on its start: importing
    CoreV1Api builds every core model (~0.7 s), and the agent needs none of it."""
    code = (
        "import sys\n"
        "from kubernetes import client\n"
        "from hafence.agent import main\n"
        "from hafence.kube.client import Api\n"
        "api = Api(client.ApiClient(client.Configuration()))\n"
        "api.coordination\n"
        "print('kubernetes.client.api.core_v1_api' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
