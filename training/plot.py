"""``breakout-dqn plot RUN_DIR``: the learning curve of a run as a PNG (matplotlib)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from training.metrics import read_metrics
from training.run_directory import RunDirectory

PROG = "breakout-dqn plot"


def plot_run(run_dir: Path, out: Path, window: int = 100) -> Path:
    """Raw game scores (rolling mean over ``window`` games) and evaluations against frames."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(RunDirectory(run_dir).metrics)
    games = [r for r in records if r["type"] == "game"]
    evals = [r for r in records if r["type"] == "eval"]
    train = [r for r in records if r["type"] == "train"]
    if not games and not evals:
        raise ValueError(f"{RunDirectory(run_dir).metrics} holds no games or evaluations yet")
    figure, (score_axis, speed_axis) = plt.subplots(2, 1, figsize=(9, 7), sharex=True,
                                                    gridspec_kw={"height_ratios": [3, 1]})
    if games:
        frames = np.array([g["frames"] for g in games]) / 1e6
        scores = np.array([g["score"] for g in games])
        score_axis.scatter(frames, scores, s=2, alpha=0.25, color="tab:blue", label="training game (raw score)")
        kernel = min(window, len(scores))
        rolling = np.convolve(scores, np.ones(kernel) / kernel, mode="valid")
        score_axis.plot(frames[kernel - 1:], rolling, color="tab:blue", label=f"mean of last {kernel} games")
    if evals:
        score_axis.errorbar([e["frames"] / 1e6 for e in evals], [e["mean"] for e in evals],
                            yerr=[e["std"] for e in evals], fmt="o-", color="tab:red", capsize=3,
                            label="evaluation (eps 0.05, mean +- std)")
    score_axis.axhline(31.8, color="gray", linestyle="--", linewidth=1, label="human (31.8)")
    score_axis.set_ylabel("Breakout score")
    score_axis.set_title(f"Learning curve: {run_dir.name}")
    score_axis.legend(loc="upper left", fontsize=8)
    score_axis.grid(alpha=0.3)
    if train:
        speed_axis.plot([t["frames"] / 1e6 for t in train], [t["steps_per_second"] for t in train], color="tab:green")
    speed_axis.set_yscale("log")  # random warm-up runs ~30x faster than learning
    speed_axis.set_ylabel("agent steps/s (log)")
    speed_axis.set_xlabel("emulator frames (millions; 1 agent step = 4 frames)")
    speed_axis.grid(alpha=0.3)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    parser.add_argument("run_dir", type=Path, help="a training --out directory (reads metrics.jsonl)")
    parser.add_argument("--out", type=Path, help="PNG path (default: RUN_DIR/learning_curve.png)")
    parser.add_argument("--window", type=int, default=100, help="games in the rolling mean")
    args = parser.parse_args(argv)
    run = RunDirectory(args.run_dir)
    if not run.metrics.is_file():
        print(f"{PROG}: error: no {run.metrics.name} in {args.run_dir}", file=sys.stderr)
        return 2
    try:
        path = plot_run(args.run_dir, args.out or run.curve, args.window)
    except ValueError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0
