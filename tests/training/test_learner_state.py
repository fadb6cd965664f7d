"""training/learners/state.py: a checkpoint's optimizer state carries over when a resumed piece changes
the learning rate from a constant to a schedule or back (a fork that decays its rate)."""

from __future__ import annotations

import numpy as np
import pytest

from breakout_dqn.training.learners.state import learner_arrays, restore_learner_arrays


def trained(learning_rate):
    """A small network and its Adam optimizer after two steps: the moments and step count are not zero."""
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build(model.trainable_variables)
    for _ in range(2):
        optimizer.apply([np.ones(v.shape, "float32") for v in model.trainable_variables], model.trainable_variables)
    return model, optimizer


def schedule():
    import keras

    return keras.optimizers.schedules.PolynomialDecay(1e-3, 100, 0.0)


@pytest.mark.parametrize("saved_rate, resumed_rate", [(1e-3, schedule), (schedule, 2e-4)])
def test_the_step_count_and_moments_carry_over_a_change_of_learning_rate_kind(saved_rate, resumed_rate) -> None:
    model, optimizer = trained(saved_rate() if callable(saved_rate) else saved_rate)
    saved = learner_arrays(model, model, optimizer)
    fresh_model, fresh = trained(resumed_rate() if callable(resumed_rate) else resumed_rate)
    fresh.iterations.assign(0)
    assert len(saved["optimizer"]) != len(fresh.variables)  # the rate is a variable on one side only
    restore_learner_arrays(fresh_model, fresh_model, fresh, saved)
    assert int(fresh.iterations.numpy()) == 2
    moments = [np.asarray(v) for v in optimizer.variables if "learning_rate" not in v.path]
    restored = [np.asarray(v) for v in fresh.variables if "learning_rate" not in v.path]
    assert len(moments) == len(restored)
    for want, got in zip(moments, restored, strict=True):
        np.testing.assert_array_equal(got, want)
    if not callable(resumed_rate):  # a constant rate again: the resumed piece's, not the schedule's
        assert float(fresh.learning_rate.numpy()) == pytest.approx(2e-4)


def test_another_network_is_still_refused() -> None:
    import keras

    model, optimizer = trained(1e-3)
    saved = learner_arrays(model, model, optimizer)
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Dense(2)])
    other_optimizer = keras.optimizers.Adam(1e-3)
    other_optimizer.build(other.trainable_variables)
    with pytest.raises(ValueError, match="checkpoint online holds 2 arrays, the model needs 4"):
        restore_learner_arrays(other, other, other_optimizer, saved)
