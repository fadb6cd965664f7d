"""The asyncio dynamic batcher on its own: coalescing, routing, limits, cancellation, stop, the inline fast path.

The worker tests turn the fast path off (``inline_gap_s=None``) so that every request goes through the queue.
"""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from breakout_dqn.serving.batcher import Batcher, BatcherClosed, QueueFull


def tagged(count: int, first_tag: int) -> np.ndarray:
    """Stacks whose first pixel is a tag, so each answer can be traced back to its stack."""
    frames = np.zeros((count, 84, 84, 4), np.uint8)
    frames[:, 0, 0, 0] = np.arange(first_tag, first_tag + count)
    return frames


class Recorder:
    """An infer function: Q-values whose row i is (tag_i, 0, 0, 0); records batch sizes."""

    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.batches: list[int] = []

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        self.batches.append(len(frames))
        time.sleep(self.delay_s)
        q_values = np.zeros((len(frames), 4), np.float32)
        q_values[:, 0] = frames[:, 0, 0, 0]
        return q_values


class ThreadRecorder(Recorder):
    """A Recorder that also records which thread ran each forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        self.threads.append(threading.get_ident())
        return super().__call__(frames)


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 30))


def test_concurrent_requests_share_forward_passes_and_get_their_own_rows() -> None:
    infer = Recorder(delay_s=0.01)

    async def scenario():
        batcher = Batcher(infer, inline_gap_s=None, max_batch=16, max_delay_s=0.002)
        batcher.start()
        sizes = [1, 2, 3] * 10
        tags = np.cumsum([0, *sizes[:-1]])
        results = await asyncio.gather(*(batcher.submit(tagged(n, int(t))) for n, t in zip(sizes, tags, strict=True)))
        await batcher.stop()
        return batcher, sizes, tags, results

    batcher, sizes, tags, results = run(scenario())
    for n, t, q_values in zip(sizes, tags, results, strict=True):
        np.testing.assert_array_equal(q_values[:, 0], np.arange(t, t + n))
    assert sum(infer.batches) == sum(sizes) == batcher.stats.stacks
    assert max(infer.batches) <= 16
    assert len(infer.batches) < len(sizes) / 2  # coalesced
    assert batcher.stats.requests == len(sizes) and batcher.stats.batches == len(infer.batches)


def test_a_request_larger_than_max_batch_runs_alone() -> None:
    infer = Recorder()

    async def scenario():
        batcher = Batcher(infer, inline_gap_s=None, max_batch=4, max_delay_s=0.0)
        batcher.start()
        big, small = await asyncio.gather(batcher.submit(tagged(10, 0)), batcher.submit(tagged(1, 10)))
        await batcher.stop()
        return big, small

    big, small = run(scenario())
    np.testing.assert_array_equal(big[:, 0], np.arange(10))
    np.testing.assert_array_equal(small[:, 0], [10])
    assert infer.batches == [10, 1]


class CountedEvent(asyncio.Event):
    """An asyncio.Event that counts how often it is waited for (the batcher's wait for more requests)."""

    waits = 0

    async def wait(self) -> bool:
        self.waits += 1
        return await super().wait()


def test_single_requests_do_not_wait_for_a_batch() -> None:
    """Sequential callers (concurrency 1) never pay the batching delay: the worker never waits for more."""
    infer = Recorder()

    async def scenario():
        batcher = Batcher(infer, inline_gap_s=None, max_batch=64, max_delay_s=30.0)
        arrived = batcher._arrived = CountedEvent()
        batcher.start()
        for i in range(20):
            await batcher.submit(tagged(1, i))
        await batcher.stop()
        return arrived.waits

    assert run(scenario()) == 0
    assert infer.batches == [1] * 20


def test_cancelled_requests_are_dropped_before_the_forward_pass() -> None:
    infer = Recorder(delay_s=0.2)

    async def scenario():
        batcher = Batcher(infer, inline_gap_s=None, max_batch=1, max_delay_s=0.0)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(tagged(1, 0)))
        await asyncio.sleep(0.05)  # the first request is in its forward pass
        doomed = asyncio.ensure_future(batcher.submit(tagged(3, 1)))
        await asyncio.sleep(0.01)
        doomed.cancel()
        await first
        await batcher.stop()
        return batcher

    batcher = run(scenario())
    assert infer.batches == [1]
    assert batcher.stats.dropped == 1


