"""Ablations against their baseline, judged by the rule the README set before their results.

    python -m breakout_dqn.training.ablation results/default-s1-1m results/ablation-*

Each argument is a run's record (``scripts/experiments.sh`` writes them): ``config.json``,
``metrics.jsonl`` and the many-game evaluation ``eval-300.json``; the first is the baseline. For each
ablation it prints, as a Markdown table, the settings it changes, the mean of its last 100 training
games at the baseline's final agent step (games after that step do not count), its evaluation mean
with the standard error (std / sqrt(games)), the difference from the baseline, and the verdict:

- **joins** ``default``: its evaluation mean beats the baseline's by more than two combined
  standard errors (sqrt(se_a^2 + se_b^2)), and its last-100 mean is not below the baseline's;
- **stays out**: either test fails (with one seed each, a smaller gap is not told from noise);
- **not finished**: its run has not reached the baseline's step, or has no evaluation yet.

A run that changes the exploration schedule (``epsilon_start``, ``epsilon_end``,
``epsilon_decay_steps``) plays its training games at another rate of random actions, so its last-100
mean measures other games than the baseline's (at 5M, PQN trained at 0.05 reads 104 points under PQN
trained at 0.01 on its curve and is level in evaluation: docs/experiments/evaluation-epsilon.md). Its
verdict rests on the evaluation alone, and says so.

A run that changes only how the update is computed (``precision``, ``xla``: the same float32 weights
and math, other arithmetic) is asked another question, whether the cheaper path costs score:

- **costs no score**: its evaluation mean is not below the baseline's by more than two combined
  standard errors;
- **costs score**: it is.

A record trained on ``--precision auto`` is compared by the path its pieces took (the ``compute``
field of its ``train`` records): an ablation run on bfloat16 + oneDNN against
``results/default-bf16-s1`` changes one setting, not three.

``--at 250000,500000,750000`` adds a second table, the mean of the last 100 training games of each
record at those agent steps ("-" where its run has not reached the step): how a run still short of the
baseline's step stands against it at the same steps. A run directory (``runs/NAME``) is read like a record.

Exit status 0 with the tables; 2 with a one-line error when the baseline's record is incomplete or a
directory is not a record.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

from breakout_dqn.errors import UsageError
from breakout_dqn.training.compute_path import parse_path_name
from breakout_dqn.training.exploration import SCHEDULE_SETTINGS
from breakout_dqn.training.metrics import read_metrics
from breakout_dqn.training.run_directory import COMPUTE_SETTINGS, PIECE_SETTINGS

PROG = "python -m breakout_dqn.training.ablation"
WINDOW = 100  # training games in the rolling mean
STANDARD_ERRORS = 2.0  # how many combined standard errors an evaluation gap must pass


class AblationError(UsageError):
    """A record cannot be compared; the message says which file and why."""


@dataclasses.dataclass(frozen=True)
class Record:
    """One run's record, reduced to what the rule compares."""

    name: str
    config: dict[str, Any]
    final_step: int  # the newest ``train`` record's agent step
    games: list[tuple[int, float]]  # (agent step, score) of each training game, in order
    eval_mean: float | None  # None: no evaluation file
    eval_std: float | None
    eval_games: int

    @property
    def standard_error(self) -> float | None:
        if self.eval_std is None or self.eval_games < 1:
            return None
        return self.eval_std / math.sqrt(self.eval_games)

    def last_games_mean(self, step: int, window: int = WINDOW) -> float | None:
        """Mean score of the last ``window`` training games finished at or before agent ``step``."""
        scores = [score for game_step, score in self.games if game_step <= step][-window:]
        return sum(scores) / len(scores) if scores else None


