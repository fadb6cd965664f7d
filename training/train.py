"""``train(config)``: one piece of a training run, with the algorithm the config names.

What every run shares is ``training.session``; each algorithm is a class of its own: ``training.dqn.DQN``
(replay, target network) and ``training.pqn.PQN`` (no replay, no target network, Q(lambda) rollouts).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from breakout_dqn.training.config import DQNConfig, PQNConfig, TrainConfig
from breakout_dqn.training.run_directory import RunDirectory
from breakout_dqn.training.session import Interrupted, RunSession, seed_frameworks

if TYPE_CHECKING:
    from breakout_dqn.training.dqn import DQN
    from breakout_dqn.training.pqn import PQN

__all__ = ["Interrupted", "train"]


def preflight(config: TrainConfig) -> None:
    """What can be refused before a backend loads (a replay too large for the memory). It must not import
    Keras: ``--backend`` takes effect only before that (``training.device``)."""
    if isinstance(config, DQNConfig):
        from breakout_dqn.training.replay import check_fits_in_memory

        check_fits_in_memory(config.replay_capacity, config.num_envs)


def build_algorithm(config: TrainConfig) -> DQN | PQN:
    if isinstance(config, PQNConfig):
        from breakout_dqn.training.pqn import PQN

        return PQN(config)
    if isinstance(config, DQNConfig):
        from breakout_dqn.training.dqn import DQN

        return DQN(config)
    raise TypeError(f"no algorithm for {type(config).__name__}")


def train(config: TrainConfig) -> dict[str, Any]:
    """Run (or resume) training as configured; return the final evaluation summary."""
    from breakout_dqn.training.compute_path import describe, resolved, slower_path_note
    from breakout_dqn.training.device import for_device, select_device

    run = RunDirectory(Path(config.out))
    with run.held():  # one writer per run directory, checked first
        preflight(config)
        run.prepare(config.resume)
        device = select_device(config)  # sets KERAS_BACKEND before Keras' import; exit 2 if no GPU asked for
        print(f"device: {device.describe()} (--backend {config.backend}, --device {config.device})", flush=True)
        seed_frameworks(config.seed)
        piece = resolved(for_device(config, device))  # this piece's compute path: this CPU's fastest, or a GPU's
        note = slower_path_note(config) if device.platform == "cpu" else ""
        print(f"compute path: {describe(piece)} (--precision {config.precision}){note}", flush=True)
        algorithm = build_algorithm(piece)
        session = RunSession(config, algorithm, describe(piece), device.describe())  # config.json: as asked
        try:
            algorithm.learn(session)  # ends with the final checkpoint; a failed one raises its own error
            session.raise_if_stopped()  # Interrupted only after a checkpoint that succeeded
            return session.finish()
        finally:
            session.close()
