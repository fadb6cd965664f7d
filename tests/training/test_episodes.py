"""The training-game statistics: a new piece's games enter the window without a bias to short games."""

from __future__ import annotations

import numpy as np

from breakout_dqn.atari import StepResult
from breakout_dqn.training.episodes import WINDOW, EpisodeStats


def vector_step(scores: list[float], over: list[bool]) -> StepResult:
    """One vector step in which the games flagged in ``over`` end with the given raw scores."""
    n = len(scores)
    ended = np.array(over)
    return StepResult(observations=np.zeros((n, 4, 84, 84), np.uint8), actions=np.zeros(n, np.int32),
                      rewards=np.array(scores, dtype=np.float64), real=np.ones(n, bool),
                      state_opens_game=np.zeros(n, bool), terminal=ended, game_over=ended,
                      truncated=np.zeros(n, bool), lives=np.zeros(n, np.int64), frames_in_game=np.full(n, 40))


def test_games_are_held_until_every_slot_ended_its_first_then_the_first_ones_enter_last() -> None:
    stats = EpisodeStats(3)
    assert stats.record(vector_step([5, 0, 0], [True, False, False])) == []  # slot 0's first game: held
    assert stats.record(vector_step([6, 0, 0], [True, False, False])) == []  # slot 0's second: held
    assert stats.record(vector_step([0, 30, 0], [False, True, False])) == []
    assert stats.recent_score is None and stats.games == 3
    released = stats.record(vector_step([0, 0, 90], [False, False, True]))  # the last slot's first game
    assert [score for score, _ in released] == [6, 5, 30, 90]  # later games, then the first ones in slot order
    assert list(stats.recent_scores) == [6, 5, 30, 90]
    assert stats.record(vector_step([7, 0, 0], [True, False, False])) == [(7.0, 40)]  # from now on, at once


def test_release_records_what_is_held_when_a_piece_stops() -> None:
    stats = EpisodeStats(2, {"recent_scores": [50.0, 70.0], "games": 2})  # a resumed window
    stats.record(vector_step([4, 0], [True, False]))
    assert stats.recent_score == 60.0  # the checkpoint's window stands while the new cohort plays
    assert stats.release() == [(4.0, 40)]
    assert list(stats.recent_scores) == [50.0, 70.0, 4.0] and stats.games == 3
    assert stats.release() == []
    assert stats.record(vector_step([0, 8], [False, True])) == [(8.0, 40)]


def test_a_restarted_cohort_does_not_drag_the_window_down_to_its_short_games() -> None:
    # 128 games start together, as after a resume; longer games score more (as in Breakout). Scoring
    # games as they end would fill the 100-game window with the 100 shortest of the 128.
    rng = np.random.default_rng(0)
    slots = 128
    lengths = rng.integers(20, 200, size=(slots, 8))
    ends = np.cumsum(lengths, axis=1)  # the step each slot's games end
    stats = EpisodeStats(slots)
    for t in range(1, int(ends[:, 0].max()) + 1):
        over = (ends == t).any(axis=1)
        scores = np.where(over, lengths[np.arange(slots), (ends < t).sum(axis=1).clip(max=7)], 0)
        stats.record(vector_step(scores.astype(float).tolist(), over.tolist()))
    true_mean = lengths.mean()
    shortest_first = np.sort(lengths[:, 0])[:WINDOW].mean()  # what the window held before the fix
    assert len(stats.recent_scores) == WINDOW
    assert abs(stats.recent_score - true_mean) < 12 < true_mean - shortest_first
