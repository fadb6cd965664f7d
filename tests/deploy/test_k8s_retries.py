"""Retries per seed, and a SIGTERM grace that fits the notice (issue 44, finding 2).

The training Job's podFailurePolicy is evaluated as the Job controller does (the first rule that
matches a failed pod decides), for the failures a seed meets: a usage error, a checkpointed
SIGTERM, a drain or preemption, an I/O error, an OOM kill.
"""

from __future__ import annotations

import signal

import pytest
from k8s_helpers import find, needs_kubectl, overlays, pod_spec, policy_action, render, train_config, with_object

from breakout_dqn.errors import ExitCode

pytestmark = needs_kubectl
SPOT_NOTICE_S = 15  # GKE gives a spot node's non-system pods 15 s of its 30 s (Azure 30 s, AWS 120 s)
SIGKILL_EXIT = 128 + signal.SIGKILL  # an OOM kill, or a grace period run out
SIGTERM_EXIT = 128 + signal.SIGTERM  # `train` after its checkpoint


def training_jobs() -> list[tuple[str, dict]]:
    return [(d, find(render(d), "Job", "breakout-dqn-train")) for d in with_object("Job", "breakout-dqn-train")]


@pytest.mark.parametrize(("directory", "job"), training_jobs())
def test_each_seed_has_its_own_retries_and_a_usage_error_fails_that_seed_at_once(directory: str, job: dict) -> None:
    spec = job["spec"]
    assert pod_spec(job)["restartPolicy"] == "Never"  # every retry a new pod, which podFailurePolicy needs
    assert spec["completionMode"] == "Indexed" and spec["backoffLimitPerIndex"] >= 1
    assert "backoffLimit" not in spec and "maxFailedIndexes" not in spec  # no Job-wide budget, no seed kills another
    assert spec["podReplacementPolicy"] == "Failed"  # no replacement beside a pod still writing its checkpoint
    rules = spec["podFailurePolicy"]["rules"]
    assert policy_action(rules, "train", ExitCode.USAGE) == "FailIndex"
    assert policy_action(rules, "train", SIGTERM_EXIT) == "Ignore"
    assert policy_action(rules, "train", SIGTERM_EXIT, ("DisruptionTarget",)) == "Ignore"
    assert policy_action(rules, "train", SIGKILL_EXIT, ("DisruptionTarget",)) == "Ignore"  # a reclaimed node
    assert policy_action(rules, "train", ExitCode.FAILURE) is None  # an I/O error: counted, retried
    assert policy_action(rules, "train", SIGKILL_EXIT) is None  # an OOM kill: counted, retried


@pytest.mark.parametrize(("directory", "job"), training_jobs())
def test_sigterm_grace_fits_the_notice_and_spot_keeps_the_checkpoint_interval(directory: str, job: dict) -> None:
    spec = pod_spec(job)
    spot = any(toleration["key"].endswith("spot") for toleration in spec.get("tolerations", [])) or any(
        "spot" in key for key in spec["nodeSelector"])
    if spot:
        assert spec["terminationGracePeriodSeconds"] <= SPOT_NOTICE_S, directory
        # Not more often: the gate averages the last two checkpoints, 250,000 agent steps apart like the shipped
        # model's (tests/deploy/test_k8s_gate.py holds every training command to that).
        assert train_config(directory).checkpoint_every == train_config("train").checkpoint_every, directory
    else:
        assert spec["terminationGracePeriodSeconds"] > SPOT_NOTICE_S, directory


def test_an_overlay_runs_training_on_spot_nodes() -> None:
    spot = [d for d in overlays() for o in render(d) if o["kind"] == "Job" and any(
        "spot" in key for key in pod_spec(o).get("nodeSelector", {}))]
    assert spot, "no overlay selects spot nodes"
