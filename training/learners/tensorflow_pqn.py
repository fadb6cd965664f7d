"""PQN's update on Keras' TensorFlow backend: one network, no target, minibatch epochs over a rollout."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import tensorflow as tf

from breakout_dqn.training.config import PQNConfig
from breakout_dqn.training.learners.state import assign_arrays
from breakout_dqn.training.learners.tensorflow_dqn import optimizer_step
from breakout_dqn.training.losses import td_loss
from breakout_dqn.training.model import float32_copy
from breakout_dqn.training.rollout import minibatch_rows


def pqn_update(online, apply_gradients: Callable, frames, actions, targets, weights, *, loss: str):
    """One PQN gradient step on a minibatch, top to bottom: Q(s, a) against the Q(lambda) targets (computed
    while acting: ``training.pqn.q_lambda_targets``), the loss over real transitions (``weights`` 1), the
    optimizer's step. Returns (loss, mean Q(s, a) over real transitions)."""
    with tf.GradientTape() as tape:
        q_values = online(frames, training=True)
        loss_value, taken = td_loss(q_values, actions, targets, loss, weights)
    apply_gradients(tape.gradient(loss_value, online.trainable_variables))
    return loss_value, tf.reduce_sum(taken * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)


class TensorFlowPQNLearner:
    """The online network, its optimizer, a compiled acting pass and ``pqn_update`` compiled."""

    def __init__(self, config: PQNConfig, online, optimizer):
        self.online, self.optimizer, self.config = online, optimizer, config
        optimizer.build(online.trainable_variables)
        compiled = partial(tf.function, jit_compile=config.xla, reduce_retracing=True)

        def act(frames):
            q_values = online(frames, training=False)
            return tf.argmax(q_values, axis=1, output_type=tf.int32), tf.reduce_max(q_values, axis=1)

        self._act = compiled(act)
        self._update = compiled(partial(pqn_update, online, optimizer_step(optimizer, online.trainable_variables,
                                                                          bool(config.xla)), loss=config.loss))

    def act(self, frames: np.ndarray) -> np.ndarray:
        """Greedy actions ``[N]`` int32."""
        return self._act(frames)[0].numpy()

    def act_with_values(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Greedy actions ``[N]`` int32 and their Q-values ``max_a Q(s, a)`` ``[N]`` float32."""
        greedy, values = self._act(frames)
        return greedy.numpy(), values.numpy()

    def train_rollout(self, frames: np.ndarray, actions: np.ndarray, targets: np.ndarray, weights: np.ndarray,
                      rng: np.random.Generator) -> tuple[list[float], list[float]]:
        """``epochs`` passes over the rollout in ``minibatches`` shuffled minibatches; (losses, mean Qs).

        ``frames`` uint8 ``[B,84,84,4]``; ``actions`` int32, ``targets`` and ``weights`` float32 ``[B]``.
        """
        losses, mean_qs = [], []
        for rows in minibatch_rows(rng, len(frames), self.config.minibatches, self.config.epochs):
            loss, mean_q = self._update(frames[rows], actions[rows], targets[rows], weights[rows])
            losses.append(float(loss))
            mean_qs.append(float(mean_q))
        return losses, mean_qs

    def state(self) -> dict[str, list[np.ndarray]]:
        return {"online": [np.asarray(v) for v in self.online.weights], "target": [],
                "optimizer": [np.asarray(v) for v in self.optimizer.variables]}

    def load_state(self, state: dict[str, list[np.ndarray]]) -> None:
        assign_arrays("online", self.online.weights, state["online"])
        assign_arrays("optimizer", self.optimizer.variables, state["optimizer"])

    def export_model(self):
        return float32_copy(self.online, dueling=False, layer_norm=self.config.layer_norm)

