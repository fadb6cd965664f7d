"""PQN's rollouts in numpy (no backend): the arrays of one rollout, its Q(lambda) targets, its minibatches."""

from __future__ import annotations

import numpy as np

from breakout_dqn import contract


class Rollout:
    """One rollout's arrays, ``[T, N, ...]`` (T agent steps of N games), reused from rollout to rollout."""

    def __init__(self, steps: int, num_envs: int):
        self.frames = np.empty((steps, num_envs, *contract.STACK_SHAPE), dtype=np.uint8)
        self.actions = np.empty((steps, num_envs), dtype=np.int32)
        self.rewards = np.empty((steps, num_envs), dtype=np.float32)  # clipped
        self.terminals = np.empty((steps, num_envs), dtype=np.float32)
        self.real = np.empty((steps, num_envs), dtype=np.float32)  # 0 on ALE's autoreset steps
        self.next_values = np.empty((steps, num_envs), dtype=np.float32)  # max_a Q(s_{t+1}, a) while acting


def q_lambda_targets(rewards: np.ndarray, terminals: np.ndarray, next_values: np.ndarray, gamma: float,
                     q_lambda: float) -> np.ndarray:
    """Q(lambda) targets ``[T,N]`` of a rollout (Peng's form, no cut at exploratory actions, as PQN's).

    ``rewards[t]`` (clipped) and ``terminals[t]`` (the transition ends the bootstrapped return) are
    those of step ``t``; ``next_values[t] = max_a Q(s_{t+1}, a)`` from the acting network. Then
    ``G_t = r_t + gamma (1 - d_t) [(1 - lambda) next_values[t] + lambda G_{t+1}]``, and the last step
    bootstraps from ``next_values[T-1]`` alone.
    """
    targets = np.empty_like(next_values, dtype=np.float32)
    last = len(rewards) - 1
    targets[last] = rewards[last] + gamma * (1.0 - terminals[last]) * next_values[last]
    for t in range(last - 1, -1, -1):
        mixed = (1.0 - q_lambda) * next_values[t] + q_lambda * targets[t + 1]
        targets[t] = rewards[t] + gamma * (1.0 - terminals[t]) * mixed
    return targets


def minibatch_rows(rng: np.random.Generator, transitions: int, minibatches: int, epochs: int) -> np.ndarray:
    """int32 ``[epochs * minibatches, transitions // minibatches]``: each epoch a fresh permutation of the
    rollout cut into minibatches, each minibatch's rows sorted (a cache-friendlier gather of the same rows).
    Every backend's PQN learner draws its minibatches here, so they train on the same stream."""
    size = transitions // minibatches
    rows = []
    for _ in range(epochs):
        order = rng.permutation(transitions)
        rows += [np.sort(order[start:start + size]) for start in range(0, transitions, size)]
    return np.stack(rows).astype(np.int32)
