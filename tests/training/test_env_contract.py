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


class ScriptedEnv:
    """A two-game vector env whose steps are scripted: (rewards, terminated, truncated, lives)."""

    num_envs = 2

    def __init__(self, script: list[tuple[list[float], list[bool], list[bool], list[int]]]):
        self.script, self.sent = script, []

    def reset(self, seed=None):
        return np.zeros((2, 4, 84, 84), np.uint8), {"lives": np.array([5, 5]), "episode_frame_number": np.zeros(2)}

    def step(self, actions):
        self.sent.append(actions.tolist())
        rewards, terminated, truncated, lives = self.script[len(self.sent) - 1]
        info = {"lives": np.array(lives), "episode_frame_number": np.full(2, 4 * len(self.sent))}
        return (np.full((2, 4, 84, 84), len(self.sent), np.uint8), np.array(rewards), np.array(terminated),
                np.array(truncated), info)

    def close(self):
        pass


def test_the_stepper_presses_fire_after_a_lost_life_and_marks_the_autoreset_step() -> None:
    env = ScriptedEnv([
        ([1.0, 0.0], [True, False], [False, False], [4, 5]),  # env 0 loses a life (life_loss_info)
        ([0.0, 4.0], [False, True], [False, False], [4, 0]),  # env 1 loses its last life: game over
        ([7.0, 9.0], [False, False], [False, False], [4, 5]),  # env 1's autoreset step (action ignored)
        ([0.0, 1.0], [False, False], [False, True], [4, 5]),  # env 1 is cut at the frame cap
    ])
    games = atari.GameStepper(env)
    games.reset(seed=0)
    steps = [games.step(np.array([3, 3])) for _ in range(4)]
    assert env.sent == [[3, 3], [1, 3], [3, 3], [3, 3]]  # FIRE right after env 0's lost life, once
    assert [s.real.tolist() for s in steps] == [[True, True], [True, True], [True, False], [True, True]]
    assert [s.terminal.tolist() for s in steps] == [[True, False], [False, True], [False, False], [False, True]]
    assert [s.game_over.tolist() for s in steps] == [[False, False], [False, True], [False, False], [False, True]]
    assert [s.state_opens_game.tolist() for s in steps] == [[True, True], [False, False], [False, False],
                                                             [False, True]]
    assert steps[2].rewards.tolist() == [7.0, 0.0]  # nothing scores on the autoreset step
    assert steps[3].truncated.tolist() == [False, True]

    from breakout_dqn.training.episodes import EpisodeStats

    stats = EpisodeStats(2)
    finished = [stats.record(step) for step in steps]
    assert finished == [[], [], [], []]  # held until env 0 ends its first game (tests/training/test_episodes.py)
    assert stats.release() == [(1.0, 16), (4.0, 8)]  # (raw score, frames): env 1's second game, then its first
    assert list(stats.recent_life_rewards) == [1.0, 1.0, 1.0]  # clipped reward per ended life
    assert stats.games == 2 and stats.lives == 3 and stats.recent_score == 2.5
