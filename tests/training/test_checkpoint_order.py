"""A checkpoint is written in the replay's order, reported as saved only when it was, and old ones still load."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest

from breakout_dqn import atari
from breakout_dqn.errors import ExitCode, OperationFailed
from breakout_dqn.training.replay import ReplayBuffer
from breakout_dqn.training.replay_storage import DurableStorage, MemoryStorage
from breakout_dqn.training.session import RunState


class RecordingStorage(MemoryStorage):
    """A memory ring that logs the calls a checkpoint makes."""

    def __init__(self, num_envs: int, slots: int, durable: bool):
        super().__init__(num_envs, slots)
        self.durable, self.calls = durable, []  # type: ignore[misc]

    def flush(self) -> None:
        self.calls.append("flush")

    def start_journal(self, cursor: int) -> None:
        self.calls.append(f"journal@{cursor}")


def fill(replay: ReplayBuffer, steps: int) -> None:
    for _ in range(steps):
        zeros = np.zeros(replay.num_envs)
        replay.add(np.zeros((replay.num_envs, 84, 84), np.uint8), zeros, zeros, zeros.astype(bool),
                   zeros.astype(bool), np.ones(replay.num_envs, bool))


@pytest.mark.parametrize("durable", [True, False])
def test_the_replay_flushes_then_saves_its_cursor_then_starts_its_journal(durable: bool) -> None:
    storage = RecordingStorage(2, 50, durable)
    replay = ReplayBuffer(100, 2, 1, 0.99, storage=storage)
    fill(replay, 7)
    replay.checkpoint(lambda cursor: storage.calls.append(f"save({cursor})"))
    assert storage.calls == ["flush", f"save({7 if durable else None})", "journal@7"]


def test_a_failed_save_leaves_the_journal_of_the_previous_checkpoint(tmp_path: Path) -> None:
    storage = DurableStorage.create(tmp_path / "replay", 2, 50)
    replay = ReplayBuffer(100, 2, 1, 0.99, storage=storage)
    fill(replay, 60)  # wraps: slots of the checkpoint at cursor 0 are overwritten and journaled

    def full_disk(cursor: int | None) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        replay.checkpoint(full_disk)
    journal = (tmp_path / "replay" / "undo.bin").read_bytes()
    assert int(np.frombuffer(journal[8:16], np.int64)[0]) == 0  # still the journal of the last good checkpoint
    replay.close()


def test_an_older_checkpoint_s_flat_state_still_restores(tmp_path: Path) -> None:
    # The keys every checkpoint before the per-algorithm split held (LoopState, one flat dict).
    old = {"step": 3_000_000, "updates": 730_000, "games": 2664, "lives": 13_000, "recent_scores": [300.0],
           "recent_life_rewards": [15.0], "rng_state": {}, "sample_rng_state": {}, "wall_seconds": 1.0,
           "solved_at_step": None, "replay_cursor": 375_000, "learning_starts_at": 80_000}
    state = RunState.from_checkpoint(json.loads(json.dumps(old)))
    assert (state.step, state.updates, state.games, state.recent_scores) == (3_000_000, 730_000, 2664, [300.0])
    from breakout_dqn.training.config import resolve
    from breakout_dqn.training.dqn import DQN

    dqn = DQN.__new__(DQN)  # the restore alone, without building networks
    dqn.config = resolve({})
    dqn.restore(old)
    assert (dqn.replay_cursor, dqn.learning_starts_at) == (375_000, 80_000)


def test_play_games_stops_between_steps_when_asked() -> None:
    asked = []

    def should_stop() -> bool:
        asked.append(1)
        return len(asked) > 3

    with pytest.raises(atari.Stopped):
        atari.play_games(lambda frames: np.zeros(len(frames), np.int64), 2, num_envs=2, should_stop=should_stop)
    assert len(asked) == 4  # three vector steps, then the stop


@pytest.mark.slow  # trains
def test_a_failed_final_checkpoint_after_sigterm_exits_1_with_its_error_not_saved(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    from breakout_dqn import cli
    from breakout_dqn.training import callbacks, session
    from tests.training.cli_helpers import TINY

    original_record = callbacks.TrainRecord.__call__

    def record_then_sigterm(self, run_session, before, record):  # SIGTERM arrives during the run
        run_session.stop.requested.append(signal.SIGTERM)
        return original_record(self, run_session, before, record)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(callbacks.TrainRecord, "__call__", record_then_sigterm)
    monkeypatch.setattr(session, "save_checkpoint", full_disk)
    with pytest.raises(OperationFailed, match=r"checkpoint at step [\d,]+ was not written: No space left on device"):
        from breakout_dqn.training.cli import main as train_main

        train_main(["--out", str(tmp_path / "run"), *TINY])
    code = cli.main(["train", "--out", str(tmp_path / "run2"), *TINY])
    assert code == ExitCode.FAILURE == 1  # not 143: nothing was saved
    assert not list((tmp_path / "run2").glob("checkpoints/*.npz"))
