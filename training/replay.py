"""Frame-once uint8 replay with n-step returns (after Dopamine's circular buffer).

Layout: one ring per env, all advanced together by ``add`` (one slot per vector step). Slot
``t`` of env ``e`` holds the newest 84x84 frame of the state the agent acted on, the action, the
clipped reward, whether that transition ends the bootstrapped return (``terminal``: a lost life,
game over or truncation), whether the state is the first of a game (``start``: the frames
before it are zeros, as the env's own stack has them) and whether the slot is a real transition
(``valid``: false for the autoreset step after a game over, whose action ALE ignores).

The state stack of slot ``t`` is frames ``t-3..t`` with those before the latest ``start``
zeroed; its n-step target uses slots ``t..t+n-1`` up to the first terminal, and bootstraps from
the stack of slot ``t+n``. A slot is sampled only if its stack is not overwritten (``t-3`` is
still in the ring) and its bootstrap slot has been written (``t+n`` before the cursor).

Memory: ``replay_storage.storage_bytes``, 7.06 GB for 1M transitions. The arrays live in memory or,
durable across a resume, memory-mapped in the run directory (``training.replay_storage``), which
owns their layout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from breakout_dqn import contract
from breakout_dqn.errors import UsageError
from breakout_dqn.training.replay_storage import DurableStorage, MemoryStorage, storage_bytes


class Batch(NamedTuple):
    """A sampled batch. Stacks are uint8 ``[B,84,84,4]``; the rest are ``[B]``."""

    states: np.ndarray
    actions: np.ndarray  # int32
    returns: np.ndarray  # float32, discounted n-step sum of clipped rewards
    discounts: np.ndarray  # float32, gamma**n, or 0 where a terminal came first
    dones: np.ndarray  # float32, 1 where the window hit a terminal
    next_states: np.ndarray


def slots_per_env(capacity: int, num_envs: int) -> int:
    return capacity // num_envs


def min_capacity(num_envs: int, n_step: int) -> int:
    """The smallest ``--replay-capacity`` that can hold one sampleable transition per game: a stack's
    frames, its n-step window and its bootstrap slot."""
    return num_envs * (n_step + contract.STACK_SIZE + 1)


def estimate_bytes(capacity: int, num_envs: int) -> int:
    """Memory (or disk, when durable) of a replay of ``capacity`` transitions over ``num_envs`` games."""
    return storage_bytes(num_envs, slots_per_env(capacity, num_envs))


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class ReplayTooLarge(UsageError):
    """A ``--replay-capacity`` that will not fit in the memory available."""


def check_fits_in_memory(capacity: int, num_envs: int, headroom_bytes: int = 2 * 1024**3) -> None:
    """Refuse, before any allocation, a capacity that would not fit in available memory."""
    need = estimate_bytes(capacity, num_envs)
    available = available_memory_bytes()
    if available is not None and need + headroom_bytes > available:
        raise ReplayTooLarge(
            f"--replay-capacity {capacity:,} needs about {need / 1e9:.2f} GB "
            f"(+{headroom_bytes / 1e9:.1f} GB headroom for the learner) but only "
            f"{available / 1e9:.2f} GB is available; lower --replay-capacity"
        )


class ReplayBuffer:
    """Circular replay over ``num_envs`` lockstep rings of ``capacity // num_envs`` slots."""

    def __init__(self, capacity: int, num_envs: int, n_step: int, gamma: float,
                 storage: MemoryStorage | DurableStorage | None = None, cursor: int = 0):
        self.slots = slots_per_env(capacity, num_envs)
        if capacity < min_capacity(num_envs, n_step):
            raise ValueError(f"capacity {capacity} too small for {num_envs} envs and n-step {n_step}")
        self.num_envs = num_envs
        self.n_step = n_step
        self.gamma = gamma
        self.storage = storage if storage is not None else MemoryStorage(num_envs, self.slots)
        arrays = self.storage.arrays
        self.frames, self.actions, self.rewards = arrays["frames"], arrays["actions"], arrays["rewards"]
        self.terminals, self.starts, self.valid = arrays["terminals"], arrays["starts"], arrays["valid"]
        self.cursor = cursor  # slots written per env, ever (logical time)
        self._discount_powers = gamma ** np.arange(n_step, dtype=np.float64)

    def __len__(self) -> int:
        return min(self.cursor, self.slots) * self.num_envs

    def add(
        self,
        newest_frames: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminals: np.ndarray,
        starts: np.ndarray,
        valid: np.ndarray,
    ) -> None:
        """Write one slot per env. ``newest_frames`` is ``[num_envs,84,84]`` uint8."""
        slot = self.cursor % self.slots
        if self.cursor >= self.slots:
            self.storage.before_overwrite(slot, self.cursor - self.slots)
        self.frames[:, slot] = newest_frames
        self.actions[:, slot] = actions
        self.rewards[:, slot] = np.sign(rewards)
        self.terminals[:, slot] = terminals
        self.starts[:, slot] = starts
        self.valid[:, slot] = valid
        self.storage.times[slot] = self.cursor
        self.cursor += 1

    def checkpoint(self, save: Callable[[int | None], None]) -> None:
        """Write a checkpoint the replay can be restored to: ``save(cursor)`` (the cursor to record; None when
        the replay is not durable) runs between flushing the ring and starting the journal of what follows
        (``replay_storage``: the order that makes a resume exact)."""
        self.storage.flush()
        save(self.cursor if self.storage.durable else None)
        self.storage.start_journal(self.cursor)

    def close(self) -> None:
        self.storage.close()

    def cut_episodes(self) -> None:
        """End every env's bootstrapped return at the newest slot: the games restart after a resume,
        so the next slot does not follow it (treated like a truncation, as a time limit is)."""
        if self.cursor:
            self.terminals[:, (self.cursor - 1) % self.slots] = True

    def sampleable_range(self) -> tuple[int, int]:
        """Inclusive logical slot range whose stacks and bootstrap slots are intact."""
        oldest = max(0, self.cursor - self.slots)
        low = oldest + contract.STACK_SIZE - 1 if oldest > 0 else 0
        high = self.cursor - 1 - self.n_step
        return low, high

    def can_sample(self) -> bool:
        low, high = self.sampleable_range()
        return high >= low

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        envs, times = self._sample_indices(batch_size, rng)
        return self.batch_at(envs, times)

    def _sample_indices(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        low, high = self.sampleable_range()
        if high < low:
            raise ValueError("not enough transitions to sample from")
        envs = np.empty(0, dtype=np.int64)
        times = np.empty(0, dtype=np.int64)
        for _ in range(1000):  # rejection of autoreset slots: ~1 in a few hundred
            need = batch_size - len(envs)
            candidate_envs = rng.integers(0, self.num_envs, size=2 * need)
            candidate_times = rng.integers(low, high + 1, size=2 * need)
            keep = self.valid[candidate_envs, candidate_times % self.slots]
            envs = np.concatenate([envs, candidate_envs[keep]])[:batch_size]
            times = np.concatenate([times, candidate_times[keep]])[:batch_size]
            if len(envs) == batch_size:
                return envs, times
        raise ValueError("replay holds no valid transitions")

    def stacks_at(self, envs: np.ndarray, times: np.ndarray) -> np.ndarray:
        """State stacks ``[B,84,84,4]`` (oldest first) of logical slots ``times`` in ``envs``."""
        offsets = np.arange(-(contract.STACK_SIZE - 1), 1)
        window = (times[:, None] + offsets[None, :]) % self.slots  # [B, 4]
        starts = self.starts[envs[:, None], window]
        # Frame j is kept only if no later frame in the window starts a game.
        later_start = np.flip(np.maximum.accumulate(np.flip(starts, axis=1), axis=1), axis=1)
        keep = np.ones_like(starts)
        keep[:, :-1] = ~later_start[:, 1:]
        # Gathering each frame straight into its channel is ~3.5x faster than a gather
        # followed by a channels-last transpose (measured: 0.26 vs 0.92 ms for 32 stacks).
        stacks = np.empty((len(envs), *contract.STACK_SHAPE), dtype=np.uint8)
        for channel in range(contract.STACK_SIZE):
            stacks[..., channel] = self.frames[envs, window[:, channel]]
            stacks[~keep[:, channel], :, :, channel] = 0
        return stacks

    def batch_at(self, envs: np.ndarray, times: np.ndarray) -> Batch:
        """The n-step transitions starting at logical slots ``times`` of ``envs``."""
        steps = np.arange(self.n_step)
        window = (times[:, None] + steps[None, :]) % self.slots  # [B, n]
        rows = envs[:, None]
        rewards = self.rewards[rows, window].astype(np.float64)
        terminals = self.terminals[rows, window]
        # Rewards count up to and including the first terminal of the window.
        before_terminal = np.ones_like(terminals)
        before_terminal[:, 1:] = np.cumsum(terminals, axis=1)[:, :-1] == 0
        returns = (rewards * before_terminal * self._discount_powers).sum(axis=1)
        dones = terminals.any(axis=1)
        discounts = np.where(dones, 0.0, self.gamma**self.n_step)
        return Batch(
            states=self.stacks_at(envs, times),
            actions=self.actions[envs, times % self.slots].astype(np.int32),
            returns=returns.astype(np.float32),
            discounts=discounts.astype(np.float32),
            dones=dones.astype(np.float32),
            next_states=self.stacks_at(envs, times + self.n_step),
        )
