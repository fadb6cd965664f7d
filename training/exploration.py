"""Exploration while training: the epsilon schedule, and epsilon-greedy with a restart's random openings."""

from __future__ import annotations

import numpy as np

from breakout_dqn import atari, contract
from breakout_dqn.training.config import TrainConfig

# A piece's games all start together, from at most noop_max + 1 distinct no-op starts, and Breakout
# without sticky actions is deterministic: at a low epsilon, games that draw the same start play the
# same game. So each game slot's first game after a (re)start opens with 0 to RESTART_OPENING_STEPS - 1
# uniformly random actions, drawn per slot (docs/algorithms/pqn.md, "Resuming").
RESTART_OPENING_STEPS = 30


# The settings epsilon_at reads. Runs that differ in one play other training games (the ablation rule
# does not compare their training curves: training/ablation.py).
SCHEDULE_SETTINGS = frozenset({"epsilon_start", "epsilon_end", "epsilon_decay_steps"})


def epsilon_at(config: TrainConfig, step: int) -> float:
    """Linear decay from ``epsilon_start`` at step 0 to ``epsilon_end`` at ``epsilon_decay_steps``."""
    fraction = min(1.0, step / config.epsilon_decay_steps)
    return config.epsilon_start + fraction * (config.epsilon_end - config.epsilon_start)


class OpeningMoves:
    """Which game slots still take a random opening action at this vector step (counts the step)."""

    def __init__(self, num_envs: int, rng: np.random.Generator, steps: int = RESTART_OPENING_STEPS):
        self.left = rng.integers(0, steps, size=num_envs)

    def take(self) -> np.ndarray:
        opening = self.left > 0
        self.left = np.maximum(self.left - 1, 0)
        return opening


class Exploration:
    """Epsilon-greedy over the training games (``atari.explore``), random while a slot's opening lasts."""

    def __init__(self, rng: np.random.Generator, openings: OpeningMoves):
        self.rng, self.openings = rng, openings

    def __call__(self, greedy: np.ndarray, epsilon: float) -> np.ndarray:
        return atari.explore(greedy, epsilon, self.rng, forced=self.openings.take())

    def random(self, num_envs: int) -> np.ndarray:
        """Uniformly random actions ``[num_envs]`` (DQN's ``--random-steps``)."""
        return self.rng.integers(0, contract.NUM_ACTIONS, size=num_envs)
