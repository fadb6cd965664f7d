"""``breakout-dqn train``: flags -> resolved config -> training run, with one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from training.checkpoint import CheckpointError
from training.config import ConfigError, TrainConfig, build_parser, load_config, resolve
from training.train import Interrupted, RunDirectoryError, run_layout, train

PROG = "breakout-dqn train"


def resolve_explicit(explicit: dict) -> TrainConfig:
    """A fresh run: preset + flags. ``--resume``: the run's saved config + flags (e.g. a larger --steps)."""
    if not explicit.get("resume"):
        return resolve(explicit)
    out = Path(explicit.get("out", "runs/breakout"))
    saved_path = run_layout(out)["config"]
    if not saved_path.is_file():
        raise RunDirectoryError(f"--resume: no config.json in {out}")
    try:
        saved = load_config(saved_path).to_json()
    except (ValueError, TypeError) as error:
        raise RunDirectoryError(f"--resume: unreadable {saved_path}: {error}") from None
    return resolve({**saved, **explicit})


def main(argv: list[str]) -> int:
    args = build_parser(PROG).parse_args(argv)  # exits 2 with a usage line on a bad flag
    try:
        config = resolve_explicit(vars(args))
        summary = train(config)
    except (ConfigError, RunDirectoryError, CheckpointError, MemoryError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        print(f"{PROG}: {stop}", file=sys.stderr)
        return 128 + stop.signum
    print(json.dumps({k: summary[k] for k in ("mean", "std", "episodes", "train_agent_steps", "wall_seconds")}))
    return 0
