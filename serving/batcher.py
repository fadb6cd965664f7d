"""Dynamic batching on asyncio: concurrent requests share one forward pass.

Requests (each one or more frame stacks) wait in a queue. One worker task takes the first
request, then every request already queued, then waits up to ``max_delay_s`` for more while
the batch is smaller than the previous one (so sequential callers never wait), up to
``max_batch`` stacks in all. The forward pass runs in a single inference thread (onnxruntime
releases the GIL), so the event loop keeps accepting and queueing requests meanwhile: under
load, batches form by themselves.

The sequential caller (a game loop) takes a fast path instead: a small request (at most
``INLINE_MAX_STACKS`` stacks) that finds the batcher idle, nothing queued, and at least
``inline_gap_s`` since the last forward pass ended runs its pass right on the event loop,
saving the worker wake-up and two thread hand-offs (measured: p50 at concurrency 1 ~0.1 ms
lower, of ~1 ms). Running every idle-time pass on the loop would starve batching (measured:
batches fell from ~12 to ~1.3 stacks at concurrency 64; 10,000 requests from 48 callers took
8,815 passes), because the requests that arrive while a pass blocks the loop then each find
the batcher idle in turn. Two guards keep loaded servers batching: the gap (those requests
arrive right after a pass, a sequential caller's next one does not), and one yield to the
loop before deciding, so that requests that arrived together see each other and all queue.
Cancelled requests (client gone, deadline expired) are dropped before the forward pass.

A request may also be a job (``submit_job``: one PlayGame frame) whose stack the batcher builds
with ``prepare`` right before the forward pass, in the same thread (or inline, for the sequential
caller): the jobs of one batch are prepared together, off the event loop, with no extra hand-off.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

INLINE_MAX_STACKS = 4
"""Largest request the fast path runs on the event loop (~1 ms of the loop at ~0.25 ms a stack)."""

InferFn = Callable[[np.ndarray], np.ndarray]
"""uint8 ``[N,84,84,4]`` -> float32 Q-values ``[N,4]``."""
PrepareFn = Callable[[list[Any]], np.ndarray]
"""Jobs -> their uint8 stacks ``[len(jobs),84,84,4]`` (one each), in order."""
PassFn = Callable[[int, list[float]], None]
"""Told of each forward pass: its stacks, and the seconds each of its requests waited for it."""
SECONDS_PER_STACK_SMOOTHING = 0.2  # weight of the newest pass in the running per-stack time


class BatcherClosed(RuntimeError):
    """The batcher is stopping and accepts no new requests."""


class QueueFull(RuntimeError):
    """Too many stacks are waiting; the caller should answer RESOURCE_EXHAUSTED."""


class DeadlineExpired(RuntimeError):
    """A request's deadline passed while it waited for its forward pass."""


@dataclasses.dataclass
class BatchStats:
    """Counters since start; ``batches`` < ``requests`` means requests were coalesced."""

    requests: int = 0
    stacks: int = 0
    batches: int = 0
    max_batch_stacks: int = 0
    dropped: int = 0  # cancelled or expired before their forward pass
    inline: int = 0  # passes run on the event loop (the sequential-caller fast path)


@dataclasses.dataclass
class _Pending:
    frames: np.ndarray | None  # None: a job, whose one stack ``prepare`` builds
    job: Any
    stacks: int
    future: asyncio.Future[np.ndarray]
    deadline: float | None  # loop.time() seconds
    queued_at: float = 0.0  # loop.time() when it was queued


