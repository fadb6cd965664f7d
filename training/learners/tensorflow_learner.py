"""The DQN gradient step on Keras' TensorFlow backend: one tf.function, with XLA or oneDNN kernels."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from breakout_dqn.training.config import TrainConfig
from breakout_dqn.training.learners.state import learner_arrays, restore_learner_arrays
from breakout_dqn.training.losses import td_loss, td_targets
from breakout_dqn.training.model import float32_copy
from breakout_dqn.training.replay import Batch


def optimizer_step(optimizer, variables, xla: bool):
    """``optimizer.apply(gradients, variables)`` as called inside the compiled update.

    On the oneDNN path (``xla`` False) the step is an XLA cluster of its own, while the network's
    convolutions stay on oneDNN's kernels: Keras' Adam runs ~10 small kernels per variable there, each
    a pass over memory (6.01 ms a step for the bfloat16 Nature CNN on an AMX Xeon), which XLA fuses
    (2.77 ms; ``benchmarks/train_throughput.py --optimizer-step``,
    results/optimizer_step_xeon-amx.json). Same variables, same math: checkpoints and the optimizer's
    state do not change. Under ``xla`` the whole update is one cluster already.
    """
    if xla:
        return lambda gradients: optimizer.apply(gradients, variables)

    @tf.function(jit_compile=True)
    def fused_step(gradients):
        optimizer.apply(gradients, variables)

    return fused_step


class TensorFlowLearner:
    """Online/target networks, Adam, and one ``tf.function`` update (``jit_compile=config.xla``)."""

    def __init__(self, config: TrainConfig, online, target, optimizer):
        self.online, self.target, self.optimizer = online, target, optimizer
        self.dueling, self.layer_norm = config.dueling, config.layer_norm
        optimizer.build(online.trainable_variables)
        double, terminal_target, loss_name = config.double_dqn, config.terminal_target, config.loss
        apply_gradients = optimizer_step(optimizer, online.trainable_variables, bool(config.xla))

        def one_update(states, actions, returns, discounts, dones, next_states):
            next_q_target = target(next_states, training=False)
            next_q_online = online(next_states, training=False) if double else None
            targets = td_targets(returns, discounts, dones, next_q_target, next_q_online, terminal_target)
            with tf.GradientTape() as tape:
                q_values = online(states, training=True)
                loss, taken = td_loss(q_values, actions, targets, loss_name)
            apply_gradients(tape.gradient(loss, online.trainable_variables))
            return loss, tf.reduce_mean(taken)

        xla = config.xla

        @tf.function(jit_compile=xla, reduce_retracing=True)
        def train_step(states, actions, returns, discounts, dones, next_states):
            return one_update(states, actions, returns, discounts, dones, next_states)

        @tf.function(jit_compile=xla, reduce_retracing=True)
        def update_and_act(batches, frames):
            # Unrolled at trace time; automatic control dependencies order each update's reads
            # after the previous one's writes, and the act after the last update.
            results = [one_update(*batch) for batch in batches]
            greedy = tf.argmax(online(frames, training=False), axis=1, output_type=tf.int32)
            return tf.stack([r[0] for r in results]), tf.stack([r[1] for r in results]), greedy

        @tf.function(jit_compile=xla, reduce_retracing=True)
        def act(frames):
            return tf.argmax(online(frames, training=False), axis=1, output_type=tf.int32)

        @tf.function
        def sync_target():
            for target_weight, online_weight in zip(target.weights, online.weights, strict=True):
                target_weight.assign(online_weight)

        self._train_step, self._act, self._sync_target = train_step, act, sync_target
        self._update_and_act = update_and_act

    def update(self, batch: Batch) -> tuple[float, float]:
        loss, mean_q = self._train_step(*batch)
        return float(loss), float(mean_q)

    def update_and_act(self, batches: list[Batch], frames: np.ndarray) -> tuple[list[float], list[float], np.ndarray]:
        """Run one update per batch in order, then return greedy actions for ``frames``: one call."""
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

