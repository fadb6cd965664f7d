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


def test_the_float64_model_is_the_exact_reference_the_float32_model_rounds(keras_q, exact_q) -> None:
    stacks = np.concatenate([parity.edge_cases(np.zeros((1, 84, 84, 4), np.uint8))["noise_batch64"],
                             np.full((1, 84, 84, 4), 255, np.uint8)])
    q32, q64 = keras_q(stacks), exact_q(stacks)
    assert q64.dtype == np.float64 and q64.shape == (65, 4)
    off = np.abs(q32 - q64)
    assert 0 < off.max() < 1e-4  # float32 rounding: not zero (a real float64 pass), not a different model
    # Exact arithmetic does not depend on the batch: one stack alone gives the same values.
    assert np.abs(exact_q(stacks[:1]) - q64[:1]).max() < 1e-12
    with pytest.raises(ValueError):
        exact_q(stacks[:, :, :, :3])


def test_the_rounding_allowance_forgives_float32_rounding_but_not_drift() -> None:
    rng = np.random.default_rng(0)
    q_exact = rng.normal(0, 0.5, (64, 4)) + np.array([0.0, 0.0, 2.0, 0.0])  # clear argmax on every row
    keras_rounding = 7e-6  # Keras alone this far off exact arithmetic (as on noise stacks of the 2M dueling agent)
    q_keras = (q_exact + keras_rounding * rng.choice([-1, 1], q_exact.shape)).astype(np.float32)
    q_onnx = (q_exact - 1.2e-5 * rng.choice([-1, 1], q_exact.shape)).astype(np.float32)  # its own rounding
    assert not parity.compare(q_keras, q_onnx, parity.ATOL, parity.RTOL).passed  # the bare rule refuses it

    result, report = parity.judge(q_keras, q_onnx, q_exact, parity.ATOL, parity.RTOL)
    assert result.passed and result.max_tolerance_ratio < 1
    assert report["keras_rounding"] == pytest.approx(keras_rounding, rel=0.05)
    assert report["onnx_rounding"] == pytest.approx(1.2e-5, rel=0.05)
    assert result.allowance == pytest.approx(parity.ROUNDING_FACTOR * report["keras_rounding"])

    drifted = q_onnx + np.float32(1e-4)  # a conversion fault 10x the tolerance
    assert not parity.judge(q_keras, drifted, q_exact, parity.ATOL, parity.RTOL)[0].passed
    # Without a float64 reference there is no allowance: the bare rule.
    bare, bare_report = parity.judge(q_keras, q_onnx, None, parity.ATOL, parity.RTOL)
    assert not bare.passed and bare.allowance == 0 and bare_report["keras_rounding"] is None
    # A non-finite Keras value gives no allowance at all (and NaN from ONNX still fails).
    q_keras_nan = q_keras.copy()
    q_keras_nan[0, 0] = np.nan
    assert parity.judge(q_keras_nan, q_onnx, q_exact, parity.ATOL, parity.RTOL)[0].allowance == 0
    with pytest.raises(ValueError, match="allowance"):
        parity.compare(q_keras, q_onnx, parity.ATOL, parity.RTOL, allowance=-1e-6)


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
def test_gate_passes_on_the_real_export(keras_q, exact_q, real_stacks: np.ndarray, exported_onnx: Path) -> None:
    from breakout_dqn.onnx_model import OnnxPolicy

    policy = OnnxPolicy(exported_onnx)
    report = parity.run_gate(keras_q, policy.q_values, real_stacks, min_stacks=len(real_stacks),
                             fingerprint_value=policy.metadata["breakout_dqn.parity_fingerprint"], exact_q=exact_q)
    assert report.passed, report.failures
    assert report.tolerance["rounding_factor"] == parity.ROUNDING_FACTOR
    for case in [report.real_stacks, *report.edge_cases.values()]:  # each side measured against exact arithmetic
        assert 0 <= case["keras_rounding"] < 1e-4 and 0 <= case["onnx_rounding"] < 1e-4
        assert case["allowance"] == pytest.approx(parity.ROUNDING_FACTOR * case["keras_rounding"])
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
def test_gate_fails_on_weights_perturbed_after_export(keras_q, exact_q, real_stacks: np.ndarray, fixture: str,
                                                      request: pytest.FixtureRequest) -> None:
    from breakout_dqn.onnx_model import OnnxPolicy

    policy = OnnxPolicy(request.getfixturevalue(fixture))
    report = parity.run_gate(keras_q, policy.q_values, real_stacks, min_stacks=len(real_stacks),
                             fingerprint_value=policy.metadata["breakout_dqn.parity_fingerprint"], exact_q=exact_q)
    assert not report.passed
    assert report.real_stacks["max_abs_dq"] > 5 * parity.ATOL and not report.real_stacks["passed"]
    assert any(failure.startswith("real stacks: max |dq|") for failure in report.failures)
    assert not report.edge_cases["real_batch1024"]["passed"]
    if fixture == "perturbed_onnx":  # the stored probe (looser, cross-machine tolerance) catches it too
        assert not report.fingerprint["passed"]
        assert any(failure.startswith("fingerprint probe") for failure in report.failures)
