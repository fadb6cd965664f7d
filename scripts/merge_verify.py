#!/usr/bin/env python3
"""Merge `breakout-dqn verify --json` reports of one model (one per seed) into one evaluation record.

    python scripts/merge_verify.py OUT.json verify-seed0.json verify-seed1.json ...

Each report must have played games (``--min-score``) and passed its checks; the reports must name the
same model and the same protocol (epsilon), and no seed may repeat. OUT gets the pooled mean, standard
deviation and standard error, and per seed its figures, scores and the command that reproduces it
(the format of ``results/*/eval-300.json``). Exit 2 with one error line on bad input; OUT is written
only when the merge succeeds (atomically), and replaces only an earlier merge, never another record.

    python scripts/merge_verify.py --set-aside OUT.json

renames the Keras evaluation a record may already hold under OUT's name (``breakout-dqn evaluate
--json``, which the experiment queue writes to ``results/<run>/eval-300.json``) to OUT-keras.json, so
that the merge can take its place (``scripts/ship_reference.sh`` does so before anything else).
Nothing to do (exit 0) when OUT is missing or an earlier merge; exit 2 when OUT-keras.json exists
already or OUT is neither.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from breakout_dqn import atari
from breakout_dqn.files import atomic_write_text

PROTOCOL = ("Nature: full 5-life games, up to 30 no-op starts, epsilon {epsilon:g}, {max_frames:,}-frame cap, "
            "raw score (onnxruntime, breakout-dqn verify)")


class MergeError(ValueError):
    """A report that cannot be merged (what and why in the message)."""


def command_for(model: str, score: dict[str, Any]) -> str:
    """The verify command that plays these games again."""
    command = f"breakout-dqn verify {model} --min-score {score['min_score']:g} --episodes {score['episodes']} " \
              f"--seed {score['seed']}"
    if score["epsilon"] != atari.NATURE_EPSILON:
        command += f" --epsilon {score['epsilon']:g}"
    return command + " --json"


def merge(reports: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """``reports`` as (file name, parsed JSON) -> the merged record. Raises MergeError."""
    if not reports:
        raise MergeError("no reports to merge")
    runs: list[dict[str, Any]] = []
    for name, report in reports:
        score = report.get("score")
        if not isinstance(score, dict) or not score.get("scores"):
            raise MergeError(f"{name}: no games in it (was verify run with --min-score?)")
        if report.get("exit_code") not in (0, 4):  # 4: below --min-score, still a measurement
            raise MergeError(f"{name}: verify failed a contract check (exit {report.get('exit_code')})")
        runs.append({"seed": score["seed"], "episodes": score["episodes"], "mean": score["mean"], "std": score["std"],
                     "min": min(score["scores"]), "max": max(score["scores"]), "seconds": score.get("seconds"),
                     "command": command_for(report["model"], score), "exit_code": report["exit_code"],
                     "truncated": score.get("truncated"), "scores": score["scores"]})
    first_name, first = reports[0]
    for name, report in reports[1:]:
        if report.get("model") != first.get("model"):
            raise MergeError(f"{name}: model {report.get('model')!r} differs from {first_name}'s "
                             f"{first.get('model')!r}")
        for key in ("epsilon", "max_frames"):
            if report["score"].get(key) != first["score"].get(key):
                raise MergeError(f"{name}: {key} {report['score'].get(key)} differs from {first_name}'s "
                                 f"{first['score'].get(key)}")
    seeds = [run["seed"] for run in runs]
    if len(set(seeds)) != len(seeds):
        raise MergeError(f"a seed repeats ({seeds}): the games would be counted twice")
    scores = [float(value) for run in runs for value in run["scores"]]
    std = statistics.pstdev(scores)
    return {
        "model": first["model"],
        "protocol": PROTOCOL.format(epsilon=first["score"]["epsilon"], max_frames=first["score"]["max_frames"]),
        "episodes": len(scores), "mean": statistics.fmean(scores), "std": std,
        "standard_error": std / len(scores) ** 0.5, "human": atari.HUMAN_SCORE,
        # games cut at the frame cap (a looping agent): None where a report did not count them
        "truncated": None if any(run["truncated"] is None for run in runs) else sum(run["truncated"] for run in runs),
        "runs": runs, "recorded_by": "scripts/merge_verify.py",
    }


def existing_record(out: Path) -> dict[str, Any] | None:
    """OUT's record, None when there is none. Raises MergeError when OUT is not a JSON object."""
    if not out.exists():
        return None
    try:
        record = json.loads(out.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise MergeError(f"{out} exists and is not a readable record ({error}): move it away first") from None
    if not isinstance(record, dict):
        raise MergeError(f"{out} exists and is not a record: move it away first")
    return record


def is_merge(record: dict[str, Any]) -> bool:
    """A record this script wrote (the older ones, before ``recorded_by``, by their per-seed verify runs)."""
    if record.get("recorded_by") == "scripts/merge_verify.py":
        return True
    runs = record.get("runs")
    return isinstance(runs, list) and bool(runs) and all(
        isinstance(run, dict) and str(run.get("command", "")).startswith("breakout-dqn verify ") for run in runs)


def set_aside(out: Path) -> Path | None:
    """Rename a Keras evaluation record at OUT to OUT-keras.json; the new path, or None if nothing moved."""
    record = existing_record(out)
    if record is None or is_merge(record):
        return None
    if "runs" in record or not isinstance(record.get("scores"), list):
        raise MergeError(f"{out} is neither a merge nor an `evaluate --json` record: move it away first")
    keras = out.with_name(f"{out.stem}-keras{out.suffix}")
    if keras.exists():
        raise MergeError(f"{out} is a Keras evaluation and {keras} exists already: move one of them away first")
    out.rename(keras)
    return keras


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--set-aside":
        try:
            moved = set_aside(Path(argv[1]))
        except MergeError as error:
            print(f"merge_verify: error: {error}", file=sys.stderr)
            return 2
        if moved is not None:
            print(f"{argv[1]}: the Keras evaluation it held is now {moved}")
        return 0
    if len(argv) < 2 or argv[0].startswith("--"):
        print("usage: " + __doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        print("       " + "python scripts/merge_verify.py --set-aside OUT.json", file=sys.stderr)
        return 2
    out, paths = Path(argv[0]), [Path(arg) for arg in argv[1:]]
    try:
        previous = existing_record(out)
        if previous is not None and not is_merge(previous):
            raise MergeError(f"{out} holds another record (run --set-aside {out} first, or move it away)")
        reports = []
        for path in paths:
            try:
                reports.append((path.name, json.loads(path.read_text())))
            except (OSError, json.JSONDecodeError) as error:
                raise MergeError(f"{path}: not a readable JSON report ({error})") from None
        record = merge(reports)
    except MergeError as error:
        print(f"merge_verify: error: {error}", file=sys.stderr)
        return 2
    atomic_write_text(out, json.dumps(record, indent=1) + "\n")
    print(f"{out}: {record['episodes']} games, mean {record['mean']:.1f} +- {record['std']:.1f} "
          f"(standard error {record['standard_error']:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
