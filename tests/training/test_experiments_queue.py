"""scripts/experiments.sh: runs a queue of --auto-resume runs in order, stops behind one that stopped
short, continues where it stopped when started again, and records each finished run once, with a
many-game evaluation of its model."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "experiments.sh"

# A stand-in for breakout-dqn: `train` writes the run directory's files and a checkpoint at --steps
# (or at $STUB_STOP_AT, like a run stopped by SIGTERM, exit 0); `plot` writes its PNG; `evaluate`
# writes its JSON, mean 50 or the run's stub_eval_mean (or fails, exit 1, with $STUB_EVAL_FAILS set:
# killed half-way). Every run's 100 training games score 50.
STUB = f"""#!{sys.executable}
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(" ".join(args) + "\\n")
if args[0] == "plot":
    Path(args[args.index("--out") + 1]).write_bytes(b"png")
    raise SystemExit(0)
if args[0] == "evaluate":
    if os.environ.get("STUB_EVAL_FAILS"):
        raise SystemExit(1)
    mean_file = Path(args[1]).parent / "stub_eval_mean"  # the test's choice of this run's evaluation mean
    mean = float(mean_file.read_text()) if mean_file.exists() else 50.0
    episodes = int(args[args.index("--episodes") + 1])
    Path(args[args.index("--json") + 1]).write_text(json.dumps({{"episodes": episodes, "mean": mean, "std": 30.0}}))
    raise SystemExit(0)
