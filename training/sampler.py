"""Replay sampling on a worker thread, overlapped with the games stepping.

The loop asks for the batches of the coming updates (``prefetch``) before it steps the games,
takes them (``take``) for the compiled update, and calls ``settle()`` before it mutates the
replay, so a sample never reads a slot being written. One gather serves all the batches of a
vector step (~1.3 ms of numpy per batch of 32 otherwise spent between compiled calls).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from breakout_dqn.training.replay import Batch, ReplayBuffer


class PrefetchSampler:
    """At most one request in flight; batches come out in the order the RNG drew them."""

    def __init__(self, replay: ReplayBuffer, batch_size: int, rng: np.random.Generator):
        self.replay, self.batch_size, self.rng = replay, batch_size, rng
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replay-sampler")
        self._pending: Future[list[Batch]] | None = None

    def _sample(self, count: int) -> list[Batch]:
        combined = self.replay.sample(self.batch_size * count, self.rng)
        return [Batch(*(field[i * self.batch_size:(i + 1) * self.batch_size] for field in combined))
                for i in range(count)]

    def prefetch(self, count: int) -> None:
        """Start sampling ``count`` batches in the background (no-op if a request is pending)."""
        if self._pending is None:
            self._pending = self._pool.submit(self._sample, count)

    def take(self, count: int) -> list[Batch]:
        """The prefetched batches if they are ``count``, else ``count`` freshly sampled ones."""
        if self._pending is not None:
            batches, self._pending = self._pending.result(), None
            if len(batches) == count:
                return batches
        return self._sample(count)

    def settle(self) -> None:
        """Wait for a pending sample to finish; call before ``replay.add``. It stays queued."""
        if self._pending is not None:
            self._pending.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
