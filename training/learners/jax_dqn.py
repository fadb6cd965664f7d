"""The DQN update on Keras' JAX backend: pure functions over the weights, compiled with ``jax.jit``."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from keras import ops

from breakout_dqn.training.config import DQNConfig
from breakout_dqn.training.learners.state import learner_arrays, restore_learner_arrays
from breakout_dqn.training.losses import td_loss, td_targets
from breakout_dqn.training.model import float32_copy
from breakout_dqn.training.replay import Batch


def dqn_loss(trainable, non_trainable, target_trainable, batch: Batch, *, online, target, double: bool, loss: str,
             terminal_target: float | None):
    """The TD loss and mean Q(s, a), top to bottom: TD targets (no gradient), Q(s, a), the loss."""
    states, actions, returns, discounts, dones, next_states = batch
    next_q_target, _ = target.stateless_call(target_trainable, non_trainable, next_states)
    next_q_online = online.stateless_call(trainable, non_trainable, next_states)[0] if double else None
    targets = td_targets(returns, discounts, dones, next_q_target, next_q_online, terminal_target)
    q_values, _ = online.stateless_call(trainable, non_trainable, states, training=True)
    loss_value, taken = td_loss(q_values, actions, targets, loss)
    return loss_value, ops.mean(taken)


def dqn_update(trainable, optimizer_state, non_trainable, target_trainable, batch: Batch, *, optimizer,
               **loss_settings):
    """One DQN gradient step: the loss's gradient, then the optimizer's step. Returns the new weights and
    optimizer state, the loss and mean Q(s, a)."""
    (loss_value, mean_q), gradients = jax.value_and_grad(partial(dqn_loss, **loss_settings), has_aux=True)(
        trainable, non_trainable, target_trainable, batch)
    trainable, optimizer_state = optimizer.stateless_apply(optimizer_state, gradients, trainable)
    return trainable, optimizer_state, loss_value, mean_q


class JaxDQNLearner:
    """Keeps the weights and optimizer state as jax arrays; writes them back to Keras on ``sync_to_model``."""

    def __init__(self, config: DQNConfig, online, target, optimizer):
        self.online, self.target, self.optimizer = online, target, optimizer
        self.dueling, self.layer_norm = config.dueling, config.layer_norm
        optimizer.build(online.trainable_variables)
        self._read_variables()
        update = jax.jit(partial(dqn_update, optimizer=optimizer, online=online, target=target,
                                 double=config.double_dqn, loss=config.loss, terminal_target=config.terminal_target))

        @jax.jit
        def greedy(trainable, non_trainable, frames):
            q_values, _ = online.stateless_call(trainable, non_trainable, frames)
            return jnp.argmax(q_values, axis=1).astype(jnp.int32)

        @jax.jit
        def update_and_act(trainable, optimizer_state, non_trainable, target_trainable, batches, frames):
            losses, mean_qs = [], []
            for batch in batches:  # unrolled at trace time
                trainable, optimizer_state, loss_value, mean_q = update(
                    trainable, optimizer_state, non_trainable, target_trainable, batch)
                losses.append(loss_value)
                mean_qs.append(mean_q)
            actions = greedy(trainable, non_trainable, frames)
            return trainable, optimizer_state, jnp.stack(losses), jnp.stack(mean_qs), actions

        self._update, self._act, self._update_and_act = update, greedy, update_and_act

    def _read_variables(self) -> None:
        self.trainable = [v.value for v in self.online.trainable_variables]
        self.non_trainable = [v.value for v in self.online.non_trainable_variables]
        self.target_trainable = [v.value for v in self.target.trainable_variables]
        self.optimizer_state = [v.value for v in self.optimizer.variables]

    def update(self, batch: Batch) -> tuple[float, float]:
        self.trainable, self.optimizer_state, loss, mean_q = self._update(
            self.trainable, self.optimizer_state, self.non_trainable, self.target_trainable, tuple(batch))
        return float(loss), float(mean_q)

    def update_and_act(self, batches: list[Batch], frames: np.ndarray) -> tuple[list[float], list[float], np.ndarray]:
        """One update per batch in order, then the greedy actions for ``frames``: one call."""
        self.trainable, self.optimizer_state, losses, mean_qs, greedy = self._update_and_act(
            self.trainable, self.optimizer_state, self.non_trainable, self.target_trainable,
            tuple(tuple(batch) for batch in batches), frames)
        return np.asarray(losses).tolist(), np.asarray(mean_qs).tolist(), np.asarray(greedy)

    def act(self, frames: np.ndarray) -> np.ndarray:
        return np.asarray(self._act(self.trainable, self.non_trainable, frames))

    def sync_target(self) -> None:
        self.target_trainable = list(self.trainable)

    def sync_to_model(self) -> None:
        """Write the jax arrays back into the Keras variables (before a save)."""
        for variables, values in ((self.online.trainable_variables, self.trainable),
                                  (self.target.trainable_variables, self.target_trainable),
                                  (self.optimizer.variables, self.optimizer_state)):
            for variable, value in zip(variables, values, strict=True):
                variable.assign(value)

    def export_model(self):
        self.sync_to_model()
        return float32_copy(self.online, self.dueling, self.layer_norm)

    def state(self) -> dict[str, list[np.ndarray]]:
        self.sync_to_model()
        return learner_arrays(self.online, self.target, self.optimizer)

    def load_state(self, state: dict[str, list[np.ndarray]]) -> None:
        restore_learner_arrays(self.online, self.target, self.optimizer, state)
        self._read_variables()
