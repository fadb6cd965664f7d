"""The gate writes only candidates; only a model that passed both gates is released (issue 44, finding 3).

The rendered gate Job is read step by step (average, export, verify, promote, in that order, each
only if the one before succeeded), its floor is held to the shipped model's record, its average step
is run on a run directory (retried, and against a finished average of other checkpoints), every
training command keeps the checkpoints that average needs, and its promote step
(deploy/k8s/gate/promote_release.py) is run against the shipped model.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from k8s_helpers import (
    DEPLOY,
    REPO,
    command_line,
    container,
    container_env,
    find,
    local_command,
    needs_kubectl,
    pod_spec,
    policy_action,
    render,
    shell_redirect,
    train_config,
    with_object,
)

from breakout_dqn.errors import ExitCode
from breakout_dqn.files import file_sha256
from breakout_dqn.training.average import AverageError
from tests.fake_runs import make_run

RECORD = REPO / "results" / "pqn-eps05-s1-10m-avg2" / "eval-300.json"  # the shipped model's 300 games
RECIPE = REPO / "results" / "pqn-eps05-s1-10m" / "config.json"  # the shipped model's training settings
# The averages of a run's last two checkpoints measured so far (the shipped model is one: pqn-eps05-s1-10m-avg2).
AVERAGE_RECORDS = sorted(REPO.glob("results/pqn-*-avg2/average.json"))
LAST = 2  # the gate averages a run's last two checkpoints, as the shipped model is made
SHIPPED = REPO / "models" / "breakout-dqn.onnx"
PROMOTE = DEPLOY / "gate" / "promote_release.py"


def gate_kustomizations() -> list[str]:
    return with_object("Job", "breakout-dqn-gate")


def flag(argv: list[str], name: str) -> str:
    (value,) = [arg.split("=", 1)[1] for arg in argv if arg.startswith(f"{name}=")]
    return value


def wrapper_directories(step: dict, index: int) -> tuple[str, str]:
    """The run and OUT directories the average step's shell checks, for one completion index."""
    match = re.search(r"^run=(\S+) out=(\S+)$", step["command"][2], re.MULTILINE)
    assert match, step["command"]
    run, out = (path.replace("$SEED", str(index)) for path in match.groups())
    return run, out


@needs_kubectl
@pytest.mark.parametrize("directory", gate_kustomizations())
def test_the_gate_averages_then_exports_the_average_and_promotes_only_after_verify(directory: str) -> None:
    objects = render(directory)
    spec = pod_spec(find(objects, "Job", "breakout-dqn-gate"))
    # In order, each after the last: train run -> average -> export -> verify -> promote.
    assert [c["name"] for c in spec["initContainers"]] == ["average", "export", "verify"]
    assert [c["name"] for c in spec["containers"]] == ["promote"]  # runs only once all three exited 0
    train_objects = render("train")
    train_spec = pod_spec(find(train_objects, "Job", "breakout-dqn-train"))
    for index in range(3):
        average = command_line(spec, container(spec, "average"), objects, index)
        export = command_line(spec, container(spec, "export"), objects, index)
        verify_cont = container(spec, "verify")
        verify = command_line(spec, verify_cont, objects, index)
        promote = command_line(spec, container(spec, "promote"), objects, index)
        candidate = flag(export, "--out")
        trained = flag(command_line(train_spec, container(train_spec, "train"), train_objects, index), "--out")
        averaged = flag(average, "--out")
        # This seed's run, its last two checkpoints averaged into a directory of the gate's own.
        assert average == ["python", "-m", "breakout_dqn.training.average", trained, f"--last={LAST}",
                           f"--out={averaged}"], average
        assert averaged.startswith("/models/averaged/") and not averaged.startswith(f"{trained}/"), averaged
        assert wrapper_directories(container(spec, "average"), index) == (trained, averaged)  # what its shell checks
        assert export[:3] == ["breakout-dqn", "export", f"{averaged}/model.keras"]  # the average, not the snapshot
        assert candidate.startswith("/models/candidates/"), candidate
        assert verify[:3] == ["breakout-dqn", "verify", candidate] and "--json" in verify
        report = shell_redirect(verify_cont, container_env(spec, verify_cont, objects, index))
        assert report.startswith("/models/candidates/"), report
        assert flag(promote, "--candidate") == candidate and flag(promote, "--verify-report") == report
        assert flag(promote, "--min-score") == flag(verify, "--min-score")
        releases = flag(promote, "--releases")
        # Nothing but the promote step names the releases; average, export and verify name no release.
        assert not any(releases in arg for arg in [*average, *export, *verify]), (average, export, verify)
        assert releases.startswith("/models/") and not candidate.startswith(releases)


