"""Where the replay's arrays live: in memory, or memory-mapped in the run directory (durable).

``DurableStorage`` keeps each array as a ``.npy`` file in ``OUT/replay/`` mapped into memory, so
the ring IS the file: nothing is copied at a checkpoint. Resuming needs the ring exactly as it was
at the checkpoint, but the run goes on writing after it; a rollback journal (``undo.bin``, as
SQLite's) makes that exact:

- before a slot that held a pre-checkpoint transition is overwritten, its old contents are
  appended to the journal (each slot at most once per checkpoint interval: ~56 KB per vector step
  of 8 games, at most the steps since the checkpoint);
- at a checkpoint: flush the maps, write the checkpoint (it records the cursor), then start an
  empty journal whose header names that cursor;
- on open at cursor ``C``: if the journal's header is ``C``, write its entries back (a torn last
  entry is ignored: its slot was not yet touched); the ring then holds exactly the transitions it
  held at ``C``. A per-slot logical time (``times``) is checked afterwards, so a ring that does
  not match its checkpoint (a crash of the machine rather than the process, a deleted or foreign
  checkpoint) is detected and refused instead of being trained on.

Process death (SIGKILL, OOM kill, pod eviction) keeps every write, since the page cache outlives
the process; the disk is reserved up front (``posix_fallocate``) so a full disk is refused at the
start instead of killing the run with SIGBUS later.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from breakout_dqn import contract
from breakout_dqn.errors import UsageError

FRAME_SHAPE = (contract.FRAME_HEIGHT, contract.FRAME_WIDTH)
# name -> (dtype, per-transition shape); "times" is per slot, shared by the envs.
FIELDS: dict[str, tuple[np.dtype, tuple[int, ...]]] = {
    "frames": (np.dtype(np.uint8), FRAME_SHAPE),
    "actions": (np.dtype(np.uint8), ()),
    "rewards": (np.dtype(np.float32), ()),
    "terminals": (np.dtype(bool), ()),
    "starts": (np.dtype(bool), ()),
    "valid": (np.dtype(bool), ()),
}
TRANSITION_BYTES = sum(dtype.itemsize * int(np.prod(shape)) for dtype, shape in FIELDS.values())  # 7,064
TIME_BYTES = 8  # the int64 logical time of each slot (shared by the games) or journal entry
JOURNAL_MAGIC = b"BRKUNDO1"
HEADER_BYTES = 16  # magic + int64 cursor
DISK_HEADROOM_BYTES = 512 * 1024**2


class ReplayStorageError(UsageError):
    """The durable replay cannot be created or does not match its checkpoint; the message says why."""


class MemoryStorage:
    """The arrays in anonymous memory (pages committed as the ring fills); lost when the process ends."""

    durable = False

    def __init__(self, num_envs: int, slots: int):
        self.arrays = {name: np.zeros((num_envs, slots, *shape), dtype=dtype)
                       for name, (dtype, shape) in FIELDS.items()}
        self.times = np.full(slots, -1, dtype=np.int64)

    def before_overwrite(self, slot: int, old_time: int) -> None:
        """Nothing to keep."""

    def flush(self) -> None:
        """Nothing to flush."""

    def start_journal(self, cursor: int) -> None:
        """No journal."""

    def close(self) -> None:
        """Nothing to release."""


def storage_bytes(num_envs: int, slots: int) -> int:
    """Memory, or disk and page cache when durable, taken by a ring of ``slots`` per game."""
    return slots * (num_envs * TRANSITION_BYTES + TIME_BYTES)


class DurableStorage:
    """The arrays as memory-mapped ``.npy`` files in ``directory``, with a rollback journal."""

    durable = True

    def __init__(self, directory: Path, num_envs: int, slots: int, mode: str):
        self.directory, self.num_envs, self.slots = Path(directory), num_envs, slots
        self.arrays = {name: self._map(name, dtype, (num_envs, slots, *shape), mode)
                       for name, (dtype, shape) in FIELDS.items()}
        self.times = self._map("times", np.dtype(np.int64), (slots,), mode)
        if mode == "w+":
            self.times[:] = -1
        self._entry_bytes = TIME_BYTES + num_envs * TRANSITION_BYTES
        self._journal: int | None = None
        self._journal_base = 0

    # -- creation and opening ------------------------------------------------------------------
    @classmethod
    def create(cls, directory: Path, num_envs: int, slots: int) -> DurableStorage:
        """A new, empty ring in ``directory`` (refused when the disk lacks room); journal at cursor 0."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        check_fits_on_disk(directory, storage_bytes(num_envs, slots))
        (directory / "layout.json").write_text(json.dumps({"num_envs": num_envs, "slots": slots}) + "\n")
        storage = cls(directory, num_envs, slots, mode="w+")
        storage.start_journal(0)
        return storage

    @classmethod
    def open(cls, directory: Path, num_envs: int, slots: int, cursor: int) -> DurableStorage:
        """The ring as it was when the checkpoint at ``cursor`` was written, or ReplayStorageError."""
        directory = Path(directory)
        try:
            layout = json.loads((directory / "layout.json").read_text())
        except (OSError, ValueError) as error:
            raise ReplayStorageError(f"no readable replay in {directory}: {error}") from None
        if layout != {"num_envs": num_envs, "slots": slots}:
            raise ReplayStorageError(f"the replay in {directory} holds {layout}, this run needs "
                                     f"{{'num_envs': {num_envs}, 'slots': {slots}}}")
        try:
            storage = cls(directory, num_envs, slots, mode="r+")
        except (OSError, ValueError) as error:
            raise ReplayStorageError(f"unreadable replay in {directory}: {error}") from None
        storage._roll_back(cursor)
        storage._check_times(cursor)
        storage.start_journal(cursor)
        return storage

    def _map(self, name: str, dtype: np.dtype, shape: tuple[int, ...], mode: str) -> np.memmap:
        path = self.directory / f"{name}.npy"
        array = np.lib.format.open_memmap(path, mode=mode, dtype=dtype, shape=shape if mode == "w+" else None)
        if mode == "w+":
            with open(path, "r+b") as handle:  # reserve the blocks now: no SIGBUS on a full disk later
                os.posix_fallocate(handle.fileno(), 0, os.path.getsize(path))
        elif array.shape != shape or array.dtype != dtype:
            raise ValueError(f"{path.name} is {array.dtype}{list(array.shape)}, expected {dtype}{list(shape)}")
        return array

    # -- the journal -----------------------------------------------------------------------------
    @property
    def journal_path(self) -> Path:
        return self.directory / "undo.bin"

    def start_journal(self, cursor: int) -> None:
        """An empty journal for the checkpoint at ``cursor`` (call after that checkpoint is written)."""
        if self._journal is not None:
            os.close(self._journal)
        self._journal = os.open(self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        os.write(self._journal, JOURNAL_MAGIC + np.int64(cursor).tobytes())
        os.fsync(self._journal)
        self._journal_base = cursor

    def before_overwrite(self, slot: int, old_time: int) -> None:
        """Journal the slot's contents if they predate the journal's checkpoint."""
        if old_time >= self._journal_base or self._journal is None:
            return  # written since the checkpoint: the checkpoint never held it
        parts = [np.int64(old_time).tobytes()]
        parts += [np.ascontiguousarray(self.arrays[name][:, slot]).tobytes() for name in FIELDS]
        os.write(self._journal, b"".join(parts))

    def _roll_back(self, cursor: int) -> None:
        try:
            data = self.journal_path.read_bytes()
        except FileNotFoundError:
            return
        if len(data) < HEADER_BYTES or data[:8] != JOURNAL_MAGIC:
            raise ReplayStorageError(f"corrupt replay journal {self.journal_path}")
        base = int(np.frombuffer(data[8:16], dtype=np.int64)[0])
        if base != cursor:
            return  # an older checkpoint's journal (the run stopped between checkpoint and reset): nothing to undo
        whole = (len(data) - HEADER_BYTES) // self._entry_bytes  # a torn last entry: its slot was never touched
        for index in range(whole):
            start = HEADER_BYTES + index * self._entry_bytes
            entry = memoryview(data)[start:start + self._entry_bytes]
            old_time = int(np.frombuffer(entry[:8], dtype=np.int64)[0])
            slot, offset = old_time % self.slots, 8
            for name, (dtype, shape) in FIELDS.items():
                size = dtype.itemsize * int(np.prod(shape)) * self.num_envs
                self.arrays[name][:, slot] = np.frombuffer(entry[offset:offset + size], dtype=dtype).reshape(
                    self.num_envs, *shape)
                offset += size
            self.times[slot] = old_time

    def _check_times(self, cursor: int) -> None:
        """Every slot must hold the logical time the checkpoint's cursor implies."""
        slot_indices = np.arange(self.slots)
        newest = cursor - 1
        expected = newest - (newest - slot_indices) % self.slots  # the latest time < cursor at each slot
        expected[expected < 0] = -1  # never written before the checkpoint
        written_later = (self.times != expected) & (expected == -1) & (self.times >= cursor)
        wrong = (self.times != expected) & ~written_later
        if wrong.any():
            raise ReplayStorageError(
                f"the replay in {self.directory} does not match the checkpoint at replay cursor {cursor:,} "
                f"({int(wrong.sum()):,} of {self.slots:,} slots differ): it was written by another checkpoint "
                f"or lost writes in a machine crash")

    # -- checkpoints -----------------------------------------------------------------------------
    def flush(self) -> None:
        """Write the maps' dirty pages to disk (before the checkpoint that names this cursor)."""
        for array in (*self.arrays.values(), self.times):
            array.flush()

    def close(self) -> None:
        if self._journal is not None:
            os.close(self._journal)
            self._journal = None


def check_fits_on_disk(directory: Path, need_bytes: int, headroom_bytes: int = DISK_HEADROOM_BYTES) -> None:
    """Refuse, before writing anything, a ring that would not fit on the disk under ``directory``."""
    free = shutil.disk_usage(directory).free
    if need_bytes + headroom_bytes > free:
        raise ReplayStorageError(
            f"the durable replay needs {need_bytes / 1e9:.2f} GB of disk in {directory} "
            f"(+{headroom_bytes / 1e9:.1f} GB headroom) but only {free / 1e9:.2f} GB is free; "
            f"lower --replay-capacity, free some disk, or pass --no-durable-replay")
