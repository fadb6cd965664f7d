"""Average the online network of a run's newest checkpoints into one model (weight averaging).

    python -m breakout_dqn.training.average runs/pqn-eps05-s1 --last 2 --out runs/pqn-eps05-s1-avg2
    python -m breakout_dqn.training.average runs/dueling-s1 --step 2950000 --out runs/dueling-s1-2.95m

One snapshot of a run's ever-changing policy can score tens of points either side of the games its
training curve averages; the mean of the weights of its last few checkpoints is one policy that
smooths those swings (PQN at epsilon 0.05, 10M agent steps: its last two checkpoints scored 287.6 and
327.0 over 300 games, their average 369.2: results/pqn-eps05-s1-10m-avg2/README.md). ``--step`` names
the checkpoints by agent step instead; one ``--step`` writes that snapshot alone as a model, so that
each checkpoint behind an average can be evaluated too (results/dueling-s1-3m/README.md).

OUT is written as a run directory that ``evaluate``, ``export`` and ``scripts/ship_reference.sh``
take as they take a finished run: ``model.keras`` (the averaged network, the run's architecture),
``config.json`` and ``metrics.jsonl`` (the run's), the newest averaged checkpoint (its step and
counters name the model), and ``average.json`` (which checkpoints, which run). The checkpoints must
come from one network (same shapes); OUT must be new or empty, so nothing is overwritten. Exit 0, or
2 with a one-line error.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from breakout_dqn.errors import BreakoutDQNError, UsageError
from breakout_dqn.training.checkpoint import checkpoint_path, list_checkpoints, load_checkpoint
from breakout_dqn.training.run_directory import RunDirectory

PROG = "python -m breakout_dqn.training.average"


class AverageError(UsageError):
    """The checkpoints cannot be averaged, or OUT cannot be written; the message says why."""


def average_weights(checkpoints: list[Path]) -> tuple[list[np.ndarray], list[int]]:
    """The element-wise mean of the checkpoints' online weights, in float32 (summed in float64), and each
    checkpoint's agent step; every checkpoint is read once."""
    total: list[np.ndarray] | None = None
    steps = []
    for path in checkpoints:
        arrays, state = load_checkpoint(path)
        steps.append(int(state["step"]))
        online = arrays["online"]
        if total is None:
            total = [weight.astype(np.float64) for weight in online]
            continue
        if [w.shape for w in online] != [t.shape for t in total]:
            raise AverageError(f"{path} holds another network than {checkpoints[0]} (its weights' shapes differ)")
        for accumulated, weight in zip(total, online, strict=True):
            accumulated += weight
    if total is None:
        raise AverageError("no checkpoints to average")
    return [(weight / len(checkpoints)).astype(np.float32) for weight in total], steps


def select_checkpoints(run: RunDirectory, last: int, steps: list[int] | None = None) -> list[Path]:
    """The newest ``last`` checkpoints of the run, or those at agent ``steps`` (oldest first)."""
    held = list_checkpoints(run.checkpoints)
    if steps:
        wanted = [checkpoint_path(run.checkpoints, step) for step in sorted(set(steps))]
        missing = [path.name for path in wanted if path not in held]
        if missing:
            have = ", ".join(path.name for path in held) or "none"
            raise AverageError(f"{run.checkpoints} holds no {', '.join(missing)} (it holds: {have})")
        return wanted
    if last < 1:
        raise AverageError(f"--last must be at least 1, not {last}")
    if len(held) < last:
        raise AverageError(f"{run.checkpoints} holds {len(held)} checkpoint(s), fewer than --last {last} "
                           "(train with a larger --keep-checkpoints to keep more)")
    return held[-last:]


def write_average(run_dir: Path, last: int, out_dir: Path, steps: list[int] | None = None) -> dict:
    """Write OUT (the module docstring) from the newest ``last`` checkpoints of ``run_dir``, or from those
    at agent ``steps``; its summary."""
    run, out = RunDirectory(run_dir), RunDirectory(out_dir)
    checkpoints = select_checkpoints(run, last, steps)
    if not run.model.is_file():
        raise AverageError(f"no {run.model}: the run's architecture comes from its model")
    if out.root.exists() and any(out.root.iterdir()):
        raise AverageError(f"{out.root} is not empty: choose a new --out (nothing is overwritten)")
    from breakout_dqn.training.model import load_q_network

    weights, steps = average_weights(checkpoints)
    model = load_q_network(run.model)
    if [w.shape for w in model.get_weights()] != [w.shape for w in weights]:
        raise AverageError(f"{run.model} is another network than its checkpoints")
    model.set_weights(weights)
    summary = {"run": str(run.root), "checkpoints": [path.name for path in checkpoints], "steps": steps,
               "train_agent_steps": steps[-1]}
    staging = out.root.with_name(f".{out.root.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staged = RunDirectory(staging)
    staged.checkpoints.mkdir(parents=True)
    shutil.copy2(checkpoints[-1], staged.checkpoints / checkpoints[-1].name)
    for name in (run.config, run.metrics):
        if name.is_file():
            shutil.copy2(name, staging / name.name)
    model.save(staged.model)  # after the checkpoint: ship_reference.sh refuses a model older than it
    (staging / "average.json").write_text(json.dumps(summary, indent=2) + "\n")
    if out.root.exists():
        out.root.rmdir()  # empty (checked above)
    staging.rename(out.root)
    return summary


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a training run's --out directory")
    which = parser.add_mutually_exclusive_group()
    # default None, not 2: argparse counts an option given at its default value as not given
    which.add_argument("--last", type=int, help="how many of its newest checkpoints (default: 2)")
    which.add_argument("--step", type=int, action="append", metavar="STEP",
                        help="the checkpoint at this agent step instead of the newest (repeat for several)")
    parser.add_argument("--out", type=Path, required=True, help="a new directory for the averaged model")
    args = parser.parse_args(argv)
    try:
        summary = write_average(args.run_dir, 2 if args.last is None else args.last, args.out, args.step)
    except BreakoutDQNError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return error.exit_code
    steps = ", ".join(f"{step:,}" for step in summary["steps"])
    print(f"averaged the online weights of {len(summary['steps'])} checkpoints (agent steps {steps}) into "
          f"{RunDirectory(args.out).model}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
