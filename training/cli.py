"""``breakout-dqn train``: flags -> resolved settings -> a training run (errors: ``breakout_dqn.errors``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from breakout_dqn.training.arguments import build_parser, explicit_settings
from breakout_dqn.training.config import TrainConfig, config_from_json, resolve
from breakout_dqn.training.run_directory import RunDirectory, RunDirectoryError

__all__ = ["build_parser", "main"]
SUMMARY_KEYS = ("mean", "std", "episodes", "train_agent_steps", "wall_seconds")


def resolve_explicit(explicit: dict[str, Any]) -> TrainConfig:
    """A fresh run: preset + flags. ``--resume``: the run's saved settings + flags (e.g. a larger --steps).

    ``--auto-resume``: ``--resume`` when ``--out`` holds checkpoints of the run these flags describe,
    a fresh run when it holds none, and an error naming the differences when it holds another run.
    """
    run = RunDirectory(Path(explicit.get("out", TrainConfig.out)))
    if explicit.get("auto_resume") and not explicit.get("resume") and run.newest_checkpoint() is not None:
        differences = run.differences(resolve(explicit).to_json())
        if differences:
            raise RunDirectoryError(f"--auto-resume: {run.root} holds another run ({'; '.join(differences)})")
        explicit = {**explicit, "resume": True}
    if not explicit.get("resume"):
        return resolve(explicit)
    if not run.config.is_file():
        raise RunDirectoryError(f"--resume: no config.json in {run.root}")
    try:
        saved = config_from_json(json.loads(run.config.read_text())).to_json()
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
    explicit, print_only = explicit_settings(argv)  # argparse exits 2 with one line on a bad flag
    config = resolve_explicit(explicit)
    if print_only:
        print(json.dumps(config.to_json(), indent=2, sort_keys=True))
        return 0
    summary = finished_run(config)
    if summary is not None:
        print(f"{config.out} already finished its {config.steps:,} steps: nothing to do", file=sys.stderr)
    else:
        from breakout_dqn.training.train import train

        summary = train(config)
    print(json.dumps({key: summary.get(key) for key in SUMMARY_KEYS}))
    return 0
