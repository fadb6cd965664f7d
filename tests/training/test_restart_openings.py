"""A restart's games, started together, must not replay each other: the random openings."""

from __future__ import annotations

import numpy as np

from breakout_dqn import atari, contract
from breakout_dqn.training.exploration import RESTART_OPENING_STEPS, OpeningMoves

GAMES, STEPS = 32, 40


def distinct_games(openings: OpeningMoves | None) -> int:
    """Distinct frame stacks after STEPS vector steps of one fixed policy (always FIRE, as a
    near-greedy agent at epsilon 0.001 is) from a reset of all GAMES together."""
    env = atari.make_vector_env(GAMES, life_loss_info=True)
    observations, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    greedy = np.full(GAMES, contract.FIRE_ACTION)
    for _ in range(STEPS):
        explore = openings.take() if openings else np.zeros(GAMES, dtype=bool)
        observations, *_ = env.step(np.where(explore, rng.integers(0, contract.NUM_ACTIONS, GAMES), greedy))
    env.close()
    return len({stack.tobytes() for stack in observations})


def test_games_started_together_differ_only_with_their_openings() -> None:
    without = distinct_games(None)
    assert without <= atari.NATURE_NOOP_MAX + 1 < GAMES  # same no-op start, same game
    with_openings = distinct_games(OpeningMoves(GAMES, np.random.default_rng(1)))
    assert with_openings >= GAMES - 2 and with_openings > without


def test_an_opening_lasts_its_drawn_steps_then_stops() -> None:
    openings = OpeningMoves(1000, np.random.default_rng(0))
    drawn = openings.left.copy()
    assert drawn.min() == 0 and drawn.max() == RESTART_OPENING_STEPS - 1
    taken = np.sum([openings.take() for _ in range(RESTART_OPENING_STEPS + 5)], axis=0)
    np.testing.assert_array_equal(taken, drawn)  # slot i took exactly drawn[i] random actions, first
    assert not openings.take().any()
