"""The DQN gradient step on Keras' JAX backend: stateless_call + value_and_grad + jit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from keras import ops

from breakout_dqn.training.config import TrainConfig
from breakout_dqn.training.learners.state import learner_arrays, restore_learner_arrays
from breakout_dqn.training.losses import td_loss, td_targets
from breakout_dqn.training.model import float32_copy
from breakout_dqn.training.replay import Batch


class JaxLearner:
    """Keeps weights and optimizer state as jax arrays; writes them back on ``sync_to_model``."""

    def __init__(self, config: TrainConfig, online, target, optimizer):
        self.online, self.target, self.optimizer = online, target, optimizer
        self.dueling, self.layer_norm = config.dueling, config.layer_norm
        optimizer.build(online.trainable_variables)
        self.trainable = [v.value for v in online.trainable_variables]
        self.non_trainable = [v.value for v in online.non_trainable_variables]
        self.target_trainable = [v.value for v in target.trainable_variables]
        self.optimizer_state = [v.value for v in optimizer.variables]
        double, terminal_target, loss_name = config.double_dqn, config.terminal_target, config.loss

        def loss_fn(trainable, non_trainable, target_trainable, batch):
            states, actions, returns, discounts, dones, next_states = batch
            next_q_target, _ = target.stateless_call(target_trainable, non_trainable, next_states)
            next_q_online = None
            if double:
                next_q_online, _ = online.stateless_call(trainable, non_trainable, next_states)
            targets = td_targets(returns, discounts, dones, next_q_target, next_q_online, terminal_target)
            q_values, _ = online.stateless_call(trainable, non_trainable, states, training=True)
            loss, taken = td_loss(q_values, actions, targets, loss_name)
            return loss, ops.mean(taken)

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

        @jax.jit
        def train_step(trainable, optimizer_state, non_trainable, target_trainable, batch):
            (loss, mean_q), gradients = grad_fn(trainable, non_trainable, target_trainable, batch)
            trainable, optimizer_state = optimizer.stateless_apply(optimizer_state, gradients, trainable)
            return trainable, optimizer_state, loss, mean_q

        @jax.jit
        def act(trainable, non_trainable, frames):
            q_values, _ = online.stateless_call(trainable, non_trainable, frames)
            return jnp.argmax(q_values, axis=1).astype(jnp.int32)

        @jax.jit
        def update_and_act(trainable, optimizer_state, non_trainable, target_trainable, batches, frames):
            losses, mean_qs = [], []
            for batch in batches:  # unrolled at trace time
                trainable, optimizer_state, loss, mean_q = train_step(
                    trainable, optimizer_state, non_trainable, target_trainable, batch)
                losses.append(loss)
                mean_qs.append(mean_q)
            greedy = act(trainable, non_trainable, frames)
            return trainable, optimizer_state, jnp.stack(losses), jnp.stack(mean_qs), greedy

        self._train_step, self._act, self._update_and_act = train_step, act, update_and_act

    def update(self, batch: Batch) -> tuple[float, float]:
        self.trainable, self.optimizer_state, loss, mean_q = self._train_step(
            self.trainable, self.optimizer_state, self.non_trainable, self.target_trainable, tuple(batch)
        )
        return float(loss), float(mean_q)

    def update_and_act(self, batches: list[Batch], frames: np.ndarray) -> tuple[list[float], list[float], np.ndarray]:
        """Run one update per batch in order, then return greedy actions for ``frames``: one call."""
        self.trainable, self.optimizer_state, losses, mean_qs, greedy = self._update_and_act(
            self.trainable, self.optimizer_state, self.non_trainable, self.target_trainable,
            tuple(tuple(batch) for batch in batches), frames)
        return np.asarray(losses).tolist(), np.asarray(mean_qs).tolist(), np.asarray(greedy)

    def act(self, frames: np.ndarray) -> np.ndarray:
        return np.asarray(self._act(self.trainable, self.non_trainable, frames))

    def sync_target(self) -> None:
        self.target_trainable = list(self.trainable)

    def sync_to_model(self) -> None:
        for variable, value in zip(self.online.trainable_variables, self.trainable, strict=True):
            variable.assign(value)
        for variable, value in zip(self.target.trainable_variables, self.target_trainable, strict=True):
            variable.assign(value)
        for variable, value in zip(self.optimizer.variables, self.optimizer_state, strict=True):
            variable.assign(value)

    def export_model(self):
        self.sync_to_model()
        return float32_copy(self.online, self.dueling, self.layer_norm)

    def state(self) -> dict[str, list[np.ndarray]]:
        self.sync_to_model()
        return learner_arrays(self.online, self.target, self.optimizer)

    def load_state(self, state: dict[str, list[np.ndarray]]) -> None:
        restore_learner_arrays(self.online, self.target, self.optimizer, state)
        self.trainable = [v.value for v in self.online.trainable_variables]
        self.non_trainable = [v.value for v in self.online.non_trainable_variables]
        self.target_trainable = [v.value for v in self.target.trainable_variables]
        self.optimizer_state = [v.value for v in self.optimizer.variables]
