"""The preprocessing contract on real Breakout: shapes, dtypes, channel order, FIRE after a lost life."""

from __future__ import annotations

import numpy as np

from breakout_dqn import atari, contract


def test_observations_follow_the_contract_after_channels_last() -> None:
    env = atari.make_vector_env(2, life_loss_info=True)
    try:
        observations, info = env.reset(seed=0)
        assert observations.shape == (2, 4, 84, 84) and observations.dtype == np.uint8
        stacks = contract.channels_last(observations)
        assert contract.check_frames(stacks).shape == (2, 84, 84, 4)
        # A new game: only the newest frame (the last channel) is non-zero.
        assert not stacks[..., :3].any() and stacks[..., 3].any()
        previous_stacks, previous_frames = stacks, info["frame_number"].copy()
        for _ in range(5):
            observations, _, _, _, info = env.step(np.array([1, 2], dtype=np.int32))
            stacks = contract.channels_last(observations)
            # Oldest first: each step shifts the stack left by one frame.
            np.testing.assert_array_equal(stacks[..., :3], previous_stacks[..., 1:])
            # One agent step is exactly FRAME_SKIP emulator frames.
            np.testing.assert_array_equal(info["frame_number"] - previous_frames, contract.FRAME_SKIP)
            previous_stacks, previous_frames = stacks, info["frame_number"].copy()
    finally:
        env.close()


def test_fire_replaces_the_action_only_right_after_a_lost_life() -> None:
    actions = np.array([0, 2, 3, 0])
    lives = np.array([4, 5, 0, 3])
    previous = np.array([5, 5, 1, 3])
    np.testing.assert_array_equal(atari.fire_after_life_loss(actions, lives, previous), [1, 2, 3, 0])


def test_a_noop_agent_finishes_its_games_because_fire_serves_each_ball() -> None:
    results = atari.play_games(lambda frames: np.zeros(len(frames), np.int64), 2, num_envs=2,
                               max_frames_per_episode=6000)
    assert len(results) == 2
    # Without FIRE after a lost life the ball is never served again and the game hits the cap.
    assert not any(r.truncated for r in results)
    assert all(r.frames < 6000 for r in results)


def test_play_games_plays_each_env_s_quota_and_reports_raw_scores() -> None:
    rng = np.random.default_rng(0)
    results = atari.play_games(lambda f: rng.integers(0, 4, len(f)), 5, num_envs=2, seed=1)
    assert len(results) == 5
    summary = atari.summarize(results)
    assert summary["episodes"] == 5 and summary["min"] >= 0
    assert summary["mean"] == np.mean([r.score for r in results])
