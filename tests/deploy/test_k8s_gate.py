"""The gate writes only candidates; only a model that passed both gates is released (issue 44, finding 3).

The rendered gate Job is read step by step (export, verify, promote, in that order, each only if
the one before succeeded), its floor is held to the shipped model's record, and its promote step
(deploy/k8s/gate/promote_release.py) is run against the shipped model.
"""

from __future__ import annotations

import json
import math
import os
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
    needs_kubectl,
    pod_spec,
    render,
    shell_redirect,
    with_object,
)

from breakout_dqn.errors import ExitCode
from breakout_dqn.files import file_sha256

RECORD = REPO / "results" / "pqn-eps05-s1-10m" / "eval-300.json"  # the shipped model's 300 games
SHIPPED = REPO / "models" / "breakout-dqn.onnx"
PROMOTE = DEPLOY / "gate" / "promote_release.py"


def gate_kustomizations() -> list[str]:
    return with_object("Job", "breakout-dqn-gate")


def flag(argv: list[str], name: str) -> str:
    (value,) = [arg.split("=", 1)[1] for arg in argv if arg.startswith(f"{name}=")]
    return value


@needs_kubectl
@pytest.mark.parametrize("directory", gate_kustomizations())
def test_export_and_verify_write_only_a_candidate_and_promote_runs_after_both(directory: str) -> None:
    objects = render(directory)
    spec = pod_spec(find(objects, "Job", "breakout-dqn-gate"))
    assert [c["name"] for c in spec["initContainers"]] == ["export", "verify"]  # in order, each after the last
    assert [c["name"] for c in spec["containers"]] == ["promote"]  # runs only once both exited 0
    train_objects = render("train")
    train_spec = pod_spec(find(train_objects, "Job", "breakout-dqn-train"))
    for index in range(3):
        export = command_line(spec, container(spec, "export"), objects, index)
        verify_cont = container(spec, "verify")
        verify = command_line(spec, verify_cont, objects, index)
        promote = command_line(spec, container(spec, "promote"), objects, index)
        candidate = flag(export, "--out")
        trained = flag(command_line(train_spec, container(train_spec, "train"), train_objects, index), "--out")
        assert export[:3] == ["breakout-dqn", "export", f"{trained}/model.keras"]  # this seed's model
        assert candidate.startswith("/models/candidates/"), candidate
        assert verify[:3] == ["breakout-dqn", "verify", candidate] and "--json" in verify
        report = shell_redirect(verify_cont, container_env(spec, verify_cont, objects, index))
        assert report.startswith("/models/candidates/"), report
        assert flag(promote, "--candidate") == candidate and flag(promote, "--verify-report") == report
        assert flag(promote, "--min-score") == flag(verify, "--min-score")
        releases = flag(promote, "--releases")
        # Nothing but the promote step names the releases; export and verify name no release.
        assert not any(releases in arg for arg in [*export, *verify]), (export, verify)
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
    (fail,) = [rule for rule in job["spec"]["podFailurePolicy"]["rules"] if rule["action"] == "FailIndex"]
    assert "containerName" not in fail["onExitCodes"]  # export's verdicts and verify's
    assert set(fail["onExitCodes"]["values"]) == {ExitCode.USAGE, ExitCode.CONTRACT, ExitCode.GATE}
    assert ExitCode.FAILURE not in fail["onExitCodes"]["values"]  # an I/O error is retried


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
         "--min-score=294", f"--releases={tmp_path / 'releases'}", "--seed=1"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})


def passed(candidate: Path, mean: float = 320.0, floor: float = 294.0) -> dict:
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
    again = promote(tmp_path, passed(candidate, mean=330.0), candidate)
    assert again.returncode == 0, again.stderr
    assert release.stat().st_ino == inode
    assert json.loads((tmp_path / "releases" / f"{sha256}.json").read_text())["mean_score"] == 320.0
    assert sorted(p.name for p in (tmp_path / "releases").iterdir()) == [f"{sha256}.json", f"{sha256}.onnx"]


@pytest.mark.parametrize(("report", "code"), [
    ({"ok": False, "exit_code": 4, "score": {"mean": 100.0, "min_score": 294.0}}, ExitCode.GATE),
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
