"""``breakout-dqn export``: the full gate on a real export, metadata, and every failure path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from breakout_dqn import cli as breakout_cli
from breakout_dqn import contract
from breakout_dqn.errors import ExitCode
from tests.export.helpers import EVAL_MEAN, TRAIN_STEPS, perturb_onnx

PROG_ERROR = "breakout-dqn export: error: "


def error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(PROG_ERROR)
    return lines[0]


@pytest.mark.slow  # a full export: 10,000+ real stacks and two full games
def test_full_export_passes_the_gate_and_writes_model_report_and_metadata(exported: dict[str, Any]) -> None:
    import onnx

    from breakout_dqn.files import file_sha256

    assert exported["code"] == 0
    report = exported["report"]
    assert report["passed"] and report["gate"]["failures"] == []
    real = report["gate"]["real_stacks"]
    assert real["count"] >= 10_000 and real["distinct"] > 2_000 and real["source"] == "real Breakout play"
    assert real["max_abs_dq"] <= 1e-5 and real["argmax_agreement"] == 1.0 and real["finite"]
    assert all(edge["passed"] for edge in report["gate"]["edge_cases"].values())
    # The CLI measures float32 rounding against the float64 rebuild of the model (export.parity).
    assert report["gate"]["tolerance"]["rounding_factor"] == 2.0
    assert all(edge["keras_rounding"] is not None for edge in report["gate"]["edge_cases"].values())
    assert report["gate"]["behaviour"]["identical"] and report["gate"]["fingerprint"]["passed"]
    assert report["onnx_sha256"] == file_sha256(exported["out"])
    assert report["timings_s"]["total_s"] > 0

    metadata = {p.key: p.value for p in onnx.load(str(exported["out"])).metadata_props}
    run = exported["out"].parent
    assert metadata[contract.META_TRAIN_STEPS] == str(TRAIN_STEPS)
    assert metadata[contract.META_TRAIN_FRAMES] == str(4 * TRAIN_STEPS)
    assert float(metadata[contract.META_EVAL_SCORE]) == EVAL_MEAN
    assert metadata[contract.META_SOURCE_SHA256] == file_sha256(run / "model.keras")
    assert metadata[contract.META_VERSION] and metadata[contract.META_PREPROCESSING] == contract.PREPROCESSING
    assert "breakout_dqn.parity_fingerprint" in metadata
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "eval.json", "model.keras", "model.onnx",
                                                      "model.parity.json"]  # no temp files left


@pytest.mark.slow  # a full export: 10,000+ real stacks and two full games
def test_failed_gate_exits_4_writes_the_report_and_keeps_the_old_out(
        run_dir: Path, tmp_path: Path, small_gate: int, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import onnx

    from breakout_dqn.export import convert

    real_convert = convert.keras_to_onnx

    def convert_then_perturb(model, metadata):  # a converter bug that changes the weights
        proto = real_convert(model, metadata)
        good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
        onnx.save(proto, str(good))
        perturb_onnx(good, bad)
        return onnx.load(str(bad))

    monkeypatch.setattr(convert, "keras_to_onnx", convert_then_perturb)
    out = tmp_path / "model.onnx"
    out.write_bytes(b"the previous, good model")
    code = breakout_cli.main(["export", str(run_dir / "model.keras"), "--out", str(out), "--stacks", str(small_gate)])
    captured = capsys.readouterr()
    assert code == ExitCode.GATE == 4
    assert "parity gate failed" in error_line(captured.err) and "nothing written" in captured.err
    assert out.read_bytes() == b"the previous, good model"
    report = json.loads((tmp_path / "model.parity-failed.json").read_text())
    assert not report["passed"] and report["gate"]["real_stacks"]["max_abs_dq"] > 1e-5
    assert not (tmp_path / "model.parity.json").exists()
    assert "max |dq|" in captured.out  # the report summary is printed too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx", "good.onnx", "model.onnx",
                                                          "model.parity-failed.json"]


def save_keras(path: Path, shape: tuple[int, ...], dtype: str) -> Path:
    import keras

    inputs = keras.Input(shape=shape, dtype=dtype, name="frames")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    keras.Model(inputs, keras.layers.Dense(4)(x)).save(path)
    return path


@pytest.mark.parametrize(("shape", "dtype", "message"), [
    ((84, 84, 4), "float32", "model input must be uint8"),
    ((4, 84, 84), "uint8", "channels last"),
])
def test_model_with_wrong_input_is_rejected_with_a_clear_message(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], shape: tuple[int, ...], dtype: str, message: str) -> None:

    model = save_keras(tmp_path / "bad.keras", shape, dtype)
    out = tmp_path / "bad.onnx"
    assert breakout_cli.main(["export", str(model), "--out", str(out)]) == ExitCode.CONTRACT == 3
    line = error_line(capsys.readouterr().err)
    assert "breaks the model contract" in line and message in line
    assert not out.exists() and not list(tmp_path.glob("*.json"))


@pytest.mark.parametrize("kind", ["missing", "not-a-zip", "zip-without-model", "truncated"])
def test_missing_or_corrupt_input_gives_one_line_error_and_no_output(
        keras_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:

    model = tmp_path / "model.keras"
    if kind == "not-a-zip":
        model.write_bytes(os.urandom(4096))
    elif kind == "zip-without-model":
        with zipfile.ZipFile(model, "w") as archive:
            archive.writestr("config.json", "{}")
    elif kind == "truncated":
        data = keras_model_path.read_bytes()
        model.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out" / "model.onnx"
    assert breakout_cli.main(["export", str(model), "--out", str(out)]) == ExitCode.USAGE == 2
    line = error_line(capsys.readouterr().err)
    assert ("model file not found" if kind == "missing" else "cannot load Keras model") in line
    assert not out.exists() and not list(tmp_path.rglob("*.onnx")) and not list(tmp_path.rglob("*.json"))


def test_usage_errors(keras_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:

    assert breakout_cli.main(["export", str(keras_model_path), "--out", str(tmp_path / "m.onnx"),
                              "--stacks", "100"]) == 2
    assert "at least 10,000" in error_line(capsys.readouterr().err)
    assert breakout_cli.main(["export", str(keras_model_path), "--out", str(tmp_path / "m.pb")]) == 2
    assert "must end in .onnx" in error_line(capsys.readouterr().err)
    assert not list(tmp_path.iterdir())


def test_console_script_gives_one_clean_error_line_even_after_loading_tensorflow(tmp_path: Path) -> None:
    model = tmp_path / "model.keras"
    with zipfile.ZipFile(model, "w") as archive:
        archive.writestr("config.json", "{not a model")
    result = subprocess.run([sys.executable, "-m", "breakout_dqn.cli", "export", str(model), "--out",
                             str(tmp_path / "m.onnx")], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 2
    assert "cannot load Keras model" in error_line(result.stderr)
    assert not (tmp_path / "m.onnx").exists()


def test_run_metadata_uses_fresh_eval_json_then_checkpoints(tmp_path: Path) -> None:
    from breakout_dqn.export.cli import run_metadata

    model = tmp_path / "model.keras"
    model.write_bytes(b"x")
    assert run_metadata(model)[:2] == (None, None)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "checkpoint-000000050000.npz").write_bytes(b"")
    (tmp_path / "checkpoints" / "checkpoint-000000075000.npz").write_bytes(b"")
    assert run_metadata(model)[:2] == (75_000, None)
    eval_json = tmp_path / "eval.json"
    eval_json.write_text(json.dumps({"mean": 41.5, "train_agent_steps": 80_000}))
    assert run_metadata(model)[:2] == (80_000, 41.5)
    stamp = model.stat().st_mtime
    os.utime(eval_json, (stamp - 3600, stamp - 3600))  # an eval of an earlier model (resumed run)
    steps, score, notes = run_metadata(model)
    assert (steps, score) == (75_000, None) and "older than the model" in notes[0]
    (tmp_path / "config.json").write_text(json.dumps({"steps": 2_000_000}))  # the target, not reached
    eval_json.write_text(json.dumps({"mean": 30.5}))  # `evaluate --json` of a run stopped by SIGTERM
    assert run_metadata(model)[:2] == (75_000, 30.5)
    for checkpoint in (tmp_path / "checkpoints").iterdir():
        checkpoint.unlink()
    steps, score, notes = run_metadata(model)  # no checkpoint left: the config's steps, said so
    assert (steps, score) == (2_000_000, 30.5) and "the run's target" in notes[0]


@pytest.mark.slow  # a full export: 10,000+ real stacks and two full games
def test_report_summary_is_strict_json(exported: dict[str, Any]) -> None:
    text = exported["report_path"].read_text()
    json.loads(text, parse_constant=lambda name: pytest.fail(f"non-JSON constant {name}"))
    assert np.isfinite(exported["report"]["gate"]["real_stacks"]["mean_abs_dq"])
