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
        # The games of a new piece (a start or a resume) all begin together, so the short ones end
        # first: released as they end, they would fill the window with the cohort's short games
        # (a PQN run's mean of 84 read 27 after a resume, over 128 games). Until every slot has
        # ended its first game, ended games are held; then the later ones are released, and the first
        # game of each slot last (in slot order): one game per slot, a sample not biased by length.
        self._first_pending = np.ones(num_envs, dtype=bool)
        self._held_first: dict[int, tuple[float, int]] = {}
        self._held_later: list[tuple[float, int]] = []

    def record(self, step: StepResult) -> list[tuple[float, int]]:
        """Account for one vector step; return (score, frames) of each game it enters into the window."""
        self._game_scores += step.rewards
        self._life_rewards += np.sign(step.rewards)
        for index in np.flatnonzero(step.terminal):
            self.recent_life_rewards.append(float(self._life_rewards[index]))
            self._life_rewards[index] = 0.0
            self.lives += 1
        ended = []
        for index in np.flatnonzero(step.game_over):
            game = (float(self._game_scores[index]), int(step.frames_in_game[index]))
            self._game_scores[index] = 0.0
            self.games += 1
            if self._first_pending[index]:
                self._first_pending[index] = False
                self._held_first[int(index)] = game
            elif self._held_first:
                self._held_later.append(game)
            else:
                ended.append(game)
        released = self.release() if self._held_first and not self._first_pending.any() else []
        self.recent_scores.extend(score for score, _ in ended)
        return released + ended

    def release(self) -> list[tuple[float, int]]:
        """The held games, later ones first, then one per slot in slot order; nothing is held after.

        ``record`` calls it when the first game of every slot has ended; call it when a piece stops
        (before its final checkpoint) so that no ended game goes unrecorded.
        """
        games = self._held_later + [self._held_first[index] for index in sorted(self._held_first)]
        self._held_first, self._held_later = {}, []
        self._first_pending[:] = False
        self.recent_scores.extend(score for score, _ in games)
        return games

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
