"""Replay sampling against a brute-force reference and against the real env's own stacks."""

from __future__ import annotations

import numpy as np
import pytest

from breakout_dqn import atari, contract
from breakout_dqn.training.replay import (
    ReplayBuffer,
    ReplayTooLarge,
    check_fits_in_memory,
    estimate_bytes,
    min_capacity,
)
from breakout_dqn.training.replay_storage import TRANSITION_BYTES

GAMMA = 0.9


def fill_random(buffer: ReplayBuffer, slots: int, rng: np.random.Generator) -> list[list[dict]]:
    """Add ``slots`` random slots; return the full per-env history (the reference)."""
    history: list[list[dict]] = [[] for _ in range(buffer.num_envs)]
    pending_reset = np.zeros(buffer.num_envs, dtype=bool)
    starting = np.ones(buffer.num_envs, dtype=bool)
    for _ in range(slots):
        frames = rng.integers(1, 256, size=(buffer.num_envs, 84, 84), dtype=np.uint8)
        actions = rng.integers(0, 4, size=buffer.num_envs)
        rewards = rng.choice([0.0, 0.0, 1.0, 4.0, 7.0, -2.0], size=buffer.num_envs)
        valid = ~pending_reset
        terminals = (rng.random(buffer.num_envs) < 0.15) & valid
        game_over = terminals & (rng.random(buffer.num_envs) < 0.5)
        buffer.add(frames, actions, rewards, terminals, starting, valid)
        for env in range(buffer.num_envs):
            history[env].append(dict(frame=frames[env], action=actions[env], reward=rewards[env],
                                     terminal=terminals[env], start=starting[env], valid=valid[env]))
        starting, pending_reset = pending_reset, game_over
    return history


def reference_stack(history: list[dict], t: int) -> np.ndarray:
    stack = np.zeros((84, 84, 4), dtype=np.uint8)
    for channel, k in zip(range(3, -1, -1), range(t, t - 4, -1), strict=True):
        stack[..., channel] = history[k]["frame"]
        if history[k]["start"]:
            break
    return stack


def reference_transition(history: list[dict], t: int, n: int) -> tuple[float, float, float]:
    total, done = 0.0, 0.0
    for k in range(n):
        total += GAMMA**k * np.sign(history[t + k]["reward"])
        if history[t + k]["terminal"]:
            done = 1.0
            break
    return total, (0.0 if done else GAMMA**n), done


@pytest.mark.parametrize("n_step", [1, 3])
@pytest.mark.parametrize("slots_written", [20, 57, 130])  # before, at and well past wrap-around
def test_every_sampleable_slot_matches_brute_force(n_step: int, slots_written: int) -> None:
    rng = np.random.default_rng(slots_written * 10 + n_step)
    buffer = ReplayBuffer(capacity=3 * 40, num_envs=3, n_step=n_step, gamma=GAMMA)
    history = fill_random(buffer, slots_written, rng)
    low, high = buffer.sampleable_range()
    assert high - low > 5
    for env in range(3):
        times = np.array([t for t in range(low, high + 1) if history[env][t]["valid"]])
        envs = np.full(len(times), env)
        batch = buffer.batch_at(envs, times)
        for i, t in enumerate(times):
            np.testing.assert_array_equal(batch.states[i], reference_stack(history[env], t))
            returns, discount, done = reference_transition(history[env], t, n_step)
            assert batch.returns[i] == pytest.approx(returns, rel=1e-6)
            assert batch.discounts[i] == pytest.approx(discount, rel=1e-6)
            assert batch.dones[i] == done
            assert batch.actions[i] == history[env][t]["action"]
            if not done:
                np.testing.assert_array_equal(batch.next_states[i], reference_stack(history[env], t + n_step))


