"""``breakout-dqn train`` end to end on real Breakout: output layout, resume, and bad input."""

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

from tests.training.cli_helpers import TINY, digest, one_error_line, run_cli


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "out"
    result = run_cli("train", "--out", str(out), *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.slow  # trains
def test_train_writes_the_documented_layout_and_a_model_that_loads(tiny_run: Path) -> None:
    from breakout_dqn.training.model import load_q_network

    for name in ("model.keras", "config.json", "metrics.jsonl", "eval.json"):
        assert (tiny_run / name).is_file(), name
    assert list((tiny_run / "checkpoints").glob("checkpoint-*.npz"))
    assert list((tiny_run / "tb").rglob("events.out.tfevents.*"))
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["steps"] == 400 and config["num_envs"] == 4 and config["preset"] == "default"
    records = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["type"] == "train"]
    assert [r["step"] for r in train_records] == [100, 200, 300, 400]
    assert train_records[-1]["updates"] == (400 - 200) // 4
    assert train_records[-1]["loss"] is not None
    from breakout_dqn.training.compute_path import describe, resolved
    from breakout_dqn.training.config import load_config

    assert (config["precision"], config["xla"]) == ("auto", False)  # as asked: each piece resolves auto
    taken = describe(resolved(load_config(tiny_run / "config.json")))  # this CPU's path for it
    assert {r["compute"] for r in train_records} == {taken}
    evaluation = json.loads((tiny_run / "eval.json").read_text())
    assert evaluation["episodes"] == 1 and evaluation["train_agent_steps"] == 400
    model = load_q_network(tiny_run / "model.keras")
    assert model.output_shape == (None, 4)


@pytest.mark.slow  # trains
def test_a_second_train_into_the_same_out_is_refused_and_overwrites_nothing(tiny_run: Path) -> None:
    before = digest(tiny_run / "model.keras")
    result = run_cli("train", "--out", str(tiny_run), *TINY)
    assert result.returncode == 2
    assert "already holds a run" in one_error_line(result.stderr)
    assert digest(tiny_run / "model.keras") == before


