"""``breakout-dqn plot RUN_DIR [RUN_DIR ...]``: learning curves as a PNG (matplotlib).

One run: its games, rolling mean, evaluations and speed. Several runs, or ``--published``: their
curves (mean of the last 100 training games, and evaluations) on one plot against agent steps or
training hours, beside published results (``results/published/breakout.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from breakout_dqn.atari import HUMAN_SCORE
from breakout_dqn.training.metrics import read_metrics
from breakout_dqn.training.run_directory import RunDirectory

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
    score_axis.axhline(HUMAN_SCORE, color="gray", linestyle="--", linewidth=1, label=f"human ({HUMAN_SCORE:g})")
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


def curve(records: list[dict[str, Any]], window: int, x_axis: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, mean of the last ``window`` training games) at each game, x in agent steps or hours."""
    games = [r for r in records if r["type"] == "game"]
    if not games:
        return np.empty(0), np.empty(0)
    steps = np.array([g["step"] for g in games], dtype=np.float64)
    scores = np.array([g["score"] for g in games], dtype=np.float64)
    kernel = min(window, len(scores))
    rolling = np.convolve(scores, np.ones(kernel) / kernel, mode="valid")
    return to_x(records, steps[kernel - 1:], x_axis), rolling


def to_x(records: list[dict[str, Any]], steps: np.ndarray, x_axis: str) -> np.ndarray:
    """Agent steps as themselves, or as CPU-hours of training: the CPU seconds of each ``train``
    window (all the trainer's threads; evaluations and pauses between pieces do not count). A
    window logged before CPU time was recorded counts its wall time x the machine's cores."""
    if x_axis == "steps":
        return steps
    train = [r for r in records if r["type"] == "train" and r.get("steps_per_second")]
    marks = np.array([0.0] + [r["step"] for r in train])
    cores = os.cpu_count() or 1
    seconds = [r["cpu_seconds"] if r.get("cpu_seconds") is not None else cores * interval / r["steps_per_second"]
               for r, interval in zip(train, np.diff(marks), strict=True)]
    hours = np.concatenate([[0.0], np.cumsum(seconds)]) / 3600
    return np.interp(steps, marks, hours)


def published_marks(series: dict[str, Any], x_axis: str, max_x: float | None
                    ) -> tuple[np.ndarray, tuple[float, float] | None]:
    """How a published series shows: (its points on the agent-step axis, up to ``max_x`` millions), or,
    when none of them falls on the axis (the Nature DQN's 50M agent steps; any series against
    CPU-hours, which papers do not report), its last point (agent steps, score), drawn as a level."""
    points = np.array(series["points"], dtype=np.float64).reshape(-1, 2)
    if x_axis == "steps":
        shown = points[points[:, 0] <= max_x * 1e6] if max_x is not None else points
        if len(shown):
            return shown, None
    final = points[np.argmax(points[:, 0])] if len(points) else None
    return np.empty((0, 2)), None if final is None else (float(final[0]), float(final[1]))


