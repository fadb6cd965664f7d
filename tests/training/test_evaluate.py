"""``breakout-dqn evaluate`` on .keras and .onnx models: the same greedy policy, JSON and video out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from breakout_dqn import cli
from breakout_dqn.training import evaluate


def test_keras_and_onnx_act_functions_agree(keras_model_path: Path, onnx_model_path: Path) -> None:
    frames = np.random.default_rng(0).integers(0, 256, (16, 84, 84, 4), dtype=np.uint8)
    keras_act = evaluate.load_act_fn(keras_model_path)
    onnx_act = evaluate.load_act_fn(onnx_model_path)
    np.testing.assert_array_equal(keras_act(frames), onnx_act(frames))


@pytest.mark.slow  # plays a full game
def test_evaluate_writes_json_and_a_video(onnx_model_path: Path, tmp_path: Path) -> None:
    result_path, video_path = tmp_path / "eval.json", tmp_path / "game.gif"
    code = evaluate.main([str(onnx_model_path), "--episodes", "2", "--num-envs", "2", "--json", str(result_path),
                          "--video", str(video_path)])
    assert code == 0
    result = json.loads(result_path.read_text())
    assert result["episodes"] == 2 and len(result["scores"]) == 2
    assert result["epsilon"] == 0.05 and result["max_frames"] == 18_000
    assert video_path.read_bytes()[:6] in (b"GIF87a", b"GIF89a")


def test_evaluate_rejects_other_model_formats(tmp_path: Path, capsys) -> None:
    model = tmp_path / "model.h5"
    model.write_bytes(b"x")
    assert cli.main(["evaluate", str(model)]) == 2
    assert "must be a .keras or .onnx file" in capsys.readouterr().err
