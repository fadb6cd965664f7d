"""The ``breakout-dqn`` dispatcher: every subcommand is reachable, unknown ones are usage errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from breakout_dqn import cli


def test_usage_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("train", "evaluate", "export", "verify", "serve", "play", "plot"):
        assert f"  {name} " in out


def test_no_command_and_unknown_command_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert cli.main(["fly"]) == 2
    assert "unknown command 'fly'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "evaluate", "export", "verify", "serve", "play", "plot"])
def test_each_subcommand_answers_help(command: str) -> None:
    result = subprocess.run([sys.executable, "-m", "breakout_dqn.cli", command, "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"breakout-dqn {command}" in result.stdout


def test_evaluate_rejects_a_missing_model_with_one_line(tmp_path) -> None:
    result = subprocess.run([sys.executable, "-m", "breakout_dqn.cli", "evaluate", str(tmp_path / "none.onnx")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "not found" in errors[0]
