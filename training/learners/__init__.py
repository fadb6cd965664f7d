"""The compiled gradient step behind one seam: the ``Learner`` protocol, one learner per Keras backend.

The math is shared (``training.losses``); each backend compiles it its own way.
"""

from __future__ import annotations

from typing import Protocol

import keras
import numpy as np

from training.config import TrainConfig
from training.replay import Batch


class Learner(Protocol):
    """What the DQN loop talks to. Frames are uint8 ``[N,84,84,4]``; actions int32 ``[N]``."""

    def act(self, frames: np.ndarray) -> np.ndarray:
        """Greedy actions of the online network."""
        ...

    def update(self, batch: Batch) -> tuple[float, float]:
        """One gradient step; returns (TD loss, mean Q(s, a))."""
        ...

    def update_and_act(self, batches: list[Batch], frames: np.ndarray) -> tuple[list[float], list[float], np.ndarray]:
        """One update per batch in order, then the greedy actions for ``frames``: one compiled call."""
        ...

    def sync_target(self) -> None:
        """Copy the online weights into the target network."""
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


def make_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    return keras.optimizers.Adam(
        learning_rate=config.learning_rate,
        epsilon=config.adam_epsilon,
        clipnorm=config.clipnorm or None,
        global_clipnorm=config.global_clipnorm or None,
    )


def make_learner(config: TrainConfig, online: keras.Model, target: keras.Model) -> Learner:
    """The learner of the active Keras backend, over the given online and target networks."""
    backend = keras.backend.backend()
    optimizer = make_optimizer(config)
    if backend == "tensorflow":
        from training.learners.tensorflow_learner import TensorFlowLearner

        return TensorFlowLearner(config, online, target, optimizer)
    if backend == "jax":
        from training.learners.jax_learner import JaxLearner

        return JaxLearner(config, online, target, optimizer)
    raise RuntimeError(f"KERAS_BACKEND={backend!r} is not supported; use tensorflow or jax")


def build_learner(config: TrainConfig) -> Learner:
    """Online and target networks as configured (architecture, precision), then their learner."""
    from training.model import build_q_network

    online = build_q_network(dueling=config.dueling, name="online", precision=config.precision)
    target = build_q_network(dueling=config.dueling, name="target", precision=config.precision)
    learner = make_learner(config, online, target)
    learner.sync_target()
    return learner
