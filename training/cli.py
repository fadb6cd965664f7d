"""``breakout-dqn train``: flags -> resolved config -> training run, with one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from breakout_dqn.training.checkpoint import CheckpointError
from breakout_dqn.training.config import ConfigError, TrainConfig, build_parser, load_config, resolve
from breakout_dqn.training.replay_storage import ReplayStorageError
from breakout_dqn.training.run_directory import RunDirectory, RunDirectoryError
from breakout_dqn.training.train import Interrupted, train

PROG = "breakout-dqn train"
SUMMARY_KEYS = ("mean", "std", "episodes", "train_agent_steps", "wall_seconds")


def resolve_explicit(explicit: dict) -> TrainConfig:
    """A fresh run: preset + flags. ``--resume``: the run's saved config + flags (e.g. a larger --steps).

    ``--auto-resume``: ``--resume`` when ``--out`` holds checkpoints of the run these flags describe,
    a fresh run when it holds none, and an error naming the differences when it holds another run.
    """
    run = RunDirectory(Path(explicit.get("out", TrainConfig.out)))
    if explicit.get("auto_resume") and not explicit.get("resume") and run.newest_checkpoint() is not None:
        asked = resolve(explicit).to_json()
        differences = run.differences(asked)
        if differences:
            raise RunDirectoryError(f"--auto-resume: {run.root} holds another run ({'; '.join(differences)})")
        explicit = {**explicit, "resume": True}
    if not explicit.get("resume"):
        return resolve(explicit)
    if not run.config.is_file():
        raise RunDirectoryError(f"--resume: no config.json in {run.root}")
    try:
        saved = load_config(run.config).to_json()
    except (ValueError, TypeError) as error:
        raise RunDirectoryError(f"--resume: unreadable {run.config}: {error}") from None
    return resolve({**saved, **explicit})


def finished_run(config: TrainConfig) -> dict | None:
    """The final evaluation of an ``--auto-resume`` run that already reached its ``--steps``, else None."""
    run = RunDirectory(Path(config.out))
    step = run.newest_checkpoint_step()
    if not (config.auto_resume and config.resume and step is not None and step >= config.steps and run.eval.is_file()):
        return None
    try:
        summary = json.loads(run.eval.read_text())
    except ValueError:
        return None
    return summary if summary.get("train_agent_steps") == step else None


def main(argv: list[str]) -> int:
    args = build_parser(PROG).parse_args(argv)  # exits 2 with a usage line on a bad flag
    try:
        config = resolve_explicit(vars(args))
        summary = finished_run(config)
        if summary is not None:
            print(f"{config.out} already finished its {config.steps:,} steps: nothing to do", file=sys.stderr)
        else:
            summary = train(config)
    except (ConfigError, RunDirectoryError, CheckpointError, ReplayStorageError, MemoryError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        print(f"{PROG}: {stop}", file=sys.stderr)
        return 128 + stop.signum
    print(json.dumps({key: summary.get(key) for key in SUMMARY_KEYS}))
    return 0
