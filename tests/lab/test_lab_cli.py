"""`hafence lab` refuses bad flags before it starts anything, naming flag and value."""

from __future__ import annotations

import pytest

from hafence.lab.main import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--hosts", "3", "--scenario", "rack-failure"],
            "--hosts 3: rack-failure needs at least 5",
        ),
        (["--hosts", "1", "--scenario", "agent-crash"], "--hosts 1: agent-crash needs at least 2"),
        (["--kubeconfig", "/nonexistent/kubeconfig"], "--kubeconfig '/nonexistent/kubeconfig'"),
        (["--repeat", "0"], "--repeat 0"),
        (["--lease-duration", "2", "--scenario", "agent-crash"], "--lease-duration 2"),
    ],
)
def test_bad_flags_exit_2_before_starting(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_unknown_scenario_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--scenario", "meteor-strike"])
    assert exc.value.code == 2
    assert "meteor-strike" in capsys.readouterr().err
