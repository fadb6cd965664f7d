"""The DQN update on Keras' TensorFlow backend: one function, compiled with XLA or on oneDNN's kernels."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import tensorflow as tf

from breakout_dqn.training.config import DQNConfig
from breakout_dqn.training.learners.state import learner_arrays, restore_learner_arrays
from breakout_dqn.training.losses import td_loss, td_targets
from breakout_dqn.training.model import float32_copy
from breakout_dqn.training.replay import Batch


def dqn_update(online, target, apply_gradients: Callable, batch: Batch, *, double: bool, loss: str,
               terminal_target: float | None):
    """One DQN gradient step, top to bottom: TD targets, Q(s, a), the loss, the optimizer's step.

    Returns (loss, mean Q(s, a)) as tensors. ``double``: the online network picks the next action
    (van Hasselt et al. 2016), the target network values it.
    """
    states, actions, returns, discounts, dones, next_states = batch
    next_q_target = target(next_states, training=False)
    next_q_online = online(next_states, training=False) if double else None
    targets = td_targets(returns, discounts, dones, next_q_target, next_q_online, terminal_target)
    with tf.GradientTape() as tape:
        q_values = online(states, training=True)
        loss_value, taken = td_loss(q_values, actions, targets, loss)
    apply_gradients(tape.gradient(loss_value, online.trainable_variables))
    return loss_value, tf.reduce_mean(taken)


def optimizer_step(optimizer, variables, xla: bool) -> Callable:
    """``optimizer.apply(gradients, variables)`` as the compiled update calls it.

    Off XLA, the optimizer's ~10 small kernels per variable run as one XLA cluster of their own while
    the network stays on oneDNN (2.2x faster; docs/benchmarks.md, "The update"); same math, same state.
    """
    if xla:
        return lambda gradients: optimizer.apply(gradients, variables)

    @tf.function(jit_compile=True)
    def fused_step(gradients):
        optimizer.apply(gradients, variables)

    return fused_step


class TensorFlowDQNLearner:
    """Online and target networks, their optimizer, and ``dqn_update`` compiled (``jit_compile=config.xla``)."""

    def __init__(self, config: DQNConfig, online, target, optimizer):
        self.online, self.target, self.optimizer = online, target, optimizer
        self.dueling, self.layer_norm = config.dueling, config.layer_norm
        optimizer.build(online.trainable_variables)
        update = partial(dqn_update, online, target, optimizer_step(optimizer, online.trainable_variables,
                                                                      bool(config.xla)),
                         double=config.double_dqn, loss=config.loss, terminal_target=config.terminal_target)
        compiled = partial(tf.function, jit_compile=config.xla, reduce_retracing=True)

        def greedy(frames):
            return tf.argmax(online(frames, training=False), axis=1, output_type=tf.int32)

        def update_and_act(batches, frames):
            # Unrolled at trace time; automatic control dependencies order each update's reads after the
            # previous one's writes, and the act after the last update.
            results = [update(batch) for batch in batches]
            return tf.stack([r[0] for r in results]), tf.stack([r[1] for r in results]), greedy(frames)

        self._update, self._act, self._update_and_act = compiled(update), compiled(greedy), compiled(update_and_act)
        self._sync_target = tf.function(lambda: [t.assign(o) for t, o in zip(target.weights, online.weights,
                                                                                 strict=True)])

    def update(self, batch: Batch) -> tuple[float, float]:
        loss, mean_q = self._update(tuple(batch))
        return float(loss), float(mean_q)

    def update_and_act(self, batches: list[Batch], frames: np.ndarray) -> tuple[list[float], list[float], np.ndarray]:
        """One update per batch in order, then the greedy actions for ``frames``: one compiled call."""
        losses, mean_qs, greedy = self._update_and_act(tuple(tuple(batch) for batch in batches), frames)
        return losses.numpy().tolist(), mean_qs.numpy().tolist(), greedy.numpy()

    def act(self, frames: np.ndarray) -> np.ndarray:
        return self._act(frames).numpy()

    def sync_target(self) -> None:
        self._sync_target()

    def export_model(self):
        return float32_copy(self.online, self.dueling, self.layer_norm)

    def state(self) -> dict[str, list[np.ndarray]]:
        return learner_arrays(self.online, self.target, self.optimizer)

    def load_state(self, state: dict[str, list[np.ndarray]]) -> None:
        restore_learner_arrays(self.online, self.target, self.optimizer, state)
