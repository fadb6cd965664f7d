"""Retries per seed, and a SIGTERM grace that fits the notice (issue 44, finding 2).

The training Job's podFailurePolicy is evaluated as the Job controller does (the first rule that
matches a failed pod decides), for the failures a seed meets: a usage error, a checkpointed
SIGTERM, a drain or preemption, an I/O error, an OOM kill.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest
from k8s_helpers import find, needs_kubectl, overlays, pod_spec, render, train_config, with_object

from breakout_dqn.errors import ExitCode

pytestmark = needs_kubectl
SPOT_NOTICE_S = 15  # GKE gives a spot node's non-system pods 15 s of its 30 s (Azure 30 s, AWS 120 s)
SIGKILL_EXIT = 128 + signal.SIGKILL  # an OOM kill, or a grace period run out
SIGTERM_EXIT = 128 + signal.SIGTERM  # `train` after its checkpoint


def policy_action(rules: list[dict[str, Any]], container_name: str, exit_code: int,
                  conditions: tuple[str, ...] = ()) -> str | None:
    """The action of the first rule matching a pod whose container exited so; None: counted, retried."""
    for rule in rules:
        codes = rule.get("onExitCodes")
        if codes and codes.get("containerName", container_name) == container_name:
            listed = exit_code in codes["values"]
            if listed == (codes["operator"] == "In"):
                return rule["action"]
        for condition in rule.get("onPodConditions", []):
            if condition["type"] in conditions and condition.get("status", "True") == "True":
                return rule["action"]
    return None


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
def test_sigterm_grace_fits_and_spot_checkpoints_more_often(directory: str, job: dict) -> None:
    spec = pod_spec(job)
    config, base = train_config(directory), train_config("train")
    spot = any(toleration["key"].endswith("spot") for toleration in spec.get("tolerations", [])) or any(
        "spot" in key for key in spec["nodeSelector"])
    if spot:
        assert spec["terminationGracePeriodSeconds"] <= SPOT_NOTICE_S, directory
        assert config.checkpoint_every < base.checkpoint_every, directory
    else:
        assert spec["terminationGracePeriodSeconds"] > SPOT_NOTICE_S, directory


def test_an_overlay_runs_training_on_spot_nodes() -> None:
    spot = [d for d in overlays() for o in render(d) if o["kind"] == "Job" and any(
        "spot" in key for key in pod_spec(o).get("nodeSelector", {}))]
    assert spot, "no overlay selects spot nodes"