@pytest.mark.slow  # trains
def test_plot_turns_the_run_into_a_png(tiny_run: Path, tmp_path: Path) -> None:
    result = run_cli("plot", str(tiny_run), "--out", str(tmp_path / "curve.png"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("flags, message", [
    (["--steps", "-5"], "--steps must be > 0"),
    (["--gamma", "1.5"], "--gamma must be in (0, 1]"),
    (["--replay-capacity", "10"], "too small"),
    (["--replay-capacity", "100000000000"], "needs about"),
])
def test_bad_settings_fail_with_one_line_and_exit_2(tmp_path: Path, flags: list[str], message: str) -> None:
    result = run_cli("train", "--out", str(tmp_path / "out"), *flags)
    assert result.returncode == 2
    assert message in one_error_line(result.stderr)
    assert not (tmp_path / "out").exists()  # refused before anything was written


@pytest.mark.parametrize("args, message", [
    (["--bogus", "1"], "unrecognized arguments: --bogus"),
    (["--preset", "fastest"], "unknown preset 'fastest'; choose one of"),
    (["--steps", "1.5"], "--steps: not a whole number: '1.5'"),
    (["--preset", "pqn", "--target-update", "100"], "--target-update: not a setting of --algorithm pqn"),
])
def test_a_bad_flag_is_one_error_line_without_the_usage(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli("train", "--out", str(tmp_path / "out"), *args)
    assert result.returncode == 2
    assert message in one_error_line(result.stderr) and "usage:" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_unwritable_out_is_a_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run_cli("train", "--out", str(blocker / "run"), *TINY)
    assert result.returncode == 2
    assert "is not writable" in one_error_line(result.stderr)


@pytest.mark.slow  # trains
def test_corrupt_checkpoint_is_a_one_line_error_and_is_left_untouched(tiny_run: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    latest = sorted((run / "checkpoints").glob("checkpoint-*.npz"))[-1]
    latest.write_bytes(latest.read_bytes()[:1000])
    before, model_before = digest(latest), digest(run / "model.keras")
    result = run_cli("train", "--out", str(run), "--resume", "--steps", "800")
    assert result.returncode == 2
    assert "corrupt or unreadable checkpoint" in one_error_line(result.stderr)
    assert digest(latest) == before and digest(run / "model.keras") == model_before


@pytest.mark.slow  # trains
def test_resume_with_another_architecture_is_a_one_line_error(tiny_run: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    kept = [run / "config.json", run / "model.keras", *sorted((run / "checkpoints").glob("*.npz"))]
    before = [digest(path) for path in kept]
    result = run_cli("train", "--out", str(run), "--resume", "--steps", "800", "--no-dueling")
    assert result.returncode == 2
    assert "does not fit this run's model" in one_error_line(result.stderr)
    assert [digest(path) for path in kept] == before


@pytest.mark.slow  # trains
def test_a_resumed_piece_may_decay_the_learning_rate_of_a_run_trained_at_a_constant_one(
        tiny_run: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "fork"
    shutil.copytree(tiny_run, run)
    result = run_cli("train", "--out", str(run), "--resume", "--steps", "600", "--learning-rate-decay-steps", "600")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run / "checkpoints" / "checkpoint-000000000600.npz").is_file()
    assert json.loads((run / "config.json").read_text())["learning_rate_decay_steps"] == 600


@pytest.mark.slow  # trains
def test_sigterm_writes_a_checkpoint_and_exits_143(tmp_path: Path) -> None:
    out = tmp_path / "terminated"
    flags = [*TINY]
    flags[flags.index("--steps") + 1] = "100000"
    flags[flags.index("--checkpoint-every") + 1] = "50000"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen([sys.executable, "-m", "breakout_dqn.cli", "train", "--out", str(out), *flags],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 240
    while time.time() < deadline and not (out / "metrics.jsonl").exists():
        time.sleep(0.2)
    while time.time() < deadline and '"type": "train"' not in (out / "metrics.jsonl").read_text():
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "checkpoint saved at step" in stderr and "--resume" in stderr
    assert list((out / "checkpoints").glob("checkpoint-*.npz")) and (out / "model.keras").is_file()


def write_metrics(run: Path, steps_per_second: float, scores: list[float]) -> None:
    run.mkdir(parents=True)
    records = [{"type": "train", "step": 1000 * (i + 1), "steps_per_second": steps_per_second} for i in range(4)]
    records += [{"type": "game", "step": 400 * (i + 1), "frames": 1600 * (i + 1), "score": score}
                for i, score in enumerate(scores)]
    records.append({"type": "eval", "step": 4000, "frames": 16000, "mean": 3.0, "std": 1.0})
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")


def test_plot_compares_runs_against_steps_or_hours_beside_published_points(tmp_path: Path) -> None:
    from breakout_dqn.training.metrics import read_metrics
    from breakout_dqn.training.plot import curve

    write_metrics(tmp_path / "fast", 100.0, [1, 3, 5, 7])
    write_metrics(tmp_path / "slow", 10.0, [0, 0, 2, 2])
    records = read_metrics(tmp_path / "fast" / "metrics.jsonl")
    x, rolling = curve(records, window=2, x_axis="steps")
    np.testing.assert_array_equal(x, [800, 1200, 1600])
    np.testing.assert_array_equal(rolling, [2, 4, 6])
    hours, _ = curve(records, window=2, x_axis="hours")
    cores = os.cpu_count() or 1  # no cpu_seconds in these records: wall time x cores
    np.testing.assert_allclose(hours, cores * np.array([800, 1200, 1600]) / 100 / 3600)  # 100 steps/s throughout
    for record in records:
        if record["type"] == "train":
            record["cpu_seconds"] = 5.0  # 1,000 steps per window
    cpu_hours, _ = curve(records, window=2, x_axis="hours")
    np.testing.assert_allclose(cpu_hours, np.array([800, 1200, 1600]) / 1000 * 5.0 / 3600)
    published = Path(__file__).resolve().parents[2] / "results" / "published" / "breakout.json"
    for axis in ("steps", "hours"):
        out = tmp_path / f"compare-{axis}.png"
        result = run_cli("plot", str(tmp_path / "fast"), str(tmp_path / "slow"), "--published", str(published),
                         "--x", axis, "--out", str(out), "--labels", "fast", "slow")
        assert result.returncode == 0, result.stderr
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    mismatch = run_cli("plot", str(tmp_path / "fast"), str(tmp_path / "slow"), "--out", str(tmp_path / "x.png"),
                       "--labels", "one")
    assert mismatch.returncode == 2 and "1 --labels for 2 runs" in mismatch.stderr
    no_out = run_cli("plot", str(tmp_path / "fast"), str(tmp_path / "slow"))
    assert no_out.returncode == 2 and "needs --out" in no_out.stderr


def test_a_published_series_off_the_axis_shows_as_its_final_score() -> None:
    from breakout_dqn.training.plot import published_marks

    nature = {"points": [[50_000_000, 401.2]]}
    cleanrl = {"points": [[2_000_000, 100], [3_000_000, 250], [10_000_000, 367]]}
    points, final = published_marks(cleanrl, "steps", 10)
    assert final is None and points[:, 1].tolist() == [100, 250, 367]  # on the axis: drawn as points
    points, final = published_marks(cleanrl, "steps", 5)
    assert final is None and points[:, 0].tolist() == [2e6, 3e6]  # cut at --max-x
    assert published_marks(nature, "steps", 10)[1] == (50e6, 401.2)  # past --max-x: its score as a level
    assert published_marks(nature, "steps", None)[1] is None  # no --max-x: the axis reaches it
    for series, last in ((nature, (50e6, 401.2)), (cleanrl, (10e6, 367.0))):  # no CPU-hours in papers
        points, final = published_marks(series, "hours", 11)
        assert not len(points) and final == last


def test_plot_max_x_sets_the_right_end_of_a_comparison_without_published_points(tmp_path: Path, monkeypatch) -> None:
    import matplotlib.axes

    from breakout_dqn.training.plot import compare

    write_metrics(tmp_path / "fast", 100.0, [1, 3, 5, 7])
    write_metrics(tmp_path / "slow", 10.0, [0, 0, 2, 2])
    limits: list[tuple] = []
    original = matplotlib.axes.Axes.set_xlim
    monkeypatch.setattr(matplotlib.axes.Axes, "set_xlim",
                        lambda self, *args, **kwargs: limits.append(args) or original(self, *args, **kwargs))
    out = compare([tmp_path / "fast", tmp_path / "slow"], tmp_path / "cut.png", ["fast", "slow"], None, "steps",
                  window=2, max_x=0.0012)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert limits[0] == (0, 0.0012)  # set by --max-x (matplotlib may set it again from the data limits after)
    limits.clear()
    compare([tmp_path / "fast"], tmp_path / "whole.png", ["fast"], None, "steps", window=2)
    assert (0, 0.0012) not in limits


def test_plot_min_x_zooms_a_comparison_onto_the_curves_right_of_it(tmp_path: Path, monkeypatch) -> None:
    import matplotlib.figure

    from breakout_dqn.training.plot import main

    write_metrics(tmp_path / "fast", 100.0, [1, 3, 5, 7])  # last 2 games' means 2, 4, 6 at 800, 1200, 1600 steps
    write_metrics(tmp_path / "slow", 10.0, [0, 0, 2, 2])  # 0, 1, 2
    saved: list[tuple] = []  # each saved plot's axis limits, as drawn
    original = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda self, *args, **kwargs: saved.append(
        (self.axes[0].get_xlim(), self.axes[0].get_ylim())) or original(self, *args, **kwargs))
    runs = [str(tmp_path / "fast"), str(tmp_path / "slow"), "--window", "2", "--out", str(tmp_path / "zoom.png")]
    assert main([*runs, "--min-x", "0.0011"]) == 0
    (left, _), (bottom, top) = saved[0]
    assert left == 0.0011
    assert (bottom, top) == (0.0, 7.0)  # the curves from 1,200 steps on span 1 to 6; a margin of 1 each side
    assert main(runs) == 0
    assert saved[1][0][0] < 0.0011 and saved[1][1][0] < 0.0  # no --min-x: the whole curves, from 0