run, steps = Path(args[args.index("--out") + 1]), int(args[args.index("--steps") + 1])
stop_at = int(os.environ.get("STUB_STOP_AT") or 0)
reached = min(steps, stop_at) if stop_at else steps
(run / "checkpoints").mkdir(parents=True, exist_ok=True)
(run / "replay").mkdir(exist_ok=True)
(run / "checkpoints" / f"checkpoint-{{reached:012d}}.npz").write_bytes(b"")
(run / "config.json").write_text("{{}}")
games = [json.dumps({{"type": "game", "step": reached * (i + 1) // 100, "score": 50.0}}) for i in range(100)]
(run / "metrics.jsonl").write_text("\\n".join([*games, json.dumps({{"type": "train", "step": reached}})]) + "\\n")
if reached >= steps:
    (run / "eval.json").write_text(f'{{{{"train_agent_steps": {{reached}}}}}}')
"""

# A stand-in for the queue's python: `-m breakout_dqn.training.average RUN (--last 2|--step S) --out OUT`
# writes OUT's model and average.json (the stub's checkpoints are empty files) and is logged; the
# rest runs the real interpreter.
PYTHON_STUB = f"""#!{sys.executable}
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
if args[:2] != ["-m", "breakout_dqn.training.average"]:
    os.execv(sys.executable, [sys.executable, *args])
with open(os.environ["STUB_LOG"], "a") as log:
    log.write("average " + " ".join(args[2:]) + "\\n")
names = sorted(p.name for p in (Path(args[2]) / "checkpoints").iterdir())
names = [f"checkpoint-{{int(args[args.index('--step') + 1]):012d}}.npz"] if "--step" in args else names[-2:]
out = Path(args[args.index("--out") + 1])
out.mkdir(parents=True)
(out / "model.keras").write_bytes(b"")
(out / "average.json").write_text(json.dumps({{"checkpoints": names, "steps": [int(n[11:23]) for n in names]}}))
"""


@pytest.fixture
def queue(tmp_path: Path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("breakout-dqn", STUB), ("python", PYTHON_STUB)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    queue_file = tmp_path / "queue.txt"
    queue_file.write_text("# name|steps|flags\nfirst|1000|--preset pqn --seed 1\n\nablation-x|500|--n-step 3\n")
    log = tmp_path / "calls.log"
    # What ablations are judged against: a record at their 500 steps, whose games and evaluation score 50.
    base = tmp_path / "base-500"
    base.mkdir()
    (base / "config.json").write_text("{}")
    games = [json.dumps({"type": "game", "step": 5 * (i + 1), "score": 50.0}) for i in range(100)]
    (base / "metrics.jsonl").write_text("\n".join([*games, json.dumps({"type": "train", "step": 500})]) + "\n")
    (base / "eval-300.json").write_text(json.dumps({"episodes": 300, "mean": 50.0, "std": 30.0}))

    def run(*args: str, stop_at: int = 0, eval_fails: bool = False,
            baseline: str = "base-500") -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, BIN=str(bin_dir), RUNS=str(tmp_path / "runs"), RESULTS=str(tmp_path / "results"),
                   BASELINE=str(tmp_path / baseline),
                   QUEUE_FILE=str(queue_file), STUB_LOG=str(log), STUB_STOP_AT=str(stop_at),
                   STUB_EVAL_FAILS="1" if eval_fails else "")
        return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60)

    return run, tmp_path, log


def last_step(record: Path) -> int:
    """The agent step of a record's last metrics line (the stub's train record)."""
    return json.loads((record / "metrics.jsonl").read_text().splitlines()[-1])["step"]


def test_a_run_stopped_short_stops_the_queue_and_the_next_start_continues_it(queue) -> None:
    run, root, log = queue
    stopped = run(stop_at=400)
    assert stopped.returncode == 1
    assert "first stopped at 400 of 1000 steps: run this script again" in stopped.stderr
    assert not (root / "runs" / "ablation-x").exists() and not (root / "results").exists()
    assert "checkpoint at 400 of 1000 agent steps" in run("--list").stdout

    finished = run()
    assert finished.returncode == 0, finished.stderr
    trains = [line for line in log.read_text().splitlines() if line.startswith("train")]
    assert trains == [
        f"train --out {root}/runs/first --auto-resume --steps 1000 --preset pqn --seed 1",
        f"train --out {root}/runs/first --auto-resume --steps 1000 --preset pqn --seed 1",
        f"train --out {root}/runs/ablation-x --auto-resume --steps 500 --n-step 3",
    ]
    record_files = ["config.json", "eval-300.json", "eval.json", "learning_curve.png", "metrics.jsonl"]
    ablation_files = ["comparison.json", *record_files, "vs-baseline-steps.png"]  # set against the baseline
    # first holds two checkpoints (400, 1000): its last two averaged and the older alone are evaluated too
    first_files = sorted(["average.json", "eval-300-at-400.json", "eval-300-avg2.json", *record_files])
    for name, files in (("first", first_files), ("ablation-x", ablation_files)):
        assert sorted(p.name for p in (root / "results" / name).iterdir()) == files
        assert json.loads((root / "results" / name / "eval-300.json").read_text())["episodes"] == 300
    averaged = json.loads((root / "results" / "first" / "average.json").read_text())["checkpoints"]
    assert averaged == ["checkpoint-000000000400.npz", "checkpoint-000000001000.npz"]
    calls = log.read_text().splitlines()
    assert f"average {root}/runs/first --last 2 --out {root}/runs/first-avg2" in calls
    assert f"average {root}/runs/first --step 400 --out {root}/runs/first-at-400" in calls
    assert any(c.startswith(f"evaluate {root}/runs/first-avg2/model.keras --episodes 300") for c in calls)
    assert any(c.startswith(f"evaluate {root}/runs/first-at-400/model.keras --episodes 300") for c in calls)
    assert (root / "runs" / "first-avg2" / "model.keras").is_file()  # kept: ship_reference.sh takes it
    assert not (root / "runs" / "first-at-400").exists()  # one snapshot, evaluated: not kept
    assert not any("ablation-x --last 2" in c for c in calls)  # one checkpoint: nothing to average
    assert (root / "runs" / "first" / "replay").is_dir()  # kept: a run to continue past its steps
    assert not (root / "runs" / "ablation-x" / "replay").exists()  # an ablation that stays out: deleted
    assert "== ablation-x stays out (evaluation gap +0.0 is not above 4.9): its replay is deleted" in finished.stdout
    assert (root / "runs" / "ablation-x" / "checkpoints").is_dir()
    listing = run("--list").stdout
    assert "done (checkpoint at 1000 of 1000 agent steps" in listing
    assert "done (checkpoint at 500 of 500 agent steps" in listing


def test_the_listing_gives_a_stopped_run_its_score_and_the_time_left_at_its_recent_rate(queue) -> None:
    run, root, _ = queue
    (root / "queue.txt").write_text("first|1000000|--preset pqn --seed 1\n")
    run_dir = root / "runs" / "first"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "checkpoint-000000400000.npz").write_bytes(b"")

    def write_rates(rates: list[float]) -> None:
        records = [{"type": "train", "step": 100_000 + 25_000 * i, "steps_per_second": rate, "recent_score": 10.0 + i}
                   for i, rate in enumerate(rates)]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    # 13 train records to 400k: the 3 oldest ran fast (another machine); the last 10 set the rate.
    write_rates([900.0] * 3 + [25.0] * 6 + [50.0] * 4)
    listing = run("--list").stdout
    # 600k steps left at the median of the last 10 rates, 25/s: 24,000 s
    assert ("first                checkpoint at 400000 of 1000000 agent steps, mean of the last 100 training "
            "games 22.0, ~6.7 h left at 25.0 agent steps/s") in listing
    write_rates([900.0] * 3 + [25.0] * 5 + [50.0] * 5)  # median (25 + 50) / 2
    assert "~4.4 h left at 37.5 agent steps/s" in run("--list").stdout
    write_rates([900.0] * 13)
    assert "~11 min left at 900.0 agent steps/s" in run("--list").stdout

    (run_dir / "checkpoints" / "checkpoint-000001000000.npz").write_bytes(b"")
    write_rates([25.0] * 37)  # its last record at 1M: nothing left
    listing = run("--list").stdout
    assert "checkpoint at 1000000 of 1000000 agent steps, mean of the last 100 training games 46.0   (" in listing


def test_a_finished_queue_started_again_records_nothing_twice(queue) -> None:
    run, root, log = queue
    assert run().returncode == 0
    record = root / "results" / "first" / "metrics.jsonl"
    record.write_text("kept\n")
    again = run()
    assert again.returncode == 0 and "queue done" in again.stdout
    assert record.read_text() == "kept\n"
    calls = log.read_text().splitlines()
    assert sum(line.startswith("plot") for line in calls) == 3  # each learning curve, and the ablation's comparison
    assert sum(line.startswith(f"evaluate {root}/runs/") for line in calls) == 2
    assert sum(line.startswith("train") for line in calls) == 2  # finished entries are skipped, not rerun
    assert "== first: done" in again.stdout


def test_a_run_recorded_part_way_under_a_second_name_is_continued_by_a_later_entry(queue) -> None:
    run, root, log = queue
    (root / "queue.txt").write_text("base|1000|--seed 1|base-1k\nablation-x|500|--n-step 3\nbase|3000|--seed 1\n")
    stopped = run(stop_at=2000)  # base reaches 1000 and the ablation 500; then base stops at 2000
    assert stopped.returncode == 1 and "base stopped at 2000 of 3000 steps" in stopped.stderr
    assert last_step(root / "results" / "base-1k") == 1000
    assert not (root / "results" / "base").exists()
    assert (root / "runs" / "base" / "replay").is_dir()  # not an ablation: kept to go on
    listing = run("--list").stdout.splitlines()
    assert listing[0].startswith("base-1k") and "done (checkpoint at 2000 of 1000 agent steps" in listing[0]
    assert listing[2].startswith("base ") and "checkpoint at 2000 of 3000 agent steps" in listing[2]

    finished = run()
    assert finished.returncode == 0, finished.stderr
    assert last_step(root / "results" / "base") == 3000
    assert last_step(root / "results" / "base-1k") == 1000  # not overwritten
    trains = [line.split(" --auto-resume ")[1] for line in log.read_text().splitlines() if line.startswith("train")]
    assert trains == ["--steps 1000 --seed 1", "--steps 500 --n-step 3", "--steps 3000 --seed 1",
                      "--steps 3000 --seed 1"]


def test_a_record_whose_evaluation_was_cut_short_is_made_again(queue) -> None:
    run, root, log = queue
    cut = run(eval_fails=True)  # the session ended during the 300 games
    assert cut.returncode == 1 and "evaluation stopped: run this script again to record it" in cut.stderr
    assert not (root / "results" / "first" / "eval.json").exists()  # the record is not marked done
    assert "done" not in run("--list").stdout.splitlines()[0]
    assert not (root / "runs" / "ablation-x").exists()

    finished = run()
    assert finished.returncode == 0, finished.stderr
    assert json.loads((root / "results" / "first" / "eval-300.json").read_text())["episodes"] == 300
    assert (root / "results" / "first" / "eval.json").is_file()
    evaluations = [line for line in log.read_text().splitlines() if line.startswith("evaluate")]
    assert evaluations[0] == evaluations[1] == (f"evaluate {root}/runs/first/model.keras --episodes 300 "
                                                f"--num-envs 16 --json {root}/results/first/eval-300.json")


def test_a_recorded_entry_is_not_trained_again_when_its_run_directory_is_gone(queue) -> None:
    run, root, log = queue
    (root / "queue.txt").write_text("base|1000|--seed 1|base-1k\nablation-x|500|--n-step 3\nbase|3000|--seed 1\n")
    assert run(stop_at=2000).returncode == 1  # base-1k and ablation-x recorded; base stopped at 2000
    import shutil
    shutil.rmtree(root / "runs")  # a new machine: the checkout and its records, no run directories
    log.write_text("")
    listing = run("--list").stdout.splitlines()
    assert "done (checkpoint at 0 of 1000 agent steps" in listing[0]
    assert "done (checkpoint at 0 of 500 agent steps" in listing[1]
    assert "done" not in listing[2]  # base to 3000 was never recorded: it starts over

    again = run()
    assert again.returncode == 0, again.stderr
    assert "== base-1k: done" in again.stdout and "== ablation-x: done" in again.stdout
    trains = [line.split(" --auto-resume ")[1] for line in log.read_text().splitlines() if line.startswith("train")]
    assert trains == ["--steps 3000 --seed 1"]
    assert (root / "results" / "base-1k" / "eval.json").read_text() == '{"train_agent_steps": 1000}'


def test_an_ablation_that_joins_or_cannot_be_judged_keeps_its_replay(queue) -> None:
    run, root, log = queue
    (root / "runs" / "ablation-x").mkdir(parents=True)
    (root / "runs" / "ablation-x" / "stub_eval_mean").write_text("80")  # +30 over the baseline's 50: joins
    finished = run()
    assert finished.returncode == 0, finished.stderr
    assert "== ablation-x: joins: its replay is kept" in finished.stdout
    assert (root / "runs" / "ablation-x" / "replay").is_dir()
    record = root / "results" / "ablation-x"
    (comparison,) = json.loads((record / "comparison.json").read_text())  # the verdict stays in the record
    assert comparison["verdict"].startswith("joins") and comparison["eval_mean"] == 80.0
    plots = [line.split() for line in log.read_text().splitlines() if str(record / "vs-baseline-steps.png") in line]
    assert plots == [["plot", str(root / "base-500"), str(record), "--labels", "base-500", "(baseline)",
                      "ablation-x", "--out", str(record / "vs-baseline-steps.png")]]

    (root / "queue.txt").write_text("ablation-y|500|--dueling\n")
    unjudged = run(baseline="no-such-record")
    assert unjudged.returncode == 0, unjudged.stderr
    assert "== ablation-y: not judged against" in unjudged.stdout
    assert "no-such-record: not a directory" in unjudged.stderr
    assert (root / "runs" / "ablation-y" / "replay").is_dir()
    assert not (root / "results" / "ablation-y" / "comparison.json").exists()
    assert not (root / "results" / "ablation-y" / "vs-baseline-steps.png").exists()


def test_a_fork_starts_from_a_copy_of_its_source_at_that_step_and_changes_its_settings(queue) -> None:
    run, root, log = queue
    (root / "queue.txt").write_text("base|1000|--seed 1|base-1k\n"
                                    "fork-x|1500|--seed 1 --precision float32|fork-x-1500|base@1000\n"
                                    "base|1500|--seed 1|base-1500\n")
    finished = run()
    assert finished.returncode == 0, finished.stderr
    assert f"== fork-x: forked from {root}/runs/base at 1000 agent steps" in finished.stdout
    trains = [line.split(" --out ")[1] for line in log.read_text().splitlines() if line.startswith("train")]
    assert trains == [f"{root}/runs/base --auto-resume --steps 1000 --seed 1",
                      f"{root}/runs/fork-x --auto-resume --resume --steps 1500 --seed 1 --precision float32",
                      f"{root}/runs/base --auto-resume --steps 1500 --seed 1"]
    fork_checkpoints = sorted(p.name for p in (root / "runs" / "fork-x" / "checkpoints").iterdir())
    assert fork_checkpoints == ["checkpoint-000000001000.npz", "checkpoint-000000001500.npz"]  # the copy, then its own
    assert not (root / "runs" / "fork-x" / "replay").exists()  # recorded and not continued: deleted
    assert "== fork-x-1500: a fork is not continued: its replay is deleted" in finished.stdout
    assert (root / "runs" / "base" / "replay").is_dir()  # the source goes on
    assert last_step(root / "results" / "fork-x-1500") == 1500 and last_step(root / "results" / "base-1500") == 1500

    log.write_text("")
    assert run().returncode == 0 and "train" not in log.read_text()  # recorded: neither copied nor trained again


def test_a_fork_whose_source_is_not_at_its_step_is_refused_and_nothing_is_copied(queue) -> None:
    run, root, log = queue
    (root / "queue.txt").write_text("base|2000|--seed 1\n"
                                    "fork-x|2500|--seed 1 --precision float32|fork-x-2500|base@1000\n")
    refused = run()
    assert refused.returncode == 1
    assert f"cannot fork {root}/runs/base at 1000 agent steps: its newest checkpoint is at 2000" in refused.stderr
    assert not (root / "runs" / "fork-x").exists() and not (root / "runs" / "fork-x.forking").exists()
    assert [line for line in log.read_text().splitlines() if line.startswith("train")] == [
        f"train --out {root}/runs/base --auto-resume --steps 2000 --seed 1"]


def built_in_queue() -> list[tuple[str, list[str], str]]:
    """The script's own QUEUE entries: (name, flags, record name)."""
    text = SCRIPT.read_text()
    body = text[text.index("\nQUEUE=(\n") + len("\nQUEUE=(\n"):]
    body = body[:body.index("\n)\n")]
    entries = []
    for line in body.splitlines():
        line = line.strip()
        if line.startswith('"'):
            name, _steps, flags, *label = line[1:line.index('"', 1)].split("|")
            entries.append((name, flags.split(), label[0] if label else name))
    return entries


def entry_config(flags: list[str]) -> dict:
    """The config an entry's flags resolve to under today's defaults, as config.json holds it."""
    from breakout_dqn.training.arguments import build_parser
    from breakout_dqn.training.config import resolve

    return resolve(vars(build_parser().parse_args(flags))).to_json()


def test_each_built_in_entry_recorded_or_to_run_is_a_valid_config_and_its_record_matches_it() -> None:
    from breakout_dqn.training.run_directory import COMPUTE_SETTINGS, PIECE_SETTINGS

    results = SCRIPT.parents[1] / "results"
    entries = built_in_queue()
    assert len(entries) >= 9
    ignored = PIECE_SETTINGS | COMPUTE_SETTINGS
    for _name, flags, label in entries:
        config = entry_config(flags)
        record = results / label / "config.json"
        if record.exists():  # the flags still name the run behind the record, under today's defaults
            recorded = json.loads(record.read_text())
            differences = {key for key in config.keys() - ignored if recorded.get(key, config[key]) != config[key]}
            assert not differences, (label, sorted(differences))


def test_the_ablations_to_run_change_one_setting_of_the_baseline_record_besides_the_arithmetic() -> None:
    from breakout_dqn.training.run_directory import COMPUTE_SETTINGS, PIECE_SETTINGS

    baseline_dir = SCRIPT.read_text().split("BASELINE=${BASELINE:-$RESULTS/", 1)[1].split("}", 1)[0]
    from breakout_dqn.training.config import load_config

    baseline = load_config(SCRIPT.parents[1] / "results" / baseline_dir / "config.json").to_json()
    ablations = [(name, flags) for name, flags, _ in built_in_queue() if name.startswith("ablation-dueling-")]
    assert len(ablations) == 3
    for name, flags in ablations:
        config = entry_config(flags)
        changed = {key for key in config.keys() - PIECE_SETTINGS - COMPUTE_SETTINGS if baseline[key] != config[key]}
        if changed == {"batch_size", "train_frequency"}:  # one change: bigger batches at the same replay ratio
            assert config["batch_size"] / config["train_frequency"] == baseline["batch_size"] / baseline[
                "train_frequency"], name
            continue
        assert len(changed) == 1, (name, sorted(changed))
        assert config["precision"] == "bfloat16"  # the baseline's arithmetic (it ran bfloat16 on auto)


def test_each_comparison_to_run_changes_one_setting_of_the_run_it_is_compared_with() -> None:
    # The forks against their source's record, the PQN learning-rate decay against the shipped recipe's,
    # as the ablation rule counts changes
    from breakout_dqn.training.ablation import changed_keys

    entries = {label: flags for _name, flags, label in built_in_queue()}
    against = {"fork-dueling-f32-s1-4m": ("dueling-s1-3m", ["precision"]),
               "fork-dueling-lrdecay-s1-4m": ("dueling-s1-3m", ["learning_rate_decay_steps"]),
               "pqn-eps05-lrdecay-s1-10m": ("pqn-eps05-s1-10m", ["learning_rate_decay_steps"]),
               "dueling-lrdecay-s1-4m": ("dueling-s1-4m", ["learning_rate_decay_steps"])}
    for label, (reference, setting) in against.items():
        assert changed_keys(entry_config(entries[reference]), entry_config(entries[label])) == setting, label
