"""``--out`` handling: refuse to clobber a run, never mix two runs' metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.train import RunDirectoryError, prepare_run_directory


def test_a_run_is_never_overwritten_and_resume_needs_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "model.keras").write_bytes(b"model")
    with pytest.raises(RunDirectoryError, match="already holds a run"):
        prepare_run_directory(tmp_path, resume=False)
    with pytest.raises(RunDirectoryError, match="no checkpoint"):
        prepare_run_directory(tmp_path, resume=True)
    assert (tmp_path / "model.keras").read_bytes() == b"model"


def test_metrics_of_a_run_stopped_before_its_first_checkpoint_are_moved_aside(tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"type": "train", "step": 5000}\n')
    prepare_run_directory(tmp_path, resume=False)
    assert not (tmp_path / "metrics.jsonl").exists()  # the new run starts its own file
    kept = list(tmp_path.glob("metrics.abandoned-*.jsonl"))
    assert len(kept) == 1 and kept[0].read_text() == '{"type": "train", "step": 5000}\n'
    assert kept[0].name in capsys.readouterr().out
