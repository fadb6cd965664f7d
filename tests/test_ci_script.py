""".ci/run with every tool faked: the container smoke runs in the background beside the install,
checks and tests; its result decides CI's as theirs do, and a step that fails stops it."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason=".ci/run runs the container smoke only as root")


def fake_checkout(tmp_path: Path, smoke: str, install_exit: int = 0, pytest_exit: int = 0) -> dict[str, str]:
    """A checkout holding the real .ci/run, ``smoke`` as scripts/container-smoke.sh, and tools that pass."""
    (tmp_path / ".ci").mkdir()
    (tmp_path / ".ci" / "run").write_text((ROOT / ".ci" / "run").read_text())
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "container-smoke.sh").write_text(smoke)
    for script in ("gen_protos.sh", "check-k8s.sh", "typecheck.sh"):
        (tmp_path / "scripts" / script).write_text("exit 0\n")
    (tmp_path / "examples" / "node").mkdir(parents=True)
    tools = tmp_path / "tools"
    tools.mkdir()

    def tool(name: str, body: str) -> None:
        (tools / name).write_text("#!/bin/sh\n" + body)
        (tools / name).chmod(0o755)

    # python3 -m venv .venv: an activate script that keeps these tools first on PATH.
    tool("python3", f'mkdir -p .venv/bin && echo "PATH={tools}:$PATH" > .venv/bin/activate\n')
    # python -m pip ... (the install) and python -m pytest -q (the tests: a summary line).
    tool("python", f'case "$*" in *pytest*) echo "3 passed in 0.01s"; exit {pytest_exit};; '
                   f'*pip*) exit {install_exit};; esac\n')
    for name in ("ruff", "mypy", "hadolint", "npm", "mkdocs"):
        tool(name, "exit 0\n")
    environment = {key: value for key, value in os.environ.items() if key != "SKIP_CONTAINER_SMOKE"}
    return {**environment, "PATH": f"{tools}:{environment['PATH']}"}


def run_ci(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", ".ci/run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_all_green_needs_the_smoke_too_and_its_log_comes_after_the_tests(tmp_path: Path) -> None:
    passed = run_ci(tmp_path, fake_checkout(tmp_path, "sleep 1; echo '== [1 s] done: container smoke passed'\n"))
    assert passed.returncode == 0, passed.stdout + passed.stderr
    lines = passed.stdout.splitlines()
    assert lines[0].startswith("ci: container smoke started in the background")
    log = lines.index("== [1 s] done: container smoke passed")
    assert lines.index("3 passed in 0.01s") < log  # the tests' own output, then the smoke's log
    assert lines[-2:] == ["3 passed in 0.01s", lines[-1]] and lines[-1].startswith("ci: all green in ")

    failed_dir = tmp_path / "smoke-fails"
    failed_dir.mkdir()
    failed = run_ci(failed_dir, fake_checkout(failed_dir, "echo 'podman: no such image'; exit 5\n"))
    assert failed.returncode == 1
    assert "podman: no such image" in failed.stdout
    assert "ci: container smoke FAILED (exit 5)" in failed.stdout
    assert "all green" not in failed.stdout


def test_tests_stopped_by_their_time_limit_fail_ci_and_say_so(tmp_path: Path) -> None:
    result = run_ci(tmp_path, fake_checkout(tmp_path, "exit 0\n", pytest_exit=124))  # timeout's status
    assert result.returncode == 1
    assert "ci: the tests did not finish within 40 minutes (stopped)" in result.stdout
    assert "all green" not in result.stdout


def test_a_failing_install_fails_ci_at_once_and_stops_the_smoke_still_running(tmp_path: Path) -> None:
    marker = f"smoke-{uuid.uuid4().hex}"
    env = fake_checkout(tmp_path, f"bash -c 'exec -a {marker} sleep 300' & wait\n", install_exit=3)
    started = time.monotonic()
    result = run_ci(tmp_path, env)
    assert result.returncode == 3
    assert time.monotonic() - started < 60  # did not wait for the smoke
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    assert left.stdout == "", f"the smoke outlived CI: {left.stdout}"