def test_queue_limit_and_stop() -> None:
    infer = Recorder(delay_s=0.1)

    async def scenario():
        batcher = Batcher(infer, inline_gap_s=None, max_batch=2, max_delay_s=0.0, max_queue_stacks=4)
        batcher.start()
        accepted = [asyncio.ensure_future(batcher.submit(tagged(2, 2 * i))) for i in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await batcher.submit(tagged(2, 99))  # 4 stacks queued already
        await batcher.stop()  # finishes the queued requests first
        assert all(f.done() and not f.cancelled() for f in accepted)
        with pytest.raises(BatcherClosed):
            await batcher.submit(tagged(1, 0))
        return [f.result() for f in accepted]

    results = run(scenario())
    np.testing.assert_array_equal(np.concatenate(results)[:, 0], [0, 1, 2, 3])


def test_a_failing_forward_pass_fails_its_requests_only() -> None:
    calls = []

    def infer(frames: np.ndarray) -> np.ndarray:
        calls.append(len(frames))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return np.zeros((len(frames), 4), np.float32)

    async def scenario():
        # fast path on: the first pass runs inline
        batcher = Batcher(infer, max_batch=8, max_delay_s=0.002, inline_gap_s=0.0002)
        batcher.start()
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit(tagged(1, 0))
        result = await batcher.submit(tagged(2, 0))
        await batcher.stop()
        return result

    assert run(scenario()).shape == (2, 4)


def test_a_request_that_does_not_fit_opens_the_next_batch_in_order() -> None:
    infer = Recorder(delay_s=0.05)

    async def scenario():
        batcher = Batcher(infer, inline_gap_s=None, max_batch=4, max_delay_s=0.0)
        batcher.start()
        blocker = asyncio.ensure_future(batcher.submit(tagged(1, 100)))
        await asyncio.sleep(0.01)  # the queue fills while the blocker's forward pass runs
        sizes, tags = [3, 1, 3, 2, 2], [0, 3, 4, 7, 9]
        results = await asyncio.gather(*(batcher.submit(tagged(n, t)) for n, t in zip(sizes, tags, strict=True)))
        await blocker
        await batcher.stop()
        return sizes, tags, results

    sizes, tags, results = run(scenario())
    assert infer.batches == [1, 4, 3, 4]  # [3+1], then 3 (2 more would not fit), then [2+2]
    for n, t, q_values in zip(sizes, tags, results, strict=True):
        np.testing.assert_array_equal(q_values[:, 0], np.arange(t, t + n))


def test_the_queue_delay_gathers_a_batch_as_large_as_the_last_one() -> None:
    """Callers arriving a little apart still share a forward pass; the wait is bounded."""
    infer = Recorder()

    async def scenario():
        batcher = Batcher(infer, inline_gap_s=None, max_batch=8, max_delay_s=0.2)
        batcher.start()
        await asyncio.gather(*(batcher.submit(tagged(1, i)) for i in range(4)))  # one batch of 4

        async def late(i: int, delay: float):
            await asyncio.sleep(delay)
            return await batcher.submit(tagged(1, i))

        start = asyncio.get_running_loop().time()
        await asyncio.gather(*(late(i, 0.02 * i) for i in range(4)))  # arrive 20 ms apart
        gathered = asyncio.get_running_loop().time() - start
        start = asyncio.get_running_loop().time()
        await batcher.submit(tagged(1, 9))  # alone: waits the full (bounded) delay, then runs
        alone = asyncio.get_running_loop().time() - start
        await batcher.stop()
        return gathered, alone

    gathered, alone = run(scenario())
    assert infer.batches == [4, 4, 1]
    assert gathered < 0.2 and 0.15 < alone < 1.0



def test_a_sequential_caller_runs_its_passes_on_the_event_loop() -> None:
    """Nothing queued, nothing running, the last pass long done: no worker, no thread hand-off."""
    infer = ThreadRecorder()

    async def scenario():
        batcher = Batcher(infer, max_batch=8, max_delay_s=0.002, inline_gap_s=0.001)
        batcher.start()
        results = []
        for i in range(5):
            results.append(await batcher.submit(tagged(2, 10 * i)))
            await asyncio.sleep(0.01)  # the caller's turnaround: longer than the gap
        await batcher.stop()
        return batcher, results, threading.get_ident()

    batcher, results, loop_thread = run(scenario())
    assert infer.threads == [loop_thread] * 5
    assert batcher.stats.inline == 5 and batcher.stats.batches == 5 and batcher.stats.stacks == 10
    for i, q_values in enumerate(results):
        np.testing.assert_array_equal(q_values[:, 0], [10 * i, 10 * i + 1])


def test_requests_arriving_right_after_a_pass_are_batched_by_the_worker() -> None:
    """Under load the fast path steps aside: arrivals within the gap queue up and share a pass."""
    infer = ThreadRecorder()

    async def scenario():
        batcher = Batcher(infer, max_batch=8, max_delay_s=0.0, inline_gap_s=0.5)
        batcher.start()
        await batcher.submit(tagged(1, 0))  # idle since forever: inline
        burst = await asyncio.gather(*(batcher.submit(tagged(1, i)) for i in range(1, 6)))
        await asyncio.sleep(0.6)
        await batcher.submit(tagged(1, 9))  # the gap has passed: inline again
        await batcher.stop()
        return batcher, burst, threading.get_ident()

    batcher, burst, loop_thread = run(scenario())
    assert infer.batches == [1, 5, 1]
    assert infer.threads[0] == infer.threads[2] == loop_thread and infer.threads[1] != loop_thread
    assert batcher.stats.inline == 2
    for i, q_values in enumerate(burst, start=1):
        assert q_values[0, 0] == i


def test_jobs_are_prepared_together_in_the_inference_thread_and_batch_with_stacks() -> None:
    """PlayGame frames: one ``prepare`` call per batch, off the event loop, rows routed in order."""
    infer, prepared = Recorder(delay_s=0.01), []

    def prepare(jobs: list[int]) -> np.ndarray:  # a job is a tag: its stack carries it
        prepared.append((list(jobs), threading.get_ident()))
        stacks = np.zeros((len(jobs), 84, 84, 4), np.uint8)
        stacks[:, 0, 0, 0] = jobs
        return stacks

    async def scenario():
        batcher = Batcher(infer, prepare=prepare, inline_gap_s=None, max_batch=16, max_delay_s=0.005)
        batcher.start()
        loop_thread = threading.get_ident()
        blocker = asyncio.ensure_future(batcher.submit(tagged(1, 99)))  # holds the worker while the rest queue
        await asyncio.sleep(0.002)
        answers = await asyncio.gather(batcher.submit_job(10), batcher.submit(tagged(2, 20)), batcher.submit_job(11),
                                       batcher.submit_job(12))
        await blocker
        await batcher.stop()
        return answers, loop_thread

    answers, loop_thread = run(scenario())
    assert [a[:, 0].tolist() for a in answers] == [[10.0], [20.0, 21.0], [11.0], [12.0]]
    assert [jobs for jobs, _ in prepared] == [[10, 11, 12]]  # the three jobs of one batch, in one call
    assert all(thread != loop_thread for _, thread in prepared)
    assert infer.batches == [1, 5]


def test_each_pass_is_reported_and_the_wait_ahead_estimated_from_the_stacks_queued() -> None:
    """What the metrics and load shedding read: (stacks, waits) per pass; stacks ahead x seconds per stack."""
    infer = Recorder(delay_s=0.05)
    passes: list[tuple[int, int]] = []

    async def scenario():
        batcher = Batcher(infer, inline_gap_s=None, max_batch=2, max_delay_s=0.0,
                          on_pass=lambda stacks, waits: passes.append((stacks, len(waits))))
        batcher.start()
        idle = batcher.expected_wait_s(1)
        await batcher.submit(tagged(2, 0))  # one pass of 2 stacks: ~0.025 s a stack
        learned = batcher.seconds_per_stack
        pending = [asyncio.ensure_future(batcher.submit(tagged(1, i))) for i in range(6)]
        while batcher._running_stacks == 0:  # the next pass (2 stacks) has started; 4 wait
            await asyncio.sleep(0.001)
        ahead = batcher.expected_wait_s(1)
        await asyncio.gather(*pending)
        await batcher.stop()
        return idle, learned, ahead

    idle, learned, ahead = run(scenario())
    assert idle == 0.0 and learned >= 0.05 / 2
    assert ahead == pytest.approx(6 * learned)
    assert passes == [(2, 1), (2, 2), (2, 2), (2, 2)]