class Batcher:
    """Coalesces ``submit`` calls into forward passes of at most ``max_batch`` stacks.

    A request larger than ``max_batch`` runs alone. ``max_queue_stacks`` bounds the stacks
    waiting (``QueueFull`` past it). ``inline_gap_s=None`` turns the event-loop fast path off.
    ``prepare`` builds the stacks of ``submit_job`` jobs; ``on_pass`` is told of each forward pass
    (the metrics); ``others_in_flight`` keeps the fast path to a lone caller. ``expected_wait_s``
    estimates how long a new request would wait (load shedding).
    Create and use it on one event loop.
    """

    def __init__(
        self,
        infer: InferFn,
        *,
        max_batch: int,
        max_delay_s: float,
        inline_gap_s: float | None,
        prepare: PrepareFn | None = None,
        max_queue_stacks: int = 8192,
        on_pass: PassFn | None = None,
        others_in_flight: Callable[[], bool] | None = None,
    ):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if max_delay_s < 0:
            raise ValueError("max_delay_s must be >= 0")
        self.infer = infer
        self.prepare = prepare
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.max_queue_stacks = max_queue_stacks
        self.inline_gap_s = inline_gap_s
        self.on_pass = on_pass
        # Whether other requests are being answered (the server's admission count): a request that is not
        # alone never takes the fast path, so a loaded server batches even while its requests trickle in.
        self.others_in_flight = others_in_flight
        self.stats = BatchStats()
        self.seconds_per_stack = 0.0  # running mean of a pass's seconds per stack (batched passes)
        self._running_stacks = 0  # in the pass being computed
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._queued_stacks = 0
        self._closed = False
        self._worker: asyncio.Task[None] | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="inference")
        self._last_batch_stacks = 0
        self._arrived = asyncio.Event()
        self._busy = False  # the worker holds a batch (collecting it or running it)
        self._last_done = float("-inf")  # loop.time() when the last forward pass ended
        self._candidates = 0  # requests deciding whether to take the fast path

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        """Finish every queued request, then stop the worker and the inference thread."""
        self._closed = True
        if self._worker is not None:
            self._queue.put_nowait(None)
            await self._worker
            self._worker = None
        self._executor.shutdown(wait=True)

    async def submit(self, frames: np.ndarray, deadline: float | None = None) -> np.ndarray:
        """Q-values ``[N,4]`` for ``frames`` ``[N,84,84,4]`` once its batch has run."""
        return await self._submit(frames, None, len(frames), deadline)

    async def submit_job(self, job: Any, deadline: float | None = None) -> np.ndarray:
        """Q-values ``[1,4]`` for the one stack ``prepare([..., job, ...])`` builds before the forward pass."""
        if self.prepare is None:
            raise RuntimeError("this batcher has no prepare function for jobs")
        return await self._submit(None, job, 1, deadline)

    async def _submit(self, frames: np.ndarray | None, job: Any, stacks: int, deadline: float | None) -> np.ndarray:
        if self._closed:
            raise BatcherClosed("the server is shutting down")
        if self._queued_stacks + stacks > self.max_queue_stacks:
            raise QueueFull(f"{self._queued_stacks} stacks are already queued (limit {self.max_queue_stacks})")
        loop = asyncio.get_running_loop()
        if self._may_run_inline(stacks, loop):
            # Let every request that has already arrived reach this point before deciding: one
            # that came with us (they arrive together after a pass that blocked the loop) makes
            # us all take the queue, where they batch.
            self._candidates += 1
            try:
                await asyncio.sleep(0)
            finally:
                self._candidates -= 1
            if not self._candidates and self._may_run_inline(stacks, loop):
                return self._forward_inline(_Pending(frames, job, stacks, loop.create_future(), deadline), loop)
        pending = _Pending(frames, job, stacks, loop.create_future(), deadline, loop.time())
        self._queued_stacks += stacks
        self._queue.put_nowait(pending)
        self._arrived.set()
        return await pending.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            if first is None:
                return
            self._busy = True
            try:
                batch, stopping = await self._collect(first, loop)
                await self._forward(batch, loop)
            finally:
                self._busy = False
                self._last_done = loop.time()
            if stopping:
                return

    def expected_wait_s(self, stacks: int) -> float:
        """Seconds a request of ``stacks`` stacks queued now would wait for its pass: the stacks ahead of it
        times the running per-stack time (0 when the batcher is idle)."""
        if not self._busy and self._queue.empty():
            return 0.0
        return (self._queued_stacks + self._running_stacks) * self.seconds_per_stack

    def _may_run_inline(self, stacks: int, loop: asyncio.AbstractEventLoop) -> bool:
        return (
            self.inline_gap_s is not None
            and not self._busy
            and self._queue.empty()
            and stacks <= INLINE_MAX_STACKS
            and loop.time() - self._last_done >= self.inline_gap_s
            and not (self.others_in_flight is not None and self.others_in_flight())
        )

    def _forward_inline(self, pending: _Pending, loop: asyncio.AbstractEventLoop) -> np.ndarray:
        """The sequential caller's pass, on the event loop (see the module docstring)."""
        try:
            q_values = self._compute([pending])
        finally:
            self._last_done = loop.time()
        self._last_batch_stacks = pending.stacks
        self.stats.inline += 1
        self._count(1, pending.stacks)
        if self.on_pass is not None:
            self.on_pass(pending.stacks, [0.0])
        return q_values

    def _compute(self, batch: list[_Pending]) -> np.ndarray:
        """The batch's Q-values: its jobs' stacks built first (one ``prepare`` call), then one forward pass."""
        jobs = [pending.job for pending in batch if pending.frames is None]
        built = self.prepare(jobs) if jobs and self.prepare is not None else None
        if built is not None and len(jobs) == len(batch):
            return self.infer(built)
        pieces, used = [], 0
        for pending in batch:
            if pending.frames is None:
                assert built is not None
                pieces.append(built[used:used + 1])
                used += 1
            else:
                pieces.append(pending.frames)
        return self.infer(pieces[0] if len(pieces) == 1 else np.concatenate(pieces))

    def _timed(self, stacks: int, seconds: float, waits_s: list[float]) -> None:
        """Count a worker pass, fold its time into ``seconds_per_stack``, tell ``on_pass``."""
        self._count(len(waits_s), stacks)
        per_stack = seconds / stacks
        smoothing = SECONDS_PER_STACK_SMOOTHING if self.seconds_per_stack else 1.0
        self.seconds_per_stack += smoothing * (per_stack - self.seconds_per_stack)
        if self.on_pass is not None:
            self.on_pass(stacks, waits_s)

    def _count(self, requests: int, stacks: int) -> None:
        self.stats.batches += 1
        self.stats.requests += requests
        self.stats.stacks += stacks
        self.stats.max_batch_stacks = max(self.stats.max_batch_stacks, stacks)

    async def _collect(self, first: _Pending, loop: asyncio.AbstractEventLoop) -> tuple[list[_Pending], bool]:
        """``first`` plus what is queued, then (up to ``max_delay_s``) as many as the last batch had.

        Sequential callers never wait (their last batch was one request), and neither does a
        batch that already holds every caller of a closed loop.
        """
        batch, stacks = [first], first.stacks
        self._queued_stacks -= stacks
        wanted = min(self.max_batch, self._last_batch_stacks)
        deadline = loop.time() + self.max_delay_s
        while stacks < self.max_batch:
            if self._queue.empty():
                remaining = deadline - loop.time()
                if stacks >= wanted or remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    break
                continue
            item = self._queue.get_nowait()
            if item is None:
                return batch, True
            if stacks + item.stacks > self.max_batch:
                self._requeue_front(item)
                break
            batch.append(item)
            stacks += item.stacks
            self._queued_stacks -= item.stacks
        self._last_batch_stacks = stacks
        return batch, False

    def _requeue_front(self, item: _Pending) -> None:
        """Put back an item that did not fit; it opens the next batch."""
        rest: list[_Pending | None] = [item]
        while not self._queue.empty():
            rest.append(self._queue.get_nowait())
        for pending in rest:
            self._queue.put_nowait(pending)

    async def _forward(self, batch: list[_Pending], loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        live = []
        for pending in batch:
            if pending.future.done():  # cancelled: the client went away or its deadline expired
                self.stats.dropped += 1
            elif pending.deadline is not None and pending.deadline <= now:
                self.stats.dropped += 1
                pending.future.set_exception(DeadlineExpired("the deadline expired before the forward pass"))
            else:
                live.append(pending)
        if not live:
            return
        stacks = sum(pending.stacks for pending in live)
        self._running_stacks = stacks
        try:
            q_values = await loop.run_in_executor(self._executor, self._compute, live)
        except Exception as error:  # one bad batch must not kill the worker
            for pending in live:
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
        finally:
            self._running_stacks = 0
        self._timed(stacks, loop.time() - now, [now - pending.queued_at for pending in live])
        start = 0
        for pending in live:
            end = start + pending.stacks
            if not pending.future.done():
                pending.future.set_result(q_values[start:end])
            start = end
