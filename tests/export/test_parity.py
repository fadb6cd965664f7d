"""The parity gate: real stacks, edge cases, fingerprint and behavioural parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from breakout_dqn.export import parity


def constant_q(values: list[float]):
    row = np.asarray(values, np.float32)
    return lambda frames: np.tile(row, (len(frames), 1))


def test_collected_stacks_come_from_real_varied_play() -> None:
    stacks = parity.collect_stacks(constant_q([0, 0, 1, 0]), 160, seed=3, num_envs=8)
    assert stacks.shape == (160, 84, 84, 4) and stacks.dtype == np.uint8
    assert parity.distinct_count(stacks) > 100  # not one frame repeated, not noise either
    assert (stacks[-1] > 0).mean() < 0.5  # Breakout screens are mostly black background
    assert (stacks[:, :, :, -1] != stacks[:, :, :, -2]).any()  # the stack holds consecutive frames


@pytest.mark.slow  # plays full games
def test_behavioural_parity_compares_the_action_sequences() -> None:
    keras_like = constant_q([0.1, 0.2, 0.3, 0.0])  # greedy RIGHT
    same = parity.behavioural_parity(keras_like, keras_like, seed=0)
    assert same["identical"] and same["passed"] and same["first_difference_step"] is None
    assert same["keras"] == same["onnx"] and same["keras"]["steps"] > 10

    other = parity.behavioural_parity(keras_like, constant_q([0.1, 0.2, 0.0, 0.3]), seed=0)  # greedy LEFT
    assert not other["identical"] and not other["passed"] and other["first_difference_step"] == 0
    assert other["first_difference_near_tie"] is False


@pytest.mark.slow  # plays full games
def test_behavioural_parity_excuses_a_divergence_on_a_near_tie() -> None:
    tie = parity.behavioural_parity(constant_q([1.0, 1.0 + 1e-7, 0, 0]), constant_q([1.0 + 2e-7, 1.0 + 1e-7, 0, 0]))
    assert not tie["identical"] and tie["passed"] and tie["first_difference_near_tie"] is True


@pytest.mark.slow  # the full export and full games
def test_gate_passes_on_the_real_export(keras_q, real_stacks: np.ndarray, exported_onnx: Path) -> None:
    from breakout_dqn.onnx_model import OnnxPolicy

    policy = OnnxPolicy(exported_onnx)
    report = parity.run_gate(keras_q, policy.q_values, real_stacks, min_stacks=len(real_stacks),
                             fingerprint_value=policy.metadata["breakout_dqn.parity_fingerprint"])
    assert report.passed, report.failures
    assert report.real_stacks["count"] == 512 and report.real_stacks["max_abs_dq"] <= parity.ATOL
    assert report.real_stacks["argmax_agreement"] == 1.0
    assert set(report.edge_cases) == {"zeros_batch1", "all255_batch1", "real_batch1", "noise_batch64",
                                      "real_batch1024"}
    assert report.edge_cases["real_batch1024"]["count"] == 1024
    assert report.behaviour["identical"]
    # The gate refuses too few stacks even when they all match.
    short = parity.run_gate(keras_q, policy.q_values, real_stacks[:100], min_stacks=len(real_stacks),
                            fingerprint_value=policy.metadata["breakout_dqn.parity_fingerprint"])
    assert not short.passed and "at least 512" in short.failures[0]


@pytest.mark.slow  # the full export and full games
@pytest.mark.parametrize("fixture", ["perturbed_onnx", "slightly_perturbed_onnx"])
def test_gate_fails_on_weights_perturbed_after_export(keras_q, real_stacks: np.ndarray, fixture: str,
                                                      request: pytest.FixtureRequest) -> None:
    from breakout_dqn.onnx_model import OnnxPolicy

    policy = OnnxPolicy(request.getfixturevalue(fixture))
    report = parity.run_gate(keras_q, policy.q_values, real_stacks, min_stacks=len(real_stacks),
                             fingerprint_value=policy.metadata["breakout_dqn.parity_fingerprint"])
    assert not report.passed
    assert report.real_stacks["max_abs_dq"] > 5 * parity.ATOL and not report.real_stacks["passed"]
    assert any(failure.startswith("real stacks: max |dq|") for failure in report.failures)
    assert not report.edge_cases["real_batch1024"]["passed"]
    if fixture == "perturbed_onnx":  # the stored probe (looser, cross-machine tolerance) catches it too
        assert not report.fingerprint["passed"]
        assert any(failure.startswith("fingerprint probe") for failure in report.failures)
