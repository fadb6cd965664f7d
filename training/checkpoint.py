"""Checkpoints: learner arrays + run state in one ``.npz``, written atomically.

A checkpoint holds the online and target weights, the optimizer's state, the step and update
counters, the random generators' states, the metric windows and the algorithm's own state (DQN:
the replay's cursor). The replay itself is not in it: a durable replay is its own memory-mapped
files in the run directory (``training.replay_storage``), restored exactly to that cursor; without
one, a resume refills the replay for ``--learning-starts`` agent steps before updates continue. The
games restart from fresh resets seeded by ``seed + step``.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from breakout_dqn.errors import UsageError
from breakout_dqn.files import atomic_write_bytes

PATTERN = re.compile(r"^checkpoint-(\d{12})\.npz$")


class CheckpointError(UsageError):
    """A checkpoint that cannot be read; the message names the file and the reason."""


def checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"checkpoint-{step:012d}.npz"


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if PATTERN.match(p.name))


def save_checkpoint(directory: Path, step: int, arrays: dict[str, list[np.ndarray]], state: dict[str, Any],
                    keep: int) -> Path:
    """Write ``checkpoint-<step>.npz`` atomically, then prune all but the newest ``keep``."""
    payload: dict[str, Any] = {"state_json": np.frombuffer(json.dumps(state).encode(), dtype=np.uint8)}
    for group, values in arrays.items():
        payload[f"{group}_count"] = np.array(len(values))
        for index, value in enumerate(values):
            payload[f"{group}_{index}"] = value
    buffer = io.BytesIO()
    np.savez(buffer, **payload)
    path = checkpoint_path(directory, step)
    atomic_write_bytes(path, buffer.getvalue())
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path) -> tuple[dict[str, list[np.ndarray]], dict[str, Any]]:
    """Read a checkpoint or raise CheckpointError with a one-line reason."""
    try:
        with np.load(path, allow_pickle=False) as data:
            state = json.loads(bytes(data["state_json"]).decode())
            arrays = {}
            for group in ("online", "target", "optimizer"):
                count = int(data[f"{group}_count"])
                arrays[group] = [data[f"{group}_{index}"] for index in range(count)]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError, UnicodeDecodeError) as error:
        raise CheckpointError(f"corrupt or unreadable checkpoint {path}: {type(error).__name__}: {error}") from None
    return arrays, state
