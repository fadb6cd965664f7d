"""Export-stage fixtures: a full CLI export from a run directory, real stacks, perturbed models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from breakout_dqn import cli as breakout_cli
from tests.export.helpers import EVAL_MEAN, TRAIN_STEPS, perturb_onnx
from tests.xdist_once import built_once


@pytest.fixture(scope="session")
def run_dir(keras_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished training run: model.keras, config.json, eval.json (newer than the model)."""

    def build() -> str:
        run = tmp_path_factory.mktemp("run")
        shutil.copy(keras_model_path, run / "model.keras")
        (run / "config.json").write_text(json.dumps({"steps": TRAIN_STEPS, "dueling": True}))
        (run / "eval.json").write_text(json.dumps({"mean": EVAL_MEAN, "episodes": 30,
                                                   "train_agent_steps": TRAIN_STEPS}))
        return str(run)

    return Path(built_once(tmp_path_factory, "run", build))


@pytest.fixture(scope="session")
def exported(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``breakout-dqn export run/model.keras --out run/model.onnx`` with the full default gate (10k stacks).

    Built once for all workers: three test files read it, and it takes about a minute.
    """

    def build() -> int:

        return breakout_cli.main(["export", str(run_dir / "model.keras"), "--out", str(run_dir / "model.onnx")])

    code = built_once(tmp_path_factory, "export", build)
    report_path = run_dir / "model.parity.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return {"code": code, "out": run_dir / "model.onnx", "report": report, "report_path": report_path}


@pytest.fixture(scope="session")
def exported_onnx(exported: dict[str, Any]) -> Path:
    assert exported["code"] == 0, exported["report"].get("gate", {}).get("failures")
    return exported["out"]


@pytest.fixture(scope="session")
def perturbed_onnx(exported_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The exported model with noise of 1% of its std on its largest weight tensor, metadata unchanged."""
    dst = tmp_path_factory.mktemp("perturbed") / "model.onnx"
    perturb_onnx(exported_onnx, dst, relative=1e-2)
    return dst


@pytest.fixture(scope="session")
def slightly_perturbed_onnx(exported_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """As ``perturbed_onnx`` with 0.1% noise: Q moves by ~1e-4, 10x the parity gate's tolerance."""
    dst = tmp_path_factory.mktemp("slightly-perturbed") / "model.onnx"
    perturb_onnx(exported_onnx, dst, relative=1e-3)
    return dst


@pytest.fixture(scope="session")
def keras_q(keras_model_path: Path):
    from breakout_dqn.export.parity import keras_q_function
    from breakout_dqn.training.model import load_q_network

    return keras_q_function(load_q_network(keras_model_path))


@pytest.fixture(scope="session")
def exact_q(keras_model_path: Path):
    """The same Keras model rebuilt in float64: the gate's reference for float32 rounding."""
    from breakout_dqn.export.parity import exact_q_function
    from breakout_dqn.training.model import load_q_network

    return exact_q_function(load_q_network(keras_model_path))


@pytest.fixture(scope="session")
def real_stacks(keras_q) -> np.ndarray:
    """512 stacks from real Breakout play by the seed-0 Keras model mixed with random actions."""
    from breakout_dqn.export.parity import collect_stacks

    return collect_stacks(keras_q, 512, seed=1)


@pytest.fixture()
def small_gate(monkeypatch: pytest.MonkeyPatch) -> int:
    """Let CLI exports in tests use a 512-stack gate (the real minimum is 10,000)."""
    from breakout_dqn.export import parity

    monkeypatch.setattr(parity, "MIN_REAL_STACKS", 512)
    return 512
