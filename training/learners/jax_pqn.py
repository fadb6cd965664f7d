"""PQN's learner on Keras' JAX backend: ``pqn_update`` is one minibatch step, compiled by ``jax.jit``.

Same network, optimizer (Keras' own, through ``stateless_apply``), loss and minibatch order as the
TensorFlow learner (``tensorflow_pqn``), and the same checkpoint arrays: a checkpoint written on one
backend resumes on the other (tests/training/test_jax_pqn.py). The rollout goes to the device once;
each step gathers its minibatch there, and the steps are queued without waiting for their losses.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from breakout_dqn.training.config import PQNConfig
from breakout_dqn.training.learners.state import assign_arrays
from breakout_dqn.training.losses import td_loss
from breakout_dqn.training.model import float32_copy
from breakout_dqn.training.rollout import minibatch_rows


def pqn_update(network, optimizer, loss_name: str, trainable, optimizer_state, non_trainable, rollout, rows):
    """One minibatch step: gather, Q(s, a), the masked loss against the Q(lambda) targets, gradient, step.

    ``rollout`` = (frames uint8 ``[T,84,84,4]``, actions int32 ``[T]``, targets float32 ``[T]``,
    weights float32 ``[T]``: 1 for a real transition, 0 for an autoreset slot); ``rows`` int32 ``[B]``
    picks the minibatch. Returns the new trainable weights and optimizer state, the loss and the
    weighted mean Q(s, a) (float32 scalars).
    """
    frames, actions, targets, weights = (jnp.take(array, rows, axis=0) for array in rollout)

    def loss_of(trainable):
        q_values, _ = network.stateless_call(trainable, non_trainable, frames, training=True)
        loss, taken = td_loss(q_values, actions, targets, loss_name, weights)
        return loss, jnp.sum(taken * weights) / jnp.maximum(jnp.sum(weights), 1.0)

    (loss, mean_q), gradients = jax.value_and_grad(loss_of, has_aux=True)(trainable)
    trainable, optimizer_state = optimizer.stateless_apply(optimizer_state, gradients, trainable)
    return trainable, optimizer_state, loss, mean_q


def greedy_with_values(network, trainable, non_trainable, frames):
    """Greedy actions int32 ``[N]`` and ``max_a Q(s, a)`` float32 ``[N]`` for uint8 frames ``[N,84,84,4]``."""
    q_values, _ = network.stateless_call(trainable, non_trainable, frames)
    return jnp.argmax(q_values, axis=1).astype(jnp.int32), jnp.max(q_values, axis=1)


class JaxPQNLearner:
    """The online network's weights and the optimizer's state as jax arrays, on the default device;
    written back to the Keras variables for checkpoints and the saved model."""

    def __init__(self, config: PQNConfig, online, optimizer):
        self.online, self.optimizer, self.config = online, optimizer, config
        optimizer.build(online.trainable_variables)
        self._read_variables()
        self._update = jax.jit(partial(pqn_update, online, optimizer, config.loss))
        self._act = jax.jit(partial(greedy_with_values, online))

    def _read_variables(self) -> None:
        self.trainable = [v.value for v in self.online.trainable_variables]
        self.non_trainable = [v.value for v in self.online.non_trainable_variables]
        self.optimizer_state = [v.value for v in self.optimizer.variables]

    def _write_variables(self) -> None:
        for variables, values in ((self.online.trainable_variables, self.trainable),
                                  (self.online.non_trainable_variables, self.non_trainable),
                                  (self.optimizer.variables, self.optimizer_state)):
            for variable, value in zip(variables, values, strict=True):
                variable.assign(value)

    def act(self, frames: np.ndarray) -> np.ndarray:
        """Greedy actions ``[N]`` int32."""
        return np.asarray(self._act(self.trainable, self.non_trainable, frames)[0])

    def act_with_values(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Greedy actions ``[N]`` int32 and their Q-values ``max_a Q(s, a)`` ``[N]`` float32."""
        greedy, values = self._act(self.trainable, self.non_trainable, frames)
        return np.asarray(greedy), np.asarray(values)

    def train_rollout(self, frames: np.ndarray, actions: np.ndarray, targets: np.ndarray, weights: np.ndarray,
                      rng: np.random.Generator) -> tuple[list[float], list[float]]:
        """``epochs`` passes over the rollout in ``minibatches`` shuffled minibatches; (losses, mean Qs).

        ``frames`` uint8 ``[B,84,84,4]``; ``actions`` int32, ``targets`` and ``weights`` float32 ``[B]``.
        """
        rollout = jax.device_put((frames, actions, targets, weights))  # to the device once per rollout
        losses, mean_qs = [], []
        for rows in minibatch_rows(rng, len(frames), self.config.minibatches, self.config.epochs):
            self.trainable, self.optimizer_state, loss, mean_q = self._update(
                self.trainable, self.optimizer_state, self.non_trainable, rollout, rows)
            losses.append(loss)
            mean_qs.append(mean_q)
        return np.asarray(jnp.stack(losses)).tolist(), np.asarray(jnp.stack(mean_qs)).tolist()

    def state(self) -> dict[str, list[np.ndarray]]:
        """The TensorFlow learner's layout: the online weights, no target, the optimizer's variables."""
        self._write_variables()
        return {"online": [np.asarray(v) for v in self.online.weights], "target": [],
                "optimizer": [np.asarray(v) for v in self.optimizer.variables]}

    def load_state(self, state: dict[str, list[np.ndarray]]) -> None:
        assign_arrays("online", self.online.weights, state["online"])
        assign_arrays("optimizer", self.optimizer.variables, state["optimizer"])
        self._read_variables()

    def export_model(self):
        self._write_variables()
        return float32_copy(self.online, dueling=False, layer_norm=self.config.layer_norm)
