"""``train(config)``: one piece of a training run, with the algorithm the config names.

The shared parts (run directory, learner restore, games, statistics, metrics, checkpoints,
evaluations) are ``training.session``; each algorithm's loop is its own module: ``training.dqn``
(replay, target network) and ``training.pqn`` (no replay, no target network, Q(lambda) rollouts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from breakout_dqn.training import dqn, pqn
from breakout_dqn.training.config import TrainConfig
from breakout_dqn.training.run_directory import RunDirectory
from breakout_dqn.training.session import Interrupted, RunSession

__all__ = ["Interrupted", "train"]
ALGORITHMS = {"dqn": dqn, "pqn": pqn}


def train(config: TrainConfig) -> dict[str, Any]:
    """Run (or resume) training as configured; return the final evaluation summary."""
    algorithm = ALGORITHMS[config.algorithm]
    with RunDirectory(Path(config.out)).held():  # one writer per run directory, checked first
        algorithm.preflight(config)
        session = RunSession(config)
        algorithm.run(session)
        return session.finish()
