"""Per-game and per-life statistics of the training games (what the curves are drawn from)."""

from __future__ import annotations

import collections
from typing import Any

import numpy as np

from breakout_dqn.atari import StepResult

WINDOW = 100  # games / lives in the running means (the Keras example's 100 episodes)


class EpisodeStats:
    """Raw game scores and clipped per-life rewards, with running means over the last ``WINDOW``.

    ``recent_score`` is the curve this project reports (mean raw score of the last 100 training
    games); ``running_reward`` is the Keras example's "solved" measure (mean clipped reward of the
    last 100 lives).
    """

    def __init__(self, num_envs: int, saved: dict[str, Any] | None = None):
        saved = saved or {}
        self.recent_scores: collections.deque[float] = collections.deque(saved.get("recent_scores", []), WINDOW)
        self.recent_life_rewards: collections.deque[float] = collections.deque(
            saved.get("recent_life_rewards", []), WINDOW)
        self.games = int(saved.get("games", 0))
        self.lives = int(saved.get("lives", 0))
        self._game_scores = np.zeros(num_envs)
        self._life_rewards = np.zeros(num_envs)

    def record(self, step: StepResult) -> list[tuple[float, int]]:
        """Account for one vector step; return (score, frames) of each game it finished."""
        self._game_scores += step.rewards
        self._life_rewards += np.sign(step.rewards)
        for index in np.flatnonzero(step.terminal):
            self.recent_life_rewards.append(float(self._life_rewards[index]))
            self._life_rewards[index] = 0.0
            self.lives += 1
        finished = []
        for index in np.flatnonzero(step.game_over):
            finished.append((float(self._game_scores[index]), int(step.frames_in_game[index])))
            self.recent_scores.append(float(self._game_scores[index]))
            self._game_scores[index] = 0.0
            self.games += 1
        return finished

    @property
    def recent_score(self) -> float | None:
        return float(np.mean(self.recent_scores)) if self.recent_scores else None

    @property
    def running_reward(self) -> float:
        return float(np.mean(self.recent_life_rewards)) if self.recent_life_rewards else 0.0

    def solved(self, threshold: float) -> bool:
        """The Keras example's stop: a full window of lives whose mean clipped reward passes ``threshold``."""
        return bool(threshold) and len(self.recent_life_rewards) == WINDOW and self.running_reward > threshold

    def to_json(self) -> dict[str, Any]:
        return {"recent_scores": list(self.recent_scores), "recent_life_rewards": list(self.recent_life_rewards),
                "games": self.games, "lives": self.lives}
