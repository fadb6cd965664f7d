"""The ablation rule (``python -m breakout_dqn.training.ablation``) on hand-made records whose
verdicts are computed by hand: a clear win joins, a gap inside two combined standard errors or a
lower training curve stays out, an unfinished run is said to be so, and a bad record is refused."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from breakout_dqn.training import ablation

BASE_CONFIG = {"preset": "default", "seed": 1, "n_step": 1, "double_dqn": False, "out": "runs/default-s1",
               "steps": 1000, "resume": True}


def write_record(root: Path, name: str, *, config: dict | None = None, game_scores: list[float],
                 final_step: int = 1000, eval_scores: list[float] | None = None,
                 games_after: list[float] = ()) -> Path:
    """A record: games evenly spread up to ``final_step`` (then ``games_after`` beyond it), a train
    record at ``final_step``, and an evaluation of ``eval_scores`` (population std, like evaluate)."""
    path = root / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps({**BASE_CONFIG, "out": f"runs/{name}", **(config or {})}))
    lines = []
    for index, score in enumerate(game_scores):
        lines.append({"type": "game", "step": (index + 1) * final_step // len(game_scores), "score": score})
    for index, score in enumerate(games_after):
        lines.append({"type": "game", "step": final_step + index + 1, "score": score})
    lines.append({"type": "train", "step": final_step, "recent_score": None})
    (path / "metrics.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    if eval_scores is not None:
        mean = sum(eval_scores) / len(eval_scores)
        std = math.sqrt(sum((s - mean) ** 2 for s in eval_scores) / len(eval_scores))
        (path / "eval-300.json").write_text(json.dumps({"episodes": len(eval_scores), "mean": mean, "std": std,
                                                        "scores": eval_scores}))
    return path


def spread(mean: float, half_width: float, games: int = 300) -> list[float]:
    """``games`` scores alternating mean +- half_width: that mean, std half_width."""
    return [mean + (half_width if index % 2 else -half_width) for index in range(games)]


@pytest.fixture
def baseline(tmp_path: Path) -> Path:
    # Last 100 games: 50 x 80 then 50 x 100 -> 90.0. Evaluation 90 +- 30 over 300 games: SE sqrt(3).
    return write_record(tmp_path, "baseline", game_scores=[0.0] * 50 + [80.0] * 50 + [100.0] * 50,
                        eval_scores=spread(90.0, 30.0))


def run(capsys: pytest.CaptureFixture[str], *args: Path | str) -> tuple[int, str, str]:
    status = ablation.main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def row(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(f"| {name} "))


def test_clear_win_joins_and_names_its_one_change(tmp_path, baseline, capsys):
    better = write_record(tmp_path, "ablation-nstep3", config={"n_step": 3}, game_scores=[95.0] * 100,
                          eval_scores=spread(100.0, 30.0))
    status, out, _ = run(capsys, baseline, better)
    assert status == 0
    # threshold: 2 * sqrt(3 + 3) = 4.90; gap +10.0 passes, 95.0 >= 90.0.
    assert row(out, "ablation-nstep3") == ("| ablation-nstep3 | n_step 1 -> 3 | 95.0 | 100.0 +- 1.7 | +10.0 | 4.9 "
                                           "| joins |")
    assert row(out, "baseline") == "| baseline | (baseline) | 90.0 | 90.0 +- 1.7 | | | |"


def test_a_record_from_before_a_rename_or_the_per_algorithm_settings_differs_only_where_the_runs_did(
        tmp_path, baseline, capsys):
    # As written before the config split: the frame cap's old name, PQN's settings in a DQN record,
    # no backend or device (added later, at the defaults those runs had).
    old = write_record(tmp_path, "old", config={"max_frames_per_episode": 108_000, "rollout_steps": 32,
                                                "q_lambda": 0.65, "batch_size": 32, "train_frequency": 4},
                       game_scores=[90.0] * 100, eval_scores=spread(90.0, 30.0))
    new = write_record(tmp_path, "new", config={"max_frames": 108_000, "backend": "auto", "device": "auto",
                                                "batch_size": 64, "train_frequency": 8},
                       game_scores=[90.0] * 100, eval_scores=spread(90.0, 30.0))
    status, out, _ = run(capsys, old, new)
    assert status == 0
    assert row(out, "new").startswith("| new | batch_size 32 -> 64; train_frequency 4 -> 8 | 90.0 |")


def test_gap_inside_two_standard_errors_stays_out(tmp_path, baseline, capsys):
    close = write_record(tmp_path, "ablation-double", config={"double_dqn": True}, game_scores=[95.0] * 100,
                         eval_scores=spread(94.0, 30.0))
    status, out, _ = run(capsys, baseline, close)
    assert status == 0
    assert "stays out (evaluation gap +4.0 is not above 4.9)" in row(out, "ablation-double")
    assert "double_dqn False -> True" in row(out, "ablation-double")


def test_lower_training_curve_stays_out_even_with_a_better_evaluation(tmp_path, baseline, capsys):
    lower = write_record(tmp_path, "ablation-dueling", config={"dueling": True}, game_scores=[89.0] * 100,
                         eval_scores=spread(120.0, 30.0))
    _, out, _ = run(capsys, baseline, lower)
    assert "stays out (last-100 mean 89.0 is below the baseline's 90.0)" in row(out, "ablation-dueling")


@pytest.mark.parametrize("evaluation, verdict", [
    (120.0, "joins (on the evaluation alone: epsilon_end changes the training games)"),
    (92.0, "stays out (evaluation gap +2.0 is not above 4.9) (on the evaluation alone: epsilon_end changes "
           "the training games)"),
])
def test_an_exploration_change_is_judged_on_the_evaluation_alone(tmp_path, baseline, capsys, evaluation, verdict):
    # Trained at a higher epsilon its training games score lower (60 against 90) for the random actions
    # alone; the last-100 leg would wrongly keep it out.
    noisier = write_record(tmp_path, "eps05", config={"epsilon_end": 0.05}, game_scores=[60.0] * 100,
                           eval_scores=spread(evaluation, 30.0))
    _, out, _ = run(capsys, baseline, noisier)
    assert row(out, "eps05").endswith(f"| {verdict} |")


def test_games_after_the_baseline_step_do_not_count(tmp_path, baseline, capsys):
    # At step 1000 its last 100 games average 85 (below 90); the 100 games of 500 after it must not lift it.
    longer = write_record(tmp_path, "ablation-longer", config={"n_step": 3}, game_scores=[85.0] * 100,
                          games_after=[500.0] * 100, eval_scores=spread(100.0, 30.0))
    _, out, _ = run(capsys, baseline, longer)
    assert "| 85.0 |" in row(out, "ablation-longer")
    assert "stays out" in row(out, "ablation-longer")


def test_unfinished_run_is_not_judged(tmp_path, baseline, capsys):
    partial = write_record(tmp_path, "ablation-partial", config={"n_step": 3}, game_scores=[50.0] * 100,
                           final_step=400)
    status, out, _ = run(capsys, baseline, partial)
    assert status == 0
    assert row(out, "ablation-partial").endswith(
        "| not finished (at 400 of 1,000 agent steps, no evaluation yet) |")


def test_json_output(tmp_path, baseline, capsys):
    better = write_record(tmp_path, "ablation-nstep3", config={"n_step": 3}, game_scores=[95.0] * 100,
                          eval_scores=spread(100.0, 30.0))
    status, _, _ = run(capsys, baseline, better, "--json", tmp_path / "out.json")
    assert status == 0
    (item,) = json.loads((tmp_path / "out.json").read_text())
    assert item["verdict"] == "joins" and item["changes"] == ["n_step 1 -> 3"]
    assert item["difference"] == pytest.approx(10.0) and item["threshold"] == pytest.approx(2 * math.sqrt(6))


@pytest.mark.parametrize("damage", ["no-eval", "bad-eval", "not-a-record", "missing"])
def test_bad_baseline_or_record_is_refused_with_one_line(tmp_path, baseline, capsys, damage):
    other = write_record(tmp_path, "ablation-x", config={"n_step": 3}, game_scores=[95.0] * 100,
                         eval_scores=spread(100.0, 30.0))
    if damage == "no-eval":
        (baseline / "eval-300.json").unlink()
        expected = "the baseline has no eval-300.json"
    elif damage == "bad-eval":
        (other / "eval-300.json").write_text('{"mean": 1')
        expected = "eval-300.json: not an evaluation record"
    elif damage == "not-a-record":
        (other / "metrics.jsonl").unlink()
        expected = "no metrics.jsonl (not a run's record)"
    else:
        other = tmp_path / "nowhere"
        expected = "nowhere: not a directory"
    status, out, err = run(capsys, baseline, other)
    assert status == 2 and out == ""
    assert expected in err and err.count("\n") == 1


def test_a_compute_path_change_is_judged_on_whether_it_costs_score(tmp_path, baseline, capsys):
    # threshold 4.9 (as above): -4.0 is within it, -6.0 is not; the training curve is reported, not judged.
    same = write_record(tmp_path, "bf16", config={"precision": "bfloat16", "xla": False},
                        game_scores=[70.0] * 100, eval_scores=spread(86.0, 30.0))
    worse = write_record(tmp_path, "bf16-worse", config={"precision": "bfloat16"}, game_scores=[95.0] * 100,
                         eval_scores=spread(84.0, 30.0))
    mixed = write_record(tmp_path, "bf16-nstep", config={"precision": "bfloat16", "n_step": 3},
                         game_scores=[95.0] * 100, eval_scores=spread(86.0, 30.0))
    status, out, _ = run(capsys, baseline, same, worse, mixed)
    assert status == 0
    assert row(out, "bf16") == ("| bf16 | precision 'auto' -> 'bfloat16'; xla None -> False | 70.0 | 86.0 +- 1.7 "
                                "| -4.0 | 4.9 | costs no score (gap -4.0 is within -4.9) |")
    assert "| costs score (gap -6.0 is below -4.9) |" in row(out, "bf16-worse")
    assert "stays out (evaluation gap -4.0 is not above 4.9)" in row(out, "bf16-nstep")  # not only compute


def test_a_run_on_auto_is_compared_by_the_path_it_logged(tmp_path, baseline, capsys):
    # The baseline ran bfloat16/oneDNN explicitly; the ablation ran `auto`, which took the same path on
    # every piece: only its own change is listed. One that took two paths keeps `auto` and names both.
    bf16_base = write_record(tmp_path, "bf16-base", config={"precision": "bfloat16", "xla": False},
                             game_scores=[0.0] * 50 + [80.0] * 50 + [100.0] * 50, eval_scores=spread(90.0, 30.0))
    same_path = write_record(tmp_path, "ablation-double", config={"double_dqn": True, "precision": "auto",
                                                                  "xla": None},
                             game_scores=[95.0] * 100, eval_scores=spread(100.0, 30.0))
    two_paths = write_record(tmp_path, "ablation-split", config={"double_dqn": True, "precision": "auto",
                                                                 "xla": None},
                             game_scores=[95.0] * 100, eval_scores=spread(100.0, 30.0))
    for record, paths in ((same_path, ["bfloat16/oneDNN", "bfloat16/oneDNN"]),
                          (two_paths, ["bfloat16/oneDNN", "float32/XLA"])):
        with (record / "metrics.jsonl").open("a") as metrics:
            for index, path in enumerate(paths):
                metrics.write(json.dumps({"type": "train", "step": 500 * index + 1, "compute": path}) + "\n")
    status, out, _ = run(capsys, bf16_base, same_path, two_paths)
    assert status == 0
    assert row(out, "ablation-double").startswith("| ablation-double | double_dqn False -> True | 95.0 |")
    assert row(out, "ablation-double").endswith("| joins |")
    assert ("precision 'bfloat16' -> 'auto (bfloat16/oneDNN, float32/XLA)'; xla False -> None"
            in row(out, "ablation-split"))


def test_at_prints_each_record_s_last_100_mean_at_those_steps_and_a_dash_where_a_run_has_not_reached_one(
        tmp_path, baseline, capsys):
    # Halfway (500 of 1000 steps): 50 games of 20 at steps 10..500 -> 20.0 at 500, not reached at 1,000.
    halfway = write_record(tmp_path, "ablation-nstep3", config={"n_step": 3}, game_scores=[20.0] * 50,
                           final_step=500)
    status, out, _ = run(capsys, baseline, halfway, "--at", "500,1_000")
    assert status == 0
    assert "not finished (at 500 of 1,000 agent steps, no evaluation yet)" in row(out, "ablation-nstep3")
    curve = out.split("\n\n", 1)[1]
    assert curve.splitlines()[0] == "| record | last-100 mean at 500 | last-100 mean at 1,000 |"
    # The baseline's 150 games end at steps (i+1)*1000//150: the first 75 by step 500, 50 x 0 then 25 x 80
    # -> 2000 / 75 = 26.7; at 1,000 the last 100, 50 x 80 then 50 x 100 -> 90.0.
    assert row(curve, "baseline") == "| baseline | 26.7 | 90.0 |"
    assert row(curve, "ablation-nstep3") == "| ablation-nstep3 | 20.0 | - |"


@pytest.mark.parametrize("value", ["250k", "0", ","])
def test_at_with_bad_steps_is_a_usage_error(tmp_path, baseline, capsys, value):
    with pytest.raises(SystemExit) as exit_info:
        ablation.main([str(baseline), str(baseline), "--at", value])
    assert exit_info.value.code == 2
    assert "--at" in capsys.readouterr().err
