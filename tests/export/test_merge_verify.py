"""scripts/merge_verify.py: per-seed verify reports -> one evaluation record (ship_reference's 300 games)."""

from __future__ import annotations

import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from breakout_dqn.export.verify import build_parser

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "merge_verify.py"


def report(seed: int, scores: list[float], *, model: str = "models/m.onnx", epsilon: float = 0.05,
           exit_code: int = 0) -> dict[str, Any]:
    """What `breakout-dqn verify MODEL --min-score 31.8 --episodes N --seed S --json` prints."""
    return {"model": model, "ok": exit_code == 0, "exit_code": exit_code, "checks": [],
            "score": {"episodes": len(scores), "mean": statistics.fmean(scores), "std": statistics.pstdev(scores),
                      "min": min(scores), "max": max(scores), "scores": scores, "min_score": 31.8,
                      "epsilon": epsilon, "seed": seed, "max_frames": 18000, "seconds": 1.5}}


def merge(tmp_path: Path, *reports: dict[str, Any] | str) -> tuple[subprocess.CompletedProcess[str], Path]:
    paths = []
    for index, content in enumerate(reports):
        path = tmp_path / f"verify-{index}.json"
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        paths.append(str(path))
    out = tmp_path / "eval.json"
    done = subprocess.run([sys.executable, str(SCRIPT), str(out), *paths], capture_output=True, text=True)
    return done, out


def test_the_games_of_every_seed_are_pooled_and_each_seed_keeps_a_command_that_replays_it(tmp_path: Path) -> None:
    first, second = [10.0, 50.0, 90.0], [20.0, 400.0]
    done, out = merge(tmp_path, report(0, first), report(1, second, exit_code=4))
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    pooled = first + second
    assert record["episodes"] == 5
    assert record["mean"] == pytest.approx(statistics.fmean(pooled))
    assert record["std"] == pytest.approx(statistics.pstdev(pooled))
    assert record["standard_error"] == pytest.approx(statistics.pstdev(pooled) / 5 ** 0.5)
    assert [run["seed"] for run in record["runs"]] == [0, 1]
    assert record["runs"][1]["exit_code"] == 4 and record["runs"][1]["max"] == 400.0
    assert "epsilon 0.05" in record["protocol"]
    for run in record["runs"]:
        words = shlex.split(run["command"])
        assert words[:2] == ["breakout-dqn", "verify"]
        args = build_parser().parse_args(words[2:])
        assert (args.seed, args.episodes, args.min_score, args.epsilon, str(args.model)) == \
            (run["seed"], run["episodes"], 31.8, 0.05, "models/m.onnx")


@pytest.mark.parametrize("reports, message", [
    ((report(0, [1.0]), report(0, [2.0])), "seed repeats"),
    ((report(0, [1.0]), report(1, [2.0], model="models/other.onnx")), "model"),
    ((report(0, [1.0]), report(1, [2.0], epsilon=0.01)), "epsilon"),
    ((report(0, [1.0]) | {"score": None},), "no games"),
    ((report(0, [1.0], exit_code=3),), "contract check"),
    (("{not json",), "not a readable JSON report"),
])
def test_reports_that_cannot_be_merged_are_refused_and_nothing_is_written(
        tmp_path: Path, reports: tuple[dict[str, Any] | str, ...], message: str) -> None:
    done, out = merge(tmp_path, *reports)
    assert done.returncode == 2
    assert message in done.stderr and done.stderr.count("\n") == 1
    assert not out.exists()


def keras_record(scores: list[float]) -> dict[str, Any]:
    """What `breakout-dqn evaluate MODEL --episodes N --json OUT` writes (the queue's eval-300.json)."""
    return {"episodes": len(scores), "mean": statistics.fmean(scores), "std": statistics.pstdev(scores),
            "min": min(scores), "max": max(scores), "scores": scores}


def set_aside(out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), "--set-aside", str(out)], capture_output=True, text=True)


def test_a_keras_evaluation_under_the_name_is_set_aside_then_the_merge_takes_its_place(tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    keras = json.dumps(keras_record([5.0, 7.0]))
    out.write_text(keras)
    done, _ = merge(tmp_path, report(0, [1.0, 3.0]))
    assert done.returncode == 2 and "holds another record" in done.stderr  # never overwritten
    assert out.read_text() == keras
    moved = set_aside(out)
    assert moved.returncode == 0, moved.stderr
    assert (tmp_path / "eval-keras.json").read_text() == keras and not out.exists()
    done, _ = merge(tmp_path, report(0, [1.0, 3.0]))
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["mean"] == 2.0
    # An earlier merge is what a new one replaces: nothing to set aside, and the merge overwrites it.
    again = set_aside(out)
    assert again.returncode == 0 and again.stdout == ""
    done, _ = merge(tmp_path, report(1, [9.0]))
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["mean"] == 9.0
    assert set_aside(tmp_path / "missing.json").returncode == 0


@pytest.mark.parametrize("content, keras_exists, message", [
    (json.dumps(keras_record([5.0])), True, "exists already"),
    (json.dumps({"mean": 1.0, "runs": []}), False, "neither a merge"),
    ("{not json", False, "not a readable record"),
])
def test_set_aside_refuses_what_it_would_lose_and_moves_nothing(
        tmp_path: Path, content: str, keras_exists: bool, message: str) -> None:
    out = tmp_path / "eval-300.json"
    out.write_text(content)
    keras = tmp_path / "eval-300-keras.json"
    if keras_exists:
        keras.write_text("older")
    done = set_aside(out)
    assert done.returncode == 2
    assert message in done.stderr and done.stderr.count("\n") == 1
    assert out.read_text() == content
    assert (keras.read_text() == "older") if keras_exists else not keras.exists()


def test_every_committed_evaluation_record_is_either_a_merge_or_one_set_aside_would_move(tmp_path: Path) -> None:
    # So that shipping a recorded run again replaces its earlier merge, or keeps its Keras evaluation.
    import importlib.util

    spec = importlib.util.spec_from_file_location("merge_verify", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    records = sorted((SCRIPT.parents[1] / "results").glob("*/eval-*.json"))
    assert records
    merges = 0
    for path in records:
        copy = tmp_path / path.parent.name / path.name
        copy.parent.mkdir(exist_ok=True)
        copy.write_text(path.read_text())
        record = json.loads(copy.read_text())
        if module.is_merge(record):
            merges += 1
            assert module.set_aside(copy) is None and copy.exists(), path
        elif not copy.with_name(f"{copy.stem}-keras.json").exists():
            moved = module.set_aside(copy)
            assert moved is not None and moved.exists() and not copy.exists(), path
    assert merges >= 4  # pqn-s1, pqn-s1-5m, cleanrl-1m, rainbow-lite-3m


def test_games_cut_at_the_frame_cap_are_counted_per_seed_and_pooled(tmp_path: Path) -> None:
    first, second = report(0, [10.0, 20.0]), report(1, [30.0])
    first["score"]["truncated"], second["score"]["truncated"] = 2, 1
    done, out = merge(tmp_path, first, second)
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    assert record["truncated"] == 3 and [run["truncated"] for run in record["runs"]] == [2, 1]
    del second["score"]["truncated"]  # a report from before verify counted them
    done, out = merge(tmp_path, first, second)
    assert json.loads(out.read_text())["truncated"] is None
