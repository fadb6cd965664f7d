"""Output paths are checked before the long work that would write them, with one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from breakout_dqn.paths import output_path_error

SHIPPED = Path(__file__).parents[1] / "models" / "breakout-dqn.onnx"


def test_a_writable_path_passes_and_its_parents_are_made(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "game.mp4"
    assert output_path_error("--video", target, (".mp4", ".gif")) is None
    assert target.parent.is_dir() and list(target.parent.iterdir()) == []  # the probe file is gone


def test_bad_paths_are_named(tmp_path: Path) -> None:
    assert output_path_error("--video", tmp_path / "game.avi", (".mp4", ".gif")) == \
        f"--video must end in .mp4 or .gif, got {tmp_path / 'game.avi'}"
    assert output_path_error("--json", tmp_path) == f"--json {tmp_path} is a directory"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    problem = output_path_error("--json", blocker / "eval.json")  # a parent that is a file
    assert problem is not None and problem.startswith(f"--json {blocker / 'eval.json'}: cannot write in {blocker}")


@pytest.mark.parametrize("command", [
    ["evaluate", str(SHIPPED), "--episodes", "1", "--video", "game.avi"],
    ["evaluate", str(SHIPPED), "--episodes", "1", "--json", "{file}/eval.json"],
    ["play", "--server", "127.0.0.1:1", "--video", "game.avi"],
])
def test_cli_refuses_an_unwritable_output_before_playing(command: list[str], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    command = [part.replace("{file}", str(blocker)) for part in command]
    result = subprocess.run([sys.executable, "-m", "breakout_dqn.cli", *command], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"breakout-dqn {command[0]}: error: ")
    assert not (tmp_path / "game.avi").exists()