def load_record(path: Path, eval_name: str) -> Record:
    """Read ``path``'s config, metrics and evaluation; the evaluation may be missing (not finished)."""
    if not path.is_dir():
        raise AblationError(f"{path}: not a directory")
    for name in ("config.json", "metrics.jsonl"):
        if not (path / name).is_file():
            raise AblationError(f"{path}: no {name} (not a run's record)")
    try:
        config = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as error:
        raise AblationError(f"{path / 'config.json'}: not JSON ({error})") from None
    metrics = read_metrics(path / "metrics.jsonl")
    train_steps = [int(r["step"]) for r in metrics if r.get("type") == "train"]
    config = with_compute_path_taken(comparable(config), {str(r["compute"]) for r in metrics
                                              if r.get("type") == "train" and r.get("compute")})
    games = [(int(r["step"]), float(r["score"])) for r in metrics if r.get("type") == "game"]
    eval_mean = eval_std = None
    eval_games = 0
    eval_path = path / eval_name
    if eval_path.is_file():
        try:
            evaluation = json.loads(eval_path.read_text())
            eval_mean, eval_std = float(evaluation["mean"]), float(evaluation["std"])
            eval_games = int(evaluation["episodes"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise AblationError(f"{eval_path}: not an evaluation record ({error!r})") from None
    return Record(path.name, config, max(train_steps, default=0), games, eval_mean, eval_std, eval_games)


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` in today's names, with its algorithm's settings only, each one it lacks at its default.

    Records written before a rename (``max_frames_per_episode``), before the settings were split per
    algorithm (a DQN record holding PQN's ``rollout_steps``) or before a setting existed (``backend``)
    then differ from a newer record only where the runs did.
    """
    from breakout_dqn.training.config import config_from_json

    return config_from_json(config).to_json()


def with_compute_path_taken(config: dict[str, Any], paths: set[str]) -> dict[str, Any]:
    """``config`` with ``precision: auto`` / ``xla: null`` replaced by the path its ``train`` records
    logged (``compute``), so that a run on ``auto`` is compared by the arithmetic it ran. A run whose
    pieces took different paths keeps ``auto``, followed by the paths."""
    if config.get("precision", "auto") != "auto" and config.get("xla") is not None:
        return config
    if len(paths) == 1:
        try:
            precision, xla = parse_path_name(next(iter(paths)))
        except ValueError:
            return config
        return {**config, "precision": precision, "xla": xla}
    if paths:
        return {**config, "precision": f"auto ({', '.join(sorted(paths))})"}
    return config


def changed_keys(baseline: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """The settings (beyond those that may differ between pieces of a run) ``config`` changes."""
    return [key for key in sorted((set(baseline) | set(config)) - PIECE_SETTINGS)
            if baseline.get(key) != config.get(key)]


def changed_settings(baseline: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """``changed_keys`` as ``key old -> new``."""
    return [f"{key} {baseline.get(key)!r} -> {config.get(key)!r}" for key in changed_keys(baseline, config)]


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One ablation against the baseline, at the baseline's final step."""

    name: str
    changes: list[str]
    step: int
    last_mean: float | None
    eval_mean: float | None
    standard_error: float | None
    difference: float | None  # ablation's evaluation mean minus the baseline's
    threshold: float | None  # STANDARD_ERRORS combined standard errors
    verdict: str


def compare(baseline: Record, ablation: Record) -> Comparison:
    """Apply the rule to ``ablation``; ``baseline`` must have its evaluation."""
    base_mean, base_error = baseline.eval_mean, baseline.standard_error
    if base_mean is None or base_error is None:
        raise AblationError(f"{baseline.name}: the baseline has no evaluation")
    mean, error = ablation.eval_mean, ablation.standard_error
    step = baseline.final_step
    base_last = baseline.last_games_mean(step)
    last = ablation.last_games_mean(step)
    changes = changed_settings(baseline.config, ablation.config)
    unfinished = []
    if ablation.final_step < step:
        unfinished.append(f"at {ablation.final_step:,} of {step:,} agent steps")
    if mean is None or error is None:
        unfinished.append("no evaluation yet")
    if unfinished or mean is None or error is None:
        return Comparison(ablation.name, changes, step, last, mean, error,
                          None, None, "not finished (" + ", ".join(unfinished) + ")")
    difference = mean - base_mean
    threshold = STANDARD_ERRORS * math.hypot(error, base_error)
    keys = changed_keys(baseline.config, ablation.config)
    if keys and set(keys) <= COMPUTE_SETTINGS:  # the cheaper path's question: does it cost score?
        verdict = (f"costs no score (gap {difference:+.1f} is within -{threshold:.1f})" if difference >= -threshold
                   else f"costs score (gap {difference:+.1f} is below -{threshold:.1f})")
        return Comparison(ablation.name, changes, step, last, mean, error, difference, threshold, verdict)
    reasons = []
    if difference <= threshold:
        reasons.append(f"evaluation gap {difference:+.1f} is not above {threshold:.1f}")
    exploration = sorted(set(keys) & SCHEDULE_SETTINGS)  # training games at another epsilon: not compared
    if not exploration and (last is None or base_last is None or last < base_last):
        reasons.append(f"last-{WINDOW} mean {_number(last)} is below the baseline's {_number(base_last)}")
    verdict = "joins" if not reasons else "stays out (" + "; ".join(reasons) + ")"
    if exploration:
        verdict += f" (on the evaluation alone: {', '.join(exploration)} changes the training games)"
    return Comparison(ablation.name, changes, step, last, mean, error, difference, threshold, verdict)


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _mean_and_error(mean: float | None, error: float | None) -> str:
    return "-" if mean is None or error is None else f"{mean:.1f} +- {error:.1f}"


def table(baseline: Record, comparisons: list[Comparison], eval_name: str) -> str:
    """The Markdown table: the baseline's row, then one row per ablation."""
    step = baseline.final_step
    header = (f"| record | changes | last-{WINDOW} mean at {step:,} | {eval_name} mean +- SE | difference "
              f"| {STANDARD_ERRORS:g} combined SE | verdict |\n|---|---|---|---|---|---|---|")
    rows = [f"| {baseline.name} | (baseline) | {_number(baseline.last_games_mean(step))} "
            f"| {_mean_and_error(baseline.eval_mean, baseline.standard_error)} | | | |"]
    for item in comparisons:
        rows.append(f"| {item.name} | {'; '.join(item.changes) or '(none)'} | {_number(item.last_mean)} "
                    f"| {_mean_and_error(item.eval_mean, item.standard_error)} "
                    f"| {'-' if item.difference is None else f'{item.difference:+.1f}'} "
                    f"| {_number(item.threshold)} | {item.verdict} |")
    return "\n".join([header, *rows])


def curve_table(records: list[Record], steps: list[int]) -> str:
    """The Markdown table of each record's last-100 mean at each of ``steps`` ("-": not reached)."""
    header = "| record | " + " | ".join(f"last-{WINDOW} mean at {step:,}" for step in steps) + " |"
    rows = [header, "|---|" + "---|" * len(steps)]
    for record in records:
        values = [_number(record.last_games_mean(step) if record.final_step >= step else None) for step in steps]
        rows.append(f"| {record.name} | " + " | ".join(values) + " |")
    return "\n".join(rows)


def agent_steps(text: str) -> list[int]:
    """``--at``'s value: comma-separated positive agent steps, in the order given."""
    try:
        steps = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not comma-separated agent steps: {text!r}") from None
    if not steps or min(steps) <= 0:
        raise argparse.ArgumentTypeError(f"agent steps must be > 0: {text!r}")
    return steps


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("baseline", type=Path, help="the baseline's record directory (results/default-s1-1m)")
    parser.add_argument("ablations", type=Path, nargs="+", metavar="ABLATION", help="ablation record directories")
    parser.add_argument("--eval", default="eval-300.json", dest="eval_name",
                        help="the evaluation file in each record (default: eval-300.json)")
    parser.add_argument("--json", type=Path, help="also write the comparisons here as JSON")
    parser.add_argument("--at", type=agent_steps, metavar="STEPS",
                        help="also print each record's last-100 mean at these comma-separated agent steps")
    args = parser.parse_args(argv)
    try:
        baseline = load_record(args.baseline, args.eval_name)
        if baseline.eval_mean is None or baseline.standard_error is None:
            raise AblationError(f"{args.baseline}: the baseline has no {args.eval_name}")
        records = [load_record(path, args.eval_name) for path in args.ablations]
        comparisons = [compare(baseline, record) for record in records]
    except (AblationError, OSError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    print(table(baseline, comparisons, args.eval_name))
    if args.at:
        print()
        print(curve_table([baseline, *records], args.at))
    if args.json is not None:
        from breakout_dqn.files import atomic_write_text

        atomic_write_text(args.json, json.dumps([dataclasses.asdict(c) for c in comparisons], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
