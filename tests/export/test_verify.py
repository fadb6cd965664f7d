"""``breakout-dqn verify``: contract checks, fingerprint, games, and the documented exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from breakout_dqn import cli as breakout_cli
from breakout_dqn import contract
from breakout_dqn.errors import ExitCode
from breakout_dqn.export import verify
from tests.export.helpers import edit_onnx


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any], str]:
    code = breakout_cli.main(["verify", *argv, "--json"])
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["exit_code"] == code and result["ok"] == (code == 0)
    if code:
        assert len(captured.err.strip().splitlines()) == 1 and captured.err.startswith("breakout-dqn verify: error: ")
    return code, result, captured.err


def failed(result: dict[str, Any]) -> dict[str, str]:
    return {check["name"]: check["detail"] for check in result["checks"] if not check["ok"]}


@pytest.mark.slow  # needs the full export (real games)
def test_exported_model_verifies(exported_onnx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, result, _ = run(capsys, str(exported_onnx))
    assert code == 0
    assert [c["name"] for c in result["checks"]] == ["load", "checker", "io", "metadata", "q_values", "fingerprint"]
    assert result["fingerprint"]["passed"] and result["fingerprint"]["max_abs_dq"] < 1e-5
    assert result["metadata"][contract.META_CONTRACT] == contract.CONTRACT_VERSION


@pytest.mark.slow  # needs the full export (real games)
def test_text_output_and_console_dispatch(exported_onnx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from breakout_dqn.cli import main

    assert main(["verify", str(exported_onnx)]) == 0
    out = capsys.readouterr().out
    assert "ok   fingerprint" in out and out.strip().endswith("OK (exit 0)")


@pytest.mark.slow  # needs the full export (real games)
def test_weights_perturbed_after_export_are_caught(perturbed_onnx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, result, err = run(capsys, str(perturbed_onnx))
    assert code == ExitCode.CONTRACT == 3
    assert list(failed(result)) == ["fingerprint"] and "weights changed after export" in err
    assert result["fingerprint"]["max_tolerance_ratio"] > 5  # caught with a wide margin


@pytest.mark.parametrize("kind", ["missing", "garbage", "empty"])
def test_unreadable_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    path = tmp_path / "model.onnx"
    if kind == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
    elif kind == "empty":
        path.write_bytes(b"")
    code, result, err = run(capsys, str(path))
    assert code == ExitCode.USAGE == 2 and list(failed(result)) == ["load"]
    assert ("model file not found" if kind == "missing" else "cannot load ONNX model") in err


def test_model_without_fingerprint_needs_the_opt_out(onnx_model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, result, _ = run(capsys, str(onnx_model_path))
    assert code == 3 and "not written by 'breakout-dqn export'" in failed(result)["fingerprint"]
    code, _, _ = run(capsys, str(onnx_model_path), "--skip-fingerprint")
    assert code == 0


def drop_metadata(key: str):
    def edit(model) -> None:
        kept = [(p.key, p.value) for p in model.metadata_props if p.key != key]
        del model.metadata_props[:]
        for k, v in kept:
            model.metadata_props.add(key=k, value=v)
    return edit


def set_metadata(key: str, value: str):
    def edit(model) -> None:
        drop_metadata(key)(model)
        model.metadata_props.add(key=key, value=value)
    return edit


@pytest.mark.parametrize(("edit", "message"), [
    (drop_metadata(contract.META_SOURCE_SHA256), "missing breakout_dqn.source_sha256"),
    (set_metadata(contract.META_ACTIONS, "NOOP,FIRE,LEFT,RIGHT"), "action_meanings"),
    (set_metadata(contract.META_CONTRACT, "frames-f32-nchw/v0"), "breakout_dqn.contract"),
    (set_metadata(contract.META_TRAIN_STEPS, "lots"), "not a non-negative number"),
])
def test_bad_metadata_is_a_contract_failure(onnx_model_path: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str], edit, message: str) -> None:
    path = edit_onnx(onnx_model_path, tmp_path / "m.onnx", edit)
    code, result, _ = run(capsys, str(path), "--skip-fingerprint")
    assert code == 3 and list(failed(result)) == ["metadata"] and message in failed(result)["metadata"]


def tiny_graph(path: Path, elem_type: int, shape: list[Any]) -> Path:
    """A valid ONNX graph ``frames -> q_values [N,4]`` with the given input type and shape."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.zeros((contract.STACK_BYTES, 4), np.float32), "w")
    shape_const = numpy_helper.from_array(np.array([-1, contract.STACK_BYTES], np.int64), "shape")
    nodes = [helper.make_node("Cast", ["frames"], ["x"], to=TensorProto.FLOAT),
             helper.make_node("Reshape", ["x", "shape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w"], ["q_values"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("frames", elem_type, shape)],
                              [helper.make_tensor_value_info("q_values", TensorProto.FLOAT, ["N", 4])],
                              [weights, shape_const])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(("elem_type", "shape", "message"), [
    (1, ["N", 84, 84, 4], "must be uint8"),  # float32 input
    (2, ["N", 4, 84, 84], "channels last"),  # uint8, channels first
])
def test_wrong_input_dtype_or_layout_is_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 elem_type: int, shape: list[Any], message: str) -> None:
    code, result, err = run(capsys, str(tiny_graph(tmp_path / "m.onnx", elem_type, shape)))
    assert code == 3 and message in failed(result)["io"] and message in err


def test_non_finite_q_values_are_a_contract_failure(onnx_model_path: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from onnx import numpy_helper

    def poison(model) -> None:
        target = max(model.graph.initializer, key=lambda t: len(t.raw_data))
        weights = numpy_helper.to_array(target).copy()
        weights.flat[::97] = np.nan
        target.CopyFrom(numpy_helper.from_array(weights, target.name))

    code, result, _ = run(capsys, str(edit_onnx(onnx_model_path, tmp_path / "nan.onnx", poison)), "--skip-fingerprint")
    assert code == 3 and "non-finite" in failed(result)["q_values"]


@pytest.mark.slow  # plays full games
def test_min_score_plays_games_and_gates_on_the_mean(exported_onnx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, result, _ = run(capsys, str(exported_onnx), "--min-score", "0", "--episodes", "2")
    assert code == 0 and result["score"]["episodes"] == 2 and result["checks"][-1]["name"] == "score"
    code, result, err = run(capsys, str(exported_onnx), "--min-score", "500", "--episodes", "2")
    assert code == ExitCode.GATE == 4 and "< --min-score 500" in err
    assert result["score"]["mean"] < 500


@pytest.mark.slow  # plays full games
def test_episodes_without_min_score_plays_and_reports_the_games_and_gates_nothing(
        exported_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, result, _ = run(capsys, str(exported_onnx), "--episodes", "2")
    assert code == 0 and result["score"]["episodes"] == 2 and len(result["score"]["scores"]) == 2
    (score_check,) = [check for check in result["checks"] if check["name"] == "score"]
    assert score_check["ok"] and "2 games (no --min-score)" in score_check["detail"]
    report = tmp_path / "verify.json"  # --json PATH writes the same report to a file, stdout stays text
    assert breakout_cli.main(["verify", str(exported_onnx), "--episodes", "2", "--json", str(report)]) == 0
    assert json.loads(report.read_text())["score"]["episodes"] == 2
    assert capsys.readouterr().out.strip().endswith("OK (exit 0)")


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        verify.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for line in ("0  every check passed", "2  usage error", "3  contract failure", "4  the mean score"):
        assert line in text
    assert breakout_cli.main(["verify", "x.onnx", "--episodes", "0"]) == 2
