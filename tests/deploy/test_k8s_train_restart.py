"""The training Job's own command survives a SIGKILL: run it, kill it after a checkpoint, run it again.

This is what Kubernetes does when the Job's pod is OOM-killed or its node is lost (a new pod for
the same completion index, restartPolicy Never): the identical command line runs again against the
same volume, and must continue from the newest checkpoint instead of refusing the run directory or
starting over. The command is read from the rendered manifest (the PQN recipe); only the size of
the run is overridden (later flags win), and the volume's mount path is mapped to a temporary
directory. The finished run then goes through the gate's first step as the gate Job runs it:
its last two checkpoints averaged (and once more, as a retried gate pod would, changing nothing).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from k8s_helpers import (
    REPO,
    command_line,
    container,
    container_env,
    find,
    local_command,
    needs_kubectl,
    pod_spec,
    render,
)

from breakout_dqn.training.checkpoint import PATTERN, list_checkpoints

STEPS = 1024
# PQN at a tiny size (as tests/training/test_pqn.py): rollouts of 8 games x 16 steps = 128 agent steps.
TINY = [f"--steps={STEPS}", "--num-envs=8", "--rollout-steps=16", "--minibatches=4", "--checkpoint-every=512",
        "--eval-every=0", "--final-eval-episodes=1", "--log-every=128",
        "--no-xla"]  # only compile time at this size
INDEX = 1  # the completion index, i.e. the seed


def tail(text: str) -> str:
    return text[-3000:]


@needs_kubectl
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_train_job_command_continues_from_its_checkpoint_after_sigkill(tmp_path: Path) -> None:
    objects = render("train")
    job = find(objects, "Job", "breakout-dqn-train")
    spec = pod_spec(job)
    train = container(spec, "train")
    assert command_line(spec, train, objects, completion_index=INDEX)[0] == "breakout-dqn"  # the console script
    volume = tmp_path / "volume"
    command = [*local_command(spec, train, objects, INDEX, volume), *TINY]
    (out,) = [Path(arg.split("=", 1)[1]) for arg in command if arg.startswith("--out=")]
    assert out.is_relative_to(volume)
    env = {**os.environ, **container_env(spec, train, objects, completion_index=INDEX),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}

    # First run: SIGKILL as soon as it has written a checkpoint (no handler runs, nothing is saved).
    first_log = tmp_path / "first.log"
    with first_log.open("w") as log:
        first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        try:
            deadline = time.monotonic() + 600
            while not list_checkpoints(out / "checkpoints") and first.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert first.poll() is None, f"ended (exit {first.returncode}) before it could be killed:\n" + tail(
                first_log.read_text())
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=60)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
    assert first.returncode == -signal.SIGKILL
    checkpoints = list_checkpoints(out / "checkpoints")
    assert checkpoints, tail(first_log.read_text())
    match = PATTERN.match(checkpoints[-1].name)
    assert match
    killed_at = int(match.group(1))
    assert 0 < killed_at < STEPS and not (out / "eval.json").exists()

    # Second run: the same command, unchanged, as the restarted pod runs it.
    second = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    output = second.stdout + second.stderr
    assert second.returncode == 0, tail(output)
    resumed = re.search(r"resumed from checkpoint-(\d+)\.npz", output)
    assert resumed and int(resumed.group(1)) == killed_at, tail(output)
    summary = json.loads(second.stdout.strip().splitlines()[-1])
    assert summary["train_agent_steps"] == STEPS
    assert json.loads((out / "eval.json").read_text())["train_agent_steps"] == STEPS

    # The gate's average step on this run, as the gate Job's pod for the same index runs it (same volume).
    gate_objects = render("gate")
    gate_spec = pod_spec(find(gate_objects, "Job", "breakout-dqn-gate"))
    average = container(gate_spec, "average")
    average_command = local_command(gate_spec, average, gate_objects, INDEX, volume)
    assert str(out) in average_command  # this seed's run
    (averaged,) = [Path(arg.split("=", 1)[1]) for arg in average_command if arg.startswith("--out=")]
    average_env = {**env, **container_env(gate_spec, average, gate_objects, completion_index=INDEX)}
    newest_two = [int(PATTERN.match(path.name).group(1)) for path in list_checkpoints(out / "checkpoints")[-2:]]
    assert len(newest_two) == 2, newest_two
    for attempt in range(2):  # the second: a retried gate pod
        result = subprocess.run(average_command, capture_output=True, text=True, timeout=600, env=average_env,
                                cwd=tmp_path)
        assert result.returncode == 0, tail(result.stdout + result.stderr)
        summary = json.loads((averaged / "average.json").read_text())
        assert summary["steps"] == newest_two and summary["train_agent_steps"] == STEPS, summary
        if attempt == 0:
            written = (averaged / "model.keras").stat().st_mtime_ns
        else:
            assert (averaged / "model.keras").stat().st_mtime_ns == written and not result.stdout
    # What the gate's export step reads.
    export_command = local_command(gate_spec, container(gate_spec, "export"), gate_objects, INDEX, volume)
    assert export_command[3:5] == ["export", str(averaged / "model.keras")], export_command
