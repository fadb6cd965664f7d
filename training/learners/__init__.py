"""The compiled updates behind one seam: a ``Learner`` protocol per algorithm, one learner per Keras backend.

Each backend's module holds its update as one module-level function (``tensorflow_dqn.dqn_update``,
``jax_dqn.dqn_update``, ``tensorflow_pqn.pqn_update``, ``jax_pqn.pqn_update``) and a small learner class
that compiles it;
the shared math is ``training.losses``.
"""

from __future__ import annotations

from typing import Protocol

import keras
import numpy as np

from breakout_dqn.training.config import DQNConfig, PQNConfig, TrainConfig
from breakout_dqn.training.replay import Batch


class Learner(Protocol):
    """What every run needs of a learner: acting (evaluation), checkpoints and the saved model.

    Frames are uint8 ``[N,84,84,4]``; actions int32 ``[N]``.
    """

    def act(self, frames: np.ndarray) -> np.ndarray:
        """Greedy actions of the online network."""
        ...

    def state(self) -> dict[str, list[np.ndarray]]:
        """The arrays a checkpoint holds: ``online``, ``target`` (empty without one), ``optimizer``."""
        ...

    def load_state(self, state: dict[str, list[np.ndarray]]) -> None:
        """Restore ``state()``; ValueError names what does not fit."""
        ...

    def export_model(self) -> keras.Model:
        """The online network with the current weights, computing in float32 (the saved artifact)."""
        ...


class DQNLearner(Learner, Protocol):
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


class PQNLearner(Learner, Protocol):
    """What the PQN loop talks to."""

    def act_with_values(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Greedy actions ``[N]`` int32 and ``max_a Q(s, a)`` ``[N]`` float32."""
        ...

    def train_rollout(self, frames: np.ndarray, actions: np.ndarray, targets: np.ndarray, weights: np.ndarray,
                      rng: np.random.Generator) -> tuple[list[float], list[float]]:
        """Epochs of minibatch updates over one rollout; (losses, mean Qs), one per update."""
        ...


def updates_per_agent_step(config: TrainConfig) -> float:
    """Gradient updates per agent step: the unit conversion for schedules counted in optimizer steps."""
    if isinstance(config, PQNConfig):
        return config.minibatches * config.epochs / (config.num_envs * config.rollout_steps)
    assert isinstance(config, DQNConfig)
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


def _network(config: TrainConfig, name: str, dueling: bool = False) -> keras.Model:
    from breakout_dqn.training.model import build_q_network

    return build_q_network(dueling=dueling, name=name, precision=config.precision, layer_norm=config.layer_norm)


def make_learner(config: DQNConfig, online: keras.Model, target: keras.Model) -> DQNLearner:
    """The DQN learner of the active Keras backend over the given networks (``--xla`` unset: this CPU's pick)."""
    from breakout_dqn.training.compute_path import resolved

    config = resolved(config)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from breakout_dqn.training.learners.tensorflow_dqn import TensorFlowDQNLearner

        return TensorFlowDQNLearner(config, online, target, make_optimizer(config))
    if backend == "jax":
        from breakout_dqn.training.learners.jax_dqn import JaxDQNLearner

        return JaxDQNLearner(config, online, target, make_optimizer(config))
    raise RuntimeError(f"KERAS_BACKEND={backend!r} is not supported; use tensorflow or jax")


def build_dqn_learner(config: DQNConfig) -> DQNLearner:
    """Online and target networks as configured (architecture, precision), synced, and their learner."""
    from breakout_dqn.training.compute_path import resolved

    config = resolved(config)
    learner = make_learner(config, _network(config, "online", config.dueling), _network(config, "target",
                                                                                        config.dueling))
    learner.sync_target()
    return learner


def build_pqn_learner(config: PQNConfig) -> PQNLearner:
    """PQN's network as configured and the learner of the active Keras backend."""
    from breakout_dqn.training.compute_path import resolved

    config = resolved(config)
    if keras.backend.backend() == "jax":
        from breakout_dqn.training.learners.jax_pqn import JaxPQNLearner

        return JaxPQNLearner(config, _network(config, "online"), make_optimizer(config))
    from breakout_dqn.training.learners.tensorflow_pqn import TensorFlowPQNLearner

    return TensorFlowPQNLearner(config, _network(config, "online"), make_optimizer(config))


def build_learner(config: TrainConfig) -> Learner:
    """The learner of the algorithm ``config`` names."""
    if isinstance(config, PQNConfig):
        return build_pqn_learner(config)
    assert isinstance(config, DQNConfig)
    return build_dqn_learner(config)