def compare(run_dirs: list[Path], out: Path, labels: list[str], published: Path | None, x_axis: str,
            window: int = 100, max_x: float | None = None, min_x: float | None = None) -> Path:
    """Several runs' curves and evaluations on one plot, with the published points beside them; with
    ``min_x`` the vertical axis fits the runs' curves right of it (forks differ there: a zoom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(10, 5.5))
    shown: list[np.ndarray] = []  # the curves' values right of min_x
    for index, (run_dir, label) in enumerate(zip(run_dirs, labels, strict=True)):
        records = read_metrics(RunDirectory(run_dir).metrics)
        color = f"C{index}"
        x, rolling = curve(records, window, x_axis)
        x = x / (1e6 if x_axis == "steps" else 1)
        axis.plot(x, rolling, color=color, label=f"{label}: last {window} games")
        if min_x is not None:
            shown.append(np.asarray(rolling)[(x >= min_x) & (x <= (np.inf if max_x is None else max_x))])
        evals = [r for r in records if r["type"] == "eval"]
        if evals:
            eval_x = to_x(records, np.array([e["step"] for e in evals], dtype=np.float64), x_axis)
            axis.errorbar(eval_x / (1e6 if x_axis == "steps" else 1), [e["mean"] for e in evals],
                          yerr=[e["std"] for e in evals], fmt="o", color=color, alpha=0.6, capsize=2, markersize=3,
                          label=f"{label}: evaluations")
    if max_x is not None or min_x is not None:  # with or without published points; also stops autoscaling x
        axis.set_xlim(min_x or 0, max_x)
    visible = np.concatenate(shown) if shown else np.empty(0)
    if visible.size:
        margin = max(1.0, 0.05 * float(np.ptp(visible)))
        axis.set_ylim(float(visible.min()) - margin, float(visible.max()) + margin)
    if published is not None:
        reference = json.loads(published.read_text())
        for index, series in enumerate(reference["series"]):
            points, final = published_marks(series, x_axis, max_x)
            if len(points):
                axis.plot(points[:, 0] / 1e6, points[:, 1], linestyle=":", marker="s", color=f"C{index + 5}",
                          label=f"{series['name']} (published)")
            elif final is not None:
                axis.axhline(final[1], color=f"C{index + 5}", linestyle=":", linewidth=1.2,
                             label=f"{series['name']}: {final[1]:g} at {final[0] / 1e6:g}M agent steps (published)")
        for name, level in reference.get("levels", {}).items():
            axis.axhline(level, color="gray", linestyle="--", linewidth=1)
            axis.text(axis.get_xlim()[0], level, f" {name} {level}", fontsize=7, color="gray", va="bottom")
    axis.set_xlabel("agent steps (millions; 1 step = 4 frames)" if x_axis == "steps" else
                    "CPU-hours of training (all the trainer's threads; evaluations and pauses excluded)")
    axis.set_ylabel("Breakout score (raw)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes: curves stay visible
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return out


def build_parser() -> argparse.ArgumentParser:
    """The ``plot`` parser (the docs' CLI reference is generated from it)."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    parser.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR",
                        help="training --out directories (reads metrics.jsonl)")
    parser.add_argument("--out", type=Path, help="PNG path (default for one run: RUN_DIR/learning_curve.png)")
    parser.add_argument("--window", type=int, default=100, help="games in the rolling mean")
    parser.add_argument("--labels", nargs="+", help="one legend label per run (default: the directory names)")
    parser.add_argument("--published", type=Path, help="published results to draw beside the runs (JSON)")
    parser.add_argument("--x", choices=("steps", "hours"), default="steps", dest="x_axis",
                        help="horizontal axis of a comparison: agent steps or CPU-hours of training")
    parser.add_argument("--max-x", type=float, help="right end of a comparison's axis (millions of steps, or hours)")
    parser.add_argument("--min-x", type=float, help="left end of a comparison's axis; the score axis fits the "
                        "curves right of it (to compare forks)")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    for run_dir in args.run_dirs:
        if not RunDirectory(run_dir).metrics.is_file():
            print(f"{PROG}: error: no metrics.jsonl in {run_dir}", file=sys.stderr)
            return 2
    labels = args.labels or [run_dir.name for run_dir in args.run_dirs]
    if len(labels) != len(args.run_dirs):
        print(f"{PROG}: error: {len(labels)} --labels for {len(args.run_dirs)} runs", file=sys.stderr)
        return 2
    single = len(args.run_dirs) == 1 and args.published is None and args.x_axis == "steps"
    if not single and args.out is None:
        print(f"{PROG}: error: a comparison needs --out", file=sys.stderr)
        return 2
    try:
        if single:
            path = plot_run(args.run_dirs[0], args.out or RunDirectory(args.run_dirs[0]).curve, args.window)
        else:
            path = compare(args.run_dirs, args.out, labels, args.published, args.x_axis, args.window, args.max_x,
                           args.min_x)
    except (ValueError, KeyError, OSError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0
