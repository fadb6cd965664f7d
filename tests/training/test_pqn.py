"""PQN: Q(lambda) targets against brute force, the preset, and a tiny run that resumes and exports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from breakout_dqn import cli as breakout_cli
from breakout_dqn.training.config import ConfigError, resolve
from breakout_dqn.training.pqn import q_lambda_targets
from tests.training.cli_helpers import run_cli

GAMMA, LAMBDA = 0.9, 0.65


def brute_force_lambda_return(rewards, terminals, next_values, t: int) -> float:
    """The truncated lambda-return from its definition: a lambda-weighted mix of n-step returns."""
    horizon = len(rewards) - t  # n-step returns for n = 1..horizon fit in the rollout

    def n_step(n: int) -> float:
        total = 0.0
        for k in range(n):
            total += GAMMA**k * rewards[t + k]
            if terminals[t + k]:
                return total  # the return ends at the terminal: no bootstrap, longer returns equal it
        return total + GAMMA**n * next_values[t + n - 1]

    mixed = sum((1 - LAMBDA) * LAMBDA ** (n - 1) * n_step(n) for n in range(1, horizon))
    return mixed + LAMBDA ** (horizon - 1) * n_step(horizon)


def test_q_lambda_targets_match_the_definition_on_a_hand_made_rollout() -> None:
    # One game per column. Column 0: a lost life at t=2 (the game goes on). Column 1: the game ends
    # at t=1, t=2 is ALE's autoreset step (reward 0, not a transition), a new game from t=3.
    # Column 2: no terminal, bootstraps at the end of the rollout.
    rewards = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 0], [0, 0, 1], [1, 1, 0]], np.float32)
    terminals = np.array([[0, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0]], np.float32)
    next_values = np.random.default_rng(0).uniform(0.5, 3.0, size=(5, 3)).astype(np.float32)
    targets = q_lambda_targets(rewards, terminals, next_values, GAMMA, LAMBDA)
    for column in range(3):
        for t in range(5):
            expected = brute_force_lambda_return(rewards[:, column], terminals[:, column], next_values[:, column], t)
            assert targets[t, column] == pytest.approx(expected, rel=1e-5), (t, column)
    assert targets[1, 1] == rewards[1, 1]  # the game-over step: its reward alone, nothing from the next game
    assert targets[2, 0] == rewards[2, 0]  # a lost life ends the bootstrapped return too
    assert targets[4, 2] == pytest.approx(rewards[4, 2] + GAMMA * next_values[4, 2])  # one-step at the end


def test_lambda_zero_is_one_step_q_learning_and_one_is_the_monte_carlo_return() -> None:
    rewards = np.array([[1.0], [0.0], [1.0]], np.float32)
    terminals = np.zeros((3, 1), np.float32)
    next_values = np.array([[2.0], [3.0], [4.0]], np.float32)
    one_step = q_lambda_targets(rewards, terminals, next_values, GAMMA, 0.0)
    np.testing.assert_allclose(one_step[:, 0], rewards[:, 0] + GAMMA * next_values[:, 0], rtol=1e-6)
    monte_carlo = q_lambda_targets(rewards, terminals, next_values, GAMMA, 1.0)
    assert monte_carlo[0, 0] == pytest.approx(1.0 + GAMMA**2 * 1.0 + GAMMA**3 * 4.0)


def test_pqn_preset_and_its_refusals() -> None:
    config = resolve({"preset": "pqn"})
    assert (config.algorithm, config.num_envs, config.rollout_steps, config.minibatches, config.epochs) == (
        "pqn", 128, 32, 32, 2)
    assert (config.optimizer, config.learning_rate, config.global_clipnorm, config.q_lambda) == (
        "radam", 2.5e-4, 10.0, 0.65)
    assert config.layer_norm and config.loss == "mse" and not hasattr(config, "dueling")
    with pytest.raises(ConfigError, match="must divide a rollout of 4096"):
        resolve({"preset": "pqn", "minibatches": 3})
    with pytest.raises(ConfigError, match="--dueling: not a setting of --algorithm pqn"):
        resolve({"preset": "pqn", "dueling": True})
    with pytest.raises(ConfigError, match="--q-lambda must be in"):
        resolve({"preset": "pqn", "q_lambda": 1.5})


TINY_PQN = ["--preset", "pqn", "--num-envs", "8", "--rollout-steps", "16", "--minibatches", "4", "--log-every", "128",
            "--checkpoint-every", "256", "--eval-every", "0", "--final-eval-episodes", "1", "--no-progress", "--no-xla"]


@pytest.fixture(scope="module")
def pqn_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pqn") / "run"
    result = run_cli("train", "--out", str(out), "--steps", "256", *TINY_PQN)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.slow  # trains
def test_a_tiny_pqn_run_trains_on_its_rollouts(pqn_run: Path) -> None:
    records = [json.loads(line) for line in (pqn_run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["type"] == "train"]
    assert [r["step"] for r in train] == [128, 256]
    assert train[-1]["updates"] == 2 * 2 * 4  # two rollouts of 8 x 16, two epochs of four minibatches
    assert np.isfinite(train[-1]["loss"]) and not (pqn_run / "replay").exists()
    assert train[-1]["cpu_seconds"] > 0 and train[-1]["seconds_training"] > 0
    assert json.loads((pqn_run / "eval.json").read_text())["train_agent_steps"] == 256


@pytest.mark.slow
def test_resuming_a_pqn_checkpoint_twice_gives_the_same_run(pqn_run: Path, tmp_path: Path) -> None:
    # The games restart at a resume (ale-py cannot save them); everything else is restored, so the
    # resumed run is a function of the checkpoint alone: two resumes from it train identically.
    results = []
    for copy in ("a", "b"):
        run = tmp_path / copy
        shutil.copytree(pqn_run, run)
        result = run_cli("train", "--out", str(run), "--resume", "--steps", "512")
        assert result.returncode == 0, result.stderr[-3000:]
        assert "resumed from checkpoint-000000000256.npz at step 256 (16 updates)" in result.stdout
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        results.append([(r["step"], r["updates"], r["loss"], r["mean_q"]) for r in records
                        if r["type"] == "train" and r["step"] > 256])
    assert results[0] == results[1] and [step for step, *_ in results[0]] == [384, 512]
    assert results[0][-1][1] == 16 + 2 * 2 * 4  # the update counter continued


@pytest.mark.slow
def test_a_layer_norm_model_passes_the_parity_gate(pqn_run: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from breakout_dqn.export import parity

    # The gate's tolerance and checks, on 2,000 real stacks (the CLI's minimum of 10,000 takes a minute
    # here; the full gate on a real export is tests/export's).
    monkeypatch.setattr(parity, "MIN_REAL_STACKS", 2000)
    onnx_path = tmp_path / "pqn.onnx"
    assert breakout_cli.main(["export", str(pqn_run / "model.keras"), "--out", str(onnx_path), "--stacks", "2000"]) == 0
    report = json.loads((tmp_path / "pqn.parity.json").read_text())
    assert report["passed"] is True and onnx_path.is_file()
    assert report["gate"]["real_stacks"]["count"] >= 2000 and report["gate"]["real_stacks"]["max_abs_dq"] <= parity.ATOL
    verify = run_cli("verify", str(onnx_path))
    assert verify.returncode == 0, verify.stderr[-2000:]
