"""The PQN loop (Gallici et al. 2024): no replay, no target network, many games at once.

Each iteration plays a rollout of ``rollout_steps`` vector steps of ``num_envs`` games with the
current network (epsilon-greedy), computes Q(lambda) targets from the Q-values recorded while
acting, and trains on the rollout for ``epochs`` passes of ``minibatches`` shuffled minibatches.
Checkpoints fall between rollouts.
"""

from __future__ import annotations

import time

import numpy as np

from breakout_dqn import contract
from breakout_dqn.training.config import TrainConfig
from breakout_dqn.training.session import RunSession, crossed, epsilon_at, generator


def preflight(config: TrainConfig) -> None:
    """Nothing to check before the run: the rollout takes ~28 KB per transition (115 MB at 128 x 32)."""


def _lap(seconds: dict[str, float], phase: str, since: float) -> float:
    now = time.perf_counter()
    seconds[phase] += now - since
    return now


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


class Rollout:
    """One rollout's arrays, ``[T, N, ...]``, reused from rollout to rollout."""

    def __init__(self, steps: int, num_envs: int):
        self.frames = np.empty((steps, num_envs, *contract.STACK_SHAPE), dtype=np.uint8)
        self.actions = np.empty((steps, num_envs), dtype=np.int32)
        self.rewards = np.empty((steps, num_envs), dtype=np.float32)
        self.terminals = np.empty((steps, num_envs), dtype=np.float32)
        self.real = np.empty((steps, num_envs), dtype=np.float32)
        self.next_values = np.empty((steps, num_envs), dtype=np.float32)


def run(session: RunSession) -> None:
    """Train until ``--steps`` (or a stop signal, or "solved"); the final checkpoint included."""
    config, state, learner, games = session.config, session.state, session.learner, session.games
    minibatch_rng = generator(config.seed + 1, state.sample_rng_state)
    rollout = Rollout(config.rollout_steps, config.num_envs)

    def checkpoint() -> None:
        state.sample_rng_state = minibatch_rng.bit_generator.state
        session.save_checkpoint()

    seconds = {"rollout": 0.0, "targets": 0.0, "training": 0.0}  # since the last train record
    try:
        observations = games.reset(seed=config.seed + state.step)
        while session.running:
            start, clock = state.step, time.perf_counter()
            stacks = contract.channels_last(observations)
            greedy, _ = learner.act_with_values(stacks)  # with the network the last rollout trained
            for t in range(config.rollout_steps):
                rollout.frames[t] = stacks
                result = games.step(session.epsilon_greedy(greedy, epsilon_at(config, state.step)))
                session.record(result, state.step)
                rollout.actions[t], rollout.rewards[t] = result.actions, np.sign(result.rewards)
                rollout.terminals[t], rollout.real[t] = result.terminal, result.real
                observations, state.step = result.observations, state.step + config.num_envs
                stacks = contract.channels_last(observations)
                greedy, rollout.next_values[t] = learner.act_with_values(stacks)
            clock = _lap(seconds, "rollout", clock)
            targets = q_lambda_targets(rollout.rewards, rollout.terminals, rollout.next_values, config.gamma,
                                       config.q_lambda)
            clock = _lap(seconds, "targets", clock)
            losses, mean_qs = learner.train_rollout(
                rollout.frames.reshape(-1, *contract.STACK_SHAPE), rollout.actions.reshape(-1),
                targets.reshape(-1), rollout.real.reshape(-1), minibatch_rng)
            _lap(seconds, "training", clock)
            session.meter.add(losses, mean_qs)
            state.updates += len(losses)
            timing = {f"seconds_{name}": round(value, 3) for name, value in seconds.items()}
            if crossed(start, state.step, config.log_every):
                seconds = dict.fromkeys(seconds, 0.0)
            if session.periodic(start, epsilon_at(config, state.step), checkpoint, **timing):
                break
        session.release_games()
        checkpoint()
    finally:
        session.close()
