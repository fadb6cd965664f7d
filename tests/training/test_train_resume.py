"""``breakout-dqn train`` resumed (after a SIGKILL, without a durable replay, as a batch job), and stopped.

Apart from ``test_train_cli.py`` so that the two files run on different pytest-xdist workers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.training.cli_helpers import TINY, digest, last_line, newest_step, one_error_line, run_cli


@pytest.mark.slow  # trains
def test_resume_after_sigkill_continues_from_the_checkpoint_with_its_exact_replay(tmp_path: Path) -> None:
    # Random actions throughout: the games, hence the replay, are a function of the seed alone, so an
    # uninterrupted run to the same step shows what the replay held at the checkpoint.
    flags = [*TINY, "--random-steps", "100000", "--replay-capacity", "400", "--checkpoint-every", "200"]
    flags[flags.index("--steps") + 1] = "100000"
    out = tmp_path / "killed"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen([sys.executable, "-m", "breakout_dqn.cli", "train", "--out", str(out), *flags],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 240
    try:  # the ring (100 slots of 4 games) has wrapped twice by step 800
        while time.time() < deadline and not list(out.glob("checkpoints/checkpoint-000000000800.npz")):
            time.sleep(0.1)
        time.sleep(1.0)  # and goes on writing past the checkpoint
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    saved_step = newest_step(out)
    assert saved_step >= 800

    twin = tmp_path / "uninterrupted"
    result = run_cli("train", "--out", str(twin), *flags[:flags.index("--steps")], "--steps", str(saved_step),
                     *flags[flags.index("--steps") + 2:])
    assert result.returncode == 0, result.stderr[-3000:]
    from breakout_dqn.training.replay_storage import FIELDS, DurableStorage

    slots = 400 // 4
    cursor = saved_step // 4
    restored = DurableStorage.open(out / "replay", 4, slots, cursor)
    expected = DurableStorage.open(twin / "replay", 4, slots, cursor)
    for name in FIELDS:
        np.testing.assert_array_equal(restored.arrays[name], expected.arrays[name], err_msg=name)
    np.testing.assert_array_equal(restored.times, expected.times)
    restored.close()
    expected.close()

    result = run_cli("train", "--out", str(out), "--resume", "--steps", str(saved_step + 200))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed from checkpoint-{saved_step:012d}.npz at step {saved_step:,}" in result.stdout
    assert f"replay restored: {400:,} transitions" in result.stdout
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    updates = {r["step"]: r["updates"] for r in records if r["type"] == "train"}
    # Learning goes on at once (no refill): one update per 4 agent steps from the resumed step.
    assert updates[saved_step + 100] == updates[saved_step] + 100 // 4
    assert updates[saved_step + 200] == updates[saved_step] + 200 // 4
    evaluation = json.loads((out / "eval.json").read_text())
    assert evaluation["train_agent_steps"] == saved_step + 200


@pytest.mark.slow  # trains
def test_resume_without_a_durable_replay_refills_before_learning(tmp_path: Path) -> None:
    out = tmp_path / "memory"
    flags = [*TINY, "--no-durable-replay"]
    result = run_cli("train", "--out", str(out), *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (out / "replay").exists()
    result = run_cli("train", "--out", str(out), "--resume", "--steps", "800")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "replay restored" not in result.stdout
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    updates = {r["step"]: r["updates"] for r in records if r["type"] == "train"}
    assert updates[600] == updates[400]  # --learning-starts 200 steps of refill first
    assert updates[800] == updates[600] + 200 // 4


@pytest.mark.slow  # trains
def test_auto_resume_starts_continues_finishes_and_refuses_another_run(tmp_path: Path) -> None:
    out = tmp_path / "job"
    job = ["train", "--out", str(out), "--auto-resume", *TINY]  # what a restarted batch job runs again
    first = run_cli(*job)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "resumed from" not in first.stdout
    model = digest(out / "model.keras")
    again = run_cli(*job)  # the job restarted after it had finished
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already finished its 400 steps" in again.stderr
    assert json.loads(last_line(again.stdout))["train_agent_steps"] == 400
    assert digest(out / "model.keras") == model
    longer = [*job]
    longer[longer.index("--steps") + 1] = "600"
    extended = run_cli(*longer)
    assert extended.returncode == 0, extended.stderr[-3000:]
    assert "resumed from checkpoint-000000000400.npz" in extended.stdout
    other = [*job, "--seed", "3"]
    refused = run_cli(*other)
    assert refused.returncode == 2
    assert "holds another run (seed: 0 here, 3 asked)" in one_error_line(refused.stderr)



@pytest.mark.slow  # plays 180 vector steps of random games
def test_games_held_for_their_cohort_when_a_piece_stops_are_recorded(tmp_path: Path) -> None:
    # A piece's games are held until each game slot has ended its first one (training/episodes.py). This
    # piece (seed 0) stops after 3 of its 4 slots ended a game: the 3 must still be recorded, before the
    # checkpoint that counts them.
    out = tmp_path / "games"
    result = run_cli("train", "--out", str(out), "--steps", "720", "--num-envs", "4", "--random-steps", "720",
                     "--learning-starts", "720", "--replay-capacity", "4000", "--eval-every", "0",
                     "--final-eval-episodes", "1", "--checkpoint-every", "2400", "--no-progress", "--no-xla")
    assert result.returncode == 0, result.stderr[-3000:]
    from breakout_dqn.training.checkpoint import load_checkpoint

    _, state = load_checkpoint(out / "checkpoints" / "checkpoint-000000000720.npz")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    games = [r for r in records if r["type"] == "game"]
    assert 0 < len(games) == state["games"] < 4  # some slots ended a game, not all: a cohort still held
    assert [r["step"] for r in games] == [720] * len(games)  # recorded at the piece's last step
    assert [r["score"] for r in games] == state["recent_scores"]