def test_samples_avoid_overwritten_stacks_unwritten_bootstraps_and_autoreset_slots() -> None:
    rng = np.random.default_rng(1)
    buffer = ReplayBuffer(capacity=2 * 30, num_envs=2, n_step=3, gamma=GAMMA)
    history = fill_random(buffer, 95, rng)
    low, high = buffer.sampleable_range()
    assert low == 95 - 30 + 3 and high == 95 - 1 - 3
    envs, times = buffer._sample_indices(4000, rng)
    assert times.min() >= low and times.max() <= high
    assert all(history[e][t]["valid"] for e, t in zip(envs, times, strict=True))
    assert set(np.unique(times)) == {t for t in range(low, high + 1)} - {
        t for t in range(low, high + 1) if not (history[0][t]["valid"] or history[1][t]["valid"])}


def test_stacks_rebuilt_from_replay_equal_the_env_observations() -> None:
    """Frames stored once per slot rebuild exactly the stacks ALE's vector env returned."""
    num_envs, capacity_per_env = 2, 150
    env = atari.make_vector_env(num_envs, life_loss_info=True, max_frames_per_episode=600)
    buffer = ReplayBuffer(capacity_per_env * num_envs, num_envs, n_step=3, gamma=0.99)
    rng = np.random.default_rng(0)
    observed: list[np.ndarray] = []
    valid_log: list[np.ndarray] = []
    observations, info = env.reset(seed=3)
    starting, pending_reset = np.ones(num_envs, bool), np.zeros(num_envs, bool)
    lives = previous = info["lives"]
    games = 0
    for _ in range(400):  # wraps the ring and crosses several game overs (600-frame cap)
        actions = atari.fire_after_life_loss(rng.integers(0, 4, num_envs), lives, previous).astype(np.int32)
        next_observations, rewards, terminated, truncated, info = env.step(actions)
        valid = ~pending_reset
        buffer.add(observations[:, -1], actions, rewards, (terminated | truncated) & valid, starting, valid)
        observed.append(contract.channels_last(observations))
        valid_log.append(valid)
        previous, lives = lives, info["lives"]
        game_over = valid & (truncated | (terminated & (lives == 0)))
        games += int(game_over.sum())
        starting, pending_reset = pending_reset, game_over
        observations = next_observations
    env.close()
    assert games >= 4
    low, high = buffer.sampleable_range()
    times = np.arange(low, high + 1)
    for env_index in range(num_envs):
        keep = np.array([valid_log[t][env_index] for t in times])
        stacks = buffer.stacks_at(np.full(keep.sum(), env_index), times[keep])
        expected = np.stack([observed[t][env_index] for t in times[keep]])
        np.testing.assert_array_equal(stacks, expected)


def test_one_million_transitions_fit_in_about_seven_gigabytes() -> None:
    assert TRANSITION_BYTES == 84 * 84 + 1 + 4 + 1 + 1 + 1  # frame, action, reward, terminal, start, valid
    assert estimate_bytes(1_000_000, 8) == 1_000_000 * TRANSITION_BYTES + 1_000_000 // 8 * 8  # + a time per slot
    assert 7.0e9 < estimate_bytes(1_000_000, 8) < 7.2e9


def test_capacity_beyond_available_memory_is_refused_with_the_estimate() -> None:
    with pytest.raises(ReplayTooLarge, match=r"needs about 7065\.\d\d GB"):
        check_fits_in_memory(1_000_000_000, 8)
    assert not issubclass(ReplayTooLarge, MemoryError)  # a real out-of-memory is not a usage error


def test_the_smallest_replay_the_config_accepts_is_the_smallest_the_buffer_takes() -> None:
    from breakout_dqn.training.config import ConfigError, resolve

    smallest = min_capacity(8, 3)
    ReplayBuffer(smallest, 8, 3, 0.99)
    with pytest.raises(ValueError, match="too small"):
        ReplayBuffer(smallest - 1, 8, 3, 0.99)
    assert resolve({"replay_capacity": smallest, "n_step": 3}).replay_capacity == smallest
    with pytest.raises(ConfigError, match=f"need at least {smallest}"):
        resolve({"replay_capacity": smallest - 1, "n_step": 3})