@needs_kubectl
@pytest.mark.parametrize("directory", gate_kustomizations())
def test_the_floor_is_the_shipped_models_mean_less_two_standard_errors_of_the_gates_games(directory: str) -> None:
    objects = render(directory)
    spec = pod_spec(find(objects, "Job", "breakout-dqn-gate"))
    verify = command_line(spec, container(spec, "verify"), objects)
    record = json.loads(RECORD.read_text())
    assert record["model"] == "models/breakout-dqn.onnx" and record["episodes"] >= 100
    episodes = int(flag(verify, "--episodes"))
    floor = math.floor(record["mean"] - 2 * record["std"] / math.sqrt(episodes))
    assert float(flag(verify, "--min-score")) == floor, (flag(verify, "--min-score"), floor)


@needs_kubectl
@pytest.mark.parametrize("directory", gate_kustomizations())
def test_each_seeds_verdict_fails_that_seed_only(directory: str) -> None:
    job = find(render(directory), "Job", "breakout-dqn-gate")
    assert pod_spec(job)["restartPolicy"] == "Never" and job["spec"]["backoffLimitPerIndex"] >= 1
    rules = job["spec"]["podFailurePolicy"]["rules"]
    (fail,) = [rule for rule in rules if rule["action"] == "FailIndex"]
    assert "containerName" not in fail["onExitCodes"]  # average's verdicts, export's and verify's
    assert set(fail["onExitCodes"]["values"]) == {ExitCode.USAGE, ExitCode.CONTRACT, ExitCode.GATE}
    assert ExitCode.FAILURE not in fail["onExitCodes"]["values"]  # an I/O error is retried
    # The average step: a run that cannot be averaged (too few checkpoints, another network, an unreadable
    # checkpoint) is the tool's exit 2, and so is its shell's refusal of another finished average: deterministic.
    assert AverageError.exit_code == ExitCode.USAGE
    assert policy_action(rules, "average", ExitCode.USAGE) == "FailIndex"
    assert policy_action(rules, "average", ExitCode.FAILURE) is None  # e.g. a failed write: retried
    script = container(pod_spec(job), "average")["command"][2]
    assert {int(code) for code in re.findall(r"\bexit (\d+)", script)} <= {ExitCode.OK, ExitCode.USAGE}, script


@needs_kubectl
@pytest.mark.parametrize("directory", with_object("Job", "breakout-dqn-train"))
def test_every_training_command_keeps_the_checkpoints_the_gate_averages(directory: str) -> None:
    """The shipped model averages a run's last two checkpoints, 250,000 agent steps apart: every training command
    (base and overlays) checkpoints at that interval and keeps at least two, so the gate averages the same window."""
    recipe = json.loads(RECIPE.read_text())
    config = train_config(directory)
    assert config.checkpoint_every == recipe["checkpoint_every"] == 250_000, (directory, config.checkpoint_every)
    assert config.keep_checkpoints >= max(LAST, recipe["keep_checkpoints"]), (directory, config.keep_checkpoints)


def test_the_measured_averages_are_of_the_window_the_gate_averages() -> None:
    recipe = json.loads(RECIPE.read_text())
    rollout = recipe["num_envs"] * recipe["rollout_steps"]  # a checkpoint is written at the end of a rollout
    assert AVERAGE_RECORDS
    for path in AVERAGE_RECORDS:
        steps = json.loads(path.read_text())["steps"]
        assert len(steps) == LAST, path
        assert all(abs(newer - older - recipe["checkpoint_every"]) < rollout
                   for older, newer in itertools.pairwise(steps)), (path, steps)


