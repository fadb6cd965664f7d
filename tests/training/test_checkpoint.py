"""Checkpoints: a round trip keeps every array and the loop state; old ones are pruned; damage is named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from breakout_dqn.training.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, save_checkpoint


def arrays(seed: int) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {"online": [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)],
            "target": [rng.normal(size=(3, 4)).astype(np.float32)],
            "optimizer": [np.array(17, np.int64), rng.normal(size=(2, 2))]}


def test_round_trip_keeps_arrays_dtypes_and_state(tmp_path: Path) -> None:
    state = {"step": 800, "rng_state": {"bit_generator": "PCG64", "state": {"state": 2**100, "inc": 5}},
             "recent_scores": [1.0, 4.0], "solved_at_step": None}
    path = save_checkpoint(tmp_path, 800, arrays(0), state, keep=2)
    assert path.name == "checkpoint-000000000800.npz"
    loaded, loaded_state = load_checkpoint(path)
    assert loaded_state == state
    for group, values in arrays(0).items():
        assert len(loaded[group]) == len(values)
        for got, want in zip(loaded[group], values, strict=True):
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)


def test_only_the_newest_are_kept_and_damage_is_a_checkpoint_error(tmp_path: Path) -> None:
    for step in (100, 200, 300):
        save_checkpoint(tmp_path, step, arrays(step), {"step": step}, keep=2)
    kept = list_checkpoints(tmp_path)
    assert [path.name for path in kept] == ["checkpoint-000000000200.npz", "checkpoint-000000000300.npz"]
    kept[-1].write_bytes(kept[-1].read_bytes()[:500])
    with pytest.raises(CheckpointError, match="corrupt or unreadable checkpoint"):
        load_checkpoint(kept[-1])
    assert list_checkpoints(tmp_path / "missing") == []
