"""PQN (Gallici et al. 2024): no replay, no target network, many games at once.

Each iteration of ``learn`` plays a rollout of ``rollout_steps`` vector steps of ``num_envs`` games
with the current network (epsilon-greedy), computes Q(lambda) targets from the Q-values recorded
while acting (``training.rollout``), and trains on the rollout for ``epochs`` passes of
``minibatches`` shuffled minibatches. Checkpoints fall between rollouts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from breakout_dqn import contract
from breakout_dqn.training.callbacks import crossed
from breakout_dqn.training.config import PQNConfig
from breakout_dqn.training.learners import PQNLearner, build_pqn_learner
from breakout_dqn.training.rollout import Rollout, q_lambda_targets
from breakout_dqn.training.session import RunSession, generator

__all__ = ["PQN", "q_lambda_targets"]
MINIBATCH_SEED_OFFSET = 1  # minibatch shuffles draw their own stream, apart from exploration's (seed + 0)


class PQN:
    """The learner, the minibatch generator, and the loop."""

    def __init__(self, config: PQNConfig):
        self.config = config
        self.learner: PQNLearner = build_pqn_learner(config)
        self.minibatch_rng = generator(config.seed + MINIBATCH_SEED_OFFSET, {})


    def restore(self, saved: Mapping[str, Any]) -> None:
        self.minibatch_rng = generator(self.config.seed + MINIBATCH_SEED_OFFSET, saved.get("sample_rng_state", {}))

    def checkpoint(self, write: Callable[[dict[str, Any]], None]) -> None:
        write({"sample_rng_state": self.minibatch_rng.bit_generator.state})

    def learn(self, session: RunSession) -> None:
        """Train until ``--steps``, a stop signal or "solved"; the final checkpoint included."""
        config, state, learner = self.config, session.state, self.learner
        rollout = Rollout(config.rollout_steps, config.num_envs)
        seconds = {"rollout": 0.0, "targets": 0.0, "training": 0.0}  # since the last train record
        observations = session.games.reset(seed=config.seed + state.step)
        while session.running:
            start, clock = state.step, time.perf_counter()
            observations = self.play_rollout(session, rollout, observations)
            clock = _lap(seconds, "rollout", clock)
            targets = q_lambda_targets(rollout.rewards, rollout.terminals, rollout.next_values, config.gamma,
                                       config.q_lambda)
            clock = _lap(seconds, "targets", clock)
            losses, mean_qs = learner.train_rollout(
                rollout.frames.reshape(-1, *contract.STACK_SHAPE), rollout.actions.reshape(-1),
                targets.reshape(-1), rollout.real.reshape(-1), self.minibatch_rng)
            _lap(seconds, "training", clock)
            session.meter.add(losses, mean_qs)
            state.updates += len(losses)
            timing = {f"seconds_{name}": round(value, 3) for name, value in seconds.items()}
            if crossed(start, state.step, config.log_every):
                seconds = dict.fromkeys(seconds, 0.0)
            if session.periodic(start, epsilon=session.epsilon(), **timing):
                break
        session.release_games()
        session.save_checkpoint()

    def play_rollout(self, session: RunSession, rollout: Rollout, observations: np.ndarray) -> np.ndarray:
        """Fill ``rollout`` with ``rollout_steps`` vector steps from ``observations``; return the last ones."""
        state, learner = session.state, self.learner
        stacks = contract.channels_last(observations)
        greedy, _ = learner.act_with_values(stacks)  # with the network the last rollout trained
        for t in range(self.config.rollout_steps):
            rollout.frames[t] = stacks
            result = session.games.step(session.explore(greedy, session.epsilon()))
            session.record(result, state.step)
            rollout.actions[t], rollout.rewards[t] = result.actions, np.sign(result.rewards)
            rollout.terminals[t], rollout.real[t] = result.terminal, result.real
            observations, state.step = result.observations, state.step + self.config.num_envs
            stacks = contract.channels_last(observations)
            greedy, rollout.next_values[t] = learner.act_with_values(stacks)
        return observations


def _lap(seconds: dict[str, float], phase: str, since: float) -> float:
    now = time.perf_counter()
    seconds[phase] += now - since
    return now