@needs_kubectl
def test_the_average_step_survives_a_retry_and_never_replaces_a_finished_average(
        tmp_path: Path, keras_model_path: Path) -> None:
    objects = render("gate")
    job = find(objects, "Job", "breakout-dqn-gate")
    spec, rules = pod_spec(job), job["spec"]["podFailurePolicy"]["rules"]
    step = container(spec, "average")
    volume = tmp_path / "volume"

    def run_step(index: int) -> subprocess.CompletedProcess:
        env = {**os.environ, **container_env(spec, step, objects, index), "PYTHONPATH": str(REPO),
               "TF_CPP_MIN_LOG_LEVEL": "3"}
        return subprocess.run(local_command(spec, step, objects, index, volume), capture_output=True, text=True,
                              timeout=600, env=env, cwd=tmp_path)

    argv = local_command(spec, step, objects, 1, volume)
    run, out = Path(argv[argv.index("breakout_dqn.training.average") + 1]), Path(flag(argv, "--out"))
    make_run(run, keras_model_path, [100, 200, 300])
    # What an interrupted attempt leaves: the tool's staging directory, an OUT without average.json.
    (out.parent / f".{out.name}.partial").mkdir(parents=True)
    out.mkdir()
    (out / "stray").write_text("an unfinished attempt")

    first = run_step(1)
    assert first.returncode == 0, first.stdout + first.stderr
    assert json.loads((out / "average.json").read_text())["steps"] == [200, 300]  # the last two
    assert sorted(p.name for p in out.iterdir()) == ["average.json", "checkpoints", "config.json", "metrics.jsonl",
                                                      "model.keras"]
    assert not (out.parent / f".{out.name}.partial").exists()
    finished = (out / "model.keras").stat()

    # A retried pod (a later step failed with exit 1): nothing to do, nothing rewritten.
    again = run_step(1)
    assert again.returncode == 0 and not again.stdout, again.stdout + again.stderr
    assert (out / "model.keras").stat().st_ino == finished.st_ino
    assert (out / "model.keras").stat().st_mtime_ns == finished.st_mtime_ns

    # The run changed under a finished average (retrained, or trained on): refused, the average left as it was.
    make_run(run, keras_model_path, [300], offset=0.5)  # the same name, other bytes
    assert run_step(1).returncode == ExitCode.USAGE
    make_run(run, keras_model_path, [400])  # a newer checkpoint
    refused = run_step(1)
    assert refused.returncode == ExitCode.USAGE and "move it away" in refused.stderr, refused.stderr
    assert policy_action(rules, "average", refused.returncode) == "FailIndex"
    assert json.loads((out / "average.json").read_text())["steps"] == [200, 300]
    assert (out / "model.keras").stat().st_mtime_ns == finished.st_mtime_ns

    # A run with one checkpoint cannot be averaged: the tool's exit 2, nothing written.
    argv = local_command(spec, step, objects, 2, volume)
    make_run(Path(argv[argv.index("breakout_dqn.training.average") + 1]), keras_model_path, [100])
    short = run_step(2)
    assert short.returncode == ExitCode.USAGE and "fewer than --last 2" in short.stderr, short.stderr
    assert not Path(flag(argv, "--out")).exists()


def promote(tmp_path: Path, report: dict | None, candidate: Path | None = None) -> subprocess.CompletedProcess:
    """Run promote_release.py as the gate's promote step does, on a copy of the shipped model."""
    candidate = candidate or tmp_path / "candidates" / "seed-1.onnx"
    if not candidate.exists():
        candidate.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SHIPPED, candidate)
    report_path = tmp_path / "candidates" / "seed-1.verify.json"
    if report is not None:
        report_path.write_text(json.dumps(report))
    return subprocess.run(
        [sys.executable, str(PROMOTE), f"--candidate={candidate}", f"--verify-report={report_path}",
         "--min-score=339", f"--releases={tmp_path / 'releases'}", "--seed=1"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})


def passed(candidate: Path, mean: float = 360.0, floor: float = 339.0) -> dict:
    """A verify report as `breakout-dqn verify --json` writes it (the keys promote reads)."""
    return {"model": str(candidate), "ok": True, "exit_code": 0,
            "score": {"episodes": 30, "mean": mean, "min_score": floor}}


