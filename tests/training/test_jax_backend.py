"""Both algorithms on Keras' JAX backend, on the CPU: train, resume, export and verify.

The JAX runs go as on the GPU machines, where TensorFlow is not installed (``without_tensorflow``);
the exports run here, on the TensorFlow backend, through the unchanged parity gate.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.training.cli_helpers import TINY, run_cli

pytestmark = [pytest.mark.jax, pytest.mark.slow]  # trains, in processes that load JAX and Keras

ROOT = Path(__file__).resolve().parents[2]
TINY_PQN = ["--preset", "pqn", "--steps", "256", "--num-envs", "8", "--rollout-steps", "16", "--minibatches", "4",
            "--log-every", "128", "--checkpoint-every", "256", "--eval-every", "0", "--final-eval-episodes", "1",
            "--no-progress"]
# (flags of a first piece, the checkpoint step it ends at, the step its resumes train to)
RUNS = {"dqn": ([*TINY], 400, 600), "pqn": (TINY_PQN, 256, 512)}


def run_jax(*args: str, backend_flag: bool = False) -> subprocess.CompletedProcess:
    """``breakout-dqn ARGS`` on the JAX backend (chosen by ``--backend jax``, else KERAS_BACKEND), without
    TensorFlow, on the CPU."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
    env.pop("KERAS_BACKEND", None)
    if not backend_flag:
        env["KERAS_BACKEND"] = "jax"
    flags = ["--backend", "jax"] if backend_flag else []
    return subprocess.run([sys.executable, "-m", "tests.training.without_tensorflow", *args, *flags], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=env)


def train_records(run: Path, after: int = 0) -> list[tuple]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [(r["step"], r["updates"], r["loss"], r["mean_q"]) for r in records if r["type"] == "train"
            and r["step"] > after]


@pytest.fixture(scope="module", params=sorted(RUNS))
def jax_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    pytest.importorskip("jax")
    algorithm = request.param
    flags, _, _ = RUNS[algorithm]
    out = tmp_path_factory.mktemp(f"jax-{algorithm}") / "run"
    result = run_jax("train", "--out", str(out), *flags, backend_flag=algorithm == "pqn")
    assert result.returncode == 0, result.stderr[-3000:]
    return algorithm, out


def test_a_jax_run_trains_without_tensorflow_and_logs_its_device(jax_run: tuple[str, Path]) -> None:
    algorithm, run = jax_run
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["type"] == "train"]
    assert train and {r["device"].split(" (")[0] for r in train} == {"jax on cpu"}
    assert np.isfinite(train[-1]["loss"]) and train[-1]["updates"] > 0
    assert json.loads((run / "config.json").read_text())["algorithm"] == algorithm
    assert json.loads((run / "eval.json").read_text())["train_agent_steps"] == RUNS[algorithm][1]


def test_resuming_a_jax_checkpoint_twice_gives_the_same_run(jax_run: tuple[str, Path], tmp_path: Path) -> None:
    # The games restart at a resume; everything else is restored, so two resumes from one checkpoint train
    # identically, bit for bit.
    algorithm, run = jax_run
    _, saved, resumed_to = RUNS[algorithm]
    results = []
    for copy in ("a", "b"):
        piece = tmp_path / copy
        shutil.copytree(run, piece)
        result = run_jax("train", "--out", str(piece), "--resume", "--steps", str(resumed_to))
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"resumed from checkpoint-{saved:012d}.npz at step {saved:,}" in result.stdout
        results.append(train_records(piece, after=saved))
    assert results[0] == results[1] and results[0][-1][0] == resumed_to
    assert results[0][-1][1] > train_records(run)[-1][1]  # the update counter continued


def test_checkpoints_move_from_jax_to_tensorflow_and_back(jax_run: tuple[str, Path], tmp_path: Path) -> None:
    algorithm, run = jax_run
    _, saved, resumed_to = RUNS[algorithm]
    piece = tmp_path / "tensorflow"
    shutil.copytree(run, piece)
    result = run_cli("train", "--out", str(piece), "--resume", "--steps", str(resumed_to), "--backend", "tensorflow")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "device: tensorflow on cpu" in result.stdout
    assert f"resumed from checkpoint-{saved:012d}.npz at step {saved:,}" in result.stdout
    records = train_records(piece, after=saved)
    assert records[-1][0] == resumed_to and records[-1][1] > train_records(run)[-1][1]
    # and the checkpoint TensorFlow wrote, back on JAX (the flag: the run's config now names tensorflow)
    again = resumed_to + (resumed_to - saved)
    result = run_jax("train", "--out", str(piece), "--resume", "--steps", str(again), backend_flag=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed from checkpoint-{resumed_to:012d}.npz at step {resumed_to:,}" in result.stdout
    records += train_records(piece, after=resumed_to)
    assert records[-1][0] == again and records[-1][1] > records[-2][1]
    assert all(np.isfinite(loss) for _, _, loss, _ in records)


def test_a_jax_model_exports_through_the_parity_gate_and_verifies(jax_run: tuple[str, Path], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from breakout_dqn.export import cli, parity

    _, run = jax_run
    # The gate's tolerance and checks, on 2,000 real stacks (the CLI's minimum of 10,000 takes a minute
    # here; the full gate on a real export is tests/export's).
    monkeypatch.setattr(parity, "MIN_REAL_STACKS", 2000)
    onnx_path = tmp_path / "model.onnx"
    assert cli.main([str(run / "model.keras"), "--out", str(onnx_path), "--stacks", "2000"]) == 0
    report = json.loads((tmp_path / "model.parity.json").read_text())
    assert report["passed"] is True and report["gate"]["real_stacks"]["count"] >= 2000
    verify = run_cli("verify", str(onnx_path))
    assert verify.returncode == 0, verify.stderr[-2000:]
