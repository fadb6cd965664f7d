"""A finished training run directory, made without training: for the tests of checkpoint averaging
(``training/average.py``) and of the Kubernetes gate's average step."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np


def make_run(run: Path, keras_model_path: Path, steps: list[int], offset: float = 0.0,
             keep: int = 10) -> list[list[np.ndarray]]:
    """``run`` as `train` leaves it: the network, its settings and metrics, and one checkpoint per step
    whose online weights are the network's plus ``step + offset`` (so each checkpoint differs); those weights."""
    from breakout_dqn.training.checkpoint import save_checkpoint
    from breakout_dqn.training.model import load_q_network

    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(keras_model_path, run / "model.keras")
    (run / "config.json").write_text('{"algorithm": "pqn"}')
    (run / "metrics.jsonl").write_text('{"type": "train", "step": 1}\n')
    base = load_q_network(keras_model_path).get_weights()
    saved = []
    for step in steps:
        weights = [weight + np.float32(step + offset) for weight in base]
        save_checkpoint(run / "checkpoints", step, {"online": weights, "target": [], "optimizer": []},
                        {"step": step, "updates": step}, keep=keep)
        saved.append(weights)
    return saved
