"""What the ``breakout-dqn train`` tests share: a tiny run's flags and running the console script."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

TINY = ["--steps", "400", "--num-envs", "4", "--learning-starts", "200", "--random-steps", "100",
        "--replay-capacity", "4000", "--eval-every", "0", "--final-eval-episodes", "1", "--log-every", "100",
        "--checkpoint-every", "200", "--target-update", "100", "--no-progress",
        "--no-xla"]  # test_learner compiles XLA (so does the smoke run on a CPU without bf16); here: compile time


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "breakout_dqn.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def last_line(stream: str) -> str:
    return stream.strip().splitlines()[-1]


def one_error_line(stream: str) -> str:
    """The single ``error:`` line (TensorFlow's own start-up log lines may precede it)."""
    errors = [line for line in stream.splitlines() if "error:" in line]
    assert len(errors) == 1, stream[-2000:]
    assert errors[0].startswith("breakout-dqn train: error: ")
    return errors[0]


def newest_step(out: Path) -> int:
    saved = sorted((out / "checkpoints").glob("checkpoint-*.npz"))
    assert saved, f"no checkpoint in {out}"
    return int(saved[-1].stem.split("-")[1])
