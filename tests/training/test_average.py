"""training/average.py: the mean of a run's newest checkpoints' online weights, written as a run
directory that evaluate/export/ship_reference.sh take; bad input is one error line and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from breakout_dqn.training.average import main, write_average
from breakout_dqn.training.checkpoint import save_checkpoint
from tests.fake_runs import make_run


def test_the_newest_checkpoints_are_averaged_into_a_run_directory_ship_reference_takes(
        tmp_path: Path, keras_model_path: Path) -> None:
    from breakout_dqn.training.model import load_q_network

    saved = make_run(tmp_path / "run", keras_model_path, [100, 200, 300])
    assert main([str(tmp_path / "run"), "--last", "2", "--out", str(tmp_path / "avg")]) == 0
    averaged = load_q_network(tmp_path / "avg" / "model.keras").get_weights()
    for got, newer, older in zip(averaged, saved[2], saved[1], strict=True):
        np.testing.assert_allclose(got, (newer + older) / 2, rtol=1e-6, atol=1e-5)
    assert not np.allclose(averaged[0], saved[2][0])  # not just the newest
    summary = json.loads((tmp_path / "avg" / "average.json").read_text())
    assert summary["steps"] == [200, 300] and summary["train_agent_steps"] == 300
    # What scripts/ship_reference.sh reads: the newest checkpoint (older than the model), config, metrics.
    (checkpoint,) = (tmp_path / "avg" / "checkpoints").iterdir()
    assert checkpoint.name == "checkpoint-000000000300.npz"
    assert (tmp_path / "avg" / "model.keras").stat().st_mtime >= checkpoint.stat().st_mtime
    assert (tmp_path / "avg" / "config.json").read_text() == '{"algorithm": "pqn"}'
    assert (tmp_path / "avg" / "metrics.jsonl").is_file()
    assert not list(tmp_path.glob(".avg.partial"))


@pytest.mark.parametrize(("last", "message"), [(4, "holds 3 checkpoint(s), fewer than --last 4"),
                                               (0, "--last must be at least 1")])
def test_too_few_checkpoints_is_one_error_line_and_writes_nothing(tmp_path: Path, keras_model_path: Path,
                                                                    capsys, last: int, message: str) -> None:
    make_run(tmp_path / "run", keras_model_path, [100, 200, 300])
    assert main([str(tmp_path / "run"), "--last", str(last), "--out", str(tmp_path / "avg")]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not (tmp_path / "avg").exists()


def test_an_existing_output_is_never_overwritten(tmp_path: Path, keras_model_path: Path, capsys) -> None:
    make_run(tmp_path / "run", keras_model_path, [100, 200])
    (tmp_path / "avg").mkdir()
    (tmp_path / "avg" / "model.keras").write_text("an earlier average")
    assert main([str(tmp_path / "run"), "--out", str(tmp_path / "avg")]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert (tmp_path / "avg" / "model.keras").read_text() == "an earlier average"


def test_checkpoints_of_another_network_or_a_corrupt_one_are_refused(tmp_path: Path, keras_model_path: Path) -> None:
    from breakout_dqn.training.average import AverageError
    from breakout_dqn.training.checkpoint import CheckpointError

    saved = make_run(tmp_path / "run", keras_model_path, [100, 200])
    save_checkpoint(tmp_path / "run" / "checkpoints", 300, {"online": saved[0][:-1], "target": [], "optimizer": []},
                    {"step": 300}, keep=5)
    with pytest.raises(AverageError, match="another network"):
        write_average(tmp_path / "run", 3, tmp_path / "avg")
    (tmp_path / "run" / "checkpoints" / "checkpoint-000000000300.npz").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        write_average(tmp_path / "run", 2, tmp_path / "avg")
    assert not (tmp_path / "avg").exists()


def test_step_names_the_checkpoints_and_one_step_writes_that_snapshot_alone(
        tmp_path: Path, keras_model_path: Path, capsys) -> None:
    from breakout_dqn.training.model import load_q_network

    saved = make_run(tmp_path / "run", keras_model_path, [100, 200, 300])
    assert main([str(tmp_path / "run"), "--step", "200", "--out", str(tmp_path / "at200")]) == 0
    for got, want in zip(load_q_network(tmp_path / "at200" / "model.keras").get_weights(), saved[1], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    summary = json.loads((tmp_path / "at200" / "average.json").read_text())
    assert summary["steps"] == [200] and summary["train_agent_steps"] == 200
    assert [p.name for p in (tmp_path / "at200" / "checkpoints").iterdir()] == ["checkpoint-000000000200.npz"]

    assert main([str(tmp_path / "run"), "--step", "300", "--step", "100", "--out", str(tmp_path / "ends")]) == 0
    averaged = load_q_network(tmp_path / "ends" / "model.keras").get_weights()
    for got, newest, oldest in zip(averaged, saved[2], saved[0], strict=True):
        np.testing.assert_allclose(got, (newest + oldest) / 2, rtol=1e-6, atol=1e-5)
    assert json.loads((tmp_path / "ends" / "average.json").read_text())["steps"] == [100, 300]
    capsys.readouterr()

    assert main([str(tmp_path / "run"), "--step", "250", "--out", str(tmp_path / "none")]) == 2
    error = capsys.readouterr().err
    assert "holds no checkpoint-000000000250.npz" in error and "checkpoint-000000000300.npz" in error
    assert error.count("\n") == 1 and not (tmp_path / "none").exists()


def test_last_and_step_together_are_refused(tmp_path: Path, keras_model_path: Path, capsys) -> None:
    make_run(tmp_path / "run", keras_model_path, [100, 200])
    with pytest.raises(SystemExit) as exited:
        main([str(tmp_path / "run"), "--last", "2", "--step", "100", "--out", str(tmp_path / "avg")])
    assert exited.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert not (tmp_path / "avg").exists()
