"""The prefetching sampler hands out exactly what sampling in the loop's own thread would."""

from __future__ import annotations

import threading

import numpy as np

from breakout_dqn.training.replay import ReplayBuffer
from breakout_dqn.training.sampler import PrefetchSampler


def filled_replay() -> ReplayBuffer:
    rng = np.random.default_rng(0)
    replay = ReplayBuffer(capacity=2 * 50, num_envs=2, n_step=3, gamma=0.9)
    for _ in range(40):
        replay.add(rng.integers(0, 256, (2, 84, 84), dtype=np.uint8), rng.integers(0, 4, 2), rng.random(2),
                   rng.random(2) < 0.1, np.zeros(2, bool), np.ones(2, bool))
    return replay


def test_prefetched_batches_equal_batches_sampled_in_order_with_the_same_rng() -> None:
    replay = filled_replay()
    sampler = PrefetchSampler(replay, batch_size=8, rng=np.random.default_rng(7))
    threads: set[str] = set()
    original = replay.sample

    def recording_sample(*args, **kwargs):
        threads.add(threading.current_thread().name)
        return original(*args, **kwargs)

    replay.sample = recording_sample  # type: ignore[method-assign]
    try:
        sampler.prefetch(3)
        sampler.settle()
        prefetched = sampler.take(3)
        fresh = sampler.take(2)  # nothing pending: sampled on the spot, continuing the same RNG stream
    finally:
        sampler.close()
    assert any(name.startswith("replay-sampler") for name in threads)
    reference_rng = np.random.default_rng(7)
    combined = original(8 * 3, reference_rng)
    assert len(prefetched) == 3 and all(len(batch.states) == 8 for batch in prefetched)
    for index, batch in enumerate(prefetched):
        for got, want in zip(batch, combined, strict=True):
            np.testing.assert_array_equal(got, want[index * 8:(index + 1) * 8])
    following = original(8 * 2, reference_rng)
    np.testing.assert_array_equal(np.concatenate([batch.states for batch in fresh]), following.states)


def test_a_prefetch_of_another_size_is_replaced_by_a_fresh_sample() -> None:
    sampler = PrefetchSampler(filled_replay(), batch_size=4, rng=np.random.default_rng(1))
    try:
        sampler.prefetch(2)
        sampler.prefetch(5)  # a request is pending: this one is ignored
        batches = sampler.take(3)
    finally:
        sampler.close()
    assert len(batches) == 3 and all(len(batch.actions) == 4 for batch in batches)
