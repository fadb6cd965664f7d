"""Checkpoint arrays <-> Keras variables, with shape checks."""

from __future__ import annotations

import numpy as np


def assign_arrays(name: str, variables, values: list[np.ndarray]) -> None:
    """Assign ``values`` to ``variables`` or raise ValueError naming what does not match."""
    if len(variables) != len(values):
        raise ValueError(f"checkpoint {name} holds {len(values)} arrays, the model needs {len(variables)}")
    for variable, value in zip(variables, values, strict=True):
        if tuple(variable.shape) != tuple(value.shape):
            raise ValueError(f"checkpoint {name} array shape {value.shape} != {tuple(variable.shape)}")
        variable.assign(value)


def learner_arrays(online, target, optimizer) -> dict[str, list[np.ndarray]]:
    """The arrays a checkpoint holds: online and target weights, and the optimizer's state."""
    return {
        "online": [np.asarray(v) for v in online.weights],
        "target": [np.asarray(v) for v in target.weights],
        "optimizer": [np.asarray(v) for v in optimizer.variables],
    }


def fit_optimizer_arrays(optimizer, values: list[np.ndarray]) -> list[np.ndarray]:
    """A checkpoint's optimizer arrays fitted to ``optimizer`` where only the learning rate's kind changed.

    Keras keeps a constant learning rate as the optimizer's second variable (after its step count) and
    a schedule (``--learning-rate-decay-steps``) as none, so a piece that changes one for the other
    (a fork that decays its rate: docs/experiments.md) would find one array too many or too few. The
    step count and the moments carry over; the rate is the one this piece's flags give.
    """
    variables = list(optimizer.variables)
    rate = next((i for i, v in enumerate(variables) if v.path.split("/")[-1] == "learning_rate"), None)
    scalar = [np.ndim(value) == 0 for value in values[:2]]
    if rate is None and len(values) == len(variables) + 1 and scalar == [True, True]:
        return [values[0], *values[2:]]  # saved with a constant rate, resumed with a schedule
    if rate is not None and len(values) == len(variables) - 1 and scalar[:1] == [True]:
        return [*values[:rate], np.asarray(variables[rate]), *values[rate:]]  # the reverse: this piece's rate
    return values


def restore_learner_arrays(online, target, optimizer, state: dict[str, list[np.ndarray]]) -> None:
    assign_arrays("online", online.weights, state["online"])
    assign_arrays("target", target.weights, state["target"])
    assign_arrays("optimizer", optimizer.variables, fit_optimizer_arrays(optimizer, state["optimizer"]))
