"""The durable replay: after a SIGKILL it reopens exactly as its last checkpoint left it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from breakout_dqn.training.replay import ReplayBuffer
from breakout_dqn.training.replay_storage import (
    FIELDS,
    DurableStorage,
    MemoryStorage,
    ReplayStorageError,
    check_fits_on_disk,
    storage_bytes,
)

ENVS, SLOTS, N_STEP, GAMMA = 3, 40, 3, 0.9
ROOT = Path(__file__).resolve().parents[2]


def add_random(replay: ReplayBuffer, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(count):
        replay.add(rng.integers(1, 256, (ENVS, 84, 84), dtype=np.uint8), rng.integers(0, 4, ENVS),
                   rng.choice([0.0, 1.0, 4.0], ENVS), rng.random(ENVS) < 0.1, rng.random(ENVS) < 0.05,
                   rng.random(ENVS) < 0.97)


def checkpoint(replay: ReplayBuffer) -> int:
    """What training does at a checkpoint (the checkpoint file itself records the cursor)."""
    replay.storage.flush()
    replay.storage.start_journal(replay.cursor)
    return replay.cursor


def snapshot(replay: ReplayBuffer) -> dict[str, np.ndarray]:
    return {name: np.array(array) for name, array in replay.storage.arrays.items()}


def durable(directory: Path, cursor: int | None = None) -> ReplayBuffer:
    if cursor is None:
        storage = DurableStorage.create(directory, ENVS, SLOTS)
        return ReplayBuffer(ENVS * SLOTS, ENVS, N_STEP, GAMMA, storage=storage)
    storage = DurableStorage.open(directory, ENVS, SLOTS, cursor)
    return ReplayBuffer(ENVS * SLOTS, ENVS, N_STEP, GAMMA, storage=storage, cursor=cursor)


# Run in a child process: reopen at the checkpoint, write past it (wrapping the ring), and die by SIGKILL.
CHILD = r"""
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from tests.training.test_replay_storage import add_random, durable
replay = durable(Path(sys.argv[2]), int(sys.argv[3]))
add_random(replay, int(sys.argv[4]), seed=99)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("after_checkpoint", [7, 39, 95])  # part of the ring, almost all of it, more than twice
def test_a_killed_writer_leaves_the_replay_exactly_as_checkpointed(tmp_path: Path, after_checkpoint: int) -> None:
    replay = durable(tmp_path)
    add_random(replay, 2 * SLOTS + 13, seed=1)  # wrapped: every slot holds a transition
    cursor = checkpoint(replay)
    expected = snapshot(replay)
    replay.storage.close()
    child = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(tmp_path), str(cursor),
                            str(after_checkpoint)], capture_output=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    touched = np.load(tmp_path / "frames.npy", mmap_mode="r")
    assert not np.array_equal(touched, expected["frames"])  # the child really overwrote slots
    restored = durable(tmp_path, cursor)
    for name in FIELDS:
        np.testing.assert_array_equal(restored.storage.arrays[name], expected[name], err_msg=name)
    # Sampling with the same RNG gives the same transitions as the pre-kill contents held in memory.
    reference = ReplayBuffer(ENVS * SLOTS, ENVS, N_STEP, GAMMA, storage=MemoryStorage(ENVS, SLOTS), cursor=cursor)
    for name in FIELDS:
        reference.storage.arrays[name][:] = expected[name]
    got = restored.sample(64, np.random.default_rng(5))
    want = reference.sample(64, np.random.default_rng(5))
    for got_field, want_field in zip(got, want, strict=True):
        np.testing.assert_array_equal(got_field, want_field)


def test_a_ring_not_yet_full_reopens_at_its_cursor_and_ignores_later_slots(tmp_path: Path) -> None:
    replay = durable(tmp_path)
    add_random(replay, 10, seed=2)
    cursor = checkpoint(replay)
    expected = {name: array[:, :cursor].copy() for name, array in replay.storage.arrays.items()}
    add_random(replay, 12, seed=3)  # past the checkpoint, into empty slots: nothing to journal
    replay.storage.close()
    restored = durable(tmp_path, cursor)
    assert restored.cursor == cursor and len(restored) == cursor * ENVS
    for name in FIELDS:
        np.testing.assert_array_equal(restored.storage.arrays[name][:, :cursor], expected[name])


def test_a_torn_last_journal_entry_is_ignored(tmp_path: Path) -> None:
    replay = durable(tmp_path)
    add_random(replay, SLOTS + 5, seed=4)
    cursor = checkpoint(replay)
    expected = snapshot(replay)
    add_random(replay, 3, seed=5)
    replay.storage.close()
    with open(tmp_path / "undo.bin", "ab") as journal:  # a kill in the middle of writing the next entry
        journal.write(b"\x07" * 1000)
    restored = durable(tmp_path, cursor)
    np.testing.assert_array_equal(restored.storage.arrays["frames"], expected["frames"])


def test_a_replay_that_does_not_match_the_checkpoint_is_refused(tmp_path: Path) -> None:
    replay = durable(tmp_path)
    add_random(replay, SLOTS + 5, seed=6)
    cursor = checkpoint(replay)
    add_random(replay, 4, seed=7)
    checkpoint(replay)  # a newer checkpoint whose file is then lost: the ring is past `cursor` for good
    add_random(replay, 2, seed=8)
    replay.storage.close()
    with pytest.raises(ReplayStorageError, match="does not match the checkpoint"):
        durable(tmp_path, cursor)
    with pytest.raises(ReplayStorageError, match="holds"):
        DurableStorage.open(tmp_path, ENVS + 1, SLOTS, cursor)
    with pytest.raises(ReplayStorageError, match="no readable replay"):
        DurableStorage.open(tmp_path / "missing", ENVS, SLOTS, cursor)


def test_the_disk_is_checked_and_reserved_up_front(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need = storage_bytes(ENVS, SLOTS)
    assert need == SLOTS * (ENVS * (84 * 84 + 1 + 4 + 1 + 1 + 1) + 8)
    durable(tmp_path).storage.close()
    on_disk = sum(os.stat(path).st_blocks * 512 for path in tmp_path.glob("*.npy"))
    assert on_disk >= need  # allocated, not sparse: a full disk cannot kill the run later
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda _path: shutil._ntuple_diskusage(10**12, 10**12 - 10**6, 10**6))
    with pytest.raises(ReplayStorageError, match="needs .* GB of disk"):
        check_fits_on_disk(tmp_path, need)
    with pytest.raises(ReplayStorageError, match="--no-durable-replay"):
        DurableStorage.create(tmp_path / "other", ENVS, SLOTS)
    assert not (tmp_path / "other" / "frames.npy").exists()
