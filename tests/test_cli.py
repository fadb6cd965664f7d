"""The ``breakout-dqn`` dispatcher: every subcommand is reachable, unknown ones are usage errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from breakout_dqn import cli

SHIPPED = Path(__file__).parents[1] / "models" / "breakout-dqn.onnx"


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


@pytest.mark.parametrize(("command", "blocked", "extra"), [
    (["train", "--steps", "10", "--out", "unused"], ("tensorflow", "keras"), "train"),
    (["verify", str(SHIPPED), "--min-score", "1", "--episodes", "1"], ("gymnasium", "ale_py"), "game"),
])
def test_a_subcommand_missing_its_extra_says_what_to_install(command: list[str], blocked: tuple[str, ...],
                                                              extra: str, tmp_path) -> None:
    """As in the slim serve image, which has no TensorFlow and no emulator: one line, exit 2, no traceback,
    and nothing written (a refused `train` leaves no run directory behind)."""
    block = "".join(f"sys.modules[{name!r}] = None; " for name in blocked)  # import fails: ModuleNotFoundError
    script = f"import sys; {block}from breakout_dqn import cli; sys.exit(cli.main(sys.argv[1:]))"
    result = subprocess.run([sys.executable, "-c", script, *command], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []
    assert "Traceback" not in result.stderr
    assert f"breakout-dqn {command[0]}: error: needs the Python package" in result.stderr
    assert f"pip install 'breakout-dqn[{extra}]'" in result.stderr
