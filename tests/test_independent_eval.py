"""scripts/independent_eval.py: the evaluator that shares no code with the project."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "independent_eval.py"


def constant_policy(path: Path, action: int, input_name: str = "frames") -> Path:
    """An ONNX model with the project's contract whose greedy action is always ``action``."""
    q_row = np.zeros((1, 4), dtype=np.float32)
    q_row[0, action] = 1.0
    nodes = [
        helper.make_node("Cast", [input_name], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["as_float", "axes"], ["summed"], keepdims=1),  # [N, 1, 1, 1]
        helper.make_node("Reshape", ["summed", "shape"], ["per_stack"]),  # [N, 1]
        helper.make_node("Mul", ["per_stack", "zero"], ["zeros"]),
        helper.make_node("Add", ["zeros", "q_row"], ["q_values"]),  # [N, 4]
    ]
    graph = helper.make_graph(
        nodes, "constant_policy",
        [helper.make_tensor_value_info(input_name, TensorProto.UINT8, ["N", 84, 84, 4])],
        [helper.make_tensor_value_info("q_values", TensorProto.FLOAT, ["N", 4])],
        initializer=[
            helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3]),
            helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 1]),
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
            helper.make_tensor("q_row", TensorProto.FLOAT, [1, 4], q_row.ravel().tolist()),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)


def test_fire_after_each_lost_life_lets_a_still_agent_finish_its_game(tmp_path: Path) -> None:
    # A greedy NOOP agent never launches the ball itself: the game ends (all 5 lives lost) only
    # because the evaluator presses FIRE at the start and after every lost life; without that it
    # would stand still until the frame cap cut it.
    model = constant_policy(tmp_path / "noop.onnx", action=0)
    out = tmp_path / "scores.json"
    result = run(str(model), "--episodes", "2", "--epsilon", "0", "--max-frames", "18000", "--json", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads(out.read_text())
    assert summary["episodes"] == 2 and len(summary["scores"]) == 2
    assert summary["truncated"] == 0  # both games ended by losing their lives, not by the cap
    assert summary["max"] < 20  # a paddle that never moves returns a ball only by chance
    assert "FIRE at the start and after each lost life" in summary["protocol"]
    assert "score " in result.stdout and "over 2 games" in result.stdout


def test_the_frame_cap_cuts_a_game_and_says_so(tmp_path: Path) -> None:
    model = constant_policy(tmp_path / "noop.onnx", action=0)
    result = run(str(model), "--episodes", "1", "--epsilon", "0", "--max-frames", "400")
    assert result.returncode == 0, result.stderr
    assert "cut at the frame cap" in result.stdout
    assert "1 cut at the frame cap" in result.stdout.splitlines()[-1]


@pytest.mark.parametrize("problem", ["missing", "corrupt", "wrong_names"])
def test_a_bad_model_is_refused_with_a_clear_error_and_nothing_written(tmp_path: Path, problem: str) -> None:
    model = tmp_path / "model.onnx"
    expected = {"missing": "no such model", "corrupt": "not a loadable ONNX model",
                "wrong_names": "expected input 'frames' and output 'q_values'"}[problem]
    if problem == "corrupt":
        model.write_bytes(b"not an onnx file")
    elif problem == "wrong_names":
        constant_policy(model, action=0, input_name="observations")
    out = tmp_path / "scores.json"
    result = run(str(model), "--episodes", "1", "--json", str(out))
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    model = constant_policy(tmp_path / "noop.onnx", action=0)
    for args, message in ((["--episodes", "0"], "--episodes must be at least 1"),
                          (["--epsilon", "1.5"], "--epsilon must be in [0, 1]")):
        result = run(str(model), *args)
        assert result.returncode == 2 and message in result.stderr
