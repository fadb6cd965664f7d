"""Replay sampling on a worker thread, overlapped with the compiled act/update calls.

TensorFlow and JAX release the GIL while a compiled step runs, so a batch for the next update
can be gathered meanwhile (~1.3 ms of numpy per batch of 32 in the training loop). The loop
calls ``settle()`` before it mutates the replay, so a sample never reads a slot being written.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from training.replay import Batch, ReplayBuffer


class PrefetchSampler:
    """At most one batch in flight; batches come out in the order the RNG drew them."""

    def __init__(self, replay: ReplayBuffer, batch_size: int, rng: np.random.Generator):
        self.replay, self.batch_size, self.rng = replay, batch_size, rng
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replay-sampler")
        self._pending: Future[Batch] | None = None

    def prefetch(self) -> None:
        """Start sampling the next batch in the background (no-op if one is already pending)."""
        if self._pending is None:
            self._pending = self._pool.submit(self.replay.sample, self.batch_size, self.rng)

    def next(self, prefetch_another: bool) -> Batch:
        """The prefetched batch (or a fresh one); optionally start on the following one."""
        if self._pending is not None:
            batch, self._pending = self._pending.result(), None
        else:
            batch = self.replay.sample(self.batch_size, self.rng)
        if prefetch_another:
            self.prefetch()
        return batch

    def settle(self) -> None:
        """Wait for a pending sample to finish; call before ``replay.add``. It stays queued."""
        if self._pending is not None:
            self._pending.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
