"""The compiled gradient step behind one seam: the ``Learner`` protocol, one learner per Keras backend.

The math is shared (``training.losses``); each backend compiles it its own way.
"""

from __future__ import annotations

from typing import Protocol

import keras
import numpy as np

from breakout_dqn.training.config import TrainConfig
from breakout_dqn.training.replay import Batch


class CheckpointedLearner(Protocol):
    """What every run needs of a learner: acting (evaluation), checkpoints and the saved model.

    Frames are uint8 ``[N,84,84,4]``; actions int32 ``[N]``.
    """

    def act(self, frames: np.ndarray) -> np.ndarray:
        """Greedy actions of the online network."""
        ...

    def state(self) -> dict[str, list[np.ndarray]]:
        """Online and target weights and the optimizer's state, as numpy arrays (for checkpoints)."""
        ...

    def load_state(self, state: dict[str, list[np.ndarray]]) -> None:
        """Restore ``state()``; ValueError names what does not fit."""
        ...

    def export_model(self) -> keras.Model:
        """The online network with the current weights, computing in float32 (the saved artifact)."""
        ...


class Learner(CheckpointedLearner, Protocol):
    """What the DQN loop talks to."""

    def update(self, batch: Batch) -> tuple[float, float]:
        """One gradient step; returns (TD loss, mean Q(s, a))."""
        ...

    def update_and_act(self, batches: list[Batch], frames: np.ndarray) -> tuple[list[float], list[float], np.ndarray]:
        """One update per batch in order, then the greedy actions for ``frames``: one compiled call."""
        ...

    def sync_target(self) -> None:
        """Copy the online weights into the target network."""
        ...


def updates_per_agent_step(config: TrainConfig) -> float:
    """Gradient updates per agent step: the unit conversion for schedules counted in optimizer steps."""
    if config.algorithm == "pqn":
        return config.minibatches * config.epochs / (config.num_envs * config.rollout_steps)
    return 1.0 / config.train_frequency


def make_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    """Adam or RAdam; the learning rate decays linearly to 0 over ``learning_rate_decay_steps`` if set."""
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = config.learning_rate
    if config.learning_rate_decay_steps:
        decay_updates = max(1, round(config.learning_rate_decay_steps * updates_per_agent_step(config)))
        learning_rate = keras.optimizers.schedules.PolynomialDecay(config.learning_rate, decay_updates, 0.0)
    clipnorm, global_clipnorm = config.clipnorm or None, config.global_clipnorm or None
    if config.optimizer == "radam":
        from breakout_dqn.training.radam import RAdam

        return RAdam(learning_rate=learning_rate, epsilon=config.adam_epsilon, clipnorm=clipnorm,
                     global_clipnorm=global_clipnorm)
    return keras.optimizers.Adam(learning_rate=learning_rate, epsilon=config.adam_epsilon, clipnorm=clipnorm,
                                 global_clipnorm=global_clipnorm)


def make_learner(config: TrainConfig, online: keras.Model, target: keras.Model) -> Learner:
    """The learner of the active Keras backend, over the given online and target networks; an unset
    ``--xla`` is resolved for this CPU (``compute_path``)."""
    from breakout_dqn.training.compute_path import resolved

    config = resolved(config)
    backend = keras.backend.backend()
    optimizer = make_optimizer(config)
    if backend == "tensorflow":
        from breakout_dqn.training.learners.tensorflow_learner import TensorFlowLearner

        return TensorFlowLearner(config, online, target, optimizer)
    if backend == "jax":
        from breakout_dqn.training.learners.jax_learner import JaxLearner

        return JaxLearner(config, online, target, optimizer)
    raise RuntimeError(f"KERAS_BACKEND={backend!r} is not supported; use tensorflow or jax")


def build_learner(config: TrainConfig) -> CheckpointedLearner:
    """The networks as configured (architecture, precision), then the algorithm's learner.

    ``--precision auto`` is resolved here, for the CPU this process runs on (``compute_path``)."""
    from breakout_dqn.training.compute_path import resolved
    from breakout_dqn.training.model import build_q_network

    config = resolved(config)

    def network(name: str) -> keras.Model:
        return build_q_network(dueling=config.dueling, name=name, precision=config.precision,
                               layer_norm=config.layer_norm)

    if config.algorithm == "pqn" and keras.backend.backend() == "jax":
        from breakout_dqn.training.learners.jax_pqn_learner import JaxPQNLearner

        return JaxPQNLearner(config, network("online"), make_optimizer(config))
    if config.algorithm == "pqn":
        from breakout_dqn.training.learners.pqn_learner import PQNLearner

        return PQNLearner(config, network("online"), make_optimizer(config))
    learner = make_learner(config, network("online"), network("target"))
    learner.sync_target()
    return learner
