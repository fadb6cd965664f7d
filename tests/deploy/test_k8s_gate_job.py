"""deploy/k8s/gate-job.sh against a stand-in kubectl: the exit code a pipeline gates on (the gate Job)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from k8s_helpers import DEPLOY

STUB = """#!/usr/bin/env bash
echo "$*" >> "$STUB_DIR/calls"
case "$*" in
  *'get job'*'@.status=="True"'*) cat "$STUB_DIR/conditions" ;;
  *'get job'*'@.type=="Failed"'*) cat "$STUB_DIR/failed" ;;
  *'get pods'*) cat "$STUB_DIR/pods" ;;
  *) echo "stub kubectl: unexpected call: $*" >&2; exit 9 ;;
esac
"""


def gate(tmp_path: Path, conditions: str, pods: str = "", timeout: int = 30) -> subprocess.CompletedProcess:
    stub = tmp_path / "kubectl"
    stub.write_text(STUB)
    stub.chmod(0o755)
    (tmp_path / "conditions").write_text(conditions)
    (tmp_path / "failed").write_text("PodFailurePolicy: Container verify for pod default/x failed with exit code 4\n")
    (tmp_path / "pods").write_text(pods)
    env = {**os.environ, "KUBECTL": f"{stub} --namespace ci", "STUB_DIR": str(tmp_path), "POLL_SECONDS": "0"}
    return subprocess.run(["bash", str(DEPLOY / "gate-job.sh"), "breakout-dqn-gate", str(timeout)],
                          capture_output=True, text=True, timeout=60, env=env)


def test_a_complete_job_passes(tmp_path: Path) -> None:
    result = gate(tmp_path, "SuccessCriteriaMet Complete ")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "breakout-dqn-gate: Complete" in result.stdout
    assert "get job breakout-dqn-gate" in (tmp_path / "calls").read_text()
    assert "--namespace ci" in (tmp_path / "calls").read_text()


@pytest.mark.parametrize(("pods", "code"), [
    ("average 0\nexport 0\nverify 4\n", 4),  # verify: mean score below --min-score
    ("average 2\nexport \nverify \n", 2),  # a run that cannot be averaged; export and verify never ran
    ("export 1\nverify \nexport 3\nverify \n", 3),  # an I/O error retried, then a contract failure
    ("export 4\nverify \n", 4),  # the parity gate failed; verify never ran
    ("export 1\nverify \n", 1),
    ("export 0\nverify 0\npromote 1\n", 1),  # the release could not be written (I/O)
    ("", 1),  # pods gone: no exit code known
])
def test_a_failed_job_exits_with_the_code_of_the_command_that_failed_it(tmp_path: Path, pods: str, code: int) -> None:
    result = gate(tmp_path, "FailureTarget Failed ", pods)
    assert result.returncode == code, result.stdout + result.stderr
    assert "PodFailurePolicy" in result.stdout
    assert "-l batch.kubernetes.io/job-name=breakout-dqn-gate" in (tmp_path / "calls").read_text()


def test_a_job_still_running_at_the_deadline_fails_the_gate(tmp_path: Path) -> None:
    result = gate(tmp_path, "", timeout=0)
    assert result.returncode == 1
    assert "not finished after 0 s" in result.stdout
