"""``--out`` handling: refuse to clobber a run, never mix two runs' metrics, tell runs apart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from breakout_dqn.training.checkpoint import save_checkpoint
from breakout_dqn.training.run_directory import RunDirectory, RunDirectoryError, main


def test_a_run_is_never_overwritten_and_resume_needs_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "model.keras").write_bytes(b"model")
    run = RunDirectory(tmp_path)
    with pytest.raises(RunDirectoryError, match="already holds a run"):
        run.prepare(resume=False)
    with pytest.raises(RunDirectoryError, match="no checkpoint"):
        run.prepare(resume=True)
    assert (tmp_path / "model.keras").read_bytes() == b"model"


HOLD = """import sys, time
from pathlib import Path
from breakout_dqn.training.run_directory import RunDirectory
with RunDirectory(Path(sys.argv[1])).held():
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_run_being_written_is_refused_until_its_writer_dies(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    from breakout_dqn import cli

    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        (tmp_path / "metrics.jsonl").write_text("the writer's\n")  # no checkpoint yet: a fresh run would move it
        with (pytest.raises(RunDirectoryError, match=rf"another `breakout-dqn train` \(pid {holder.pid}\)"),
              RunDirectory(tmp_path).held()):
            pytest.fail("a second writer got in")
        # The CLI says so in one line, exit 2, before loading TensorFlow or touching the run.
        code = cli.main(["train", "--out", str(tmp_path), "--steps", "400", "--replay-capacity", "4000"])
        assert code == 2
        assert f"is being written by another `breakout-dqn train` (pid {holder.pid})" in capsys.readouterr().err
        assert (tmp_path / "metrics.jsonl").read_text() == "the writer's\n"
        assert sorted(path.name for path in tmp_path.iterdir()) == ["metrics.jsonl", "train.lock"]
    finally:
        holder.kill()  # SIGKILL: no handler runs
        holder.wait()
    with RunDirectory(tmp_path).held():  # the kernel dropped the dead writer's lock: nothing stale
        assert (tmp_path / "train.lock").read_text() == f"{os.getpid()}\n"


def test_a_fresh_run_refused_inside_its_hold_leaves_no_directory(tmp_path: Path) -> None:
    out = tmp_path / "new" / "run"
    with pytest.raises(RunDirectoryError, match="no checkpoint"), RunDirectory(out).held():
        RunDirectory(out).prepare(resume=True)
    assert not out.exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(RunDirectoryError), RunDirectory(tmp_path / "kept").held():
        RunDirectory(tmp_path / "kept").prepare(resume=True)
    assert (tmp_path / "kept").is_dir()  # a directory it did not create stays


def test_metrics_of_a_run_stopped_before_its_first_checkpoint_are_moved_aside(tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"type": "train", "step": 5000}\n')
    RunDirectory(tmp_path).prepare(resume=False)
    assert not (tmp_path / "metrics.jsonl").exists()  # the new run starts its own file
    kept = list(tmp_path.glob("metrics.abandoned-*.jsonl"))
    assert len(kept) == 1 and kept[0].read_text() == '{"type": "train", "step": 5000}\n'
    assert kept[0].name in capsys.readouterr().out


def test_newest_checkpoint_step_and_its_command_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = RunDirectory(tmp_path)
    assert run.newest_checkpoint_step() is None
    assert main(["newest-step", str(tmp_path)]) == 1
    for step in (400, 1200, 800):
        save_checkpoint(run.checkpoints, step, {"online": [np.zeros(2)]}, {"step": step}, keep=5)
    assert run.newest_checkpoint_step() == 1200
    capsys.readouterr()
    assert main(["newest-step", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == "1200"
    assert main(["newest-checkpoint", str(tmp_path)]) == 0
    assert capsys.readouterr().out.split() == [str(run.checkpoints / "checkpoint-000000001200.npz"), "1200"]
    assert main(["oldest-step", str(tmp_path)]) == 2


def test_differences_ignore_the_settings_a_piece_may_change(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    run.config.write_text(json.dumps({"seed": 1, "steps": 1000, "out": "a", "learning_rate": 1e-4}))
    assert run.differences({"seed": 1, "steps": 5000, "out": "b", "resume": True, "learning_rate": 1e-4}) == []
    assert run.differences({"seed": 2, "steps": 1000, "learning_rate": 1e-4}) == ["seed: 1 here, 2 asked"]