def test_promote_releases_a_passed_candidate_once_under_its_sha256(tmp_path: Path) -> None:
    candidate = tmp_path / "candidates" / "seed-1.onnx"
    first = promote(tmp_path, passed(candidate), candidate)
    assert first.returncode == 0, first.stderr
    record = json.loads(first.stdout.strip().splitlines()[-1])
    sha256 = file_sha256(SHIPPED)
    release = tmp_path / "releases" / f"{sha256}.onnx"
    assert record["release"] == release.name and record["sha256"] == sha256
    assert record["model_version"].endswith(f"+{sha256[:12]}") and record["seed"] == 1
    assert file_sha256(release) == sha256 and not release.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP)
    assert json.loads((tmp_path / "releases" / f"{sha256}.json").read_text()) == record
    # The gate Job run again (a retried pod, a second gate): the same release, nothing rewritten.
    inode = release.stat().st_ino
    again = promote(tmp_path, passed(candidate, mean=370.0), candidate)
    assert again.returncode == 0, again.stderr
    assert release.stat().st_ino == inode
    assert json.loads((tmp_path / "releases" / f"{sha256}.json").read_text())["mean_score"] == 360.0
    assert sorted(p.name for p in (tmp_path / "releases").iterdir()) == [f"{sha256}.json", f"{sha256}.onnx"]


@pytest.mark.parametrize(("report", "code"), [
    ({"ok": False, "exit_code": 4, "score": {"mean": 100.0, "min_score": 339.0}}, ExitCode.GATE),
    ({"ok": True, "exit_code": 0}, ExitCode.GATE),  # verify passed without playing the floor
    ({"ok": True, "exit_code": 0, "score": {"mean": 320.0, "min_score": 20.0}}, ExitCode.GATE),  # a lower floor
    (None, ExitCode.USAGE),  # no report
])
def test_promote_releases_nothing_the_gate_did_not_pass(tmp_path: Path, report: dict | None, code: int) -> None:
    candidate = tmp_path / "candidates" / "seed-1.onnx"
    if report is not None:
        report = {"model": str(candidate), **report}
    result = promote(tmp_path, report, candidate)
    assert result.returncode == code, result.stdout + result.stderr
    assert not (tmp_path / "releases").exists() or not any((tmp_path / "releases").iterdir())


def test_promote_refuses_a_report_about_another_file_and_a_release_whose_bytes_differ(tmp_path: Path) -> None:
    candidate = tmp_path / "candidates" / "seed-1.onnx"
    other = promote(tmp_path, passed(tmp_path / "candidates" / "seed-2.onnx"), candidate)
    assert other.returncode == ExitCode.USAGE and "seed-2.onnx" in other.stderr
    sha256 = file_sha256(SHIPPED)
    (tmp_path / "releases").mkdir()
    (tmp_path / "releases" / f"{sha256}.onnx").write_bytes(b"not the model")
    tampered = promote(tmp_path, passed(candidate), candidate)
    assert tampered.returncode == ExitCode.FAILURE and "sha256" in tampered.stderr
    assert (tmp_path / "releases" / f"{sha256}.onnx").read_bytes() == b"not the model"  # left for a human


def test_promote_reads_the_report_verify_really_writes(tmp_path: Path) -> None:
    candidate = tmp_path / "candidates" / "seed-1.onnx"
    candidate.parent.mkdir(parents=True)
    shutil.copyfile(SHIPPED, candidate)
    report = candidate.with_suffix(".verify.json")
    with report.open("w") as out:  # as the gate's verify step runs it; one game keeps it short
        verify = subprocess.run([sys.executable, "-m", "breakout_dqn.cli", "verify", str(candidate), "--min-score=0",
                                 "--episodes=1", "--num-envs=1", "--json"], stdout=out, timeout=600,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
    assert verify.returncode == 0
    result = subprocess.run(
        [sys.executable, str(PROMOTE), f"--candidate={candidate}", f"--verify-report={report}", "--min-score=0",
         f"--releases={tmp_path / 'releases'}"], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["sha256"] == file_sha256(SHIPPED)
